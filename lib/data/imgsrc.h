/* imgsrc: plain images (JPEG, PNG; no annotations) read as "image" records.
 *
 * Sources, in argument order:
 *   FILE       one image, whatever its name (the format is sniffed from its bytes)
 *   DIR        its *.jpg, *.jpeg, *.png files (any case) sorted by name, byte order;
 *              with recursive, those of its subdirectories too, sorted by their
 *              path under DIR; hidden names (".x") are skipped
 *   ARCHIVE    a .tar, .tar.gz, .tgz or .zip (libarchive, never unpacked): its image
 *              entries (by name, as DIR) in the order they are stored
 *   "-"        one path per line from a list stream (stdin), each a FILE (blank
 *              lines and surrounding blanks ignored)
 *
 * Each image becomes a record as lib/data/image_record.h makes it, with no box tensors:
 *   id     the path under the source without its extension ("sub/a"; a FILE: its
 *          name without extension); ids are unique (a clash fails imgsrc_open)
 *   root   the argument as given (a list's lines: the line)
 *   file   a path that opens the image: DIR/rel, FILE as given, ARCHIVE:entry
 *   index  the position in the whole ordered selection (before sharding); epoch 0
 * A bad image (unreadable, corrupt, not an image) is reported on its own so a tool
 * may skip it; a missing path, an unreadable directory or archive, or a directory
 * or archive with no image in it fails imgsrc_open(). */
#ifndef IMGSRC_H
#define IMGSRC_H

#include <stdio.h>

#include "core/stream.h"

typedef struct imgsrc imgsrc;

typedef struct imgsrc_opts {
	int recursive;        /* DIR: descend into subdirectories */
	FILE *list;           /* read by the source "-" (stdin), or NULL */
	const char *list_name;/* its name in messages */
} imgsrc_opts;

/* Finds every image (archives: reads their headers). NULL (err). */
imgsrc *imgsrc_open(int npaths, char *const *paths, const imgsrc_opts *o);
void imgsrc_close(imgsrc *s);
long imgsrc_size(const imgsrc *s);
const char *imgsrc_id(const imgsrc *s, long i);
const char *imgsrc_file(const imgsrc *s, long i);

enum { IMGSRC_END = 0, IMGSRC_RECORD = 1, IMGSRC_BAD = 2 };

/* Which positions p (0-based, in order) are read: the first limit (< 0: all), and of
 * those the ones with p % shard_n == shard_k. */
typedef struct imgsrc_plan {
	int shard_k, shard_n;
	long limit;
} imgsrc_plan;

/* Whether position p is one the plan reads. */
int imgsrc_planned(const imgsrc_plan *p, long pos);

/* IMGSRC_RECORD: *out is the next record (record_free it). IMGSRC_BAD: the next image
 * is bad, err names its file and why; call again to go on without it. IMGSRC_END, or
 * -1 (err) on a failure that stops reading (an archive that breaks off). */
int imgsrc_next(imgsrc *s, const imgsrc_plan *p, record **out);

#endif
