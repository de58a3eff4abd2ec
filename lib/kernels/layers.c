/* layers: batchnorm, activations, add, concat, upsample, max pool, L2Norm, global pool.
 * (conv2d lives in conv.c.) */
#include "kernels/layers.h"

#include <math.h>
#include <string.h>

#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/err.h"

/* Elementwise loops run in parallel only when big enough to pay for the fork. */
#define PAR_MIN 65536

/* ---------------------------------------------------------------- batchnorm2d */

/* Training-mode BN is memory-bound: the forward reads its input twice (the moments,
 * then the normalisation) and the backward reads dout and the input twice. The
 * moments are one pass over x - shift (shift: the channel's first value, so that a
 * large mean does not cancel in sum(x^2) - m mean^2), summed in float lanes over
 * blocks of BN_BLOCK values and the block sums in double. */
#define BN_BLOCK 1024

#if defined(__AVX512F__)
static inline __mmask16 tail_mask(size_t left)
{
	return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* *s1 += sum(x - shift), *s2 += sum((x - shift)^2) over x [n] */
static void moments(double *s1, double *s2, const float *x, size_t n, float shift)
{
	const __m512 k = _mm512_set1_ps(shift);
	for (size_t i = 0; i < n;) {
		size_t end = n - i > BN_BLOCK ? i + BN_BLOCK : n;
		__m512 a1 = _mm512_setzero_ps(), a2 = a1, b1 = a1, b2 = a1;
		for (; i + 32 <= end; i += 32) {
			__m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), k);
			__m512 w = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), k);
			a1 = _mm512_add_ps(a1, v);
			a2 = _mm512_fmadd_ps(v, v, a2);
			b1 = _mm512_add_ps(b1, w);
			b2 = _mm512_fmadd_ps(w, w, b2);
		}
		for (; i < end; i += 16) {
			__mmask16 m = tail_mask(end - i);
			__m512 v = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), k);
			a1 = _mm512_add_ps(a1, v);
			a2 = _mm512_fmadd_ps(v, v, a2);
		}
		*s1 += _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
		*s2 += _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
	}
}

/* y = x * sc + sh over [n] */
static void scale_shift(float *y, const float *x, size_t n, float sc, float sh)
{
	const __m512 a = _mm512_set1_ps(sc), b = _mm512_set1_ps(sh);
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_fmadd_ps(_mm512_loadu_ps(x + i), a, b));
	if (i < n) {
		__mmask16 m = tail_mask(n - i);
		_mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), a, b));
	}
}

/* *sg += sum(g), *sgx += sum(g * (x - mu)) over [n] */
static void grad_moments(double *sg, double *sgx, const float *g, const float *x, size_t n, float mu)
{
	const __m512 k = _mm512_set1_ps(mu);
	for (size_t i = 0; i < n;) {
		size_t end = n - i > BN_BLOCK ? i + BN_BLOCK : n;
		__m512 a1 = _mm512_setzero_ps(), a2 = a1, b1 = a1, b2 = a1;
		for (; i + 32 <= end; i += 32) {
			__m512 g0 = _mm512_loadu_ps(g + i), g1 = _mm512_loadu_ps(g + i + 16);
			a1 = _mm512_add_ps(a1, g0);
			a2 = _mm512_fmadd_ps(g0, _mm512_sub_ps(_mm512_loadu_ps(x + i), k), a2);
			b1 = _mm512_add_ps(b1, g1);
			b2 = _mm512_fmadd_ps(g1, _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), k), b2);
		}
		for (; i < end; i += 16) {
			__mmask16 m = tail_mask(end - i);
			__m512 g0 = _mm512_maskz_loadu_ps(m, g + i);
			a1 = _mm512_add_ps(a1, g0);
			a2 = _mm512_fmadd_ps(g0, _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), k), a2);
		}
		*sg += _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
		*sgx += _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
	}
}

/* dx = a * g + b * (x - mu) + c over [n] */
static void grad_input(float *dx, const float *g, const float *x, size_t n, float a, float b, float c,
		       float mu)
{
	const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), vc = _mm512_set1_ps(c);
	const __m512 k = _mm512_set1_ps(mu);
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 t = _mm512_fmadd_ps(vb, _mm512_sub_ps(_mm512_loadu_ps(x + i), k), vc);
		_mm512_storeu_ps(dx + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(g + i), t));
	}
	if (i < n) {
		__mmask16 m = tail_mask(n - i);
		__m512 t = _mm512_fmadd_ps(vb, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), k), vc);
		_mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, g + i), t));
	}
}
#else
static void moments(double *s1, double *s2, const float *x, size_t n, float shift)
{
	for (size_t i = 0; i < n;) {
		size_t end = n - i > BN_BLOCK ? i + BN_BLOCK : n;
		float a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
		for (size_t j = i; j < end; j++) {
			float v = x[j] - shift;
			a1 += v;
			a2 += v * v;
		}
		*s1 += a1;
		*s2 += a2;
		i = end;
	}
}

