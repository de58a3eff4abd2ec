/* input_limits: the bounds every reader of outside input keeps to, so that a hostile or
 * corrupt file is refused before it makes us allocate what it merely claims. Each has
 * a default and an environment variable that raises (or lowers) it, read when the
 * limit is needed; docs/reliability.md lists them with the message each one gives.
 * Nothing here prints or exits. */
#ifndef INPUT_LIMITS_H
#define INPUT_LIMITS_H

#include <stddef.h>

enum limit {
	LIMIT_RECORD, /* TNS_MAX_RECORD: decoded bytes of one stream record (2 GiB) */
	LIMIT_PIXELS, /* TNS_MAX_PIXELS: width x height of one image (2^28) */
	LIMIT_FILE,   /* TNS_MAX_FILE: bytes of one file or archive entry read into memory
	               * (annotation, split list, image; 1 GiB) */
	LIMIT_JSON_DEPTH, /* TNS_MAX_JSON_DEPTH: nesting of a config or record header (100;
	                   * libcjson refuses more than 1000 whatever this says) */
	LIMIT_COUNT
};

/* The limit's value: its variable when set to a positive integer, else the default. */
size_t limit_get(enum limit l);
/* The limit's environment variable, for messages ("see TNS_MAX_FILE"). */
const char *limit_var(enum limit l);

/* 0 if the JSON text nests arrays and objects at most TNS_MAX_JSON_DEPTH deep, else
 * -1 (err "JSON nested deeper than N levels (see TNS_MAX_JSON_DEPTH)"). A scan of the
 * brackets outside strings, before the parser recurses and allocates per level. */
int limit_json_depth(const char *text, size_t len);

#endif
