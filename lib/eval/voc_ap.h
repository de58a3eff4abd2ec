/* voc_ap: mean average precision over a set of images, as mmdetection 2.x's eval_map
 * scores VOC detections.
 *
 * Images are registered with their ground truth (map_add_gt), then given their
 * detections (map_add_dets, at most once per image; an image never given any counts as
 * one with no detections). Per class and image, detections are taken by score
 * (descending, stable) and matched greedily: IoU (float, mmdet's bbox_overlaps; VOC
 * "legacy" coordinates add 1 to widths and heights) against all of the image's gts of
 * the class, non-difficult first; best IoU >= iou_thr on a difficult gt: neither TP nor
 * FP; on a gt not yet covered: TP (covers it); on a covered one, or best IoU below the
 * threshold: FP. Then a class's detections over all images are ordered by score
 * (descending; ties by image order, then detection order; images ordered by index,
 * then id, so any order of adding gives the same result), recall = tp / max(gts, eps),
 * precision = tp / max(tp + fp, eps) (double, eps = DBL_EPSILON), and AP is VOC07's
 * 11-point mean of interpolated precision at recall 0, 0.1, ..., 1 or VOC12's area under
 * the precision envelope. gts counts non-difficult gts; mAP is the mean AP of the
 * classes with gts > 0 (0 when none). mmdet accumulates AP in float32: results agree to
 * ~1e-7. */
#ifndef VOC_AP_H
#define VOC_AP_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/stream.h"

enum map_mode { MAP_11POINTS, MAP_AREA };

typedef struct map_class {
	int64_t gts;   /* non-difficult ground truth boxes */
	int64_t dets;  /* detections of the class */
	double recall; /* final recall (0 without detections) */
	double ap;
} map_class;

typedef struct map_eval map_eval;

/* legacy: 1 for VOC pixel coordinates (w = x2 - x1 + 1), 0 for w = x2 - x1. */
map_eval *map_new(int nclasses, int legacy, double iou_thr);
void map_free(map_eval *m);

/* Registers image id with its gts (boxes [n,4] x1 y1 x2 y2, labels [n], difficult [n] or
 * NULL). -1 (err) if id is already registered or a label is outside 0..nclasses-1. */
int map_add_gt(map_eval *m, const char *id, int64_t index, const float *boxes, const int32_t *labels,
	       const uint8_t *difficult, int64_t n);
/* The detections of a registered image (boxes [n,4], scores [n], labels [n]). -1 (err)
 * for an unregistered id, an image given detections twice, or a label out of range. */
int map_add_dets(map_eval *m, const char *id, const float *boxes, const float *scores, const int32_t *labels,
		 int64_t n);
/* Is id registered? */
int map_has_image(const map_eval *m, const char *id);
int64_t map_images(const map_eval *m);
int64_t map_images_with_dets(const map_eval *m);

/* Per-class results into out[nclasses]; returns 0 and the mAP in *mean_ap, -1 (err) on
 * no memory. May be called again after more images are added. */
int map_compute(map_eval *m, enum map_mode mode, map_class *out, double *mean_ap);

/* ---- records ----
 * "dets" records (ssd-decode): boxes f32[D,4], scores f32[D], labels i32[D], and unless
 * the gt comes from elsewhere gt_boxes f32[G,4], gt_labels i32[G], gt_difficult u8[G];
 * meta id, index (default: *count), num_classes (if present, must be nclasses).
 * "image" records (voc-decode) as ground truth: boxes, labels, difficult; meta id,
 * index (default: *count). *count is incremented either way. */
int map_add_dets_record(map_eval *m, const record *r, int with_gt, long *count);
int map_add_gt_record(map_eval *m, const record *r, long *count);

/* mmdet's summary table (class | gts | dets | recall | ap, then mAP), malloc'd text;
 * names[nclasses]. NULL (err) on no memory. */
char *map_table(const map_class *cls, const char *const *names, int nclasses, double mean_ap);
/* {"mAP", "mode", "iou_thr", "legacy_coordinate", "images", "classes": [{name, gts, dets,
 * recall, ap}]}; NULL (err) on no memory. */
cJSON *map_json(const map_eval *m, const map_class *cls, const char *const *names, enum map_mode mode,
		double mean_ap);

#endif
