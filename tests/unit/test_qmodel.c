/* test_qmodel: the quantised model (model_quantize: lib/quant/qmodel.c, lib/nn/graph.c) against the
 * PyTorch reference tests/ref_qmodel.py, through the model API, on its fixture
 * tests/fixtures/qmodel/tiny_q8.tns (tests/fixtures/model/tiny.json, 8 bits, 80x80):
 *
 * - points: the quantisation points are the reference's, by name and in order;
 * - calibration: forward with stats on (no ranges) on 3 batches of 2 images: each stats
 *   record against the reference's, and the running ranges (ranges_update over them)
 *   against the reference's ranges. A value near a histogram bin edge may fall on the
 *   other side under another float summation order, moving a trimmed end by one bin:
 *   each end may differ by one bin width (range / QUANT_BINS) plus 1e-6 of its magnitude
 *   (measured: min and max differ in the last bits, 2e-7 of the width, no bin moves);
 *   ranges_update over the reference's own stats must give its ranges bit-exactly;
 * - qparams (the reference's ranges loaded from here on): every conv's integer weights
 *   and bias, its fraction bits (weight, input, bias: TIDL's bias split included), every
 *   point's frac, qmin, qmax and clip range, exactly; the f32 weights and biases are
 *   q * 2^-frac;
 * - the quantised forward (inference plan) on a batch of 4: every output equal to the
 *   reference's except for one-step rounding flips (a value whose f32 sum lands on the
 *   other side of a rounding edge): at least 99.9% exactly equal, no difference beyond
 *   one step 2^-frac of the output's point (the fixture gives each row's frac). At 8 bits
 *   the sums are exact in f32 (8-bit products, within 24 bits), so none is expected;
 * - QAT (training plan, stats on): the same outputs (the BN is folded with its running
 *   statistics in both plans); the stats of the values entering the points as in
 *   calibration; backward from a fixed dLoss/dpred: every trainable parameter's gradient
 *   and the image gradient within GRAD_TOL = 1e-4 of the largest |value| of the reference
 *   tensor. The reference is f64 on the same forward values and masks; the C sums in f32
 *   in other orders (measured 1.2e-6 at worst), while a missing straight-through clip
 *   mask, a ReLU6 left in place or BN weights without their gradient through the fold
 *   move gradients by 1e-2 to 1 (see ref_qmodel.py). No BN batch statistics in the grads
 *   record; a second step on the same plan gives the same gradients bit for bit.
 * - forward --int8 (model_forward_integer) on the inference plan: every output bit-equal
 *   to the fake-quantised forward; refused on a training plan. The same for the other
 *   families' parity fixtures (tests/fixtures/model/tiny_resnet, tiny_regnet: a ReLU
 *   after the residual add, bilinear upsampling in the FPN; tiny_vgg: the L2Norm),
 *   ranges calibrated on their batch here.
 * - 4-bit weights with 8-bit activations (RegNet, VGG): the qparams' weight integers
 *   fill [-8, 7], the integer path equals the simulation bit for bit;
 * - per-channel depthwise weights (MobileNetV2, 8 and 4 bits): each channel at its own
 *   scale uses its range, the integer path equals the simulation bit for bit;
 * - the four models quantised to 16 bits on integers (int16 values, exact int64 sums)
 *   against their f32 simulation, which is not exact there: within INT16_TOL of the
 *   largest output (measured: 2.7e-5 to 1.1e-4, a few 16-bit steps; the kernels
 *   themselves are exact against naive loops in test_qlayers).
 * Run from the repository root. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "fixture.h"
#include "nn/model.h"
#include "quant/qmodel.h"
#include "kernels/quant.h"
#include "core/stream.h"
#include "core/tensor.h"

#define FIX "tests/fixtures/qmodel/"
#define CONFIG "tests/fixtures/model/tiny.json"
#define NCAL 3
#define BITS 8
#define GRAD_TOL 1e-4 /* of the largest |gradient| of the reference tensor */
#define INT16_TOL 5e-4 /* of the largest |output|: 16-bit integers against the f32 simulation */

