/* test_loss: the SSD training loss against tests/ref_loss.py's torch fixtures
 * (tests/fixtures/loss/): identical assignments and hard-negative choices, loss to 1e-5
 * relative, gradient to 1e-4 relative to its largest element; the grid-ranged assigner
 * against brute force; threads against one thread; the record layer, config and bad
 * inputs. Prints the largest differences per fixture and ms per batch of 8 at 512. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fixture.h"
#include "core/err.h"
#include "core/rng.h"
#include "ssd/ssd_loss.h"
#include "core/stream.h"

#define FIX "tests/fixtures/loss/"

static const void *data(const record *r, const char *name, enum dtype dt)
{
	const tensor *t = record_find(r, name);
	if (!t || t->dtype != dt) {
		fprintf(stderr, "%s: no tensor %s of the expected dtype\n", r->kind, name);
		exit(1);
	}
	return t->data;
}

/* max|c - t| / max(max|t|, 1e-12) */
static double rel_diff(const float *c, const float *t, int64_t n)
{
	double d = 0, m = 0;
	for (int64_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)c[i] - t[i]));
		m = fmax(m, fabs((double)t[i]));
	}
	return d / fmax(m, 1e-12);
}

static double rel(double c, double t)
{
	return fabs(c - t) / fmax(fabs(t), 1e-12);
}

static void batch_of(const record *p, loss_batch *b, int *S)
{
	const tensor *cls = record_find(p, "cls"), *bx = record_find(p, "boxes");
	b->N = cls->shape[0];
	b->A = cls->shape[1];
	b->C = (int)cls->shape[2] - 1;
	b->M = bx->shape[1];
	b->cls = data(p, "cls", DT_F32);
	b->reg = data(p, "reg", DT_F32);
	b->boxes = data(p, "boxes", DT_F32);
	b->labels = data(p, "labels", DT_I32);
	b->nbox = data(p, "nbox", DT_I32);
	*S = (int)meta_num(p, "size", 0);
}

