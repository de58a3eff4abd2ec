/* test_detect: anchors, box coder, IoU, NMS and SSD post-processing against
 * tests/ref_detect.py's fixtures (tests/fixtures/detect/) and hand-worked cases; the
 * "model" config section. Prints the largest difference per fixture. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture.h"
#include "core/config.h"
#include "ssd/detect.h"
#include "core/err.h"
#include "core/stream.h"

#define FIX "tests/fixtures/detect/"

static const float *f32(const record *r, const char *name, int64_t *n)
{
	const tensor *t = record_find(r, name);
	if (!t || t->dtype != DT_F32) {
		fprintf(stderr, "%s: no f32 tensor %s\n", r->kind, name);
		*n = 0;
		return NULL;
	}
	*n = tensor_numel(t);
	return t->data;
}

/* |a - b| <= tol * max(1, |b|) everywhere; returns the largest relative difference. */
static double rel_diff(const float *a, const float *b, int64_t n)
{
	double worst = 0;
	for (int64_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
		worst = d > worst || isnan(d) ? d : worst;
	}
	return worst;
}

static void test_anchors_fixture(void)
{
	record **v;
	int n = read_all(FIX "anchors.tns", &v);
	CHECK(n == 4);
	for (int i = 0; i < n; i++) {
		head_config m;
		head_config_default(&m);
		cJSON *model = cJSON_CreateObject();
		cJSON_AddItemToObject(model, "anchors",
				      cJSON_Duplicate(cJSON_GetObjectItem(v[i]->meta, "config"), 1));
		CHECK_MSG(head_config_apply(&m, model, "fixture") == 0, "%s", err_msg());
		cJSON_Delete(model);
		int size = (int)meta_num(v[i], "size", 0);
		anchor_set *a = anchors_new(&m.anchors, size);
		CHECK_MSG(a != NULL, "%s", err_msg());
		if (!a)
			continue;
		int64_t cnt;
		const float *want = f32(v[i], "boxes", &cnt);
		CHECK_MSG(a->count * 4 == cnt, "size %d: %lld anchors, reference %lld", size, (long long)a->count,
			  (long long)cnt / 4);
		const cJSON *levels = cJSON_GetObjectItem(v[i]->meta, "levels");
		CHECK(cJSON_GetArraySize(levels) == a->nlevels);
		for (int k = 0; k < a->nlevels; k++)
			CHECK(a->level[k].count == (int64_t)cJSON_GetArrayItem(levels, k)->valuedouble);
		if (a->count * 4 == cnt) {
			double d = rel_diff(a->boxes, want, cnt);
			printf("anchors %s S=%d: %lld boxes, max rel diff %.3g\n", meta_str(v[i], "name", "?"), size,
			       (long long)a->count, d);
			CHECK_MSG(d <= 1e-6, "anchors at %d differ by %g", size, d);
		}
		anchors_free(a);
	}
	free_all(v, n);
}

