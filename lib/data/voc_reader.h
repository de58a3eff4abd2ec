/* voc_reader: a dataset (data/voc.h: VOC trees and archives, or COCO's listed images)
 * read as "image" records, in a planned order: epochs, a seeded shuffle per epoch,
 * shards, resuming, decoding on threads with the output independent of their number.
 *
 * Records (kind "image"), tensors in this order:
 *   image      u8  [3,H,W]  RGB planes (absent when listing)
 *   boxes      f32 [n,4]    xmin, ymin, xmax, ymax in pixels
 *   labels     i32 [n]
 *   difficult  u8  [n]
 * meta: id, root, file (root-relative path as "<root>/JPEGImages/<id>.jpg"), width,
 * height, index (position in the epoch's ordered selection, before sharding), epoch.
 *
 * A bad image (missing file, corrupt image, malformed XML, unknown class, box outside
 * the image, XML size disagreeing with the image) is reported on its own so a tool
 * may skip it. */
#ifndef VOC_READER_H
#define VOC_READER_H

#include <stdint.h>

#include "core/stream.h"
#include "data/classes.h"
#include "data/voc.h"

/* The seed epoch e is shuffled with. */
uint64_t voc_epoch_seed(uint64_t seed, int epoch);

typedef struct voc_plan {
	const voc_classes *classes;
	int epochs;           /* >= 1: epochs 0..epochs-1 */
	int start_epoch;      /* resuming: begin with this epoch ... */
	long skip_to;         /* ... at this position of its order (earlier ones were trained on) */
	long limit;           /* first `limit` images of the split order; < 0: all */
	int shuffle;          /* reorder every epoch: splitmix64_shuffle (core/rng.h) with voc_epoch_seed(seed, epoch) */
	uint64_t seed;
	int shard_k, shard_n; /* keep positions p with p % shard_n == shard_k */
	int even_shards;      /* leave out the last (images per epoch) % shard_n positions */
	int threads;          /* decoding threads; 1 decodes in the caller's thread */
	int images;           /* 0: no image tensor, nothing decoded (listing) */
	int encode;           /* records come encoded (record_encode) at zstd level `level`, */
	int level;            /* ready for stream_pass() */
} voc_plan;

typedef struct voc_reader voc_reader;

enum { VOC_END = 0, VOC_RECORD = 1, VOC_BAD = 2 };

/* For archives this reads the selected images' bytes into memory. */
voc_reader *voc_reader_new(voc_dataset *d, const voc_plan *p);
/* VOC_RECORD: *out is the next record (record_free it). VOC_BAD: the next image is bad,
 * err names its file and the reason; call again to go on without it (an image found
 * bad is skipped silently in later epochs). VOC_END, or -1 (err) on a failure that
 * stops the reader. Records come in the same order for any thread count. */
int voc_reader_next(voc_reader *r, record **out);
void voc_reader_free(voc_reader *r);

#endif
