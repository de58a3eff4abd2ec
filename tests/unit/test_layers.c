/* test_layers: every layer kernel against PyTorch fixtures (the .tns files in tests/fixtures/layers/,
 * made by tests/gen_layer_fixtures.py), and the fast conv paths against the naive
 * conv on many small odd geometries.
 *
 * Error measure, per tensor: rel = max|got - want| / max(max|want|, 1e-6).
 * Tolerances: outputs 1e-4, gradients 1e-3 (fp32). Bilinear upsample repeats torch's
 * arithmetic, so it is held to max|got - want| <= 1e-6 * max(1, max|want|), and its fast
 * paths to the bit against a naive transcript of torch's loops.
 * Backward contracts checked too: the input gradient is overwritten (its buffer is
 * filled with NaN first) and parameter gradients accumulate (they start at the
 * reference value, so the result must be twice it). Run from the repository root. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "kernels/layers.h"
#include "core/stream.h"
#include "core/tensor.h"

#define FIXDIR "tests/fixtures/layers/"
#define TOL_OUT 1e-4
#define TOL_GRAD 1e-3
#define TOL_BILINEAR 1e-6

static const record *cur; /* the fixture record being tested */
static const char *cur_case;
static double case_worst;

static double rel_diff(const float *got, const float *want, size_t n, double *maxabs)
{
	double d = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= d)) /* NaN counts as the worst */
			d = isnan(e) ? INFINITY : e;
		if (fabs(want[i]) > m)
			m = fabs(want[i]);
	}
	if (maxabs)
		*maxabs = d;
	return d / (m > 1e-6 ? m : 1e-6);
}

static void cmp(const char *what, const float *got, const float *want, size_t n, double tol)
{
	double abs, rel = rel_diff(got, want, n, &abs);
	printf("  %-28s %-14s max abs %.3e  rel %.3e\n", cur_case, what, abs, rel);
	if (rel > case_worst)
		case_worst = rel;
	CHECK_MSG(rel <= tol, "%s %s: rel diff %.3e > %.1e", cur_case, what, rel, tol);
}

/* For kernels that repeat torch's arithmetic: err = max|got - want| / max(1, max|want|). */
static void cmp_tight(const char *what, const float *got, const float *want, size_t n, double tol)
{
	double abs, m = 0;
	rel_diff(got, want, n, &abs);
	for (size_t i = 0; i < n; i++)
		m = fmax(m, fabs(want[i]));
	double err = abs / fmax(1.0, m);
	printf("  %-28s %-14s max abs %.3e  err %.3e\n", cur_case, what, abs, err);
	if (err > case_worst)
		case_worst = err;
	CHECK_MSG(err <= tol, "%s %s: max|diff| %.3e > %.1e * max(1, max|torch|)", cur_case, what, abs, tol);
}

/* want = scale * reference tensor */
static void cmp_scaled(const char *what, const float *got, const char *ref, float scale, double tol)
{
	const tensor *t = record_find(cur, ref);
	size_t n = tensor_numel(t);
	float *w = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		w[i] = scale * ((const float *)t->data)[i];
	cmp(what, got, w, n, tol);
	free(w);
}

static const float *T(const char *name)
{
	const tensor *t = record_expect(cur, name, DT_F32, -1);
	if (!t) {
		fprintf(stderr, "%s: %s\n", cur_case, err_msg());
		exit(1);
	}
	return t->data;
}

static const tensor *TT(const char *name)
{
	T(name);
	return record_find(cur, name);
}

static size_t N(const char *name)
{
	return tensor_numel(TT(name));
}

static float *nan_buf(size_t n)
{
	float *p = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		p[i] = NAN;
	return p;
}

static float *copy_of(const char *name)
{
	size_t n = N(name);
	float *p = malloc(n * sizeof(float));
	memcpy(p, T(name), n * sizeof(float));
	return p;
}

static int M(const char *key)
{
	return (int)meta_num(cur, key, -1);
}

/* ---------------------------------------------------------------- conv */

static const char *algo_name(enum conv_algo a)
{
	static const char *names[] = {"auto", "gemm", "gemm512", "dw3x3", "dw_direct", "group3x3"};
	return names[a];
}