static void test_anchors_hand(void)
{
	anchor_config c;
	anchor_config_default(&c);
	anchor_set *a = anchors_new(&c, 512);
	CHECK(a && a->count == 24560);
	if (!a)
		return;
	/* SSD512 COCO sizes: (20, 51), (51, 153), (153, 256), (256, 358), (358, 460), (460, 563) */
	static const int mins[6] = {20, 51, 153, 256, 358, 460}, maxs[6] = {51, 153, 256, 358, 460, 563};
	static const int feats[6] = {64, 32, 16, 8, 4, 2}, nb[6] = {4, 6, 6, 6, 6, 4};
	for (int k = 0; k < 6; k++) {
		CHECK(a->level[k].min_size == mins[k] && a->level[k].max_size == maxs[k]);
		CHECK(a->level[k].feat_w == feats[k] && a->level[k].feat_h == feats[k] && a->level[k].nbase == nb[k]);
	}
	/* level 0, location (0, 0): centre 4; sizes 20, sqrt(20 * 51), then ratio 1/2 (w > h), 2 */
	const float *b = a->boxes;
	CHECK_NEAR(b[0], -6, 1e-5);
	CHECK_NEAR(b[3], 14, 1e-5);
	CHECK_NEAR(b[6] - b[4], sqrt(20.0 * 51), 1e-4);
	CHECK_NEAR(b[10] - b[8], 20 * sqrt(2.0), 1e-4);
	CHECK_NEAR(b[11] - b[9], 20 / sqrt(2.0), 1e-4);
	CHECK_NEAR(b[14] - b[12], 20 / sqrt(2.0), 1e-4);
	/* the next location to the right is shifted by the stride */
	CHECK_NEAR(b[16] - b[0], 8, 1e-6);
	/* location (y=1, x=0) of level 0 starts at 64 locations x 4 anchors */
	CHECK_NEAR(b[4 * 256 + 1] - b[1], 8, 1e-6);
	anchors_free(a);

	a = anchors_new(&c, 320);
	CHECK(a && a->count == 9620);
	anchors_free(a);
	/* centre offset 1: mmdet 1.x centres (stride - 1) / 2 */
	c.center_offset = 1;
	a = anchors_new(&c, 512);
	CHECK(a && fabsf(a->boxes[0] + 6.5f) < 1e-5f);
	anchors_free(a);

	anchor_config_default(&c);
	c.basesize_min = 0.12;
	CHECK(anchors_new(&c, 512) == NULL && strstr(err_msg(), "no first-level rule"));
	anchor_config_default(&c);
	c.basesize_max = 0.5; /* 10..50 in steps of 10: 5 + 1 sizes for 6 levels: fine */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.basesize_max = 0.95; /* 10..95 step 21: 10, 31, 52, 73, 94 -> 6: fine; 0.99: step 22, 5 -> 6 */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.nlevels = 5; /* step 26: 10, 36, 62, 88 -> 5 levels */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.basesize_max = 0.3; /* 10..30 step 6: 10, 16, 22, 28 -> 5 levels */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.basesize_max = 0.31; /* step 7: 10, 17, 24, 31 -> 5 */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.basesize_max = 0.34; /* step 8: 10, 18, 26, 34 -> 5 */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.basesize_max = 0.13; /* step 1: 10..13 -> 4 + 1 = 5 */
	a = anchors_new(&c, 512);
	CHECK(a != NULL);
	anchors_free(a);
	c.basesize_max = 0.15; /* step 1: 10..15 -> 7 levels of sizes for 5 strides */
	CHECK(anchors_new(&c, 512) == NULL && strstr(err_msg(), "gives 7 levels"));
}

static void test_iou_nms(void)
{
	float a[4] = {0, 0, 10, 10}, b[4] = {5, 0, 15, 10}, c[4] = {20, 20, 30, 30};
	CHECK_NEAR(box_iou(a, a, 0), 1, 0);
	CHECK_NEAR(box_iou(a, b, 0), 50.0 / 150, 1e-7);
	CHECK_NEAR(box_iou(a, c, 0), 0, 0);
	/* legacy: 11 x 11 boxes overlapping 6 x 11 */
	CHECK_NEAR(box_iou(a, b, 1), 66.0 / (242 - 66), 1e-7);
	float z[4] = {3, 3, 3, 3};
	CHECK_NEAR(box_iou(z, z, 0), 0, 0); /* zero area: no NaN */
	CHECK_NEAR(box_iou(z, a, 1), 1.0 / 121, 1e-7);

	/* NMS: IoU exactly at the threshold does not suppress; above it does */
	float boxes[5 * 4] = {0, 0, 10, 10, 5, 0, 15, 10, 1, 0, 11, 10, 20, 20, 30, 30, 0, 0, 10, 10};
	int64_t order[5] = {0, 1, 2, 3, 4}, keep[5];
	int64_t n = box_nms(keep, boxes, order, 5, (float)(1.0 / 3), 5);
	CHECK(n == 3 && keep[0] == 0 && keep[1] == 1 && keep[2] == 3);
	n = box_nms(keep, boxes, order, 5, 0.3f, 5);
	CHECK(n == 2 && keep[0] == 0 && keep[1] == 3);
	/* only kept boxes suppress: B (IoU 7/13 with A) goes, C (IoU 7/13 with B, 1/4 with A) stays */
	float chain[3 * 4] = {0, 0, 10, 10, 3, 0, 13, 10, 6, 0, 16, 10};
	n = box_nms(keep, chain, order, 3, 0.5f, 5);
	CHECK(n == 2 && keep[0] == 0 && keep[1] == 2);
	n = box_nms(keep, boxes, order, 5, 0.3f, 1);
	CHECK(n == 1 && keep[0] == 0);
	int64_t order2[3] = {4, 0, 3};
	n = box_nms(keep, boxes, order2, 3, 0.5f, 5);
	CHECK(n == 2 && keep[0] == 4 && keep[1] == 3);
	CHECK(box_nms(keep, boxes, order, 0, 0.5f, 5) == 0);
}

