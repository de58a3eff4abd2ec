/* qlayers: integer kernels (qlayers.h). */
#include "kernels/qlayers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define HAVE_VNNI 1
#else
#define HAVE_VNNI 0
#endif

#include "core/err.h"
#include "kernels/layers.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The GEMM form of a conv: C [k][p] = W [k][r] . B [r][p], B the input columns (im2col,
 * or the input itself for a 1x1 stride-1 conv) packed 4 reduction rows at a time,
 * [r/4][pixels][4] bytes, so that one vpdpbusd adds 4 products per int32 lane; a block
 * of QC pixels is packed per task, then QM x QN tiles of C are summed in registers. */
#define QM 6    /* rows (output channels) of a tile */
#define QN 64   /* pixels of a tile: 4 vectors of 16 int32 */
#define QC 256  /* pixels packed per task */

/* The accumulators cannot overflow: |q_in| <= 255 (uint8, or int8 + 128), |w| <= 128, so
 * a sum of r products stays below r * 2^15, within int32 for r < 2^16. */
#define QMAX_R 65535

/* What qrequant adds before shifting right. */
static int32_t rounding(int shift)
{
	return shift > 0 && shift < 32 ? (int32_t)1 << (shift - 1) : 0;
}

/* out[i] = clamp((v[i] + add) >> shift, lo, hi): qrequant in int32, for callers that
 * know v + add stays within it (add carries the rounding, rounding(shift)); out bytes,
 * or 16-bit words when fmt is QF_WIDE. */
static void requant32(void *out, const int32_t *v, int n, int32_t add, int shift, int32_t lo, int32_t hi, int fmt)
{
	int i = 0;
#if defined(__AVX512F__)
	/* full vectors only: masked stores are slow on some cores (Zen 4/5) */
	const __m512i va = _mm512_set1_epi32(add), vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
	for (; i + 16 <= n; i += 16) {
		__m512i x = _mm512_srai_epi32(_mm512_add_epi32(_mm512_loadu_si512(v + i), va), (unsigned)shift);
		x = _mm512_min_epi32(_mm512_max_epi32(x, vlo), vhi);
		if (fmt & QF_WIDE)
			_mm256_storeu_si256((__m256i *)((uint16_t *)out + i), _mm512_cvtepi32_epi16(x));
		else
			_mm_storeu_si128((__m128i *)((uint8_t *)out + i), _mm512_cvtepi32_epi8(x));
	}
#endif
	for (; i < n; i++) {
		int32_t x = (v[i] + add) >> shift; /* arithmetic: floor, as gcc defines it */
		x = x < lo ? lo : x;
		qput(out, (size_t)i, x > hi ? hi : x, fmt);
	}
}

#if defined(__AVX512BW__)
/* 64 int32 sums (4 vectors, in order) -> 64 bytes clamp((v + add) >> shift, lo, hi), the
 * point's bytes (signed when lo < 0): saturating packs to int16 and to bytes keep every
 * value inside [lo, hi] where it was, so the byte clamp after them is the clamp. */
typedef struct requant_vec {
	__m512i add, lo, hi, order;
	__m128i shift;
	int sgn;
} requant_vec;

static inline requant_vec requant_vec_set(int32_t add, int shift, int32_t lo, int32_t hi)
{
	requant_vec r;
	r.add = _mm512_set1_epi32(add);
	r.shift = _mm_cvtsi32_si128(shift);
	r.sgn = lo < 0;
	r.lo = _mm512_set1_epi8((char)lo);
	r.hi = _mm512_set1_epi8((char)hi);
	/* the packs interleave 128-bit lanes: dword l * 4 + v holds vector v's values 4l .. 4l+3 */
	r.order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
	return r;
}

static inline __m512i requant64(const __m512i *v, const requant_vec *r)
{
	__m512i x0 = _mm512_sra_epi32(_mm512_add_epi32(v[0], r->add), r->shift);
	__m512i x1 = _mm512_sra_epi32(_mm512_add_epi32(v[1], r->add), r->shift);
	__m512i x2 = _mm512_sra_epi32(_mm512_add_epi32(v[2], r->add), r->shift);
	__m512i x3 = _mm512_sra_epi32(_mm512_add_epi32(v[3], r->add), r->shift);
	__m512i a = _mm512_packs_epi32(x0, x1), b = _mm512_packs_epi32(x2, x3), y;
	if (r->sgn)
		y = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(a, b), r->lo), r->hi);
	else
		y = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(a, b), r->lo), r->hi);
	return _mm512_permutexvar_epi32(r->order, y);
}
#endif

/* output channel k's requantisation shift */
static inline int shift_of(const qconv *d, int k)
{
	return d->shifts ? d->shifts[k] : d->shift;
}

static int out_size(int in, int k, int s, int p, int d)
{
	return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

static size_t round_up(size_t n, size_t m)
{
	return (n + m - 1) / m * m;
}

static int grouped_fits(const qconv *d);

int qconv_init(qconv *d, int64_t *gemm_bias)
{
	if (d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1 || d->k < 1 || d->kh < 1 || d->kw < 1 || d->sh < 1 ||
	    d->sw < 1 || d->ph < 0 || d->pw < 0 || d->dh < 1 || d->dw < 1 || d->groups < 1 || d->c % d->groups ||
	    d->k % d->groups)
		return err_set("qconv: bad geometry (c %d k %d kernel %dx%d groups %d)", d->c, d->k, d->kh, d->kw,
			       d->groups);
	d->oh = out_size(d->h, d->kh, d->sh, d->ph, d->dh);
	d->ow = out_size(d->w, d->kw, d->sw, d->pw, d->dw);
	if (d->oh < 1 || d->ow < 1)
		return err_set("qconv: kernel larger than the padded input");
	d->r = d->c / d->groups * d->kh * d->kw;
	if (d->rp != (int)round_up((size_t)d->r, 4))
		return err_set("qconv: weight rows of %d values, expected %d", d->rp, (int)round_up((size_t)d->r, 4));
	d->nthreads = omp_get_max_threads();
	d->gemm_bias = gemm_bias;
	if (d->in_fmt & QF_WIDE) {
		/* one GEMM form in doubles: |products| < 2^31, so sums of r < 2^22 stay exact */
		if (d->r >= 1 << 22)
			return err_set("qconv: reduction of %d 16-bit products could exceed a double's 2^53", d->r);
		if (!d->wide_weight)
			return err_set("qconv: 16-bit weights without their double storage");
		for (int k = 0; k < d->k; k++) {
			for (int j = 0; j < d->r; j++)
				d->wide_weight[(size_t)k * d->r + j] = ((const int16_t *)d->weight)[(size_t)k * d->rp + j];
			gemm_bias[k] = d->bias[k];
		}
		d->depthwise = d->fast = 0;
		return 0;
	}
	if (d->r > QMAX_R)
		return err_set("qconv: reduction of %d values could overflow int32 (at most %d)", d->r, QMAX_R);
	d->depthwise = d->groups == d->c && d->groups == d->k;
	const int8_t *weight = d->weight;
	int in_sgn = d->in_fmt & QF_SIGNED;
	/* the int32 epilogue holds acc + bias + rounding below 2^31 */
	int fast = 1;
	for (int k = 0; k < d->k; k++) {
		int sk = shift_of(d, k);
		fast = fast && sk >= 0 && sk < 31;
		int64_t sum = 0, mag = 0;
		for (int j = 0; j < d->r; j++) {
			int w = weight[(size_t)k * d->rp + j];
			sum += w;
			mag += w < 0 ? -w : w;
		}
		/* gemm_bias serves the paths that see a signed input as uint8 (q + 128); the
		 * depthwise int16 path adds bias itself: the bound covers both */
		int64_t b = d->bias[k] - (in_sgn ? 128 * sum : 0), b0 = d->bias[k];
		int64_t bmax = b < 0 ? -b : b;
		bmax = b0 > bmax ? b0 : -b0 > bmax ? -b0 : bmax;
		int64_t bound = mag * 255 + bmax + (fast ? rounding(sk) : 0);
		if (bound >= INT32_MAX)
			fast = 0;
		gemm_bias[k] = b;
	}
	d->fast = fast;
	if (grouped_fits(d)) {
		/* [k][tap]: channels 4 c4 .. 4 c4 + 3 at (ky, kx), tap (c4 * kh + ky) * kw + kx */
		if (!d->tap_weight)
			return err_set("qconv: grouped weights without their storage");
		int cg = d->c / d->groups, ntap = cg / 4 * d->kh * d->kw;
		for (int k = 0; k < d->k; k++)
			for (int c4 = 0, tp = 0; c4 < cg / 4; c4++)
				for (int ky = 0; ky < d->kh; ky++)
					for (int kx = 0; kx < d->kw; kx++, tp++) {
						uint8_t b4[4];
						for (int q = 0; q < 4; q++)
							b4[q] = (uint8_t)weight[(size_t)k * d->rp + ((4 * c4 + q) * d->kh + ky) * d->kw + kx];
						memcpy(&d->tap_weight[(size_t)k * ntap + tp], b4, 4);
					}
	}
	return 0;
}

/* Below this many products a conv runs on the calling thread: waking the others for a
 * parallel loop (OMP_WAIT_POLICY=passive, as the pipelines run) took about 20 us under
 * load, the time of some 4M products on one thread (the heads' and the small maps' convs). */
#define PAR_MIN_MACS ((size_t)1 << 22)

static int parallel_conv(const qconv *d)
{
	return (size_t)d->n * d->k * d->oh * d->ow * (d->r ? d->r : 1) >= PAR_MIN_MACS;
}

static size_t dw_bytes(const qconv *d);
static size_t dw_vnni_bytes(const qconv *d);

static int wide_block(const qconv *d);
static size_t grouped_bytes(const qconv *d);

static size_t thread_bytes(const qconv *d)
{
	if (d->in_fmt & QF_WIDE)
		return round_up((size_t)(d->r + d->k / d->groups) * wide_block(d) * sizeof(double), 64);
	if (d->depthwise)
		return dw_bytes(d);
	if (grouped_fits(d))
		return grouped_bytes(d);
	return round_up((size_t)d->rp * QC, 64) + QM * QN * sizeof(int32_t) + 4 * QC;
}

size_t qconv_workspace_size(const qconv *d)
{
	return (size_t)d->nthreads * thread_bytes(d) + 64;
}

/* ---------------------------------------------------------------- reference */

/* weight j of output channel k */
static int32_t weight_at(const qconv *d, int k, int j)
{
	size_t i = (size_t)k * d->rp + j;
	return d->in_fmt & QF_WIDE ? ((const int16_t *)d->weight)[i] : ((const int8_t *)d->weight)[i];
}

void qconv_forward_ref(void *out, const void *inp, const qconv *d)
{
	int cg = d->c / d->groups, kg = d->k / d->groups;
	for (int n = 0; n < d->n; n++)
		for (int k = 0; k < d->k; k++) {
			int g = k / kg;
			for (int oy = 0; oy < d->oh; oy++)
				for (int ox = 0; ox < d->ow; ox++) {
					int64_t acc = 0;
					for (int ci = 0; ci < cg; ci++)
						for (int ky = 0; ky < d->kh; ky++)
							for (int kx = 0; kx < d->kw; kx++) {
								int iy = oy * d->sh - d->ph + ky * d->dh;
								int ix = ox * d->sw - d->pw + kx * d->dw;
								if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
									continue;
								size_t at = (((size_t)n * d->c + g * cg + ci) * d->h + iy) * d->w + ix;
								int32_t w = weight_at(d, k, (ci * d->kh + ky) * d->kw + kx);
								acc += (int64_t)w * qget(inp, at, d->in_fmt);
							}
					qput(out, (((size_t)n * d->k + k) * d->oh + oy) * d->ow + ox,
					     qrequant(acc + d->bias[k], shift_of(d, k), d->lo, d->hi), d->in_fmt);
				}
		}
}

/* ---------------------------------------------------------------- GEMM form */

/* dst [np][4] = the bytes of rows x, x + stride, x + 2 stride, x + 3 stride, ^ flip:
 * two rounds of byte then word interleaving (within 128-bit lanes: with AVX-512 a 4x4
 * transpose of the lanes then puts 64 pixels in order), then 16 pixels at a time. */
static void pack4(uint8_t *dst, const uint8_t *x, size_t stride, int np, uint8_t flip)
{
	const uint8_t *x1 = x + stride, *x2 = x1 + stride, *x3 = x2 + stride;
	int p = 0;
#if defined(__AVX512BW__)
	const __m512i f4 = _mm512_set1_epi8((char)flip);
	for (; p + 64 <= np; p += 64) {
		__m512i a = _mm512_xor_si512(_mm512_loadu_si512(x + p), f4);
		__m512i b = _mm512_xor_si512(_mm512_loadu_si512(x1 + p), f4);
		__m512i c = _mm512_xor_si512(_mm512_loadu_si512(x2 + p), f4);
		__m512i e = _mm512_xor_si512(_mm512_loadu_si512(x3 + p), f4);
		__m512i ab0 = _mm512_unpacklo_epi8(a, b), ab1 = _mm512_unpackhi_epi8(a, b);
		__m512i ce0 = _mm512_unpacklo_epi8(c, e), ce1 = _mm512_unpackhi_epi8(c, e);
		/* t_v, lane l: pixels 16 l + 4 v .. 16 l + 4 v + 3 */
		__m512i t0 = _mm512_unpacklo_epi16(ab0, ce0), t1 = _mm512_unpackhi_epi16(ab0, ce0);
		__m512i t2 = _mm512_unpacklo_epi16(ab1, ce1), t3 = _mm512_unpackhi_epi16(ab1, ce1);
		/* output vector l = lane l of t0 .. t3 */
		__m512i u0 = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)); /* t0.0 t0.1 t1.0 t1.1 */
		__m512i u1 = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(1, 0, 1, 0)); /* t2.0 t2.1 t3.0 t3.1 */
		__m512i u2 = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 2, 3, 2));
		__m512i u3 = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 2, 3, 2));
		uint8_t *o = dst + 4 * p;
		_mm512_storeu_si512(o, _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)));
		_mm512_storeu_si512(o + 64, _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
		_mm512_storeu_si512(o + 128, _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(2, 0, 2, 0)));
		_mm512_storeu_si512(o + 192, _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(3, 1, 3, 1)));
	}
