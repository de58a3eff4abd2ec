#include "ssd/detect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/err.h"
#include "core/tensor.h"

/* ------------------------------------------------------------------ config */

void head_config_default(head_config *m)
{
	anchor_config_default(&m->anchors);
	box_coder_default(&m->coder);
	m->test.nms_pre = 1000;
	m->test.score_thr = 0.02;
	m->test.nms_iou = 0.45;
	m->test.max_per_img = 200;
}

static int apply_anchors(anchor_config *a, const cJSON *o, const char *where)
{
	static const char *const keys[] = {"strides", "ratios", "basesize_ratio_range", "scale_major", "center_offset",
					   NULL};
	char sub[640];
	if (cfg_check_keys(o, where, keys) < 0)
		return -1;
	anchor_config n = *a;
	int nstrides = 0, nrange = 0;
	if (cfg_ints(o, "strides", where, 1, ANCHOR_MAX_LEVELS, 1, 4096, n.strides, &nstrides) < 0)
		return -1;
	if (nstrides && nstrides < 3)
		return err_set("%s.strides: expected at least 3 levels", where);
	if (nstrides)
		n.nlevels = nstrides;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "ratios");
	if (v) {
		snprintf(sub, sizeof sub, "%s.ratios", where);
		if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n.nlevels)
			return err_set("%s: expected an array of %d arrays (one per stride)", sub, n.nlevels);
		for (int k = 0; k < n.nlevels; k++) {
			char item[700];
			snprintf(item, sizeof item, "%s[%d]", sub, k);
			if (cfg_nums(cJSON_GetArrayItem(v, k), NULL, item, 1, ANCHOR_MAX_RATIOS, 1e-3, 1e3, n.ratios[k],
				     &n.nratios[k]) < 0)
				return -1;
		}
	} else if (n.nlevels != a->nlevels) {
		return err_set("%s: strides has %d levels: give ratios for them too", where, n.nlevels);
	}
	double r[2];
	if (cfg_nums(o, "basesize_ratio_range", where, 2, 2, 0.01, 1, r, &nrange) < 0)
		return -1;
	if (nrange && r[0] >= r[1])
		return err_set("%s.basesize_ratio_range: expected [min, max] with min < max", where);
	if (nrange) {
		n.basesize_min = r[0];
		n.basesize_max = r[1];
	}
	if (cfg_bool(o, "scale_major", where, &n.scale_major) < 0 ||
	    cfg_num(o, "center_offset", where, 0, 1, &n.center_offset) < 0)
		return -1;
	*a = n;
	return 0;
}

static int apply_coder(box_coder *c, const cJSON *o, const char *where)
{
	static const char *const keys[] = {"means", "stds", "wh_ratio_clip", NULL};
	box_coder n = *c;
	if (cfg_check_keys(o, where, keys) < 0 || cfg_nums(o, "means", where, 4, 4, -1e3, 1e3, n.means, NULL) < 0 ||
	    cfg_nums(o, "stds", where, 4, 4, 1e-6, 1e3, n.stds, NULL) < 0 ||
	    cfg_num(o, "wh_ratio_clip", where, 1e-6, 1, &n.wh_ratio_clip) < 0)
		return -1;
	*c = n;
	return 0;
}

static int apply_test(detect_params *t, const cJSON *o, const char *where)
{
	static const char *const keys[] = {"nms_pre", "score_thr", "nms_iou", "max_per_img", NULL};
	detect_params n = *t;
	if (cfg_check_keys(o, where, keys) < 0 || cfg_int(o, "nms_pre", where, -1, 1 << 30, &n.nms_pre) < 0 ||
	    cfg_num(o, "score_thr", where, 0, 1, &n.score_thr) < 0 ||
	    cfg_num(o, "nms_iou", where, 0, 1, &n.nms_iou) < 0 ||
	    cfg_int(o, "max_per_img", where, 1, 1 << 30, &n.max_per_img) < 0)
		return -1;
	*t = n;
	return 0;
}

