/* quant: TI's power-of-2 fixed-point quantisation (the jacinto-ai QuantCalibrateModule /
 * QuantTrainModule / QuantTestModule semantics targeting TIDL; docs/quantisation.md).
 *
 * Every scale is a power of two, written as "frac": the number of fraction bits, so a
 * real value x is the integer q times 2^-frac. Symmetric ranges, per tensor.
 *
 * - pow2 exponent: e(x) is the smallest integer with 2^e >= x, for x > 0 (exact, by
 *   frexp); e(0) = 0 (an all-zero tensor quantises to 0 at any scale).
 * - Weights (bits b): e = e(max|w|), frac = b-1-e, q = clamp(round_half_away(w * 2^frac),
 *   -2^(b-1), 2^(b-1)-1), computed in f32 (w * 2^frac is exact).
 * - Bias: bb = 2b bits (16 for 8-bit, 32 for 16-bit), at the accumulator's scale,
 *   frac = frac_weight + frac_input, unless the largest |b| (> 0) does not fit bb bits there:
 *   then TIDL's bias split, frac = the weight rule's frac of the bias at bb bits (the
 *   accumulator adds q << (acc frac - frac)); q = clamp(round_half_away(b * 2^frac),
 *   -2^(bb-1), 2^(bb-1)-1) (quant_round). Saturation then only takes the one rounding
 *   that reaches +2^(bb-1).
 * - Activations (bits b) from a running range (min, max): e = e(max(|min|, |max|));
 *   unsigned (after ReLU/ReLU6 and what keeps them non-negative): frac = b-e, q in
 *   [0, 2^b-1]; signed: frac = b-1-e, q in [-2^(b-1), 2^(b-1)-1];
 *   q = clamp(floor(x * 2^frac + 0.5)), computed in f32 as floorf(x * s + 0.5f); a NaN
 *   becomes qmax. e is at least b-127 (frac <= 127: 2^frac stays a finite f32).
 *   Fake quantisation outputs q * 2^-frac; its backward (straight-through estimator)
 *   passes the gradient where qmin * 2^-frac <= x <= qmax * 2^-frac, else 0.
 * - Ranges of one batch tensor: a histogram of QUANT_BINS bins over [mn, mx] trims
 *   QUANT_TRIM of each tail (see quant_batch_range); running ranges average them,
 *   cumulatively then as an EMA: f = max(1/(n+1), QUANT_EMA_MIN), r = r*(1-f) + batch*f.
 * - BN folding: s = gamma / sqrt(var + eps), W' = W * s, b' = (b - mean) * s + beta (f32).
 */
#ifndef QUANT_H
#define QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define QUANT_BINS 2048
#define QUANT_TRIM_DIV 10000   /* each tail trims floor(n / QUANT_TRIM_DIV) values (0.01%) */
#define QUANT_EMA_MIN 0.001

/* e(x) above. */
int quant_pow2_exp(float x);

/* Fraction bits of a weight tensor's scale (e of its largest magnitude). */
int quant_weight_frac(const float *w, size_t n, int bits);
/* A bias's fraction bits (the rule above) for an accumulator of acc_frac. */
int quant_bias_frac(const float *b, size_t n, int acc_frac, int bias_bits);
/* Weights or bias at frac with qbits-bit saturation: integers into q (may be NULL) and
 * the dequantised values into dq (may be NULL; may equal w). Returns the number of
 * values that saturated. */
size_t quant_round(const float *w, size_t n, int frac, int qbits, int32_t *q, float *dq);

/* An activation quantiser. */
typedef struct qact {
	int frac;        /* fraction bits */
	int32_t qmin, qmax;
	float scale;     /* 2^frac */
	float lo, hi;    /* qmin / scale, qmax / scale: the clip range in real units */
} qact;

qact quant_act_params(const float range[2], int bits, int is_signed);
/* The integer of x at a's point: floor(x * 2^frac + 1/2) clamped to [qmin, qmax], NaN to
 * qmax (as a float: it is exact). */
static inline float quant_act_int(float x, const qact *a)
{
	float v = floorf(x * a->scale + 0.5f);
	if (!(v <= (float)a->qmax))
		return (float)a->qmax;
	return v < (float)a->qmin ? (float)a->qmin : v;
}
/* y = fake-quantised x (y may equal x); q (may be NULL) gets the integers. */
void quant_act(const float *x, size_t n, const qact *a, float *y, int32_t *q);
/* Straight-through backward: dx = dy where lo <= x <= hi, else 0 (dx may equal dy). */
void quant_act_backward(const float *x, const float *dy, size_t n, const qact *a, float *dx);

/* The trimmed range of one batch tensor, in f64 arithmetic then rounded to f32:
 * mn, mx = min, max of x; if mn == mx the range is (mn, mx). Otherwise width
 * w = (mx - mn) / QUANT_BINS, bin(x) = min(QUANT_BINS-1, (int)((x - mn) / w)),
 * t = n / QUANT_TRIM_DIV (integer division); klo = the smallest bin whose cumulative
 * count from bin 0 exceeds t, khi = the largest bin whose cumulative count from the
 * last bin down exceeds t; out = (mn + klo * w, mn + (khi + 1) * w). NaNs are skipped
 * (a tensor of only NaNs gives (0, 0)); with an infinite mn or mx, a value whose
 * quotient is NaN counts in bin 0. */
void quant_batch_range(const float *x, size_t n, float out[2]);
/* The same in three steps, for a batch split across replicas (data-parallel QAT):
 * each part's extrema ext = (-min, max, count of non-NaN values), combined by max,
 * max and sum; each part's histogram over the combined extrema, combined by sum;
 * then the trimmed range. Counts and extrema combine exactly, so the parts give the
 * whole batch's range to the bit. */
void quant_extrema(const float *x, size_t n, double ext[3]);
void quant_histogram(const float *x, size_t n, const double ext[3], double hist[QUANT_BINS]);
void quant_trimmed_range(const double ext[3], const double hist[QUANT_BINS], float out[2]);
/* Running range r after n batches, updated by one batch range (f64 then f32). */
void quant_range_update(float r[2], long n, const float batch[2]);

/* BN folded into the conv before it: w [cout][k] in place, bias [cout] written (conv
 * bias, or NULL for none, in cb). */
void quant_fold_bn(float *w, size_t cout, size_t k, const float *cb, const float *gamma, const float *beta,
		   const float *mean, const float *var, float eps, float *bias);

/* PTQ bias calibration: bias += (mean_float - mean_quant) * 0.05 * 0.5^epoch. */
void quant_bias_calibrate(float *bias, size_t n, const float *mean_float, const float *mean_quant, int epoch);

#endif