enum {
	R_PARAMS,
	R_CAL0,
	R_STATS0 = R_CAL0 + NCAL,
	R_RANGES = R_STATS0 + NCAL,
	R_QPARAMS,
	R_BATCH,
	R_PRED,
	R_QSTATS,
	R_GRAD,
	R_GRADS,
	R_COUNT
};

static const char *const kinds[R_COUNT] = {"params", "batch", "batch", "batch", "stats",  "stats", "stats",
					   "ranges", "qparams", "batch", "pred", "stats", "grad", "grads"};

static record **recs;
static int nrecs;

static const tensor *T(const record *r, const char *name)
{
	const tensor *t = record_find(r, name);
	if (!t) {
		fprintf(stderr, "test_qmodel: broken fixture: %s record has no '%s'\n", r->kind, name);
		exit(1);
	}
	return t;
}

/* The tiny model, quantised at BITS, with the fixture's params. */
static model *qmodel(void)
{
	model *m = model_load(CONFIG);
	CHECK_MSG(m != NULL, "%s", err_msg());
	if (!m)
		return NULL;
	CHECK_MSG(model_quantize(m, BITS) == 0, "%s", err_msg());
	CHECK_MSG(model_load_params(m, recs[R_PARAMS]) == 0, "%s", err_msg());
	return m;
}

typedef struct outbuf {
	float *v[2];
	int64_t shape[2][3];
} outbuf;

static void out_alloc(const model *m, outbuf *o)
{
	for (int i = 0; i < 2; i++) {
		model_output_shape(m, i, o->shape[i]);
		o->v[i] = calloc((size_t)(o->shape[i][0] * o->shape[i][1] * o->shape[i][2]), sizeof(float));
	}
}

static void out_free(outbuf *o)
{
	for (int i = 0; i < 2; i++)
		free(o->v[i]);
}

static size_t out_count(const outbuf *o, int i)
{
	return (size_t)(o->shape[i][0] * o->shape[i][1] * o->shape[i][2]);
}

/* Point ranges (stats or ranges records) against the reference's: the same names in the
 * same order; each end within one histogram bin of the reference's range plus 1e-6 of
 * its magnitude. Prints how many points are bit-exact and the largest difference in bins. */
static void compare_points(const char *what, const record *c, const record *ref)
{
	CHECK_MSG(c->ntensors == ref->ntensors, "%s: %d points, the reference has %d", what, c->ntensors,
		  ref->ntensors);
	int exact = 0, bad = 0;
	double worst = 0;
	for (int k = 0; k < ref->ntensors && k < c->ntensors; k++) {
		const tensor *rt = &ref->tensors[k], *ct = &c->tensors[k];
		CHECK_MSG(!strcmp(rt->name, ct->name), "%s: point %d is %s, the reference's %s", what, k, ct->name,
			  rt->name);
		const float *r = rt->data, *v = ct->data;
		double bin = ((double)r[1] - r[0]) / QUANT_BINS, mag = fmax(fabs(r[0]), fabs(r[1]));
		double d = fmax(fabs((double)v[0] - r[0]), fabs((double)v[1] - r[1]));
		exact += v[0] == r[0] && v[1] == r[1];
		if (bin > 0 && d / bin > worst)
			worst = d / bin;
		if (!(d <= bin + 1e-6 * mag)) {
			if (bad++ < 5)
				fprintf(stderr, "%s: %s: (%.9g, %.9g), the reference (%.9g, %.9g)\n", what, rt->name, v[0],
					v[1], r[0], r[1]);
		}
	}
	printf("  %-34s %3d/%d points bit-exact, largest difference %.3g histogram bins\n", what, exact,
	       ref->ntensors, worst);
	CHECK_MSG(bad == 0, "%s: %d points beyond one histogram bin", what, bad);
}