static void fixture_conv(void)
{
	const tensor *x = TT("x"), *w = TT("w");
	conv2d_desc d0 = {
		.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
		.k = w->shape[0], .kh = M("kh"), .kw = M("kw"), .sh = M("sh"), .sw = M("sw"),
		.ph = M("ph"), .pw = M("pw"), .dh = M("dh"), .dw = M("dw"), .groups = M("groups"),
	};
	int bias = M("bias");
	const float *b = bias ? T("b") : NULL;
	enum conv_algo algos[] = {CONV_AUTO, CONV_GEMM, CONV_GEMM512, CONV_DW3X3, CONV_DW_DIRECT, CONV_GROUP3X3};
	for (int ai = -1; ai < (int)(sizeof algos / sizeof *algos); ai++) {
		conv2d_desc d = d0;
		char what[64];
		if (ai >= 0) {
			d.algo = algos[ai];
			if (conv2d_init(&d)) /* not applicable to this geometry */
				continue;
		} else {
			CHECK(conv2d_init(&d) == 0);
		}
		size_t ysz = N("y"), xsz = N("x");
		CHECK(ysz == (size_t)d.n * d.k * d.oh * d.ow);
		float *y = nan_buf(ysz), *dx = nan_buf(xsz), *dw = copy_of("dw");
		float *db = bias ? copy_of("db") : NULL;
		const char *an = ai < 0 ? "ref" : algo_name(ai == 0 ? CONV_AUTO : d.algo);
		if (ai < 0) {
			CHECK(conv2d_forward_ref(y, T("x"), T("w"), b, &d) == 0);
			CHECK(conv2d_backward_ref(dx, dw, db, T("dy"), T("x"), T("w"), &d) == 0);
		} else {
			size_t wsz = conv2d_workspace_size(&d);
			float *ws = wsz ? aligned_zalloc(wsz) : NULL;
			CHECK(conv2d_forward(y, T("x"), T("w"), b, ws, &d) == 0);
			CHECK(conv2d_backward(dx, dw, db, T("dy"), T("x"), T("w"), ws, &d) == 0);
			free(ws);
		}
		snprintf(what, sizeof what, "%s y", an);
		cmp(what, y, T("y"), ysz, TOL_OUT);
		snprintf(what, sizeof what, "%s dx", an);
		cmp(what, dx, T("dx"), xsz, TOL_GRAD);
		snprintf(what, sizeof what, "%s dw", an);
		cmp_scaled(what, dw, "dw", 2.0f, TOL_GRAD);
		if (bias) {
			snprintf(what, sizeof what, "%s db", an);
			cmp_scaled(what, db, "db", 2.0f, TOL_GRAD);
		}
		free(y);
		free(dx);
		free(dw);
		free(db);
	}
	/* the fused activations: every algo's output is the reference's through relu / relu6 */
	size_t ysz = N("y");
	float *ya = malloc(ysz * sizeof(float));
	for (int act = CONV_ACT_RELU; act <= CONV_ACT_RELU6; act++) {
		for (size_t i = 0; i < ysz; i++) {
			float v = T("y")[i] < 0 ? 0.0f : T("y")[i];
			ya[i] = act == CONV_ACT_RELU6 && v > 6 ? 6.0f : v;
		}
		for (int ai = -1; ai < (int)(sizeof algos / sizeof *algos); ai++) {
			conv2d_desc d = d0;
			d.act = act;
			if (ai >= 0)
				d.algo = algos[ai];
			if (conv2d_init(&d))
				continue;
			size_t wsz = conv2d_workspace_size(&d);
			float *ws = wsz ? aligned_zalloc(wsz) : NULL, *y = nan_buf(ysz);
			CHECK((ai < 0 ? conv2d_forward_ref(y, T("x"), T("w"), b, &d)
				      : conv2d_forward(y, T("x"), T("w"), b, ws, &d)) == 0);
			char what[64];
			snprintf(what, sizeof what, "%s y %s", ai < 0 ? "ref" : algo_name(d.algo),
				 act == CONV_ACT_RELU ? "relu" : "relu6");
			cmp(what, y, ya, ysz, TOL_OUT);
			free(y);
			free(ws);
		}
	}
	free(ya);
	/* skipping dinp and the bias gradient leaves the weight gradient right */
	conv2d_desc d = d0;
	CHECK(conv2d_init(&d) == 0);
	size_t wsz = conv2d_workspace_size(&d);
	float *ws = wsz ? aligned_zalloc(wsz) : NULL;
	float *dw = calloc(N("dw"), sizeof(float));
	CHECK(conv2d_backward(NULL, dw, NULL, T("dy"), T("x"), T("w"), ws, &d) == 0);
	cmp("dw (no dx, db)", dw, T("dw"), N("dw"), TOL_GRAD);
	free(dw);
	free(ws);
}

/* ---------------------------------------------------------------- other layers */

