/* augment: SSD data augmentation and collation, with mmdetection 2.x semantics.
 *
 * Train:  PhotoMetricDistortion, Expand, MinIoURandomCrop, Resize (cv2 INTER_LINEAR,
 *         keep_ratio false), RandomFlip, Normalize; difficult boxes count in the crop's
 *         checks (mmdet's gt_bboxes_ignore) and are dropped from the batch.
 * Eval:   Resize + Normalize; boxes stay in original pixels (with difficult flags) and a
 *         scale_factor says how to map them.
 * Each random step is split in a draw (parameters from an rng) and an application (pure,
 * parameters passed in), so tests can drive every transform with chosen parameters.
 * The expanded canvas is never materialised: expand, crop, resize and flip are one
 * mapping from output pixels to the photometrically distorted original, whose border
 * samples the mean fill (aug_resize_ref() is the plain kernel the mapping is tested
 * against). Images are RGB CHW; pixel values stay in 0..255 scale until Normalize.
 * Nothing here does I/O or exits; failures are -1/NULL with err_set(). */
#ifndef AUGMENT_H
#define AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/rng.h"
#include "core/stream.h"

/* ---- parameters of one image's random transforms ---- */

typedef struct aug_photo {
	int brightness;     /* add delta */
	float delta;
	int contrast_first; /* mmdet's mode == 1: contrast before the HSV part, else after */
	int contrast;       /* multiply by alpha */
	float alpha;
	int saturation;     /* multiply S by sat */
	float sat;
	int hue;            /* add hue_shift degrees to H */
	float hue_shift;
	int swap;           /* out channel c = in channel perm[c] */
	int perm[3];
} aug_photo;

typedef struct aug_geom {
	int w, h;                /* the original image */
	int cw, ch, left, top;   /* expand canvas; the original sits at (left, top). No expand: w, h, 0, 0 */
	int crop;                /* a MinIoURandomCrop patch was chosen (boxes are filtered only then) */
	int x0, y0, x1, y1;      /* crop patch in canvas pixels; no crop: the whole canvas */
	int size;                /* output is size x size */
	int flip;                /* horizontal flip of the output */
} aug_geom;

/* Normalisation in internal (RGB) channel order, from a data_config. */
typedef struct aug_norm {
	float mean[3], istd[3]; /* (x - mean) * istd, as mmcv's imnormalize */
	int out_chan[3];        /* output channel of RGB channel c: c, or 2 - c when to_rgb is false */
	float fill[3];          /* Expand's fill: the mean, per RGB channel */
} aug_norm;

void aug_norm_init(aug_norm *nm, const data_config *c);

/* ---- draws (the order of draws per image: photo, expand, crop, flip) ---- */

void aug_draw_photo(aug_photo *p, rng *r, const data_config *c);
/* Sets g->cw..top for an image of g->w x g->h (no expand: canvas = image). */
void aug_draw_expand(aug_geom *g, rng *r, const data_config *c);
/* Sets g->crop and g->x0..y1 for the canvas g->cw x g->ch and the n boxes [n,4] in
 * canvas pixels. Returns g->crop: 0 for mmdet's mode 1 (the patch is the whole canvas). */
int aug_draw_crop(aug_geom *g, rng *r, const data_config *c, const float *boxes, int n);

/* ---- pixels ---- */

/* OpenCV float HSV: H in degrees [0, 360), S in [0, 1], V in the pixel scale. */
void aug_rgb2hsv(const float rgb[3], float hsv[3]);
void aug_hsv2rgb(const float hsv[3], float rgb[3]);
/* PhotoMetricDistortion in place on a float RGB image: channel c of pixel (y, x) is
 * img[c * plane + y * stride + x]. No clipping, as mmdet. Does nothing if !on. */
void aug_photometric(float *img, int w, int h, ptrdiff_t stride, ptrdiff_t plane, const aug_photo *p, int on);
/* cv2.resize INTER_LINEAR of one float plane (src sw x sh, dst dw x dh): the plain
 * reference the fused paths are tested against. */
void aug_resize_ref(float *dst, int dw, int dh, const float *src, int sw, int sh);

/* ---- boxes ([n,4] x1 y1 x2 y2 pixels; functions return the new count) ---- */

/* Training keeps difficult boxes through the geometry, as mmdet keeps gt_bboxes_ignore
 * in the crop's IoU and centre checks, and drops them at the end (SSD does not train
 * on them). They travel marked by a negative label, -1 - label (difficult may be NULL). */
void aug_mark_difficult(int32_t *labels, const uint8_t *difficult, int n);
/* Drops the marked boxes, keeping the labels aligned. */
int aug_boxes_drop_marked(float *boxes, int32_t *labels, int n);
void aug_boxes_shift(float *boxes, int n, float dx, float dy);
/* MinIoURandomCrop's box step: keep boxes whose centre is strictly inside the patch,
 * clip them to it and shift by (-x0, -y0). */