static void test_coder(void)
{
	record **v;
	int n = read_all(FIX "coder.tns", &v);
	CHECK(n == 1);
	if (n != 1)
		return;
	box_coder c;
	box_coder_default(&c);
	int64_t na, ng, nd, nr, nx, ny;
	const float *anc = f32(v[0], "anchors", &na), *gt = f32(v[0], "gt", &ng), *deltas = f32(v[0], "deltas", &nd),
		    *raw = f32(v[0], "raw", &nr), *dec = f32(v[0], "decoded", &nx), *decc = f32(v[0], "decoded_clip", &ny);
	int64_t cnt = na / 4;
	CHECK(na == ng && na == nd && na == nr && na == nx && na == ny);
	float *out = malloc((size_t)na * sizeof *out), *back = malloc((size_t)na * sizeof *back);
	box_encode(out, anc, gt, cnt, &c);
	double de = rel_diff(out, deltas, na);
	box_decode(out, anc, raw, cnt, &c, 0, 0);
	double dd = rel_diff(out, dec, na);
	box_decode(out, anc, raw, cnt, &c, 320, 320);
	double dc = rel_diff(out, decc, na);
	int inside = 1;
	for (int64_t i = 0; i < na; i++)
		inside &= out[i] >= 0 && out[i] <= 320;
	box_encode(out, anc, gt, cnt, &c);
	box_decode(back, anc, out, cnt, &c, 0, 0);
	double rt = rel_diff(back, gt, na);
	printf("coder: encode %.3g, decode %.3g, decode+clip %.3g, decode(encode(gt)) - gt %.3g (max rel diff)\n", de,
	       dd, dc, rt);
	CHECK(de <= 1e-5);
	CHECK(dd <= 1e-5);
	CHECK(dc <= 1e-5);
	CHECK(inside);
	CHECK(rt <= 1e-5);
	/* the dw clamp: a huge dw gives width pw * exp(|log 0.016|) = pw / 0.016 */
	float a1[4] = {0, 0, 10, 10}, d1[4] = {0, 0, 1000, -1000}, b1[4];
	box_decode(b1, a1, d1, 1, &c, 0, 0);
	CHECK_NEAR(b1[2] - b1[0], 10 / 0.016, 1e-2);
	CHECK_NEAR(b1[3] - b1[1], 10 * 0.016, 1e-5);
	/* means and stds */
	c.means[0] = 0.5;
	c.stds[0] = 1;
	float d2[4] = {0, 0, 0, 0};
	box_decode(b1, a1, d2, 1, &c, 0, 0);
	CHECK_NEAR(b1[0], 5, 1e-6);
	box_encode(d2, a1, b1, 1, &c);
	CHECK_NEAR(d2[0], 0, 1e-6);
	free(out);
	free(back);
	free_all(v, n);
}

typedef struct collected {
	record **v;
	int n;
} collected;

static int collect(void *ctx, record *r)
{
	collected *c = ctx;
	c->v = realloc(c->v, (size_t)(c->n + 1) * sizeof *c->v);
	c->v[c->n++] = r;
	return 0;
}

/* Compares dets records: same images, labels and order; boxes, scores within tol. */
static void compare_dets(record **got, int ngot, record **want, int nwant, const char *what)
{
	int j = 0;
	double wb = 0, ws = 0;
	int64_t total = 0;
	for (int i = 0; i < nwant; i++) {
		if (strcmp(want[i]->kind, "dets"))
			continue;
		if (j >= ngot) {
			CHECK_MSG(0, "%s: fewer dets records than expected", what);
			return;
		}
		record *g = got[j++], *w = want[i];
		CHECK(!strcmp(meta_str(g, "id", ""), meta_str(w, "id", "?")));
		CHECK(meta_num(g, "index", -1) == meta_num(w, "index", -2));
		CHECK(meta_num(g, "width", -1) == meta_num(w, "width", -2));
		CHECK(meta_num(g, "height", -1) == meta_num(w, "height", -2));
		CHECK(meta_num(g, "num_classes", -1) == meta_num(w, "num_classes", -2));
		int64_t ng, nw;
		const tensor *gl = record_find(g, "labels"), *wl = record_find(w, "labels");
		CHECK_MSG(tensor_numel(gl) == tensor_numel(wl), "%s %s: %lld dets, reference %lld", what,
			  meta_str(w, "id", "?"), (long long)tensor_numel(gl), (long long)tensor_numel(wl));
		if (tensor_numel(gl) != tensor_numel(wl))
			continue;
		total += tensor_numel(gl);
		CHECK_MSG(!memcmp(gl->data, wl->data, tensor_nbytes(gl)), "%s %s: labels differ", what,
			  meta_str(w, "id", "?"));
		const float *gb = f32(g, "boxes", &ng), *wbx = f32(w, "boxes", &nw);
		double d = rel_diff(gb, wbx, nw);
		wb = d > wb ? d : wb;
		gb = f32(g, "scores", &ng);
		wbx = f32(w, "scores", &nw);
		d = rel_diff(gb, wbx, nw);
		ws = d > ws ? d : ws;
		static const char *const gt[3] = {"gt_boxes", "gt_labels", "gt_difficult"};
		for (int k = 0; k < 3; k++) {
			const tensor *a = record_find(g, gt[k]), *b = record_find(w, gt[k]);
			CHECK_MSG(a && b && tensor_nbytes(a) == tensor_nbytes(b) && !memcmp(a->data, b->data, tensor_nbytes(a)),
				  "%s %s: %s not passed through", what, meta_str(w, "id", "?"), gt[k]);
		}
	}
	CHECK_MSG(j == ngot, "%s: %d dets records, expected %d", what, ngot, j);
	printf("%s: %lld dets, labels and order identical, max rel diff boxes %.3g, scores %.3g\n", what,
	       (long long)total, wb, ws);
	CHECK(wb <= 1e-4);
	CHECK(ws <= 1e-5);
}