static void test_points_and_calibration(void)
{
	model *m = qmodel();
	if (!m)
		return;
	const record *rref = recs[R_RANGES];
	CHECK_MSG(model_quant_points(m) == rref->ntensors, "%d points, the reference has %d", model_quant_points(m),
		  rref->ntensors);
	for (int p = 0; p < model_quant_points(m) && p < rref->ntensors; p++)
		CHECK_MSG(!strcmp(model_quant_point_name(m, p), rref->tensors[p].name), "point %d: %s, the reference's %s",
			  p, model_quant_point_name(m, p), rref->tensors[p].name);

	printf("calibration (float forward, stats, %d batches):\n", NCAL);
	model_set_stats(m, 1);
	const tensor *img = T(recs[R_CAL0], "image");
	int n = (int)img->shape[0], S = (int)img->shape[2];
	CHECK_MSG(model_plan(m, n, S, S, 0, 0) == 0, "%s", err_msg());
	outbuf o;
	out_alloc(m, &o);
	record *ranges = record_new("ranges"), *from_ref = record_new("ranges");
	for (int k = 0; k < NCAL; k++) {
		CHECK_MSG(model_forward(m, T(recs[R_CAL0 + k], "image")->data, o.v) == 0, "%s", err_msg());
		record *st = model_stats_record(m);
		CHECK(st != NULL);
		if (!st)
			break;
		char what[64];
		snprintf(what, sizeof what, "stats of batch %d", k);
		compare_points(what, st, recs[R_STATS0 + k]);
		CHECK_MSG(ranges_update(ranges, st) == 0, "%s", err_msg());
		CHECK_MSG(ranges_update(from_ref, recs[R_STATS0 + k]) == 0, "%s", err_msg());
		record_free(st);
	}
	CHECK(meta_num(ranges, "batches", 0) == NCAL && meta_num(rref, "batches", 0) == NCAL);
	compare_points("ranges (EMA of those stats)", ranges, rref);
	/* the running average itself is exact: the reference's stats give its ranges */
	int same = from_ref->ntensors == rref->ntensors;
	for (int k = 0; same && k < rref->ntensors; k++)
		same = !strcmp(from_ref->tensors[k].name, rref->tensors[k].name) &&
		       !memcmp(from_ref->tensors[k].data, rref->tensors[k].data, 2 * sizeof(float));
	CHECK_MSG(same, "ranges_update over the reference's stats differs from its ranges");
	record_free(ranges);
	record_free(from_ref);
	out_free(&o);
	model_free(m);
}

