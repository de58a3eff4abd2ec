/* bench_layers: GFLOP/s of the conv kernels on MobileNetV2-SSD / RegNetX layer shapes
 * (512x512 input, batch 8), forward and backward, beside OpenBLAS's sgemm on a large
 * square GEMM in the same run; plus GB/s of a few memory-bound layers.
 * bench/bench_layers_torch.py times the same shapes in PyTorch.
 *
 * Build and run from the repository root, after `make build/libssd.a`:
 *   cc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Ilib \
 *      $(pkg-config --cflags openblas) bench/bench_layers.c build/libssd.a \
 *      $(pkg-config --libs libzstd libcjson openblas) -lm -o build/bench_layers
 *   build/bench_layers [-n batch] [-t seconds per case] [-a] [-c] [filter]
 * -a: every applicable conv algo, not only the one conv2d_init picks; -c: CPU time
 * (for single-threaded runs on a busy machine, see now()).
 * Backward GFLOP/s count dinp + dweight (twice the forward's FLOPs); dx and dw give the
 * time of each half alone as a multiple of the forward's (1.0 would match its rate). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include "core/err.h"
#include "core/tensor.h"
#include "kernels/layers.h"
#include "kernels/qlayers.h"

/* -c: process CPU time instead of wall time. On a shared machine a single-threaded
 * run (OMP_NUM_THREADS=1) timed so is not charged for the time slices other
 * processes take; with more threads it would count OpenMP's spin-waiting. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now(void)
{
	struct timespec ts;
	clock_gettime(bench_clock, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double min_secs = 1.0;

/* Best time of repeated runs (after one warm-up), at least min_secs in total. */
#define TIME_BEST(best, stmt)                                        \
	do {                                                         \
		stmt;                                                \
		double tb_end_ = now() + min_secs;                   \
		best = 1e30;                                         \
		int tb_reps_ = 0;                                    \
		while (tb_reps_ < 3 || now() < tb_end_) {            \
			double tb_t0_ = now();                       \
			stmt;                                        \
			double tb_dt_ = now() - tb_t0_;              \
			if (tb_dt_ < best)                           \
				best = tb_dt_;                       \
			tb_reps_++;                                  \
		}                                                    \
	} while (0)

static float *buf(size_t n)
{
	float *p = aligned_zalloc(n * sizeof(float) + 64);
	if (!p) {
		fprintf(stderr, "bench_layers: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
	return p;
}

static void bench_sgemm(int n)
{
	float *a = buf((size_t)n * n), *b = buf((size_t)n * n), *c = buf((size_t)n * n);
	double t;
	TIME_BEST(t, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
				 0.0f, c, n));
	printf("%-40s %8.2f ms  %7.1f GFLOP/s\n", "sgemm 2048^3 (OpenBLAS)", t * 1e3, 2.0 * n * n * n / t * 1e-9);
	free(a);
	free(b);
	free(c);
}

/* The machine's fp32 FMA peak: every OpenMP thread runs 12 independent chains of vector
 * FMAs (more than latency x issue width) for min_secs; GFLOP/s of all of them, wall
 * time. The ceiling the conv rates (and bench-model's images/s) are fractions of. */
#if defined(__AVX512F__)
typedef __m512 fvec;
#define FV_LANES 16
#define FV_SET(x) _mm512_set1_ps(x)
#define FV_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FV_SUM(a) _mm512_reduce_add_ps(a)
#else
typedef __m256 fvec;
#define FV_LANES 8
#define FV_SET(x) _mm256_set1_ps(x)
#define FV_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float FV_SUM(__m256 a)
{
	float v[8], s = 0;
	_mm256_storeu_ps(v, a);
	for (int i = 0; i < 8; i++)
		s += v[i];
	return s;
}
#endif

static double fma_peak(void)
{
	double t0 = omp_get_wtime(), flops = 0;
#pragma omp parallel reduction(+ : flops)
	{
		fvec a0 = FV_SET(1), a1 = FV_SET(2), a2 = FV_SET(3), a3 = FV_SET(4), a4 = FV_SET(5), a5 = FV_SET(6);
		fvec a6 = FV_SET(7), a7 = FV_SET(8), a8 = FV_SET(9), a9 = FV_SET(10), a10 = FV_SET(11), a11 = FV_SET(12);
		const fvec m = FV_SET(0.999999f), c = FV_SET(1e-7f);
		long reps = 0;
		while (omp_get_wtime() - t0 < min_secs) {
			for (int i = 0; i < 65536; i++) {
				a0 = FV_FMA(a0, m, c), a1 = FV_FMA(a1, m, c), a2 = FV_FMA(a2, m, c), a3 = FV_FMA(a3, m, c);
				a4 = FV_FMA(a4, m, c), a5 = FV_FMA(a5, m, c), a6 = FV_FMA(a6, m, c), a7 = FV_FMA(a7, m, c);
				a8 = FV_FMA(a8, m, c), a9 = FV_FMA(a9, m, c), a10 = FV_FMA(a10, m, c), a11 = FV_FMA(a11, m, c);
			}
			reps += 65536;
		}
		float keep = FV_SUM(a0) + FV_SUM(a1) + FV_SUM(a2) + FV_SUM(a3) + FV_SUM(a4) + FV_SUM(a5) + FV_SUM(a6) +
			     FV_SUM(a7) + FV_SUM(a8) + FV_SUM(a9) + FV_SUM(a10) + FV_SUM(a11);
		if (keep == 12345.0f) /* never: keeps the chains alive */
			reps++;
		flops = 2.0 * 12 * FV_LANES * reps;
	}
	return flops / (omp_get_wtime() - t0) * 1e-9;
}

static const char *algo_names[] = {"auto", "gemm", "gemm512", "dw3x3", "dw_direct", "group3x3"};

static double max_rel(const float *a, const float *b, size_t n)
{
	double d = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)a[i] - b[i]);
		if (!(e <= d))
			d = isnan(e) ? INFINITY : e;
		m = fabs(b[i]) > m ? fabs(b[i]) : m;
	}
	return d / (m > 1e-30 ? m : 1e-30);
}