int head_config_apply(head_config *m, const cJSON *model, const char *where)
{
	if (!cJSON_IsObject(model))
		return err_set("%s: expected an object", where);
	head_config n = *m;
	char sub[600];
	const cJSON *o;
	snprintf(sub, sizeof sub, "%s.anchors", where);
	if (cfg_object(model, "anchors", where, NULL, &o) < 0 || (o && apply_anchors(&n.anchors, o, sub) < 0))
		return -1;
	snprintf(sub, sizeof sub, "%s.bbox_coder", where);
	if (cfg_object(model, "bbox_coder", where, NULL, &o) < 0 || (o && apply_coder(&n.coder, o, sub) < 0))
		return -1;
	snprintf(sub, sizeof sub, "%s.test", where);
	if (cfg_object(model, "test", where, NULL, &o) < 0 || (o && apply_test(&n.test, o, sub) < 0))
		return -1;
	*m = n;
	return 0;
}

int head_config_load(head_config *m, const char *path)
{
	cJSON *j = config_read(path);
	if (!j)
		return -1;
	char where[512];
	snprintf(where, sizeof where, "%s: model", path);
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
	int rc = model ? head_config_apply(m, model, where) : 0;
	cJSON_Delete(j);
	return rc;
}

/* ------------------------------------------------------------------ detector */

/* A candidate or a kept detection: sorted by score descending, then key ascending. */
typedef struct scored {
	float score;
	int32_t label;
	int64_t key;
} scored;

struct detector {
	head_config m;
	anchor_set *anchors;
	int64_t cap_a, cap_p; /* anchors, anchors x classes the scratch holds */
	float *probs;         /* [cand, C] foreground scores of the candidates */
	float *maxs;          /* [A] max foreground score */
	int64_t *cand;        /* [cand] anchor index, ascending */
	float *cand_anchor, *cand_delta, *cand_box; /* [cand, 4] */
	scored *sel;          /* top-k selection, per-class lists, kept list */
	scored *kept;
	int64_t *order, *keep;
	unsigned char *picked; /* per-level top-k flags */
	/* output */
	float *out_boxes, *out_scores;
	int32_t *out_labels;
};

detector *detector_new(const head_config *m)
{
	detector *d = calloc(1, sizeof *d);
	if (!d)
		return err_set("out of memory"), NULL;
	d->m = *m;
	int mp = m->test.max_per_img;
	d->out_boxes = malloc((size_t)mp * 4 * sizeof(float));
	d->out_scores = malloc((size_t)mp * sizeof(float));
	d->out_labels = malloc((size_t)mp * sizeof(int32_t));
	if (!d->out_boxes || !d->out_scores || !d->out_labels) {
		detector_free(d);
		return err_set("out of memory"), NULL;
	}
	return d;
}

static void free_scratch(detector *d)
{
	free(d->probs);
	free(d->maxs);
	free(d->cand);
	free(d->cand_anchor);
	free(d->cand_delta);
	free(d->cand_box);
	free(d->sel);
	free(d->kept);
	free(d->order);
	free(d->keep);
	free(d->picked);
	d->probs = d->maxs = d->cand_anchor = d->cand_delta = d->cand_box = NULL;
	d->cand = d->order = d->keep = NULL;
	d->sel = d->kept = NULL;
	d->picked = NULL;
	d->cap_a = d->cap_p = 0;
}

void detector_free(detector *d)
{
	if (!d)
		return;
	anchors_free(d->anchors);
	free_scratch(d);
	free(d->out_boxes);
	free(d->out_scores);
	free(d->out_labels);
	free(d);
}

const anchor_set *detector_anchors(detector *d, int size)
{
	return anchors_cached(&d->anchors, &d->m.anchors, size);
}