static void fixture_bn(void)
{
	const tensor *x = TT("x");
	int n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
	float eps = (float)meta_num(cur, "eps", 1e-5);
	size_t sz = N("x");
	float *y = nan_buf(sz), *dx = nan_buf(sz), *dw = copy_of("dw"), *db = copy_of("db");
	if (M("train")) {
		float mean[64], rstd[64], var[64];
		CHECK(c <= 64);
		CHECK(batchnorm2d_forward_train(y, mean, rstd, var, T("x"), T("w"), T("b"), eps, n, c, hw) == 0);
		cmp("y", y, T("y"), sz, TOL_OUT);
		cmp("batch_mean", mean, T("batch_mean"), c, TOL_OUT);
		cmp("batch_var", var, T("batch_var"), c, TOL_OUT);
		batchnorm2d_backward_train(dx, dw, db, T("dy"), T("x"), mean, rstd, T("w"), n, c, hw);
	} else {
		batchnorm2d_forward_eval(y, T("x"), T("w"), T("b"), T("running_mean"), T("running_var"), eps, n, c, hw);
		cmp("y", y, T("y"), sz, TOL_OUT);
		batchnorm2d_backward_eval(dx, dw, db, T("dy"), T("x"), T("w"), T("running_mean"), T("running_var"),
					  eps, n, c, hw);
	}
	cmp("dx", dx, T("dx"), sz, TOL_GRAD);
	cmp_scaled("dw", dw, "dw", 2.0f, TOL_GRAD);
	cmp_scaled("db", db, "db", 2.0f, TOL_GRAD);
	free(y);
	free(dx);
	free(dw);
	free(db);
}

static void fixture_act(int six)
{
	size_t sz = N("x");
	float *y = nan_buf(sz), *dx = nan_buf(sz);
	(six ? relu6_forward : relu_forward)(y, T("x"), sz);
	cmp("y", y, T("y"), sz, TOL_OUT);
	(six ? relu6_backward : relu_backward)(dx, T("dy"), T("x"), sz);
	cmp("dx (from x)", dx, T("dx"), sz, TOL_GRAD);
	(six ? relu6_backward : relu_backward)(dx, T("dy"), y, sz);
	cmp("dx (from y)", dx, T("dx"), sz, TOL_GRAD);
	/* in place: out == inp */
	memcpy(y, T("x"), sz * sizeof(float));
	(six ? relu6_forward : relu_forward)(y, y, sz);
	cmp("y (in place)", y, T("y"), sz, TOL_OUT);
	free(y);
	free(dx);
}

static void fixture_add(void)
{
	size_t sz = N("y");
	float *y = nan_buf(sz), *da = nan_buf(sz), *db = nan_buf(sz);
	add_forward(y, T("a"), T("b"), sz);
	cmp("y", y, T("y"), sz, TOL_OUT);
	add_backward(da, db, T("dy"), sz);
	cmp("da", da, T("da"), sz, TOL_GRAD);
	cmp("db", db, T("db"), sz, TOL_GRAD);
	free(y);
	free(da);
	free(db);
}

static void fixture_concat(void)
{
	int ninp = M("ninp");
	const float *inps[8];
	float *dinps[8];
	int chans[8];
	CHECK(ninp >= 1 && ninp <= 8);
	const tensor *y = TT("y");
	int n = y->shape[0], hw = y->shape[2] * y->shape[3];
	for (int i = 0; i < ninp; i++) {
		char nm[16];
		snprintf(nm, sizeof nm, "x%d", i);
		inps[i] = T(nm);
		chans[i] = TT(nm)->shape[1];
		dinps[i] = nan_buf(N(nm));
	}
	float *out = nan_buf(N("y"));
	concat_forward(out, inps, chans, ninp, n, hw);
	cmp("y", out, T("y"), N("y"), TOL_OUT);
	concat_backward(dinps, T("dy"), chans, ninp, n, hw);
	for (int i = 0; i < ninp; i++) {
		char nm[16], dn[16];
		snprintf(nm, sizeof nm, "x%d", i);
		snprintf(dn, sizeof dn, "dx%d", i);
		cmp(dn, dinps[i], T(dn), N(nm), TOL_GRAD);
		free(dinps[i]);
	}
	free(out);
}

typedef void (*upsample_fn)(float *, const float *, int, int, int, int, int, int);
typedef void (*cmp_fn)(const char *, const float *, const float *, size_t, double);

/* An upsampling fixture through its forward and backward kernels, compared by cmp_y
 * and cmp_dx at their tolerances. */
static void check_upsample(upsample_fn fwd, upsample_fn bwd, cmp_fn cmp_y, double tol_y, cmp_fn cmp_dx,
			   double tol_dx)
{
	const tensor *x = TT("x");
	int n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
	int oh = M("oh"), ow = M("ow");
	float *y = nan_buf(N("y")), *dx = nan_buf(N("x"));
	CHECK(N("y") == (size_t)n * c * oh * ow);
	fwd(y, T("x"), n, c, h, w, oh, ow);
	cmp_y("y", y, T("y"), N("y"), tol_y);
	bwd(dx, T("dy"), n, c, h, w, oh, ow);
	cmp_dx("dx", dx, T("dx"), N("x"), tol_dx);
	free(y);
	free(dx);
}

