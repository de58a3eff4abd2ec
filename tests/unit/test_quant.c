/* test_quant: lib/kernels/quant.c against tests/ref_quant.py's fixtures (tests/fixtures/quant/),
 * bit-exactly: integers equal, floats equal with == (NaN matching NaN; the sign of a zero
 * is not checked, see ref_quant.py). Every record is one case; its meta "case" names it in
 * failures, which print the first differing element in hex floats. Besides each
 * function's results, the optional outputs (q or dq NULL) and in-place calls (dq == w,
 * y == x, dx == dy) must give the same bits. Run from the repository root. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "check.h"
#include "core/err.h"
#include "fixture.h"
#include "kernels/quant.h"
#include "core/stream.h"

#define FIX "tests/fixtures/quant/"

static const record *cur;   /* the fixture record being tested */
static char cur_case[160];  /* "file:case" */

static const tensor *TT(const char *name, enum dtype dt)
{
	const tensor *t = record_expect(cur, name, dt, -1);
	if (!t) {
		fprintf(stderr, "%s: broken fixture: %s\n", cur_case, err_msg());
		exit(1);
	}
	return t;
}

static const float *F(const char *name)
{
	return TT(name, DT_F32)->data;
}

static const int32_t *I(const char *name)
{
	return TT(name, DT_I32)->data;
}

static size_t N(const char *name)
{
	return (size_t)tensor_numel(TT(name, DT_F32));
}

static int32_t I1(const char *name)
{
	return I(name)[0];
}

static float *nan_buf(size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof *p);
	for (size_t i = 0; i < n; i++)
		p[i] = NAN;
	return p;
}

static float *copy_of(const char *name)
{
	size_t n = N(name);
	float *p = malloc((n ? n : 1) * sizeof *p);
	memcpy(p, F(name), n * sizeof *p);
	return p;
}

static int32_t *poison_i32(size_t n)
{
	int32_t *p = malloc((n ? n : 1) * sizeof *p);
	for (size_t i = 0; i < n; i++)
		p[i] = INT32_MIN + 12345;
	return p;
}

static int same_f32(float a, float b)
{
	return a == b || (isnan(a) && isnan(b));
}

static void eq_f32(const char *what, const float *got, const float *want, size_t n)
{
	size_t bad = 0, first = 0;
	for (size_t i = 0; i < n; i++)
		if (!same_f32(got[i], want[i]) && !bad++)
			first = i;
	CHECK_MSG(!bad, "%s %s: %zu of %zu differ, first [%zu]: got %a (%.9g), want %a (%.9g)", cur_case, what, bad, n,
		  first, got[first], got[first], want[first], want[first]);
}

static void eq_i32(const char *what, const int32_t *got, const int32_t *want, size_t n)
{
	size_t bad = 0, first = 0;
	for (size_t i = 0; i < n; i++)
		if (got[i] != want[i] && !bad++)
			first = i;
	CHECK_MSG(!bad, "%s %s: %zu of %zu differ, first [%zu]: got %ld, want %ld", cur_case, what, bad, n, first,
		  (long)got[first], (long)want[first]);
}

#define EQ_INT(what, got, want) \
	CHECK_MSG((long long)(got) == (long long)(want), "%s %s: got %lld, want %lld", cur_case, what, \
		  (long long)(got), (long long)(want))

/* ---------------------------------------------------------------- cases */

static void case_pow2_exp(void)
{
	size_t n = N("x");
	const float *x = F("x");
	int32_t *e = poison_i32(n);
	for (size_t i = 0; i < n; i++)
		e[i] = quant_pow2_exp(x[i]);
	eq_i32("e", e, I("e"), n);
	free(e);
}