static int reserve(detector *d, int64_t A, int C)
{
	if (A <= d->cap_a && A * C <= d->cap_p)
		return 0;
	free_scratch(d);
	size_t a = (size_t)A, k = (size_t)A * (size_t)C;
	d->probs = malloc(k * sizeof *d->probs);
	d->maxs = malloc(a * sizeof *d->maxs);
	d->cand = malloc(a * sizeof *d->cand);
	d->cand_anchor = malloc(4 * a * sizeof(float));
	d->cand_delta = malloc(4 * a * sizeof(float));
	d->cand_box = malloc(4 * a * sizeof(float));
	d->sel = malloc(a * sizeof *d->sel);
	d->kept = malloc(k * sizeof *d->kept);
	d->order = malloc(a * sizeof *d->order);
	d->keep = malloc(a * sizeof *d->keep);
	d->picked = malloc(a);
	if (!d->probs || !d->maxs || !d->cand || !d->cand_anchor || !d->cand_delta || !d->cand_box || !d->sel ||
	    !d->kept || !d->order || !d->keep || !d->picked) {
		free_scratch(d);
		return err_set("out of memory (%lld anchors x %d classes)", (long long)A, C);
	}
	d->cap_a = A;
	d->cap_p = (int64_t)k;
	return 0;
}

/* The order of candidates and detections: score descending, then label, then key. Keys
 * are unique within a list, so the order is strict and any correct sort gives one result. */
static inline int before(const scored *a, const scored *b)
{
	if (a->score != b->score)
		return a->score > b->score;
	if (a->label != b->label)
		return a->label < b->label;
	return a->key < b->key;
}

static inline void swap_scored(scored *a, scored *b)
{
	scored t = *a;
	*a = *b;
	*b = t;
}

/* Moves a median-of-three pivot to v[hi] and partitions v[lo..hi] around it; returns the
 * pivot's final position. */
static int64_t partition(scored *v, int64_t lo, int64_t hi)
{
	int64_t mid = lo + (hi - lo) / 2;
	if (before(&v[mid], &v[lo]))
		swap_scored(&v[mid], &v[lo]);
	if (before(&v[hi], &v[lo]))
		swap_scored(&v[hi], &v[lo]);
	if (before(&v[mid], &v[hi]))
		swap_scored(&v[mid], &v[hi]);
	int64_t store = lo;
	for (int64_t i = lo; i < hi; i++)
		if (before(&v[i], &v[hi]))
			swap_scored(&v[i], &v[store++]);
	swap_scored(&v[store], &v[hi]);
	return store;
}

/* Sorts v[0..n) (quicksort on the smaller side, insertion sort for short runs; no
 * allocation, unlike glibc's qsort). */
static void sort_scored(scored *v, int64_t n)
{
	int64_t lo = 0, hi = n - 1;
	while (hi - lo > 16) {
		int64_t p = partition(v, lo, hi);
		if (p - lo < hi - p) {
			sort_scored(v + lo, p - lo);
			lo = p + 1;
		} else {
			sort_scored(v + p + 1, hi - p);
			hi = p - 1;
		}
	}
	for (int64_t i = lo + 1; i <= hi; i++)
		for (int64_t j = i; j > lo && before(&v[j], &v[j - 1]); j--)
			swap_scored(&v[j], &v[j - 1]);
}

/* Reorders v[0..n) so that v[0..k) are its k first in sort order (in no particular order). */
static void select_first(scored *v, int64_t n, int64_t k)
{
	int64_t lo = 0, hi = n - 1;
	while (lo < hi) {
		int64_t p = partition(v, lo, hi);
		if (p == k - 1 || p == k)
			return;
		if (p < k)
			lo = p + 1;
		else
			hi = p - 1;
	}
}

/* Softmax of one anchor's C+1 logits x: the foreground part into p[0..C) when p is not
 * NULL; returns the highest foreground score (the same float either way). */