/* qparams against the reference's integers: exact. */
static void check_qparams(model *m)
{
	record *c = model_qparams_record(m);
	CHECK_MSG(c != NULL, "%s", err_msg());
	if (!c)
		return;
	const record *ref = recs[R_QPARAMS];
	CHECK(meta_num(c, "bits", 0) == BITS && meta_num(ref, "bits", 0) == BITS);
	int convs = 0, split = 0, bad = 0;
	for (int k = 0; k < ref->ntensors; k++) {
		const tensor *rt = &ref->tensors[k], *ct = record_find(c, rt->name);
		CHECK_MSG(ct != NULL, "qparams: no %s", rt->name);
		if (!ct)
			continue;
		int same = ct->dtype == rt->dtype && tensor_numel(ct) == tensor_numel(rt) &&
			   !memcmp(ct->data, rt->data, tensor_nbytes(rt));
		if (!same && bad++ < 5)
			fprintf(stderr, "qparams: %s differs from the reference\n", rt->name);
		size_t len = strlen(rt->name);
		if (len > 5 && !strcmp(rt->name + len - 5, ".frac")) {
			/* <conv>.weight and .bias (f32) are the integers times 2^-frac */
			const int32_t *fr = rt->data;
			char nm[TENSOR_NAMELEN + 16];
			static const char *const sfx[2][2] = {{"weight", "weight_q"}, {"bias", "bias_q"}};
			for (int j = 0; j < 2; j++) {
				snprintf(nm, sizeof nm, "%.*s.%s", (int)(len - 5), rt->name, sfx[j][0]);
				const tensor *f = record_find(c, nm);
				snprintf(nm, sizeof nm, "%.*s.%s", (int)(len - 5), rt->name, sfx[j][1]);
				const tensor *q = T(ref, nm);
				CHECK_MSG(f && f->dtype == DT_F32 && tensor_numel(f) == tensor_numel(q), "qparams: %s", nm);
				if (!f || tensor_numel(f) != tensor_numel(q))
					continue;
				int frac = fr[j ? 2 : 0], ok = 1;
				for (int64_t i = 0; i < tensor_numel(q); i++) {
					double v = q->dtype == DT_I8 ? ((int8_t *)q->data)[i] : ((int16_t *)q->data)[i];
					ok &= ((float *)f->data)[i] == (float)ldexp(v, -frac);
				}
				CHECK_MSG(ok, "qparams: %s is not %s * 2^-%d", f->name, nm, frac);
			}
			convs++;
			split += fr[2] < fr[0] + fr[1];
		}
	}
	CHECK_MSG(bad == 0, "qparams: %d tensors differ", bad);
	/* the C record also has the f32 weight and bias of each conv */
	CHECK_MSG(c->ntensors == ref->ntensors + 2 * convs, "qparams: %d tensors, expected %d", c->ntensors,
		  ref->ntensors + 2 * convs);
	printf("  qparams: %d tensors of %d convs (%d with a split bias) and %d points equal the reference's\n",
	       ref->ntensors, convs, split, model_quant_points(m));
	CHECK(split > 0); /* the fixture exercises TIDL's bias split */
	record_free(c);
}

/* Outputs against expected values (the reference's, or NULL for them), in steps of each
 * row's point (2^-frac): at least 99.9% equal, no difference beyond one step. */
static void compare_outputs(const char *what, const outbuf *o, const outbuf *expect)
{
	static const char *const names[2] = {"cls", "reg"};
	for (int i = 0; i < 2; i++) {
		const tensor *t = T(recs[R_PRED], names[i]), *fr = T(recs[R_PRED], i ? "reg_frac" : "cls_frac");
		CHECK(t->ndim == 3 && t->shape[0] == o->shape[i][0] && t->shape[1] == o->shape[i][1] &&
		      t->shape[2] == o->shape[i][2] && fr->dtype == DT_I32 && fr->shape[0] == t->shape[1]);
		if (t->shape[1] != o->shape[i][1] || fr->shape[0] != t->shape[1])
			continue;
		size_t n = out_count(o, i), equal = 0;
		int64_t rows = t->shape[1], K = t->shape[2];
		double worst = 0;
		const float *r = expect ? expect->v[i] : t->data, *c = o->v[i];
		for (size_t k = 0; k < n; k++) {
			double d = fabs((double)c[k] - r[k]);
			equal += d == 0;
			double steps = ldexp(d, ((int32_t *)fr->data)[(int64_t)k / K % rows]);
			if (!(steps <= worst))
				worst = isnan(steps) ? INFINITY : steps;
		}
		printf("  %s %s: %zu/%zu equal (%.3f%%), largest difference %g steps\n", what, names[i], equal, n,
		       100.0 * equal / n, worst);
		CHECK_MSG(equal >= 0.999 * n, "%s %s: only %zu of %zu outputs equal", what, names[i], equal, n);
		CHECK_MSG(worst <= 1, "%s %s: a difference of %g steps", what, names[i], worst);
	}
}

