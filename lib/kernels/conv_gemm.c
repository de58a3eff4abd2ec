/* conv_gemm: convs as GEMMs: im2col (none for 1x1) and OpenBLAS sgemm (CONV_GEMM), or our
 * own AVX-512 GEMM (CONV_GEMM512); the per-thread workspace they share. */
#include "kernels/conv_impl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

static size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

static size_t pw_pack_floats(int kd);
#define PW_KC 256 /* reduction block of gemm_nt (its kd is a pixel count) */
#define DOT_L 2048   /* reduction block of the dot form of gemm_nt */
#define DOT_MAXN 32  /* the dot form for n up to this (measured: 1.2-4x the panels below 32) */

/* Per-thread scratch of the GEMM algos, in floats: col (im2col rows; none for 1x1),
 * the thread's partial dweight, and (CONV_GEMM512) the packed panels of B. */
typedef struct scratch {
	float *col, *pdw, *pack;
} scratch;

static int fwd_blocks(const conv2d_desc *d);
static int dw_transposed(const conv2d_desc *d);

static size_t col_floats(const conv2d_desc *d)
{
	size_t ckk = (size_t)(d->c / d->groups) * d->kh * d->kw;
	if (conv_is_pointwise(d))
		return 0;
	if (d->forward_only) { /* the rows of the largest forward block */
		int nb = fwd_blocks(d);
		return round16(ckk * (size_t)((d->oh + nb - 1) / nb) * d->ow);
	}
	return round16(ckk * d->oh * d->ow);
}

static size_t pdw_floats(const conv2d_desc *d)
{
	return round16((size_t)d->k * (d->c / d->groups) * d->kh * d->kw);
}

static size_t pack_floats(const conv2d_desc *d)
{
	if (d->algo != CONV_GEMM512)
		return 0;
	size_t a = pw_pack_floats((d->c / d->groups) * d->kh * d->kw), b = pw_pack_floats(d->k / d->groups);
	size_t c = pw_pack_floats(PW_KC), ckk = (size_t)(d->c / d->groups) * d->kh * d->kw;
	/* the dot form's copy of b: ckk rows, or kg for a transposed 1x1 dW */
	size_t kg = d->k / d->groups, dn = ckk <= DOT_MAXN ? ckk : 0;
	if (dw_transposed(d) && kg <= DOT_MAXN && kg > dn)
		dn = kg;
	size_t dot = dn * DOT_L;
	a = a > b ? a : b;
	a = a > c ? a : c;
	return round16(a > dot ? a : dot);
}

static size_t par_stride(const conv2d_desc *d)
{
	return col_floats(d) + pdw_floats(d) + pack_floats(d);
}

static scratch thread_scratch(float *ws, const conv2d_desc *d, int tid)
{
	scratch s;
	s.col = ws + tid * par_stride(d);
	s.pdw = s.col + col_floats(d);
	s.pack = s.pdw + pdw_floats(d);
	return s;
}

size_t conv2d_workspace_size(const conv2d_desc *d)
{
	switch (d->algo) {
	case CONV_GEMM:
	case CONV_GEMM512:
		return (size_t)d->nthreads * par_stride(d) * sizeof(float);
	case CONV_GROUP3X3:
		return conv_group_workspace_floats(d) * sizeof(float);
	default:
		return 0;
	}
}

/* Our own single-threaded GEMM for the convs (CONV_GEMM512): on this machine (Zen 5)
 * OpenBLAS 0.3.21 picks its AVX2 Haswell kernels and reaches ~105 GFLOP/s per core;
 * this one reaches 200-230 on the 1x1 conv shapes of MobileNetV2 (bench/bench_layers.c).
 * C [m, n] = A . B with B's columns (the pixels) packed, 64 at a time, into a
 * contiguous panel [kd][64]: the rows of B are 2^k floats apart in a conv, which
 * would otherwise fall into a few cache sets. The micro-kernel keeps a 6 x 64 tile
 * of C in 24 registers and broadcasts A one element at a time, so A may be read
 * with any strides (W for the forward, W^T for the input gradient) without packing. */
#define PW_MR 6
#define PW_NR 64