/* The benchmark's shapes are larger than the unit tests': check the timed algo
 * against a second one (OpenBLAS for the GEMM algos, the direct loops for depthwise)
 * on them (the grouped 3x3 against our GEMM). Returns a note for the output line,
 * empty when they agree to 1e-5. */
static const char *check_conv(conv2d_desc d, const float *x, const float *w, const float *b,
			      const float *dy, float *y, float *dx, float *dw, float *db, float *ws)
{
	static char note[96];
	conv2d_desc r = d;
	r.algo = d.algo == CONV_DW3X3 ? CONV_DW_DIRECT : d.algo == CONV_GEMM512 ? CONV_GEMM : CONV_AUTO;
	if (d.algo == CONV_GROUP3X3)
		r.algo = CONV_GEMM512;
	note[0] = 0;
	if (r.algo == CONV_AUTO || conv2d_init(&r))
		return note;
	size_t xs = (size_t)d.n * d.c * d.h * d.w, ys = (size_t)d.n * d.k * d.oh * d.ow;
	size_t wsz = (size_t)d.k * (d.c / d.groups) * d.kh * d.kw, rwss = conv2d_workspace_size(&r);
	float *y2 = buf(ys), *dx2 = buf(xs), *dw2 = buf(wsz), *db2 = buf(d.k);
	float *rws = rwss ? buf(rwss / sizeof(float)) : NULL;
	memset(dw, 0, wsz * sizeof(float));
	memset(db, 0, d.k * sizeof(float));
	memset(dw2, 0, wsz * sizeof(float));
	memset(db2, 0, d.k * sizeof(float));
	conv2d_forward(y, x, w, b, ws, &d);
	conv2d_backward(dx, dw, db, dy, x, w, ws, &d);
	conv2d_forward(y2, x, w, b, rws, &r);
	conv2d_backward(dx2, dw2, db2, dy, x, w, rws, &r);
	double e[4] = {max_rel(y, y2, ys), max_rel(dx, dx2, xs), max_rel(dw, dw2, wsz), max_rel(db, db2, d.k)};
	if (e[0] > 1e-5 || e[1] > 1e-5 || e[2] > 1e-5 || e[3] > 1e-5)
		snprintf(note, sizeof note, "  DIFFERS from %s: y %.1e dx %.1e dw %.1e db %.1e",
			 algo_names[r.algo], e[0], e[1], e[2], e[3]);
	free(y2);
	free(dx2);
	free(dw2);
	free(db2);
	free(rws);
	return note;
}

/* The same shape on integers (qconv_forward, forward --int8's kernel): uint8 input,
 * int8 weights, one shift. Returns the best time, or -1 when qconv refuses the shape. */
