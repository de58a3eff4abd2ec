/* dets_out: what the output tools (draw-dets, dets-json) share: a checked view of a
 * "dets" record (ssd-decode's), the pairing of each dets record with the image record
 * that went before it in the stream (augment --pass-images), and the JSON object of
 * one image's detections.
 *
 * JSON (one object per image, cJSON):
 *   {"id": ..., "file": ... (the image record's meta.file, or null without one),
 *    "index": ..., "width": ..., "height": ...,
 *    "detections": [{"label": 0, "class": "RBC", "score": 0.93,
 *                    "box": [x1, y1, x2, y2]}, ...]}
 * detections in the dets record's order (score descending), those with score > the
 * threshold only; numbers are the f32 values exactly (as doubles). */
#ifndef DETS_OUT_H
#define DETS_OUT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/stream.h"
#include "data/classes.h"

typedef struct dets_view {
	const char *id;
	long index;
	int width, height, num_classes;
	int64_t n, ngt;
	const float *boxes, *scores;  /* [n,4] original pixels, [n] */
	const int32_t *labels;        /* [n] 0..num_classes-1 */
	const float *gt_boxes;        /* [ngt,4] */
	const int32_t *gt_labels;     /* [ngt] */
	const uint8_t *gt_difficult;  /* [ngt] */
} dets_view;

/* Checks a "dets" record (tensors, meta, labels in range) and fills *v; -1 (err). */
int dets_view_of(dets_view *v, const record *dets);

/* Class names for num_classes classes: the list's (its size must be num_classes), or
 * without one the 20 VOC names if num_classes is 20. -1 (err) otherwise. */
int dets_check_classes(const voc_classes *names, int num_classes);

/* ---- pairing ---- */
typedef struct dets_pairs dets_pairs;

dets_pairs *dets_pairs_new(void);
void dets_pairs_free(dets_pairs *p);
/* Keeps an image record until its dets come (takes ownership). -1 (err). */
int dets_pairs_add(dets_pairs *p, record *image);
/* The image record of dets v (the caller owns it): the oldest one waiting, which must
 * have v's id and index. NULL (err) if there is none or it is another image's. */
record *dets_pairs_take(dets_pairs *p, const dets_view *v);
/* Image records that got no dets; at the end of a stream that is an error. */
long dets_pairs_waiting(const dets_pairs *p);
/* Whether any image record has been seen. */
int dets_pairs_seen(const dets_pairs *p);

/* ---- JSON ---- */
/* The object above for one image; file may be NULL. NULL (err) when out of memory. */
cJSON *dets_json(const dets_view *v, const char *file, const voc_classes *names, double score_thr);

#endif