#endif
#if defined(__SSE2__)
	const __m128i f = _mm_set1_epi8((char)flip);
	for (; p + 16 <= np; p += 16) {
		__m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x + p)), f);
		__m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x1 + p)), f);
		__m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x2 + p)), f);
		__m128i e = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x3 + p)), f);
		__m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
		__m128i ce0 = _mm_unpacklo_epi8(c, e), ce1 = _mm_unpackhi_epi8(c, e);
		uint8_t *o = dst + 4 * p;
		_mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(ab0, ce0));
		_mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(ab0, ce0));
		_mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(ab1, ce1));
		_mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(ab1, ce1));
	}
#endif
	for (; p < np; p++) {
		dst[4 * p] = x[p] ^ flip;
		dst[4 * p + 1] = x1[p] ^ flip;
		dst[4 * p + 2] = x2[p] ^ flip;
		dst[4 * p + 3] = x3[p] ^ flip;
	}
}

/* dst[i] = src[i * s], i < n */
static void strided_copy(uint8_t *restrict dst, const uint8_t *restrict src, int n, int s)
{
	if (s == 1) {
		memcpy(dst, src, (size_t)n);
		return;
	}
	int i = 0;
#if defined(__AVX512VBMI__)
	if (s == 2) {
		uint8_t ix[64]; /* the even bytes of two vectors */
		for (int j = 0; j < 64; j++)
			ix[j] = (uint8_t)(2 * j);
		const __m512i even = _mm512_loadu_si512(ix);
		for (; i + 64 <= n; i += 64)
			_mm512_storeu_si512(dst + i, _mm512_permutex2var_epi8(_mm512_loadu_si512(src + 2 * i), even,
									      _mm512_loadu_si512(src + 2 * i + 64)));
		if (i < n) { /* the rest (feature maps of 32 and 16 columns): masked, never past src or dst */
			int m = 2 * (n - i) - 2; /* the last byte read, <= 124 */
			__mmask64 lo = m >= 63 ? ~(__mmask64)0 : ((__mmask64)1 << (m + 1)) - 1;
			__mmask64 hi = m >= 64 ? ((__mmask64)1 << (m - 63)) - 1 : 0;
			__m512i v = _mm512_permutex2var_epi8(_mm512_maskz_loadu_epi8(lo, src + 2 * i), even,
							     _mm512_maskz_loadu_epi8(hi, src + 2 * i + 64));
			_mm512_mask_storeu_epi8(dst + i, ((__mmask64)1 << (n - i)) - 1, v);
			i = n;
		}
	}
#endif
	for (; i < n; i++)
		dst[i] = src[(size_t)i * s];
}

#if defined(__AVX512BW__)
/* lanes [i, j) of a 64-lane mask, 0 <= i, j <= 64 */
static inline __mmask64 bits_between(int i, int j)
{
	if (j <= i)
		return 0;
	__mmask64 below_j = j >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << j) - 1;
	return below_j & ~(((__mmask64)1 << i) - 1);
}
#endif

/* dst[p], p < np = the tap (ky, kx) of plane xc under output pixels p0 .. p0+np, raw
 * bytes with 0 in the padding (pack4's flip makes it the zero point): a run per output
 * row, padding columns apart. */
static void tap_row(uint8_t *dst, const uint8_t *xc, const qconv *d, int ky, int kx, int p0, int np)
{
	int sw = d->sw, xoff = kx * d->dw - d->pw;
	/* the output columns whose input column ox * sw + xoff is inside [0, w) */
	int lo = xoff >= 0 ? 0 : (-xoff + sw - 1) / sw;
	int hi = d->w - 1 - xoff < 0 ? 0 : (d->w - 1 - xoff) / sw + 1;
	hi = hi < d->ow ? hi : d->ow;
	lo = lo < hi ? lo : hi;
	int oy = p0 / d->ow, ox = p0 % d->ow;
#if defined(__AVX512VBMI__)
	/* maps of 64 columns or fewer (RegNet's grouped 3x3s at 32x32 and 16x16): a row's
	 * run is one masked load (two at stride 2) and one masked store, not three calls */
	if (d->ow <= 64 && sw <= 2) {
		static const uint8_t even[64] = {
			0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42,
			44, 46, 48, 50, 52, 54, 56, 58, 60, 62, 64, 66, 68, 70, 72, 74, 76, 78, 80, 82, 84, 86,
			88, 90, 92, 94, 96, 98, 100, 102, 104, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126};
		const __m512i sel = _mm512_loadu_si512(even);
		for (int p = 0; p < np; oy++, ox = 0) {
			int run = d->ow - ox < np - p ? d->ow - ox : np - p, end = ox + run;
			int iy = oy * d->sh - d->ph + ky * d->dh;
			/* output columns [a, b) read the input, relative to ox: lanes [a - ox, b - ox) */
			int a = lo > ox ? lo : ox, b = hi < end ? hi : end;
			__m512i v = _mm512_setzero_si512();
			if (iy >= 0 && iy < d->h && b > a) {
				__mmask64 m = bits_between(a - ox, b - ox);
				/* lane j reads column (ox + j) * sw + xoff: masked-off lanes never load */
				const uint8_t *src = xc + (ptrdiff_t)iy * d->w + xoff + (ptrdiff_t)ox * sw;
				if (sw == 1) {
					v = _mm512_maskz_loadu_epi8(m, src);
				} else {
					/* bytes 2j of two vectors: byte lanes [2(a-ox), 2(b-ox) - 1) */
					int j0 = 2 * (a - ox), j1 = 2 * (b - ox) - 1;
					__m512i x0 = _mm512_maskz_loadu_epi8(bits_between(j0 < 64 ? j0 : 64, j1 < 64 ? j1 : 64), src);
					__m512i x1 = _mm512_maskz_loadu_epi8(bits_between(j0 > 64 ? j0 - 64 : 0, j1 > 64 ? j1 - 64 : 0),
									     src + 64);
					v = _mm512_maskz_permutex2var_epi8(m, x0, sel, x1);
				}
			}
			_mm512_mask_storeu_epi8(dst + p, bits_between(0, run), v);
			p += run;
		}
		return;
	}
#endif
	for (int p = 0; p < np; oy++, ox = 0) {
		int run = d->ow - ox < np - p ? d->ow - ox : np - p, end = ox + run;
		int iy = oy * d->sh - d->ph + ky * d->dh;
		/* columns [ox, a) and [b, end) are padding, [a, b) are copied */
		int a = ox, b = ox;
		if (iy >= 0 && iy < d->h) {
			a = lo > ox ? lo : ox;
			b = hi < end ? hi : end;
			if (a > b)
				a = b = ox;
		}
		uint8_t *o = dst + p - ox; /* o[X]: output column X of this row */
		memset(o + ox, 0, (size_t)(a - ox));
		if (b > a)
			strided_copy(o + a, xc + (ptrdiff_t)iy * d->w + xoff + (ptrdiff_t)a * sw, b - a, sw);
		memset(o + b, 0, (size_t)(end - b));
		p += run;
	}
}