static double bench_qconv(const conv2d_desc *f)
{
	qconv d = {.n = f->n, .c = f->c, .h = f->h, .w = f->w, .k = f->k, .kh = f->kh, .kw = f->kw, .sh = f->sh,
		   .sw = f->sw, .ph = f->ph, .pw = f->pw, .dh = f->dh, .dw = f->dw, .groups = f->groups};
	d.r = d.c / d.groups * d.kh * d.kw;
	d.rp = (d.r + 3) & ~3;
	d.shift = 8;
	d.lo = 0;
	d.hi = 255;
	int8_t *w = aligned_zalloc((size_t)d.k * d.rp);
	int64_t *bias = aligned_zalloc((size_t)d.k * sizeof *bias), *gb = aligned_zalloc((size_t)d.k * sizeof *gb);
	for (size_t i = 0; i < (size_t)d.k * d.rp; i++)
		w[i] = (int8_t)((i * 2654435761u) >> 24) / 4;
	d.weight = w;
	d.bias = bias;
	/* grouped convs keep their weights rearranged by tap too (qexec allocates the same) */
	int32_t *taps = d.groups > 1 ? aligned_zalloc((size_t)d.k * d.rp) : NULL;
	d.tap_weight = taps;
	double t = -1;
	if (w && bias && gb && (d.groups == 1 || taps) && !qconv_init(&d, gb)) {
		size_t xs = (size_t)d.n * d.c * d.h * d.w, ys = (size_t)d.n * d.k * d.oh * d.ow;
		uint8_t *x = aligned_zalloc(xs), *y = aligned_zalloc(ys), *ws = aligned_zalloc(qconv_workspace_size(&d));
		for (size_t i = 0; x && i < xs; i++)
			x[i] = (uint8_t)((i * 2654435761u) >> 24);
		if (x && y && ws)
			TIME_BEST(t, qconv_forward(y, x, ws, &d));
		free(x);
		free(y);
		free(ws);
	}
	free(w);
	free(taps);
	free(bias);
	free(gb);
	return t;
}

static void bench_conv(const char *name, const char *filter, conv2d_desc d)
{
	if (filter && !strstr(name, filter))
		return;
	if (conv2d_init(&d)) {
		fprintf(stderr, "%s: %s\n", name, err_msg());
		return;
	}
	size_t xs = (size_t)d.n * d.c * d.h * d.w, ys = (size_t)d.n * d.k * d.oh * d.ow;
	size_t wsz = (size_t)d.k * (d.c / d.groups) * d.kh * d.kw;
	float *x = buf(xs), *w = buf(wsz), *b = buf(d.k), *y = buf(ys), *dy = buf(ys);
	float *dx = buf(xs), *dw = buf(wsz), *db = buf(d.k);
	size_t wss = conv2d_workspace_size(&d);
	float *ws = wss ? buf(wss / sizeof(float)) : NULL;
	double flops = 2.0 * ys * (d.c / d.groups) * d.kh * d.kw, tf, tb, tx, tw;
	TIME_BEST(tf, conv2d_forward(y, x, w, b, ws, &d));
	TIME_BEST(tb, conv2d_backward(dx, dw, db, dy, x, w, ws, &d));
	/* the backward's two halves alone: which one loses against the forward */
	TIME_BEST(tx, conv2d_backward(dx, NULL, NULL, dy, x, w, ws, &d));
	TIME_BEST(tw, conv2d_backward(NULL, dw, db, dy, x, w, ws, &d));
	double tq = bench_qconv(&d);
	char int8[48] = "int8      n/a        ";
	if (tq > 0)
		snprintf(int8, sizeof int8, "int8 %8.2f ms %5.2fx", tq * 1e3, tf / tq);
	printf("%-40s fwd %8.2f ms %7.1f GFLOP/s   bwd %8.2f ms %7.1f GFLOP/s (dx %.2fx dw %.2fx fwd)   %s  [%s]%s\n",
	       name, tf * 1e3, flops / tf * 1e-9, tb * 1e3, 2 * flops / tb * 1e-9, tx / tf, tw / tf, int8,
	       algo_names[d.algo], check_conv(d, x, w, b, dy, y, dx, dw, db, ws));
	free(x);
	free(w);
	free(b);
	free(y);
	free(dy);
	free(dx);
	free(dw);
	free(db);
	free(ws);
}

static void conv_all_algos(const char *name, const char *filter, conv2d_desc d)
{
	char nm[96];
	for (int a = CONV_AUTO; a <= CONV_GROUP3X3; a++) {
		conv2d_desc t = d;
		t.algo = a;
		if (conv2d_init(&t))
			continue;
		if (a == CONV_AUTO)
			snprintf(nm, sizeof nm, "%s", name);
		else
			snprintf(nm, sizeof nm, "  %s as %s", name, algo_names[a]);
		d.algo = a;
		bench_conv(nm, filter, d);
	}
}