/* Columns per packed chunk: up to 256 (longer row reads), fewer for a long reduction
 * so the packed chunk stays about 64 KiB. */
static int pw_nc(int kd)
{
	int nc = (16384 / (kd > 0 ? kd : 1)) & ~(PW_NR - 1);
	return nc < PW_NR ? PW_NR : nc > 4 * PW_NR ? 4 * PW_NR : nc;
}

static size_t pw_pack_floats(int kd)
{
	return (size_t)kd * pw_nc(kd);
}

#if defined(__AVX512F__)

/* Lanes j (0..15) of vector v of a row of n valid columns. */
static ALWAYS_INLINE __mmask16 col_mask(int n, int v)
{
	int r = n - 16 * v;
	return r >= 16 ? (__mmask16)0xffff : r <= 0 ? 0 : (__mmask16)((1u << r) - 1);
}


/* bp [kd][64] = b [kd][0 .. nc) (row stride ldb), columns nc..63 zero. */
static void pw_pack(float *bp, const float *b, size_t ldb, int kd, int nc)
{
	if (nc == PW_NR) {
		for (int k = 0; k < kd; k++, b += ldb, bp += PW_NR) {
			_mm512_store_ps(bp, _mm512_loadu_ps(b));
			_mm512_store_ps(bp + 16, _mm512_loadu_ps(b + 16));
			_mm512_store_ps(bp + 32, _mm512_loadu_ps(b + 32));
			_mm512_store_ps(bp + 48, _mm512_loadu_ps(b + 48));
		}
		return;
	}
	__mmask16 m0 = col_mask(nc, 0), m1 = col_mask(nc, 1), m2 = col_mask(nc, 2), m3 = col_mask(nc, 3);
	for (int k = 0; k < kd; k++, b += ldb, bp += PW_NR) {
		_mm512_store_ps(bp, _mm512_maskz_loadu_ps(m0, b));
		_mm512_store_ps(bp + 16, _mm512_maskz_loadu_ps(m1, b + 16));
		_mm512_store_ps(bp + 32, _mm512_maskz_loadu_ps(m2, b + 32));
		_mm512_store_ps(bp + 48, _mm512_maskz_loadu_ps(m3, b + 48));
	}
}

/* bp [kd][64] = the transpose of b [nc][kd] (row stride ldb): bp[k][j] = b[j][k],
 * columns nc..63 zero. */
static void pw_pack_t(float *bp, const float *b, size_t ldb, int kd, int nc)
{
	for (int j0 = 0; j0 < PW_NR; j0 += 16) {
		int rows = nc - j0 < 16 ? nc - j0 : 16;
		for (int k0 = 0; k0 < kd; k0 += 16) {
			int kc = kd - k0 < 16 ? kd - k0 : 16;
			__mmask16 km = col_mask(kc, 0);
			__m512 r[16];
			for (int i = 0; i < 16; i++)
				r[i] = i < rows ? load_lanes(km, b + (size_t)(j0 + i) * ldb + k0) : _mm512_setzero_ps();
			transpose16(r);
			for (int i = 0; i < kc; i++)
				_mm512_store_ps(bp + (size_t)(k0 + i) * PW_NR + j0, r[i]);
		}
	}
}

/* c [mr, nc] (row stride ldc) = (acc ? c : 0) + sum_k A(i, k) bp[k][.] (+ bias[i], act),
 * A(i, k) = a[i*am + k*ak]; mr a constant in each instantiation. */
static ALWAYS_INLINE void pw_ukr(int mr, int kd, const float *a, size_t am, size_t ak,
				 const float *bp, float *c, size_t ldc, int nc, const float *bias,
				 int act, int acc)
{
	__m512 t[PW_MR][4];
#pragma GCC unroll 6
	for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++)
			t[i][j] = _mm512_setzero_ps();
	for (int k = 0; k < kd; k++, a += ak, bp += PW_NR) {
		__m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
		__m512 b2 = _mm512_load_ps(bp + 32), b3 = _mm512_load_ps(bp + 48);
#pragma GCC unroll 6
		for (int i = 0; i < mr; i++) {
			__m512 av = _mm512_set1_ps(a[i * am]);
			t[i][0] = _mm512_fmadd_ps(av, b0, t[i][0]);
			t[i][1] = _mm512_fmadd_ps(av, b1, t[i][1]);
			t[i][2] = _mm512_fmadd_ps(av, b2, t[i][2]);
			t[i][3] = _mm512_fmadd_ps(av, b3, t[i][3]);
		}
	}
	__mmask16 m[4] = {col_mask(nc, 0), col_mask(nc, 1), col_mask(nc, 2), col_mask(nc, 3)};
	const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
