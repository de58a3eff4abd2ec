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
	/* the default class list: the file's category order (getCatIds()), not the ids' */
	voc_classes *c = coco_classes(s);
	CHECK(c && c->n == 2 && !strcmp(c->names[0], "seven") && !strcmp(c->names[1], "three"));
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

static voc_classes *list(int n, const char *const *names)
{
	voc_classes *c = calloc(1, sizeof *c);
	c->names = calloc((size_t)n, sizeof *c->names);
	for (c->n = 0; c->n < n; c->n++)
		c->names[c->n] = strdup(names[c->n]);
	return c;
}

/* mmdet 2.x: cat_ids = getCatIds(catNms=CLASSES) lists the named categories in the
 * file's order, cat2label numbers them so: the list's own order does not count. */
static void test_labels(void)
{
	/* file order: dog (id 9), cat (id 2), bird (id 5), cow (id 7) */
	coco_set *s = parse("{\"images\": [], \"categories\": [{\"id\": 9, \"name\": \"dog\"},"
			    " {\"id\": 2, \"name\": \"cat\"}, {\"id\": 5, \"name\": \"bird\"}, {\"id\": 7, \"name\": \"cow\"}]}");
	CHECK_MSG(s != NULL, "%s", err_msg());
	if (!s)
		return;
	/* s->categories are by id: cat 2, bird 5, cow 7, dog 9 */
	int *all = coco_labels(s, NULL);
	CHECK(all && all[0] == 1 && all[1] == 2 && all[2] == 3 && all[3] == 0);
	free(all);
	/* a list in its own order: bird, dog -> dog is label 0 (first in the file), bird 1 */
	voc_classes *c = list(2, (const char *const[]){"bird", "dog"});
	int *label = coco_labels(s, c);
	CHECK(label && label[0] == -1 && label[1] == 1 && label[2] == -1 && label[3] == 0);
	voc_classes *names = label ? coco_label_names(s, label) : NULL;
	CHECK(names && names->n == 2 && !strcmp(names->names[0], "dog") && !strcmp(names->names[1], "bird"));
	voc_classes_free(names);
	free(label);
	voc_classes_free(c);
	/* a name no category has */
	c = list(2, (const char *const[]){"cat", "horse"});
	CHECK(!coco_labels(s, c) && !strcmp(err_msg(), "class 'horse': no category of that name"));
	voc_classes_free(c);
	coco_free(s);

	/* two categories of one name would give more labels than classes */
	s = parse("{\"images\": [], \"categories\": [{\"id\": 1, \"name\": \"a\"}, {\"id\": 3, \"name\": \"a\"}]}");
	c = list(1, (const char *const[]){"a"});
	CHECK(s && !coco_labels(s, c) && !strcmp(err_msg(), "class 'a': categories 1 and 3 both have that name"));
	voc_classes_free(c);
	coco_free(s);
}

/* mmdet's _filter_imgs: filter_empty_gt (an annotation of a labelled category, crowd or
 * too small included) and min_size on the file's width and height. */
static void test_filter(void)
{
	coco_set *s = parse("{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"width\": 32, \"height\": 40},"
			    " {\"id\": 2, \"file_name\": \"b.jpg\", \"width\": 31, \"height\": 100},"
			    " {\"id\": 3, \"file_name\": \"c.jpg\", \"width\": 100, \"height\": 31},"
			    " {\"id\": 4, \"file_name\": \"d.jpg\", \"width\": 64, \"height\": 64},"
			    " {\"id\": 5, \"file_name\": \"e.jpg\", \"width\": 64, \"height\": 64}],"
			    " \"annotations\": [{\"id\": 1, \"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 1, 5, 5]},"
			    "  {\"id\": 2, \"image_id\": 2, \"category_id\": 1, \"bbox\": [1, 1, 5, 5]},"
			    "  {\"id\": 3, \"image_id\": 3, \"category_id\": 1, \"bbox\": [1, 1, 5, 5]},"
			    "  {\"id\": 4, \"image_id\": 4, \"category_id\": 1, \"bbox\": [1, 1, 0.5, 5]}],"
			    " \"categories\": [{\"id\": 1, \"name\": \"x\"}]}");
	CHECK_MSG(s != NULL, "%s", err_msg());
	if (!s)
		return;
	int *label = coco_labels(s, NULL);
	static const struct {
		int filter_empty, min_size;
		long images;
	} cases[] = {{0, 0, 5}, {1, 0, 4}, {0, 32, 3}, {1, 32, 2}, {0, 33, 2}, {0, 65, 0}};
	for (size_t i = 0; label && i < sizeof cases / sizeof *cases; i++) {
		voc_dataset *d = coco_dataset(s, label, ".", cases[i].filter_empty, cases[i].min_size);
		CHECK_MSG(d && voc_size(d) == cases[i].images, "case %zu: %ld images (%s)", i, d ? voc_size(d) : -1,
			  d ? "" : err_msg());
		voc_close(d);
	}
	free(label);
	coco_free(s);
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
	test_labels();
	test_filter();
	test_eval();
	return check_done("test_coco");
}
