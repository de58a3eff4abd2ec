/* test_qlayers: the integer kernels of forward --int8 (lib/kernels/qlayers.c) against their
 * naive loops: qrequant against the rounding rule computed in exact arithmetic, the conv
 * (GEMM form, VNNI where built, and depthwise; one shift, or one per output channel)
 * against qconv_forward_ref over odd
 * geometries (strides, padding, dilation, groups, channel counts that fill no tile,
 * reductions not a multiple of 4, signed and unsigned inputs, shifts of every sign),
 * and add, rescale and maxpool against qrequant per value; the input's quantisation
 * against quant_act_int, planes to pixels against qdequant, the nearest upsampling
 * against its naive loop; the add of a bilinear
 * upsampling against the float simulation's own steps (layers.c's bilinear kernel on the
 * dequantised values, the f32 add, the rounding rule), and the L2Norm against the float
 * L2Norm and the rounding rule. Each kernel runs on bytes (8-bit models) and on 16-bit
 * words (16-bit models: the conv's double GEMM, the add of a bilinear upsampling
 * against the same rule in int64, as the f32 path is not exact there). Every
 * comparison is exact. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "check.h"
#include "core/err.h"
#include "kernels/layers.h"
#include "kernels/qlayers.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static int uniform(int lo, int hi)
{
	return lo + (int)(next() % (uint32_t)(hi - lo + 1));
}

/* floor(v / 2^shift + 1/2) clamped, in long double (exact for these magnitudes) */
static int32_t requant_exact(int64_t v, int shift, int32_t lo, int32_t hi)
{
	long double x = floorl(ldexpl((long double)v, -shift) + 0.5L);
	return x < lo ? lo : x > hi ? hi : (int32_t)x;
}

static void test_requant(void)
{
	static const int64_t vals[] = {0, 1, -1, 2, -2, 3, -3, 127, -128, 255, 256, -129, 1023, -1024, 1 << 20,
				       -(1 << 20), 2147483647LL, -2147483648LL, (1LL << 40) + 7, -(1LL << 40) - 7};
	int bad = 0, n = 0;
	for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
		for (int shift = -40; shift <= 70; shift++)
			for (int s = 0; s < 2; s++) {
				int32_t lo = s ? -128 : 0, hi = s ? 127 : 255;
				bad += qrequant(vals[i], shift, lo, hi) != requant_exact(vals[i], shift, lo, hi);
				n++;
			}
	for (int i = 0; i < 200000; i++) {
		int64_t v = (int64_t)(int32_t)next() >> uniform(0, 24);
		int shift = uniform(-8, 34);
		bad += qrequant(v, shift, -32768, 32767) != requant_exact(v, shift, -32768, 32767);
		n++;
	}
	CHECK_MSG(bad == 0, "qrequant: %d of %d differ from the exact rule", bad, n);
	/* ties go up: 2.5 -> 3, -2.5 -> -2 */
	CHECK(qrequant(5, 1, -128, 127) == 3 && qrequant(-5, 1, -128, 127) == -2);
}

typedef struct geo {
	int n, c, h, w, k, kh, kw, s, p, d, g;
} geo;

/* a point's integer range: signed or not, 8 or 16 bits */
static void point_range(int fmt, int32_t *lo, int32_t *hi)
{
	int bits = fmt & QF_WIDE ? 16 : 8;
	*lo = fmt & QF_SIGNED ? -(1 << (bits - 1)) : 0;
	*hi = fmt & QF_SIGNED ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
}

static size_t esz(int fmt)
{
	return fmt & QF_WIDE ? 2 : 1;
}

/* n random integers of format fmt (all bit patterns) */
static void *random_ints(size_t n, int fmt)
{
	uint8_t *x = malloc(n * esz(fmt));
	for (size_t i = 0; i < n * esz(fmt); i++)
		x[i] = (uint8_t)next();
	return x;
}