#pragma GCC unroll 6
	for (int i = 0; i < mr; i++) {
		float *ci = c + (size_t)i * ldc;
		__m512 bv = _mm512_set1_ps(bias ? bias[i] : 0.0f);
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++) {
			__m512 v = _mm512_add_ps(t[i][j], bv);
			if (acc)
				v = _mm512_add_ps(v, load_lanes(m[j], ci + 16 * j));
			/* max(0, v), min(6, v): a NaN passes, as torch's relu */
			if (act != CONV_ACT_NONE)
				v = _mm512_max_ps(zero, v);
			if (act == CONV_ACT_RELU6)
				v = _mm512_min_ps(six, v);
			store_lanes(ci + 16 * j, m[j], v);
		}
	}
}

static void pw_ukr_any(int mr, int kd, const float *a, size_t am, size_t ak, const float *bp,
		       float *c, size_t ldc, int nc, const float *bias, int act, int acc)
{
	switch (mr) {
	case 1: pw_ukr(1, kd, a, am, ak, bp, c, ldc, nc, bias, act, acc); break;
	case 2: pw_ukr(2, kd, a, am, ak, bp, c, ldc, nc, bias, act, acc); break;
	case 3: pw_ukr(3, kd, a, am, ak, bp, c, ldc, nc, bias, act, acc); break;
	case 4: pw_ukr(4, kd, a, am, ak, bp, c, ldc, nc, bias, act, acc); break;
	case 5: pw_ukr(5, kd, a, am, ak, bp, c, ldc, nc, bias, act, acc); break;
	default: pw_ukr(6, kd, a, am, ak, bp, c, ldc, nc, bias, act, acc); break;
	}
}

/* c [m, n] (ldc) = (acc ? c : 0) + A . b (+ bias per row, act), A(i, k) = a[i*am + k*ak],
 * b [kd, n] (ldb). bp: pw_pack_floats(kd) floats, 64-byte aligned. */
static void pw_gemm_nn(float *c, size_t ldc, const float *a, size_t am, size_t ak, const float *b,
		       size_t ldb, int m, int n, int kd, const float *bias, int act, int acc, float *bp)
{
	int ncmax = pw_nc(kd);
	for (int n0 = 0; n0 < n; n0 += ncmax) {
		int nc = n - n0 < ncmax ? n - n0 : ncmax, np = (nc + PW_NR - 1) / PW_NR;
		for (int p = 0; p < np; p++) {
			int w = nc - p * PW_NR;
			pw_pack(bp + (size_t)p * kd * PW_NR, b + n0 + p * PW_NR, ldb, kd, w < PW_NR ? w : PW_NR);
		}
		for (int i0 = 0; i0 < m; i0 += PW_MR)
			for (int p = 0; p < np; p++) {
				int w = nc - p * PW_NR;
				pw_ukr_any(m - i0, kd, a + (size_t)i0 * am, am, ak, bp + (size_t)p * kd * PW_NR,
					   c + (size_t)i0 * ldc + n0 + p * PW_NR, ldc, w < PW_NR ? w : PW_NR,
					   bias ? bias + i0 : NULL, act, acc);
			}
	}
}