/* One fixture: every pred record against its expect record, with 1 and 2 threads. */
static void check_case(const char *name, const char *config)
{
	char pp[256], ep[256];
	snprintf(pp, sizeof pp, FIX "%s.tns", name);
	snprintf(ep, sizeof ep, FIX "%s_expect.tns", name);
	record **in, **ex;
	int nin = read_all(pp, &in), nex = read_all(ep, &ex);
	CHECK(nin > 0 && nex > 0);
	head_config m;
	loss_params p;
	head_config_default(&m);
	loss_params_default(&p);
	if (config)
		CHECK_MSG(loss_config_load(&m, &p, config) == 0, "%s", err_msg());
	ssd_loss *l1 = ssd_loss_new(&m, &p, 1), *l2 = ssd_loss_new(&m, &p, 2);
	int e = 0;
	double worst_loss = 0, worst_grad = 0;
	for (int i = 0; i < nin && e < nex; i++) {
		if (strcmp(in[i]->kind, "pred"))
			continue;
		const record *x = ex[e++];
		loss_batch b;
		int S;
		batch_of(in[i], &b, &S);
		int64_t K = b.C + 1, NA = b.N * b.A;
		float *dcls = malloc((size_t)(NA * K) * sizeof *dcls), *dreg = malloc((size_t)NA * 4 * sizeof *dreg);
		float *dcls2 = malloc((size_t)(NA * K) * sizeof *dcls), *dreg2 = malloc((size_t)NA * 4 * sizeof *dreg);
		int32_t *as = malloc((size_t)NA * sizeof *as), *as2 = malloc((size_t)NA * sizeof *as);
		loss_result r, r2;
		CHECK_MSG(ssd_loss_run(l1, S, &b, dcls, dreg, as, &r) == 0, "%s: %s", name, err_msg());
		CHECK_MSG(ssd_loss_run(l2, S, &b, dcls2, dreg2, as2, &r2) == 0, "%s: %s", name, err_msg());

		/* assignments, target labels and the mined set, exactly */
		const int32_t *xa = data(x, "assigned", DT_I32), *xl = data(x, "labels", DT_I32);
		const uint8_t *xs = data(x, "selected", DT_U8);
		int64_t bad_a = 0, bad_l = 0, bad_s = 0;
		for (int64_t n = 0; n < b.N; n++)
			for (int64_t a = 0; a < b.A; a++) {
				int64_t i2 = n * b.A + a;
				int32_t v = as[i2];
				int32_t lab = v < 0 ? -1 : v == 0 ? b.C : b.labels[n * b.M + v - 1];
				int sel = 0;
				for (int64_t j = 0; j < K; j++)
					sel |= dcls[i2 * K + j] != 0;
				bad_a += v != xa[i2];
				bad_l += lab != xl[i2];
				bad_s += sel != xs[i2];
			}
		CHECK_MSG(bad_a == 0, "%s: %lld anchors assigned differently", name, (long long)bad_a);
		CHECK_MSG(bad_l == 0, "%s: %lld anchor labels differ", name, (long long)bad_l);
		CHECK_MSG(bad_s == 0, "%s: %lld anchors selected differently", name, (long long)bad_s);

		/* numbers */
		double lc = meta_num(x, "loss_cls", NAN), lb = meta_num(x, "loss_bbox", NAN), lt = meta_num(x, "loss", NAN);
		CHECK_MSG(rel(r.loss_cls, lc) <= 1e-5, "%s: loss_cls %.9g, torch %.9g", name, r.loss_cls, lc);
		CHECK_MSG(rel(r.loss_bbox, lb) <= 1e-5, "%s: loss_bbox %.9g, torch %.9g", name, r.loss_bbox, lb);
		CHECK_MSG(rel(r.loss_cls + r.loss_bbox, lt) <= 1e-5, "%s: loss %.9g, torch %.9g", name,
			  r.loss_cls + r.loss_bbox, lt);
		CHECK(r.num_pos == (int64_t)meta_num(x, "num_pos", -1));
		CHECK(r.num_neg == (int64_t)meta_num(x, "num_neg", -1));
		CHECK(r.num_total_pos == (int64_t)meta_num(x, "num_total_pos", -1));
		double gc = rel_diff(dcls, data(x, "cls", DT_F32), NA * K);
		double gr = rel_diff(dreg, data(x, "reg", DT_F32), NA * 4);
		CHECK_MSG(gc <= 1e-4, "%s: dcls differs by %.3g relative", name, gc);
		CHECK_MSG(gr <= 1e-4, "%s: dreg differs by %.3g relative", name, gr);
		worst_loss = fmax(worst_loss, fmax(rel(r.loss_cls, lc), rel(r.loss_bbox, lb)));
		worst_grad = fmax(worst_grad, fmax(gc, gr));

		/* two threads: the same bits */
		CHECK(r2.loss_cls == r.loss_cls && r2.loss_bbox == r.loss_bbox && r2.num_neg == r.num_neg);
		CHECK(!memcmp(dcls, dcls2, (size_t)(NA * K) * sizeof *dcls));
		CHECK(!memcmp(dreg, dreg2, (size_t)NA * 4 * sizeof *dreg));
		CHECK(!memcmp(as, as2, (size_t)NA * sizeof *as));

		/* without a gradient: the same loss */
		loss_result r3;
		CHECK(ssd_loss_run(l1, S, &b, NULL, NULL, NULL, &r3) == 0);
		CHECK(r3.loss_cls == r.loss_cls && r3.loss_bbox == r.loss_bbox && r3.num_neg == r.num_neg);
		free(dcls);
		free(dreg);
		free(dcls2);
		free(dreg2);
		free(as);
		free(as2);
	}
	CHECK_MSG(e == nex, "%s: %d pred records for %d expect records", name, e, nex);
	printf("%-7s %d pred records: loss within %.2e relative, gradient within %.2e relative of torch\n", name, e,
	       worst_loss, worst_grad);
	ssd_loss_free(l1);
	ssd_loss_free(l2);
	free_all(in, nin);
	free_all(ex, nex);
}

static double uniform(rng *r, double lo, double hi)
{
	return lo + (hi - lo) * rng_double(r);
}

/* The grid-ranged assigner visits only anchors that can overlap: the same result as
 * brute force, bit for bit, over sizes, box shapes and thresholds. */