static int run_conv(const geo *G, int in_fmt, int shift, int wide_weights, int per_channel)
{
	qconv d = {0};
	int wide = in_fmt & QF_WIDE;
	d.n = G->n, d.c = G->c, d.h = G->h, d.w = G->w, d.k = G->k, d.kh = G->kh, d.kw = G->kw;
	d.sh = d.sw = G->s, d.ph = d.pw = G->p, d.dh = d.dw = G->d, d.groups = G->g;
	d.in_fmt = in_fmt;
	d.r = G->c / G->g * G->kh * G->kw;
	d.rp = (d.r + 3) & ~3;
	d.shift = shift;
	point_range((uniform(0, 1) ? QF_SIGNED : 0) | wide, &d.lo, &d.hi);
	/* weights: the full range, or small ones (|w| < 2^wmax) */
	int wmax = wide ? 15 : 7, wsmall = wide ? 2000 : 20;
	void *w = calloc((size_t)d.k * d.rp, esz(in_fmt));
	int64_t *bias = malloc((size_t)d.k * sizeof *bias), *gb = malloc((size_t)d.k * sizeof *gb);
	double *wd = wide ? malloc((size_t)d.k * d.r * sizeof *wd) : NULL;
	int32_t *tw = malloc((size_t)d.k * d.rp);
	for (int k = 0; k < d.k; k++) {
		for (int j = 0; j < d.r; j++) {
			int v = wide_weights ? uniform(-(1 << wmax), (1 << wmax) - 1) : uniform(-wsmall, wsmall);
			if (wide)
				((int16_t *)w)[(size_t)k * d.rp + j] = (int16_t)v;
			else
				((int8_t *)w)[(size_t)k * d.rp + j] = (int8_t)v;
		}
		/* biases up to a 16-bit (32-bit) value moved up by a few bits (TIDL's bias split) */
		bias[k] = (wide ? (int64_t)(int32_t)next() : (int64_t)uniform(-32768, 32767)) * (1 << uniform(0, 6));
	}
	/* per-channel weights: each output channel's own shift around the common one */
	int *shifts = per_channel ? malloc((size_t)d.k * sizeof *shifts) : NULL;
	for (int k = 0; per_channel && k < d.k; k++)
		shifts[k] = shift + uniform(-3, 3);
	d.shifts = shifts;
	d.weight = w;
	d.wide_weight = wd;
	d.tap_weight = tw;
	d.bias = bias;
	if (qconv_init(&d, gb) < 0) {
		fprintf(stderr, "test_qlayers: %s\n", err_msg());
		free(w), free(bias), free(gb), free(wd), free(tw), free(shifts);
		return -1;
	}
	size_t nin = (size_t)d.n * d.c * d.h * d.w, nout = (size_t)d.n * d.k * d.oh * d.ow;
	uint8_t *x = random_ints(nin, in_fmt), *y = malloc(nout * esz(in_fmt)), *ref = malloc(nout * esz(in_fmt));
	uint8_t *ws = malloc(qconv_workspace_size(&d));
	qconv_forward(y, x, ws, &d);
	qconv_forward_ref(ref, x, &d);
	size_t bad = 0;
	for (size_t i = 0; i < nout; i++)
		bad += qget(y, i, in_fmt) != qget(ref, i, in_fmt);
	static const char *const fmts[4] = {"uint8", "int8", "uint16", "int16"};
	CHECK_MSG(bad == 0,
		  "qconv n%d c%d %dx%d k%d %dx%d s%d p%d d%d g%d %s shift %d%s (%s%s): %zu of %zu outputs differ", G->n,
		  G->c, G->h, G->w, G->k, G->kh, G->kw, G->s, G->p, G->d, G->g, fmts[in_fmt & 3], shift,
		  per_channel ? " per channel" : "",
		  wide ? "double gemm" : d.depthwise ? "depthwise" : "gemm", d.fast ? ", int32 epilogue" : "", bad, nout);
	int fast = d.fast;
	free(x), free(y), free(ref), free(ws), free(w), free(bias), free(gb), free(wd), free(tw), free(shifts);
	return fast;
}

