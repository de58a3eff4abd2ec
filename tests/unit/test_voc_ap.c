/* test_voc_ap: VOC mAP (voc_ap) on hand-worked cases and against tests/ref_detect.py's
 * expected results for its random, BCCD and BCCD-oracle cases (both AP modes, both
 * coordinate conventions, shards added in either order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/config.h"
#include "ssd/detect.h"
#include "core/err.h"
#include "core/stream.h"
#include "eval/voc_ap.h"

#define FIX "tests/fixtures/detect/"

/* ---- hand-worked cases ---- */

static double run1(map_eval *m, enum map_mode mode, map_class *out)
{
	double mean = -1;
	CHECK_MSG(map_compute(m, mode, out, &mean) == 0, "%s", err_msg());
	return mean;
}

static void test_hand(void)
{
	map_class r[3];
	float gt[3 * 4] = {0, 0, 9, 9, 20, 20, 29, 29, 40, 40, 49, 49};
	int32_t gl[3] = {0, 0, 1};
	uint8_t gd[3] = {0, 0, 1};

	/* class 0: two gts; dets: a miss (score 0.9), a hit (0.8), a duplicate of it (0.7), the
	 * other gt (0.6). class 1: only a difficult gt, hit: neither TP nor FP. class 2: none. */
	float db[5 * 4] = {100, 100, 110, 110, 0, 0, 9, 9, 0, 0, 9, 9, 20, 20, 29, 29, 40, 40, 49, 49};
	float ds[5] = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f};
	int32_t dl[5] = {0, 0, 0, 0, 1};
	map_eval *m = map_new(3, 1, 0.5);
	CHECK(map_add_gt(m, "a", 0, gt, gl, gd, 3) == 0);
	CHECK(map_add_dets(m, "a", db, ds, dl, 5) == 0);
	double mean = run1(m, MAP_11POINTS, r);
	/* flags FP TP FP TP: recall .5 .5 .5 1 (well: 0 .5 .5 1), precision 0 .5 1/3 .5 */
	CHECK(r[0].gts == 2 && r[0].dets == 4);
	CHECK_NEAR(r[0].recall, 1, 0);
	CHECK_NEAR(r[0].ap, 0.5, 1e-12); /* max precision at any recall >= t is 0.5 */
	CHECK(r[1].gts == 0 && r[1].dets == 1 && r[1].ap == 0 && r[1].recall == 0);
	CHECK(r[2].gts == 0 && r[2].dets == 0);
	CHECK_NEAR(mean, 0.5, 1e-12); /* only class 0 has gts */
	run1(m, MAP_AREA, r);
	CHECK_NEAR(r[0].ap, 0.5 * 0.5 + 0.5 * 0.5, 1e-12);
	map_free(m);

	/* legacy coordinates decide: [0,0,9,9] vs [0,0,9,4] is 50/100 with +1, 36/81 without */
	float g1[4] = {0, 0, 9, 9}, d1[4] = {0, 0, 9, 4}, s1[1] = {0.5f};
	int32_t l1[1] = {0};
	for (int legacy = 0; legacy < 2; legacy++) {
		m = map_new(1, legacy, 0.5);
		CHECK(map_add_gt(m, "x", 0, g1, l1, NULL, 1) == 0 && map_add_dets(m, "x", d1, s1, l1, 1) == 0);
		mean = run1(m, MAP_11POINTS, r);
		CHECK_NEAR(mean, legacy ? 1.0 : 0.0, 0);
		map_free(m);
	}

	/* 11 points: recall 0.3 reaches t = 0.3 only if >= 0.30000000000000004 (numpy's arange) */
	m = map_new(1, 1, 0.5);
	float g10[10 * 4];
	int32_t l10[10] = {0};
	for (int i = 0; i < 10; i++) {
		float b[4] = {(float)(20 * i), 0, (float)(20 * i + 9), 9};
		memcpy(g10 + 4 * i, b, sizeof b);
	}
	float s3[3] = {0.9f, 0.8f, 0.7f};
	CHECK(map_add_gt(m, "ten", 0, g10, l10, NULL, 10) == 0 && map_add_dets(m, "ten", g10, s3, l10, 3) == 0);
	run1(m, MAP_11POINTS, r);
	CHECK_NEAR(r[0].ap, 3.0 / 11, 1e-12); /* t = 0, 0.1, 0.2 only */
	run1(m, MAP_AREA, r);
	CHECK_NEAR(r[0].ap, 0.3, 1e-12);
	map_free(m);

	/* errors */
	m = map_new(2, 1, 0.5);
	CHECK(map_add_gt(m, "a", 0, gt, gl, NULL, 2) == 0);
	CHECK(map_add_gt(m, "a", 1, gt, gl, NULL, 2) < 0 && strstr(err_msg(), "image a appears twice"));
	CHECK(map_add_dets(m, "b", db, ds, dl, 1) < 0 && strstr(err_msg(), "dets for image b, which has no ground truth"));
	int32_t bad[1] = {2};
	CHECK(map_add_dets(m, "a", db, ds, bad, 1) < 0 && strstr(err_msg(), "det label 2 outside 0..1"));
	CHECK(map_add_gt(m, "c", 1, gt, bad, NULL, 1) < 0 && strstr(err_msg(), "gt label 2 outside 0..1"));
	CHECK(map_add_dets(m, "a", db, ds, dl, 1) == 0);
	CHECK(map_add_dets(m, "a", db, ds, dl, 1) < 0 && strstr(err_msg(), "image a appears twice"));
	CHECK(map_images(m) == 1 && map_images_with_dets(m) == 1 && map_has_image(m, "a") && !map_has_image(m, "c"));
	map_free(m);
	map_free(NULL);
	CHECK(map_new(0, 1, 0.5) == NULL);

	/* many images: the id table grows */
	m = map_new(1, 1, 0.5);
	int ok = 1;
	for (int i = 0; i < 3000 && ok; i++) {
		char id[32];
		snprintf(id, sizeof id, "img%d", i);
		ok = map_add_gt(m, id, 2999 - i, g1, l1, NULL, 1) == 0 && map_add_dets(m, id, g1, s1, l1, 1) == 0;
	}
	CHECK(ok && map_images(m) == 3000 && map_has_image(m, "img1234"));
	CHECK_NEAR(run1(m, MAP_AREA, r), 1, 1e-12);
	map_free(m);
}

