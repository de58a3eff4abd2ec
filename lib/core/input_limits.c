#include "core/input_limits.h"

#include <stdlib.h>

#include "core/err.h"

static const struct {
	const char *var;
	size_t dflt;
} limits[LIMIT_COUNT] = {
	[LIMIT_RECORD] = {"TNS_MAX_RECORD", (size_t)2 << 30},
	[LIMIT_PIXELS] = {"TNS_MAX_PIXELS", (size_t)1 << 28},
	[LIMIT_FILE] = {"TNS_MAX_FILE", (size_t)1 << 30},
	[LIMIT_JSON_DEPTH] = {"TNS_MAX_JSON_DEPTH", 100},
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

int limit_json_depth(const char *text, size_t len)
{
	size_t max = limit_get(LIMIT_JSON_DEPTH), depth = 0;
	int in_string = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = text[i];
		if (in_string) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_string = 0;
		} else if (ch == '"') {
			in_string = 1;
		} else if (ch == '[' || ch == '{') {
			if (++depth > max)
				return err_set("JSON nested deeper than %zu levels (see %s)", max,
					       limit_var(LIMIT_JSON_DEPTH));
		} else if ((ch == ']' || ch == '}') && depth > 0) {
			depth--;
		}
	}
	return 0;
}
