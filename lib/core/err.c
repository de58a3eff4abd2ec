#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char msg[1024];

int err_set(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return -1;
}

int err_wrap(const char *fmt, ...)
{
	char out[sizeof msg];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, sizeof out, fmt, ap);
	va_end(ap);
	size_t len = n < 0 ? 0 : (size_t)n < sizeof out - 3 ? (size_t)n : sizeof out - 3;
	memcpy(out + len, ": ", 2);
	len += 2;
	size_t rest = strnlen(msg, sizeof msg);
	if (rest > sizeof out - 1 - len)
		rest = sizeof out - 1 - len;
	memcpy(out + len, msg, rest);
	out[len + rest] = 0;
	memcpy(msg, out, sizeof msg);
	return -1;
}

const char *err_msg(void)
{
	return msg[0] ? msg : "unknown error";
}