/* bp [rp/4][QC][4] = the columns p0 .. p0+np of image n, group g (the input as uint8:
 * signed values + 128, so padding is the zero point 128 for them). Each 4 rows are
 * gathered into rows [4][QC] (taps of a conv, or a 1x1's last rows) unless they can be
 * read in place, then interleaved. Rows past r hold any byte: their weights are 0. */
static void pack_columns(uint8_t *bp, uint8_t *rows, const uint8_t *inp, const qconv *d, int n, int g, int p0,
			 int np)
{
	int cg = d->c / d->groups, khw = d->kh * d->kw, hw = d->h * d->w;
	uint8_t flip = d->in_fmt & QF_SIGNED ? 0x80 : 0;
	const uint8_t *x = inp + ((size_t)n * d->c + (size_t)g * cg) * hw;
	int pointwise = khw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
	for (int r0 = 0; r0 < d->rp; r0 += 4) {
		uint8_t *dst = bp + (size_t)(r0 >> 2) * QC * 4;
		if (pointwise && r0 + 4 <= d->r) {
			pack4(dst, x + (size_t)r0 * hw + p0, (size_t)hw, np, flip);
			continue;
		}
		for (int r = r0; r < r0 + 4; r++) {
			uint8_t *row = rows + (size_t)(r - r0) * QC;
			if (r >= d->r)
				memset(row, 0, (size_t)np);
			else if (pointwise)
				memcpy(row, x + (size_t)r * hw + p0, (size_t)np);
			else
				tap_row(row, x + (size_t)(r / khw) * hw, d, r % khw / d->kw, r % d->kw, p0, np);
		}
		pack4(dst, rows, QC, np, flip);
	}
}

#if HAVE_VNNI

/* acc [mr][4 vectors] = a [mr][rp] . bp's QN columns (rp/4 groups of 4 bytes) */
static ALWAYS_INLINE void tile_sums(__m512i acc[QM][4], const int8_t *a, int rp, const uint8_t *bp, const int mr)
{
	/* unrolled, so that the sums live in registers */
#pragma GCC unroll 6
	for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
		for (int v = 0; v < 4; v++)
			acc[i][v] = _mm512_setzero_si512();
	for (int r4 = 0; r4 < rp / 4; r4++) {
		const uint8_t *b = bp + (size_t)r4 * QC * 4;
		__m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
		__m512i b2 = _mm512_loadu_si512(b + 128), b3 = _mm512_loadu_si512(b + 192);
#pragma GCC unroll 6
		for (int i = 0; i < mr; i++) {
			int32_t w4;
			memcpy(&w4, a + (size_t)i * rp + 4 * r4, 4);
			__m512i av = _mm512_set1_epi32(w4);
			acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], b0, av);
			acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], b1, av);
			acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], b2, av);
			acc[i][3] = _mm512_dpbusd_epi32(acc[i][3], b3, av);
		}
	}
}

/* c [mr][QN] = a [mr][rp] . bp's QN columns */
static ALWAYS_INLINE void tile_vnni(int32_t *c, const int8_t *a, int rp, const uint8_t *bp, const int mr)
{
	__m512i acc[QM][4];
	tile_sums(acc, a, rp, bp, mr);
#pragma GCC unroll 6
	for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
		for (int v = 0; v < 4; v++)
			_mm512_storeu_si512(c + i * QN + 16 * v, acc[i][v]);
}

/* The same tile requantised in registers (the int32 epilogue, d->fast): o [mr][ostride]
 * gets output channels k .. k+mr-1 of QN pixels. */
static ALWAYS_INLINE void tile_vnni_bytes(uint8_t *o, size_t ostride, const int8_t *a, int rp, const uint8_t *bp,
					  const qconv *d, int k, const int mr)
{
	__m512i acc[QM][4];
	tile_sums(acc, a, rp, bp, mr);
#pragma GCC unroll 6
	for (int i = 0; i < mr; i++) {
		int sk = shift_of(d, k + i);
		requant_vec r = requant_vec_set((int32_t)d->gemm_bias[k + i] + rounding(sk), sk, d->lo, d->hi);
		_mm512_storeu_si512(o + i * ostride, requant64(acc[i], &r));
	}
}

static void tile(int32_t *c, const int8_t *a, int rp, const uint8_t *bp, int mr)
{
	switch (mr) {
	case 6: tile_vnni(c, a, rp, bp, 6); break;
	case 5: tile_vnni(c, a, rp, bp, 5); break;
	case 4: tile_vnni(c, a, rp, bp, 4); break;
	case 3: tile_vnni(c, a, rp, bp, 3); break;
	case 2: tile_vnni(c, a, rp, bp, 2); break;
	default: tile_vnni(c, a, rp, bp, 1); break;
	}
}

static void tile_bytes(uint8_t *o, size_t ostride, const int8_t *a, int rp, const uint8_t *bp, const qconv *d, int k,
		       int mr)
{
	switch (mr) {
	case 6: tile_vnni_bytes(o, ostride, a, rp, bp, d, k, 6); break;
	case 5: tile_vnni_bytes(o, ostride, a, rp, bp, d, k, 5); break;
	case 4: tile_vnni_bytes(o, ostride, a, rp, bp, d, k, 4); break;
	case 3: tile_vnni_bytes(o, ostride, a, rp, bp, d, k, 3); break;
	case 2: tile_vnni_bytes(o, ostride, a, rp, bp, d, k, 2); break;
	default: tile_vnni_bytes(o, ostride, a, rp, bp, d, k, 1); break;
	}
}

#elif defined(__AVX2__)
/* Without VNNI: each pixel's 4 bytes widened to int16 and multiplied by the row's 4
 * weights with vpmaddwd (two int32 partial sums per pixel, exact: 255 * 128 * 2 fits),
 * 16 pixels of two rows per pass; hadd joins the partials at the end. */
static inline __m256i weights4(const int8_t *w)
{
	int32_t w4;
	memcpy(&w4, w, 4);
	return _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(w4)));
}

/* [p0 .. p7] from the partial sums of pixels 0-3 (lo) and 4-7 (hi) */
static inline __m256i join8(__m256i lo, __m256i hi)
{
	return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
}

static inline __attribute__((always_inline)) void rows_avx2(int32_t *c, const int8_t *a, int rp,
							      const uint8_t *bp, int j, const int two)
{
	__m256i s[2][4];
	for (int i = 0; i < 2; i++)
		for (int v = 0; v < 4; v++)
			s[i][v] = _mm256_setzero_si256();
	for (int r4 = 0; r4 < rp / 4; r4++) {
		const uint8_t *x = bp + ((size_t)r4 * QC + j) * 4;
		__m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)x));
		__m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + 16)));
		__m256i x2 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + 32)));
		__m256i x3 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + 48)));
		for (int i = 0; i < 1 + two; i++) {
			__m256i w = weights4(a + (size_t)i * rp + 4 * r4);
			s[i][0] = _mm256_add_epi32(s[i][0], _mm256_madd_epi16(x0, w));
			s[i][1] = _mm256_add_epi32(s[i][1], _mm256_madd_epi16(x1, w));
			s[i][2] = _mm256_add_epi32(s[i][2], _mm256_madd_epi16(x2, w));
			s[i][3] = _mm256_add_epi32(s[i][3], _mm256_madd_epi16(x3, w));
		}
	}
	for (int i = 0; i < 1 + two; i++) {
		_mm256_storeu_si256((__m256i *)(c + i * QN + j), join8(s[i][0], s[i][1]));
		_mm256_storeu_si256((__m256i *)(c + i * QN + j + 8), join8(s[i][2], s[i][3]));
	}
}

static void tile(int32_t *c, const int8_t *a, int rp, const uint8_t *bp, int mr)
{
	for (int j = 0; j < QN; j += 16)
		for (int i = 0; i < mr; i += 2) {
			if (i + 1 < mr)
				rows_avx2(c + i * QN, a + (size_t)i * rp, rp, bp, j, 1);
			else
				rows_avx2(c + i * QN, a + (size_t)i * rp, rp, bp, j, 0);
		}
}
#else
static void tile(int32_t *c, const int8_t *a, int rp, const uint8_t *bp, int mr)
{
	for (int i = 0; i < mr; i++) {
		int32_t *ci = c + i * QN;
		for (int t = 0; t < QN; t++)
			ci[t] = 0;
		for (int r4 = 0; r4 < rp / 4; r4++) {
			const uint8_t *b = bp + (size_t)r4 * QC * 4;
			const int8_t *ai = a + (size_t)i * rp + 4 * r4;
			for (int t = 0; t < QN; t++)
				ci[t] += ai[0] * b[4 * t] + ai[1] * b[4 * t + 1] + ai[2] * b[4 * t + 2] + ai[3] * b[4 * t + 3];
		}
	}
}

#endif

/* Output channels a task: all of a group's, unless the pixel blocks are too few to keep
 * every thread busy (batch 1, the 16x16 maps and smaller: one block), then a share of
 * them, whole tiles, at least 4 tiles (each task packs its columns again). */
static int gemm_task_rows(const qconv *d, int tasks)
{
	int kg = d->k / d->groups, want = 4 * d->nthreads;
	if (tasks >= want || kg < 8 * QM)
		return kg;
	int split = (want + tasks - 1) / tasks, tiles = (kg + QM - 1) / QM;
	int per = (tiles + split - 1) / split;
	return (per < 4 ? 4 : per) * QM;
}

