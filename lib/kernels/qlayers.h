/* qlayers: the integer kernels of `forward --int8` (lib/quant/qexec.c runs them over the graph).
 *
 * Values are integers q with a power-of-2 scale: the real value is q * 2^-frac
 * (quant.h). An 8-bit model's tensors are int8 (signed points) or uint8 (points that are
 * non-negative by construction), stored as bytes; a 16-bit model's are int16 or uint16,
 * stored as 16-bit words. A tensor's format (QF_ flags) says which. Weights are int8
 * (int16), biases int16 (int32) with their own frac (TIDL's bias split), sums int32
 * (int64, exact in a double GEMM: see qconv).
 *
 * The one rounding rule, quant.h's for activations: a value v with frac f goes to frac
 * g as floor(v * 2^(g-f) + 1/2), then saturates to the point's [qmin, qmax]: qrequant().
 * The fake-quantised simulation (forward --quant) computes the same in f32, where every
 * product and sum of an 8-bit model is exact while sums stay within 24 bits, so the two
 * agree bit for bit (tests/unit/test_qlayers.c against the _ref loops here,
 * tests/unit/test_qmodel.c against the simulation). A 16-bit model's products reach 31
 * bits: its f32 simulation rounds them, these kernels do not (the naive loops are their
 * oracle, the simulation a neighbour within a few steps).
 *
 * Kernels never allocate, print or exit. The conv's GEMM runs on AVX-512 VNNI
 * (vpdpbusd: u8 x s8 in 4-byte groups, int32 sums) where the build has it, else on
 * AVX2 (vpmaddwd on the bytes widened to int16), else on portable C; an 8-bit
 * depthwise conv on VNNI gathers each pixel's taps of a kernel row with vpermb (else
 * an int16 form); an 8-bit grouped conv of a few channels a group at stride 1
 * (RegNet's) on VNNI sums from its input interleaved by 4 channels. Small convs and
 * elementwise kernels stay on the calling thread (waking the others costs more). */
#ifndef QLAYERS_H
#define QLAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

/* A tensor's integers: QF_SIGNED (int, else uint), QF_WIDE (16-bit words, else bytes). */
enum { QF_SIGNED = 1, QF_WIDE = 2 };

/* The integer x[i] of a tensor of format fmt. */
static inline int32_t qget(const void *x, size_t i, int fmt)
{
	switch (fmt & 3) {
	case 0:
		return ((const uint8_t *)x)[i];
	case QF_SIGNED:
		return ((const int8_t *)x)[i];
	case QF_WIDE:
		return ((const uint16_t *)x)[i];
	default:
		return ((const int16_t *)x)[i];
	}
}

/* Stores v (within the format's range) as out[i]. */
static inline void qput(void *out, size_t i, int32_t v, int fmt)
{
	if (fmt & QF_WIDE)
		((uint16_t *)out)[i] = (uint16_t)v;
	else
		((uint8_t *)out)[i] = (uint8_t)v;
}

/* clamp(floor(v * 2^-shift + 1/2), lo, hi), exact for any shift. */
static inline int32_t qrequant(int64_t v, int shift, int32_t lo, int32_t hi)
{
	if (shift > 0) {
		/* callers' |v| < 2^61: a shift of 62 or more rounds it to 0 */
		v = shift >= 62 ? 0 : (v + ((int64_t)1 << (shift - 1))) >> shift;
	} else if (shift < 0 && v != 0) {
		/* |v| * 2 or more: beyond any 32-bit clamp once |v| or the factor reaches 2^31 */
		if (-shift >= 31 || v >= INT32_MAX || v <= INT32_MIN)
			return v > 0 ? hi : lo;
		v *= (int64_t)1 << -shift;
	}
	return v < lo ? lo : v > hi ? (int32_t)hi : (int32_t)v;
}

/* An integer conv2d with its requantisation into the next point. */
typedef struct qconv {
	int n, c, h, w;          /* input [n, c, h, w]: format in_fmt */
	int k, kh, kw, sh, sw, ph, pw, dh, dw, groups;
	int oh, ow;              /* output [n, k, oh, ow]: the input's width, signed if lo < 0 */
	int in_fmt;
	int r, rp;               /* reduction per group c/groups*kh*kw, rounded up to 4 */
	const void *weight;      /* [k][rp], zero past r: int8, or int16 when in_fmt is QF_WIDE */
	const int64_t *bias;     /* [k] at the accumulator's scale (frac_w + frac_in) */
	int shift;               /* frac_w + frac_in - frac_out */
	const int *shifts;       /* [k], each output channel's (per-channel weights), or NULL: shift */
	int32_t lo, hi;          /* the output point's qmin, qmax */
	double *wide_weight;     /* QF_WIDE: [k][r] (caller's storage, qconv_init fills it):
				  * the weights as doubles for the GEMM, whose int64-sized
				  * sums stay exact (below 2^53) */
	int32_t *tap_weight;     /* 8 bits: k * rp bytes (caller's storage, qconv_init fills
				  * it for the grouped path): [k][c/groups/4 * kh * kw], each
				  * 4 channels' weights at one tap */
	/* filled by qconv_init */
	int depthwise;
	int fast;                /* the VNNI path with an int32 epilogue (see qconv_init) */
	int64_t *gemm_bias;      /* [k] (caller's storage, qconv_init fills it): bias less
				  * 128 * sum(weight) when an 8-bit input is signed (the GEMM
				  * sees it as uint8, q + 128) */
	int nthreads;
} qconv;

