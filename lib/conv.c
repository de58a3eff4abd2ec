/* conv2d: naive reference, im2col + OpenBLAS sgemm, and depthwise kernels. */
#include "layers.h"

#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "err.h"

/* Running the (image, group) tasks in parallel with single-threaded GEMMs beats one
 * threaded GEMM at a time for grouped convs, for GEMMs with few rows (output channels
 * per group; OpenBLAS splits those poorly, e.g. the 3->32 stem or a 96->24 head) and
 * for small GEMMs (measured with bench/bench_layers.c on 2 cores). */
#define CONV_PAR_MACS (1L << 23)
#define CONV_PAR_ROWS 64

static int conv_out(int in, int k, int s, int p, int dil)
{
	int span = dil * (k - 1) + 1;
	if (in + 2 * p < span)
		return 0;
	return (in + 2 * p - span) / s + 1;
}

static int is_depthwise(const conv2d_desc *d)
{
	return d->groups == d->c && d->k == d->c;
}

static int is_dw3x3(const conv2d_desc *d)
{
	return is_depthwise(d) && d->kh == 3 && d->kw == 3 && d->sh == d->sw &&
	       (d->sh == 1 || d->sh == 2) && d->ph == 1 && d->pw == 1 && d->dh == 1 && d->dw == 1;
}

/* 1x1, stride 1, no padding: the input is already the GEMM operand. */
static int is_pointwise(const conv2d_desc *d)
{
	return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

int conv2d_init(conv2d_desc *d)
{
	if (d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1 || d->k < 1 || d->kh < 1 || d->kw < 1 ||
	    d->sh < 1 || d->sw < 1 || d->ph < 0 || d->pw < 0 || d->dh < 1 || d->dw < 1 || d->groups < 1)
		return err_set("conv2d: bad geometry (n %d c %d h %d w %d k %d kernel %dx%d stride %d,%d pad %d,%d dilation %d,%d groups %d)",
			       d->n, d->c, d->h, d->w, d->k, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw,
			       d->dh, d->dw, d->groups);
	if (d->c % d->groups || d->k % d->groups)
		return err_set("conv2d: channels %d -> %d not divisible by groups %d", d->c, d->k, d->groups);
	d->nthreads = omp_get_max_threads();
	d->oh = conv_out(d->h, d->kh, d->sh, d->ph, d->dh);
	d->ow = conv_out(d->w, d->kw, d->sw, d->pw, d->dw);
	if (d->oh < 1 || d->ow < 1)
		return err_set("conv2d: kernel %dx%d (dilation %d,%d) larger than padded input %dx%d",
			       d->kh, d->kw, d->dh, d->dw, d->h + 2 * d->ph, d->w + 2 * d->pw);
	switch (d->algo) {
	case CONV_AUTO:
		if (is_dw3x3(d))
			d->algo = CONV_DW3X3;
		else if (is_depthwise(d))
			d->algo = CONV_DW_DIRECT;
		else {
			long macs = (long)(d->k / d->groups) * (d->c / d->groups) * d->kh * d->kw *
				    d->oh * d->ow;
			int tasks = d->n * d->groups;
			d->algo = d->nthreads > 1 && tasks > 1 &&
						  (d->groups > 1 || d->k < CONV_PAR_ROWS || macs < CONV_PAR_MACS)
					  ? CONV_GEMM_PAR
					  : CONV_GEMM;
		}
		break;
	case CONV_GEMM:
	case CONV_GEMM_PAR:
		break;
	case CONV_DW3X3:
		if (!is_dw3x3(d))
			return err_set("conv2d: the dw3x3 kernel needs depthwise 3x3, stride 1 or 2, pad 1");
		break;
	case CONV_DW_DIRECT:
		if (!is_depthwise(d))
			return err_set("conv2d: the direct depthwise kernel needs groups == c == k");
		break;
	default:
		return err_set("conv2d: unknown algo %d", (int)d->algo);
	}
	return 0;
}

static int check_init(const conv2d_desc *d)
{
	conv2d_desc t = *d;
	t.algo = d->algo == CONV_AUTO ? CONV_GEMM : d->algo;
	if (conv2d_init(&t))
		return -1;
	if (t.oh != d->oh || t.ow != d->ow || d->algo == CONV_AUTO || d->nthreads < 1)
		return err_set("conv2d: descriptor not initialised (call conv2d_init)");
	return 0;
}

static size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* Per-thread scratch of CONV_GEMM_PAR, in floats: col, then dweight and dbias partials. */
static size_t par_stride(const conv2d_desc *d)
{
	size_t ckk = (size_t)(d->c / d->groups) * d->kh * d->kw;
	size_t col = is_pointwise(d) ? 0 : ckk * d->oh * d->ow;
	return round16(col) + round16((size_t)d->k * ckk) + round16((size_t)d->k);
}

size_t conv2d_workspace_size(const conv2d_desc *d)
{
	size_t ckk = (size_t)(d->c / d->groups) * d->kh * d->kw;
	switch (d->algo) {
	case CONV_GEMM:
		return is_pointwise(d) ? 0 : ckk * d->oh * d->ow * sizeof(float);
	case CONV_GEMM_PAR:
		return (size_t)d->nthreads * par_stride(d) * sizeof(float);
	default:
		return 0;
	}
}

/* ---------------------------------------------------------------- reference */

int conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
		       const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	int C = d->c, H = d->h, W = d->w, K = d->k, OH = d->oh, OW = d->ow;
	int cg = C / d->groups, kg = K / d->groups;
	for (int n = 0; n < d->n; n++)
		for (int k = 0; k < K; k++) {
			int g = k / kg;
			for (int oy = 0; oy < OH; oy++)
				for (int ox = 0; ox < OW; ox++) {
					double acc = bias ? bias[k] : 0.0;
					for (int ci = 0; ci < cg; ci++) {
						const float *x = inp + ((size_t)n * C + g * cg + ci) * H * W;
						const float *wk = weight + ((size_t)k * cg + ci) * d->kh * d->kw;
						for (int ky = 0; ky < d->kh; ky++) {
							int iy = oy * d->sh - d->ph + ky * d->dh;
							if (iy < 0 || iy >= H)
								continue;
							for (int kx = 0; kx < d->kw; kx++) {
								int ix = ox * d->sw - d->pw + kx * d->dw;
								if (ix < 0 || ix >= W)
									continue;
								acc += (double)wk[ky * d->kw + kx] * x[iy * W + ix];
							}
						}
					}
					out[(((size_t)n * K + k) * OH + oy) * OW + ox] = (float)acc;
				}
		}
	return 0;
}

int conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
			const float *inp, const float *weight, const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	int C = d->c, H = d->h, W = d->w, K = d->k, OH = d->oh, OW = d->ow;
	int cg = C / d->groups, kg = K / d->groups;
	if (dbias)
		for (int k = 0; k < K; k++) {
			double acc = 0;
			for (int n = 0; n < d->n; n++)
				for (int i = 0; i < OH * OW; i++)
					acc += dout[((size_t)n * K + k) * OH * OW + i];
			dbias[k] += (float)acc;
		}
	if (dweight)
		for (int k = 0; k < K; k++)
			for (int ci = 0; ci < cg; ci++)
				for (int ky = 0; ky < d->kh; ky++)
					for (int kx = 0; kx < d->kw; kx++) {
						int c = k / kg * cg + ci;
						double acc = 0;
						for (int n = 0; n < d->n; n++)
							for (int oy = 0; oy < OH; oy++) {
								int iy = oy * d->sh - d->ph + ky * d->dh;
								if (iy < 0 || iy >= H)
									continue;
								for (int ox = 0; ox < OW; ox++) {
									int ix = ox * d->sw - d->pw + kx * d->dw;
									if (ix < 0 || ix >= W)
										continue;
									acc += (double)dout[(((size_t)n * K + k) * OH + oy) * OW + ox] *
									       inp[(((size_t)n * C + c) * H + iy) * W + ix];
								}
							}
						dweight[((k * cg + ci) * d->kh + ky) * d->kw + kx] += (float)acc;
					}
	if (dinp)
		for (int n = 0; n < d->n; n++)
			for (int c = 0; c < C; c++) {
				int g = c / cg, ci = c % cg;
				for (int iy = 0; iy < H; iy++)
					for (int ix = 0; ix < W; ix++) {
						double acc = 0;
						for (int ky = 0; ky < d->kh; ky++) {
							int ty = iy + d->ph - ky * d->dh;
							if (ty < 0 || ty % d->sh || ty / d->sh >= OH)
								continue;
							for (int kx = 0; kx < d->kw; kx++) {
								int tx = ix + d->pw - kx * d->dw;
								if (tx < 0 || tx % d->sw || tx / d->sw >= OW)
									continue;
								int oy = ty / d->sh, ox = tx / d->sw;
								for (int k = g * kg; k < (g + 1) * kg; k++)
									acc += (double)weight[((k * cg + ci) * d->kh + ky) * d->kw + kx] *
									       dout[(((size_t)n * K + k) * OH + oy) * OW + ox];
							}
						}
						dinp[(((size_t)n * C + c) * H + iy) * W + ix] = (float)acc;
					}
			}
	return 0;
}