static void gemm_forward(uint8_t *out, const uint8_t *inp, uint8_t *ws, const qconv *d)
{
	int kg = d->k / d->groups, P = d->oh * d->ow, blocks = (P + QC - 1) / QC;
	int tasks = d->n * d->groups * blocks, rows = gemm_task_rows(d, tasks), parts = (kg + rows - 1) / rows;
	size_t tb = thread_bytes(d);
	uint8_t *base = (uint8_t *)round_up((size_t)ws, 64);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_conv(d))
	for (int t = 0; t < tasks * parts; t++) {
		int part = t % parts, blk = t / parts % blocks, g = t / parts / blocks % d->groups;
		int n = t / parts / blocks / d->groups;
		int p0 = blk * QC, np = P - p0 < QC ? P - p0 : QC, kend = (part + 1) * rows < kg ? (part + 1) * rows : kg;
		uint8_t *bp = base + (size_t)omp_get_thread_num() * tb;
		int32_t *c = (int32_t *)(bp + round_up((size_t)d->rp * QC, 64));
		pack_columns(bp, (uint8_t *)(c + QM * QN), inp, d, n, g, p0, np);
		for (int k0 = part * rows; k0 < kend; k0 += QM) {
			int mr = kend - k0 < QM ? kend - k0 : QM, k = g * kg + k0;
			const int8_t *a = (const int8_t *)d->weight + (size_t)k * d->rp;
			for (int j = 0; j < np; j += QN) {
				int nv = np - j < QN ? np - j : QN;
#if HAVE_VNNI
				if (d->fast && nv == QN) {
					tile_bytes(out + (((size_t)n * d->k + k) * P + p0 + j), (size_t)P, a, d->rp,
						   bp + (size_t)j * 4, d, k, mr);
					continue;
				}
#endif
				tile(c, a, d->rp, bp + (size_t)j * 4, mr);
				for (int i = 0; i < mr; i++) {
					uint8_t *o = out + (((size_t)n * d->k + k + i) * P + p0 + j);
					const int32_t *ci = c + i * QN;
					int64_t b = d->gemm_bias[k + i];
					int sk = shift_of(d, k + i);
					if (d->fast) {
						requant32(o, ci, nv, (int32_t)b + rounding(sk), sk, d->lo, d->hi, 0);
						continue;
					}
					for (int q = 0; q < nv; q++)
						o[q] = (uint8_t)qrequant(ci[q] + b, sk, d->lo, d->hi);
				}
			}
		}
	}
}
/* ---------------------------------------------------------------- depthwise */

/* The depthwise form works on one plane per task, as flat vector loops: the padded
 * plane is split into its stride x stride phases (int16, phase (a, b) holding the
 * padded rows a, a + s, ... and columns b, b + s, ...), so that every tap of a strided
 * conv reads one phase at a fixed offset. The sums run over whole rows of a phase
 * (qw columns, of which the first ow are outputs; the others are read past and
 * dropped), so each tap is one loop over oh * qw values. */
static void dw_geometry(const qconv *d, int *qh, int *qw)
{
	*qh = (d->h + 2 * d->ph + d->sh - 1) / d->sh + 1; /* a spare row for the dropped columns */
	*qw = (d->w + 2 * d->pw + d->sw - 1) / d->sw;
}

static size_t dw_bytes(const qconv *d)
{
	int qh, qw;
	dw_geometry(d, &qh, &qw);
	size_t b = round_up((size_t)d->sh * d->sw * qh * qw * sizeof(int16_t), 64) +
		   round_up((size_t)d->oh * qw * sizeof(int32_t), 64);
	size_t v = dw_vnni_bytes(d);
	return v > b ? v : b;
}

/* The depthwise form on VNNI (8 bits, int32 epilogue): the plane is copied once into a
 * padded uint8 plane (signed values + 128, padding the zero point, as the GEMM form
 * sees them; gemm_bias carries the 128 * sum(weight)), then each vector of 16 output
 * pixels of a row sums, per kernel row, the taps of 4 kernel columns in one vpdpbusd:
 * vpermb gathers each pixel's 4 input bytes (columns x * sw + t * dw, t < 4) from one
 * 64-byte load. A tap group reads 15 sw + 3 dw + 1 bytes: geometries beyond 64 take the
 * int16 form. */
static int dw_vnni_fits(const qconv *d)
{
	return HAVE_VNNI && !(d->in_fmt & QF_WIDE) && d->fast && 15 * d->sw + 3 * d->dw <= 63 &&
	       d->kh * ((d->kw + 3) / 4) <= 64;
}

/* the padded plane: rows h + 2 ph of w + 2 pw bytes, and a vector's slack for the last loads */
static size_t dw_vnni_plane(const qconv *d)
{
	return (size_t)(d->h + 2 * d->ph) * (d->w + 2 * d->pw);
}

static size_t dw_vnni_bytes(const qconv *d)
{
	if (!dw_vnni_fits(d))
		return 0;
	int groups = (d->kw + 3) / 4;
	return round_up(dw_vnni_plane(d) + 64 * groups + 64, 64) + 64 /* a row's last vector */;
}

#if HAVE_VNNI
/* dst[i] = src[i] ^ flip, i < n */
static void copy_flip(uint8_t *restrict dst, const uint8_t *restrict src, int n, uint8_t flip)
{
	int i = 0;
	const __m512i f = _mm512_set1_epi8((char)flip);
	for (; i + 64 <= n; i += 64)
		_mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), f));
	if (i < n) { /* the rest, masked: rows of 32 columns and fewer are all rest */
		__mmask64 m = ((__mmask64)1 << (n - i)) - 1;
		_mm512_mask_storeu_epi8(dst + i, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + i), f));
	}
}

static inline __m128i dw_requant(__m512i acc, __m512i vb, __m128i vs, __m512i vlo, __m512i vhi)
{
	acc = _mm512_sra_epi32(_mm512_add_epi32(acc, vb), vs);
	return _mm512_cvtepi32_epi8(_mm512_min_epi32(_mm512_max_epi32(acc, vlo), vhi));
}

/* sums of nc vectors of 16 output pixels from r (padded plane), kh kernel rows rstep
 * bytes apart, groups tap groups gstep apart */
static ALWAYS_INLINE void dw_sums(__m512i *acc, const uint8_t *r, int sw, size_t rstep, int gstep,
				  const __m512i *wv, __m512i idx, const int kh, const int groups, const int nc)
{
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++)
		acc[c] = _mm512_setzero_si512();
#pragma GCC unroll 3
	for (int ky = 0; ky < kh; ky++)
		for (int g = 0; g < groups; g++) {
			const uint8_t *p = r + ky * rstep + g * gstep;
#pragma GCC unroll 4
			for (int c = 0; c < nc; c++)
				acc[c] = _mm512_dpbusd_epi32(
					acc[c], _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(p + 16 * c * sw)),
					wv[ky * groups + g]);
		}
}

/* one output row of OW pixels from column ox: 64 at a time, then 16 (the last part
 * through tail) */
static ALWAYS_INLINE void dw_row(uint8_t *orow, const uint8_t *r0, int ox, int OW, int sw, size_t rstep, int gstep,
				 const __m512i *wv, __m512i idx, __m512i vb, __m128i vs, __m512i vlo, __m512i vhi,
				 const requant_vec *rq, uint8_t *tail, const int kh, const int groups)
{
	for (; ox + 64 <= OW; ox += 64) {
		__m512i acc[4];
		dw_sums(acc, r0 + (size_t)ox * sw, sw, rstep, gstep, wv, idx, kh, groups, 4);
		_mm512_storeu_si512(orow + ox, requant64(acc, rq));
	}
	for (; ox < OW; ox += 16) {
		__m512i acc[1];
		dw_sums(acc, r0 + (size_t)ox * sw, sw, rstep, gstep, wv, idx, kh, groups, 1);
		__m128i y = dw_requant(acc[0], vb, vs, vlo, vhi);
		if (ox + 16 <= OW) {
			_mm_storeu_si128((__m128i *)(orow + ox), y);
		} else {
			_mm_storeu_si128((__m128i *)tail, y);
			memcpy(orow + ox, tail, (size_t)(OW - ox));
		}
	}
}

/* Two output rows of a 3x3 at stride 1 (rows r, r + PW, ... of the padded plane): input
 * rows 0..3 serve both, so each row's gathered vectors are made once (4 vpermb for 6
 * vpdpbusd instead of 6). Whole 64-pixel parts only; returns the columns done. */
static int dw_rows2_s1(uint8_t *o0, uint8_t *o1, const uint8_t *r, size_t PW, int OW, const __m512i *wv,
		       __m512i idx, const requant_vec *rq)
{
	int ox = 0;
	for (; ox + 64 <= OW; ox += 64) {
		__m512i a0[4], a1[4];
#pragma GCC unroll 4
		for (int c = 0; c < 4; c++)
			a0[c] = a1[c] = _mm512_setzero_si512();
#pragma GCC unroll 4
		for (int k = 0; k < 4; k++) {
			const uint8_t *p = r + k * PW + ox;
#pragma GCC unroll 4
			for (int c = 0; c < 4; c++) {
				__m512i v = _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(p + 16 * c));
				if (k < 3)
					a0[c] = _mm512_dpbusd_epi32(a0[c], v, wv[k]);
				if (k > 0)
					a1[c] = _mm512_dpbusd_epi32(a1[c], v, wv[k - 1]);
			}
		}
		_mm512_storeu_si512(o0 + ox, requant64(a0, rq));
		_mm512_storeu_si512(o1 + ox, requant64(a1, rq));
	}
	return ox;
}