static void test_conv(void)
{
	static const geo geos[] = {
		{1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1},       {2, 3, 17, 13, 7, 3, 3, 2, 1, 1, 1},
		{1, 16, 9, 11, 24, 1, 1, 1, 0, 1, 1},    {3, 5, 70, 5, 13, 1, 1, 1, 0, 1, 1},
		{1, 32, 20, 20, 6, 1, 1, 1, 0, 1, 1},    {2, 33, 7, 7, 65, 1, 1, 2, 0, 1, 1},
		{1, 8, 19, 23, 8, 3, 3, 1, 1, 1, 8},     {2, 12, 10, 9, 12, 3, 3, 2, 1, 1, 12},
		{1, 7, 6, 6, 7, 5, 5, 1, 2, 1, 7},       {1, 6, 12, 12, 6, 3, 3, 1, 2, 2, 6},
		{1, 8, 11, 11, 16, 3, 3, 1, 1, 1, 4},    {2, 6, 8, 8, 9, 3, 1, 1, 0, 1, 3},
		{1, 4, 9, 9, 5, 2, 2, 3, 1, 2, 1},       {1, 96, 16, 16, 24, 1, 1, 1, 0, 1, 1},
		{1, 3, 40, 40, 32, 3, 3, 2, 1, 1, 1},    {1, 320, 3, 3, 1, 1, 1, 1, 0, 1, 1},
		{2, 64, 17, 17, 64, 3, 3, 2, 1, 1, 64},  {1, 2, 300, 2, 3, 1, 1, 1, 0, 1, 1},
		/* rows of whole vectors and a part (depthwise: 64 and 16 pixels at a time) */
		{1, 3, 5, 147, 3, 3, 3, 1, 1, 1, 3},     {2, 3, 6, 150, 3, 3, 3, 2, 1, 1, 3},
		{1, 2, 4, 131, 2, 5, 5, 1, 2, 1, 2},
		/* im2col rows copied 64 bytes at a time, stride 1 and 2 */
		{1, 3, 7, 260, 8, 3, 3, 2, 1, 1, 1},     {1, 4, 3, 150, 5, 3, 3, 1, 1, 1, 1},
		/* too few pixel blocks for the threads: tasks split the output channels (whole
		 * tiles and a part; per group) */
		{1, 40, 8, 8, 100, 3, 3, 1, 1, 1, 1},    {1, 16, 9, 9, 128, 1, 1, 1, 0, 1, 2},
		/* grouped at stride 1 (RegNet's): whole and part vectors and channel blocks, dilation */
		{1, 32, 13, 21, 32, 3, 3, 1, 1, 1, 2},   {2, 24, 7, 40, 12, 3, 3, 1, 2, 2, 3},
		{1, 16, 5, 70, 10, 3, 3, 1, 1, 1, 2},    {1, 16, 4, 33, 8, 1, 3, 1, 0, 1, 2},
		/* and at stride 2: odd sizes, dilation, a phase's rows past the vectors */
		{1, 32, 13, 21, 32, 3, 3, 2, 1, 1, 2},   {2, 16, 16, 17, 8, 3, 3, 2, 1, 1, 4},
		{1, 24, 11, 40, 12, 3, 3, 2, 2, 2, 3},   {1, 16, 9, 140, 8, 3, 3, 2, 1, 1, 2},
		/* enough work to run on both threads: im2col, grouped, depthwise, 1x1 split by channels */
		{1, 32, 24, 24, 64, 3, 3, 1, 1, 1, 1},   {1, 64, 32, 32, 64, 3, 3, 1, 1, 1, 4},
		{1, 64, 64, 64, 64, 3, 3, 2, 1, 1, 4},
		{1, 256, 48, 48, 256, 3, 3, 1, 1, 1, 256}, {1, 160, 16, 16, 192, 1, 1, 1, 0, 1, 1},
	};
	int fast = 0, slow = 0;
	for (size_t i = 0; i < sizeof geos / sizeof *geos; i++)
		for (int fmt = 0; fmt < 4; fmt++) {
			/* 16-bit sums reach 2^31 * r: shifts up to 40 bring them back */
			static const int shifts[] = {-2, 0, 1, 5, 9, 14, 33, 40};
			for (size_t s = 0; s < sizeof shifts / sizeof *shifts; s++) {
				int f = run_conv(&geos[i], fmt, shifts[s], (int)(s & 1), (int)(s % 3 == 1));
				CHECK(f >= 0);
				fast += f == 1;
				slow += f == 0;
			}
		}
	/* both epilogues ran (the int32 one needs the VNNI build for the GEMM form) */
	CHECK(slow > 0);
	CHECK(fast > 0);
	/* bad geometry is an error */
	qconv d = {.n = 1, .c = 3, .h = 4, .w = 4, .k = 4, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .dh = 1, .dw = 1,
		   .groups = 2};
	int64_t gb[4];
	CHECK(qconv_init(&d, gb) < 0);
}

