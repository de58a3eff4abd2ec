/* test_conv_group: the grouped 3x3 kernel (CONV_GROUP3X3, conv_group.c) against the
 * naive conv (conv2d_forward_ref / conv2d_backward_ref) on RegNet-like and odd
 * geometries: groups 1-18, group widths 1-24 (in and out may differ), stride 1 and 2,
 * odd sizes, batch 1 and 3, with and without bias and a fused relu, on 1 and 2 threads.
 *
 * Error measure, per tensor: rel = max|got - want| / max(max|want|, 1e-6); outputs
 * within 1e-4, gradients 1e-3, as test_layers holds the other conv paths. The input
 * gradient's buffer starts as NaN (it must be written); the parameter gradients start
 * at a random value (they must accumulate onto it). The forward must equal the
 * GEMM512 kernel's to the bit, and an inference plan's (forward_only); no result may depend on the thread count, and an inf in the input must reach only the weight
 * gradients that see it (the kernel's junk lanes read such values). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "check.h"
#include "core/tensor.h"
#include "kernels/layers.h"

#define TOL_OUT 1e-4
#define TOL_GRAD 1e-3

static unsigned long long rng_state = 0x2545f4914f6cdd1dull;

static float frand(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof(float));
	for (size_t i = 0; i < n; i++)
		p[i] = frand();
	return p;
}

static float *dup(const float *p, size_t n)
{
	float *q = malloc((n ? n : 1) * sizeof(float));
	memcpy(q, p, n * sizeof(float));
	return q;
}

static double rel_diff(const float *got, const float *want, size_t n)
{
	double d = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= d)) /* NaN counts as the worst */
			d = isnan(e) ? INFINITY : e;
		m = fmax(m, fabs(want[i]));
	}
	return d / (m > 1e-6 ? m : 1e-6);
}

typedef struct geo {
	int n, groups, cg, kg, h, w, s;
} geo;

static double worst[4]; /* y, dx, dw, db */

/* One geometry, bias or not, activation, thread count: forward and backward against
 * the reference. Returns 0 if the kernel refused the geometry. */