static void scale_shift(float *y, const float *x, size_t n, float sc, float sh)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++)
		y[i] = x[i] * sc + sh;
}

static void grad_moments(double *sg, double *sgx, const float *g, const float *x, size_t n, float mu)
{
	for (size_t i = 0; i < n;) {
		size_t end = n - i > BN_BLOCK ? i + BN_BLOCK : n;
		float a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
		for (size_t j = i; j < end; j++) {
			a1 += g[j];
			a2 += g[j] * (x[j] - mu);
		}
		*sg += a1;
		*sgx += a2;
		i = end;
	}
}

static void grad_input(float *dx, const float *g, const float *x, size_t n, float a, float b, float c,
		       float mu)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++)
		dx[i] = a * g[i] + (b * (x[i] - mu) + c);
}
#endif

/* One channel ch of [n,c,hw]: its mean and centred sum of squares. */
static void ch_moments(const float *inp, int n, int c, int hw, int ch, double *mean, double *m2)
{
	size_t m = (size_t)n * hw;
	float shift = inp[(size_t)ch * hw];
	double s1 = 0, s2 = 0;
	for (int b = 0; b < n; b++)
		moments(&s1, &s2, inp + ((size_t)b * c + ch) * hw, hw, shift);
	double d = s1 / (double)m, ss = s2 - s1 * d;
	*mean = shift + d;
	*m2 = ss < 0 ? 0 : ss;
}

static void ch_normalise(float *out, const float *inp, int n, int c, int hw, int ch, double mu, float r,
			 const float *weight, const float *bias)
{
	float sc = (weight ? weight[ch] : 1.0f) * r;
	float sh = (float)((bias ? bias[ch] : 0.0f) - mu * sc);
	for (int b = 0; b < n; b++)
		scale_shift(out + ((size_t)b * c + ch) * hw, inp + ((size_t)b * c + ch) * hw, hw, sc, sh);
}

/* sum dy and sum dy * (x - mu) of channel ch */
static void ch_grad_sums(const float *dout, const float *inp, int n, int c, int hw, int ch, float mu, double *sg,
			 double *sgc)
{
	*sg = *sgc = 0;
	for (int b = 0; b < n; b++)
		grad_moments(sg, sgc, dout + ((size_t)b * c + ch) * hw, inp + ((size_t)b * c + ch) * hw, hw, mu);
}

/* dx = w * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)), the means over count values */
static void ch_grad_input(float *dinp, const float *dout, const float *inp, int n, int c, int hw, int ch, float mu,
			  float r, const float *weight, double sg, double sgx, double count)
{
	float w = weight ? weight[ch] : 1.0f;
	float k = w * r, mg = (float)(sg / count), mgx = (float)(sgx / count);
	for (int b = 0; b < n; b++)
		grad_input(dinp + ((size_t)b * c + ch) * hw, dout + ((size_t)b * c + ch) * hw,
			   inp + ((size_t)b * c + ch) * hw, hw, k, -k * r * mgx, -k * mg, mu);
}

int batchnorm2d_forward_train(float *out, float *mean, float *rstd, float *var_unbiased,
			      const float *inp, const float *weight, const float *bias,
			      float eps, int n, int c, int hw)
{
	size_t m = (size_t)n * hw;
	if (m < 2)
		return err_set("batchnorm2d: training needs more than one value per channel (n %d, h*w %d)", n, hw);
#pragma omp parallel for schedule(static) if (m * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++) {
		double mu, ss;
		ch_moments(inp, n, c, hw, ch, &mu, &ss);
		float r = (float)(1.0 / sqrt(ss / (double)m + eps));
		mean[ch] = (float)mu;
		rstd[ch] = r;
		if (var_unbiased)
			var_unbiased[ch] = (float)(ss / (double)(m - 1));
		ch_normalise(out, inp, n, c, hw, ch, mu, r, weight, bias);
	}
	return 0;
}

void batchnorm2d_backward_train(float *dinp, float *dweight, float *dbias, const float *dout,
				const float *inp, const float *mean, const float *rstd,
				const float *weight, int n, int c, int hw)
{
	size_t m = (size_t)n * hw;
#pragma omp parallel for schedule(static) if (m * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++) {
		double sg, sgc;
		ch_grad_sums(dout, inp, n, c, hw, ch, mean[ch], &sg, &sgc);
		double sgx = sgc * rstd[ch]; /* sum dy * xhat */
		if (dweight)
			dweight[ch] += (float)sgx;
		if (dbias)
			dbias[ch] += (float)sg;
		if (dinp)
			ch_grad_input(dinp, dout, inp, n, c, hw, ch, mean[ch], rstd[ch], weight, sg, sgx, (double)m);
	}
}