static void check_assign_ref(void)
{
	anchor_config ac;
	anchor_config_default(&ac);
	rng r;
	rng_seed3(&r, 5, 0, 0);
	static const int sizes[] = {64, 96, 300, 320, 512};
	int64_t mismatches = 0, trials = 0;
	for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
		anchor_set *an = anchors_new(&ac, sizes[si]);
		int64_t A = an->count;
		int32_t *a1 = malloc((size_t)A * sizeof *a1), *a2 = malloc((size_t)A * sizeof *a2);
		float *m1 = malloc((size_t)A * sizeof *m1), *m2 = malloc((size_t)A * sizeof *m2);
		for (int t = 0; t < 12; t++) {
			int G = 1 + t * 3;
			float gt[40 * 4], b1[40], b2[40];
			int64_t g1[40], g2[40];
			double S = sizes[si];
			for (int g = 0; g < G; g++) {
				double w = uniform(&r, 0.3, t % 3 ? 0.9 * S : 4), h = uniform(&r, 0.3, t % 2 ? 0.9 * S : 6);
				double x = uniform(&r, -0.1 * S, S - 0.9 * w), y = uniform(&r, -0.1 * S, S - 0.9 * h);
				if (t == 5 && g == 1) /* a box outside the image */
					x = S + 10;
				gt[4 * g] = (float)x;
				gt[4 * g + 1] = (float)y;
				gt[4 * g + 2] = (float)(x + w);
				gt[4 * g + 3] = (float)(y + h);
			}
			loss_params p;
			loss_params_default(&p);
			if (t % 4 == 3) {
				p.neg_iou_thr = 0.3;
				p.pos_iou_thr = 0.6;
				p.min_pos_iou = 0.2;
			}
			ssd_assign(a1, m1, b1, g1, an, gt, G, &p);
			ssd_assign_ref(a2, m2, b2, g2, an->boxes, A, gt, G, &p);
			trials++;
			mismatches += memcmp(a1, a2, (size_t)A * sizeof *a1) || memcmp(m1, m2, (size_t)A * sizeof *m1) ||
				      memcmp(b1, b2, (size_t)G * sizeof *b1) || memcmp(g1, g2, (size_t)G * sizeof *g1);
		}
		free(a1);
		free(a2);
		free(m1);
		free(m2);
		anchors_free(an);
	}
	CHECK_MSG(mismatches == 0, "%lld of %lld assignments differ from brute force", (long long)mismatches,
		  (long long)trials);
}

/* The softmax's exp against libm's double exp over [-87, 0]. */
static void check_exp(void)
{
	double worst = 0;
	for (int i = 0; i <= 870000; i++) {
		float x = -(float)i * 1e-4f;
		worst = fmax(worst, fabs(ssd_exp_neg(x) / exp((double)x) - 1));
	}
	CHECK_MSG(worst < 3e-7, "exp_neg: relative error %.3g", worst);
	CHECK(ssd_exp_neg(0) == 1.0f && ssd_exp_neg(-1000) > 0 && ssd_exp_neg(-1000) < 1e-37f);
}

/* Hand-worked: an image without gts alone adds nothing (num_total_pos 1, zero gradient). */
static void check_empty(void)
{
	head_config m;
	loss_params p;
	head_config_default(&m);
	loss_params_default(&p);
	ssd_loss *l = ssd_loss_new(&m, &p, 2);
	int64_t A = 392, K = 3;
	float *cls = calloc((size_t)(A * K), sizeof *cls), *reg = calloc((size_t)A * 4, sizeof *reg);
	float *dc = malloc((size_t)(A * K) * sizeof *dc), *dr = malloc((size_t)A * 4 * sizeof *dr);
	for (int64_t i = 0; i < A * K; i++)
		cls[i] = (float)(i % 7) - 3, dc[i] = 1;
	float box[4] = {0};
	int32_t lab[1] = {-1}, nbox[1] = {0};
	loss_batch b = {.N = 1, .A = A, .M = 1, .C = 2, .cls = cls, .reg = reg, .boxes = box, .labels = lab, .nbox = nbox};
	loss_result r;
	CHECK(ssd_loss_run(l, 64, &b, dc, dr, NULL, &r) == 0);
	CHECK(r.loss_cls == 0 && r.loss_bbox == 0 && r.num_pos == 0 && r.num_neg == 0 && r.num_total_pos == 1);
	int nz = 0;
	for (int64_t i = 0; i < A * K; i++)
		nz += dc[i] != 0;
	CHECK(nz == 0);
	/* one zero-area box is left out: the same */
	float zero[4] = {10, 10, 10, 20};
	int32_t lab1[1] = {1}, nbox1[1] = {1};
	b.boxes = zero;
	b.labels = lab1;
	b.nbox = nbox1;
	CHECK(ssd_loss_run(l, 64, &b, dc, dr, NULL, &r) == 0);
	CHECK(r.loss_cls == 0 && r.num_pos == 0 && r.num_total_pos == 1);
	/* a wrong anchor count, an inverted box, a bad label */
	CHECK(ssd_loss_run(l, 96, &b, dc, dr, NULL, &r) < 0 && strstr(err_msg(), "anchor config gives 880"));
	float inv[4] = {10, 10, 9, 20};
	b.boxes = inv;
	CHECK(ssd_loss_run(l, 64, &b, dc, dr, NULL, &r) < 0 && strstr(err_msg(), "x2 < x1"));
	lab1[0] = 2;
	b.boxes = zero;
	CHECK(ssd_loss_run(l, 64, &b, dc, dr, NULL, &r) < 0 && strstr(err_msg(), "label 2"));
	ssd_loss_free(l);
	free(cls);
	free(reg);
	free(dc);
	free(dr);
}