static void fixture_upsample(void)
{
	check_upsample(upsample_nearest_forward, upsample_nearest_backward, cmp, TOL_OUT, cmp, TOL_GRAD);
}

static void fixture_upsample_bilinear(void)
{
	check_upsample(upsample_bilinear_forward, upsample_bilinear_backward, cmp_tight, TOL_BILINEAR, cmp_tight,
		       TOL_BILINEAR);
}

static void fixture_maxpool(void)
{
	const tensor *x = TT("x");
	pool2d_desc d = {
		.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
		.kh = M("kh"), .kw = M("kw"), .sh = M("sh"), .sw = M("sw"), .ph = M("ph"), .pw = M("pw"),
		.ceil_mode = M("ceil_mode"),
	};
	CHECK(maxpool2d_init(&d) == 0);
	CHECK(N("y") == (size_t)d.n * d.c * d.oh * d.ow);
	float *y = nan_buf(N("y")), *dx = nan_buf(N("x"));
	int32_t *am = malloc(N("y") * sizeof(int32_t));
	maxpool2d_forward(y, am, T("x"), &d);
	cmp("y", y, T("y"), N("y"), TOL_OUT);
	maxpool2d_backward(dx, T("dy"), am, &d);
	cmp("dx", dx, T("dx"), N("x"), TOL_GRAD);
	free(y);
	free(dx);
	free(am);
}

static void fixture_l2norm(void)
{
	const tensor *x = TT("x");
	int n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
	float eps = (float)meta_num(cur, "eps", 1e-10);
	float *y = nan_buf(N("x")), *dx = nan_buf(N("x")), *dw = copy_of("dw");
	l2norm_forward(y, T("x"), T("w"), eps, n, c, hw);
	cmp("y", y, T("y"), N("y"), TOL_OUT);
	l2norm_backward(dx, dw, T("dy"), T("x"), T("w"), eps, n, c, hw);
	cmp("dx", dx, T("dx"), N("x"), TOL_GRAD);
	cmp_scaled("dw", dw, "dw", 2.0f, TOL_GRAD);
	free(y);
	free(dx);
	free(dw);
}

static void fixture_gap(void)
{
	const tensor *x = TT("x");
	int n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
	float *y = nan_buf(N("y")), *dx = nan_buf(N("x"));
	avgpool_global_forward(y, T("x"), n, c, hw);
	cmp("y", y, T("y"), N("y"), TOL_OUT);
	avgpool_global_backward(dx, T("dy"), n, c, hw);
	cmp("dx", dx, T("dx"), N("x"), TOL_GRAD);
	free(y);
	free(dx);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_fixtures(void)
{
	DIR *dir = opendir(FIXDIR);
	CHECK_MSG(dir != NULL, "cannot open " FIXDIR " (run from the repository root)");
	if (!dir)
		return;
	char *names[256];
	int nn = 0;
	struct dirent *e;
	while ((e = readdir(dir)) && nn < 256) {
		size_t l = strlen(e->d_name);
		if (l > 4 && !strcmp(e->d_name + l - 4, ".tns"))
			names[nn++] = strdup(e->d_name);
	}
	closedir(dir);
	qsort(names, nn, sizeof *names, by_name);
	CHECK_MSG(nn >= 30, "only %d fixtures in " FIXDIR, nn);
	char summary[256][96];
	for (int i = 0; i < nn; i++) {
		char path[512];
		snprintf(path, sizeof path, FIXDIR "%s", names[i]);
		stream_reader *s = stream_open_read(path);
		record *r = NULL;
		CHECK_MSG(s && stream_read(s, &r) == 1, "%s: %s", path, err_msg());
		if (!r) {
			stream_close_read(s);
			continue;
		}
		cur = r;
		cur_case = meta_str(r, "case", names[i]);
		case_worst = 0;
		const char *op = meta_str(r, "op", "");
		if (!strcmp(op, "conv2d"))
			fixture_conv();
		else if (!strcmp(op, "batchnorm2d"))
			fixture_bn();
		else if (!strcmp(op, "relu"))
			fixture_act(0);
		else if (!strcmp(op, "relu6"))
			fixture_act(1);
		else if (!strcmp(op, "add"))
			fixture_add();
		else if (!strcmp(op, "concat"))
			fixture_concat();
		else if (!strcmp(op, "upsample_nearest"))
			fixture_upsample();
		else if (!strcmp(op, "upsample_bilinear"))
			fixture_upsample_bilinear();
		else if (!strcmp(op, "maxpool2d"))
			fixture_maxpool();
		else if (!strcmp(op, "l2norm"))
			fixture_l2norm();
		else if (!strcmp(op, "avgpool_global"))
			fixture_gap();
		else
			CHECK_MSG(0, "%s: unknown op '%s'", path, op);
		snprintf(summary[i], sizeof summary[i], "%-28s worst rel %.2e", cur_case, case_worst);
		record_free(r);
		stream_close_read(s);
	}
	printf("fixture summary (rel = max|diff| / max|torch|):\n");
	for (int i = 0; i < nn; i++) {
		printf("  %s\n", summary[i]);
		free(names[i]);
	}
}

/* ---------------------------------------------------------------- fast vs naive conv */

static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static int irand(int n)
{
	frand();
	return (int)((rng_state >> 33) % (unsigned)n);
}

static float *rand_buf(size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof(float));
	for (size_t i = 0; i < n; i++)
		p[i] = frand();
	return p;
}

