/* tidl_prototxt: TIDL's SSD meta-architecture (TIDLMetaArch, caffe_ssd) for an exported
 * model: the head outputs to read, caffe PriorBox parameters per level and the
 * DetectionOutput settings, as text protobuf (docs/export.md).
 *
 * The prior boxes must be the anchors training used (anchors.h). Per level, mmdet's
 * anchors of one location are (min, min), (sqrt(min max), sqrt(min max)), then per ratio
 * r a wide (min sqrt r, min / sqrt r) and a tall box, centred at (x + c) stride: exactly
 * caffe's PriorBox with min_size, max_size, aspect_ratio r..., flip true, step = stride
 * and offset c (0.5 for mmdet 2.x). tidl_priors() derives these and then checks them
 * numerically: caffe's boxes, generated as caffe does, against anchors_new()'s. */
#ifndef TIDL_PROTOTXT_H
#define TIDL_PROTOTXT_H

#include <stdio.h>

#include "ssd/anchors.h"

typedef struct tidl_prior {
	double min_size, max_size;
	int nratios;
	double ratio[ANCHOR_MAX_RATIOS]; /* flip true adds 1 / r after each */
	double step, offset;
	int feat_h, feat_w;              /* the level's head output size */
} tidl_prior;

/* Caffe PriorBox (clip false) of one level: [feat_h * feat_w * n, 4] x1 y1 x2 y2 in
 * input pixels, computed as caffe does (normalised by the image size, in float) and
 * scaled back; n = 2 + 2 nratios. */
void tidl_prior_boxes(const tidl_prior *p, int img_w, int img_h, float *boxes);

/* The PriorBox parameters of every level of the anchors of c at input size S, checked
 * against anchors_new(): *max_diff gets the largest coordinate difference in pixels; a
 * difference above 1e-3 of S (anchors caffe cannot express: scale_major, ...) is an
 * error. */
int tidl_priors(const anchor_config *c, int size, tidl_prior *priors, int *nlevels, double *max_diff);

typedef struct tidl_ssd {
	int nlevels;
	const char *box_input[ANCHOR_MAX_LEVELS], *class_input[ANCHOR_MAX_LEVELS];
	tidl_prior prior[ANCHOR_MAX_LEVELS];
	int in_width, in_height;
	double variance[4];       /* the box coder's stds (its means must be 0) */
	int num_classes;          /* C + 1 */
	int background_label_id;  /* C: mmdet puts the background last */
	double nms_threshold, confidence_threshold;
	int top_k, keep_top_k;
	int single_output;        /* older TIDL: one `output` instead of the repeated field */
} tidl_ssd;

/* The prototxt text to f; -1 (err) on a write error. */
int tidl_prototxt_write(FILE *f, const tidl_ssd *s);

#endif