/* ---------------------------------------------------------------- im2col + sgemm */

/* The output columns ox whose input column ox*s + off lies in [0, w): [*lo, *hi). */
static void valid_range(int *lo, int *hi, int off, int s, int w, int ow)
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

/* col [cg*kh*kw, oh*ow] from inp [cg, h, w]: row (c, ky, kx) holds the input pixel
 * each output pixel sees through that tap (0 in the padding). */
static void im2col(float *col, const float *inp, int cg, const conv2d_desc *d)
{
	int kk = d->kh * d->kw, H = d->h, W = d->w, OH = d->oh, OW = d->ow;
	for (int r = 0; r < cg * kk; r++) {
		int c = r / kk, ky = r % kk / d->kw, kx = r % d->kw;
		float *dst = col + (size_t)r * OH * OW;
		int off = kx * d->dw - d->pw, lo, hi;
		valid_range(&lo, &hi, off, d->sw, W, OW);
		for (int oy = 0; oy < OH; oy++, dst += OW) {
			int iy = oy * d->sh - d->ph + ky * d->dh;
			if (iy < 0 || iy >= H) {
				memset(dst, 0, OW * sizeof(float));
				continue;
			}
			const float *src = inp + ((size_t)c * H + iy) * W + off;
			for (int ox = 0; ox < lo; ox++)
				dst[ox] = 0;
			if (d->sw == 1)
				memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
			else
				for (int ox = lo; ox < hi; ox++)
					dst[ox] = src[ox * d->sw];
			for (int ox = hi; ox < OW; ox++)
				dst[ox] = 0;
		}
	}
}

/* dinp [cg, h, w] += the col rows scattered back (the transpose of im2col). */
static void col2im(float *dinp, const float *col, int cg, const conv2d_desc *d)
{
	int H = d->h, W = d->w, OH = d->oh, OW = d->ow;
	for (int c = 0; c < cg; c++)
		for (int ky = 0; ky < d->kh; ky++)
			for (int kx = 0; kx < d->kw; kx++) {
				const float *src = col + ((size_t)(c * d->kh + ky) * d->kw + kx) * OH * OW;
				int off = kx * d->dw - d->pw, lo, hi;
				valid_range(&lo, &hi, off, d->sw, W, OW);
				for (int oy = 0; oy < OH; oy++, src += OW) {
					int iy = oy * d->sh - d->ph + ky * d->dh;
					if (iy < 0 || iy >= H)
						continue;
					float *dst = dinp + ((size_t)c * H + iy) * W + off;
					if (d->sw == 1)
						for (int ox = lo; ox < hi; ox++)
							dst[ox] += src[ox];
					else
						for (int ox = lo; ox < hi; ox++)
							dst[ox * d->sw] += src[ox];
				}
			}
}

/* One image, one group: out_g [kg, ohw] = w_g [kg, ckk] . col [ckk, ohw] + bias. */
static void gemm_fwd_task(float *out, const float *inp, const float *w, const float *bias,
			  float *col, int cg, int kg, const conv2d_desc *d)
{
	int ckk = cg * d->kh * d->kw, ohw = d->oh * d->ow;
	const float *b = inp;
	if (!is_pointwise(d)) {
		im2col(col, inp, cg, d);
		b = col;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, ohw, ckk, 1.0f, w, ckk, b, ohw,
		    0.0f, out, ohw);
	if (bias)
		for (int k = 0; k < kg; k++) {
			float bk = bias[k], *o = out + (size_t)k * ohw;
			for (int i = 0; i < ohw; i++)
				o[i] += bk;
		}
}

/* One image, one group of the backward. col is scratch of ckk*ohw floats (unused for
 * pointwise convs); dw, db: where this task's parameter gradients accumulate. */