static double worst[6][4]; /* algo x (y, dx, dw, db) */

/* Every applicable fast algo against the naive conv on one geometry; 0 if the
 * geometry is invalid. */
static int fast_vs_naive(conv2d_desc d0, int bias)
{
	conv2d_desc r = d0;
	if (conv2d_init(&r)) /* invalid geometry: must be refused, not crash */
		return 0;
	size_t xs = (size_t)r.n * r.c * r.h * r.w, ys = (size_t)r.n * r.k * r.oh * r.ow;
	size_t wsz = (size_t)r.k * (r.c / r.groups) * r.kh * r.kw;
	float *x = rand_buf(xs), *w = rand_buf(wsz), *b = bias ? rand_buf(r.k) : NULL, *dy = rand_buf(ys);
	float *y0 = malloc(ys * 4), *dx0 = malloc(xs * 4), *dw0 = calloc(wsz, 4), *db0 = calloc(r.k, 4);
	conv2d_forward_ref(y0, x, w, b, &r);
	conv2d_backward_ref(dx0, dw0, db0, dy, x, w, &r);
	for (int a = CONV_GEMM; a <= CONV_GROUP3X3; a++) {
		conv2d_desc d = d0;
		d.algo = a;
		if (conv2d_init(&d))
			continue;
		size_t wss = conv2d_workspace_size(&d);
		float *ws = wss ? aligned_zalloc(wss) : NULL;
		float *y = nan_buf(ys), *dx = nan_buf(xs), *dw = calloc(wsz, 4), *db = calloc(r.k, 4);
		CHECK(conv2d_forward(y, x, w, b, ws, &d) == 0);
		CHECK(conv2d_backward(dx, dw, bias ? db : NULL, dy, x, w, ws, &d) == 0);
		double e[4] = {rel_diff(y, y0, ys, NULL), rel_diff(dx, dx0, xs, NULL), rel_diff(dw, dw0, wsz, NULL),
			       bias ? rel_diff(db, db0, r.k, NULL) : 0};
		for (int i = 0; i < 4; i++)
			if (e[i] > worst[a][i])
				worst[a][i] = e[i];
		CHECK_MSG(e[0] <= TOL_OUT && e[1] <= TOL_GRAD && e[2] <= TOL_GRAD && e[3] <= TOL_GRAD,
			  "%s n%d c%d %dx%d k%d kernel %dx%d s%d,%d p%d,%d d%d,%d g%d: rel y %.2e dx %.2e dw %.2e db %.2e",
			  algo_name(a), d.n, d.c, d.h, d.w, d.k, d.kh, d.kw, d.sh, d.sw, d.ph, d.pw, d.dh, d.dw,
			  d.groups, e[0], e[1], e[2], e[3]);
		free(ws);
		free(y);
		free(dx);
		free(dw);
		free(db);
	}
	free(x);
	free(w);
	free(b);
	free(dy);
	free(y0);
	free(dx0);
	free(dw0);
	free(db0);
	return 1;
}