/* max|c - t| / max|t| */
static double rel_diff(const float *c, const float *t, size_t n)
{
	double md = 0, mt = 1e-30;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)c[i] - t[i]);
		if (!(d <= md))
			md = isnan(d) ? INFINITY : d;
		if (fabs(t[i]) > mt)
			mt = fabs(t[i]);
	}
	return md / mt;
}

/* forward --int8 on m's inference plan into outputs prefilled with NaNs (every value
 * must be written) against the simulation's sim: with tol 0 each output bit-equal (8
 * bits), else within tol of the largest |output| (16 bits, where the f32 simulation
 * rounds products and sums the integer path keeps exact: qlayers.h). */
static void check_int_path(model *m, const tensor *img, const outbuf *sim, const char *what, double tol)
{
	outbuf iq;
	out_alloc(m, &iq);
	for (int i = 0; i < 2; i++)
		memset(iq.v[i], 0xff, out_count(&iq, i) * sizeof(float));
	CHECK_MSG(model_forward_integer(m, img->data, iq.v) == 0, "%s: %s", what, err_msg());
	for (int i = 0; i < 2; i++) {
		size_t n = out_count(&iq, i), differ = 0;
		for (size_t j = 0; j < n; j++)
			differ += memcmp(&iq.v[i][j], &sim->v[i][j], sizeof(float)) != 0;
		double r = rel_diff(iq.v[i], sim->v[i], n);
		printf("  %s: %s vs the simulation, output %d: %zu of %zu values differ, by %.2e of the largest at "
		       "most\n", what, tol ? "16-bit integers" : "int8", i, differ, n, r);
		if (tol)
			CHECK_MSG(r <= tol, "%s: 16-bit output %d: relative difference %.3g", what, i, r);
		else
			CHECK_MSG(differ == 0, "%s: int8 output %d: %zu of %zu values differ from the simulation", what,
				  i, differ, n);
	}
	out_free(&iq);
}