static void gemm_bwd_task(float *dinp, float *dw, float *db, const float *dout, const float *inp,
			  const float *w, float *col, int cg, int kg, const conv2d_desc *d)
{
	int ckk = cg * d->kh * d->kw, ohw = d->oh * d->ow;
	int pw = is_pointwise(d);
	if (db)
		for (int k = 0; k < kg; k++) {
			const float *g = dout + (size_t)k * ohw;
			float s = 0;
#pragma omp simd reduction(+ : s)
			for (int i = 0; i < ohw; i++)
				s += g[i];
			db[k] += s;
		}
	if (dw) {
		const float *b = inp;
		if (!pw) {
			im2col(col, inp, cg, d);
			b = col;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kg, ckk, ohw, 1.0f, dout, ohw, b,
			    ohw, 1.0f, dw, ckk);
	}
	if (dinp) {
		if (pw) {
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, ohw, kg, 1.0f, w, ckk,
				    dout, ohw, 0.0f, dinp, ohw);
		} else {
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, ohw, kg, 1.0f, w, ckk,
				    dout, ohw, 0.0f, col, ohw);
			memset(dinp, 0, (size_t)cg * d->h * d->w * sizeof(float));
			col2im(dinp, col, cg, d);
		}
	}
}

static int blas_single_begin(void)
{
	int save = openblas_get_num_threads();
	if (save != 1)
		openblas_set_num_threads(1);
	return save;
}

static void blas_single_end(int save)
{
	if (save != 1)
		openblas_set_num_threads(save);
}

static void gemm_forward(float *out, const float *inp, const float *weight, const float *bias,
			 float *ws, const conv2d_desc *d)
{
	int G = d->groups, cg = d->c / G, kg = d->k / G;
	size_t isz = (size_t)d->c * d->h * d->w, osz = (size_t)d->k * d->oh * d->ow;
	size_t wsz = (size_t)kg * cg * d->kh * d->kw, ohw = (size_t)d->oh * d->ow;
	if (d->algo == CONV_GEMM) {
		for (int n = 0; n < d->n; n++)
			for (int g = 0; g < G; g++)
				gemm_fwd_task(out + n * osz + g * kg * ohw, inp + n * isz + (size_t)g * cg * d->h * d->w,
					      weight + g * wsz, bias ? bias + g * kg : NULL, ws, cg, kg, d);
		return;
	}
	int save = blas_single_begin();
	size_t stride = par_stride(d);
#pragma omp parallel num_threads(d->nthreads)
	{
		float *col = ws + omp_get_thread_num() * stride;
#pragma omp for schedule(dynamic)
		for (int t = 0; t < d->n * G; t++) {
			int n = t / G, g = t % G;
			gemm_fwd_task(out + n * osz + g * kg * ohw, inp + n * isz + (size_t)g * cg * d->h * d->w,
				      weight + g * wsz, bias ? bias + g * kg : NULL, col, cg, kg, d);
		}
	}
	blas_single_end(save);
}

static void gemm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
			  const float *inp, const float *weight, float *ws, const conv2d_desc *d)
{
	int G = d->groups, cg = d->c / G, kg = d->k / G;
	size_t isz = (size_t)d->c * d->h * d->w, osz = (size_t)d->k * d->oh * d->ow;
	size_t wsz = (size_t)kg * cg * d->kh * d->kw, ohw = (size_t)d->oh * d->ow;
	size_t gisz = (size_t)cg * d->h * d->w;
	if (d->algo == CONV_GEMM) {
		for (int n = 0; n < d->n; n++)
			for (int g = 0; g < G; g++)
				gemm_bwd_task(dinp ? dinp + n * isz + g * gisz : NULL,
					      dweight ? dweight + g * wsz : NULL, dbias ? dbias + g * kg : NULL,
					      dout + n * osz + g * kg * ohw, inp + n * isz + g * gisz,
					      weight + g * wsz, ws, cg, kg, d);
		return;
	}
	int save = blas_single_begin();
	size_t stride = par_stride(d), ckk = (size_t)cg * d->kh * d->kw;
	size_t colsz = round16(is_pointwise(d) ? 0 : ckk * ohw);
	size_t wall = (size_t)d->k * ckk;
#pragma omp parallel num_threads(d->nthreads)
	{
		int tid = omp_get_thread_num();
		float *col = ws + tid * stride;
		float *pdw = col + colsz, *pdb = pdw + round16(wall);
		if (dweight)
			memset(pdw, 0, wall * sizeof(float));
		if (dbias)
			memset(pdb, 0, d->k * sizeof(float));
#pragma omp for schedule(static) /* static: the partials sum in a fixed order */
		for (int t = 0; t < d->n * G; t++) {
			int n = t / G, g = t % G;
			gemm_bwd_task(dinp ? dinp + n * isz + g * gisz : NULL, dweight ? pdw + g * wsz : NULL,
				      dbias ? pdb + g * kg : NULL, dout + n * osz + g * kg * ohw,
				      inp + n * isz + g * gisz, weight + g * wsz, col, cg, kg, d);
		}
		/* implicit barrier: every thread's partials are complete */
		if (dweight) {
#pragma omp for schedule(static)
			for (size_t i = 0; i < wall; i++) {
				float s = 0;
				for (int th = 0; th < omp_get_num_threads(); th++)
					s += ws[th * stride + colsz + i];
				dweight[i] += s;
			}
		}
		if (dbias) {
#pragma omp for schedule(static)
			for (int k = 0; k < d->k; k++) {
				float s = 0;
				for (int th = 0; th < omp_get_num_threads(); th++)
					s += ws[th * stride + colsz + round16(wall) + k];
				dbias[k] += s;
			}
		}
	}
	blas_single_end(save);
}

