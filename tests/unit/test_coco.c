/* test_coco: COCO annotation reading (lib/data/coco.c: fields, segmentations blanked without
 * touching strings that name them, errors) and COCOeval (lib/eval/coco_eval.c) on hand-worked
 * cases: IoU thresholds, a crowd, the area ranges from the annotation's area, maxDets,
 * categories without gts. The random and real cases are tests/bats/coco.bats's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/coco.h"
#include "eval/coco_eval.h"
#include "core/err.h"

static coco_set *parse(const char *text)
{
	char *t = strdup(text);
	coco_set *s = coco_parse(t, strlen(t), "t.json");
	free(t);
	return s;
}

static void test_read(void)
{
	coco_set *s = parse("{\"images\": [{\"id\": 5, \"file_name\": \"a.jpg\", \"width\": 10, \"height\": 8},"
			    " {\"id\": 2, \"file_name\": \"b.jpg\", \"width\": 4, \"height\": 4}],"
			    " \"annotations\": [{\"id\": 1, \"image_id\": 2, \"category_id\": 7, \"bbox\": [1, 1, 2, 2],"
			    "   \"segmentation\": {\"counts\": \"x\\\"segmentation\\\": [\", \"size\": [4, 4]}, \"iscrowd\": 1},"
			    "  {\"id\": 9, \"image_id\": 5, \"category_id\": 3, \"bbox\": [0.5, 1, 3, 4], \"area\": 7.5,"
			    "   \"segmentation\": [[0, 0, 1, 1, 2, 0]]},"
			    "  {\"id\": 4, \"image_id\": 2, \"category_id\": 3, \"bbox\": [0, 0, 1, 1], \"area\": 1}],"
			    " \"categories\": [{\"id\": 7, \"name\": \"seven\"}, {\"id\": 3, \"name\": \"three\"}],"
			    " \"note\": \"a \\\"segmentation\\\": [1] inside a string stays\"}");
	CHECK_MSG(s != NULL, "%s", err_msg());
	if (!s)
		return;
	CHECK(s->nimages == 2 && s->nanns == 3 && s->ncategories == 2);
	/* categories by id; annotations grouped by image in file order */
	CHECK(s->categories[0].id == 3 && !strcmp(s->categories[1].name, "seven"));
	CHECK(s->images[0].id == 5 && s->images[0].nanns == 1 && s->anns[s->images[0].first_ann].id == 9);
	CHECK(s->images[1].nanns == 2 && s->anns[s->images[1].first_ann].id == 1 &&
	      s->anns[s->images[1].first_ann + 1].id == 4);
	const coco_ann *crowd = &s->anns[s->images[1].first_ann];
	CHECK(crowd->iscrowd == 1 && crowd->area == 4 && crowd->category == 1); /* missing area: w * h */
	CHECK(coco_image_index(s, 2) == 1 && coco_image_index(s, 3) == -1);
	voc_classes *c = coco_classes(s);
	CHECK(c && c->n == 2 && !strcmp(c->names[0], "three"));
	voc_classes_free(c);
	coco_free(s);

	static const char *const bad[][2] = {
		{"{\"images\": [], \"categories\": [], \"annotations\": [}", "t.json: line 1, column 50: malformed JSON"},
		{"{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 2}], \"categories\": []}",
		 "t.json: images[0]: no \"height\""},
		{"{\"images\": [{\"id\": 1.5, \"file_name\": \"a\", \"width\": 2, \"height\": 2}], \"categories\": []}",
		 "t.json: images[0].id: expected an integer"},
		{"{\"images\": [], \"categories\": [{\"id\": 1, \"name\": \"a\"}, {\"id\": 1, \"name\": \"b\"}]}",
		 "t.json: categories: id 1 twice"},
		{"{\"categories\": []}", "t.json: \"images\": missing"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		s = parse(bad[i][0]);
		CHECK_MSG(!s && !strcmp(err_msg(), bad[i][1]), "case %zu: %s", i, err_msg());
		coco_free(s);
	}
}

static void compute(coco_eval *e, double *stats, double *ap)
{
	CHECK_MSG(coco_eval_compute(e, stats, ap) == 0, "%s", err_msg());
}