static void test_pred_fixtures(void)
{
	cJSON *cases = config_read(FIX "cases.json");
	CHECK_MSG(cases != NULL, "%s", err_msg());
	if (!cases)
		return;
	const cJSON *c;
	int ncases = 0;
	cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "pred")) {
		char pp[512], dp[512];
		snprintf(pp, sizeof pp, FIX "%s", cJSON_GetObjectItem(c, "pred")->valuestring);
		snprintf(dp, sizeof dp, FIX "%s", cJSON_GetObjectItem(c, "dets")->valuestring);
		head_config m;
		head_config_default(&m);
		cJSON *model = cJSON_CreateObject();
		cJSON_AddItemToObject(model, "test", cJSON_Duplicate(cJSON_GetObjectItem(c, "test"), 1));
		CHECK_MSG(head_config_apply(&m, model, "case") == 0, "%s", err_msg());
		cJSON_Delete(model);
		record **pv, **dv;
		int np = read_all(pp, &pv), nd = read_all(dp, &dv);
		detector *d = detector_new(&m);
		collected got = {0};
		long images = 0;
		for (int i = 0; i < np; i++)
			if (!strcmp(pv[i]->kind, "pred"))
				CHECK_MSG(detect_pred_record(d, pv[i], &images, collect, &got) == 0, "%s", err_msg());
		compare_dets(got.v, got.n, dv, nd, dp);
		free_all(got.v, got.n);
		free_all(pv, np);
		free_all(dv, nd);
		detector_free(d);
		ncases++;
	}
	CHECK(ncases == 3);
	cJSON_Delete(cases);
}

static void test_pred_errors(void)
{
	record **pv;
	int np = read_all(FIX "pred_small.tns", &pv);
	CHECK(np == 2);
	head_config m;
	head_config_default(&m);
	detector *d = detector_new(&m);
	collected got = {0};
	long images = 0;
	/* the record says size 64: at size 128 the anchor count is wrong */
	cJSON_ReplaceItemInObject(pv[0]->meta, "size", cJSON_CreateNumber(128));
	CHECK(detect_pred_record(d, pv[0], &images, collect, &got) < 0);
	CHECK_MSG(strstr(err_msg(), "392 anchors, but the anchor config gives 1538 at input size 128"), "%s", err_msg());
	cJSON_DeleteItemFromObject(pv[0]->meta, "size");
	CHECK(detect_pred_record(d, pv[0], &images, collect, &got) < 0 && strstr(err_msg(), "meta.size"));
	cJSON_AddNumberToObject(pv[0]->meta, "size", 64);
	cJSON_DeleteItemFromObject(pv[0]->meta, "ids");
	CHECK(detect_pred_record(d, pv[0], &images, collect, &got) < 0 && strstr(err_msg(), "meta.ids"));
	cJSON *ids = cJSON_CreateArray();
	for (int i = 0; i < 3; i++)
		cJSON_AddItemToArray(ids, cJSON_CreateString("x"));
	cJSON_AddItemToObject(pv[0]->meta, "ids", ids);
	tensor *sf = record_find(pv[0], "scale_factor");
	((float *)sf->data)[5] = 0;
	CHECK(detect_pred_record(d, pv[0], &images, collect, &got) < 0 && strstr(err_msg(), "scale_factor[1] = 0"));
	((float *)sf->data)[5] = 1;
	tensor *reg = record_find(pv[0], "reg");
	reg->shape[2] = 2;
	reg->shape[1] *= 2;
	CHECK(detect_pred_record(d, pv[0], &images, collect, &got) < 0 && strstr(err_msg(), "tensor 'reg'"));
	reg->shape[1] /= 2;
	reg->shape[2] = 4;
	tensor *nbox = record_find(pv[0], "nbox");
	((int32_t *)nbox->data)[0] = 1000;
	CHECK(detect_pred_record(d, pv[0], &images, collect, &got) < 0 && strstr(err_msg(), "nbox 1000"));
	CHECK(got.n == 0);
	free_all(pv, np);
	detector_free(d);
}