/* c [m, n] (ldc) += a [m, kd] (lda) . b [n, kd]^T (ldb). bp: pw_pack_floats(PW_KC) floats. */
static void pw_gemm_nt(float *c, size_t ldc, const float *a, size_t lda, const float *b, size_t ldb,
		       int m, int n, int kd, float *bp)
{
	int ncmax = pw_nc(PW_KC);
	for (int k0 = 0; k0 < kd; k0 += PW_KC) {
		int kc = kd - k0 < PW_KC ? kd - k0 : PW_KC;
		for (int n0 = 0; n0 < n; n0 += ncmax) {
			int nc = n - n0 < ncmax ? n - n0 : ncmax, np = (nc + PW_NR - 1) / PW_NR;
			for (int p = 0; p < np; p++) {
				int w = nc - p * PW_NR;
				pw_pack_t(bp + (size_t)p * kc * PW_NR, b + (size_t)(n0 + p * PW_NR) * ldb + k0, ldb,
					  kc, w < PW_NR ? w : PW_NR);
			}
			for (int i0 = 0; i0 < m; i0 += PW_MR)
				for (int p = 0; p < np; p++) {
					int w = nc - p * PW_NR;
					pw_ukr_any(m - i0, kc, a + (size_t)i0 * lda + k0, lda, 1,
						   bp + (size_t)p * kc * PW_NR, c + (size_t)i0 * ldc + n0 + p * PW_NR,
						   ldc, w < PW_NR ? w : PW_NR, NULL, CONV_ACT_NONE, 1);
				}
		}
	}
}

/* c [m, n] += a [m, kd] (lda) . b [n, kd]^T (ldb) for narrow n (the weight gradient
 * of a conv with few input or, transposed, output channels), as dot products along
 * kd: a 4 x 6 tile of vector accumulators, each reduced at the end of a DOT_L block
 * (pf: prefetch a). The 64-wide panels of pw_gemm_nt would be mostly padding there.
 * The block of b is copied to bc (n * DOT_L floats) first: its rows are 2^k floats
 * apart in a conv and would share a few cache sets. */
static ALWAYS_INLINE void dot_tile(float *c, size_t ldc, const float *a, size_t lda, const float *bc,
				   int len, int mr, int nr, int pf)
{
	__m512 t[4][6];
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++)
#pragma GCC unroll 6
		for (int j = 0; j < 6; j++)
			t[i][j] = _mm512_setzero_ps();
	/* rows past mr, nr repeat the last one; their sums are not stored */
	const float *ar[4], *br[6];
	for (int i = 0; i < 4; i++)
		ar[i] = a + (size_t)(i < mr ? i : mr - 1) * lda;
	for (int j = 0; j < 6; j++)
		br[j] = bc + (size_t)(j < nr ? j : nr - 1) * len;
	for (int p = 0; p < len; p += 16) {
		__mmask16 m = len - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - p)) - 1);
		__m512 bv[6];
#pragma GCC unroll 6
		for (int j = 0; j < 6; j++)
			bv[j] = load_lanes(m, br[j] + p);
		/* the first tile of a row block brings its a rows (dout, read straight from
		 * the tensor) in from memory: fetch them 1 KiB ahead, ten streams being more
		 * than the hardware prefetcher follows (measured 5-20% on dW). The address
		 * may pass the row's end (a prefetch never faults): formed from an integer. */
		if (pf)
			for (int i = 0; i < 4; i++)
				_mm_prefetch((const char *)((uintptr_t)(ar[i] + p) + 1024), _MM_HINT_T0);
#pragma GCC unroll 4
		for (int i = 0; i < 4; i++) {
			__m512 av = load_lanes(m, ar[i] + p);
#pragma GCC unroll 6
			for (int j = 0; j < 6; j++)
				t[i][j] = _mm512_fmadd_ps(av, bv[j], t[i][j]);
		}
	}
	/* every sum reduced with constant indices: indexing t by the runtime mr, nr made
	 * the compiler keep t in memory, storing all 24 accumulators every iteration
	 * (a third of the speed) */
	float sum[4][6];
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++)
#pragma GCC unroll 6
		for (int j = 0; j < 6; j++)
			sum[i][j] = _mm512_reduce_add_ps(t[i][j]);
	for (int i = 0; i < mr; i++)
		for (int j = 0; j < nr; j++)
			c[(size_t)i * ldc + j] += sum[i][j];
}

