#include "input_limits.h"

#include <stdlib.h>

static const struct {
	const char *var;
	size_t dflt;
} limits[LIMIT_COUNT] = {
	[LIMIT_RECORD] = {"TNS_MAX_RECORD", (size_t)2 << 30},
	[LIMIT_PIXELS] = {"TNS_MAX_PIXELS", (size_t)1 << 28},
	[LIMIT_FILE] = {"TNS_MAX_FILE", (size_t)1 << 30},
};

size_t limit_get(enum limit l)
{
	const char *env = getenv(limits[l].var);
	if (env && *env) {
		char *end;
		unsigned long long v = strtoull(env, &end, 10);
		if (*end == 0 && v > 0)
			return v > (size_t)-1 ? (size_t)-1 : (size_t)v;
	}
	return limits[l].dflt;
}

const char *limit_var(enum limit l)
{
	return limits[l].var;
}
