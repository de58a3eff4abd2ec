/* conv_impl: private to the conv kernels: conv.c (geometry, the naive reference,
 * dispatch), conv_gemm.c (im2col + GEMM) and conv_dw.c (depthwise). The public face is
 * conv2d_* in layers.h. */
#ifndef CONV_IMPL_H
#define CONV_IMPL_H

#include "kernels/layers.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_GEMM512 1
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* 16 x 16 transpose of r[0..15]. */
static ALWAYS_INLINE void transpose16(__m512 r[16])
{
	__m512 t[16];
	for (int i = 0; i < 16; i += 2) {
		t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
	}
	for (int i = 0; i < 16; i += 4) {
		__m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 2]);
		__m512d c = _mm512_castps_pd(t[i + 1]), e = _mm512_castps_pd(t[i + 3]);
		r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
		r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
		r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e));
		r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e));
	}
	for (int i = 0; i < 8; i++) {
		int a = i / 4 * 8 + i % 4;
		t[a] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0x88);
		t[a + 4] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0xdd);
	}
	for (int i = 0; i < 8; i++) {
		r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
		r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
	}
}

/* Masked stores are slow on Zen 4/5 (several times a plain store): mask only the
 * vectors that need it. */
static ALWAYS_INLINE void store_lanes(float *p, __mmask16 m, __m512 v)
{
	if (m == 0xffff)
		_mm512_storeu_ps(p, v);
	else
		_mm512_mask_storeu_ps(p, m, v);
}

/* Masked loads can be slow too: on Zen 5 a masked load of dout with every lane set
 * made the depthwise dW 2.7x slower than with a plain load. Mask only a tail. */
static ALWAYS_INLINE __m512 load_lanes(__mmask16 m, const float *p)
{
	return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
#else
#define HAVE_GEMM512 0
#endif

/* 1x1, stride 1, no padding: the input is already the GEMM operand. */
static inline int conv_is_pointwise(const conv2d_desc *d)
{
	return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

/* The fused activation of one value (the reference's, the scalar tails'). */
static inline float conv_act_scalar(float v, enum conv_act act)
{
	if (act != CONV_ACT_NONE)
		v = v < 0.0f ? 0.0f : v; /* NaN passes, as torch */
	if (act == CONV_ACT_RELU6)
		v = v > 6.0f ? 6.0f : v;
	return v;
}

/* The output columns ox whose input column ox*s + off lies in [0, w): [*lo, *hi). */
static inline void conv_valid_range(int *lo, int *hi, int off, int s, int w, int ow)
{
	int a = off >= 0 ? 0 : (-off + s - 1) / s;
	int b = w - 1 - off < 0 ? 0 : (w - 1 - off) / s + 1;
	if (a > ow)
		a = ow;
	if (b > ow)
		b = ow;
	if (b < a)
		b = a;
	*lo = a;
	*hi = b;
}

/* The algorithms behind conv2d_forward / conv2d_backward (descriptor checked there). */
void conv_gemm_forward(float *out, const float *inp, const float *weight, const float *bias, float *ws,
		       const conv2d_desc *d);
void conv_gemm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
			const float *weight, float *ws, const conv2d_desc *d);
void conv_dw_forward(float *out, const float *inp, const float *weight, const float *bias, const conv2d_desc *d);
void conv_dw_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
		      const float *weight, const conv2d_desc *d);
void conv_group_forward(float *out, const float *inp, const float *weight, const float *bias, float *ws,
			const conv2d_desc *d);
void conv_group_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
			 const float *weight, float *ws, const conv2d_desc *d);
/* conv_group's workspace, in floats. */
size_t conv_group_workspace_floats(const conv2d_desc *d);

#endif