void batchnorm2d_moments(double *mean, double *m2, const float *inp, int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * hw * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++)
		ch_moments(inp, n, c, hw, ch, &mean[ch], &m2[ch]);
}

void batchnorm2d_merge_moments(double *a, const double *b, int c)
{
	for (int ch = 0; ch < c; ch++, a += 3, b += 3) {
		double n = a[0] + b[0];
		if (b[0] == 0)
			continue;
		double d = b[1] - a[1];
		a[1] += d * (b[0] / n);
		a[2] += b[2] + d * d * (a[0] * b[0] / n);
		a[0] = n;
	}
}

void batchnorm2d_normalise(float *out, const float *inp, const double *mean, const float *rstd,
			   const float *weight, const float *bias, int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * hw * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++)
		ch_normalise(out, inp, n, c, hw, ch, mean[ch], rstd[ch], weight, bias);
}

void batchnorm2d_grad_sums(double *sg, double *sgc, const float *dout, const float *inp, const float *mean,
			   int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * hw * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++)
		ch_grad_sums(dout, inp, n, c, hw, ch, mean[ch], &sg[ch], &sgc[ch]);
}

void batchnorm2d_grad_input(float *dinp, const float *dout, const float *inp, const float *mean,
			    const float *rstd, const float *weight, const double *sg, const double *sgc,
			    double count, int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * hw * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++)
		ch_grad_input(dinp, dout, inp, n, c, hw, ch, mean[ch], rstd[ch], weight, sg[ch], sgc[ch] * rstd[ch],
			      count);
}

void batchnorm2d_forward_eval(float *out, const float *inp, const float *weight, const float *bias,
			      const float *running_mean, const float *running_var, float eps,
			      int n, int c, int hw)
{
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * c * hw >= PAR_MIN)
	for (int b = 0; b < n; b++)
		for (int ch = 0; ch < c; ch++) {
			float r = (float)(1.0 / sqrt((double)running_var[ch] + eps));
			float sc = (weight ? weight[ch] : 1.0f) * r;
			float sh = (bias ? bias[ch] : 0.0f) - running_mean[ch] * sc;
			const float *x = inp + ((size_t)b * c + ch) * hw;
			float *y = out + ((size_t)b * c + ch) * hw;
#pragma omp simd
			for (int i = 0; i < hw; i++)
				y[i] = x[i] * sc + sh;
		}
}

void batchnorm2d_backward_eval(float *dinp, float *dweight, float *dbias, const float *dout,
			       const float *inp, const float *weight, const float *running_mean,
			       const float *running_var, float eps, int n, int c, int hw)
{
	size_t m = (size_t)n * hw;
#pragma omp parallel for schedule(static) if (m * c >= PAR_MIN)
	for (int ch = 0; ch < c; ch++) {
		float r = (float)(1.0 / sqrt((double)running_var[ch] + eps));
		float mu = running_mean[ch];
		float k = (weight ? weight[ch] : 1.0f) * r;
		double sg = 0, sgx = 0;
		for (int b = 0; b < n; b++) {
			const float *x = inp + ((size_t)b * c + ch) * hw;
			const float *g = dout + ((size_t)b * c + ch) * hw;
			float *dx = dinp ? dinp + ((size_t)b * c + ch) * hw : NULL;
			if (dweight || dbias) {
#pragma omp simd reduction(+ : sg, sgx)
				for (int i = 0; i < hw; i++) {
					sg += g[i];
					sgx += (double)g[i] * ((x[i] - mu) * r);
				}
			}
			if (dx) {
#pragma omp simd
				for (int i = 0; i < hw; i++)
					dx[i] = g[i] * k;
			}
		}
		if (dweight)
			dweight[ch] += (float)sgx;
		if (dbias)
			dbias[ch] += (float)sg;
	}
}

/* ---------------------------------------------------------------- elementwise */

/* Memory-bound: the AVX-512 loops below stream 64 bytes per load; each thread takes
 * one contiguous slice so the hardware prefetcher sees long runs. The compare forms
 * keep torch's semantics: relu passes NaN and -0, the backward masks (0 at x == 0
 * and, for relu6, at x == 6) drop NaN. */
#if defined(__AVX512F__)
enum ew_op { EW_RELU, EW_RELU6, EW_RELU_BWD, EW_RELU6_BWD, EW_ADD };

static inline __attribute__((always_inline)) __m512 ew_vec(enum ew_op op, __m512 x, const float *b,
							     __mmask16 m)
{
	const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
	switch (op) {
	case EW_RELU:
		return _mm512_max_ps(zero, x);
	case EW_RELU6:
		return _mm512_min_ps(six, _mm512_max_ps(zero, x));
	case EW_RELU_BWD: /* x: the forward's input or output, b: dout */
		return _mm512_maskz_loadu_ps(m & _mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), b);
	case EW_RELU6_BWD:
		return _mm512_maskz_loadu_ps(m & _mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ) &
						     _mm512_cmp_ps_mask(x, six, _CMP_LT_OQ),
					     b);
	default:
		return _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, b));
	}
}