static void depthwise_vnni(uint8_t *out, const uint8_t *inp, uint8_t *ws, const qconv *d)
{
	int H = d->h, W = d->w, OW = d->ow, OH = d->oh, PW = W + 2 * d->pw, PH = H + 2 * d->ph;
	int kh = d->kh, kw = d->kw, groups = (kw + 3) / 4;
	uint8_t flip = d->in_fmt & QF_SIGNED ? 0x80 : 0;
	size_t tb = thread_bytes(d), hw = (size_t)H * W, ohw = (size_t)OH * OW;
	uint8_t *base = (uint8_t *)round_up((size_t)ws, 64);
	/* lane j of group g: the bytes of columns j * sw + (4g + t) * dw, t < 4 (past kw:
	 * any byte, its weight is 0) */
	__m512i idx;
	{
		uint8_t ix[64];
		for (int j = 0; j < 16; j++)
			for (int t = 0; t < 4; t++)
				ix[4 * j + t] = (uint8_t)(j * d->sw + t * d->dw);
		idx = _mm512_loadu_si512(ix);
	}
	const __m512i vlo = _mm512_set1_epi32(d->lo), vhi = _mm512_set1_epi32(d->hi);
#pragma omp parallel for schedule(dynamic, 4) if (parallel_conv(d))
	for (int t = 0; t < d->n * d->c; t++) {
		int ch = t % d->c;
		uint8_t *P = base + (size_t)omp_get_thread_num() * tb, *tail = P + round_up(dw_vnni_plane(d) + 64 * groups, 64);
		const uint8_t *src = inp + (size_t)t * hw;
		/* the zero point everywhere, then the rows: one call each (small planes are many) */
		memset(P, flip, (size_t)PH * PW);
		for (int y = 0; y < H; y++)
			copy_flip(P + (size_t)(y + d->ph) * PW + d->pw, src + (size_t)y * W, W, flip);
		/* each kernel row's 4-tap groups: the weights of kernel columns 4g .. 4g+3 */
		__m512i wv[64]; /* kh * groups <= 64: dw_vnni_fits */
		const int8_t *wt = (const int8_t *)d->weight + (size_t)ch * d->rp;
		for (int ky = 0; ky < kh; ky++)
			for (int g = 0; g < groups; g++) {
				uint8_t w4[4];
				for (int q = 0; q < 4; q++)
					w4[q] = 4 * g + q < kw ? (uint8_t)wt[ky * kw + 4 * g + q] : 0;
				int32_t v;
				memcpy(&v, w4, 4);
				wv[ky * groups + g] = _mm512_set1_epi32(v);
			}
		int sk = shift_of(d, ch);
		const __m512i vb = _mm512_set1_epi32((int32_t)d->gemm_bias[ch] + rounding(sk));
		const __m128i vs = _mm_cvtsi32_si128(sk);
		const requant_vec rq = requant_vec_set((int32_t)d->gemm_bias[ch] + rounding(sk), sk, d->lo, d->hi);
		uint8_t *o = out + (size_t)t * ohw;
		size_t rstep = (size_t)d->dh * PW;
		int sw = d->sw, gstep = 4 * d->dw;
		int oy = 0;
		if (kh == 3 && groups == 1 && d->sh == 1 && sw == 1 && d->dh == 1)
			for (; oy + 2 <= OH; oy += 2) {
				const uint8_t *r0 = P + (size_t)oy * PW;
				uint8_t *orow = o + (size_t)oy * OW;
				int ox = dw_rows2_s1(orow, orow + OW, r0, (size_t)PW, OW, wv, idx, &rq);
				dw_row(orow, r0, ox, OW, sw, rstep, gstep, wv, idx, vb, vs, vlo, vhi, &rq, tail, 3, 1);
				dw_row(orow + OW, r0 + PW, ox, OW, sw, rstep, gstep, wv, idx, vb, vs, vlo, vhi, &rq, tail, 3, 1);
			}
		for (; oy < OH; oy++) {
			const uint8_t *r0 = P + (size_t)oy * d->sh * PW;
			uint8_t *orow = o + (size_t)oy * OW;
			if (kh == 3 && groups == 1)
				dw_row(orow, r0, 0, OW, sw, rstep, gstep, wv, idx, vb, vs, vlo, vhi, &rq, tail, 3, 1);
			else
				dw_row(orow, r0, 0, OW, sw, rstep, gstep, wv, idx, vb, vs, vlo, vhi, &rq, tail, kh, groups);
		}
	}
}
#endif

static void depthwise_forward(uint8_t *out, const uint8_t *inp, uint8_t *ws, const qconv *d)
{
	int H = d->h, W = d->w, OW = d->ow, OH = d->oh, hw = H * W, ohw = OH * OW, sh = d->sh, sw = d->sw;
	int qh, qw;
	dw_geometry(d, &qh, &qw);
	size_t tb = thread_bytes(d), phase = (size_t)qh * qw;
	uint8_t *base = (uint8_t *)round_up((size_t)ws, 64);
#pragma omp parallel for schedule(dynamic, 4) if (parallel_conv(d))
	for (int t = 0; t < d->n * d->c; t++) {
		int ch = t % d->c;
		int16_t *q = (int16_t *)(base + (size_t)omp_get_thread_num() * tb);
		int32_t *acc = (int32_t *)((uint8_t *)q + round_up((size_t)sh * sw * phase * sizeof(int16_t), 64));
		const uint8_t *src = inp + (size_t)t * hw;
		/* zero what the input does not cover: padding and the spare row */
		for (int a = 0; a < sh; a++)
			for (int b = 0; b < sw; b++) {
				int16_t *ph0 = q + ((size_t)a * sw + b) * phase;
				int j0 = (d->pw - b + sw - 1) / sw, j1 = (W + d->pw - b + sw - 1) / sw;
				j0 = j0 < 0 ? 0 : j0 > qw ? qw : j0;
				j1 = j1 < j0 ? j0 : j1 > qw ? qw : j1;
				for (int r = 0; r < qh; r++) {
					int py = r * sh + a;
					int16_t *row = ph0 + (size_t)r * qw;
					if (py < d->ph || py >= H + d->ph) {
						memset(row, 0, (size_t)qw * sizeof *row);
						continue;
					}
					memset(row, 0, (size_t)j0 * sizeof *row);
					memset(row + j1, 0, (size_t)(qw - j1) * sizeof *row);
				}
			}
		for (int y = 0; y < H; y++) {
			int py = y + d->ph;
			const uint8_t *row = src + (size_t)y * W;
			for (int b = 0; b < sw; b++) {
				/* the columns x with (x + pw) % sw == b, to phase (py % sh, b) */
				int x0 = ((b - d->pw) % sw + sw) % sw, n = x0 < W ? (W - 1 - x0) / sw + 1 : 0;
				int16_t *dst = q + ((size_t)(py % sh) * sw + b) * phase + (size_t)(py / sh) * qw + (x0 + d->pw) / sw;
				const uint8_t *sx = row + x0;
				if (d->in_fmt & QF_SIGNED) {
#pragma omp simd
					for (int j = 0; j < n; j++)
						dst[j] = (int8_t)sx[j * sw];
				} else {
#pragma omp simd
					for (int j = 0; j < n; j++)
						dst[j] = sx[j * sw];
				}
			}
		}
		const int8_t *wt = (const int8_t *)d->weight + (size_t)ch * d->rp;
		int n = OH * qw;
		for (int ky = 0; ky < d->kh; ky++)
			for (int kx = 0; kx < d->kw; kx++) {
				int ty = ky * d->dh, tx = kx * d->dw;
				const int16_t *p = q + ((size_t)(ty % sh) * sw + tx % sw) * phase + (size_t)(ty / sh) * qw + tx / sw;
				int32_t wv = wt[ky * d->kw + kx];
				if (ky == 0 && kx == 0) {
#pragma omp simd
					for (int i = 0; i < n; i++)
						acc[i] = wv * p[i];
				} else {
#pragma omp simd
					for (int i = 0; i < n; i++)
						acc[i] += wv * p[i];
				}
			}
		int64_t bias = d->bias[ch];
		int sk = shift_of(d, ch);
		uint8_t *o = out + (size_t)t * ohw;
		for (int oy = 0; oy < OH; oy++) {
			const int32_t *a = acc + (size_t)oy * qw;
			if (d->fast)
				requant32(o + (size_t)oy * OW, a, OW, (int32_t)bias + rounding(sk), sk, d->lo, d->hi, 0);
			else
				for (int ox = 0; ox < OW; ox++)
					o[(size_t)oy * OW + ox] = (uint8_t)qrequant(a[ox] + bias, sk, d->lo, d->hi);
		}
	}
}

/* ---------------------------------------------------------------- grouped */

/* Grouped convs of a few output channels a group at stride 1 or 2 (RegNet's 3x3s,
 * groups of 16): the GEMM form would gather kh * kw copies of every input byte for only
 * kg rows of weights. Here each task, one group of one image, interleaves the group's
 * input channels by 4 into a padded plane (signed values + 128 and padding the zero
 * point, as the GEMM form sees them), split into its stride x stride phases as the
 * depthwise int16 form does (phase (a, b): padded rows a, a + s, ..., columns b, b + s,
 * ...; [cg/4][qh][qw][4] bytes each), so that a tap's 4-channel group of 16 consecutive
 * output pixels is one 64-byte load from one phase, and sums each output row with
 * vpdpbusd: per tap and channel group, GR_V loads and GR_K weight broadcasts feed
 * GR_K x GR_V vectors of sums. Rows are computed over whole vectors; the lanes past ow
 * are read from the padding or the next row and dropped. */
#define GR_K 4 /* output channels at a time */
#define GR_V 4 /* vectors of 16 pixels at a time */

static int grouped_fits(const qconv *d)
{
	int cg = d->c / d->groups, kg = d->k / d->groups;
	return HAVE_VNNI && !(d->in_fmt & QF_WIDE) && d->fast && !d->depthwise && d->groups > 1 && kg <= 64 &&
	       cg % 4 == 0 && d->sh == d->sw && d->sh <= 2;
}

/* rows and columns of a phase */
static void grouped_geometry(const qconv *d, int *qh, int *qw)
{
	*qh = (d->h + 2 * d->ph + d->sh - 1) / d->sh;
	*qw = (d->w + 2 * d->pw + d->sw - 1) / d->sw;
}

/* bytes of one phase of the interleaved padded plane */
static size_t grouped_phase(const qconv *d)
{
	int qh, qw;
	grouped_geometry(d, &qh, &qw);
	return (size_t)(d->c / d->groups) * qh * qw;
}

/* the phases, a vector's slack past them for the last row's loads, an interleaved
 * input row (stride 2: split by column between the phases) */
static size_t grouped_plane(const qconv *d)
{
	return round_up((size_t)d->sh * d->sw * grouped_phase(d) + 64, 64) + round_up((size_t)d->w * 4, 64);
}

static size_t grouped_bytes(const qconv *d)
{
	/* the plane, the taps' offsets, a row's tail */
	size_t ntap = (size_t)(d->c / d->groups / 4) * d->kh * d->kw;
	return grouped_plane(d) + round_up(ntap, 16) * 4 + 64;
}