static float softmax_fg(float *p, const float *x, int C)
{
	float m = x[0], fg = x[0];
	for (int j = 1; j <= C; j++)
		m = x[j] > m ? x[j] : m;
	for (int j = 1; j < C; j++)
		fg = x[j] > fg ? x[j] : fg;
	float sum = 0;
	for (int j = 0; j <= C; j++)
		sum += expf(x[j] - m);
	if (p)
		for (int j = 0; j < C; j++)
			p[j] = expf(x[j] - m) / sum;
	return expf(fg - m) / sum;
}

int detector_run(detector *d, int size, const float *cls, const float *reg, int64_t A, int C,
		 const float *scale_factor, detections *out)
{
	const detect_params *t = &d->m.test;
	const anchor_set *an = detector_anchors(d, size);
	if (!an)
		return -1;
	if (A != an->count)
		return err_set("%lld anchors, but the anchor config gives %lld at input size %d", (long long)A,
			       (long long)an->count, size);
	if (C < 1)
		return err_set("no foreground classes");
	if (reserve(d, A, C) < 0)
		return -1;

	/* 1-2: scores, per-level top-k, candidates in anchor order */
	int64_t ncand = 0;
	for (int k = 0; k < an->nlevels; k++) {
		const anchor_level *lv = &an->level[k];
		int64_t first = lv->first, n = lv->count;
		if (t->nms_pre > 0 && n > t->nms_pre) {
			for (int64_t i = 0; i < n; i++) {
				d->sel[i].score = softmax_fg(NULL, cls + (first + i) * (C + 1), C);
				d->sel[i].label = 0;
				d->sel[i].key = first + i;
			}
			select_first(d->sel, n, t->nms_pre);
			unsigned char *picked = d->picked;
			memset(picked, 0, (size_t)n);
			for (int64_t i = 0; i < t->nms_pre; i++)
				picked[d->sel[i].key - first] = 1;
			for (int64_t i = 0; i < n; i++)
				if (picked[i])
					d->cand[ncand++] = first + i;
		} else {
			for (int64_t i = 0; i < n; i++)
				d->cand[ncand++] = first + i;
		}
	}
	for (int64_t i = 0; i < ncand; i++) {
		int64_t a = d->cand[i];
		softmax_fg(d->probs + i * C, cls + a * (C + 1), C);
		memcpy(d->cand_anchor + 4 * i, an->boxes + 4 * a, 4 * sizeof(float));
		memcpy(d->cand_delta + 4 * i, reg + 4 * a, 4 * sizeof(float));
	}

	/* 3: decode, clip to the input, back to original pixels */
	box_decode(d->cand_box, d->cand_anchor, d->cand_delta, ncand, &d->m.coder, (float)size, (float)size);
	for (int64_t i = 0; i < 4 * ncand; i++)
		d->cand_box[i] /= scale_factor[i & 3];

	/* 4: per-class threshold + NMS */
	float thr = (float)t->score_thr, iou = (float)t->nms_iou;
	int64_t nkept = 0;
	for (int c = 0; c < C; c++) {
		int64_t n = 0;
		for (int64_t i = 0; i < ncand; i++) {
			float s = d->probs[i * C + c];
			if (s > thr)
				d->sel[n++] = (scored){s, 0, i};
		}
		sort_scored(d->sel, n);
		for (int64_t i = 0; i < n; i++)
			d->order[i] = d->sel[i].key;
		/* a class's boxes beyond its max_per_img best cannot make the overall best */
		int64_t nk = box_nms(d->keep, d->cand_box, d->order, n, iou, t->max_per_img);
		for (int64_t i = 0; i < nk; i++)
			d->kept[nkept++] = (scored){d->probs[d->keep[i] * C + c], c, d->keep[i]};
	}

	/* 5: best max_per_img over all classes */
	sort_scored(d->kept, nkept);
	int64_t nout = nkept < t->max_per_img ? nkept : t->max_per_img;
	for (int64_t i = 0; i < nout; i++) {
		memcpy(d->out_boxes + 4 * i, d->cand_box + 4 * d->kept[i].key, 4 * sizeof(float));
		d->out_scores[i] = d->kept[i].score;
		d->out_labels[i] = d->kept[i].label;
	}
	out->n = nout;
	out->boxes = d->out_boxes;
	out->scores = d->out_scores;
	out->labels = d->out_labels;
	return 0;
}

