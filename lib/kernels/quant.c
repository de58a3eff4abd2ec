/* quant: power-of-2 fixed-point quantisation. Semantics in quant.h. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/quant.h"

int quant_pow2_exp(float x)
{
	if (!(x > 0) || isinf(x))
		return 0;
	int e;
	float m = frexpf(x, &e); /* x = m * 2^e, m in [0.5, 1) */
	return m == 0.5f ? e - 1 : e;
}

static float max_abs(const float *x, size_t n)
{
	float mx = 0;
	for (size_t i = 0; i < n; i++)
		mx = fmaxf(mx, fabsf(x[i]));
	return mx;
}

int quant_weight_frac(const float *w, size_t n, int bits)
{
	return bits - 1 - quant_pow2_exp(max_abs(w, n));
}

int quant_bias_frac(const float *b, size_t n, int acc_frac, int bias_bits)
{
	float mx = max_abs(b, n);
	int fit = bias_bits - 1 - quant_pow2_exp(mx);
	return mx > 0 && fit < acc_frac ? fit : acc_frac;
}

size_t quant_round(const float *w, size_t n, int frac, int qbits, int32_t *q, float *dq)
{
	const double lo = -ldexp(1, qbits - 1), hi = ldexp(1, qbits - 1) - 1;
	/* 2^frac and 2^-frac are normal f32 multipliers for |frac| <= 126; subnormal weights
	 * give frac up to 164 (2^frac = inf would make 0 * s NaN), so beyond that ldexpf,
	 * exact as well. */
	const int mul = frac >= -126 && frac <= 126;
	const float s = ldexpf(1, frac), inv = ldexpf(1, -frac);
	size_t sat = 0;
	for (size_t i = 0; i < n; i++) {
		/* half away from zero; exact: s is a power of 2 */
		double v = roundf(mul ? w[i] * s : ldexpf(w[i], frac));
		if (v < lo || v > hi) {
			v = v < lo ? lo : hi;
			sat++;
		}
		if (q)
			q[i] = (int32_t)v;
		if (dq)
			dq[i] = mul ? (float)v * inv : ldexpf((float)v, -frac);
	}
	return sat;
}

qact quant_act_params(const float range[2], int bits, int is_signed)
{
	qact a;
	int e = quant_pow2_exp(fmaxf(fabsf(range[0]), fabsf(range[1])));
	if (e < bits - 127)
		e = bits - 127; /* a range below 2^-119 or so: keep 2^frac a finite f32 */
	if (is_signed) {
		a.frac = bits - 1 - e;
		a.qmin = -(int32_t)(1u << (bits - 1));
		a.qmax = (int32_t)((1u << (bits - 1)) - 1);
	} else {
		a.frac = bits - e;
		a.qmin = 0;
		a.qmax = (int32_t)((1u << bits) - 1);
	}
	a.scale = ldexpf(1, a.frac);
	a.lo = ldexpf((float)a.qmin, -a.frac);
	a.hi = ldexpf((float)a.qmax, -a.frac);
	return a;
}

/* QAT runs these on every activation of every step (extrema and histogram for the
 * batch range, then the fake quantisation): scalar, they cost more than the convs.
 * The AVX-512 forms give the same results: the same f32 and f64 operations per value,
 * NaN skipped the same way, counts order-free. */
#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 act_int16(__m512 x, __m512 scale, __m512 qmin, __m512 qmax)
{
	__m512 v = _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(x, scale), _mm512_set1_ps(0.5f)),
					_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
	/* !(v <= qmax), NaN included, to qmax; then up to qmin */
	v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, qmax, _CMP_LE_OQ), qmax, v);
	return _mm512_max_ps(v, qmin);
}
#endif

void quant_act(const float *x, size_t n, const qact *a, float *y, int32_t *q)
{
	const float inv = ldexpf(1, -a->frac);
	size_t i = 0;
#if defined(__AVX512F__)
	const __m512 scale = _mm512_set1_ps(a->scale), qmin = _mm512_set1_ps((float)a->qmin),
		     qmax = _mm512_set1_ps((float)a->qmax), vinv = _mm512_set1_ps(inv);
	for (; i + 16 <= n; i += 16) {
		__m512 v = act_int16(_mm512_loadu_ps(x + i), scale, qmin, qmax);
		if (q)
			_mm512_storeu_si512(q + i, _mm512_cvttps_epi32(v));
		_mm512_storeu_ps(y + i, _mm512_mul_ps(v, vinv));
	}
#endif
	for (; i < n; i++) {
		float v = quant_act_int(x[i], a);
		if (q)
			q[i] = (int32_t)v;
		y[i] = v * inv;
	}
}