/* Full vectors unmasked (masked stores are slow on Zen 4/5), the tail masked. */
static inline __attribute__((always_inline)) void ew_slice(enum ew_op op, float *out, const float *a,
							    const float *b, size_t lo, size_t hi)
{
	size_t i = lo;
	for (; i + 16 <= hi; i += 16)
		_mm512_storeu_ps(out + i, ew_vec(op, _mm512_loadu_ps(a + i), b + i, 0xffff));
	if (i < hi) {
		__mmask16 m = (__mmask16)((1u << (hi - i)) - 1);
		_mm512_mask_storeu_ps(out + i, m, ew_vec(op, _mm512_maskz_loadu_ps(m, a + i), b + i, m));
	}
}

static inline __attribute__((always_inline)) void ew(enum ew_op op, float *out, const float *a,
						      const float *b, size_t count)
{
	if (count < PAR_MIN) {
		ew_slice(op, out, a, b, 0, count);
		return;
	}
#pragma omp parallel
	{
		size_t nt = omp_get_num_threads(), t = omp_get_thread_num();
		size_t per = ((count + nt - 1) / nt + 15) & ~(size_t)15, lo = t * per, hi = lo + per;
		if (hi > count)
			hi = count;
		if (lo < hi)
			ew_slice(op, out, a, b, lo, hi);
	}
}

void relu_forward(float *out, const float *inp, size_t count)
{
	ew(EW_RELU, out, inp, NULL, count);
}

void relu_backward(float *dinp, const float *dout, const float *x, size_t count)
{
	ew(EW_RELU_BWD, dinp, x, dout, count);
}

void relu6_forward(float *out, const float *inp, size_t count)
{
	ew(EW_RELU6, out, inp, NULL, count);
}

void relu6_backward(float *dinp, const float *dout, const float *x, size_t count)
{
	ew(EW_RELU6_BWD, dinp, x, dout, count);
}

void add_forward(float *out, const float *a, const float *b, size_t count)
{
	ew(EW_ADD, out, a, b, count);
}
#else
void relu_forward(float *out, const float *inp, size_t count)
{
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
	for (size_t i = 0; i < count; i++)
		out[i] = inp[i] < 0.0f ? 0.0f : inp[i]; /* NaN and -0 pass, as torch */
}

void relu_backward(float *dinp, const float *dout, const float *x, size_t count)
{
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
	for (size_t i = 0; i < count; i++)
		dinp[i] = x[i] > 0.0f ? dout[i] : 0.0f;
}

void relu6_forward(float *out, const float *inp, size_t count)
{
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
	for (size_t i = 0; i < count; i++) {
		float v = inp[i] < 0.0f ? 0.0f : inp[i];
		out[i] = v > 6.0f ? 6.0f : v;
	}
}

void relu6_backward(float *dinp, const float *dout, const float *x, size_t count)
{
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
	for (size_t i = 0; i < count; i++)
		dinp[i] = x[i] > 0.0f && x[i] < 6.0f ? dout[i] : 0.0f;
}

void add_forward(float *out, const float *a, const float *b, size_t count)
{
#pragma omp parallel for simd schedule(static) if (count >= PAR_MIN)
	for (size_t i = 0; i < count; i++)
		out[i] = a[i] + b[i];
}
#endif

void add_backward(float *da, float *db, const float *dout, size_t count)
{
	if (da && da != dout)
		memcpy(da, dout, count * sizeof(float));
	if (db && db != dout)
		memcpy(db, dout, count * sizeof(float));
}

/* ---------------------------------------------------------------- concat */

void concat_forward(float *out, const float *const *inps, const int *chans, int ninp,
		    int n, int hw)
{
	int ctot = 0;
	for (int i = 0; i < ninp; i++)
		ctot += chans[i];
	for (int b = 0; b < n; b++) {
		int off = 0;
		for (int i = 0; i < ninp; i++) {
			size_t len = (size_t)chans[i] * hw;
			memcpy(out + ((size_t)b * ctot + off) * hw, inps[i] + b * len, len * sizeof(float));
			off += chans[i];
		}
	}
}

void concat_backward(float *const *dinps, const float *dout, const int *chans, int ninp,
		     int n, int hw)
{
	int ctot = 0;
	for (int i = 0; i < ninp; i++)
		ctot += chans[i];
	for (int b = 0; b < n; b++) {
		int off = 0;
		for (int i = 0; i < ninp; i++) {
			size_t len = (size_t)chans[i] * hw;
			if (dinps[i])
				memcpy(dinps[i] + b * len, dout + ((size_t)b * ctot + off) * hw, len * sizeof(float));
			off += chans[i];
		}
	}
}

