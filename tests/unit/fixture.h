/* fixture: reading the committed .tns fixtures in the unit tests. */
#ifndef FIXTURE_H
#define FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/stream.h"

/* Every record of a stream file into *out; the count, or -1 (message printed). */
static inline int read_all(const char *path, record ***out)
{
	stream_reader *s = stream_open_read(path);
	int n = 0, rc;
	record *r, **v = NULL;
	*out = NULL;
	if (!s) {
		fprintf(stderr, "%s\n", err_msg());
		return -1;
	}
	while ((rc = stream_read(s, &r)) > 0) {
		record **nv = realloc(v, (size_t)(n + 1) * sizeof *v);
		if (!nv) {
			record_free(r);
			rc = err_set("out of memory");
			break;
		}
		v = nv;
		v[n++] = r;
	}
	if (rc < 0)
		fprintf(stderr, "%s\n", err_msg());
	stream_close_read(s);
	*out = v;
	return rc < 0 ? -1 : n;
}

static inline void free_all(record **v, int n)
{
	for (int i = 0; i < n; i++)
		record_free(v[i]);
	free(v);
}

#endif