static int check_one(geo g, int bias, enum conv_act act, int threads)
{
	omp_set_num_threads(threads);
	conv2d_desc d = {.n = g.n, .c = g.groups * g.cg, .h = g.h, .w = g.w, .k = g.groups * g.kg, .kh = 3, .kw = 3,
			 .sh = g.s, .sw = g.s, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = g.groups, .act = act,
			 .algo = CONV_GROUP3X3};
	if (conv2d_init(&d))
		return 0;
	conv2d_desc r = d;
	r.algo = CONV_GEMM;
	CHECK(conv2d_init(&r) == 0);
	size_t xs = (size_t)d.n * d.c * d.h * d.w, ys = (size_t)d.n * d.k * d.oh * d.ow;
	size_t wn = (size_t)d.k * g.cg * 9;
	float *x = rand_buf(xs), *w = rand_buf(wn), *b = bias ? rand_buf(d.k) : NULL, *dy = rand_buf(ys);
	float *dw0 = rand_buf(wn), *db0 = rand_buf(d.k);
	float *y1 = malloc(ys * 4), *dx1 = malloc(xs * 4), *dw1 = dup(dw0, wn), *db1 = dup(db0, d.k);
	CHECK(conv2d_forward_ref(y1, x, w, b, &r) == 0);
	CHECK(conv2d_backward_ref(dx1, dw1, db1, dy, x, w, &r) == 0);

	size_t wss = conv2d_workspace_size(&d);
	float *ws = wss ? aligned_zalloc(wss) : NULL;
	float *y = malloc(ys * 4), *dx = malloc(xs * 4), *dw = dup(dw0, wn), *db = dup(db0, d.k);
	for (size_t i = 0; i < ys; i++)
		y[i] = NAN;
	for (size_t i = 0; i < xs; i++)
		dx[i] = NAN;
	CHECK(conv2d_forward(y, x, w, b, ws, &d) == 0);
	CHECK(conv2d_backward(dx, dw, bias ? db : NULL, dy, x, w, ws, &d) == 0);
	double e[4] = {rel_diff(y, y1, ys), rel_diff(dx, dx1, xs), rel_diff(dw, dw1, wn),
		       bias ? rel_diff(db, db1, d.k) : 0};
	for (int i = 0; i < 4; i++)
		worst[i] = fmax(worst[i], e[i]);
	CHECK_MSG(e[0] <= TOL_OUT && e[1] <= TOL_GRAD && e[2] <= TOL_GRAD && e[3] <= TOL_GRAD,
		  "n%d g%d cg%d kg%d %dx%d s%d bias %d act %d threads %d: rel y %.2e dx %.2e dw %.2e db %.2e",
		  g.n, g.groups, g.cg, g.kg, g.h, g.w, g.s, bias, (int)act, threads, e[0], e[1], e[2], e[3]);

	/* the forward sums each output in the GEMM kernel's order (input channel, ky, kx
	 * from 0, then the bias): the same floats as CONV_GEMM512, so inference outputs
	 * do not change with the algorithm */
	conv2d_desc dg = d;
	dg.algo = CONV_GEMM512;
	if (conv2d_init(&dg) == 0) {
		float *wse = aligned_zalloc(conv2d_workspace_size(&dg)), *ye = malloc(ys * 4);
		CHECK(conv2d_forward(ye, x, w, b, wse, &dg) == 0);
		CHECK_MSG(!memcmp(y, ye, ys * 4), "n%d g%d cg%d kg%d %dx%d s%d: forward differs from gemm512's", g.n,
			  g.groups, g.cg, g.kg, g.h, g.w, g.s);
		free(wse);
		free(ye);
	}

	/* an inference plan's descriptor (forward_only): a smaller workspace, the same
	 * outputs, no backward */
	conv2d_desc fo = d;
	fo.forward_only = 1;
	CHECK(conv2d_init(&fo) == 0 && conv2d_workspace_size(&fo) < conv2d_workspace_size(&d));
	float *wsf = aligned_zalloc(conv2d_workspace_size(&fo)), *yf = malloc(ys * 4);
	CHECK(conv2d_forward(yf, x, w, b, wsf, &fo) == 0);
	CHECK(!memcmp(y, yf, ys * 4));
	CHECK(conv2d_backward(dx, NULL, NULL, dy, x, w, wsf, &fo) < 0);
	free(wsf);
	free(yf);

	/* the weight gradient alone (no dinp, no dbias) is the same sums */
	float *dwa = dup(dw0, wn);
	CHECK(conv2d_backward(NULL, dwa, NULL, dy, x, w, ws, &d) == 0);
	CHECK(memcmp(dwa, dw, wn * sizeof(float)) == 0);
	free(ws);

	/* on the other thread count: every output the same to the bit (the weight
	 * gradient's tasks are whole groups, the others' whole images) */
	omp_set_num_threads(3 - threads);
	conv2d_desc d2 = d;
	CHECK(conv2d_init(&d2) == 0);
	float *ws2 = aligned_zalloc(conv2d_workspace_size(&d2));
	float *y2 = malloc(ys * 4), *dx2 = malloc(xs * 4), *dw2 = dup(dw0, wn), *db2 = dup(db0, d.k);
	CHECK(conv2d_forward(y2, x, w, b, ws2, &d2) == 0);
	CHECK(conv2d_backward(dx2, dw2, bias ? db2 : NULL, dy, x, w, ws2, &d2) == 0);
	CHECK_MSG(!memcmp(y, y2, ys * 4) && !memcmp(dx, dx2, xs * 4) && !memcmp(dw, dw2, wn * 4) &&
			  !memcmp(db, db2, d.k * 4),
		  "n%d g%d %dx%d s%d: results differ between %d and %d threads", g.n, g.groups, g.h, g.w, g.s,
		  threads, 3 - threads);
	free(ws2);
	free(y2);
	free(dx2);
	free(dw2);
	free(db2);
	free(dwa);
	free(x);
	free(w);
	free(b);
	free(dy);
	free(dw0);
	free(db0);
	free(y1);
	free(dx1);
	free(dw1);
	free(db1);
	free(y);
	free(dx);
	free(dw);
	free(db);
	return 1;
}

static void shapes(void)
{
	static const geo geos[] = {
		/* RegNetX-800MF's widths 64, 128, 288 (group width 16), small planes */
		{1, 4, 16, 16, 9, 9, 1},   {3, 8, 16, 16, 6, 7, 2},  {1, 18, 16, 16, 5, 5, 1},
		{3, 18, 16, 16, 10, 10, 2}, {1, 4, 16, 16, 20, 20, 2}, {3, 4, 16, 16, 21, 17, 1},
		/* group widths 8 and 24, in and out different */
		{1, 8, 8, 8, 11, 13, 1},   {3, 4, 24, 24, 7, 9, 2},  {1, 4, 24, 8, 6, 5, 1},
		{3, 8, 8, 24, 9, 4, 2},    {1, 18, 8, 16, 3, 3, 1},  {1, 4, 16, 24, 1, 1, 2},
		/* odd and tiny planes, rows shorter and longer than a vector, widths 1-7 */
		{3, 2, 3, 5, 1, 7, 1},     {1, 3, 7, 1, 17, 1, 2},   {3, 2, 5, 7, 2, 2, 2},
		{1, 1, 16, 16, 33, 31, 1}, {1, 2, 1, 1, 4, 50, 2},   {3, 5, 2, 3, 13, 3, 1},
		/* wider groups (the forced kernel's limit 64; auto stops at 32) */
		{1, 2, 40, 33, 5, 6, 1},   {1, 2, 64, 64, 4, 4, 2},
	};
	int n = 0;
	for (size_t i = 0; i < sizeof geos / sizeof *geos; i++)
		for (int v = 0; v < 4; v++)
			n += check_one(geos[i], v & 1, v & 2 ? CONV_ACT_RELU : CONV_ACT_NONE, 1 + (int)(i + v) % 2);
	printf("group3x3 vs naive conv: %d cases; worst rel y %.2e dx %.2e dw %.2e db %.2e\n", n, worst[0], worst[1],
	       worst[2], worst[3]);
	CHECK(n == 4 * (int)(sizeof geos / sizeof *geos));
}