/* ---------------------------------------------------------------- nearest upsample */

/* torch's nearest source index: floor(dst * scale) in float, scale = in / out. */
int upsample_nearest_src(int dst, int in, int out)
{
	float scale = (float)in / (float)out;
	int s = (int)floorf((float)dst * scale);
	return s < in - 1 ? s : in - 1;
}

void upsample_nearest_forward(float *out, const float *inp, int n, int c, int h, int w,
			      int oh, int ow)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * oh * ow >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		const float *x = inp + (size_t)p * h * w;
		float *y = out + (size_t)p * oh * ow;
		for (int oy = 0; oy < oh; oy++) {
			const float *xr = x + (size_t)upsample_nearest_src(oy, h, oh) * w;
			float *yr = y + (size_t)oy * ow;
			if (ow == 2 * w)
				for (int ox = 0; ox < ow; ox++)
					yr[ox] = xr[ox >> 1];
			else
				for (int ox = 0; ox < ow; ox++)
					yr[ox] = xr[upsample_nearest_src(ox, w, ow)];
		}
	}
}

void upsample_nearest_backward(float *dinp, const float *dout, int n, int c, int h, int w,
			       int oh, int ow)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * oh * ow >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		float *dx = dinp + (size_t)p * h * w;
		const float *g = dout + (size_t)p * oh * ow;
		memset(dx, 0, (size_t)h * w * sizeof(float));
		for (int oy = 0; oy < oh; oy++) {
			float *dr = dx + (size_t)upsample_nearest_src(oy, h, oh) * w;
			const float *gr = g + (size_t)oy * ow;
			for (int ox = 0; ox < ow; ox++)
				dr[upsample_nearest_src(ox, w, ow)] += gr[ox];
		}
	}
}

/* ---------------------------------------------------------------- bilinear upsample */

/* torch 1.13's CPU bilinear (align_corners=False) with its rounding: per axis the scale
 * is in float, the source coordinate in double (the acc_type torch computes it in) and
 * the two weights in float; the interpolation and the gradient's accumulation are the
 * fused multiply-adds the compiler makes of them in torch's AVX2 kernel. fmaf keeps
 * exactly those in any build (one instruction with FMA, a correctly rounded libm call
 * without), and -std=c11 keeps the compiler from fusing anything else. */

/* an output index's two sources and their weights, along one axis */
typedef struct bilinear_tap {
	int i0, i1;
	float l0, l1;
} bilinear_tap;

static bilinear_tap bilinear_tap_of(int dst, int in, int out)
{
	bilinear_tap t;
	if (in == out) { /* torch copies an axis of unchanged size */
		t.i0 = t.i1 = dst;
		t.l0 = 1.0f;
		t.l1 = 0.0f;
		return t;
	}
	float scale = (float)in / (float)out;
	double src = (double)scale * (dst + 0.5) - 0.5;
	if (src < 0)
		src = 0;
	t.i0 = (int)src;
	t.i1 = t.i0 + (t.i0 < in - 1);
	t.l1 = (float)(src - t.i0);
	t.l0 = 1.0f - t.l1;
	return t;
}

int upsample_bilinear_int_taps(int in, int out, int bits, int *i0, int *i1, int32_t *w0, int32_t *w1)
{
	for (int d = 0; d < out; d++) {
		bilinear_tap t = bilinear_tap_of(d, in, out);
		float a = ldexpf(t.l0, bits), b = ldexpf(t.l1, bits);
		if (a != rintf(a) || b != rintf(b) || a + b != ldexpf(1.0f, bits))
			return -1;
		i0[d] = t.i0, i1[d] = t.i1, w0[d] = (int32_t)a, w1[d] = (int32_t)b;
	}
	return 0;
}

/* An axis's taps are computed once per call into a table on the stack, for axes up to
 * BILINEAR_TABLE long (feature maps are); a longer axis has no table (NULL) and each
 * tap is computed where it is used. */
#define BILINEAR_TABLE 1024

static const bilinear_tap *bilinear_table(bilinear_tap *tab, int in, int out)
{
	if (out > BILINEAR_TABLE)
		return NULL;
	for (int i = 0; i < out; i++)
		tab[i] = bilinear_tap_of(i, in, out);
	return tab;
}

static inline bilinear_tap bilinear_tap_at(const bilinear_tap *tab, int dst, int in, int out)
{
	return tab ? tab[dst] : bilinear_tap_of(dst, in, out);
}

/* torch's two-tap sum a * wa + b * wb, the first product fused */
static inline float lerp2(float a, float wa, float b, float wb)
{
	return fmaf(a, wa, b * wb);
}