/* quant_round of w at frac, qbits against q, dq, nsat; also with q or dq NULL and in place. */
static void check_round(int frac, int qbits)
{
	size_t n = N("w");
	const float *w = F("w");
	int32_t *q = poison_i32(n);
	float *dq = nan_buf(n);
	size_t nsat = quant_round(w, n, frac, qbits, q, dq);
	eq_i32("q", q, I("q"), n);
	eq_f32("dq", dq, F("dq"), n);
	EQ_INT("nsat", nsat, I1("nsat"));

	float *dq2 = nan_buf(n);
	EQ_INT("nsat (q NULL)", quant_round(w, n, frac, qbits, NULL, dq2), I1("nsat"));
	eq_f32("dq (q NULL)", dq2, F("dq"), n);
	int32_t *q2 = poison_i32(n);
	EQ_INT("nsat (dq NULL)", quant_round(w, n, frac, qbits, q2, NULL), I1("nsat"));
	eq_i32("q (dq NULL)", q2, I("q"), n);
	float *inplace = copy_of("w");
	EQ_INT("nsat (in place)", quant_round(inplace, n, frac, qbits, NULL, inplace), I1("nsat"));
	eq_f32("dq (in place)", inplace, F("dq"), n);
	free(q);
	free(dq);
	free(dq2);
	free(q2);
	free(inplace);
}

static void case_weight(void)
{
	int bits = I1("bits");
	int frac = quant_weight_frac(F("w"), N("w"), bits);
	EQ_INT("frac", frac, I1("frac"));
	check_round(I1("frac"), bits);
}

static void case_round(void)
{
	check_round(I1("frac"), I1("qbits"));
}

static void case_act(void)
{
	int bits = I1("bits"), is_signed = I1("signed");
	qact a = quant_act_params(F("range"), bits, is_signed);
	EQ_INT("frac", a.frac, I1("frac"));
	EQ_INT("qmin", a.qmin, I1("qmin"));
	EQ_INT("qmax", a.qmax, I1("qmax"));
	eq_f32("scale", &a.scale, F("scale"), 1);
	eq_f32("lo", &a.lo, F("lo"), 1);
	eq_f32("hi", &a.hi, F("hi"), 1);

	/* forward and backward from the expected parameters, so a wrong one does not cascade */
	qact e = {.frac = I1("frac"), .qmin = I1("qmin"), .qmax = I1("qmax"),
		  .scale = F("scale")[0], .lo = F("lo")[0], .hi = F("hi")[0]};
	size_t n = N("x");
	const float *x = F("x"), *dy = F("dy");
	float *y = nan_buf(n), *dx = nan_buf(n);
	int32_t *q = poison_i32(n);
	quant_act(x, n, &e, y, q);
	eq_i32("q", q, I("q"), n);
	eq_f32("y", y, F("y"), n);
	float *inplace = copy_of("x");
	quant_act(inplace, n, &e, inplace, NULL);
	eq_f32("y (in place, q NULL)", inplace, F("y"), n);

	quant_act_backward(x, dy, n, &e, dx);
	eq_f32("dx", dx, F("dx"), n);
	float *g = copy_of("dy");
	quant_act_backward(x, g, n, &e, g);
	eq_f32("dx (in place)", g, F("dx"), n);
	free(y);
	free(dx);
	free(q);
	free(inplace);
	free(g);
}

static void case_batch_range(void)
{
	float out[2] = {NAN, NAN};
	quant_batch_range(F("x"), N("x"), out);
	eq_f32("out", out, F("out"), 2);
}

static void case_range_update(void)
{
	float r[2];
	memcpy(r, F("r"), sizeof r);
	quant_range_update(r, I1("n"), F("batch"));
	eq_f32("out", r, F("out"), 2);
}

static void case_range_sequence(void)
{
	const tensor *b = TT("batches", DT_F32);
	size_t m = (size_t)b->shape[0];
	const float *batches = b->data;
	float r[2], *got = nan_buf(2 * m);
	memcpy(r, F("r0"), sizeof r);
	for (size_t n = 0; n < m; n++) {
		quant_range_update(r, (long)n, batches + 2 * n);
		got[2 * n] = r[0];
		got[2 * n + 1] = r[1];
	}
	eq_f32("ranges", got, F("ranges"), 2 * m);
	free(got);
}

static void case_fold_bn(void)
{
	const tensor *wt = TT("w", DT_F32);
	size_t cout = (size_t)wt->shape[0], k = (size_t)wt->shape[1];
	const float *cb = record_find(cur, "cb") ? F("cb") : NULL;
	float *w = copy_of("w"), *bias = nan_buf(cout);
	quant_fold_bn(w, cout, k, cb, F("gamma"), F("beta"), F("mean"), F("var"), F("eps")[0], bias);
	eq_f32("w_out", w, F("w_out"), cout * k);
	eq_f32("bias", bias, F("bias"), cout);
	free(w);
	free(bias);
}

