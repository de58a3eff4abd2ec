/* onnx_export: a planned model (model.h) as an ONNX ModelProto, the graph TIDL imports.
 * The messages are protobuf-c's, generated at build time from the onnx.proto of Debian's
 * libonnx-dev; nothing here writes protobuf bytes by hand.
 *
 * What is written (docs/export.md):
 *  - one input "input" f32[batch, 3, H, W] (the normalised image, as forward reads it);
 *  - every BN folded into its conv (the weights forward runs with; for a quantised model
 *    the power-of-2 weights and biases, dequantised, so TIDL's own rounding of them is
 *    exact); relu -> Relu, relu6 -> Clip(0, 6), add, concat, nearest upsample -> Resize
 *    (opset 11) or Upsample (opset 9), maxpool;
 *  - for a quantised model, after every quantisation point a Clip to its power-of-2
 *    range (a relu6 feeding a point becomes a Relu: the point's clip replaces the 6), as
 *    TI's QAT export does, so TIDL takes the ranges instead of calibrating;
 *  - one output per head conv and level, before forward's flatten: "cls_<k>"
 *    f32[batch, A_k (C+1), H_k, W_k] and "reg_<k>" f32[batch, A_k 4, H_k, W_k]. Channel
 *    a K + j is anchor a's value j; forward's flattened rows are, level by level, (y, x, a);
 *  - with a detection tail (onnx_options.detect), after the heads the SSD post-processing
 *    of detect.h, as mmdetection's ONNX export ends: softmax, per-level top nms_pre,
 *    DeltaXYWH decode against the anchors (constants), clipped to the input; at opset 11
 *    per-class NonMaxSuppression and the best max_per_img, outputs "dets" f32[1, K, 5]
 *    (x1, y1, x2, y2 in input pixels, score) and "labels" i64[1, K]; opset 9 has no
 *    NonMaxSuppression: there "dets"/"labels" are every (candidate, class) pair above
 *    score_thr, before NMS (docs/export.md). single_output: one "detections" f32[1, K, 6]
 *    (dets, then the label as a float) instead, for older TIDL.
 * Nothing here prints or exits; failures are -1 with err_set(). */
#ifndef ONNX_EXPORT_H
#define ONNX_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ssd/anchors.h"
#include "ssd/detect.h"
#include "nn/model.h"

/* The post-processing after the heads: the anchors at the export size (anchors_new of the
 * config, as ssd-decode's), the box coder and test settings (head_config_load). */
typedef struct onnx_detect {
	const anchor_set *anchors;
	box_coder coder;
	detect_params test;
	int single_output; /* one "detections" output (older TIDL) instead of dets, labels */
} onnx_detect;

typedef struct onnx_options {
	int opset;   /* 11 (default) or 9 */
	int batch;   /* the input's fixed batch size, 1 by default */
	int round;   /* validation only, not for TIDL: each point also rounds to its grid,
	              * y = Clip(Floor(x 2^f + 0.5), qmin, qmax) 2^-f, as forward --quant */
	const onnx_detect *detect; /* NULL: the graph ends at the heads (batch 1 otherwise) */
} onnx_options;

#define ONNX_MAX_OUTPUTS 16

/* What was written, for the summary. */
typedef struct onnx_info {
	int opset;
	int64_t ir_version;
	int64_t input_shape[4];
	int noutputs;                       /* the head outputs */
	char output_name[ONNX_MAX_OUTPUTS][16];
	int64_t output_shape[ONNX_MAX_OUTPUTS][4];
	int ndetect;                        /* the detection tail's outputs: dets, labels or detections */
	char detect_name[2][16];
	int detect_cols;                    /* dets' last dimension: 5, or 6 for detections */
	int64_t candidates;                 /* anchors left after the per-level top-k */
	int nnodes, ninitializers, nclips;  /* nclips: the quantisation points' Clips */
	int64_t weights;                    /* floats in the initializers */
	size_t bytes;                       /* the file */
} onnx_info;

/* The ONNX of m (planned for one image at the export size, params loaded, ranges too
 * for a quantised model) into path. info may be NULL. */
int onnx_export(model *m, const onnx_options *o, const char *path, onnx_info *info);

/* Quantisation point p's Clip: its power-of-2 range (lo, hi) and fraction bits; -1
 * (err) without ranges or past the last point. */
int onnx_point_clip(const model *m, int p, float *lo, float *hi, int *frac);

#endif