int aug_boxes_crop(float *boxes, int32_t *labels, int n, int x0, int y0, int x1, int y1);
/* Resize's box step: scale by (size / w, size / h) in f32 and clip to [0, size]. */
void aug_boxes_resize(float *boxes, int n, int w, int h, int size);
/* x1' = width - x2, x2' = width - x1. */
void aug_boxes_flip(float *boxes, int n, int width);
/* IoU without +1, as mmdet 2.x bbox_overlaps (f32, union floored at 1e-6). */
float aug_iou(const float a[4], const float b[4]);

/* ---- one image ---- */

typedef struct aug_image { /* views into an image record (aug_image_view) */
	const uint8_t *pixels;    /* [3,h,w] RGB */
	int w, h, n;
	const float *boxes;       /* [n,4] */
	const int32_t *labels;    /* [n] */
	const uint8_t *difficult; /* [n] or NULL (all 0) */
	int no_gt;                /* a plain image: no boxes or labels in the record (n = 0) */
	const char *id;           /* meta.id or NULL */
	int64_t index, epoch;     /* meta.index (else the image's ordinal in the stream), meta.epoch (else 0) */
} aug_image;

/* Checks an "image" record against the contract and fills *im; -1 (err) says why.
 * boxes and labels may both be absent (a plain image): no_gt set, n 0.
 * ordinal: the image's 0-based position in the stream, used if meta.index is missing. */
int aug_image_view(aug_image *im, const record *r, long ordinal);

typedef struct aug_opts {
	data_config cfg;
	int train;
	uint64_t seed;
} aug_opts;

typedef struct aug_target { /* what one image becomes; all memory is the caller's */
	float *pixels;          /* [3,size,size] */
	float *boxes;           /* room for in.n boxes */
	int32_t *labels;
	uint8_t *difficult;     /* eval only */
	int n;
	aug_geom geom;          /* the geometry applied (train), for tests and debugging */
} aug_target;

typedef struct aug_work aug_work; /* per-thread scratch buffers, grown as needed */
aug_work *aug_work_new(void);
void aug_work_free(aug_work *w);

/* The whole train or eval transform of one image, random stream seeded from
 * (seed, epoch, index). -1 (err) only when out of memory. */
int aug_one(aug_target *t, const aug_image *im, const aug_opts *o, aug_work *wk);
/* The train transform with every parameter given (photometric on if pon). */
int aug_apply(aug_target *t, const aug_image *im, const aug_photo *p, int pon, const aug_geom *g,
	      const aug_opts *o, aug_work *wk);

/* ---- batches ---- */

typedef struct aug_batch aug_batch;

typedef struct aug_job {
	aug_image in;
	aug_target out;
	/* set by the pool */
	const aug_opts *opts;
	aug_batch *batch; /* submitted with aug_pool_submit_batch, else NULL */
	int done, rc;
	char err[256];
} aug_job;

/* One batch record in the making, for aug_pool_submit_batch. */
#define AUG_NO_ENCODE (-100000)
struct aug_batch {
	record *rec;  /* from aug_batch_begin */
	aug_job *jobs;
	int n;
	int level;    /* record_encode() level once complete, or AUG_NO_ENCODE */
	int left;     /* private: jobs still running */
};

/* A "batch" record for the n images (jobs[i].in set), its image tensor allocated and each
 * job's target pointing into it (box arrays allocated); NULL (err) on no memory. */
record *aug_batch_begin(aug_job *jobs, int n, const aug_opts *o);
/* Adds the box tensors and meta (see augment's --help for the contract) after the jobs ran,
 * and frees the jobs' box arrays. Images without ground truth give an eval batch with no
 * boxes, labels, difficult or nbox; mixing them with annotated ones in a batch, or
 * training on them, is an error. -1 (err). */
int aug_batch_end(record *b, aug_job *jobs, int n, const aug_opts *o);
/* Frees the jobs' box arrays (for an error path); idempotent. */
void aug_jobs_release(aug_job *jobs, int n);

/* A FIFO of jobs served by nthreads - 1 helper threads; a thread waiting in
 * aug_pool_wait serves it too. Results do not depend on which thread ran a job. */
typedef struct aug_pool aug_pool;
aug_pool *aug_pool_new(int nthreads);
/* Queues aug_one for every job and returns at once; the jobs must stay put until waited for. */
int aug_pool_submit(aug_pool *p, aug_job *jobs, int n, const aug_opts *o);
/* Until every one of the jobs is done; -1 (err of the first failing job) if any failed.
 * One thread waits at a time. */
int aug_pool_wait(aug_pool *p, aug_job *jobs, int n);
/* Submits a batch's jobs; the thread that finishes its last image completes the record
 * (aug_batch_end) and encodes its frame, so records are compressed in parallel too.
 * aug_pool_wait on b->jobs returns once all that is done; then stream_pass(b->rec). */
int aug_pool_submit_batch(aug_pool *p, aug_batch *b, const aug_opts *o);
/* submit + wait. */
int aug_pool_run(aug_pool *p, aug_job *jobs, int n, const aug_opts *o);
void aug_pool_free(aug_pool *p);

#endif