static void pw_gemm_nt_dot(float *c, size_t ldc, const float *a, size_t lda, const float *b, size_t ldb,
			   int m, int n, int kd, float *bc)
{
	for (int k0 = 0; k0 < kd; k0 += DOT_L) {
		int len = kd - k0 < DOT_L ? kd - k0 : DOT_L;
		for (int j = 0; j < n; j++)
			memcpy(bc + (size_t)j * len, b + (size_t)j * ldb + k0, len * sizeof(float));
		for (int i0 = 0; i0 < m; i0 += 4)
			for (int j0 = 0; j0 < n; j0 += 6)
				dot_tile(c + (size_t)i0 * ldc + j0, ldc, a + (size_t)i0 * lda + k0, lda,
					 bc + (size_t)j0 * len, len, m - i0 < 4 ? m - i0 : 4, n - j0 < 6 ? n - j0 : 6, j0 == 0);
	}
}
#endif

/* The two GEMM shapes of a conv, on our kernel (own) or OpenBLAS's sgemm.
 * gemm_nn: c [m, n] (ldc) = (acc ? c : 0) + op(a) . b (+ bias[i] per row, act), where
 * op(a) [m, kd] is a [m, kd] (lda) or, with trans_a, a [kd, m]'s transpose; b [kd, n] (ldb). */
static void gemm_nn(int own, float *c, int ldc, int trans_a, const float *a, int lda, const float *b,
		    int ldb, int m, int n, int kd, const float *bias, int act, int acc, float *pack)
{
#if defined(__AVX512F__)
	if (own) {
		pw_gemm_nn(c, ldc, a, trans_a ? 1 : lda, trans_a ? lda : 1, b, ldb, m, n, kd, bias, act, acc,
			   pack);
		return;
	}
#endif
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, m, n, kd, 1.0f, a,
		    lda, b, ldb, acc ? 1.0f : 0.0f, c, ldc);
	if (!bias && act == CONV_ACT_NONE)
		return;
	for (int i = 0; i < m; i++) {
		float bi = bias ? bias[i] : 0.0f, *ci = c + (size_t)i * ldc;
		for (int j = 0; j < n; j++) {
			float v = ci[j] + bi;
			if (act != CONV_ACT_NONE)
				v = v < 0.0f ? 0.0f : v;
			if (act == CONV_ACT_RELU6)
				v = v > 6.0f ? 6.0f : v;
			ci[j] = v;
		}
	}
}

/* gemm_nt: c [m, n] (ldc) += a [m, kd] (lda) . b [n, kd]^T (ldb) */
static void gemm_nt(int own, float *c, int ldc, const float *a, int lda, const float *b, int ldb,
		    int m, int n, int kd, float *pack)
{
#if defined(__AVX512F__)
	if (own && n <= DOT_MAXN) {
		pw_gemm_nt_dot(c, ldc, a, lda, b, ldb, m, n, kd, pack);
		return;
	}
	if (own) {
		pw_gemm_nt(c, ldc, a, lda, b, ldb, m, n, kd, pack);
		return;
	}
#endif
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, kd, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
}

/* ---------------------------------------------------------------- im2col + sgemm */

/* Threads: every sgemm runs single-threaded inside our own OpenMP tasks, so
 * OpenBLAS's thread pool is never woken. Two pools on the same cores spin against
 * each other (OpenBLAS's workers and OpenMP's wait actively for a while after each
 * call): on 2 cores that made batch-1 inference 3-10x slower than this. A conv's
 * work is split into tasks (image, group, block); the blocks (ranges of output rows,
 * or of input channels for the im2col input gradient) split one image's GEMM when
 * there are fewer (image, group) pairs than threads to keep busy. */

/* Below this many MACs a conv runs on one thread: the fork costs more than it saves. */
#define CONV_PAR_MIN_MACS (1L << 17)

/* col [cg*kh*kw, (y1-y0)*ow] from inp [cg, h, w]: row (c, ky, kx) holds the input
 * pixel each output pixel of rows y0..y1 sees through that tap (0 in the padding). */