static void test_elementwise(void)
{
	enum { N = (1 << 18) + 4097 }; /* above PAR_MIN: both threads, and a part chunk */
	for (int wide = 0; wide <= QF_WIDE; wide += QF_WIDE) {
		uint8_t *a = random_ints(N, wide), *b = random_ints(N, wide), *y = malloc(2 * N);
		static const int cases[][5] = {/* fa, fb, fo, a_sgn, b_sgn */
					       {4, 4, 4, 1, 1},  {7, 3, 5, 0, 1},   {2, 6, 0, 1, 0}, {5, 5, 9, 0, 0},
					       {0, 28, 12, 1, 1}, {-3, 2, -1, 1, 0}, {6, 6, 7, 1, 1}, {20, 6, 22, 0, 1}};
		for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
			int fa = cases[c][0], fb = cases[c][1], fo = cases[c][2];
			int af = cases[c][3] | wide, bf = cases[c][4] | wide, of = ((af | bf) & QF_SIGNED) | wide;
			int32_t lo, hi;
			point_range(of, &lo, &hi);
			qadd(y, a, af, fa, b, bf, fb, N, fo, lo, hi);
			int f = fa > fb ? fa : fb, bad = 0;
			for (int i = 0; i < N; i++) {
				int64_t v = (int64_t)qget(a, i, af) * ((int64_t)1 << (f - fa)) +
					    (int64_t)qget(b, i, bf) * ((int64_t)1 << (f - fb));
				bad += requant_exact(v, f - fo, lo, hi) != qget(y, i, of);
			}
			CHECK_MSG(bad == 0, "qadd case %zu%s: %d differ", c, wide ? " (16 bits)" : "", bad);
			point_range(af, &lo, &hi);
			qrescale(y, a, af, N, fa - fo, lo, hi);
			bad = 0;
			for (int i = 0; i < N; i++)
				bad += requant_exact(qget(a, i, af), fa - fo, lo, hi) != qget(y, i, af);
			CHECK_MSG(bad == 0, "qrescale case %zu%s: %d differ", c, wide ? " (16 bits)" : "", bad);
		}
		/* maxpool 3x3 stride 2 pad 1 on [2, 3, 9, 8], signed, shift 1: padding never wins */
		int n = 2, c = 3, h = 9, w = 8, oh = 5, ow = 4, sf = QF_SIGNED | wide, bad = 0;
		int32_t lo, hi;
		point_range(sf, &lo, &hi);
		qmaxpool(y, a, sf, n, c, h, w, 3, 3, 2, 2, 1, 1, oh, ow, 1, lo, hi);
		for (int p = 0; p < n * c; p++)
			for (int oy = 0; oy < oh; oy++)
				for (int ox = 0; ox < ow; ox++) {
					int32_t best = INT32_MIN;
					for (int y0 = oy * 2 - 1; y0 < oy * 2 + 2; y0++)
						for (int x0 = ox * 2 - 1; x0 < ox * 2 + 2; x0++)
							if (y0 >= 0 && y0 < h && x0 >= 0 && x0 < w &&
							    qget(a, (size_t)(p * h + y0) * w + x0, sf) > best)
								best = qget(a, (size_t)(p * h + y0) * w + x0, sf);
					bad += qget(y, (size_t)(p * oh + oy) * ow + ox, sf) != requant_exact(best, 1, lo, hi);
				}
		CHECK_MSG(bad == 0, "qmaxpool%s: %d differ", wide ? " (16 bits)" : "", bad);
		free(a), free(b), free(y);
	}
	float f[4];
	uint8_t q[4] = {0x80, 0xff, 0x01, 0x7f};
	qdequant(f, q, 1, QF_SIGNED, 4, 3);
	CHECK(f[0] == -16.0f && f[1] == -0.125f && f[2] == 0.125f && f[3] == 15.875f);
	qdequant(f, q, 1, 0, 4, -2);
	CHECK(f[0] == 512.0f && f[1] == 1020.0f && f[2] == 4.0f && f[3] == 508.0f);
	uint16_t q16[4] = {0x8000, 0xffff, 0x0001, 0x7fff};
	qdequant(f, q16, 1, QF_SIGNED | QF_WIDE, 4, 3);
	CHECK(f[0] == -4096.0f && f[1] == -0.125f && f[2] == 0.125f && f[3] == 4095.875f);
	qdequant(f, q16, 2, QF_WIDE, 2, 1);
	CHECK(f[0] == 16384.0f && f[1] == 0.5f);
}

