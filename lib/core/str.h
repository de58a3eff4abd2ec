/* str: the string helpers every layer needs, one copy each. The ones that allocate
 * set err ("out of memory") and return NULL on failure, as the library's calls do. */
#ifndef STR_H
#define STR_H

#include "core/err.h"

/* A new string as printf would format it; free() it. */
char *str_printf(const char *fmt, ...) ERR_PRINTF(1, 2);
/* A copy of s; free() it. */
char *str_dup(const char *s);
/* s ends with suffix (s equal to suffix counts). */
int ends_with(const char *s, const char *suffix);
/* The same ignoring ASCII case (".JPG" is ".jpg"). */
int ends_with_nocase(const char *s, const char *suffix);

#endif