static void run_fast_vs_naive(void)
{
	static const int sizes[] = {1, 2, 3, 5, 7};
	int tried = 0, valid = 0;
	/* random small geometries, odd sizes */
	for (int it = 0; it < 400; it++) {
		int c = sizes[irand(5)], k = sizes[irand(5)], kern = 1 + 2 * irand(3);
		int g = 1;
		switch (irand(3)) {
		case 1: /* depthwise */
			k = c;
			g = c;
			break;
		case 2: /* groups of equal width */
			g = 1 + irand(3);
			c *= g;
			k *= g;
			break;
		}
		conv2d_desc d = {
			.n = 1 + irand(3), .c = c, .h = sizes[irand(5)], .w = sizes[irand(5)], .k = k,
			.kh = kern, .kw = irand(4) ? kern : 1 + 2 * irand(3),
			.sh = 1 + irand(2), .sw = 1 + irand(2), .ph = irand(3), .pw = irand(3),
			.dh = 1 + irand(2), .dw = 1 + irand(2), .groups = g,
		};
		tried++;
		valid += fast_vs_naive(d, irand(2));
	}
	/* the vectorised depthwise 3x3 across the row widths its masks must handle */
	for (int s = 1; s <= 2; s++)
		for (int w = 1; w <= 40; w++)
			for (int h = 1; h <= 5; h += 2) {
				conv2d_desc d = {.n = 2, .c = 3, .h = h, .w = w, .k = 3, .kh = 3, .kw = 3,
						 .sh = s, .sw = s, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 3};
				tried++;
				valid += fast_vs_naive(d, w & 1);
			}
	/* 1x1 convs wide enough for each form of the dW GEMM (conv_gemm.c): the dot form and
	 * the 64-wide panels, each straight and transposed (fewer output than input
	 * channels), with tails in every tile, pixel counts past one reduction block (256
	 * for panels, 2048 for the dot form), groups, and more images than threads */
	static const int pw[][6] = {
		/* n, c, h, w, k, groups */
		{5, 37, 7, 11, 13, 1},  /* transposed, dot */
		{3, 70, 9, 9, 45, 1},   /* transposed, panels with a tail */
		{2, 100, 17, 17, 64, 1}, /* transposed, one whole panel, 289 pixels */
		{2, 13, 33, 65, 29, 1}, /* dot, 2145 pixels */
		{3, 66, 17, 17, 70, 1}, /* panels, tails */
		{3, 80, 5, 7, 40, 2},   /* transposed dot per group */
		{2, 42, 6, 6, 138, 3},  /* panels per group (46 of 14) */
	};
	for (size_t i = 0; i < sizeof pw / sizeof *pw; i++) {
		conv2d_desc d = {.n = pw[i][0], .c = pw[i][1], .h = pw[i][2], .w = pw[i][3], .k = pw[i][4],
				 .kh = 1, .kw = 1, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .groups = pw[i][5]};
		tried++;
		valid += fast_vs_naive(d, (int)i & 1);
	}
	printf("fast vs naive conv: %d geometries (%d valid); worst rel y / dx / dw / db:\n", tried, valid);
	for (int a = CONV_GEMM; a <= CONV_GROUP3X3; a++)
		printf("  %-10s %.2e %.2e %.2e %.2e\n", algo_name(a), worst[a][0], worst[a][1], worst[a][2], worst[a][3]);
	CHECK(valid > 200);
}

/* An inference plan's conv (forward_only): the forward in row blocks whose im2col stays
 * small gives the training plan's outputs (bit for bit on our GEMM: each output is
 * still one GEMM over the whole reduction), in a smaller workspace; its backward is
 * refused. */
static void forward_only_conv(void)
{
	static const conv2d_desc geos[] = {
		/* 576 x 128 x 128 im2col: 9.4M floats, three blocks of the 4M cap */
		{.n = 1, .c = 64, .h = 128, .w = 128, .k = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1,
		 .dh = 1, .dw = 1, .groups = 1},
		{.n = 2, .c = 32, .h = 150, .w = 97, .k = 8, .kh = 3, .kw = 3, .sh = 2, .sw = 1, .ph = 1, .pw = 0,
		 .dh = 1, .dw = 2, .groups = 2},
		{.n = 1, .c = 3, .h = 33, .w = 35, .k = 5, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1,
		 .dh = 1, .dw = 1, .groups = 1},
	};
	for (size_t i = 0; i < sizeof geos / sizeof *geos; i++)
		for (int a = CONV_GEMM; a <= CONV_GEMM512; a++) {
			conv2d_desc t = geos[i], f = geos[i];
			t.algo = f.algo = a;
			f.forward_only = 1;
			if (conv2d_init(&t) || conv2d_init(&f))
				continue;
			size_t xs = (size_t)t.n * t.c * t.h * t.w, ys = (size_t)t.n * t.k * t.oh * t.ow;
			size_t wsz = (size_t)t.k * (t.c / t.groups) * t.kh * t.kw;
			float *x = rand_buf(xs), *w = rand_buf(wsz), *b = rand_buf(t.k), *y0 = nan_buf(ys), *y1 = nan_buf(ys);
			float *wst = aligned_zalloc(conv2d_workspace_size(&t)), *wsf = aligned_zalloc(conv2d_workspace_size(&f));
			CHECK(conv2d_forward(y0, x, w, b, wst, &t) == 0 && conv2d_forward(y1, x, w, b, wsf, &f) == 0);
			/* our GEMM: the same sums; OpenBLAS's may round differently in narrower blocks */
			if (a == CONV_GEMM512)
				CHECK_MSG(!memcmp(y0, y1, ys * sizeof(float)), "forward_only %s geometry %zu: other outputs",
					  algo_name(a), i);
			else
				CHECK(rel_diff(y1, y0, ys, NULL) <= TOL_OUT);
			CHECK(conv2d_workspace_size(&f) <= conv2d_workspace_size(&t));
			if (i == 0)
				CHECK_MSG(conv2d_workspace_size(&f) * 2 < conv2d_workspace_size(&t), "%s: workspace %zu of %zu",
					  algo_name(a), conv2d_workspace_size(&f), conv2d_workspace_size(&t));
			CHECK(conv2d_backward(x, NULL, NULL, y0, x, w, wsf, &f) < 0);
			free(x), free(w), free(b), free(y0), free(y1), free(wst), free(wsf);
		}
}