/* The input's quantisation against quant_act_int, value by value: random values over
 * and beyond the range, halves (the rounding's ties), NaN, infinities; bytes and words,
 * signed and not, lengths that end mid-vector. */
static void test_quantise(void)
{
	enum { N = 4099 };
	float *x = malloc(N * sizeof *x);
	uint8_t *y = malloc(2 * N);
	for (int bits = 8; bits <= 16; bits += 8)
		for (int sgn = 0; sgn <= 1; sgn++) {
			float range[2] = {sgn ? -3.0f : 0.0f, 2.5f};
			qact a = quant_act_params(range, bits, sgn);
			int fmt = (sgn ? QF_SIGNED : 0) | (bits > 8 ? QF_WIDE : 0);
			for (int i = 0; i < N; i++) {
				int kind = uniform(0, 9);
				x[i] = kind == 0   ? (float)uniform(-2 * a.qmax, 2 * a.qmax) / a.scale + 0.5f / a.scale
				       : kind == 1 ? (float)uniform(-2 * a.qmax, 2 * a.qmax) / a.scale - 0.5f / a.scale
						   : ((float)next() / 4294967296.0f - 0.5f) * 12.0f;
			}
			x[5] = NAN, x[17] = INFINITY, x[40] = -INFINITY, x[41] = -0.0f, x[N - 1] = NAN;
			for (size_t n = N - 3; n <= N; n += 3) {
				memset(y, 0xa5, 2 * N);
				qquantise(y, x, n, &a, fmt);
				size_t bad = 0;
				for (size_t i = 0; i < n; i++)
					bad += qget(y, i, fmt) != (int32_t)quant_act_int(x[i], &a);
				/* nothing past n */
				for (size_t i = n * (bits / 8); i < 2 * N; i++)
					bad += y[i] != 0xa5;
				CHECK_MSG(bad == 0, "qquantise %d bits%s n %zu: %zu differ", bits, sgn ? " signed" : "", n, bad);
			}
		}
	free(x), free(y);
}

/* Planes to pixels against qdequant per pixel; the nearest upsampling against the
 * naive loop with layers.h's source index (x2, and ratios that are not). */
