/* err: the library's error channel.
 * Library calls never print or exit; on failure they record one message here and
 * return -1 (or NULL). Tools print it as "tool: message". The message is per thread. */
#ifndef ERR_H
#define ERR_H

#if defined(__GNUC__)
#define ERR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ERR_PRINTF(a, b)
#endif

/* Records a formatted message; always returns -1 so callers can `return err_set(...)`. */
int err_set(const char *fmt, ...) ERR_PRINTF(1, 2);
/* Prepends "context: " to the current message (for adding a file name or record number). */
int err_wrap(const char *fmt, ...) ERR_PRINTF(1, 2);
const char *err_msg(void);

#endif