static void im2col(float *col, const float *inp, int cg, int y0, int y1, const conv2d_desc *d)
{
	int kk = d->kh * d->kw, H = d->h, W = d->w, OW = d->ow;
	size_t cols = (size_t)(y1 - y0) * OW;
	for (int r = 0; r < cg * kk; r++) {
		int c = r / kk, ky = r % kk / d->kw, kx = r % d->kw;
		float *dst = col + (size_t)r * cols;
		int off = kx * d->dw - d->pw, lo, hi;
		conv_valid_range(&lo, &hi, off, d->sw, W, OW);
		for (int oy = y0; oy < y1; oy++, dst += OW) {
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

/* dinp [cg, h, w] += the col [cg*kh*kw, oh*ow] rows scattered back (im2col's transpose). */
static void col2im(float *dinp, const float *col, int cg, const conv2d_desc *d)
{
	int H = d->h, W = d->w, OH = d->oh, OW = d->ow;
	for (int c = 0; c < cg; c++)
		for (int ky = 0; ky < d->kh; ky++)
			for (int kx = 0; kx < d->kw; kx++) {
				const float *src = col + ((size_t)(c * d->kh + ky) * d->kw + kx) * OH * OW;
				int off = kx * d->dw - d->pw, lo, hi;
				conv_valid_range(&lo, &hi, off, d->sw, W, OW);
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

/* How many blocks each (image, group) pair is cut into so that the tasks divide
 * evenly over the threads: 2 threads and 1 or 3 images give 2 blocks each. */
static int n_blocks(const conv2d_desc *d, int extent)
{
	int a = d->n * d->groups, b = d->nthreads;
	while (b) {
		int r = a % b;
		a = b;
		b = r;
	}
	int nb = d->nthreads / a;
	return nb < extent ? nb : extent;
}

/* Row blocks of a forward task: n_blocks's, or in an inference plan (forward_only) as
 * many as keep a block's im2col within COL_CAP floats (16 MB a thread). Every output
 * is still one GEMM over the whole reduction: our kernel's sums come out the same bit
 * for bit, OpenBLAS's may round differently with the narrower blocks. */
#define COL_CAP ((size_t)4 << 20)
static int fwd_blocks(const conv2d_desc *d)
{
	int nb = n_blocks(d, d->oh);
	if (d->forward_only && !conv_is_pointwise(d)) {
		size_t all = (size_t)(d->c / d->groups) * d->kh * d->kw * d->oh * d->ow;
		size_t need = (all + COL_CAP - 1) / COL_CAP;
		if (need > (size_t)nb)
			nb = need < (size_t)d->oh ? (int)need : d->oh;
	}
	return nb;
}

static int par_worth(const conv2d_desc *d)
{
	long macs = (long)d->n * d->k * (d->c / d->groups) * d->kh * d->kw * d->oh * d->ow;
	return d->nthreads > 1 && macs >= CONV_PAR_MIN_MACS;
}

/* Block b of nb over [0, extent). */
static int block_lo(int b, int nb, int extent)
{
	return (int)((long)b * extent / nb);
}

/* The GEMM's columns for output rows y0..y1 of one image and group: the input itself
 * for a 1x1 stride-1 conv (row stride oh*ow into *ldb), else its im2col in s.col. */
static const float *columns(int *ldb, const float *inp, scratch s, int cg, int y0, int y1, const conv2d_desc *d)
{
	if (conv_is_pointwise(d)) {
		*ldb = d->oh * d->ow;
		return inp + y0 * d->ow;
	}
	im2col(s.col, inp, cg, y0, y1, d);
	*ldb = (y1 - y0) * d->ow;
	return s.col;
}

/* out_g [kg, rows y0..y1] = w_g [kg, ckk] . col [ckk, rows y0..y1] + bias, act, for one
 * image and group (out, inp at the group's origin). */
static void gemm_fwd_task(float *out, const float *inp, const float *w, const float *bias,
			  scratch s, int cg, int kg, int y0, int y1, const conv2d_desc *d)
{
	int ckk = cg * d->kh * d->kw, ohw = d->oh * d->ow, c0 = y0 * d->ow, cols = (y1 - y0) * d->ow, ldb;
	const float *b = columns(&ldb, inp, s, cg, y0, y1, d);
	gemm_nn(d->algo == CONV_GEMM512, out + c0, ohw, 0, w, ckk, b, ldb, kg, cols, ckk, bias, d->act, 0,
		s.pack);
}

/* Whether a 1x1 conv's dW is made transposed, dW_g^T [ckk, kg] = inp_g . dout_g^T, in
 * the thread partials (the reduction puts it back). Both GEMMs broadcast rows of a and
 * copy or transpose-pack b once per reduction block, so b should be the narrower
 * operand: with few output channels (kg <= 64: one panel, or the dot form when <= 32)
 * and more input channels, dout is the one to pack. Measured on the MobileNetV2 1x1
 * shapes at batch 8: 1.3-2x faster there (96->24, 144->24, 384->64), and no better
 * for wider kg, where the panels' padding decides. */
static int dw_transposed(const conv2d_desc *d)
{
	int cg = d->c / d->groups, kg = d->k / d->groups;
	return d->algo == CONV_GEMM512 && !d->forward_only && conv_is_pointwise(d) && kg < cg && kg <= PW_NR;
}

/* dw_g [kg, ckk] += dout_g [kg, rows y0..y1] . col [ckk, rows y0..y1]^T (or its
 * transpose into dw_g [ckk, kg], dw_transposed) */
static void gemm_dw_task(float *dw, const float *dout, const float *inp, scratch s, int cg, int kg,
			 int y0, int y1, const conv2d_desc *d)
{
	int ckk = cg * d->kh * d->kw, ohw = d->oh * d->ow, c0 = y0 * d->ow, cols = (y1 - y0) * d->ow, ldb;
	const float *b = columns(&ldb, inp, s, cg, y0, y1, d);
	if (dw_transposed(d)) {
		gemm_nt(1, dw, kg, b, ldb, dout + c0, ohw, ckk, kg, cols, s.pack);
		return;
	}
	gemm_nt(d->algo == CONV_GEMM512, dw, ckk, dout + c0, ohw, b, ldb, kg, ckk, cols, s.pack);
}

/* Block b of nb of the input gradient of one image and group: for a 1x1 conv the
 * columns of rows y0..y1, dinp_g = w_g^T . dout_g; otherwise the group's input
 * channels ch0..ch1, whose col rows are w_g's columns times dout_g, scattered back. */
static void gemm_dx_task(float *dinp, const float *dout, const float *w, scratch s, int cg, int kg,
			 int b, int nb, const conv2d_desc *d)
{
	int kk = d->kh * d->kw, ckk = cg * kk, ohw = d->oh * d->ow, own = d->algo == CONV_GEMM512;
	if (conv_is_pointwise(d)) {
		int c0 = block_lo(b, nb, d->oh) * d->ow, c1 = block_lo(b + 1, nb, d->oh) * d->ow;
		gemm_nn(own, dinp + c0, ohw, 1, w, ckk, dout + c0, ohw, cg, c1 - c0, kg, NULL, CONV_ACT_NONE, 0,
			s.pack);
		return;
	}
	int ch0 = block_lo(b, nb, cg), nc = block_lo(b + 1, nb, cg) - ch0;
	size_t hw = (size_t)d->h * d->w;
	gemm_nn(own, s.col, ohw, 1, w + ch0 * kk, ckk, dout, ohw, nc * kk, ohw, kg, NULL, CONV_ACT_NONE, 0,
		s.pack);
	memset(dinp + ch0 * hw, 0, nc * hw * sizeof(float));
	col2im(dinp + ch0 * hw, s.col, nc, d);
}

int blas_single_begin(void)
{
	int save = openblas_get_num_threads();
	if (save != 1)
		openblas_set_num_threads(1);
	return save;
}

void blas_single_end(int save)
{
	if (save != 1)
		openblas_set_num_threads(save);
}

void conv_gemm_forward(float *out, const float *inp, const float *weight, const float *bias,
			 float *ws, const conv2d_desc *d)
{
	int G = d->groups, cg = d->c / G, kg = d->k / G, OH = d->oh;
	size_t isz = (size_t)d->c * d->h * d->w, osz = (size_t)d->k * d->oh * d->ow;
	size_t wsz = (size_t)kg * cg * d->kh * d->kw, ohw = (size_t)d->oh * d->ow;
	size_t gisz = (size_t)cg * d->h * d->w;
	int nb = fwd_blocks(d), ntask = d->n * G * nb;
	int save = blas_single_begin();
#pragma omp parallel num_threads(d->nthreads) if (par_worth(d))
	{
		scratch s = thread_scratch(ws, d, omp_get_thread_num());
#pragma omp for schedule(dynamic)
		for (int t = 0; t < ntask; t++) {
			int n = t / (G * nb), g = t / nb % G, b = t % nb;
			gemm_fwd_task(out + n * osz + g * kg * ohw, inp + n * isz + g * gisz, weight + g * wsz,
				      bias ? bias + g * kg : NULL, s, cg, kg, block_lo(b, nb, OH),
				      block_lo(b + 1, nb, OH), d);
		}
	}
	blas_single_end(save);
}

void conv_gemm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
			  const float *inp, const float *weight, float *ws, const conv2d_desc *d)
{
	int G = d->groups, cg = d->c / G, kg = d->k / G, OH = d->oh;
	size_t isz = (size_t)d->c * d->h * d->w, osz = (size_t)d->k * d->oh * d->ow;
	size_t wsz = (size_t)kg * cg * d->kh * d->kw, ohw = (size_t)d->oh * d->ow;
	size_t gisz = (size_t)cg * d->h * d->w, ckk = (size_t)cg * d->kh * d->kw;
	size_t wall = (size_t)d->k * ckk;
	int nbw = n_blocks(d, OH), nbx = n_blocks(d, conv_is_pointwise(d) ? OH : cg);
	int ntw = d->n * G * nbw, ntx = d->n * G * nbx;
	int save = blas_single_begin();
#pragma omp parallel num_threads(d->nthreads) if (par_worth(d))
	{
		int nth = omp_get_num_threads();
		scratch s = thread_scratch(ws, d, omp_get_thread_num());
		if (dbias) {
#pragma omp for schedule(static) nowait
			for (int k = 0; k < d->k; k++) {
				float v = 0;
				for (int n = 0; n < d->n; n++) {
					const float *g = dout + n * osz + k * ohw;
#pragma omp simd reduction(+ : v)
					for (size_t i = 0; i < ohw; i++)
						v += g[i];
				}
				dbias[k] += v;
			}
		}
		if (dweight) {
			memset(s.pdw, 0, wall * sizeof(float));
			/* static: each thread's partial sums the same tasks in the same order */
#pragma omp for schedule(static)
			for (int t = 0; t < ntw; t++) {
				int n = t / (G * nbw), g = t / nbw % G, b = t % nbw;
				gemm_dw_task(s.pdw + g * wsz, dout + n * osz + g * kg * ohw, inp + n * isz + g * gisz,
					     s, cg, kg, block_lo(b, nbw, OH), block_lo(b + 1, nbw, OH), d);
			}
			/* implicit barrier: every thread's partial is complete. The partials
			 * are par_stride apart: computing that per element (thread_scratch)
			 * took a quarter of a large dW's time. */
			size_t stride = par_stride(d);
			const float *pdw0 = thread_scratch(ws, d, 0).pdw;
			int tr = dw_transposed(d);
#pragma omp for schedule(static)
			for (size_t i = 0; i < wall; i++) {
				size_t src = i;
				if (tr) {
					size_t g = i / wsz, k = i % wsz / ckk, c = i % ckk;
					src = g * wsz + c * kg + k;
				}
				float v = 0;
				for (int th = 0; th < nth; th++)
					v += pdw0[th * stride + src];
				dweight[i] += v;
			}
		}
		if (dinp) {
#pragma omp for schedule(dynamic)
			for (int t = 0; t < ntx; t++) {
				int n = t / (G * nbx), g = t / nbx % G, b = t % nbx;
				gemm_dx_task(dinp + n * isz + g * gisz, dout + n * osz + g * kg * ohw, weight + g * wsz,
					     s, cg, kg, b, nbx, d);
			}
		}
	}
	blas_single_end(save);
}