/* ---------------------------------------------------------------- bilinear vs naive */

/* torch 1.13's upsample_bilinear2d CPU loops (UpSample.h, UpSampleKernel.cpp) written
 * out plainly, rounding as there: the oracle of the kernels' 2x rows and vector loops. */
static void naive_bilinear_tap(int dst, int in, int out, int *i0, int *i1, float *l0, float *l1)
{
	if (in == out) {
		*i0 = *i1 = dst, *l0 = 1, *l1 = 0;
		return;
	}
	float scale = (float)in / out;
	double src = fmax((double)scale * (dst + 0.5) - 0.5, 0.0);
	*i0 = (int)src;
	*i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
	*l1 = (float)(src - *i0);
	*l0 = 1.0f - *l1;
}

static void naive_bilinear(float *y, float *dx, const float *x, const float *dy, int planes, int h, int w,
			   int oh, int ow)
{
	memset(dx, 0, (size_t)planes * h * w * sizeof(float));
	for (int p = 0; p < planes; p++) {
		const float *xp = x + (size_t)p * h * w;
		float *dp = dx + (size_t)p * h * w;
		for (int oy = 0; oy < oh; oy++) {
			int a0, a1;
			float h0, h1;
			naive_bilinear_tap(oy, h, oh, &a0, &a1, &h0, &h1);
			for (int ox = 0; ox < ow; ox++) {
				int b0, b1;
				float w0, w1;
				naive_bilinear_tap(ox, w, ow, &b0, &b1, &w0, &w1);
				size_t o = ((size_t)p * oh + oy) * ow + ox;
				float t0 = fmaf(xp[a0 * w + b0], w0, xp[a0 * w + b1] * w1);
				float t1 = fmaf(xp[a1 * w + b0], w0, xp[a1 * w + b1] * w1);
				y[o] = fmaf(t0, h0, t1 * h1);
				dp[a0 * w + b0] = fmaf(h0 * w0, dy[o], dp[a0 * w + b0]);
				dp[a0 * w + b1] = fmaf(h0 * w1, dy[o], dp[a0 * w + b1]);
				dp[a1 * w + b0] = fmaf(h1 * w0, dy[o], dp[a1 * w + b0]);
				dp[a1 * w + b1] = fmaf(h1 * w1, dy[o], dp[a1 * w + b1]);
			}
		}
	}
}

/* 0 if got and want are the same floats */
static double max_abs_diff(const float *got, const float *want, size_t n)
{
	double d = 0;
	rel_diff(got, want, n, &d);
	return d;
}

static void run_bilinear_vs_naive(void)
{
	int tried = 0, x2 = 0;
	double worst_y = 0, worst_dx = 0;
	for (int it = 0; it < 300; it++) {
		int n = 1 + irand(2), c = 1 + irand(3), h = 1 + irand(9), w = 1 + irand(40);
		int oh = irand(2) ? 2 * h : 1 + irand(20), ow = irand(3) ? 2 * w : 1 + irand(50);
		if (it == 0) /* big enough for the OpenMP path: an FPN lateral */
			n = 2, c = 32, h = 16, w = 16, oh = 32, ow = 32;
		if (it == 1) /* axes longer than the kernels' tap tables (1024) */
			n = c = 1, h = 600, w = 5, oh = 1200, ow = 1100;
		if (it == 2)
			n = c = 1, h = 3, w = 600, oh = 4, ow = 1200;
		size_t xs = (size_t)n * c * h * w, ys = (size_t)n * c * oh * ow;
		float *x = rand_buf(xs), *dy = rand_buf(ys), *y0 = malloc(ys * 4), *dx0 = malloc(xs * 4);
		float *y = nan_buf(ys), *dx = nan_buf(xs);
		naive_bilinear(y0, dx0, x, dy, n * c, h, w, oh, ow);
		upsample_bilinear_forward(y, x, n, c, h, w, oh, ow);
		upsample_bilinear_backward(dx, dy, n, c, h, w, oh, ow);
		double ey = max_abs_diff(y, y0, ys), edx = max_abs_diff(dx, dx0, xs);
		worst_y = fmax(worst_y, ey);
		worst_dx = fmax(worst_dx, edx);
		CHECK_MSG(ey == 0 && edx == 0, "bilinear n%d c%d %dx%d -> %dx%d: max|diff| y %.3e dx %.3e",
			  n, c, h, w, oh, ow, ey, edx);
		tried++;
		x2 += ow == 2 * w;
		free(x);
		free(dy);
		free(y0);
		free(dx0);
		free(y);
		free(dx);
	}
	printf("bilinear upsample vs naive torch loops: %d geometries (%d with ow = 2w); max|diff| y %.1e dx %.1e\n",
	       tried, x2, worst_y, worst_dx);
}