static inline float bilinear_pixel(const float *r0, const float *r1, float h0, float h1, bilinear_tap t)
{
	return lerp2(lerp2(r0[t.i0], t.l0, r0[t.i1], t.l1), h0, lerp2(r1[t.i0], t.l0, r1[t.i1], t.l1), h1);
}

/* Output row y [ow] from the input rows r0 (weight h0) and r1 (weight h1) of width w;
 * cols: the column taps (or NULL). */
static void bilinear_row(float *restrict y, const float *r0, const float *r1, float h0, float h1,
			 const bilinear_tap *cols, int w, int ow)
{
	for (int ox = 0; ox < ow; ox++)
		y[ox] = bilinear_pixel(r0, r1, h0, h1, bilinear_tap_at(cols, ox, w, ow));
}

/* The same for ow = 2w, w >= 2 (FPN's 2x): between the ends the column taps are
 * (k-1, k; 1/4, 3/4) for ox = 2k and (k, k+1; 3/4, 1/4) for ox = 2k+1, the weights
 * bilinear_tap_of gives exactly, so the vector loop rounds as bilinear_row does. */
static void bilinear_row_x2(float *restrict y, const float *r0, const float *r1, float h0, float h1,
			    const bilinear_tap *cols, int w)
{
	int ow = 2 * w;
	y[0] = bilinear_pixel(r0, r1, h0, h1, bilinear_tap_at(cols, 0, w, ow));
	y[1] = bilinear_pixel(r0, r1, h0, h1, bilinear_tap_at(cols, 1, w, ow));
#pragma omp simd
	for (int k = 1; k < w - 1; k++) {
		y[2 * k] = lerp2(lerp2(r0[k - 1], 0.25f, r0[k], 0.75f), h0,
				 lerp2(r1[k - 1], 0.25f, r1[k], 0.75f), h1);
		y[2 * k + 1] = lerp2(lerp2(r0[k], 0.75f, r0[k + 1], 0.25f), h0,
				     lerp2(r1[k], 0.75f, r1[k + 1], 0.25f), h1);
	}
	y[ow - 2] = bilinear_pixel(r0, r1, h0, h1, bilinear_tap_at(cols, ow - 2, w, ow));
	y[ow - 1] = bilinear_pixel(r0, r1, h0, h1, bilinear_tap_at(cols, ow - 1, w, ow));
}

void upsample_bilinear_forward(float *out, const float *inp, int n, int c, int h, int w, int oh, int ow)
{
	bilinear_tap rtab[BILINEAR_TABLE], ctab[BILINEAR_TABLE];
	const bilinear_tap *rows = bilinear_table(rtab, h, oh), *cols = bilinear_table(ctab, w, ow);
	int x2 = ow == 2 * w && w >= 2;
#pragma omp parallel for schedule(static) if ((size_t)n * c * oh * ow >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		const float *x = inp + (size_t)p * h * w;
		float *y = out + (size_t)p * oh * ow;
		for (int oy = 0; oy < oh; oy++) {
			bilinear_tap t = bilinear_tap_at(rows, oy, h, oh);
			const float *r0 = x + (size_t)t.i0 * w, *r1 = x + (size_t)t.i1 * w;
			if (x2)
				bilinear_row_x2(y + (size_t)oy * ow, r0, r1, t.l0, t.l1, cols, w);
			else
				bilinear_row(y + (size_t)oy * ow, r0, r1, t.l0, t.l1, cols, w, ow);
		}
	}
}

/* torch's backward, one dout row g [ow] at a time through its row tap th: output pixel
 * after output pixel, += (row weight * column weight) * g into the sources 00, 01, 10,
 * 11, fused. */
static void bilinear_row_backward(float *dx, const float *g, bilinear_tap th, const bilinear_tap *cols,
				  int w, int ow)
{
	float *d0 = dx + (size_t)th.i0 * w, *d1 = dx + (size_t)th.i1 * w;
	for (int ox = 0; ox < ow; ox++) {
		bilinear_tap t = bilinear_tap_at(cols, ox, w, ow);
		float v = g[ox];
		d0[t.i0] = fmaf(th.l0 * t.l0, v, d0[t.i0]);
		d0[t.i1] = fmaf(th.l0 * t.l1, v, d0[t.i1]);
		d1[t.i0] = fmaf(th.l1 * t.l0, v, d1[t.i0]);
		d1[t.i1] = fmaf(th.l1 * t.l1, v, d1[t.i1]);
	}
}

/* One such row's share in one of its source rows, d [w], of row weight hl, for ow = 2w,
 * w >= 2, when the other source row is a different one (so that only the order within
 * d matters). Element by element the terms come in torch's order, ascending ox: d[k]
 * between the ends takes ox = 2k-1 .. 2k+2, so a gather, which vectorises, does the
 * scatter's work. The end columns go through their taps. */
