/* boxes: axis-aligned boxes (x1, y1, x2, y2) as float[4], the box arithmetic SSD needs:
 * IoU, mmdetection 2.x's DeltaXYWH coder (encode for the loss, decode for inference) and
 * greedy NMS. Plain kernels: no allocation, no I/O; callers pass scratch space. */
#ifndef BOXES_H
#define BOXES_H

#include <stdint.h>

/* v clamped to [lo, hi]: box coordinates to the image, deltas to the coder's bound. */
static inline float clampf(float v, float lo, float hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* IoU of a and b. extra = 0: widths are x2 - x1 (mmdet 2.x); extra = 1: x2 - x1 + 1 (VOC
 * "legacy" pixel coordinates). Computed in float in mmdet's bbox_overlaps order (area a +
 * area b - overlap, union at least FLT_EPSILON), so thresholds fall on the same side. */
float box_iou(const float *a, const float *b, float extra);

/* DeltaXYWH: deltas (dx, dy, dw, dh) of a box g relative to an anchor p, normalised
 * by (d - mean) / std. wh_ratio_clip bounds |dw|, |dh| at decode (mmdet: 16/1000). */
typedef struct box_coder {
	double means[4], stds[4];
	double wh_ratio_clip;
} box_coder;

void box_coder_default(box_coder *c); /* means 0, stds (0.1, 0.1, 0.2, 0.2), clip 0.016 */
/* The bound on |dw|, |dh| at decode, |log(wh_ratio_clip)| (mmdet's max_ratio), in float. */
float box_coder_max_ratio(const box_coder *c);
/* boxes[n,4] (x1, y1, x2, y2) as centre and size cs[n,4] (cx, cy, w, h), in the float
 * arithmetic box_decode uses for its anchors (the ONNX export's anchor constants). */
void box_centre_size(float *cs, const float *boxes, int64_t n);

/* deltas[n,4] of gt[n,4] against anchors[n,4] (the loss's regression targets). */
void box_encode(float *deltas, const float *anchors, const float *gt, int64_t n, const box_coder *c);
/* boxes[n,4] from deltas[n,4] and anchors[n,4]; x clipped to [0, max_w] and y to
 * [0, max_h] when max_w > 0 (mmdet clips to the network input shape). */
void box_decode(float *boxes, const float *anchors, const float *deltas, int64_t n, const box_coder *c,
		float max_w, float max_h);

/* Greedy NMS over boxes[order[i]], i < n, order sorted by score descending: keeps a box
 * unless an earlier kept box overlaps it with IoU > iou_thr (extra = 0). Writes the kept
 * entries of order to keep (in order) and returns their count; stops once max_keep are
 * kept (the first max_keep of the full result: later boxes cannot change them). */
int64_t box_nms(int64_t *keep, const float *boxes, const int64_t *order, int64_t n, float iou_thr,
		int64_t max_keep);

#endif