/* ---------------------------------------------------------------- depthwise, direct */

/* One plane: out [oh, ow] = corr(inp [h, w], w [kh, kw]) + b. Any geometry. */
static void dw_direct_plane(float *out, const float *inp, const float *w, float b,
			    const conv2d_desc *d)
{
	for (int oy = 0; oy < d->oh; oy++)
		for (int ox = 0; ox < d->ow; ox++) {
			float acc = b;
			for (int ky = 0; ky < d->kh; ky++) {
				int iy = oy * d->sh - d->ph + ky * d->dh;
				if (iy < 0 || iy >= d->h)
					continue;
				for (int kx = 0; kx < d->kw; kx++) {
					int ix = ox * d->sw - d->pw + kx * d->dw;
					if (ix >= 0 && ix < d->w)
						acc += w[ky * d->kw + kx] * inp[iy * d->w + ix];
				}
			}
			out[oy * d->ow + ox] = acc;
		}
}

/* dinp [h, w] = the plane's input gradient (gather form, written). */
static void dw_direct_plane_dinp(float *dinp, const float *dout, const float *w,
				 const conv2d_desc *d)
{
	for (int iy = 0; iy < d->h; iy++)
		for (int ix = 0; ix < d->w; ix++) {
			float acc = 0;
			for (int ky = 0; ky < d->kh; ky++) {
				int ty = iy + d->ph - ky * d->dh;
				if (ty < 0 || ty % d->sh || ty / d->sh >= d->oh)
					continue;
				for (int kx = 0; kx < d->kw; kx++) {
					int tx = ix + d->pw - kx * d->dw;
					if (tx < 0 || tx % d->sw || tx / d->sw >= d->ow)
						continue;
					acc += w[ky * d->kw + kx] * dout[ty / d->sh * d->ow + tx / d->sw];
				}
			}
			dinp[iy * d->w + ix] = acc;
		}
}

/* dw [kh, kw] += sum over the plane of dout * the tap's input. */
static void dw_direct_plane_dw(float *dw, const float *dout, const float *inp, const conv2d_desc *d)
{
	for (int ky = 0; ky < d->kh; ky++)
		for (int kx = 0; kx < d->kw; kx++) {
			int off = kx * d->dw - d->pw, lo, hi;
			valid_range(&lo, &hi, off, d->sw, d->w, d->ow);
			float acc = 0;
			for (int oy = 0; oy < d->oh; oy++) {
				int iy = oy * d->sh - d->ph + ky * d->dh;
				if (iy < 0 || iy >= d->h)
					continue;
				const float *g = dout + oy * d->ow, *x = inp + iy * d->w + off;
				for (int ox = lo; ox < hi; ox++)
					acc += g[ox] * x[ox * d->sw];
			}
			dw[ky * d->kw + kx] += acc;
		}
}

/* ---------------------------------------------------------------- depthwise 3x3, AVX-512 */