#if HAVE_VNNI
/* sums of mk output channels (weights w [mk][ntap], ntap = cg/4 * kh * kw int32 groups)
 * over nv vectors from p (offsets off [ntap] bytes into the plane, per tap) */
static ALWAYS_INLINE void grouped_sums(__m512i acc[GR_K][GR_V], const uint8_t *p, const int32_t *off,
				       const int32_t *w, int ntap, const int mk, const int nv)
{
#pragma GCC unroll 4
	for (int i = 0; i < mk; i++)
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++)
			acc[i][v] = _mm512_setzero_si512();
	for (int t = 0; t < ntap; t++) {
		const uint8_t *q = p + off[t];
		__m512i x[GR_V];
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++)
			x[v] = _mm512_loadu_si512(q + 64 * v);
#pragma GCC unroll 4
		for (int i = 0; i < mk; i++) {
			__m512i wv = _mm512_set1_epi32(w[(size_t)i * ntap + t]);
#pragma GCC unroll 4
			for (int v = 0; v < nv; v++)
				acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], x[v], wv);
		}
	}
}

/* output channels k .. k+mk-1 of one row: nv vectors from column ox, each requantised */
static ALWAYS_INLINE void grouped_block(uint8_t *o, size_t ostride, int OW, int ox, const uint8_t *p,
					const int32_t *off, const int32_t *w, int ntap, const qconv *d, int k,
					uint8_t *tail, const int mk, const int nv)
{
	__m512i acc[GR_K][GR_V];
	grouped_sums(acc, p, off, w, ntap, mk, nv);
	const __m512i vlo = _mm512_set1_epi32(d->lo), vhi = _mm512_set1_epi32(d->hi);
#pragma GCC unroll 4
	for (int i = 0; i < mk; i++) {
		int sk = shift_of(d, k + i);
		const __m512i vb = _mm512_set1_epi32((int32_t)d->gemm_bias[k + i] + rounding(sk));
		const __m128i vs = _mm_cvtsi32_si128(sk);
		uint8_t *oi = o + (size_t)i * ostride;
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++) {
			__m128i y = dw_requant(acc[i][v], vb, vs, vlo, vhi);
			int x0 = ox + 16 * v;
			if (x0 + 16 <= OW) {
				_mm_storeu_si128((__m128i *)(oi + x0), y);
			} else {
				_mm_storeu_si128((__m128i *)tail, y);
				memcpy(oi + x0, tail, (size_t)(OW - x0));
			}
		}
	}
}

static void grouped_row(uint8_t *o, size_t ostride, int OW, int ox, const uint8_t *p, const int32_t *off,
			const int32_t *w, int ntap, const qconv *d, int k, uint8_t *tail, int mk, int nv)
{
	/* the common shapes unrolled; the rest one channel at a time */
	if (mk == 4 && nv == 4)
		grouped_block(o, ostride, OW, ox, p, off, w, ntap, d, k, tail, 4, 4);
	else if (mk == 4 && nv == 2)
		grouped_block(o, ostride, OW, ox, p, off, w, ntap, d, k, tail, 4, 2);
	else if (mk == 4 && nv == 1)
		grouped_block(o, ostride, OW, ox, p, off, w, ntap, d, k, tail, 4, 1);
	else
		for (int i = 0; i < mk; i++)
			for (int v = 0; v < nv; v++)
				grouped_block(o + (size_t)i * ostride, ostride, OW, ox + 16 * v, p + 64 * v, off,
					      w + (size_t)i * ntap, ntap, d, k + i, tail, 1, 1);
}

static void grouped_vnni(uint8_t *out, const uint8_t *inp, uint8_t *ws, const qconv *d)
{
	int H = d->h, W = d->w, OH = d->oh, OW = d->ow, s = d->sh, QH, QW;
	grouped_geometry(d, &QH, &QW);
	size_t phase = grouped_phase(d);
	int cg = d->c / d->groups, kg = d->k / d->groups, khw = d->kh * d->kw, ntap = cg / 4 * khw;
	uint8_t flip = d->in_fmt & QF_SIGNED ? 0x80 : 0;
	size_t tb = thread_bytes(d), hw = (size_t)H * W, ohw = (size_t)OH * OW;
	uint8_t *base = (uint8_t *)round_up((size_t)ws, 64);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_conv(d))
	for (int t = 0; t < d->n * d->groups; t++) {
		int n = t / d->groups, g = t % d->groups;
		uint8_t *P = base + (size_t)omp_get_thread_num() * tb;
		int32_t *off = (int32_t *)(P + grouped_plane(d));
		uint8_t *tail = (uint8_t *)(off + round_up((size_t)ntap, 16));
		uint32_t *row = (uint32_t *)(P + round_up((size_t)s * s * phase + 64, 64));
		memset(P, flip, (size_t)s * s * phase);
		const uint8_t *x = inp + ((size_t)n * d->c + (size_t)g * cg) * hw;
		for (int c4 = 0; c4 < cg / 4; c4++)
			for (int y = 0; y < H; y++) {
				const uint8_t *src = x + (size_t)4 * c4 * hw + (size_t)y * W;
				int py = y + d->ph;
				/* phase row (py % s, b), row py / s, from column (pw + b) / s */
				uint8_t *dst = P + (size_t)(py % s) * s * phase + (((size_t)c4 * QH + py / s) * QW) * 4;
				if (s == 1) {
					pack4(dst + (size_t)d->pw * 4, src, hw, W, flip);
					continue;
				}
				pack4((uint8_t *)row, src, hw, W, flip);
				for (int xx = 0; xx < W; xx++) {
					int px = xx + d->pw;
					memcpy(dst + (size_t)(px % s) * phase + (size_t)(px / s) * 4, row + xx, 4);
				}
			}
		/* each tap's bytes into the phases */
		for (int c4 = 0, tp = 0; c4 < cg / 4; c4++)
			for (int ky = 0; ky < d->kh; ky++)
				for (int kx = 0; kx < d->kw; kx++, tp++) {
					int ty = ky * d->dh, tx = kx * d->dw;
					off[tp] = (int32_t)(((size_t)(ty % s) * s + tx % s) * phase +
							    (((size_t)c4 * QH + ty / s) * QW + tx / s) * 4);
				}
		const int32_t *w = d->tap_weight + (size_t)g * kg * ntap;
		for (int k0 = 0; k0 < kg; k0 += GR_K) {
			int mk = kg - k0 < GR_K ? kg - k0 : GR_K, k = g * kg + k0;
			uint8_t *o = out + ((size_t)n * d->k + k) * ohw;
			for (int oy = 0; oy < OH; oy++)
				for (int ox = 0; ox < OW; ox += 16 * GR_V) {
					int nv = (OW - ox + 15) / 16;
					nv = nv < GR_V ? nv : GR_V;
					grouped_row(o + (size_t)oy * OW, ohw, OW, ox, P + ((size_t)oy * QW + ox) * 4, off,
						    w + (size_t)k0 * ntap, ntap, d, k, tail, mk, nv);
				}
		}
	}
}
#endif

/* ---------------------------------------------------------------- 16 bits */

/* A 16-bit model's conv, every shape, as one GEMM in doubles per block of pixels:
 * columns of the input (im2col) times wide_weight, exact (qconv_init), then the int64
 * epilogue. OpenBLAS's dgemm runs single-threaded inside the blocks' tasks. */

/* pixels a task: its columns and sums within 1 MB */
static int wide_block(const qconv *d)
{
	size_t px = ((size_t)1 << 17) / (size_t)(d->r + d->k / d->groups);
	return px < 16 ? 16 : px > QC ? QC : (int)px;
}

static void wide_forward(void *out, const void *inp, uint8_t *ws, const qconv *d)
{
	int kg = d->k / d->groups, cg = d->c / d->groups, P = d->oh * d->ow, B = wide_block(d);
	int blocks = (P + B - 1) / B, tasks = d->n * d->groups * blocks;
	size_t tb = thread_bytes(d), hw = (size_t)d->h * d->w;
	uint8_t *base = (uint8_t *)round_up((size_t)ws, 64);
	int save = blas_single_begin();
#pragma omp parallel for schedule(dynamic, 1)
	for (int t = 0; t < tasks; t++) {
		int blk = t % blocks, g = t / blocks % d->groups, n = t / blocks / d->groups;
		int p0 = blk * B, np = P - p0 < B ? P - p0 : B;
		double *col = (double *)(base + (size_t)omp_get_thread_num() * tb), *acc = col + (size_t)d->r * np;
		for (int ci = 0; ci < cg; ci++) {
			size_t plane = ((size_t)n * d->c + (size_t)g * cg + ci) * hw;
			for (int ky = 0; ky < d->kh; ky++)
				for (int kx = 0; kx < d->kw; kx++) {
					double *row = col + ((size_t)(ci * d->kh + ky) * d->kw + kx) * np;
					int oy = p0 / d->ow, ox = p0 % d->ow;
					for (int q = 0; q < np; q++) {
						int iy = oy * d->sh - d->ph + ky * d->dh, ix = ox * d->sw - d->pw + kx * d->dw;
						row[q] = iy >= 0 && iy < d->h && ix >= 0 && ix < d->w
								 ? qget(inp, plane + (size_t)iy * d->w + ix, d->in_fmt)
								 : 0.0;
						if (++ox == d->ow)
							ox = 0, oy++;
					}
				}
		}
		cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, np, d->r, 1.0,
			    d->wide_weight + (size_t)g * kg * d->r, d->r, col, np, 0.0, acc, np);
		for (int i = 0; i < kg; i++) {
			int k = g * kg + i;
			size_t o = ((size_t)n * d->k + k) * P + p0;
			for (int q = 0; q < np; q++)
				qput(out, o + q, qrequant((int64_t)acc[(size_t)i * np + q] + d->gemm_bias[k], shift_of(d, k), d->lo,
							  d->hi),
				     QF_WIDE);
		}
	}
	blas_single_end(save);
}

void qconv_forward(void *out, const void *inp, uint8_t *ws, const qconv *d)
{
	if (d->in_fmt & QF_WIDE)
		wide_forward(out, inp, ws, d);
#if HAVE_VNNI
	else if (d->depthwise && dw_vnni_fits(d))
		depthwise_vnni(out, inp, ws, d);
	else if (grouped_fits(d))
		grouped_vnni(out, inp, ws, d);
#endif
	else if (d->depthwise)
		depthwise_forward(out, inp, ws, d);
	else
		gemm_forward(out, inp, ws, d);
}