static void case_bias_calib(void)
{
	size_t n = N("bias");
	float *b = copy_of("bias");
	quant_bias_calibrate(b, n, F("mean_float"), F("mean_quant"), I1("epoch"));
	eq_f32("out", b, F("out"), n);
	free(b);
}

static const struct {
	const char *kind;
	void (*run)(void);
} kinds[] = {
	{"pow2_exp", case_pow2_exp},         {"weight", case_weight},
	{"round", case_round},               {"act", case_act},
	{"batch_range", case_batch_range},   {"range_update", case_range_update},
	{"range_sequence", case_range_sequence}, {"fold_bn", case_fold_bn},
	{"bias_calib", case_bias_calib},
};

static void run_file(const char *name)
{
	char path[256];
	snprintf(path, sizeof path, FIX "%s.tns", name);
	record **v;
	int n = read_all(path, &v), before = check_fail;
	CHECK_MSG(n > 0, "%s: no cases", path);
	for (int i = 0; i < n; i++) {
		cur = v[i];
		snprintf(cur_case, sizeof cur_case, "%s:%s", name, meta_str(cur, "case", "?"));
		size_t j = 0;
		while (j < sizeof kinds / sizeof *kinds && strcmp(kinds[j].kind, cur->kind))
			j++;
		CHECK_MSG(j < sizeof kinds / sizeof *kinds, "%s: unknown record kind %s", cur_case, cur->kind);
		if (j < sizeof kinds / sizeof *kinds)
			kinds[j].run();
	}
	printf("%-13s %3d cases, %s\n", name, n < 0 ? 0 : n, check_fail == before ? "all exact" : "FAILURES");
	if (n > 0)
		free_all(v, n);
}

/* The bias split rule, by hand: the accumulator's fraction bits while the largest
 * bias fits the bias bits there, else the bias's own weight-rule bits. */
static void bias_split(void)
{
	const float small[3] = {0.25f, -0.5f, 0.125f}, big[2] = {3.0f, -1.0f}, zero[2] = {0, 0};
	CHECK(quant_bias_frac(small, 3, 12, 16) == 12);    /* 0.5 * 2^12 fits 16 bits */
	CHECK(quant_bias_frac(small, 3, 17, 16) == 16);    /* 0.5 -> e = -1: 15 + 1 */
	CHECK(quant_bias_frac(big, 2, 20, 16) == 13);      /* 3 -> e = 2: 15 - 2 */
	CHECK(quant_bias_frac(big, 2, 29, 32) == 29);
	CHECK(quant_bias_frac(big, 2, 31, 32) == 29);
	CHECK(quant_bias_frac(zero, 2, 40, 16) == 40);     /* zeros fit anywhere */
	int32_t q[2];
	CHECK(quant_round(big, 2, quant_bias_frac(big, 2, 20, 16), 16, q, NULL) == 0 && q[0] == 24576 &&
	      q[1] == -8192);
}

/* Threads split big tensors: the range must not depend on how many. */
static void range_threads(void)
{
	size_t n = 300000;
	float *x = malloc(n * sizeof *x), r1[2], r2[2];
	uint64_t st = 12345;
	for (size_t i = 0; i < n; i++) {
		st = st * 6364136223846793005ull + 1442695040888963407ull;
		x[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.3) * (i % 97 == 0 ? 40.0f : 1.0f);
	}
	omp_set_num_threads(1);
	quant_batch_range(x, n, r1);
	omp_set_num_threads(2);
	quant_batch_range(x, n, r2);
	CHECK_MSG(r1[0] == r2[0] && r1[1] == r2[1], "range with 1 and 2 threads: (%g, %g) vs (%g, %g)", r1[0], r1[1],
		  r2[0], r2[1]);
	free(x);
}

/* The vector forms against the plain per-value definitions (quant.h), on lengths with
 * tails, NaNs, runs of zeros (a ReLU's) and negatives, on 1 and 2 threads. */
