/* conv_dw: depthwise convs, direct: any geometry per plane (CONV_DW_DIRECT), and 3x3
 * stride 1 or 2 in AVX-512 row windows (CONV_DW3X3). */
#include "kernels/conv_impl.h"

#include <string.h>

#include <omp.h>

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
			out[oy * d->ow + ox] = conv_act_scalar(acc, d->act);
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
			conv_valid_range(&lo, &hi, off, d->sw, d->w, d->ow);
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

/* The 3x3 kernels stream each row in 16-float vectors (vector j = columns 16j..16j+15)
 * and make the horizontal taps from neighbouring vectors with valignd / vpermt2ps,
 * so every load is a whole vector at a multiple of 16 columns: loading the shifted
 * taps directly (one float off) splits most loads over two cache lines and ran at a
 * third of the speed. Vector j of a row of width w, zero past its end and for a NULL
 * row (the padding above and below the plane). */
static ALWAYS_INLINE __m512 row_vec(const float *row, int j, int w)
{
	int r = w - 16 * j;
	if (!row || r <= 0)
		return _mm512_setzero_ps();
	if (r >= 16)
		return _mm512_loadu_ps(row + 16 * j);
	return _mm512_maskz_loadu_ps((__mmask16)((1u << r) - 1), row + 16 * j);
}

/* Columns x-1, x, x+1 of the 16 columns of cur, given the vectors before and after. */
static ALWAYS_INLINE __m512 left_of(__m512 cur, __m512 prev)
{
	return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 15));
}

static ALWAYS_INLINE __m512 right_of(__m512 cur, __m512 next)
{
	return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(cur), 1));
}

typedef struct taps3 {
	__m512 t0, t1, t2;
} taps3;

/* A sliding window over one input row: the taps kx = 0, 1, 2 of output chunk j
 * (columns 16j..16j+15, pad 1) for stride 1 or 2. */
typedef struct rowwin {
	const float *row;
	int w;
	__m512 prev, cur; /* stride 1: vectors j-1 and j; stride 2: prev = tap 2 of chunk j-1 */
} rowwin;

static ALWAYS_INLINE rowwin win_start(const float *row, int w, int s)
{
	rowwin r = {row, w, _mm512_setzero_ps(), _mm512_setzero_ps()};
	if (s == 1)
		r.cur = row_vec(row, 0, w);
	return r;
}

static ALWAYS_INLINE taps3 win_taps(rowwin *r, int j, int s)
{
	taps3 t;
	if (s == 1) {
		__m512 next = row_vec(r->row, j + 1, r->w);
		t.t0 = left_of(r->cur, r->prev);
		t.t1 = r->cur;
		t.t2 = right_of(r->cur, next);
		r->prev = r->cur;
		r->cur = next;
	} else {
		const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
		const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
		__m512 a = row_vec(r->row, 2 * j, r->w), b = row_vec(r->row, 2 * j + 1, r->w);
		t.t1 = _mm512_permutex2var_ps(a, even, b); /* columns 2x */
		t.t2 = _mm512_permutex2var_ps(a, odd, b);  /* 2x + 1 */
		t.t0 = left_of(t.t2, r->prev);             /* 2x - 1 */
		r->prev = t.t2;
	}
	return t;
}

/* The windows on the three input rows of output row oy (rows oy*s-1 .. oy*s+1); a
 * row outside the plane is the zero padding (NULL). */
static ALWAYS_INLINE void win_rows(rowwin *r0, rowwin *r1, rowwin *r2, const float *inp, int h, int w, int oy,
				   int s)
{
	int iy = oy * s - 1;
	*r0 = win_start(iy >= 0 ? inp + (size_t)iy * w : NULL, w, s);
	*r1 = win_start(inp + (size_t)(iy + 1) * w, w, s);
	*r2 = win_start(iy + 2 < h ? inp + (size_t)(iy + 2) * w : NULL, w, s);
}

static ALWAYS_INLINE __m512 fma_row(__m512 acc, taps3 t, __m512 w0, __m512 w1, __m512 w2)
{
	acc = _mm512_fmadd_ps(w0, t.t0, acc);
	acc = _mm512_fmadd_ps(w1, t.t1, acc);
	return _mm512_fmadd_ps(w2, t.t2, acc);
}

/* One plane: out [oh, ow] = corr3x3(inp [h, w], w9) + b, act, pad 1, stride s (a
 * constant in each instantiation below). Row by row, so memory is read in order;
 * each output vector sums three row chains (one chain of nine dependent FMAs would
 * wait on latency). */