static void test_layout(void)
{
	static const int ch[] = {1, 3, 70, 130}, px[] = {1, 15, 16, 17, 100, 4096};
	for (int fmt = 0; fmt < 4; fmt++)
		for (size_t i = 0; i < sizeof ch / sizeof *ch; i++)
			for (size_t j = 0; j < sizeof px / sizeof *px; j++) {
				int c = ch[i], hw = px[j], frac = uniform(-3, 9);
				uint8_t *x = random_ints((size_t)c * hw, fmt);
				float *y = malloc((size_t)c * hw * sizeof *y), *want = malloc((size_t)c * sizeof *want);
				qdequant_planes(y, x, fmt, c, hw, frac);
				size_t bad = 0;
				for (int p = 0; p < hw; p++) {
					qdequant(want, (const uint8_t *)x + (size_t)p * esz(fmt), (size_t)hw, fmt, (size_t)c, frac);
					bad += memcmp(want, y + (size_t)p * c, (size_t)c * sizeof *want) != 0;
				}
				CHECK_MSG(bad == 0, "qdequant_planes fmt %d c %d hw %d: %zu pixels differ", fmt, c, hw, bad);
				free(x), free(y), free(want);
			}
	static const int sizes[][4] = {{5, 37, 10, 74}, {16, 16, 32, 32}, {3, 64, 6, 128}, {3, 5, 7, 11}, {4, 4, 2, 3}};
	for (int wide = 0; wide <= QF_WIDE; wide += QF_WIDE)
		for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
			int nc = 3, h = sizes[k][0], w = sizes[k][1], oh = sizes[k][2], ow = sizes[k][3];
			uint8_t *x = random_ints((size_t)nc * h * w, wide), *y = malloc((size_t)nc * oh * ow * esz(wide));
			qupsample_nearest(y, x, wide, nc, h, w, oh, ow);
			size_t bad = 0;
			for (int p = 0; p < nc; p++)
				for (int oy = 0; oy < oh; oy++)
					for (int ox = 0; ox < ow; ox++) {
						size_t src = ((size_t)p * h + upsample_nearest_src(oy, h, oh)) * w + upsample_nearest_src(ox, w, ow);
						bad += qget(y, ((size_t)p * oh + oy) * ow + ox, wide) != qget(x, src, wide);
					}
			CHECK_MSG(bad == 0, "qupsample_nearest%s %dx%d -> %dx%d: %zu differ", wide ? " (16 bits)" : "", h, w, oh,
				  ow, bad);
			free(x), free(y);
		}
}

/* qadd_bilinear against what forward --quant computes: b dequantised, upsampled by the
 * float kernel, added to a dequantised in f32, then floor(x * 2^fo + 1/2) saturated. */