static void test_config(void)
{
	head_config m, def;
	head_config_default(&def);
	m = def;
	CHECK(m.test.nms_pre == 1000 && m.test.score_thr == 0.02 && m.test.nms_iou == 0.45 && m.test.max_per_img == 200);
	CHECK(m.anchors.nlevels == 6 && m.coder.stds[2] == 0.2);
	cJSON *j = cJSON_Parse("{\"backbone\": {}, \"anchors\": {\"strides\": [8, 16, 32, 64, 100, 300], \"ratios\": "
			       "[[2], [2, 3], [2, 3], [2, 3], [2], [2]], \"basesize_ratio_range\": [0.2, 0.9]}, "
			       "\"bbox_coder\": {\"stds\": [0.1, 0.1, 0.2, 0.3]}, \"test\": {\"score_thr\": 0.5}}");
	CHECK_MSG(head_config_apply(&m, j, "f: model") == 0, "%s", err_msg());
	cJSON_Delete(j);
	CHECK(m.anchors.strides[5] == 300 && m.anchors.nratios[4] == 1 && m.anchors.basesize_min == 0.2);
	CHECK(m.coder.stds[3] == 0.3 && m.test.score_thr == 0.5 && m.test.nms_iou == 0.45);
	anchor_set *a = anchors_new(&m.anchors, 300);
	CHECK(a && a->count == 8732);
	anchors_free(a);

	static const struct { const char *json, *msg; } bad[] = {
		{"{\"test\": {\"score_thr\": \"x\"}}", "f: model.test.score_thr: expected a number in [0, 1]"},
		{"{\"test\": {\"max_per_img\": 2.5}}", "f: model.test.max_per_img: expected an integer"},
		{"{\"test\": {\"nms_iuo\": 0.5}}", "f: model.test.nms_iuo: unknown key"},
		{"{\"test\": []}", "f: model.test: expected an object"},
		{"{\"anchors\": {\"strides\": [8, 16, 32]}}", "strides has 3 levels: give ratios"},
		{"{\"anchors\": {\"ratios\": [[2]]}}", "f: model.anchors.ratios: expected an array of 6 arrays"},
		{"{\"anchors\": {\"ratios\": [[2], [2, 3], [2, 3], [2, 3], [2, \"3\"], [2]]}}",
		 "f: model.anchors.ratios[4][1]: expected a number"},
		{"{\"anchors\": {\"basesize_ratio_range\": [0.9, 0.1]}}", "expected [min, max] with min < max"},
		{"{\"anchors\": {\"scale_major\": 1}}", "f: model.anchors.scale_major: expected true or false"},
		{"{\"anchors\": {\"strides\": [8, 16.5, 32]}}", "f: model.anchors.strides[1]: expected an integer"},
		{"{\"bbox_coder\": {\"stds\": [0.1, 0.1, 0.2]}}", "f: model.bbox_coder.stds: expected an array of 4"},
		{"{\"bbox_coder\": {\"stds\": [0.1, 0.1, 0.2, 0]}}", "f: model.bbox_coder.stds[3]: expected a number"},
		{"[]", "f: model: expected an object"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		m = def;
		j = cJSON_Parse(bad[i].json);
		CHECK(j != NULL);
		CHECK_MSG(head_config_apply(&m, j, "f: model") < 0 && strstr(err_msg(), bad[i].msg), "%s: got '%s'",
			  bad[i].json, err_msg());
		CHECK(!memcmp(&m, &def, sizeof m)); /* a failed apply changes nothing */
		cJSON_Delete(j);
	}
	/* head_config_load: a file without "model" keeps the defaults; a missing file fails */
	m = def;
	CHECK(head_config_load(&m, "configs/ssd_mobilenet_fpn.json") == 0 && !memcmp(&m, &def, sizeof m));
	CHECK(head_config_load(&m, FIX "no-such.json") < 0 && strstr(err_msg(), "no-such.json"));
}

int main(void)
{
	test_anchors_fixture();
	test_anchors_hand();
	test_iou_nms();
	test_coder();
	test_pred_fixtures();
	test_pred_errors();
	test_config();
	return check_done("test_detect");
}