static ALWAYS_INLINE void dw3x3_plane_impl(float *out, const float *inp, const float *w9, float b,
					   int h, int w, int oh, int ow, int s, enum conv_act act)
{
	const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
	const __m512 w0 = _mm512_set1_ps(w9[0]), w1 = _mm512_set1_ps(w9[1]), w2 = _mm512_set1_ps(w9[2]);
	const __m512 w3 = _mm512_set1_ps(w9[3]), w4 = _mm512_set1_ps(w9[4]), w5 = _mm512_set1_ps(w9[5]);
	const __m512 w6 = _mm512_set1_ps(w9[6]), w7 = _mm512_set1_ps(w9[7]), w8 = _mm512_set1_ps(w9[8]);
	const __m512 bv = _mm512_set1_ps(b);
	int nch = (ow + 15) / 16;
	__mmask16 last = range_mask(16 * (nch - 1), ow);
	for (int oy = 0; oy < oh; oy++) {
		rowwin r0, r1, r2;
		win_rows(&r0, &r1, &r2, inp, h, w, oy, s);
		float *o = out + (size_t)oy * ow;
		for (int j = 0; j < nch; j++) {
			__m512 a = fma_row(bv, win_taps(&r1, j, s), w3, w4, w5);
			__m512 a0 = fma_row(zero, win_taps(&r0, j, s), w0, w1, w2);
			__m512 a2 = fma_row(zero, win_taps(&r2, j, s), w6, w7, w8);
			a = _mm512_add_ps(a, _mm512_add_ps(a0, a2));
			if (act != CONV_ACT_NONE)
				a = _mm512_max_ps(zero, a);
			if (act == CONV_ACT_RELU6)
				a = _mm512_min_ps(six, a);
			store_lanes(o + 16 * j, j == nch - 1 ? last : 0xffff, a);
		}
	}
}