static void test_add_bilinear(void)
{
	static const int cases[][10] = {/* nc, h, w, oh, ow, fa, fb, fo, a_sgn, b_sgn */
					{5, 4, 6, 8, 12, 4, 4, 4, 1, 1},  {3, 5, 5, 10, 10, 6, 3, 5, 0, 1},
					{2, 1, 1, 2, 2, 3, 5, 2, 1, 0},   {4, 8, 3, 16, 6, 2, 7, 7, 0, 0},
					{2, 3, 7, 12, 28, 5, 5, 3, 1, 1}, {3, 6, 4, 6, 8, 4, 2, 6, 1, 1},
					{2, 9, 9, 18, 18, -2, 1, 0, 1, 1},
					/* rows of whole vectors and a part, both signs */
					{2, 16, 20, 32, 40, 4, 4, 4, 1, 0}, {2, 17, 33, 34, 66, 3, 6, 5, 0, 1}};
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		const int *c = cases[k];
		int nc = c[0], h = c[1], w = c[2], oh = c[3], ow = c[4], fa = c[5], fb = c[6], fo = c[7], sa = c[8],
		    sb = c[9];
		size_t nb = (size_t)nc * h * w, no = (size_t)nc * oh * ow;
		uint8_t *a = malloc(no), *b = malloc(nb), *y = malloc(no);
		float *fbv = malloc(nb * sizeof *fbv), *up = malloc(no * sizeof *up);
		int *idx = malloc(2 * (size_t)(oh + ow) * sizeof *idx);
		int32_t *wt = malloc(2 * (size_t)(oh + ow) * sizeof *wt);
		for (size_t i = 0; i < no; i++)
			a[i] = (uint8_t)next();
		for (size_t i = 0; i < nb; i++) {
			b[i] = (uint8_t)next();
			fbv[i] = ldexpf((float)(sb ? (int8_t)b[i] : b[i]), -fb);
		}
		qtaps rows = {idx, idx + oh, wt, wt + oh}, cols = {idx + 2 * oh, idx + 2 * oh + ow, wt + 2 * oh, wt + 2 * oh + ow};
		CHECK(upsample_bilinear_int_taps(h, oh, 8, rows.i0, rows.i1, rows.w0, rows.w1) == 0);
		CHECK(upsample_bilinear_int_taps(w, ow, 8, cols.i0, cols.i1, cols.w0, cols.w1) == 0);
		int32_t lo = sa || sb ? -128 : 0, hi = lo ? 127 : 255;
		qadd_bilinear(y, a, sa, fa, b, sb, fb, nc, h, w, oh, ow, &rows, &cols, 8, fo, lo, hi);
		upsample_bilinear_forward(up, fbv, 1, nc, h, w, oh, ow);
		int bad = 0;
		for (size_t i = 0; i < no; i++) {
			float x = ldexpf((float)(sa ? (int8_t)a[i] : a[i]), -fa) + up[i];
			double q = floor(ldexp(x, fo) + 0.5);
			int32_t want = q < lo ? lo : q > hi ? hi : (int32_t)q;
			bad += (uint8_t)want != y[i];
		}
		CHECK_MSG(bad == 0, "qadd_bilinear case %zu: %d of %zu differ from the float path", k, bad, no);

		/* 16 bits: the same rule in int64 (the taps' sums, exact integers at frac fb + 16) */
		uint8_t *a16 = random_ints(no, QF_WIDE), *b16 = random_ints(nb, QF_WIDE), *y16 = malloc(2 * no);
		int af = sa | QF_WIDE, bf = sb | QF_WIDE, of = ((sa | sb) & QF_SIGNED) | QF_WIDE;
		point_range(of, &lo, &hi);
		qadd_bilinear(y16, a16, af, fa, b16, bf, fb, nc, h, w, oh, ow, &rows, &cols, 8, fo, lo, hi);
		int fu = fb + 16, f = fa > fu ? fa : fu;
		bad = 0;
		for (int p = 0; p < nc; p++)
			for (int oy = 0; oy < oh; oy++)
				for (int ox = 0; ox < ow; ox++) {
					int64_t upv = 0;
					for (int ty = 0; ty < 2; ty++)
						for (int tx = 0; tx < 2; tx++) {
							int yy = ty ? rows.i1[oy] : rows.i0[oy], xx = tx ? cols.i1[ox] : cols.i0[ox];
							int64_t wgt = (int64_t)(ty ? rows.w1[oy] : rows.w0[oy]) *
								      (tx ? cols.w1[ox] : cols.w0[ox]);
							upv += wgt * qget(b16, ((size_t)p * h + yy) * w + xx, bf);
						}
					size_t i = ((size_t)p * oh + oy) * ow + ox;
					int64_t v = (int64_t)qget(a16, i, af) * ((int64_t)1 << (f - fa)) + upv * ((int64_t)1 << (f - fu));
					bad += requant_exact(v, f - fo, lo, hi) != qget(y16, i, of);
				}
		CHECK_MSG(bad == 0, "qadd_bilinear case %zu (16 bits): %d of %zu differ", k, bad, no);
		free(a16), free(b16), free(y16);
		free(a), free(b), free(y), free(fbv), free(up), free(idx), free(wt);
	}
	/* 3 -> 5 has weights like 0.3: no exact integers, refused */
	int i0[6], i1[6];
	int32_t w0[6], w1[6];
	CHECK(upsample_bilinear_int_taps(3, 5, 8, i0, i1, w0, w1) < 0);
	CHECK(upsample_bilinear_int_taps(3, 6, 2, i0, i1, w0, w1) == 0 && w0[0] == 4 && w1[0] == 0 && w0[1] == 3 &&
	      w1[1] == 1);
}