/* ------------------------------------------------------------------ records */

static record *dets_record(const detections *dt, const float *gt, const int32_t *gl, const uint8_t *gd, int64_t G)
{
	record *o = record_new("dets");
	if (!o)
		return NULL;
	int64_t sb[2] = {dt->n, 4}, sg[2] = {G, 4};
	tensor *b = record_add(o, "boxes", DT_F32, 2, sb), *s = record_add(o, "scores", DT_F32, 1, sb),
	       *l = record_add(o, "labels", DT_I32, 1, sb), *tb = record_add(o, "gt_boxes", DT_F32, 2, sg),
	       *tl = record_add(o, "gt_labels", DT_I32, 1, sg), *td = record_add(o, "gt_difficult", DT_U8, 1, sg);
	if (!b || !s || !l || !tb || !tl || !td) {
		record_free(o);
		return NULL;
	}
	if (dt->n) {
		memcpy(b->data, dt->boxes, (size_t)dt->n * 4 * sizeof(float));
		memcpy(s->data, dt->scores, (size_t)dt->n * sizeof(float));
		memcpy(l->data, dt->labels, (size_t)dt->n * sizeof(int32_t));
	}
	if (G) {
		memcpy(tb->data, gt, (size_t)G * 4 * sizeof(float));
		memcpy(tl->data, gl, (size_t)G * sizeof(int32_t));
		if (gd)
			memcpy(td->data, gd, (size_t)G);
	}
	return o;
}