/* dw9 += sum dout * taps, *db += sum dout, over one plane. */
static ALWAYS_INLINE void dw3x3_plane_dw_impl(float *dw9, float *db, const float *dout,
					      const float *inp, int h, int w, int oh, int ow, int s)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
	       a7 = a0, a8 = a0, ab = a0;
	int nch = (ow + 15) / 16;
	__mmask16 last = range_mask(16 * (nch - 1), ow);
	for (int oy = 0; oy < oh; oy++) {
		rowwin r0, r1, r2;
		win_rows(&r0, &r1, &r2, inp, h, w, oy, s);
		const float *gr = dout + (size_t)oy * ow;
		for (int j = 0; j < nch; j++) {
			__mmask16 m = j == nch - 1 ? last : 0xffff;
			__m512 g = load_lanes(m, gr + 16 * j);
			taps3 t0 = win_taps(&r0, j, s), t1 = win_taps(&r1, j, s), t2 = win_taps(&r2, j, s);
			if (m != 0xffff) {
				/* taps of lanes past the row end are zeroed so an inf there
				 * cannot turn 0 * inf into a NaN */
				t0.t0 = _mm512_maskz_mov_ps(m, t0.t0);
				t0.t1 = _mm512_maskz_mov_ps(m, t0.t1);
				t0.t2 = _mm512_maskz_mov_ps(m, t0.t2);
				t1.t0 = _mm512_maskz_mov_ps(m, t1.t0);
				t1.t1 = _mm512_maskz_mov_ps(m, t1.t1);
				t1.t2 = _mm512_maskz_mov_ps(m, t1.t2);
				t2.t0 = _mm512_maskz_mov_ps(m, t2.t0);
				t2.t1 = _mm512_maskz_mov_ps(m, t2.t1);
				t2.t2 = _mm512_maskz_mov_ps(m, t2.t2);
			}
			ab = _mm512_add_ps(ab, g);
			a0 = _mm512_fmadd_ps(g, t0.t0, a0);
			a1 = _mm512_fmadd_ps(g, t0.t1, a1);
			a2 = _mm512_fmadd_ps(g, t0.t2, a2);
			a3 = _mm512_fmadd_ps(g, t1.t0, a3);
			a4 = _mm512_fmadd_ps(g, t1.t1, a4);
			a5 = _mm512_fmadd_ps(g, t1.t2, a5);
			a6 = _mm512_fmadd_ps(g, t2.t0, a6);
			a7 = _mm512_fmadd_ps(g, t2.t1, a7);
			a8 = _mm512_fmadd_ps(g, t2.t2, a8);
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
			int oh, int ow, int s, enum conv_act act)
{
	if (s == 1 && act == CONV_ACT_NONE)
		dw3x3_plane_impl(out, inp, w9, b, h, w, oh, ow, 1, CONV_ACT_NONE);
	else if (s == 1)
		dw3x3_plane_impl(out, inp, w9, b, h, w, oh, ow, 1, act);
	else if (act == CONV_ACT_NONE)
		dw3x3_plane_impl(out, inp, w9, b, h, w, oh, ow, 2, CONV_ACT_NONE);
	else
		dw3x3_plane_impl(out, inp, w9, b, h, w, oh, ow, 2, act);
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
 * kx=1 of output column m; odd ones 2m+1 get kx=0 of m+1 and kx=2 of m. Input row iy
 * gets the dout rows t/2 with t = iy + 1 - ky even: one row (ky = 1) or two (0, 2). */
static void dw3x3_s2_plane_dinp(float *dinp, const float *dout, const float *w9, int h, int w,
				int oh, int ow)
{
	const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
	const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
	int nm = (w + 31) / 32;
	for (int iy = 0; iy < h; iy++) {
		const float *g[2] = {NULL, NULL};
		__m512 wk0[2], wk1[2], wk2[2];
		int ng = 0;
		for (int ky = 0; ky < 3; ky++) {
			int t = iy + 1 - ky;
			if (t < 0 || t & 1 || t / 2 >= oh)
				continue;
			g[ng] = dout + (size_t)(t / 2) * ow;
			wk0[ng] = _mm512_set1_ps(w9[ky * 3 + 0]);
			wk1[ng] = _mm512_set1_ps(w9[ky * 3 + 1]);
			wk2[ng] = _mm512_set1_ps(w9[ky * 3 + 2]);
			ng++;
		}
		float *dst = dinp + (size_t)iy * w;
		for (int j = 0; j < nm; j++) {
			__m512 e = _mm512_setzero_ps(), o = _mm512_setzero_ps();
			for (int r = 0; r < ng; r++) {
				__m512 g0 = row_vec(g[r], j, ow), g1 = right_of(g0, row_vec(g[r], j + 1, ow));
				e = _mm512_fmadd_ps(wk1[r], g0, e);
				o = _mm512_fmadd_ps(wk2[r], g0, o);
				o = _mm512_fmadd_ps(wk0[r], g1, o);
			}
			__m512 lo = _mm512_permutex2var_ps(e, lo_idx, o), hi = _mm512_permutex2var_ps(e, hi_idx, o);
			if (j < nm - 1) {
				_mm512_storeu_ps(dst + 32 * j, lo);
				_mm512_storeu_ps(dst + 32 * j + 16, hi);
			} else {
				store_lanes(dst + 32 * j, range_mask(32 * j, w), lo);
				store_lanes(dst + 32 * j + 16, range_mask(32 * j + 16, w), hi);
			}
		}
	}
}
#endif

void conv_dw_forward(float *out, const float *inp, const float *weight, const float *bias,
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
			dw3x3_plane(out + p * ohw, inp + p * hw, weight + c * 9, b, d->h, d->w, d->oh, d->ow, d->sh,
				    d->act);
			continue;
		}
#endif
		dw_direct_plane(out + p * ohw, inp + p * hw, weight + (size_t)c * kk, b, d);
	}
}

void conv_dw_backward(float *dinp, float *dweight, float *dbias, const float *dout,
			const float *inp, const float *weight, const conv2d_desc *d)
{
	int C = d->c, kk = d->kh * d->kw;
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow;
	if (dweight || dbias) {
		/* each thread owns a block of channels, summing the images in order; it
		 * walks them image by image, so its planes of one image are one stream
		 * through memory (a channel's planes, image after image, are C planes
		 * apart: each plane started a new stream, ~10% slower) */
#pragma omp parallel
		{
			int nth = omp_get_num_threads(), th = omp_get_thread_num();
			int c0 = (int)((long)C * th / nth), c1 = (int)((long)C * (th + 1) / nth);
			for (int n = 0; n < d->n; n++)
				for (int c = c0; c < c1; c++) {
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
				dw3x3_plane(dinp + p * hw, dout + p * ohw, r, 0.0f, d->oh, d->ow, d->h, d->w, 1,
					    CONV_ACT_NONE);
			} else {
				dw3x3_s2_plane_dinp(dinp + p * hw, dout + p * ohw, w9, d->h, d->w, d->oh, d->ow);
			}
			continue;
		}
#endif
		dw_direct_plane_dinp(dinp + p * hw, dout + p * ohw, weight + (size_t)c * kk, d);
	}
}