/* ---------------------------------------------------------------- elementwise */

/* values below which an elementwise kernel runs on the calling thread (PAR_MIN_MACS:
 * a few microseconds of vector work against the wake-up of the others) */
#define PAR_MIN ((size_t)1 << 18)


/* x [n] of format fmt -> int32 */
static void widen(int32_t *out, const void *x, int fmt, int n)
{
	switch (fmt & 3) {
	case 0: {
		const uint8_t *v = x;
#pragma omp simd
		for (int i = 0; i < n; i++)
			out[i] = v[i];
		break;
	}
	case QF_SIGNED: {
		const int8_t *v = x;
#pragma omp simd
		for (int i = 0; i < n; i++)
			out[i] = v[i];
		break;
	}
	case QF_WIDE: {
		const uint16_t *v = x;
#pragma omp simd
		for (int i = 0; i < n; i++)
			out[i] = v[i];
		break;
	}
	default: {
		const int16_t *v = x;
#pragma omp simd
		for (int i = 0; i < n; i++)
			out[i] = v[i];
	}
	}
}

/* x + i elements of format fmt */
static const void *elem(const void *x, size_t i, int fmt)
{
	return (const uint8_t *)x + (fmt & QF_WIDE ? 2 * i : i);
}

#define CHUNK 4096

#if defined(__AVX512BW__)
/* v [4] = the 64 bytes at x as int32 (signed or not) */
static inline void widen64(__m512i *v, const uint8_t *x, int sgn)
{
	for (int i = 0; i < 4; i++) {
		__m128i b = _mm_loadu_si128((const __m128i *)(x + 16 * i));
		v[i] = sgn ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
	}
}

/* out [n] (bytes) = requant(a * 2^sa + b * 2^sb) in int32 (the callers' fast case; b
 * NULL: a * 2^sa alone), 64 at a time; returns how many it did */
static int requant_bytes64(uint8_t *out, const uint8_t *a, int a_sgn, int sa, const uint8_t *b, int b_sgn, int sb,
			   int n, int shift, int32_t lo, int32_t hi)
{
	requant_vec r = requant_vec_set(rounding(shift), shift, lo, hi);
	__m128i ca = _mm_cvtsi32_si128(sa), cb = _mm_cvtsi32_si128(sb);
	int i = 0;
	for (; i + 64 <= n; i += 64) {
		__m512i va[4], vb[4];
		widen64(va, a + i, a_sgn);
		if (!b)
			for (int j = 0; j < 4; j++)
				va[j] = _mm512_sll_epi32(va[j], ca);
		else {
			widen64(vb, b + i, b_sgn);
			for (int j = 0; j < 4; j++)
				va[j] = _mm512_add_epi32(_mm512_sll_epi32(va[j], ca), _mm512_sll_epi32(vb[j], cb));
		}
		_mm512_storeu_si512(out + i, requant64(va, &r));
	}
	return i;
}
#endif

void qrescale(void *out, const void *x, int x_fmt, size_t n, int shift, int32_t lo, int32_t hi)
{
	int fast = shift >= 0 && shift < 31;
#if defined(__AVX512BW__)
	/* bytes moved up (a point with more fraction bits, e.g. RegNet's ReLU after its
	 * residual add): exact in int32 while |x| * 2^-shift < 2^31 */
	int up = shift < 0 && shift > -23 ? -shift : 0;
#endif
#pragma omp parallel for schedule(dynamic, 1) if (n >= PAR_MIN)
	for (size_t o = 0; o < n; o += CHUNK) {
		size_t at = o;
		int c = n - o < CHUNK ? (int)(n - o) : CHUNK;
		int32_t v[CHUNK];
#if defined(__AVX512BW__)
		/* bytes: 64 at a time without the int32 chunk */
		if ((fast || up) && !(x_fmt & QF_WIDE)) {
			int done = requant_bytes64((uint8_t *)elem(out, at, x_fmt), elem(x, at, x_fmt), x_fmt & QF_SIGNED, up,
						   NULL, 0, 0, c, up ? 0 : shift, lo, hi);
			at += done;
			c -= done;
		}
#endif
		void *y = (void *)elem(out, at, x_fmt);
		widen(v, elem(x, at, x_fmt), x_fmt, c);
		if (fast)
			requant32(y, v, c, rounding(shift), shift, lo, hi, x_fmt);
		else
			for (int i = 0; i < c; i++)
				qput(y, (size_t)i, qrequant(v[i], shift, lo, hi), x_fmt);
	}
}

void qadd(void *out, const void *a, int a_fmt, int fa, const void *b, int b_fmt, int fb, size_t n, int fo,
	  int32_t lo, int32_t hi)
{
	int f = fa > fb ? fa : fb, sa = f - fa, sb = f - fb, shift = f - fo;
	/* values below 2^8 moved up by at most 2^21 (2^16 by 2^13) and summed stay within int32 */
	int up = a_fmt & QF_WIDE ? 13 : 21;
	int fast = sa <= up && sb <= up && shift >= 0 && shift < 31;
#pragma omp parallel for schedule(dynamic, 1) if (n >= PAR_MIN)
	for (size_t o = 0; o < n; o += CHUNK) {
		size_t at = o;
		int c = n - o < CHUNK ? (int)(n - o) : CHUNK;
		int32_t va[CHUNK], vb[CHUNK];
#if defined(__AVX512BW__)
		if (fast && !(a_fmt & QF_WIDE)) {
			int done = requant_bytes64((uint8_t *)elem(out, at, a_fmt), elem(a, at, a_fmt), a_fmt & QF_SIGNED, sa,
						   elem(b, at, b_fmt), b_fmt & QF_SIGNED, sb, c, shift, lo, hi);
			at += done;
			c -= done;
		}
#endif
		void *y = (void *)elem(out, at, a_fmt);
		widen(va, elem(a, at, a_fmt), a_fmt, c);
		widen(vb, elem(b, at, b_fmt), b_fmt, c);
		if (fast) {
#pragma omp simd
			for (int i = 0; i < c; i++)
				va[i] = va[i] * (1 << sa) + vb[i] * (1 << sb);
			requant32(y, va, c, rounding(shift), shift, lo, hi, a_fmt);
			continue;
		}
		/* |fa - fb| <= QMAX_FRAC_GAP: within int64 */
		for (int i = 0; i < c; i++) {
			int64_t v = (int64_t)va[i] * ((int64_t)1 << sa) + (int64_t)vb[i] * ((int64_t)1 << sb);
			qput(y, (size_t)i, qrequant(v, shift, lo, hi), a_fmt);
		}
	}
}

#if defined(__AVX512BW__)
/* the 16 bytes at x as int32 (signed or not) */
static inline __m512i widen16(const uint8_t *x, int sgn)
{
	__m128i b = _mm_loadu_si128((const __m128i *)x);
	return sgn ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
}
#endif

/* the longest row qadd_bilinear's int32 form takes (its rows live on the stack) */
#define QROW_MAX 2048

void qadd_bilinear(void *out, const void *a, int a_fmt, int fa, const void *b, int b_fmt, int fb, int nc, int h,
		   int w, int oh, int ow, const qtaps *rows, const qtaps *cols, int bits, int fo, int32_t lo,
		   int32_t hi)
{
	int fu = fb + 2 * bits, f = fa > fu ? fa : fu, sa = f - fa, su = f - fu, shift = f - fo;
	/* |a| < 2^16 and |up| < 2^(16 + 2 bits) <= 2^32 moved up by at most 2^QMAX_FRAC_GAP: within int64 */
	int64_t ma = (int64_t)1 << sa, mu = (int64_t)1 << su;
	/* bytes whose sums stay within int32 (|a| * 2^sa + 2^(2 bits) * |b| * 2^su, with the
	 * rounding): rows first, each output row's int32 values then one requant32 */
	int64_t bound = 256 * ma + ((int64_t)256 << 2 * bits) * mu + rounding(shift);
	if (!(a_fmt & QF_WIDE) && !(b_fmt & QF_WIDE) && shift >= 0 && shift < 31 && bound < INT32_MAX &&
	    w <= QROW_MAX && ow <= QROW_MAX) {
		int32_t m_a = (int32_t)ma, m_u = (int32_t)mu;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)nc * oh * ow >= PAR_MIN)
		for (int p = 0; p < nc; p++) {
			int32_t t[QROW_MAX], v[QROW_MAX];
			const uint8_t *bp = (const uint8_t *)b + (size_t)p * h * w;
			const uint8_t *ap = (const uint8_t *)a + (size_t)p * oh * ow;
			uint8_t *op = (uint8_t *)out + (size_t)p * oh * ow;
			for (int y = 0; y < oh; y++) {
				const uint8_t *r0 = bp + (size_t)rows->i0[y] * w, *r1 = bp + (size_t)rows->i1[y] * w;
				const uint8_t *ay = ap + (size_t)y * ow;
				int32_t h0 = rows->w0[y], h1 = rows->w1[y];
				int x = 0;
#if defined(__AVX512BW__)
				/* 16 at a time: the rows' sum, then each output's two taps of it gathered */
				const __m512i vh0 = _mm512_set1_epi32(h0), vh1 = _mm512_set1_epi32(h1);
				for (; x + 16 <= w; x += 16) {
					__m512i b0 = widen16(r0 + x, b_fmt & QF_SIGNED), b1 = widen16(r1 + x, b_fmt & QF_SIGNED);
					_mm512_storeu_si512(t + x, _mm512_add_epi32(_mm512_mullo_epi32(vh0, b0), _mm512_mullo_epi32(vh1, b1)));
				}
#endif
				for (; x < w; x++)
					t[x] = b_fmt & QF_SIGNED ? h0 * (int8_t)r0[x] + h1 * (int8_t)r1[x] : h0 * r0[x] + h1 * r1[x];
				x = 0;
#if defined(__AVX512BW__)
				const __m128i ca = _mm_cvtsi32_si128(sa), cu = _mm_cvtsi32_si128(su);
				for (; x + 16 <= ow; x += 16) {
					__m512i g0 = _mm512_i32gather_epi32(_mm512_loadu_si512(cols->i0 + x), t, 4);
					__m512i g1 = _mm512_i32gather_epi32(_mm512_loadu_si512(cols->i1 + x), t, 4);
					__m512i up = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_loadu_si512(cols->w0 + x), g0),
								      _mm512_mullo_epi32(_mm512_loadu_si512(cols->w1 + x), g1));
					_mm512_storeu_si512(v + x, _mm512_add_epi32(_mm512_sll_epi32(widen16(ay + x, a_fmt & QF_SIGNED), ca),
										    _mm512_sll_epi32(up, cu)));
				}
