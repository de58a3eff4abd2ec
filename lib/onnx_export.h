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
 *    a K + j is anchor a's value j; forward's flattened rows are, level by level, (y, x, a).
 * Nothing here prints or exits; failures are -1 with err_set(). */
#ifndef ONNX_EXPORT_H
#define ONNX_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct onnx_options {
	int opset;   /* 11 (default) or 9 */
	int batch;   /* the input's fixed batch size, 1 by default */
	int round;   /* validation only, not for TIDL: each point also rounds to its grid,
	              * y = Clip(Floor(x 2^f + 0.5), qmin, qmax) 2^-f, as forward --quant */
} onnx_options;

#define ONNX_MAX_OUTPUTS 16

/* What was written, for the summary. */
typedef struct onnx_info {
	int opset;
	int64_t ir_version;
	int64_t input_shape[4];
	int noutputs;
	char output_name[ONNX_MAX_OUTPUTS][16];
	int64_t output_shape[ONNX_MAX_OUTPUTS][4];
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