static void test_quantised(void)
{
	model *m = qmodel();
	if (!m)
		return;
	CHECK_MSG(model_load_ranges(m, recs[R_RANGES]) == 0, "%s", err_msg());
	const tensor *img = T(recs[R_BATCH], "image");
	int n = (int)img->shape[0], S = (int)img->shape[2];

	printf("quantised, %d bits (the reference's ranges):\n", BITS);
	CHECK_MSG(model_plan(m, n, S, S, 0, 0) == 0, "%s", err_msg());
	check_qparams(m);
	outbuf inf, o;
	out_alloc(m, &inf);
	CHECK_MSG(model_forward(m, img->data, inf.v) == 0, "%s", err_msg());
	compare_outputs("inference vs the reference", &inf, NULL);

	/* forward --int8: the same model on integers, bit-equal to the simulation */
	check_int_path(m, img, &inf, "tiny", 0);
	/* the same on a plan without float activations, where the float forward is refused */
	model_set_integer_only(m, 1);
	CHECK_MSG(model_plan(m, n, S, S, 0, 0) == 0, "%s", err_msg());
	out_alloc(m, &o);
	CHECK_MSG(model_forward_integer(m, img->data, o.v) == 0, "%s", err_msg());
	for (int i = 0; i < 2; i++)
		CHECK(memcmp(o.v[i], inf.v[i], out_count(&o, i) * sizeof(float)) == 0);
	CHECK(model_forward(m, img->data, o.v) < 0);
	out_free(&o);
	model_set_integer_only(m, 0);

	/* QAT: the training plan, stats on */
	CHECK_MSG(model_plan(m, n, S, S, 1, 1) == 0, "%s", err_msg());
	model_set_stats(m, 1);
	out_alloc(m, &o);
	float *dimg = calloc((size_t)tensor_numel(img), sizeof(float));
	CHECK_MSG(model_forward(m, img->data, o.v) == 0, "%s", err_msg());
	CHECK(model_forward_integer(m, img->data, o.v) < 0); /* inference only */
	compare_outputs("training vs the reference", &o, NULL);
	compare_outputs("training vs inference", &o, &inf);
	record *st = model_stats_record(m);
	CHECK(st != NULL);
	if (st)
		compare_points("stats of the quantised forward", st, recs[R_QSTATS]);
	record_free(st);
	const float *dout[2] = {T(recs[R_GRAD], "cls")->data, T(recs[R_GRAD], "reg")->data};
	CHECK(tensor_numel(T(recs[R_GRAD], "cls")) == (int64_t)out_count(&o, 0) &&
	      tensor_numel(T(recs[R_GRAD], "reg")) == (int64_t)out_count(&o, 1));
	CHECK_MSG(model_backward(m, dout, dimg) == 0, "%s", err_msg());

	const record *ref = recs[R_GRADS];
	record *g = model_grads_record(m);
	CHECK(g != NULL);
	double worst[3] = {0}, w_img;
	int per_part[3] = {0}, counted = 0;
	for (int i = 0; g && i < g->ntensors; i++) {
		const tensor *c = &g->tensors[i], *t = record_find(ref, c->name);
		CHECK_MSG(!strstr(c->name, ".batch_"), "grads: %s (a folded BN keeps its running statistics)",
			  c->name);
		CHECK_MSG(t != NULL, "grads: the reference has no %s", c->name);
		if (!t || tensor_numel(t) != tensor_numel(c)) {
			CHECK(t == NULL);
			continue;
		}
		double r = rel_diff(c->data, t->data, (size_t)tensor_numel(t));
		CHECK_MSG(r <= GRAD_TOL, "grads: %s: relative difference %.3g", c->name, r);
		int part = !strncmp(c->name, "neck", 4) ? 1 : !strncmp(c->name, "bbox_head", 9) ? 2 : 0;
		if (r > worst[part])
			worst[part] = r;
		per_part[part]++;
		counted++;
	}
	CHECK_MSG(counted + 1 == ref->ntensors, "grads: %d tensors compared, the reference has %d + image", counted,
		  ref->ntensors - 1);
	static const char *const parts[3] = {"backbone", "neck", "bbox_head"};
	for (int p = 0; p < 3; p++)
		printf("  QAT grads %-9s (%3d tensors): max relative difference %.2e\n", parts[p], per_part[p],
		       worst[p]);
	w_img = rel_diff(dimg, T(ref, "image")->data, (size_t)tensor_numel(img));
	printf("  QAT grad of the image: relative difference %.2e\n", w_img);
	CHECK_MSG(w_img <= GRAD_TOL, "d image: relative difference %.3g", w_img);

	/* a second step on the same plan: the same gradients, bit for bit */
	float *first = malloc(model_param_floats(m) * sizeof(float));
	memcpy(first, model_grads(m), model_param_floats(m) * sizeof(float));
	CHECK(model_forward(m, img->data, o.v) == 0);
	CHECK(model_backward(m, dout, dimg) == 0);
	CHECK_MSG(!memcmp(first, model_grads(m), model_param_floats(m) * sizeof(float)),
		  "a second QAT step gives other gradients");
	free(first);

	/* inference again after training: the same outputs */
	CHECK(model_plan(m, n, S, S, 0, 0) == 0);
	CHECK(model_forward(m, img->data, o.v) == 0);
	for (int i = 0; i < 2; i++)
		CHECK_MSG(!memcmp(o.v[i], inf.v[i], out_count(&o, i) * sizeof(float)),
			  "output %d: inference after training differs", i);

	record_free(g);
	free(dimg);
	out_free(&o);
	out_free(&inf);
	model_free(m);
}

