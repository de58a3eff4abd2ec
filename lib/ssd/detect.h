/* detect: an SSD head's outputs to detections, as mmdetection 2.x's SSDHead does at test
 * time, and the "model" section of a pipeline config that drives it.
 *
 * Per image: class logits [A, C+1] (foreground 0..C-1, background last) and deltas
 * [A, 4] over the anchors of anchors.h at input size S.
 *  1. softmax over the C+1 logits;
 *  2. per level, if it has more than nms_pre anchors, only the nms_pre with the highest
 *     foreground score stay (ties: lower anchor first); they stay in anchor order
 *     (mmdet keeps them in top-k order, which only matters for exact score ties);
 *  3. DeltaXYWH decode, clipped to [0, S]; divided by scale_factor (to original pixels);
 *  4. per class: candidates with score > score_thr, greedy NMS (IoU > nms_iou suppresses);
 *  5. all classes' kept boxes by score descending (ties: class, then anchor order), at
 *     most max_per_img of them.
 *
 * Config ("model" section; other members of "model" belong to other modules and are
 * left alone, unknown keys inside these three are errors):
 *   "anchors":    {"strides", "ratios", "basesize_ratio_range", "scale_major", "center_offset"}
 *   "bbox_coder": {"means", "stds", "wh_ratio_clip"}
 *   "test":       {"nms_pre", "score_thr", "nms_iou", "max_per_img"} */
#ifndef DETECT_H
#define DETECT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "ssd/anchors.h"
#include "core/boxes.h"
#include "core/stream.h"

typedef struct detect_params {
	int nms_pre;        /* <= 0: keep every anchor */
	double score_thr;
	double nms_iou;
	int max_per_img;
} detect_params;

/* The SSD head's settings that inference and the loss read from a config's "model"
 * section: anchors, box coding, test-time NMS (mmdet's anchor_generator, bbox_coder,
 * test_cfg). */
typedef struct head_config {
	anchor_config anchors;
	box_coder coder;
	detect_params test;
} head_config;

/* TI ssd_mobilenet_fpn / mmdet SSD: anchors as anchor_config_default, means 0, stds
 * (0.1, 0.1, 0.2, 0.2), nms_pre 1000, score_thr 0.02, nms_iou 0.45, max_per_img 200. */
void head_config_default(head_config *m);
/* Applies a "model" object over *m; where names it in messages ("file: model"). */
int head_config_apply(head_config *m, const cJSON *model, const char *where);
/* Reads a config file and applies its "model" member (absent: defaults stay). */
int head_config_load(head_config *m, const char *path);

/* One image's detections; the arrays belong to the detector and stay valid until its
 * next run. */
typedef struct detections {
	int64_t n;
	float *boxes;   /* [n, 4] original image pixels */
	float *scores;  /* [n] */
	int32_t *labels; /* [n] 0..C-1 */
} detections;

typedef struct detector detector;

detector *detector_new(const head_config *m);
void detector_free(detector *d);
/* The anchors at input size S (made once per size); NULL (err) if the config gives none. */
const anchor_set *detector_anchors(detector *d, int size);
/* Runs steps 1-5 on one image: cls [A, C+1], reg [A, 4], scale_factor (sx, sy, sx, sy).
 * -1 (err) if A is not the anchor count at S, or out of memory. */
int detector_run(detector *d, int size, const float *cls, const float *reg, int64_t A, int C,
		 const float *scale_factor, detections *out);

/* ---- records ----
 * A "pred" record (forward's output for an augment --eval batch of N images):
 *   cls f32[N,A,C+1], reg f32[N,A,4], scale_factor f32[N,4], orig_size i32[N,2] (H, W),
 *   ground truth in original pixels (optional as a group): boxes f32[N,M,4],
 *   labels i32[N,M] (padding -1), nbox i32[N], difficult u8[N,M] (optional);
 *   meta: size (S), ids [N] strings, indices [N] (optional: the running image count).
 * Each image gives a "dets" record: boxes f32[D,4], scores f32[D], labels i32[D],
 * gt_boxes f32[G,4], gt_labels i32[G], gt_difficult u8[G]; meta id, index, width,
 * height, num_classes (C). */

/* Calls emit with each image's dets record (emit owns it). *images counts images
 * across calls (the default index). -1 (err, naming the tensor or meta key) on a
 * malformed record, or whatever emit returned when it failed. */
int detect_pred_record(detector *d, const record *pred, long *images, int (*emit)(void *ctx, record *dets),
		       void *ctx);

#endif