/* Checks the geometry, picks the path, fills oh, ow, gemm_bias [k] (and wide_weight). 0 or -1 (err). */
int qconv_init(qconv *d, int64_t *gemm_bias);
/* Bytes of workspace qconv_forward needs. */
size_t qconv_workspace_size(const qconv *d);
/* out [n, k, oh, ow] from inp [n, c, h, w]. */
void qconv_forward(void *out, const void *inp, uint8_t *ws, const qconv *d);
/* The naive loop nest, int64 sums: the oracle. */
void qconv_forward_ref(void *out, const void *inp, const qconv *d);

/* The other kernels: each output has its inputs' width (QF_WIDE of their formats) and
 * is signed when its lo is negative. */

/* out[i] = requant(x[i] at frac fx into frac fo), [lo, hi]; out may equal x. */
void qrescale(void *out, const void *x, int x_fmt, size_t n, int shift, int32_t lo, int32_t hi);
/* out = requant(a * 2^(f - fa) + b * 2^(f - fb)), f = max(fa, fb), shift f - fo;
 * |fa - fb| <= QMAX_FRAC_GAP. */
void qadd(void *out, const void *a, int a_fmt, int fa, const void *b, int b_fmt, int fb, size_t n, int fo,
	  int32_t lo, int32_t hi);
/* The largest difference of fraction bits the adds take (qexec refuses a model beyond):
 * a 16-bit value (or a bilinear sum of 2^32 units) moved up by it stays within int64. */
#define QMAX_FRAC_GAP 28
/* One axis of a bilinear upsampling as integers (upsample_bilinear_int_taps): output d
 * is w0[d] * x[i0[d]] + w1[d] * x[i1[d]], weights in units of 2^-bits. */
typedef struct qtaps {
	int *i0, *i1;
	int32_t *w0, *w1;
} qtaps;
/* FPN's top-down sum of a lateral a [nc, oh, ow] and the bilinear upsampling of b
 * [nc, h, w], fused: out = requant(a * 2^(f - fa) + up(b) * 2^(f - fu)), where up(b), the
 * taps' weighted sum, is an integer at frac fu = fb + 2 bits (the float simulation's
 * value exactly) and f = max(fa, fu); |fa - fu| <= QMAX_FRAC_GAP, bits <= 8. */
void qadd_bilinear(void *out, const void *a, int a_fmt, int fa, const void *b, int b_fmt, int fb, int nc, int h,
		   int w, int oh, int ow, const qtaps *rows, const qtaps *cols, int bits, int fo, int32_t lo,
		   int32_t hi);
/* out [n, c, oh, ow]: the maximum of each window of x [n, c, h, w] (padding never wins),
 * requantised by shift. */
void qmaxpool(void *out, const void *x, int x_fmt, int n, int c, int h, int w, int kh, int kw, int sh, int sw,
	      int ph, int pw, int oh, int ow, int shift, int32_t lo, int32_t hi);
/* mmdet's L2Norm of x [n, c, hw] (frac fx) into the point a: each pixel's sum of squares
 * is an exact integer, its factor layers.h's l2norm_factor of that sum times 2^-2fx,
 * and each value (weight[c] * x) * factor, rounded to a (quant_act_int): the float
 * forward's own operations on the same f32 values, so the simulation's values exactly
 * (at 16 bits too: its f64 sums of squares are exact). Integers in and out; the factor
 * and the scaling are f32, as in the simulation (one reciprocal square root a pixel;
 * TIDL's device kernel has its own fixed-point one). */
void ql2norm(void *out, const void *x, int x_fmt, int fx, const float *weight, float eps, int n, int c, int hw,
	     const qact *a);
/* out [n] = f32 q * 2^-frac of the integers x[0], x[stride], ... (exact) */
void qdequant(float *out, const void *x, size_t stride, int x_fmt, size_t n, int frac);
/* out [hw][c] = the same of x [c][hw]: planes to pixels (the head's flatten) */
void qdequant_planes(float *out, const void *x, int x_fmt, int c, int hw, int frac);
/* out [n] = quant_act_int(x[i], a) (the input image into its point), format fmt */
void qquantise(void *out, const float *x, size_t n, const qact *a, int fmt);
/* out [nc, oh, ow] = x [nc, h, w] nearest-upsampled (layers.h's source index) */
void qupsample_nearest(void *out, const void *x, int fmt, int nc, int h, int w, int oh, int ow);

#endif