/* ql2norm against what forward --quant computes: x dequantised, layers.c's L2Norm, the
 * output point's rounding (quant_act). 512 channels in [128, 255] sum to more than 2^24
 * units, beyond an f32 sum's exact range: the kernel's integer sums and the float path's
 * f64 ones must agree there (with the float path summing in f32, the 2M values of that
 * case differ in a few roundings; so do they with the factor one ulp off). One pixel of
 * each case is all zeros (factor 1 / eps, outputs 0). */
static void test_l2norm(void)
{
	static const int cases[][7] = {/* n, c, hw, fx, out range exponent, x_sgn,
							values: 0 any, 1 saturated, 2 upper half */
				       {2, 512, 97, 4, 3, 0, 1}, {1, 512, 130, 6, 2, 0, 0}, {3, 32, 64, 3, 4, 1, 0},
				       {1, 7, 5, -1, 5, 1, 1},   {2, 64, 200, 9, 3, 0, 0}, {4, 512, 1024, 6, 3, 0, 2}};
	for (int wide = 0; wide <= QF_WIDE; wide += QF_WIDE)
		for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
			const int *cs = cases[k];
			int n = cs[0], c = cs[1], hw = cs[2], fx = cs[3] + (wide ? 8 : 0), xf = cs[5] | wide, of = wide;
			int32_t lo, hi;
			point_range(xf, &lo, &hi);
			size_t cnt = (size_t)n * c * hw;
			uint8_t *x = malloc(cnt * esz(xf)), *y = malloc(cnt * esz(xf));
			float *xf32 = malloc(cnt * sizeof *xf32), *yf = malloc(cnt * sizeof *yf),
			      *wt = malloc((size_t)c * sizeof *wt);
			int32_t *want = malloc(cnt * sizeof *want);
			for (size_t i = 0; i < cnt; i++) {
				int32_t v = cs[6] == 1 ? (xf & QF_SIGNED ? (next() & 1 ? hi : lo) : hi)
					    : cs[6] == 2 ? hi / 2 + 1 + (int32_t)(next() % (uint32_t)(hi / 2))
							 : lo + (int32_t)(next() % (uint32_t)(hi - lo + 1));
				if (i % hw == 0 && i / ((size_t)c * hw) == 0)
					v = 0; /* pixel 0 of image 0 */
				qput(x, i, v, xf);
				xf32[i] = ldexpf((float)qget(x, i, xf), -fx);
			}
			for (int ch = 0; ch < c; ch++)
				wt[ch] = 20.0f * (0.5f + (float)next() / 4294967296.0f);
			float range[2] = {0, ldexpf(1.0f, cs[4])};
			qact a = quant_act_params(range, wide ? 16 : 8, 0);
			ql2norm(y, x, xf, fx, wt, 1e-10f, n, c, hw, &a);
			l2norm_forward(yf, xf32, wt, 1e-10f, n, c, hw);
			quant_act(yf, cnt, &a, yf, want);
			size_t bad = 0, zero_pixel = 0;
			for (size_t i = 0; i < cnt; i++)
				bad += want[i] != qget(y, i, of);
			for (int ch = 0; ch < c; ch++)
				zero_pixel += qget(y, (size_t)ch * hw, of) != 0;
			CHECK_MSG(bad == 0, "ql2norm case %zu%s: %zu of %zu differ from the float path", k,
				  wide ? " (16 bits)" : "", bad, cnt);
			CHECK_MSG(zero_pixel == 0, "ql2norm case %zu%s: an all-zero pixel gave %zu non-zero values", k,
				  wide ? " (16 bits)" : "", zero_pixel);
			free(x), free(y), free(xf32), free(yf), free(wt), free(want);
		}
}

int main(void)
{
	omp_set_num_threads(2);
	test_requant();
	test_conv();
	test_elementwise();
	test_quantise();
	test_layout();
	test_add_bilinear();
	test_l2norm();
	return check_done("test_qlayers");
}