static void run_errors(void)
{
	conv2d_desc d = {.n = 1, .c = 3, .h = 5, .w = 5, .k = 4, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
			 .dh = 1, .dw = 1, .groups = 2};
	CHECK(conv2d_init(&d) == -1); /* 3 channels, 2 groups */
	d.groups = 1;
	d.kh = 7;
	CHECK(conv2d_init(&d) == -1); /* kernel larger than the input */
	d.kh = 3;
	d.algo = CONV_DW3X3;
	CHECK(conv2d_init(&d) == -1); /* not depthwise */
	d.algo = CONV_AUTO;
	CHECK(conv2d_init(&d) == 0 && d.oh == 3 && d.ow == 3);
	float x[2] = {1, 2}, y[2], m, r;
	CHECK(batchnorm2d_forward_train(y, &m, &r, NULL, x, NULL, NULL, 1e-5f, 1, 1, 1) == -1);
	pool2d_desc p = {.n = 1, .c = 1, .h = 4, .w = 4, .kh = 2, .kw = 2, .sh = 2, .sw = 2, .ph = 2};
	CHECK(maxpool2d_init(&p) == -1); /* pad more than half the kernel */
	/* NaN propagates and, as in torch, the window's last NaN takes the gradient */
	pool2d_desc q = {.n = 1, .c = 1, .h = 2, .w = 2, .kh = 2, .kw = 2, .sh = 2, .sw = 2};
	float xq[4] = {1, NAN, NAN, 5}, yq, gq = 1, dq[4];
	int32_t aq;
	CHECK(maxpool2d_init(&q) == 0 && q.oh == 1 && q.ow == 1);
	maxpool2d_forward(&yq, &aq, xq, &q);
	maxpool2d_backward(dq, &gq, &aq, &q);
	CHECK(isnan(yq) && aq == 2 && dq[2] == 1 && dq[0] == 0 && dq[1] == 0 && dq[3] == 0);
	/* relu and relu6 pass NaN through, as torch */
	float xn[2] = {NAN, 7}, yn[2];
	relu_forward(yn, xn, 2);
	CHECK(isnan(yn[0]) && yn[1] == 7);
	relu6_forward(yn, xn, 2);
	CHECK(isnan(yn[0]) && yn[1] == 6);
}

/* BN over a batch in parts (data-parallel replicas): each part's moments merged give
 * the whole batch's, including a large mean against a small spread. */
static void run_merge_moments(void)
{
	enum { N = 5, C = 3, HW = 7 };
	static float x[N * C * HW];
	for (int i = 0; i < N * C * HW; i++)
		x[i] = 1000.0f * (i % C == 2) + frand();
	double mean[C], m2[C], pm[C], pm2[C], acc[3 * C], part[3 * C];
	batchnorm2d_moments(mean, m2, x, N, C, HW);
	int first = 0, sizes[] = {2, 1, 2};
	for (int k = 0; k < 3; k++) {
		batchnorm2d_moments(pm, pm2, x + (size_t)first * C * HW, sizes[k], C, HW);
		for (int ch = 0; ch < C; ch++) {
			double *t = k ? part : acc;
			t[3 * ch] = (double)sizes[k] * HW, t[3 * ch + 1] = pm[ch], t[3 * ch + 2] = pm2[ch];
		}
		if (k)
			batchnorm2d_merge_moments(acc, part, C);
		first += sizes[k];
	}
	double maxrel = 0;
	for (int ch = 0; ch < C; ch++) {
		CHECK(acc[3 * ch] == N * HW);
		double dm = fabs(acc[3 * ch + 1] - mean[ch]) / (fabs(mean[ch]) + 1), d2 = fabs(acc[3 * ch + 2] - m2[ch]) / m2[ch];
		maxrel = fmax(maxrel, fmax(dm, d2));
	}
	printf("batchnorm2d moments of 3 parts merged vs the whole batch: max rel %.1e\n", maxrel);
	CHECK(maxrel < 1e-6);
}

int main(void)
{
	run_fixtures();
	run_fast_vs_naive();
	forward_only_conv();
	run_bilinear_vs_naive();
	run_errors();
	run_merge_moments();
	return check_done("test_layers");
}