static void test_table(void)
{
	map_class r[2] = {{805, 802, 0.99627, 0.90909}, {0, 15, 0, 0}};
	const char *names[2] = {"RBC", "Platelets"};
	char *t = map_table(r, names, 2, 0.96969);
	const char *want = "+-----------+-----+------+--------+-------+\n"
			   "| class     | gts | dets | recall | ap    |\n"
			   "+-----------+-----+------+--------+-------+\n"
			   "| RBC       | 805 | 802  | 0.996  | 0.909 |\n"
			   "| Platelets | 0   | 15   | 0.000  | 0.000 |\n"
			   "+-----------+-----+------+--------+-------+\n"
			   "| mAP       |     |      |        | 0.970 |\n"
			   "+-----------+-----+------+--------+-------+\n";
	CHECK_MSG(t && !strcmp(t, want), "table:\n%s", t ? t : "(null)");
	free(t);
}

/* ---- fixtures ---- */

static int add_stream(map_eval *m, const char *path, long *count)
{
	stream_reader *s = stream_open_read(path);
	if (!s)
		return -1;
	record *r;
	int rc;
	while ((rc = stream_read(s, &r)) > 0) {
		if (!strcmp(r->kind, "dets"))
			rc = map_add_dets_record(m, r, 1, count);
		record_free(r);
		if (rc < 0)
			break;
	}
	stream_close_read(s);
	return rc;
}

static int emit_to_map(void *ctx, record *r)
{
	static long count;
	int rc = map_add_dets_record(ctx, r, 1, &count);
	record_free(r);
	return rc;
}