/* An inf in the input's first column: the reference's weight gradients that see it
 * are inf or NaN, the others finite; the kernel's must be so too. */
static void inf_input(void)
{
	for (int s = 1; s <= 2; s++) {
		conv2d_desc d = {.n = 1, .c = 8, .h = 6, .w = 5, .k = 8, .kh = 3, .kw = 3, .sh = s, .sw = s, .ph = 1,
				 .pw = 1, .dh = 1, .dw = 1, .groups = 2, .algo = CONV_GROUP3X3};
		CHECK(conv2d_init(&d) == 0);
		conv2d_desc r = d;
		r.algo = CONV_GEMM;
		CHECK(conv2d_init(&r) == 0);
		size_t xs = (size_t)d.c * d.h * d.w, ys = (size_t)d.k * d.oh * d.ow, wn = (size_t)d.k * 4 * 9;
		float *x = rand_buf(xs), *dy = rand_buf(ys), *w = rand_buf(wn);
		float *dw = calloc(wn, 4), *dw1 = calloc(wn, 4);
		x[1 * d.h * d.w + 3 * d.w + 0] = INFINITY; /* channel 1, row 3, column 0 */
		float *ws = aligned_zalloc(conv2d_workspace_size(&d));
		CHECK(conv2d_backward(NULL, dw, NULL, dy, x, w, ws, &d) == 0);
		CHECK(conv2d_backward_ref(NULL, dw1, NULL, dy, x, w, &r) == 0);
		int bad = 0, nonfinite = 0;
		for (size_t i = 0; i < wn; i++) {
			nonfinite += !isfinite(dw1[i]);
			if (isfinite(dw1[i]) != isfinite(dw[i]) ||
			    (isfinite(dw1[i]) && fabs(dw[i] - dw1[i]) > TOL_GRAD * (1 + fabs(dw1[i]))))
				bad++;
		}
		CHECK_MSG(bad == 0 && nonfinite > 0, "stride %d: %d of %zu weight gradients differ (%d non-finite)", s,
			  bad, wn, nonfinite);
		free(x);
		free(dy);
		free(w);
		free(dw);
		free(dw1);
		free(ws);
	}
}

/* conv2d_init's choice: RegNet's grouped convs get the kernel, the others keep theirs. */
static void choice(void)
{
	conv2d_desc d = {.n = 8, .c = 288, .h = 20, .w = 20, .k = 288, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1,
			 .pw = 1, .dh = 1, .dw = 1, .groups = 18};
	CHECK(conv2d_init(&d) == 0 && d.algo == CONV_GROUP3X3);
	d = (conv2d_desc){.n = 1, .c = 64, .h = 40, .w = 40, .k = 64, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 1,
			  .pw = 1, .dh = 1, .dw = 1, .groups = 4};
	CHECK(conv2d_init(&d) == 0 && d.algo == CONV_GROUP3X3);
	d.algo = CONV_AUTO;
	d.groups = 1; /* dense: the GEMM */
	CHECK(conv2d_init(&d) == 0 && d.algo != CONV_GROUP3X3);
	d.algo = CONV_AUTO;
	d.groups = 64; /* depthwise */
	CHECK(conv2d_init(&d) == 0 && d.algo == CONV_DW3X3);
	d.algo = CONV_AUTO;
	d.groups = 2; /* groups of 32 */
	CHECK(conv2d_init(&d) == 0 && d.algo == CONV_GROUP3X3);
	d.algo = CONV_AUTO;
	d.c = d.k = 128; /* groups of 64: the GEMM unless forced */
	CHECK(conv2d_init(&d) == 0 && d.algo != CONV_GROUP3X3);
	d.algo = CONV_GROUP3X3;
	CHECK(conv2d_init(&d) == 0);
	d.kh = d.kw = 5;
	d.ph = d.pw = 2;
	CHECK(conv2d_init(&d) == -1); /* not 3x3: refused when forced */
	d.kh = d.kw = 3;
	d.ph = d.pw = 1;
	d.c = d.k = 130; /* groups of 65 */
	CHECK(conv2d_init(&d) == -1);
}

int main(void)
{
	shapes();
	inf_input();
	choice();
	return check_done("test_conv_group");
}