static float ref_act_int(float x, const qact *a)
{
	float t = x * a->scale;
	float v = floorf(t + 0.5f);
	if (!(v <= (float)a->qmax))
		return (float)a->qmax;
	return v < (float)a->qmin ? (float)a->qmin : v;
}

static void vector_forms(void)
{
	/* 1100017: past 2^16 counts of one bin in each 16-bit copy of the histogram */
	const size_t sizes[] = {0, 1, 7, 15, 16, 17, 33, 1000, 65536, 65553, 200003, 1100017};
	uint64_t st = 99;
	for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
		for (int threads = 1; threads <= 2; threads++) {
			size_t n = sizes[k];
			omp_set_num_threads(threads);
			float *x = malloc((n + 1) * sizeof *x), *y = malloc((n + 1) * sizeof *y);
			float *dy = malloc((n + 1) * sizeof *dy), *dx = malloc((n + 1) * sizeof *dx);
			int32_t *q = malloc((n + 1) * sizeof *q);
			for (size_t i = 0; i < n; i++) {
				st = st * 6364136223846793005ull + 1442695040888963407ull;
				double u = (double)(st >> 11) / 9007199254740992.0;
				x[i] = i % 5 == 0 || n > 1000000 ? 0.0f : (float)((u - 0.35) * 9.0);
				if (n > 1000000 && i % 1000 == 7)
					x[i] = (float)u; /* mostly one bin, but a range */
				if (i % 101 == 3)
					x[i] = NAN;
				dy[i] = (float)(u - 0.5);
			}
			/* extrema and histogram */
			double ext[3], hist[QUANT_BINS];
			quant_extrema(x, n, ext);
			float mn = INFINITY, mx = -INFINITY;
			size_t valid = 0;
			for (size_t i = 0; i < n; i++)
				if (!isnan(x[i])) {
					mn = x[i] < mn ? x[i] : mn;
					mx = x[i] > mx ? x[i] : mx;
					valid++;
				}
			CHECK_MSG(ext[0] == -(double)mn && ext[1] == mx && ext[2] == (double)valid,
				  "extrema n %zu, %d threads: (%g, %g, %g) vs (%g, %g, %zu)", n, threads, ext[0], ext[1],
				  ext[2], -(double)mn, mx, valid);
			if (valid && mn != mx) {
				quant_histogram(x, n, ext, hist);
				double w = ((double)mx - mn) / QUANT_BINS, ref[QUANT_BINS] = {0};
				for (size_t i = 0; i < n; i++)
					if (!isnan(x[i])) {
						int b = (int)(((double)x[i] - mn) / w);
						ref[b < QUANT_BINS ? b : QUANT_BINS - 1]++;
					}
				int same = 1;
				for (int b = 0; b < QUANT_BINS; b++)
					same &= hist[b] == ref[b];
				CHECK_MSG(same, "histogram n %zu, %d threads", n, threads);
			}
			/* fake quantisation forward and backward at an unsigned and a signed point */
			for (int sg = 0; sg <= 1; sg++) {
				const float range[2] = {-2.5f, 3.0f};
				qact a = quant_act_params(range, 8, sg);
				quant_act(x, n, &a, y, q);
				quant_act_backward(x, dy, n, &a, dx);
				size_t bad = 0;
				for (size_t i = 0; i < n; i++) {
					float v = ref_act_int(x[i], &a);
					float r = v * ldexpf(1, -a.frac), d = x[i] >= a.lo && x[i] <= a.hi ? dy[i] : 0.0f;
					bad += memcmp(&y[i], &r, 4) || q[i] != (int32_t)v || memcmp(&dx[i], &d, 4);
				}
				CHECK_MSG(bad == 0, "quant_act n %zu, signed %d, %d threads: %zu values differ", n, sg, threads,
					  bad);
			}
			free(x);
			free(y);
			free(dy);
			free(dx);
			free(q);
		}
	omp_set_num_threads(2);
}

int main(void)
{
	bias_split();
	range_threads();
	vector_forms();
	const char *files[] = {"pow2_exp", "weight", "round", "act", "batch_range", "range_update", "fold_bn",
			       "bias_calib"};
	for (size_t i = 0; i < sizeof files / sizeof *files; i++)
		run_file(files[i]);
	return check_done("test_quant");
}
