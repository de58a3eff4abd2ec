/* stream: records of named tensors, one zstd frame each (format: docs/stream-format.md).
 *
 * A record is a kind ("image", "batch", "pred", ...), a free-form JSON meta object and
 * zero or more tensors. Readers validate everything before handing a record out; a
 * truncated, corrupt or oversized record is an error naming the stream and the record
 * number (1-based). Writers flush after every record so FIFO loops never stall.
 * Tools pass records they do not handle through with stream_pass(), byte for byte. */
#ifndef STREAM_H
#define STREAM_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "core/tensor.h"

#define RECORD_KINDLEN 32

typedef struct record {
	char kind[RECORD_KINDLEN];
	cJSON *meta; /* always an object, owned by the record */
	int ntensors;
	tensor *tensors;
	/* private */
	int cap;
	void *body;             /* decoded record when read; tensors point into it */
	unsigned char *frame;   /* the compressed frame as read, for stream_pass() */
	size_t frame_len;
} record;

record *record_new(const char *kind);
void record_free(record *r);
/* Adds a zeroed tensor that owns its data; NULL (err) on a bad name, shape or no memory. */
tensor *record_add(record *r, const char *name, enum dtype dt, int ndim, const int64_t *shape);
tensor *record_find(const record *r, const char *name);
/* record_find that also checks dtype and rank (ndim < 0: any rank); NULL (err) otherwise. */
tensor *record_expect(const record *r, const char *name, enum dtype dt, int ndim);
/* record_expect that also checks each dimension i with shape[i] >= 0 (-1: any size). */
tensor *record_expect_shape(const record *r, const char *name, enum dtype dt, int ndim, const int64_t *shape);
/* Encodes r into its frame now (thread-safe: workers can compress in parallel); a
 * later stream_pass() writes that frame. Call it last: changes made after it are not
 * in the frame. level as for stream_writer_new(). 0, or -1 (err). */
int record_encode(record *r, int level);
/* Meta accessors: a missing or mistyped key gives the default. */
double meta_num(const record *r, const char *key, double dflt);
const char *meta_str(const record *r, const char *key, const char *dflt);

/* ---- reading ---- */
typedef struct stream_reader stream_reader;

/* Opens path ("-": stdin) and owns the file. */
stream_reader *stream_open_read(const char *path);
/* Reads an open file it does not own; name is used in messages. */
stream_reader *stream_reader_new(FILE *f, const char *name);
/* 1: *out is the next record (free with record_free); 0: clean end; -1: error (err). */
int stream_read(stream_reader *s, record **out);
/* The first record of kind in the stream at path (a file, a FIFO, "-"): NULL (err)
 * when it has none ("<path>: no <kind> record") or cannot be read. */
record *stream_read_first(const char *path, const char *kind);
/* Records read so far. */
long stream_count(const stream_reader *s);
const char *stream_name(const stream_reader *s);
/* Largest decoded record accepted (default 2 GiB, or $TNS_MAX_RECORD bytes). */
void stream_set_limit(stream_reader *s, size_t bytes);
/* Records of kinds not in kinds (NULL-terminated, kept by the caller; NULL: every kind,
 * the default) are read but not decoded: only their header is, so they come back with
 * kind, meta and frame but no tensors, for stream_pass() (a tool in the training loop
 * passing the 10 MB grads records on). Their data is checked by whoever decodes them. */
void stream_decode_only(stream_reader *s, const char *const *kinds);
/* Closes the file too if the reader opened it. */
void stream_close_read(stream_reader *s);

/* ---- writing ---- */
typedef struct stream_writer stream_writer;

#define STREAM_LEVEL_DEFAULT (-1000)
/* level: zstd level (negative = faster); STREAM_LEVEL_DEFAULT takes $TNS_LEVEL or 1.
 * Opens path ("-": stdout) and owns the file. */
stream_writer *stream_open_write(const char *path, int level);
/* Writes to an open file it does not own. */
stream_writer *stream_writer_new(FILE *f, const char *name, int level);
/* Encodes and writes the record's current content. */
int stream_write(stream_writer *w, const record *r);
/* Writes the record's frame as it is (the frame it was read with, or the one
 * record_encode() made); encodes it if it has none. For records passed on unchanged. */
int stream_pass(stream_writer *w, const record *r);
/* The writer's resolved zstd level (for record_encode() in workers). */
int stream_writer_level(const stream_writer *w);
/* STREAM_LEVEL_DEFAULT -> $TNS_LEVEL or 1, clamped to zstd's range. */
int stream_resolve_level(int level);
/* Flushes, closes the file if the writer opened it; -1 (err) if any write failed. */
int stream_close_write(stream_writer *w);
/* Uncompressed bytes written so far (for benchmarks). */
unsigned long long stream_bytes_written(const stream_writer *w);

#endif