static int add_oracle(map_eval *m, const char *path)
{
	head_config mc;
	head_config_default(&mc);
	detector *d = detector_new(&mc);
	stream_reader *s = stream_open_read(path);
	if (!d || !s)
		return -1;
	record *r;
	int rc;
	long images = 0;
	while ((rc = stream_read(s, &r)) > 0) {
		rc = detect_pred_record(d, r, &images, emit_to_map, m);
		record_free(r);
		if (rc < 0)
			break;
	}
	stream_close_read(s);
	detector_free(d);
	return rc;
}

/* Largest difference to the expected results of one case variant. */
static double compare(const map_class *got, double mean, const cJSON *want, int C, const char *what)
{
	double worst = fabs(mean - cJSON_GetObjectItem(want, "mAP")->valuedouble);
	const cJSON *cls = cJSON_GetObjectItem(want, "classes");
	CHECK(cJSON_GetArraySize(cls) == C);
	for (int c = 0; c < C && c < cJSON_GetArraySize(cls); c++) {
		const cJSON *w = cJSON_GetArrayItem(cls, c);
		CHECK_MSG(got[c].gts == cJSON_GetObjectItem(w, "gts")->valuedouble, "%s class %d gts", what, c);
		CHECK_MSG(got[c].dets == cJSON_GetObjectItem(w, "dets")->valuedouble, "%s class %d dets", what, c);
		worst = fmax(worst, fabs(got[c].ap - cJSON_GetObjectItem(w, "ap")->valuedouble));
		worst = fmax(worst, fabs(got[c].recall - cJSON_GetObjectItem(w, "recall")->valuedouble));
	}
	return worst;
}

static void test_fixture_case(const cJSON *c, const char *name)
{
	int C = (int)cJSON_GetObjectItem(c, "classes")->valuedouble;
	const cJSON *files = cJSON_GetObjectItem(c, "files"), *pred = cJSON_GetObjectItem(c, "pred");
	const cJSON *exp = cJSON_GetObjectItem(c, "expected");
	int nfiles = files ? cJSON_GetArraySize(files) : 0;
	for (int reversed = 0; reversed < (nfiles > 1 ? 2 : 1); reversed++)
		for (int legacy = 1; legacy >= 0; legacy--) {
			map_eval *m = map_new(C, legacy, 0.5);
			long count = 0;
			for (int i = 0; i < nfiles; i++) {
				char path[512];
				int k = reversed ? nfiles - 1 - i : i;
				snprintf(path, sizeof path, FIX "%s", cJSON_GetArrayItem(files, k)->valuestring);
				CHECK_MSG(add_stream(m, path, &count) == 0, "%s", err_msg());
			}
			if (pred) {
				char path[512];
				snprintf(path, sizeof path, FIX "%s", pred->valuestring);
				CHECK_MSG(add_oracle(m, path) == 0, "%s", err_msg());
			}
			for (int mode = 0; mode < 2; mode++) {
				map_class r[64];
				double mean = run1(m, mode ? MAP_AREA : MAP_11POINTS, r);
				char key[64], what[128];
				snprintf(key, sizeof key, "%s%s", mode ? "area" : "11points", legacy ? "" : "_nolegacy");
				snprintf(what, sizeof what, "%s %s%s", name, key, reversed ? " (shards reversed)" : "");
				double d = compare(r, mean, cJSON_GetObjectItem(exp, key), C, what);
				printf("%-42s mAP %.6f, max |diff| of mAP/AP/recall %.3g\n", what, mean, d);
				CHECK_MSG(d <= 1e-9, "%s: differs by %g", what, d);
			}
			map_free(m);
		}
}

static void test_fixtures(void)
{
	cJSON *cases = config_read(FIX "cases.json");
	CHECK_MSG(cases != NULL, "%s", err_msg());
	if (!cases)
		return;
	const cJSON *c;
	int n = 0;
	cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "eval")) {
		test_fixture_case(c, c->string);
		n++;
	}
	CHECK(n == 3);
	cJSON_Delete(cases);
}

int main(void)
{
	test_hand();
	test_table();
	test_fixtures();
	return check_done("test_voc_ap");
}
