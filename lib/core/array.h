/* array: growing a heap array by doubling, the one copy the library's lists use. */
#ifndef ARRAY_H
#define ARRAY_H

#include <stddef.h>

/* Grows the array *p (a pointer to the array's pointer; *cap elements of elem bytes) to
 * hold at least need elements, doubling from 16. -1 (err "out of memory"): *p and *cap
 * are left as they were. */
int array_grow(void *p, long *cap, long need, size_t elem);

#endif