static void bilinear_row_backward_x2(float *restrict d, const float *g, float hl, const bilinear_tap *cols,
				     int w)
{
	int ow = 2 * w;
	float a = hl * 0.25f, b = hl * 0.75f;
	bilinear_tap t = bilinear_tap_at(cols, 0, w, ow); /* into d[0], and d[1] with weight 0 */
	d[t.i0] = fmaf(hl * t.l0, g[0], d[t.i0]);
	d[t.i1] = fmaf(hl * t.l1, g[0], d[t.i1]);
	d[0] = fmaf(b, g[1], d[0]);
	d[0] = fmaf(a, g[2], d[0]);
#pragma omp simd
	for (int k = 1; k < w - 1; k++) {
		float s = d[k];
		s = fmaf(a, g[2 * k - 1], s);
		s = fmaf(b, g[2 * k], s);
		s = fmaf(b, g[2 * k + 1], s);
		d[k] = fmaf(a, g[2 * k + 2], s);
	}
	d[w - 1] = fmaf(a, g[ow - 3], d[w - 1]);
	d[w - 1] = fmaf(b, g[ow - 2], d[w - 1]);
	t = bilinear_tap_at(cols, ow - 1, w, ow); /* both taps on d[w-1] */
	d[t.i0] = fmaf(hl * t.l0, g[ow - 1], d[t.i0]);
	d[t.i1] = fmaf(hl * t.l1, g[ow - 1], d[t.i1]);
}

void upsample_bilinear_backward(float *dinp, const float *dout, int n, int c, int h, int w, int oh, int ow)
{
	bilinear_tap rtab[BILINEAR_TABLE], ctab[BILINEAR_TABLE];
	const bilinear_tap *rows = bilinear_table(rtab, h, oh), *cols = bilinear_table(ctab, w, ow);
	int x2 = ow == 2 * w && w >= 2;
#pragma omp parallel for schedule(static) if ((size_t)n * c * oh * ow >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		float *dx = dinp + (size_t)p * h * w;
		const float *g = dout + (size_t)p * oh * ow;
		memset(dx, 0, (size_t)h * w * sizeof(float));
		for (int oy = 0; oy < oh; oy++) {
			bilinear_tap t = bilinear_tap_at(rows, oy, h, oh);
			const float *gr = g + (size_t)oy * ow;
			if (x2 && t.i0 != t.i1) {
				bilinear_row_backward_x2(dx + (size_t)t.i0 * w, gr, t.l0, cols, w);
				bilinear_row_backward_x2(dx + (size_t)t.i1 * w, gr, t.l1, cols, w);
			} else {
				bilinear_row_backward(dx, gr, t, cols, w, ow);
			}
		}
	}
}

/* ---------------------------------------------------------------- max pool */

/* torch's pooling_output_shape (dilation 1) */
static int pool_out(int in, int k, int s, int p, int ceil_mode)
{
	int num = in + 2 * p - k + (ceil_mode ? s - 1 : 0);
	if (num < 0)
		return 0;
	int o = num / s + 1;
	/* the last window must start inside the input or the left padding */
	if (ceil_mode && (o - 1) * s >= in + p)
		o--;
	return o;
}

int maxpool2d_init(pool2d_desc *d)
{
	if (d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1 || d->kh < 1 || d->kw < 1 || d->sh < 1 ||
	    d->sw < 1 || d->ph < 0 || d->pw < 0)
		return err_set("maxpool2d: bad geometry");
	if (2 * d->ph > d->kh || 2 * d->pw > d->kw)
		return err_set("maxpool2d: pad %d,%d exceeds half the kernel %dx%d", d->ph, d->pw, d->kh, d->kw);
	d->oh = pool_out(d->h, d->kh, d->sh, d->ph, d->ceil_mode);
	d->ow = pool_out(d->w, d->kw, d->sw, d->pw, d->ceil_mode);
	if (d->oh < 1 || d->ow < 1)
		return err_set("maxpool2d: output %dx%d is empty", d->oh, d->ow);
	return 0;
}

void maxpool2d_forward(float *out, int32_t *argmax, const float *inp, const pool2d_desc *d)
{
	int H = d->h, W = d->w, OH = d->oh, OW = d->ow;
#pragma omp parallel for schedule(static) if ((size_t)d->n * d->c * H * W >= PAR_MIN)
	for (int p = 0; p < d->n * d->c; p++) {
		const float *x = inp + (size_t)p * H * W;
		for (int oy = 0; oy < OH; oy++) {
			int y0 = oy * d->sh - d->ph, y1 = y0 + d->kh;
			if (y1 > H)
				y1 = H;
			if (y0 < 0)
				y0 = 0;
			for (int ox = 0; ox < OW; ox++) {
				int x0 = ox * d->sw - d->pw, x1 = x0 + d->kw;
				if (x1 > W)
					x1 = W;
				if (x0 < 0)
					x0 = 0;
				float best = -INFINITY;
				int at = y0 * W + x0;
				for (int y = y0; y < y1; y++)
					for (int xx = x0; xx < x1; xx++) {
						float v = x[y * W + xx];
						/* as torch: the first maximum, but the last NaN */
						if (v > best || isnan(v)) {
							best = v;
							at = y * W + xx;
						}
					}
				out[((size_t)p * OH + oy) * OW + ox] = best;
				if (argmax)
					argmax[((size_t)p * OH + oy) * OW + ox] = at;
			}
		}
	}
}

void maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax,
			const pool2d_desc *d)
{
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow;
#pragma omp parallel for schedule(static) if ((size_t)d->n * d->c * hw >= PAR_MIN)
	for (int p = 0; p < d->n * d->c; p++) {
		float *dx = dinp + p * hw;
		const float *g = dout + p * ohw;
		const int32_t *a = argmax + p * ohw;
		memset(dx, 0, hw * sizeof(float));
		for (size_t i = 0; i < ohw; i++)
			dx[a[i]] += g[i];
	}
}

/* ---------------------------------------------------------------- L2Norm */

/* For one pixel column: y_c = w_c x_c / nrm with nrm = sqrt(S) + eps, S = sum x^2.
 * dx_j = w_j g_j / nrm - x_j / (sqrt(S) nrm^2) * sum_c w_c g_c x_c. */
void l2norm_forward(float *out, const float *inp, const float *weight, float eps,
		    int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= PAR_MIN)
	for (int b = 0; b < n; b++) {
		const float *x = inp + (size_t)b * c * hw;
		float *y = out + (size_t)b * c * hw;
		for (int i = 0; i < hw; i++) {
			double s = 0;
			for (int ch = 0; ch < c; ch++)
				s += (double)x[(size_t)ch * hw + i] * x[(size_t)ch * hw + i];
			float inv = l2norm_factor(s, eps);
			for (int ch = 0; ch < c; ch++)
				y[(size_t)ch * hw + i] = weight[ch] * x[(size_t)ch * hw + i] * inv;
		}
	}
}

void l2norm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
		     const float *weight, float eps, int n, int c, int hw)
{
	/* dweight partials per thread, summed in thread order so the result is the same
	 * from run to run (a few KiB of stack; one thread if that would be too much) */
	int nth = (size_t)n * c * hw >= PAR_MIN ? omp_get_max_threads() : 1;
	if ((size_t)nth * c > 16384)
		nth = 1;
	double part[(size_t)nth * c];
	memset(part, 0, sizeof part);
#pragma omp parallel num_threads(nth)
	{
		double *acc = part + (size_t)omp_get_thread_num() * c;
		long npix = (long)n * hw;
#pragma omp for schedule(static)
		for (long p = 0; p < npix; p++) {
			size_t base = (size_t)(p / hw) * c * hw + p % hw;
			const float *x = inp + base, *g = dout + base;
			double s = 0;
			float wgx = 0;
			for (int ch = 0; ch < c; ch++) {
				float xv = x[(size_t)ch * hw];
				s += (double)xv * xv;
				wgx += weight[ch] * g[(size_t)ch * hw] * xv;
			}
			float rt = sqrtf((float)s), inv = l2norm_factor(s, eps);
			if (dweight)
				for (int ch = 0; ch < c; ch++)
					acc[ch] += (double)g[(size_t)ch * hw] * x[(size_t)ch * hw] * inv;
			if (!dinp)
				continue;
			/* at S = 0 the norm's derivative is undefined; take 0 there */
			float k = rt > 0 ? wgx * inv * inv / rt : 0.0f;
			float *dx = dinp + base;
			for (int ch = 0; ch < c; ch++)
				dx[(size_t)ch * hw] = weight[ch] * g[(size_t)ch * hw] * inv - x[(size_t)ch * hw] * k;
		}
	}
	if (dweight)
		for (int ch = 0; ch < c; ch++) {
			double s = 0;
			for (int t = 0; t < nth; t++)
				s += part[(size_t)t * c + ch];
			dweight[ch] += (float)s;
		}
}

/* ---------------------------------------------------------------- global average pool */

void avgpool_global_forward(float *out, const float *inp, int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		const float *x = inp + (size_t)p * hw;
		double s = 0;
#pragma omp simd reduction(+ : s)
		for (int i = 0; i < hw; i++)
			s += x[i];
		out[p] = (float)(s / hw);
	}
}

void avgpool_global_backward(float *dinp, const float *dout, int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		float v = dout[p] / (float)hw;
		float *dx = dinp + (size_t)p * hw;
		for (int i = 0; i < hw; i++)
			dx[i] = v;
	}
}