#endif
				for (; x < ow; x++)
					v[x] = (a_fmt & QF_SIGNED ? (int8_t)ay[x] : ay[x]) * m_a +
					       (cols->w0[x] * t[cols->i0[x]] + cols->w1[x] * t[cols->i1[x]]) * m_u;
				requant32(op + (size_t)y * ow, v, ow, rounding(shift), shift, lo, hi, 0);
			}
		}
		return;
	}
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)nc * oh * ow >= PAR_MIN)
	for (int p = 0; p < nc; p++) {
		size_t bp = (size_t)p * h * w, ap = (size_t)p * oh * ow;
		for (int y = 0; y < oh; y++) {
			size_t r0 = bp + (size_t)rows->i0[y] * w, r1 = bp + (size_t)rows->i1[y] * w;
			int64_t h0 = rows->w0[y], h1 = rows->w1[y];
			for (int x = 0; x < ow; x++) {
				size_t c0 = (size_t)cols->i0[x], c1 = (size_t)cols->i1[x];
				int64_t w0 = cols->w0[x], w1 = cols->w1[x];
				int64_t up = h0 * (w0 * qget(b, r0 + c0, b_fmt) + w1 * qget(b, r0 + c1, b_fmt)) +
					     h1 * (w0 * qget(b, r1 + c0, b_fmt) + w1 * qget(b, r1 + c1, b_fmt));
				int64_t v = qget(a, ap + (size_t)y * ow + x, a_fmt) * ma + up * mu;
				qput(out, ap + (size_t)y * ow + x, qrequant(v, shift, lo, hi), a_fmt);
			}
		}
	}
}

void qmaxpool(void *out, const void *x, int x_fmt, int n, int c, int h, int w, int kh, int kw, int sh, int sw,
	      int ph, int pw, int oh, int ow, int shift, int32_t lo, int32_t hi)
{
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)n * c * h * w >= PAR_MIN)
	for (int p = 0; p < n * c; p++) {
		size_t xp = (size_t)p * h * w;
		for (int oy = 0; oy < oh; oy++) {
			int y0 = oy * sh - ph, y1 = y0 + kh;
			y0 = y0 < 0 ? 0 : y0;
			y1 = y1 > h ? h : y1;
			for (int ox = 0; ox < ow; ox++) {
				int x0 = ox * sw - pw, x1 = x0 + kw;
				x0 = x0 < 0 ? 0 : x0;
				x1 = x1 > w ? w : x1;
				int32_t best = INT32_MIN;
				for (int y = y0; y < y1; y++)
					for (int xx = x0; xx < x1; xx++) {
						int32_t v = qget(x, xp + (size_t)y * w + xx, x_fmt);
						best = v > best ? v : best;
					}
				qput(out, ((size_t)p * oh + oy) * ow + ox, qrequant(best, shift, lo, hi), x_fmt);
			}
		}
	}
}

void ql2norm(void *out, const void *x, int x_fmt, int fx, const float *weight, float eps, int n, int c, int hw,
	     const qact *a)
{
	enum { B = 64 }; /* pixels a task: their sums and factors stay in registers or L1 */
	const float unit = ldexpf(1.0f, -fx);
	int blocks = (hw + B - 1) / B;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)n * c * hw >= PAR_MIN)
	for (int t = 0; t < n * blocks; t++) {
		int b = t / blocks, i0 = t % blocks * B, m = hw - i0 < B ? hw - i0 : B;
		size_t xb = (size_t)b * c * hw + i0;
		int64_t sum[B] = {0};
		float f[B];
		for (int ch = 0; ch < c; ch++)
			for (int j = 0; j < m; j++) {
				int64_t v = qget(x, xb + (size_t)ch * hw + j, x_fmt);
				sum[j] += v * v;
			}
		for (int j = 0; j < m; j++)
			f[j] = l2norm_factor(ldexp((double)sum[j], -2 * fx), eps);
		for (int ch = 0; ch < c; ch++) {
			float w = weight[ch];
			for (int j = 0; j < m; j++) {
				size_t i = xb + (size_t)ch * hw + j;
				float v = (float)qget(x, i, x_fmt) * unit;
				qput(out, i, (int32_t)quant_act_int(w * v * f[j], a), x_fmt);
			}
		}
	}
}

void qdequant(float *out, const void *x, size_t stride, int x_fmt, size_t n, int frac)
{
	float s = ldexpf(1.0f, -frac);
	for (size_t i = 0; i < n; i++)
		out[i] = (float)qget(x, i * stride, x_fmt) * s;
}

#if defined(__AVX512F__)
/* the 16 integers at x (bytes or words, fmt) as f32 */
static inline __m512 load16_ps(const void *x, int fmt)
{
	__m512i v;
	switch (fmt & 3) {
	case 0: v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)x)); break;
	case QF_SIGNED: v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)x)); break;
	case QF_WIDE: v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)x)); break;
	default: v = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)x)); break;
	}
	return _mm512_cvtepi32_ps(v);
}
#endif

void qdequant_planes(float *out, const void *x, int x_fmt, int c, int hw, int frac)
{
	/* 16 pixels of up to 64 planes a step: read along the planes, written along the pixels */
	enum { PX = 16, CH = 64 };
	const float s = ldexpf(1.0f, -frac);
	int blocks = (hw + PX - 1) / PX;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)c * hw >= PAR_MIN)
	for (int b = 0; b < blocks; b++) {
		float t[CH][PX];
		int p0 = b * PX, m = hw - p0 < PX ? hw - p0 : PX;
		for (int c0 = 0; c0 < c; c0 += CH) {
			int nc = c - c0 < CH ? c - c0 : CH;
			for (int ch = 0; ch < nc; ch++) {
				size_t at = (size_t)(c0 + ch) * hw + p0;
#if defined(__AVX512F__)
				if (m == PX) {
					_mm512_storeu_ps(t[ch], _mm512_mul_ps(load16_ps(elem(x, at, x_fmt), x_fmt), _mm512_set1_ps(s)));
					continue;
				}
#endif
				for (int j = 0; j < m; j++)
					t[ch][j] = (float)qget(x, at + j, x_fmt) * s;
			}
			for (int j = 0; j < m; j++) {
				float *o = out + (size_t)(p0 + j) * c + c0;
				for (int ch = 0; ch < nc; ch++)
					o[ch] = t[ch][j];
			}
		}
	}
}

void qquantise(void *out, const float *x, size_t n, const qact *a, int fmt)
{
#pragma omp parallel for schedule(dynamic, 1) if (n >= PAR_MIN)
	for (size_t o = 0; o < n; o += CHUNK) {
		size_t c = n - o < CHUNK ? n - o : CHUNK, i = 0;
#if defined(__AVX512F__)
		/* quant_act_int's steps in its order: x * scale, + 1/2, floor, NaN and above
		 * qmax to qmax (a comparison false for NaN), qmin below */
		const __m512 sc = _mm512_set1_ps(a->scale), half = _mm512_set1_ps(0.5f);
		const __m512 qmax = _mm512_set1_ps((float)a->qmax), qmin = _mm512_set1_ps((float)a->qmin);
		for (; i + 16 <= c; i += 16) {
			__m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + o + i), sc), half);
			v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
			v = _mm512_max_ps(_mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, qmax, _CMP_LE_OQ), qmax, v), qmin);
			__m512i q = _mm512_cvtps_epi32(v);
			if (fmt & QF_WIDE)
				_mm256_storeu_si256((__m256i *)((uint16_t *)out + o + i), _mm512_cvtepi32_epi16(q));
			else
				_mm_storeu_si128((__m128i *)((uint8_t *)out + o + i), _mm512_cvtepi32_epi8(q));
		}
#endif
		for (; i < c; i++)
			qput(out, o + i, (int32_t)quant_act_int(x[o + i], a), fmt);
	}
}

#if defined(__AVX512BW__)
/* o [2n] = each of the n integers at x twice (bytes, or words when wide); returns how
 * many of x it did (whole vectors) */
static int double_row(void *o, const void *x, int n, int wide)
{
	int i = 0;
	if (wide)
		for (; i + 16 <= n; i += 16) {
			__m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)x + i)));
			_mm512_storeu_si512((uint16_t *)o + 2 * i, _mm512_or_si512(v, _mm512_slli_epi32(v, 16)));
		}
	else
		for (; i + 32 <= n; i += 32) {
			__m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)((const uint8_t *)x + i)));
			_mm512_storeu_si512((uint8_t *)o + 2 * i, _mm512_or_si512(v, _mm512_slli_epi16(v, 8)));
		}
	return i;
}
#endif

void qupsample_nearest(void *out, const void *x, int fmt, int nc, int h, int w, int oh, int ow)
{
	size_t e = fmt & QF_WIDE ? 2 : 1;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)nc * oh * ow >= PAR_MIN)
	for (int p = 0; p < nc; p++)
		for (int oy = 0; oy < oh; oy++) {
			int sy = upsample_nearest_src(oy, h, oh);
			const uint8_t *row = (const uint8_t *)x + ((size_t)p * h + sy) * w * e;
			uint8_t *o = (uint8_t *)out + ((size_t)p * oh + oy) * ow * e;
			if (oy > 0 && upsample_nearest_src(oy - 1, h, oh) == sy) { /* the row above again */
				memcpy(o, o - (size_t)ow * e, (size_t)ow * e);
				continue;
			}
			int ox = 0;
			if (ow == 2 * w) {
				int i = 0;
#if defined(__AVX512BW__)
				i = double_row(o, row, w, fmt & QF_WIDE);
#endif
				for (; i < w; i++) {
					memcpy(o + 2 * i * e, row + i * e, e);
					memcpy(o + (2 * i + 1) * e, row + i * e, e);
				}
				continue;
			}
			for (; ox < ow; ox++)
				memcpy(o + ox * e, row + (size_t)upsample_nearest_src(ox, w, ow) * e, e);
		}
}