/* The loss with the default settings (TI's ssd_mobilenet_fpn); it copies them. */
static ssd_loss *default_loss(int threads)
{
	head_config m;
	loss_params p;
	head_config_default(&m);
	loss_params_default(&p);
	return ssd_loss_new(&m, &p, threads);
}

/* The record layer: grad and loss records of the first small pred. */
static void check_records(void)
{
	record **in;
	int n = read_all(FIX "small.tns", &in);
	CHECK(n == 5);
	ssd_loss *l = default_loss(2);
	record *g = NULL, *o = NULL;
	CHECK_MSG(ssd_loss_record(l, in[0], &g, &o) == 0, "%s", err_msg());
	if (g && o) {
		CHECK(!strcmp(g->kind, "grad") && g->ntensors == 2);
		const tensor *c = record_find(g, "cls"), *r = record_find(g, "reg");
		CHECK(c && c->ndim == 3 && c->shape[0] == 5 && c->shape[1] == 392 && c->shape[2] == 21);
		CHECK(r && r->ndim == 3 && r->shape[0] == 5 && r->shape[1] == 392 && r->shape[2] == 4);
		CHECK(meta_num(g, "step", -1) == 7 && cJSON_GetArraySize(cJSON_GetObjectItem(g->meta, "ids")) == 5);
		CHECK(!strcmp(o->kind, "loss") && o->ntensors == 0);
		CHECK(meta_num(o, "images", -1) == 5 && meta_num(o, "epoch", -1) == 1 && meta_num(o, "step", -1) == 7);
		CHECK(fabs(meta_num(o, "loss", 0) - meta_num(o, "loss_cls", 0) - meta_num(o, "loss_bbox", 0)) < 1e-9);
		CHECK(cJSON_GetObjectItem(o->meta, "indices") && cJSON_GetObjectItem(o->meta, "num_pos"));
	}
	record_free(g);
	record_free(o);
	/* no gradient wanted */
	CHECK(ssd_loss_record(l, in[0], NULL, &o) == 0 && o);
	record_free(o);

	static const struct { const char *file, *msg; } bad[] = {
		{"bad_label.tns", "image 0 (img001): box 1 has label 20, expected 0..19"},
		{"bad_nan.tns", "image 1 (img004): non-finite value in 'cls'"},
		{"bad_box.tns", "image 1 (img004): box 0 is"},
		{"bad_noreg.tns", "pred record has no tensor 'reg'"},
		{"bad_regshape.tns", "tensor 'reg' is f32[2,392,3], expected dimension 2 to be 4"},
		{"bad_nosize.tns", "meta.size"},
		{"bad_anchors.tns", "392 anchors in the pred, but the anchor config gives 880 at input size 96"},
		{"bad_frame.tns", "boxes_frame is \"original\""},
		{"bad_nbox.tns", "nbox 99 outside 0..14"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char path[256];
		snprintf(path, sizeof path, FIX "%s", bad[i].file);
		record **v;
		int k = read_all(path, &v);
		CHECK(k == 1);
		if (k == 1) {
			int rc = ssd_loss_record(l, v[0], &g, &o);
			CHECK_MSG(rc < 0 && strstr(err_msg(), bad[i].msg), "%s: rc %d, message '%s'", bad[i].file, rc,
				  rc < 0 ? err_msg() : "");
			CHECK(!g && !o);
		}
		free_all(v, k);
	}
	ssd_loss_free(l);
	free_all(in, n);
}

/* images [first, first + n) of a pred record, as a pred record */
static record *pred_part(const record *pred, int64_t first, int64_t n)
{
	static const char *const names[] = {"cls", "reg", "boxes", "labels", "nbox"};
	record *r = record_new("pred");
	for (int i = 0; i < 5; i++) {
		const tensor *t = record_find(pred, names[i]);
		int64_t shape[TENSOR_MAXDIM];
		memcpy(shape, t->shape, sizeof shape);
		shape[0] = n;
		tensor *c = record_add(r, names[i], t->dtype, t->ndim, shape);
		size_t row = tensor_nbytes(t) / (size_t)t->shape[0];
		memcpy(c->data, (const char *)t->data + first * row, (size_t)n * row);
	}
	cJSON_AddNumberToObject(r->meta, "size", meta_num(pred, "size", 0));
	return r;
}

/* A batch in two parts (data-parallel ranks): each part's gradient rescaled by
 * ssd_grad_global to the summed normaliser is the whole batch's, rows for rows, and
 * the combined loss is the whole batch's loss. */
static void check_parts(void)
{
	record **in;
	int n = read_all(FIX "small.tns", &in);
	CHECK(n == 5);
	ssd_loss *l = default_loss(1);
	int64_t N = record_find(in[0], "cls")->shape[0], cut = 3;
	record *part[2] = {pred_part(in[0], 0, cut), pred_part(in[0], cut, N - cut)}, *g[2], *o[2], *gw, *ow;
	double mine[2][SSD_GRAD_SUMS], all[SSD_GRAD_SUMS] = {0};
	CHECK(ssd_loss_record(l, in[0], &gw, &ow) == 0);
	for (int k = 0; k < 2; k++) {
		CHECK_MSG(ssd_loss_record(l, part[k], &g[k], &o[k]) == 0, "%s", err_msg());
		CHECK(ssd_grad_sums(g[k], mine[k]) == 0);
		for (int i = 0; i < SSD_GRAD_SUMS; i++)
			all[i] += mine[k][i];
	}
	cJSON *glob[2];
	for (int k = 0; k < 2; k++)
		CHECK((glob[k] = ssd_grad_global(g[k], mine[k], all, 2)) != NULL);
	static const char *const names[] = {"cls", "reg"};
	for (int i = 0; i < 2; i++) {
		const tensor *w = record_find(gw, names[i]);
		size_t row = (size_t)tensor_numel(w) / (size_t)N;
		CHECK(rel_diff(record_find(g[0], names[i])->data, w->data, (int64_t)(cut * row)) < 1e-6);
		CHECK(rel_diff(record_find(g[1], names[i])->data, (const float *)w->data + cut * row,
			       (int64_t)((N - cut) * row)) < 1e-6);
	}
	const cJSON *v = cJSON_GetObjectItem(glob[0], "loss");
	CHECK(cJSON_IsNumber(v) && rel(v->valuedouble, meta_num(ow, "loss", 0)) < 1e-9);
	CHECK(cJSON_GetObjectItem(glob[1], "images")->valuedouble == N);
	CHECK(cJSON_GetObjectItem(glob[1], "num_pos")->valuedouble == meta_num(ow, "num_pos", -1));
	/* a grad record without the numbers is an error */
	cJSON_DeleteItemFromObject(gw->meta, "num_total_pos");
	CHECK(ssd_grad_sums(gw, all) < 0 && strstr(err_msg(), "num_total_pos"));
	for (int k = 0; k < 2; k++) {
		cJSON_Delete(glob[k]);
		record_free(part[k]);
		record_free(g[k]);
		record_free(o[k]);
	}
	record_free(gw);
	record_free(ow);
	ssd_loss_free(l);
	free_all(in, n);
}

static void check_config(void)
{
	loss_params p;
	loss_params_default(&p);
	cJSON *j = cJSON_Parse("{\"pos_iou_thr\": 0.7, \"neg_pos_ratio\": 5}");
	CHECK(loss_params_apply(&p, j, "t") == 0 && p.pos_iou_thr == 0.7 && p.neg_pos_ratio == 5 && p.neg_iou_thr == 0.5);
	cJSON_Delete(j);
	j = cJSON_Parse("{\"neg_pos_ratio\": 2.5}");
	CHECK(loss_params_apply(&p, j, "t") < 0 && strstr(err_msg(), "t.neg_pos_ratio: expected an integer"));
	cJSON_Delete(j);
	j = cJSON_Parse("{\"smoothl1\": 1}");
	CHECK(loss_params_apply(&p, j, "t") < 0 && strstr(err_msg(), "t.smoothl1: unknown key"));
	cJSON_Delete(j);
	j = cJSON_Parse("{\"pos_iou_thr\": 1.5}");
	CHECK(loss_params_apply(&p, j, "t") < 0 && p.pos_iou_thr == 0.7);
	cJSON_Delete(j);
	head_config m;
	head_config_default(&m);
	loss_params_default(&p);
	CHECK(loss_config_load(&m, &p, FIX "custom.json") == 0 && p.neg_pos_ratio == 2 && p.smoothl1_beta == 0.5 &&
	      m.coder.stds[2] == 0.25);
	/* the real config has no train section yet: defaults */
	loss_params_default(&p);
	CHECK(loss_config_load(&m, &p, "configs/ssd_mobilenet_fpn.json") == 0 && p.neg_pos_ratio == 3);
}

/* ms per batch of 8 at 512, 20 gts per image, VOC's 20 classes. */
static void bench(void)
{
	head_config m;
	loss_params p;
	head_config_default(&m);
	loss_params_default(&p);
	int64_t N = 8, A = 24560, K = 21, M = 20;
	float *cls = malloc((size_t)(N * A * K) * sizeof *cls), *reg = malloc((size_t)(N * A * 4) * sizeof *reg);
	float *dc = malloc((size_t)(N * A * K) * sizeof *dc), *dr = malloc((size_t)(N * A * 4) * sizeof *dr);
	float *boxes = malloc((size_t)(N * M * 4) * sizeof *boxes);
	int32_t labels[8 * 20], nbox[8];
	rng r;
	rng_seed3(&r, 9, 0, 0);
	for (int64_t i = 0; i < N * A * K; i++)
		cls[i] = (float)uniform(&r, -3, 3);
	for (int64_t i = 0; i < N * A * 4; i++)
		reg[i] = (float)uniform(&r, -1, 1);
	for (int64_t i = 0; i < N * M; i++) {
		double w = uniform(&r, 10, 250), h = uniform(&r, 10, 250), x = uniform(&r, 0, 512 - w), y = uniform(&r, 0, 512 - h);
		float *b = boxes + 4 * i;
		b[0] = (float)x, b[1] = (float)y, b[2] = (float)(x + w), b[3] = (float)(y + h);
		labels[i] = (int32_t)(i % 20);
	}
	for (int n = 0; n < N; n++)
		nbox[n] = (int32_t)M;
	loss_batch b = {.N = N, .A = A, .M = M, .C = 20, .cls = cls, .reg = reg, .boxes = boxes, .labels = labels, .nbox = nbox};
	for (int threads = 1; threads <= 2; threads++) {
		ssd_loss *l = ssd_loss_new(&m, &p, threads);
		loss_result res;
		double best = 1e9;
		for (int rep = 0; rep < 5; rep++) {
			struct timespec t0, t1;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			CHECK(ssd_loss_run(l, 512, &b, dc, dr, NULL, &res) == 0);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			best = fmin(best, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6);
		}
		printf("batch of 8 at 512 (24560 anchors, 20 gts, 21 classes), %d thread%s: %.2f ms (best of 5; %lld pos)\n",
		       threads, threads > 1 ? "s" : "", best, (long long)res.num_pos);
		ssd_loss_free(l);
	}
	free(cls);
	free(reg);
	free(dc);
	free(dr);
	free(boxes);
}

int main(void)
{
	check_case("small", NULL);
	check_case("custom", FIX "custom.json");
	check_parts();
	check_case("s320", NULL);
	check_assign_ref();
	check_exp();
	check_empty();
	check_records();
	check_config();
	bench();
	return check_done("test_loss");
}
