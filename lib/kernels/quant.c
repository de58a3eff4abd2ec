/* quant: power-of-2 fixed-point quantisation. Semantics in quant.h. */
#include <math.h>
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

void quant_act(const float *x, size_t n, const qact *a, float *y, int32_t *q)
{
	const float inv = ldexpf(1, -a->frac);
	for (size_t i = 0; i < n; i++) {
		float v = quant_act_int(x[i], a);
		if (q)
			q[i] = (int32_t)v;
		y[i] = v * inv;
	}
}

void quant_act_backward(const float *x, const float *dy, size_t n, const qact *a, float *dx)
{
	for (size_t i = 0; i < n; i++)
		dx[i] = x[i] >= a->lo && x[i] <= a->hi ? dy[i] : 0.0f;
}

void quant_extrema(const float *x, size_t n, double ext[3])
{
	/* counts and extrema are order-free: threads split the tensor, results are exact */
	float mn = INFINITY, mx = -INFINITY;
	size_t valid = 0;
#pragma omp parallel for reduction(min : mn) reduction(max : mx) reduction(+ : valid) schedule(static) if (n >= 65536)
	for (size_t i = 0; i < n; i++) {
		if (isnan(x[i]))
			continue;
		mn = fminf(mn, x[i]);
		mx = fmaxf(mx, x[i]);
		valid++;
	}
	ext[0] = -(double)mn;
	ext[1] = mx;
	ext[2] = (double)valid;
}

void quant_histogram(const float *x, size_t n, const double ext[3], double hist[QUANT_BINS])
{
	memset(hist, 0, QUANT_BINS * sizeof *hist);
	const double dmn = -ext[0], w = (ext[1] - dmn) / QUANT_BINS;
	if (!(w > 0))
		return;
#pragma omp parallel if (n >= 65536)
	{
		size_t local[QUANT_BINS] = {0};
#pragma omp for schedule(static)
		for (size_t i = 0; i < n; i++) {
			if (isnan(x[i]))
				continue;
			int b = (int)(((double)x[i] - dmn) / w);
			local[b < QUANT_BINS ? b : QUANT_BINS - 1]++;
		}
#pragma omp critical
		for (int b = 0; b < QUANT_BINS; b++)
			hist[b] += (double)local[b];
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