int detect_pred_record(detector *d, const record *pred, long *images, int (*emit)(void *ctx, record *dets),
		       void *ctx)
{
	const tensor *cls = record_expect(pred, "cls", DT_F32, 3);
	if (!cls)
		return -1;
	int64_t N = cls->shape[0], A = cls->shape[1], C = cls->shape[2] - 1;
	if (C < 1)
		return err_set("pred record: tensor 'cls' has %lld columns, expected C + 1 >= 2 (classes, then background)",
			       (long long)C + 1);
	if (C > 1000000)
		return err_set("pred record: tensor 'cls' has %lld columns", (long long)C + 1);
	const tensor *reg, *sf, *osz, *gb = NULL, *gl = NULL, *gn = NULL, *gd = NULL;
	if (!(reg = record_expect_shape(pred, "reg", DT_F32, 3, (int64_t[]){N, A, 4})) ||
	    !(sf = record_expect_shape(pred, "scale_factor", DT_F32, 2, (int64_t[]){N, 4})) ||
	    !(osz = record_expect_shape(pred, "orig_size", DT_I32, 2, (int64_t[]){N, 2})))
		return -1;
	int64_t M = 0;
	if (record_find(pred, "boxes")) {
		if (!(gb = record_expect_shape(pred, "boxes", DT_F32, 3, (int64_t[]){N, -1, 4})))
			return -1;
		M = gb->shape[1];
		if (!(gl = record_expect_shape(pred, "labels", DT_I32, 2, (int64_t[]){N, M})) ||
		    !(gn = record_expect_shape(pred, "nbox", DT_I32, 1, (int64_t[]){N})))
			return -1;
		if (record_find(pred, "difficult") && !(gd = record_expect_shape(pred, "difficult", DT_U8, 2, (int64_t[]){N, M})))
			return -1;
	}
	const cJSON *size = cJSON_GetObjectItemCaseSensitive(pred->meta, "size");
	if (!cJSON_IsNumber(size) || size->valuedouble < 1 || size->valuedouble > 65536 ||
	    size->valuedouble != floor(size->valuedouble))
		return err_set("pred record: meta.size: expected the network input size (an integer)");
	int S = (int)size->valuedouble;
	const cJSON *ids = cJSON_GetObjectItemCaseSensitive(pred->meta, "ids");
	const cJSON *idx = cJSON_GetObjectItemCaseSensitive(pred->meta, "indices");
	if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) != N)
		return err_set("pred record: meta.ids: expected an array of %lld image ids", (long long)N);
	if (idx && (!cJSON_IsArray(idx) || cJSON_GetArraySize(idx) != N))
		return err_set("pred record: meta.indices: expected an array of %lld numbers", (long long)N);
	const anchor_set *an = detector_anchors(d, S);
	if (!an)
		return -1;
	if (A != an->count)
		return err_set("pred record: tensor 'cls' has %lld anchors, but the anchor config gives %lld at input size %d",
			       (long long)A, (long long)an->count, S);

	/* everything checked before the first image is emitted */
	for (int64_t n = 0; n < N; n++) {
		const cJSON *id = cJSON_GetArrayItem(ids, (int)n);
		if (!cJSON_IsString(id))
			return err_set("pred record: meta.ids[%lld]: expected a string", (long long)n);
		if (idx && !cJSON_IsNumber(cJSON_GetArrayItem(idx, (int)n)))
			return err_set("pred record: meta.indices[%lld]: expected a number", (long long)n);
		const float *f = (const float *)sf->data + 4 * n;
		for (int k = 0; k < 4; k++)
			if (!(f[k] > 0) || !isfinite(f[k]))
				return err_set("image %s: scale_factor[%d] = %g; expected > 0", id->valuestring, k, f[k]);
		if (gb) {
			int64_t G = ((const int32_t *)gn->data)[n];
			if (G < 0 || G > M)
				return err_set("image %s: nbox %lld outside 0..%lld", id->valuestring, (long long)G, (long long)M);
			for (int64_t g = 0; g < G; g++)
				if (((const int32_t *)gl->data)[n * M + g] < 0)
					return err_set("image %s: gt label %d of box %lld (< nbox)", id->valuestring,
						       ((const int32_t *)gl->data)[n * M + g], (long long)g);
		}
	}
	for (int64_t n = 0; n < N; n++) {
		const cJSON *id = cJSON_GetArrayItem(ids, (int)n), *ix = idx ? cJSON_GetArrayItem(idx, (int)n) : NULL;
		const float *f = (const float *)sf->data + 4 * n;
		int64_t G = gb ? ((const int32_t *)gn->data)[n] : 0;
		detections dt;
		if (detector_run(d, S, (const float *)cls->data + n * A * (C + 1), (const float *)reg->data + n * A * 4, A,
				 (int)C, f, &dt) < 0)
			return -1;
		record *o = dets_record(&dt, gb ? (const float *)gb->data + n * M * 4 : NULL,
					gl ? (const int32_t *)gl->data + n * M : NULL,
					gd ? (const uint8_t *)gd->data + n * M : NULL, G);
		if (!o)
			return -1;
		const int32_t *hw = (const int32_t *)osz->data + 2 * n;
		cJSON *m = o->meta;
		if (!cJSON_AddStringToObject(m, "id", id->valuestring) ||
		    !cJSON_AddNumberToObject(m, "index", ix ? ix->valuedouble : (double)*images) ||
		    !cJSON_AddNumberToObject(m, "width", hw[1]) || !cJSON_AddNumberToObject(m, "height", hw[0]) ||
		    !cJSON_AddNumberToObject(m, "num_classes", (double)C)) {
			record_free(o);
			return err_set("out of memory");
		}
		(*images)++;
		if (emit(ctx, o) < 0)
			return -1;
	}
	return 0;
}
