/* Fuzzes the stream reader (lib/core/stream.c): every record it hands out must be whole and
 * consistent, so each one is written back with the writer and read again, and the two
 * must agree tensor by tensor. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/stream.h"

/* The reader's real record limit (TNS_MAX_RECORD) is 2 GiB; 16 MiB keeps every exec fast
 * while still letting the fuzzer reach the size checks. */
#define FUZZ_RECORD_LIMIT ((size_t)16 << 20)

static void check_round_trip(const record *r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	if (!mem)
		abort();
	stream_writer *w = stream_writer_new(mem, "mem", 1);
	if (!w || stream_write(w, r) < 0 || stream_close_write(w) < 0) {
		/* a record the reader accepted must be writable */
		fprintf(stderr, "re-encoding a record read back failed\n");
		abort();
	}
	fclose(mem);
	FILE *in = fmemopen(buf, len, "rb");
	stream_reader *s = stream_reader_new(in, "again");
	record *back = NULL;
	if (stream_read(s, &back) != 1 || strcmp(back->kind, r->kind) || back->ntensors != r->ntensors)
		abort();
	for (int i = 0; i < r->ntensors; i++) {
		const tensor *a = &r->tensors[i], *b = &back->tensors[i];
		if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->ndim != b->ndim ||
		    tensor_nbytes(a) != tensor_nbytes(b) || memcmp(a->data, b->data, tensor_nbytes(a)))
			abort();
	}
	record_free(back);
	stream_close_read(s);
	fclose(in);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0; /* fmemopen refuses an empty buffer */
	FILE *f = fmemopen((void *)data, size, "rb");
	if (!f)
		return 0;
	stream_reader *s = stream_reader_new(f, "fuzz");
	if (!s) {
		fclose(f);
		return 0;
	}
	stream_set_limit(s, FUZZ_RECORD_LIMIT);
	record *r;
	while (stream_read(s, &r) == 1) {
		check_round_trip(r);
		record_free(r);
	}
	stream_close_read(s);
	fclose(f);
	return 0;
}