#if defined(__AVX512F__)
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Lanes j (0..15) with 0 <= start + j < limit. */
static ALWAYS_INLINE __mmask16 range_mask(int start, int limit)
{
	int lo = start < 0 ? -start : 0, hi = limit - start;
	if (hi > 16)
		hi = 16;
	if (hi <= lo)
		return 0;
	return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* Masked-out lanes are never touched (AVX-512 fault suppression), so the address may
 * lie before or past the row; it is formed from an integer to keep that out of C's
 * pointer rules. Masked lanes read as 0, which is the zero padding. */
static ALWAYS_INLINE __m512 load_masked(__mmask16 m, const float *row, int start)
{
	return _mm512_maskz_loadu_ps(m, (const void *)((intptr_t)row + (intptr_t)start * 4));
}

/* The loads that make the three horizontal taps (kx = 0, 1, 2) of output columns
 * ox0..ox0+15 in an input row of width w, pad 1: stride 1 needs three shifted loads,
 * stride 2 two pairs of loads split into even and odd lanes. The masks depend only on
 * the column, so they are computed once per chunk and reused for every row. */
typedef struct tapmask {
	__mmask16 a, b, c, d;
	int start;
} tapmask;

typedef struct taps3 {
	__m512 t0, t1, t2;
} taps3;

static ALWAYS_INLINE tapmask tap_masks(int ox0, int s, int w)
{
	tapmask m;
	if (s == 1) {
		m.start = ox0 - 1;
		m.a = range_mask(ox0 - 1, w);
		m.b = range_mask(ox0, w);
		m.c = range_mask(ox0 + 1, w);
		m.d = 0;
	} else {
		m.start = 2 * ox0 - 1;
		m.a = range_mask(m.start, w);
		m.b = range_mask(m.start + 16, w);
		m.c = range_mask(m.start + 1, w);
		m.d = range_mask(m.start + 17, w);
	}
	return m;
}

static ALWAYS_INLINE taps3 load_taps(const float *row, tapmask m, int s)
{
	taps3 t;
	if (s == 1) {
		t.t0 = load_masked(m.a, row, m.start);
		t.t1 = load_masked(m.b, row, m.start + 1);
		t.t2 = load_masked(m.c, row, m.start + 2);
	} else {
		const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
		const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
		__m512 a0 = load_masked(m.a, row, m.start), a1 = load_masked(m.b, row, m.start + 16);
		__m512 c0 = load_masked(m.c, row, m.start + 1), c1 = load_masked(m.d, row, m.start + 17);
		t.t0 = _mm512_permutex2var_ps(a0, even, a1);
		t.t1 = _mm512_permutex2var_ps(a0, odd, a1);
		t.t2 = _mm512_permutex2var_ps(c0, odd, c1);
	}
	return t;
}

static ALWAYS_INLINE __m512 fma_row(__m512 acc, taps3 t, __m512 w0, __m512 w1, __m512 w2)
{
	acc = _mm512_fmadd_ps(w0, t.t0, acc);
	acc = _mm512_fmadd_ps(w1, t.t1, acc);
	return _mm512_fmadd_ps(w2, t.t2, acc);
}

/* One plane: out [oh, ow] = corr3x3(inp [h, w], w9) + b, pad 1, stride s (a constant
 * in each instantiation below). */
static ALWAYS_INLINE void dw3x3_plane_impl(float *out, const float *inp, const float *w9, float b,
					   int h, int w, int oh, int ow, int s)
{
	const __m512 w0 = _mm512_set1_ps(w9[0]), w1 = _mm512_set1_ps(w9[1]), w2 = _mm512_set1_ps(w9[2]);
	const __m512 w3 = _mm512_set1_ps(w9[3]), w4 = _mm512_set1_ps(w9[4]), w5 = _mm512_set1_ps(w9[5]);
	const __m512 w6 = _mm512_set1_ps(w9[6]), w7 = _mm512_set1_ps(w9[7]), w8 = _mm512_set1_ps(w9[8]);
	const __m512 bv = _mm512_set1_ps(b);
	for (int ox0 = 0; ox0 < ow; ox0 += 16) {
		tapmask m = tap_masks(ox0, s, w);
		__mmask16 om = range_mask(ox0, ow);
		for (int oy = 0; oy < oh; oy++) {
			int iy = oy * s - 1;
			__m512 acc = bv;
			if (iy >= 0)
				acc = fma_row(acc, load_taps(inp + (size_t)iy * w, m, s), w0, w1, w2);
			acc = fma_row(acc, load_taps(inp + (size_t)(iy + 1) * w, m, s), w3, w4, w5);
			if (iy + 2 < h)
				acc = fma_row(acc, load_taps(inp + (size_t)(iy + 2) * w, m, s), w6, w7, w8);
			_mm512_mask_storeu_ps(out + (size_t)oy * ow + ox0, om, acc);
		}
	}
}

/* dw9 += sum dout * taps, *db += sum dout, over one plane. */
static ALWAYS_INLINE void dw3x3_plane_dw_impl(float *dw9, float *db, const float *dout,
					      const float *inp, int h, int w, int oh, int ow, int s)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
	       a7 = a0, a8 = a0, ab = a0;
	for (int ox0 = 0; ox0 < ow; ox0 += 16) {
		tapmask m = tap_masks(ox0, s, w);
		__mmask16 om = range_mask(ox0, ow);
		for (int oy = 0; oy < oh; oy++) {
			int iy = oy * s - 1;
			__m512 g = _mm512_maskz_loadu_ps(om, dout + (size_t)oy * ow + ox0);
			/* taps of lanes past the row end are zeroed so an inf there cannot
			 * turn 0 * inf into a NaN */
			taps3 t;
			ab = _mm512_add_ps(ab, g);
			if (iy >= 0) {
				t = load_taps(inp + (size_t)iy * w, m, s);
				a0 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t0), a0);
				a1 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t1), a1);
				a2 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t2), a2);
			}
			t = load_taps(inp + (size_t)(iy + 1) * w, m, s);
			a3 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t0), a3);
			a4 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t1), a4);
			a5 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t2), a5);
			if (iy + 2 < h) {
				t = load_taps(inp + (size_t)(iy + 2) * w, m, s);
				a6 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t0), a6);
				a7 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t1), a7);
				a8 = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(om, t.t2), a8);
			}
		}
	}
	dw9[0] += _mm512_reduce_add_ps(a0);
	dw9[1] += _mm512_reduce_add_ps(a1);
	dw9[2] += _mm512_reduce_add_ps(a2);
	dw9[3] += _mm512_reduce_add_ps(a3);
	dw9[4] += _mm512_reduce_add_ps(a4);
	dw9[5] += _mm512_reduce_add_ps(a5);
	dw9[6] += _mm512_reduce_add_ps(a6);
	dw9[7] += _mm512_reduce_add_ps(a7);
	dw9[8] += _mm512_reduce_add_ps(a8);
	if (db)
		*db += _mm512_reduce_add_ps(ab);
}

