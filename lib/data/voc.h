/* voc: Pascal VOC datasets read as "image" records.
 *
 * A root holds Annotations/<id>.xml, ImageSets/Main/<split>.txt and
 * JPEGImages/<id>.jpg (or .png, .jpeg). voc_open() takes roots, directories whose
 * subdirectories are roots (VOCdevkit: VOC2007 + VOC2012, sorted), and .tar, .tar.gz,
 * .tgz or .zip archives (libarchive, never unpacked), where entries are grouped into
 * roots by the path before /Annotations/, /ImageSets/ or /JPEGImages/. Archives are
 * read twice: at open for the split lists and annotation XMLs, and when a reader is
 * made for the compressed bytes of the selected images only.
 *
 * Annotations are read as mmdetection 2.x's XMLDataset reads them: coordinates are
 * int(float(text)) with no -1 shift, a missing <difficult> is 0, label = index of the
 * class name in the class list (background is class C, left to the loss).
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
 * may skip it; a missing root or split file fails voc_open(). */
#ifndef VOC_H
#define VOC_H

#include <stddef.h>
#include <stdint.h>

#include "core/stream.h"

/* ---- class lists ---- */
typedef struct voc_classes {
	int n;
	char **names;
} voc_classes;

#define VOC_NCLASSES 20
extern const char *const voc_class_names[VOC_NCLASSES];

voc_classes *voc_classes_default(void);
/* One name per line, surrounding blanks trimmed, blank lines ignored; duplicates fail. */
voc_classes *voc_classes_load(const char *path);
void voc_classes_free(voc_classes *c);
/* Index of name, or -1. */
int voc_class_index(const voc_classes *c, const char *name);

/* ---- annotations ---- */
typedef struct voc_object {
	int label;
	int difficult;  /* 0 or 1 */
	int box[4];     /* xmin, ymin, xmax, ymax */
} voc_object;

typedef struct voc_annotation {
	int width, height; /* from <size>; 0 when absent */
	int nobj;
	voc_object *obj;
} voc_annotation;

/* Parses one annotation. -1 (err) on malformed XML, a missing or non-numeric field,
 * or a class name not in c. Free with voc_annotation_clear() (also after a failure). */
int voc_parse_xml(const char *xml, size_t len, const voc_classes *c, voc_annotation *out);
void voc_annotation_clear(voc_annotation *a);
/* Every box inside a width x height image with min <= max (zero area is legal). */
int voc_check_boxes(const voc_annotation *a, int width, int height);

/* ---- shuffling (splitmix64; the same seed gives the same order everywhere) ---- */
uint64_t voc_splitmix64(uint64_t *state);
/* Fisher-Yates over v[0..n). */
void voc_shuffle(long *v, long n, uint64_t seed);
/* The seed epoch e is shuffled with. */
uint64_t voc_epoch_seed(uint64_t seed, int epoch);

/* ---- datasets ---- */
typedef struct voc_dataset voc_dataset;

/* -1/NULL (err) for a missing path, a directory holding no root, an unreadable archive
 * or a root without ImageSets/Main/<split>.txt. */
voc_dataset *voc_open(int npaths, char *const *paths, const char *split);
void voc_close(voc_dataset *d);
/* Images listed by the split files of all roots. */
long voc_size(const voc_dataset *d);
int voc_nroots(const voc_dataset *d);
const char *voc_root_name(const voc_dataset *d, int i);

/* ---- datasets whose ground truth is known at open (COCO: lib/data/coco.h) ----
 * One image: its file under the image folder, the size its annotation gives (checked
 * against the image when decoded), its boxes as records carry them, or why it is bad
 * (reported when it is read, as a malformed XML is). */
typedef struct voc_listed_image {
	const char *id, *file;
	int width, height;
	int n;
	const float *boxes;    /* [n,4] x1 y1 x2 y2, already checked */
	const int32_t *labels;
	const uint8_t *ignore; /* the records' "difficult" mask */
	const char *bad;
} voc_listed_image;

/* A dataset of the images (copied) in image_dir, read with the same plans and records
 * as VOC's (meta root root_name, file "<root_name>/<file>", and difficult_is). -1/NULL
 * (err) when image_dir is no directory. */
voc_dataset *voc_open_listed(const char *image_dir, const char *root_name, long n, const voc_listed_image *images);

/* ---- reading ---- */
typedef struct voc_plan {
	const voc_classes *classes;
	int epochs;           /* >= 1: epochs 0..epochs-1 */
	int start_epoch;      /* resuming: begin with this epoch ... */
	long skip_to;         /* ... at this position of its order (earlier ones were trained on) */
	long limit;           /* first `limit` images of the split order; < 0: all */
	int shuffle;          /* reorder every epoch with voc_epoch_seed(seed, epoch) */
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
