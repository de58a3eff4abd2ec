/* coco_eval: COCO's bbox metrics as pycocotools' COCOeval computes them (evaluate,
 * accumulate, summarize with useCats, iouType "bbox").
 *
 * Images are registered first (pycocotools' imgIds, taken in id order); ground truth
 * and detections come with a category (0..ncats-1) and a box [x, y, w, h] in doubles.
 * Per image and category: detections by score (descending, stable: ties in the order
 * they were added, which is the results file's order for pycocotools), the first 100
 * kept; IoU as maskApi's bbIou (a crowd box's union is the detection's area alone);
 * for each area range (all, small < 32^2, medium, large > 96^2, bounds inclusive, from
 * the gt's "area", the det's w * h) gts outside the range or crowd are ignored and
 * sorted after the others; at each IoU threshold .50:.05:.95 a detection takes the
 * best IoU >= threshold among gts not yet taken (crowd ones may be taken again),
 * stopping at the ignored ones once a real one is found; a detection matched to an
 * ignored gt, or unmatched and outside the area range, is ignored. Accumulation over
 * images (in id order) per category, area and maxDets (1, 10, 100): detections by
 * score (stable), cumulative TP/FP, recall = tp / gts, precision = tp / (tp + fp + eps),
 * the precision envelope, read at the 101 recall points (searchsorted, left).
 * Categories with no gt in a range count as -1 (left out of the means); a category
 * with no gt and no detection at all is skipped for that range.
 * stats[12]: AP@[.5:.95], AP50, AP75, AP small/medium/large (maxDets 100), AR@1,
 * AR@10, AR@100, AR small/medium/large (maxDets 100); -1 where nothing counts, as
 * pycocotools. class_ap[c]: mmdet's classwise AP (area all, maxDets 100), NaN when the
 * category has no gt. */
#ifndef COCO_EVAL_H
#define COCO_EVAL_H

#include <stdint.h>

typedef struct coco_eval coco_eval;

enum { COCO_NSTATS = 12 };
/* mmdet's names for stats[0..5], then AR@1 .. AR_l@100. */
extern const char *const coco_stat_names[COCO_NSTATS];

coco_eval *coco_eval_new(int ncats);
void coco_eval_free(coco_eval *e);

/* Registers an image. -1 (err) if already registered. */
int coco_eval_add_image(coco_eval *e, int64_t image_id);
int coco_eval_has_image(const coco_eval *e, int64_t image_id);
/* -1 (err) for an unregistered image or a category out of range. */
int coco_eval_add_gt(coco_eval *e, int64_t image_id, int cat, const double bbox[4], double area, int iscrowd);
int coco_eval_add_det(coco_eval *e, int64_t image_id, int cat, const double bbox[4], double score);
int64_t coco_eval_ndets(const coco_eval *e);

/* stats[COCO_NSTATS], class_ap[ncats] (may be NULL). 0, or -1 (err) on no memory. */
int coco_eval_compute(coco_eval *e, double *stats, double *class_ap);

#endif

/* ---- records and reports (map-eval --metric coco) ---- */
#include <stdio.h>

#include <cjson/cJSON.h>

#include "data/coco.h"
#include "core/stream.h"

/* Where the ground truth comes from, and where detections go besides the evaluation. */
typedef struct coco_source {
	/* A COCO annotation file (coco_eval_add_set): record ids are its image ids and
	 * category[label] its category of each label. NULL: ground truth from the records
	 * (VOC data: gt_* tensors or voc-decode's records, areas w * h, difficult as
	 * iscrowd, images keyed by meta index, category ids label + 1). */
	const coco_set *set;
	const int *category;
	/* COCO results JSON ([{image_id, category_id, bbox, score}, ...]) written as dets
	 * are added, in the order the evaluation takes them (ties), or NULL. */
	FILE *results;
	long nresults;
} coco_source;

/* Registers every image of src->set and the annotations of categories with a label
 * (label[category] >= 0, coco_labels). -1 (err). */
int coco_eval_add_set(coco_eval *e, const coco_source *src, const int *label);
/* A "dets" record (ssd-decode), with its gt_* tensors unless src->set or with_gt is 0. */
int coco_eval_add_dets_record(coco_eval *e, coco_source *src, const record *r, int with_gt);
/* A voc-decode "image" record as ground truth (no src->set). */
int coco_eval_add_gt_record(coco_eval *e, const record *r);
/* Ends src->results' array; -1 (err) on a write error. */
int coco_results_finish(coco_source *src);

/* pycocotools' summarize() lines, then mmdet's classwise table; malloc'd. */
char *coco_eval_report(const double *stats, const double *class_ap, const char *const *names, int ncats);
/* {"metric": "coco", mmdet's names: stats, "bbox_mAP_copypaste", "images", "classwise":
 * [{name, ap}]} */
cJSON *coco_eval_json(const coco_eval *e, const double *stats, const double *class_ap, const char *const *names,
		      int ncats);