static void dw3x3_plane(float *out, const float *inp, const float *w9, float b, int h, int w,
			int oh, int ow, int s)
{
	if (s == 1)
		dw3x3_plane_impl(out, inp, w9, b, h, w, oh, ow, 1);
	else
		dw3x3_plane_impl(out, inp, w9, b, h, w, oh, ow, 2);
}

static void dw3x3_plane_dw(float *dw9, float *db, const float *dout, const float *inp, int h,
			   int w, int oh, int ow, int s)
{
	if (s == 1)
		dw3x3_plane_dw_impl(dw9, db, dout, inp, h, w, oh, ow, 1);
	else
		dw3x3_plane_dw_impl(dw9, db, dout, inp, h, w, oh, ow, 2);
}

/* Stride-2 input gradient of one plane, gather form: even input columns 2m get tap
 * kx=1 of output column m; odd ones 2m+1 get kx=0 of m+1 and kx=2 of m. */
static void dw3x3_s2_plane_dinp(float *dinp, const float *dout, const float *w9, int h, int w,
				int oh, int ow)
{
	const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
	const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
	for (int iy = 0; iy < h; iy++)
		for (int m0 = 0; 2 * m0 < w; m0 += 16) {
			__m512 e = _mm512_setzero_ps(), o = _mm512_setzero_ps();
			for (int ky = 0; ky < 3; ky++) {
				int t = iy + 1 - ky;
				if (t < 0 || t & 1 || t / 2 >= oh)
					continue;
				const float *g = dout + (size_t)(t / 2) * ow;
				__m512 g0 = load_masked(range_mask(m0, ow), g, m0);
				__m512 g1 = load_masked(range_mask(m0 + 1, ow), g, m0 + 1);
				e = _mm512_fmadd_ps(_mm512_set1_ps(w9[ky * 3 + 1]), g0, e);
				o = _mm512_fmadd_ps(_mm512_set1_ps(w9[ky * 3 + 2]), g0, o);
				o = _mm512_fmadd_ps(_mm512_set1_ps(w9[ky * 3 + 0]), g1, o);
			}
			float *dst = dinp + (size_t)iy * w;
			_mm512_mask_storeu_ps(dst + 2 * m0, range_mask(2 * m0, w),
					      _mm512_permutex2var_ps(e, lo_idx, o));
			_mm512_mask_storeu_ps(dst + 2 * m0 + 16, range_mask(2 * m0 + 16, w),
					      _mm512_permutex2var_ps(e, hi_idx, o));
		}
}
#endif