void quant_act_backward(const float *x, const float *dy, size_t n, const qact *a, float *dx)
{
	size_t i = 0;
#if defined(__AVX512F__)
	const __m512 lo = _mm512_set1_ps(a->lo), hi = _mm512_set1_ps(a->hi);
	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_loadu_ps(x + i);
		__mmask16 in = _mm512_cmp_ps_mask(v, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, hi, _CMP_LE_OQ);
		_mm512_storeu_ps(dx + i, _mm512_maskz_loadu_ps(in, dy + i));
	}
#endif
	for (; i < n; i++)
		dx[i] = x[i] >= a->lo && x[i] <= a->hi ? dy[i] : 0.0f;
}

/* min, max and count of the non-NaN values of x[0, n) */
static void extrema_slice(const float *x, size_t n, float *mn, float *mx, size_t *valid)
{
	size_t i = 0, v = 0;
	float lo = INFINITY, hi = -INFINITY;
#if defined(__AVX512F__)
	__m512 vlo = _mm512_set1_ps(INFINITY), vhi = _mm512_set1_ps(-INFINITY);
	for (; i + 16 <= n; i += 16) {
		__m512 t = _mm512_loadu_ps(x + i);
		__mmask16 ok = _mm512_cmp_ps_mask(t, t, _CMP_ORD_Q);
		vlo = _mm512_mask_min_ps(vlo, ok, vlo, t);
		vhi = _mm512_mask_max_ps(vhi, ok, vhi, t);
		v += (size_t)__builtin_popcount(ok);
	}
	lo = _mm512_reduce_min_ps(vlo);
	hi = _mm512_reduce_max_ps(vhi);
#endif
	for (; i < n; i++) {
		if (isnan(x[i]))
			continue;
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
		v++;
	}
	*mn = lo;
	*mx = hi;
	*valid = v;
}

void quant_extrema(const float *x, size_t n, double ext[3])
{
	/* counts and extrema are order-free: threads split the tensor, results are exact */
	float mn = INFINITY, mx = -INFINITY;
	size_t valid = 0;
	const size_t chunk = 1 << 16;
#pragma omp parallel for reduction(min : mn) reduction(max : mx) reduction(+ : valid) schedule(static) if (n > chunk)
	for (size_t o = 0; o < n; o += chunk) {
		float a, b;
		size_t c;
		extrema_slice(x + o, n - o < chunk ? n - o : chunk, &a, &b, &c);
		mn = a < mn ? a : mn;
		mx = b > mx ? b : mx;
		valid += c;
	}
	ext[0] = -(double)mn;
	ext[1] = mx;
	ext[2] = (double)valid;
}

/* Bins are counted in 8 interleaved 16-bit copies, one per lane of a vector of 8:
 * runs of equal values (a ReLU's zeros) would otherwise make each increment wait for
 * the previous one's store. 8 x 2048 x 2 bytes stay in L1; a copy takes at most one
 * count per 8 values, so it is added into the totals before 2^16 - 1 can be passed. */
#define HIST_WAYS 8
#define HIST_CHUNK (1 << 16)

typedef struct hist_part {
	uint16_t way[HIST_WAYS][QUANT_BINS];
	uint64_t total[QUANT_BINS];
	size_t pending; /* the most any copy may hold now */
} hist_part;

static void hist_flush(hist_part *h)
{
	for (int b = 0; b < QUANT_BINS; b++) {
		uint64_t t = 0;
		for (int k = 0; k < HIST_WAYS; k++)
			t += h->way[k][b];
		h->total[b] += t;
	}
	memset(h->way, 0, sizeof h->way);
	h->pending = 0;
}