static void bench_mem(const char *filter, int n)
{
	if (filter && !strstr("relu6 bn", filter))
		return;
	int c = 192, hw = 128 * 128;
	size_t sz = (size_t)n * c * hw;
	float *x = buf(sz), *y = buf(sz), *dy = buf(sz), *dx = buf(sz);
	float *g = buf(c), *bb = buf(c), *mean = buf(c), *rstd = buf(c), *var = buf(c), *dg = buf(c), *dbb = buf(c);
	double t;
	char nm[64];
#define MEM_LINE(what, bytes)                                                                      \
	do {                                                                                       \
		snprintf(nm, sizeof nm, "%s %dx%dx128x128", what, n, c);                           \
		printf("%-40s %8.2f ms  %7.1f GB/s\n", nm, t * 1e3, (bytes) / t * 1e-9);           \
	} while (0)
	TIME_BEST(t, memcpy(y, x, sz * sizeof(float)));
	MEM_LINE("memcpy (reference)", 2.0 * sz * 4);
	TIME_BEST(t, relu6_forward(y, x, sz));
	MEM_LINE("relu6 fwd", 2.0 * sz * 4);
	TIME_BEST(t, relu6_backward(dx, dy, x, sz));
	MEM_LINE("relu6 bwd", 3.0 * sz * 4);
	/* GB/s of the minimum traffic: BN reads x twice (moments, normalise) and writes y;
	 * the backward reads dy and x twice and writes dx */
	TIME_BEST(t, batchnorm2d_forward_train(y, mean, rstd, var, x, g, bb, 1e-5f, n, c, hw));
	MEM_LINE("bn train fwd", 3.0 * sz * 4);
	TIME_BEST(t, batchnorm2d_backward_train(dx, dg, dbb, dy, x, mean, rstd, g, n, c, hw));
	MEM_LINE("bn train bwd", 5.0 * sz * 4);
#undef MEM_LINE
	free(x);
	free(y);
	free(dy);
	free(dx);
	free(g);
	free(bb);
	free(mean);
	free(rstd);
	free(var);
	free(dg);
	free(dbb);
}

int main(int argc, char **argv)
{
	int n = 8, all = 0;
	const char *filter = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-t") && i + 1 < argc)
			min_secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "-a"))
			all = 1;
		else if (!strcmp(argv[i], "-c"))
			bench_clock = CLOCK_PROCESS_CPUTIME_ID;
		else
			filter = argv[i];
	}
	printf("threads: OpenMP %d, OpenBLAS %d; batch %d\n", omp_get_max_threads(), openblas_get_num_threads(), n);
	if (filter && !strcmp(filter, "peak")) { /* bench-model's ceiling, alone */
		printf("fma peak: %.1f GFLOP/s (%d threads)\n", fma_peak(), omp_get_max_threads());
		return 0;
	}
	if (!filter || strstr("sgemm", filter)) {
		printf("%-40s %7.1f GFLOP/s (%d threads)\n", "fp32 FMA peak", fma_peak(), omp_get_max_threads());
		bench_sgemm(2048);
	}
	struct {
		const char *name;
		conv2d_desc d;
	} cases[] = {
		{"stem 3x3 s2 3->32 @512", {.c = 3, .h = 512, .w = 512, .k = 32, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 1, .pw = 1, .groups = 1}},
		{"pw 1x1 32->192 @128", {.c = 32, .h = 128, .w = 128, .k = 192, .kh = 1, .kw = 1, .sh = 1, .sw = 1, .groups = 1}},
		{"pw 1x1 192->32 @128", {.c = 192, .h = 128, .w = 128, .k = 32, .kh = 1, .kw = 1, .sh = 1, .sw = 1, .groups = 1}},
		{"pw 1x1 96->576 @32", {.c = 96, .h = 32, .w = 32, .k = 576, .kh = 1, .kw = 1, .sh = 1, .sw = 1, .groups = 1}},
		{"pw 1x1 576->96 @32", {.c = 576, .h = 32, .w = 32, .k = 96, .kh = 1, .kw = 1, .sh = 1, .sw = 1, .groups = 1}},
		{"pw 1x1 960->160 @16", {.c = 960, .h = 16, .w = 16, .k = 160, .kh = 1, .kw = 1, .sh = 1, .sw = 1, .groups = 1}},
		{"dw 3x3 s1 192 @128", {.c = 192, .h = 128, .w = 128, .k = 192, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .groups = 192}},
		{"dw 3x3 s2 192 @128", {.c = 192, .h = 128, .w = 128, .k = 192, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 1, .pw = 1, .groups = 192}},
		{"dw 3x3 s2 96 @256", {.c = 96, .h = 256, .w = 256, .k = 96, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 1, .pw = 1, .groups = 96}},
		{"regnet 3x3 g8 128 @64", {.c = 128, .h = 64, .w = 64, .k = 128, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .groups = 8}},
		{"fpn 3x3 256->256 @32", {.c = 256, .h = 32, .w = 32, .k = 256, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .groups = 1}},
		{"head 3x3 s1 96->24 @64", {.c = 96, .h = 64, .w = 64, .k = 24, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .groups = 1}},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		conv2d_desc d = cases[i].d;
		d.n = n;
		d.dh = d.dw = 1;
		if (all)
			conv_all_algos(cases[i].name, filter, d);
		else
			bench_conv(cases[i].name, filter, d);
	}
	bench_mem(filter, n);
	return 0;
}