/* model_set_weight_bits: only on a quantised model, 2 to its bits */
static void test_weight_bits_errors(void)
{
	model *m = model_load(CONFIG);
	CHECK_MSG(m != NULL, "%s", err_msg());
	if (!m)
		return;
	CHECK(model_set_weight_bits(m, 4) < 0 && strstr(err_msg(), "not quantised"));
	CHECK(model_quantize(m, 8) == 0);
	CHECK(model_set_weight_bits(m, 9) < 0 && strstr(err_msg(), "2 to the activations' 8"));
	CHECK(model_set_weight_bits(m, 1) < 0);
	CHECK(model_set_weight_bits(m, 2) == 0 && model_set_weight_bits(m, 8) == 0);
	model_free(m);
}

/* A model fixture of another family (params, batch: tests/ref_model.py), calibrated on
 * its own batch: at 8 bits the integer path equals the simulation bit for bit; at 16
 * bits it is close (check_int_path). */
/* A per-channel model's qparams: each depthwise conv's weights at its channels' own
 * scales, each channel using its range (2^(bits-2) <= max|q| <= 2^(bits-1)), q *
 * 2^-frac the dequantised weight; and some conv whose channels' scales differ. */
static void check_per_channel(model *m, int bits, const char *name)
{
	record *qp = model_qparams_record(m);
	CHECK_MSG(qp != NULL, "%s", err_msg());
	int convs = 0, differ = 0, bad = 0;
	for (int i = 0; qp && i < qp->ntensors; i++) {
		const tensor *wf = &qp->tensors[i];
		const char *sfx = strrchr(wf->name, '.');
		if (!sfx || strcmp(sfx, ".weight_frac"))
			continue;
		char base[TENSOR_NAMELEN];
		snprintf(base, sizeof base, "%.*s", (int)(sfx - wf->name), wf->name);
		char nq[TENSOR_NAMELEN + 16], nw[TENSOR_NAMELEN + 16];
		snprintf(nq, sizeof nq, "%s.weight_q", base);
		snprintf(nw, sizeof nw, "%s.weight", base);
		const tensor *q = record_find(qp, nq), *w = record_find(qp, nw);
		CHECK(q && w && q->dtype == DT_I8 && wf->dtype == DT_I32);
		if (!q || !w)
			continue;
		int64_t c = wf->shape[0], per = tensor_numel(q) / c;
		const int32_t *f = wf->data;
		convs++;
		for (int64_t k = 0; k < c; k++) {
			differ += f[k] != f[0];
			int mx = 0;
			for (int64_t j = 0; j < per; j++) {
				int v = ((const int8_t *)q->data)[k * per + j];
				mx = abs(v) > mx ? abs(v) : mx;
				bad += ldexpf((float)v, -f[k]) != ((const float *)w->data)[k * per + j];
			}
			bad += mx && (mx < 1 << (bits - 2) || mx > 1 << (bits - 1));
		}
	}
	printf("  %s: per-channel depthwise weights: %d convs, %d channels at another scale than their first\n", name,
	       convs, differ);
	CHECK_MSG(convs > 0 && differ > 0 && bad == 0, "%s: per channel: %d convs, %d differ, %d bad", name, convs,
		  differ, bad);
	CHECK(qp && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qp->meta, "per_channel_dw")));
	record_free(qp);
}