static void test_eval(void)
{
	double stats[COCO_NSTATS], ap[3];
	/* one gt, one det at IoU 0.62: matched at .50, .55, .60 of the ten thresholds */
	coco_eval *e = coco_eval_new(1);
	CHECK(coco_eval_add_image(e, 1) == 0);
	double g[4] = {0, 0, 100, 100}, d[4] = {0, 0, 100, 62};
	CHECK(coco_eval_add_gt(e, 1, 0, g, 10000, 0) == 0 && coco_eval_add_det(e, 1, 0, d, 0.9) == 0);
	compute(e, stats, ap);
	CHECK_NEAR(stats[0], 0.3, 1e-12);
	CHECK_NEAR(stats[1], 1.0, 1e-12);
	CHECK_NEAR(stats[2], 0.0, 1e-12);
	CHECK(stats[3] == -1 && stats[4] == -1); /* no small or medium gts: nothing counts */
	CHECK_NEAR(stats[5], 0.3, 1e-12);
	CHECK_NEAR(stats[6], 0.3, 1e-12);
	CHECK_NEAR(ap[0], 0.3, 1e-12);
	coco_eval_free(e);
	/* IoU exactly 0.75 (7500 / 10000) still matches at the .75 threshold: >=, and
	 * numpy's linspace value of it is exactly 0.75 */
	e = coco_eval_new(1);
	coco_eval_add_image(e, 1);
	double d75[4] = {0, 0, 75, 100};
	coco_eval_add_gt(e, 1, 0, g, 10000, 0);
	coco_eval_add_det(e, 1, 0, d75, 0.9);
	compute(e, stats, ap);
	CHECK_NEAR(stats[0], 0.6, 1e-12);
	CHECK_NEAR(stats[2], 1.0, 1e-12);
	/* the annotation's area, not the box, picks the range: 500 is small */
	coco_eval_free(e);
	e = coco_eval_new(1);
	coco_eval_add_image(e, 1);
	coco_eval_add_gt(e, 1, 0, g, 500, 0);
	coco_eval_add_det(e, 1, 0, d, 0.9);
	compute(e, stats, ap);
	CHECK_NEAR(stats[3], 0.3, 1e-12);
	CHECK(stats[5] == -1);
	coco_eval_free(e);

	/* a crowd: the det inside it (IoU by the det's own area: 1) is ignored, so the
	 * other det, a miss, makes precision 0; without the crowd both would be misses */
	e = coco_eval_new(2);
	coco_eval_add_image(e, 1);
	coco_eval_add_image(e, 2);
	double crowd[4] = {0, 0, 200, 200}, in[4] = {10, 10, 20, 20}, real[4] = {300, 300, 40, 40};
	coco_eval_add_gt(e, 1, 0, crowd, 40000, 1);
	coco_eval_add_gt(e, 2, 0, real, 1600, 0);
	coco_eval_add_det(e, 1, 0, in, 0.95);
	coco_eval_add_det(e, 2, 0, real, 0.5);
	/* category 1 has a det and no gt: left out of the means, its classwise AP NaN */
	coco_eval_add_det(e, 2, 1, real, 0.7);
	compute(e, stats, ap);
	CHECK_NEAR(stats[0], 1.0, 1e-12);
	CHECK_NEAR(stats[8], 1.0, 1e-12);
	CHECK(isnan(ap[1]) && fabs(ap[0] - 1) < 1e-12);
	CHECK(coco_eval_add_det(e, 3, 0, real, 0.5) < 0);
	CHECK(coco_eval_add_image(e, 2) < 0);
	coco_eval_free(e);

	/* maxDets: two gts in one image, the better-scored det misses; AR@1 sees only it */
	e = coco_eval_new(1);
	coco_eval_add_image(e, 1);
	double g1[4] = {0, 0, 50, 50}, g2[4] = {100, 100, 50, 50}, miss[4] = {300, 0, 50, 50};
	coco_eval_add_gt(e, 1, 0, g1, 2500, 0);
	coco_eval_add_gt(e, 1, 0, g2, 2500, 0);
	coco_eval_add_det(e, 1, 0, miss, 0.9);
	coco_eval_add_det(e, 1, 0, g1, 0.8);
	coco_eval_add_det(e, 1, 0, g2, 0.8);
	compute(e, stats, ap);
	CHECK_NEAR(stats[6], 0.0, 1e-12);
	CHECK_NEAR(stats[7], 1.0, 1e-12);
	/* precision envelope: recall 0.5 at precision 1/2, 1.0 at 2/3 -> 2/3 at every point */
	CHECK_NEAR(stats[1], 2.0 / (3 + 2.220446049250313e-16), 1e-12);
	coco_eval_free(e);
}

int main(void)
{
	test_read();
	test_eval();
	return check_done("test_coco");
}