/* bins of x[0, n), n <= HIST_CHUNK */
static void hist_slice(hist_part *h, const float *x, size_t n, double dmn, double w)
{
	if (h->pending + (n + HIST_WAYS - 1) / HIST_WAYS > UINT16_MAX)
		hist_flush(h);
	h->pending += (n + HIST_WAYS - 1) / HIST_WAYS;
	size_t i = 0;
#if defined(__AVX512F__)
	const __m512d vmn = _mm512_set1_pd(dmn), vw = _mm512_set1_pd(w);
	const __m256i top = _mm256_set1_epi32(QUANT_BINS - 1);
	for (; i + 8 <= n; i += 8) {
		__m256 t = _mm256_loadu_ps(x + i);
		__mmask8 ok = _mm256_cmp_ps_mask(t, t, _CMP_ORD_Q);
		__m512d d = _mm512_div_pd(_mm512_sub_pd(_mm512_cvtps_pd(t), vmn), vw);
		/* NaN lanes (and an infinite w's NaN quotients) to bin 0, counted 0 times */
		__m256i b = _mm256_maskz_mov_epi32(ok, _mm256_min_epi32(_mm512_cvttpd_epi32(d), top));
		b = _mm256_max_epi32(b, _mm256_setzero_si256());
		int32_t bin[8];
		_mm256_storeu_si256((__m256i *)bin, b);
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			h->way[j][bin[j]] += (ok >> j) & 1;
	}
#endif
	for (; i < n; i++) {
		if (isnan(x[i]))
			continue;
		double d = ((double)x[i] - dmn) / w;
		int b = d >= 0 ? (d < QUANT_BINS - 1 ? (int)d : QUANT_BINS - 1) : 0;
		h->way[i % HIST_WAYS][b]++;
	}
}

void quant_histogram(const float *x, size_t n, const double ext[3], double hist[QUANT_BINS])
{
	memset(hist, 0, QUANT_BINS * sizeof *hist);
	const double dmn = -ext[0], w = (ext[1] - dmn) / QUANT_BINS;
	if (!(w > 0))
		return;
#pragma omp parallel if (n > HIST_CHUNK)
	{
		hist_part h = {0}; /* 48 KB of stack */
#pragma omp for schedule(static)
		for (size_t o = 0; o < n; o += HIST_CHUNK)
			hist_slice(&h, x + o, n - o < HIST_CHUNK ? n - o : HIST_CHUNK, dmn, w);
		hist_flush(&h);
#pragma omp critical
		for (int b = 0; b < QUANT_BINS; b++)
			hist[b] += (double)h.total[b];
	}
}

void quant_trimmed_range(const double ext[3], const double hist[QUANT_BINS], float out[2])
{
	const double dmn = -ext[0], w = (ext[1] - dmn) / QUANT_BINS;
	if (ext[2] == 0) {
		out[0] = out[1] = 0;
		return;
	}
	if (!(w > 0)) {
		out[0] = (float)dmn;
		out[1] = (float)ext[1];
		return;
	}
	const double t = floor(ext[2] / QUANT_TRIM_DIV);
	double cum = 0;
	int klo = 0, khi = QUANT_BINS - 1;
	for (klo = 0; klo < QUANT_BINS - 1; klo++)
		if ((cum += hist[klo]) > t)
			break;
	for (cum = 0; khi > 0; khi--)
		if ((cum += hist[khi]) > t)
			break;
	out[0] = (float)(dmn + klo * w);
	out[1] = (float)(dmn + (khi + 1) * w);
}

void quant_batch_range(const float *x, size_t n, float out[2])
{
	double ext[3], hist[QUANT_BINS];
	quant_extrema(x, n, ext);
	if (ext[2] > 0 && -ext[0] != ext[1])
		quant_histogram(x, n, ext, hist);
	quant_trimmed_range(ext, hist, out);
}

void quant_range_update(float r[2], long n, const float batch[2])
{
	double f = 1.0 / (double)(n + 1);
	if (f < QUANT_EMA_MIN)
		f = QUANT_EMA_MIN;
	for (int i = 0; i < 2; i++)
		r[i] = (float)((double)r[i] * (1 - f) + (double)batch[i] * f);
}

void quant_fold_bn(float *w, size_t cout, size_t k, const float *cb, const float *gamma, const float *beta,
		   const float *mean, const float *var, float eps, float *bias)
{
	for (size_t o = 0; o < cout; o++) {
		float s = gamma[o] / sqrtf(var[o] + eps);
		for (size_t j = 0; j < k; j++)
			w[o * k + j] *= s;
		bias[o] = ((cb ? cb[o] : 0.0f) - mean[o]) * s + beta[o];
	}
}

void quant_bias_calibrate(float *bias, size_t n, const float *mean_float, const float *mean_quant, int epoch)
{
	const float f = (float)(0.05 * ldexp(1, -epoch));
	for (size_t i = 0; i < n; i++)
		bias[i] += (mean_float[i] - mean_quant[i]) * f;
}