static void dw_forward(float *out, const float *inp, const float *weight, const float *bias,
		       const conv2d_desc *d)
{
	int C = d->c, kk = d->kh * d->kw;
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow;
#pragma omp parallel for schedule(static)
	for (int p = 0; p < d->n * C; p++) {
		int c = p % C;
		float b = bias ? bias[c] : 0.0f;
#if defined(__AVX512F__)
		if (d->algo == CONV_DW3X3) {
			dw3x3_plane(out + p * ohw, inp + p * hw, weight + c * 9, b, d->h, d->w, d->oh, d->ow, d->sh);
			continue;
		}
#endif
		dw_direct_plane(out + p * ohw, inp + p * hw, weight + (size_t)c * kk, b, d);
	}
}

static void dw_backward(float *dinp, float *dweight, float *dbias, const float *dout,
			const float *inp, const float *weight, const conv2d_desc *d)
{
	int C = d->c, kk = d->kh * d->kw;
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow;
	if (dweight || dbias) {
#pragma omp parallel for schedule(static)
		for (int c = 0; c < C; c++)
			for (int n = 0; n < d->n; n++) {
				const float *g = dout + ((size_t)n * C + c) * ohw;
#if defined(__AVX512F__)
				if (d->algo == CONV_DW3X3 && dweight) {
					dw3x3_plane_dw(dweight + c * 9, dbias ? dbias + c : NULL, g,
						       inp + ((size_t)n * C + c) * hw, d->h, d->w, d->oh, d->ow, d->sh);
					continue;
				}
#endif
				if (dweight)
					dw_direct_plane_dw(dweight + (size_t)c * kk, g, inp + ((size_t)n * C + c) * hw, d);
				if (dbias) {
					float s = 0;
					for (size_t i = 0; i < ohw; i++)
						s += g[i];
					dbias[c] += s;
				}
			}
	}
	if (!dinp)
		return;
#pragma omp parallel for schedule(static)
	for (int p = 0; p < d->n * C; p++) {
		int c = p % C;
#if defined(__AVX512F__)
		if (d->algo == CONV_DW3X3) {
			const float *w9 = weight + c * 9;
			if (d->sh == 1) {
				/* stride 1, pad 1: the input gradient is the correlation of dout
				 * with the kernel rotated by 180 degrees */
				float r[9];
				for (int i = 0; i < 9; i++)
					r[i] = w9[8 - i];
				dw3x3_plane(dinp + p * hw, dout + p * ohw, r, 0.0f, d->oh, d->ow, d->h, d->w, 1);
			} else {
				dw3x3_s2_plane_dinp(dinp + p * hw, dout + p * ohw, w9, d->h, d->w, d->oh, d->ow);
			}
			continue;
		}
#endif
		dw_direct_plane_dinp(dinp + p * hw, dout + p * ohw, weight + (size_t)c * kk, d);
	}
}

/* ---------------------------------------------------------------- dispatch */

int conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
		   float *ws, const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	if (conv2d_workspace_size(d) && !ws)
		return err_set("conv2d: workspace missing");
	switch (d->algo) {
	case CONV_DW3X3:
	case CONV_DW_DIRECT:
		dw_forward(out, inp, weight, bias, d);
		break;
	default:
		gemm_forward(out, inp, weight, bias, ws, d);
	}
	return 0;
}

int conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
		    const float *inp, const float *weight, float *ws, const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	if (conv2d_workspace_size(d) && !ws)
		return err_set("conv2d: workspace missing");
	switch (d->algo) {
	case CONV_DW3X3:
	case CONV_DW_DIRECT:
		dw_backward(dinp, dweight, dbias, dout, inp, weight, d);
		break;
	default:
		gemm_backward(dinp, dweight, dbias, dout, inp, weight, ws, d);
	}
	return 0;
}