static void test_int_family(const char *name, int bits, int wbits, int per_channel)
{
	char path[256];
	record **fx;
	snprintf(path, sizeof path, "tests/fixtures/model/%s.tns", name);
	int nfx = read_all(path, &fx);
	snprintf(path, sizeof path, "tests/fixtures/model/%s.json", name);
	model *m = model_load(path);
	CHECK_MSG(m && nfx >= 2, "%s: %s", name, err_msg());
	if (!m || nfx < 2)
		return;
	const tensor *img = T(fx[1], "image");
	int n = (int)img->shape[0], S = (int)img->shape[2];
	CHECK_MSG(model_quantize(m, bits) == 0 && model_set_weight_bits(m, wbits) == 0 &&
			  model_set_per_channel_dw(m, per_channel) == 0 && model_load_params(m, fx[0]) == 0,
		  "%s", err_msg());
	model_set_stats(m, 1);
	CHECK_MSG(model_plan(m, n, S, S, 0, 0) == 0, "%s", err_msg());
	outbuf sim;
	out_alloc(m, &sim);
	CHECK_MSG(model_forward(m, img->data, sim.v) == 0, "%s", err_msg());
	record *st = model_stats_record(m), *ranges = record_new("ranges");
	CHECK_MSG(st && ranges_update(ranges, st) == 0, "%s", err_msg());
	model_set_stats(m, 0);
	CHECK_MSG(model_load_ranges(m, ranges) == 0, "%s", err_msg());
	CHECK_MSG(model_plan(m, n, S, S, 0, 0) == 0, "%s", err_msg());
	CHECK_MSG(model_forward(m, img->data, sim.v) == 0, "%s", err_msg());
	check_int_path(m, img, &sim, name, bits == 8 ? 0 : INT16_TOL);
	if (per_channel)
		check_per_channel(m, wbits, name);
	if (wbits < bits) {
		/* the conv weights are wbits-bit integers, the rest as before */
		record *qp = model_qparams_record(m);
		CHECK_MSG(qp != NULL, "%s", err_msg());
		int convs = 0, bad = 0, lo = 0, hi = 0;
		for (int i = 0; qp && i < qp->ntensors; i++) {
			const tensor *t = &qp->tensors[i];
			const char *sfx = strrchr(t->name, '.');
			if (!sfx || strcmp(sfx, ".weight_q"))
				continue;
			convs++;
			CHECK(t->dtype == DT_I8);
			for (int64_t j = 0; j < tensor_numel(t); j++) {
				int v = ((const int8_t *)t->data)[j];
				bad += v < -(1 << (wbits - 1)) || v > (1 << (wbits - 1)) - 1;
				lo = v < lo ? v : lo;
				hi = v > hi ? v : hi;
			}
		}
		printf("  %s: %d-bit weights: %d convs, integers in [%d, %d]\n", name, wbits, convs, lo, hi);
		CHECK_MSG(convs > 0 && bad == 0 && lo == -(1 << (wbits - 1)) && hi >= (1 << (wbits - 2)),
			  "%s: %d-bit weights: %d outside, range [%d, %d]", name, wbits, bad, lo, hi);
		CHECK(qp && meta_num(qp, "weight_bits", 0) == wbits && meta_num(qp, "bits", 0) == bits);
		record_free(qp);
	}
	out_free(&sim);
	record_free(st);
	record_free(ranges);
	model_free(m);
	free_all(fx, nfx);
}

int main(void)
{
	nrecs = read_all(FIX "tiny_q8.tns", &recs);
	CHECK(nrecs == R_COUNT);
	if (nrecs != R_COUNT)
		return check_done("test_qmodel");
	for (int i = 0; i < R_COUNT; i++)
		CHECK_MSG(!strcmp(recs[i]->kind, kinds[i]), "fixture record %d is '%s', expected '%s'", i, recs[i]->kind,
			  kinds[i]);
	test_points_and_calibration();
	test_quantised();
	static const char *const families[] = {"tiny", "tiny_resnet", "tiny_regnet", "tiny_vgg"};
	for (int bits = 8; bits <= 16; bits += 8)
		for (size_t i = bits == 8; i < sizeof families / sizeof *families; i++)
			test_int_family(families[i], bits, bits, 0);
	/* 4-bit weights with 8-bit activations (the integer path is exact there too) */
	test_int_family("tiny_regnet", 8, 4, 0);
	test_int_family("tiny_vgg", 8, 4, 0);
	/* per-channel depthwise weights (MobileNetV2's, RegNet's are grouped, not depthwise) */
	test_int_family("tiny", 8, 8, 1);
	test_int_family("tiny", 8, 4, 1);
	test_weight_bits_errors();
	free_all(recs, nrecs);
	return check_done("test_qmodel");
}
