/* qmodel: a model's quantisation, as TI's edgeai-mmdetection does it (power-of-2 fixed
 * point: kernels/quant.h, docs/quantisation.md): its points and ranges, statistics and
 * bias calibration (qmodel.c), and the same model run on integers (qexec.c). The state
 * lives in the model's struct model_quant (nn/graph.h), which these files own. */
#ifndef QMODEL_H
#define QMODEL_H

#include "nn/model.h"

/* model_quantize() inserts a fake-quantisation point after every quantised value: the
 * input, each conv (after its BN and activation when they follow it), add, concat,
 * maxpool, l2norm; upsample and the flatten of the outputs keep their input's. Points
 * are named as the node they follow ("input", "backbone.features.0.2", ...). Without
 * ranges the points pass values on (and record batch ranges when stats are on); with
 * ranges loaded, forward fake-quantises: every conv runs on its BN-folded weights and
 * bias, quantised, and every point rounds and clips its value; backward is the
 * straight-through estimator, the BN folded with its running statistics (frozen). */

/* Before model_plan(); bits 2..16. */
int model_quantize(model *m, int bits);
/* Weights (conv weights, per tensor) at fewer bits than the activations, e.g. 4 with 8
 * (TI lists 4-bit weights as not yet done in TIDL); biases stay at 2 * the activations'
 * bits. After model_quantize, 2..its bits. */
int model_set_weight_bits(model *m, int bits);
/* Depthwise convs' weights (and biases) quantised per output channel, each channel at
 * its own power-of-2 scale by the per-tensor rules (TI's option, off by default); after
 * model_quantize. */
int model_set_per_channel_dw(model *m, int on);
/* The three above in one: the tools' --bits, --weight-bits (0: bits), --per-channel-dw. */
int model_quantize_as(model *m, int bits, int weight_bits, int per_channel_dw);
int model_quant_points(const model *m);
const char *model_quant_point_name(const model *m, int i);
/* A "ranges" record: one f32[2] (min, max) per point, by name, meta "batches". */
int model_load_ranges(model *m, const record *ranges);
record *model_ranges_record(const model *m);
/* Stats on: each forward records, per point, the trimmed range of its batch. */
void model_set_stats(model *m, int on);
/* A "stats" record of the last forward: one f32[2] per point. */
record *model_stats_record(const model *m);
/* A "qparams" record of the loaded params and ranges (fakequant): per conv
 * "<conv>.weight"/".bias" f32 (folded, dequantised), "<conv>.weight_q"/".bias_q" (the
 * integers: i8/i16 weights, i16/i32 bias) and "<conv>.frac" i32[3] (fraction bits of
 * weight, input, bias; bias <= weight + input: TIDL's bias split; a per-channel conv
 * adds "<conv>.weight_frac"/".bias_frac" i32[c], each channel's, and .frac holds the
 * smallest of each); per point "<point>.act" i32[3] (frac, qmin, qmax) and
 * "<point>.clip" f32[2]. Meta bits, weight_bits, per_channel_dw, config. Needs a plan
 * (any shape). */
record *model_qparams_record(model *m);

/* PTQ bias calibration (TI's): the batch through the float model (the params of the
 * first call, kept: the uncorrected reference), then through the quantised one with
 * the current params (into outputs). Returns a "stats" record: the float pass's batch
 * ranges, and per conv with a bias to correct "<param>.mean_float" and
 * "<param>.mean_quant", the channel means of the conv's folded output in either pass,
 * named by the parameter that takes the correction (its BN's bias when folded, else
 * its own). Needs ranges; leaves stats collection off. */
record *model_bias_calib_forward(model *m, const float *input, float *const *outputs);
/* bias += (mean_float - mean_quant) * 0.05 * 0.5^epoch for each pair in stats
 * (quant_bias_calibrate); returns how many biases changed, or -1 (err). */
int bias_calib_update(record *params, const record *stats, int epoch);

/* Integer-only inference (forward --int8; qexec.c, kernels/qlayers.h): the quantised
 * model (ranges loaded, an inference plan) on integers: at 8 bits or fewer int8/uint8
 * activations, int8 weights and int32 sums, equal to the fake-quantised forward's; at
 * 9..16 bits int16 values and exact int64 sums (where the simulation's f32 rounds).
 * Outputs as model_forward's. -1 (err) naming a layer without an integer kernel. */
int model_forward_integer(model *m, const float *input, float *const *outputs);
/* On: later plans leave out the float activations and workspace (model_forward_integer
 * alone runs on them). Before model_plan(). */
void model_set_integer_only(model *m, int on);

/* Running ranges (f32[2] per point, meta "batches") updated by one stats record
 * (quant_range_update, by name); ranges may start empty (no tensors, batches 0). */
int ranges_update(record *ranges, const record *stats);

/* Frees the integer plan (qexec.c), if any: the quantisation's teardown calls it. */
void qexec_free(model *m);

#endif
