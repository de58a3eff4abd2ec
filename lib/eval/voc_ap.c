#include "eval/voc_ap.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/boxes.h"
#include "core/err.h"

enum { DET_FP = 0, DET_TP = 1, DET_IGNORED = 2 };

typedef struct image {
	char *id;
	int64_t index;
	int64_t ngt;
	float *gt_boxes;
	int32_t *gt_labels;
	uint8_t *gt_difficult;
	int has_dets;
	int64_t rank; /* position in (index, id) order, set by map_compute */
} image;

/* One detection as the AP needs it. */
typedef struct det {
	float score;
	uint8_t flag;
	int32_t pos;  /* position in its image's record */
	int64_t img;  /* image number (order of registration) */
} det;

typedef struct det_list {
	det *v;
	int64_t n, cap;
} det_list;

struct map_eval {
	int nclasses;
	int legacy;
	double iou;
	float extra;
	float iou_thr;
	image *img;
	int64_t nimg, capimg, nwith_dets;
	int64_t *slots; /* open addressing over img, -1 empty */
	int64_t nslots;
	det_list *cls;
	int64_t *gts;   /* non-difficult gts per class */
	/* scratch for one image */
	int64_t *order, *gt_idx;
	unsigned char *covered;
	int64_t cap_order, cap_gt;
};

map_eval *map_new(int nclasses, int legacy, double iou_thr)
{
	if (nclasses < 1)
		return err_set("map: %d classes", nclasses), NULL;
	map_eval *m = calloc(1, sizeof *m);
	if (!m)
		return err_set("out of memory"), NULL;
	m->nclasses = nclasses;
	m->legacy = legacy != 0;
	m->iou = iou_thr;
	m->extra = legacy ? 1.0f : 0.0f;
	m->iou_thr = (float)iou_thr;
	m->cls = calloc((size_t)nclasses, sizeof *m->cls);
	m->gts = calloc((size_t)nclasses, sizeof *m->gts);
	if (!m->cls || !m->gts) {
		map_free(m);
		return err_set("out of memory"), NULL;
	}
	return m;
}

void map_free(map_eval *m)
{
	if (!m)
		return;
	for (int64_t i = 0; i < m->nimg; i++) {
		free(m->img[i].id);
		free(m->img[i].gt_boxes);
		free(m->img[i].gt_labels);
		free(m->img[i].gt_difficult);
	}
	free(m->img);
	free(m->slots);
	if (m->cls)
		for (int c = 0; c < m->nclasses; c++)
			free(m->cls[c].v);
	free(m->cls);
	free(m->gts);
	free(m->order);
	free(m->gt_idx);
	free(m->covered);
	free(m);
}

/* ---- id lookup: FNV-1a, linear probing, at most half full ---- */

static uint64_t hash_id(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static int64_t *find_slot(const map_eval *m, const char *id)
{
	if (!m->nslots)
		return NULL;
	for (uint64_t i = hash_id(id) & (uint64_t)(m->nslots - 1);; i = (i + 1) & (uint64_t)(m->nslots - 1))
		if (m->slots[i] < 0 || !strcmp(m->img[m->slots[i]].id, id))
			return &m->slots[i];
}

static int grow_slots(map_eval *m)
{
	int64_t n = m->nslots ? 2 * m->nslots : 1024;
	int64_t *s = malloc((size_t)n * sizeof *s), *old = m->slots;
	if (!s)
		return err_set("out of memory");
	for (int64_t i = 0; i < n; i++)
		s[i] = -1;
	m->slots = s;
	m->nslots = n;
	for (int64_t i = 0; i < m->nimg; i++)
		*find_slot(m, m->img[i].id) = i;
	free(old);
	return 0;
}

int map_has_image(const map_eval *m, const char *id)
{
	int64_t *s = find_slot(m, id);
	return s && *s >= 0;
}

int64_t map_images(const map_eval *m)
{
	return m->nimg;
}

int64_t map_images_with_dets(const map_eval *m)
{
	return m->nwith_dets;
}

int map_add_gt(map_eval *m, const char *id, int64_t index, const float *boxes, const int32_t *labels,
	       const uint8_t *difficult, int64_t n)
{
	if (map_has_image(m, id))
		return err_set("image %s appears twice", id);
	for (int64_t i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= m->nclasses)
			return err_set("image %s: gt label %d outside 0..%d (mismatched classes?)", id, (int)labels[i],
				       m->nclasses - 1);
	if (2 * (m->nimg + 1) > m->nslots && grow_slots(m) < 0)
		return -1;
	if (m->nimg == m->capimg) {
		int64_t cap = m->capimg ? 2 * m->capimg : 256;
		image *v = realloc(m->img, (size_t)cap * sizeof *v);
		if (!v)
			return err_set("out of memory");
		m->img = v;
		m->capimg = cap;
	}
	image im = {.index = index, .ngt = n};
	im.id = strdup(id);
	im.gt_boxes = malloc((size_t)(n ? n : 1) * 4 * sizeof(float));
	im.gt_labels = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
	im.gt_difficult = calloc((size_t)(n ? n : 1), 1);
	if (!im.id || !im.gt_boxes || !im.gt_labels || !im.gt_difficult) {
		free(im.id);
		free(im.gt_boxes);
		free(im.gt_labels);
		free(im.gt_difficult);
		return err_set("out of memory");
	}
	if (n) {
		memcpy(im.gt_boxes, boxes, (size_t)n * 4 * sizeof(float));
		memcpy(im.gt_labels, labels, (size_t)n * sizeof(int32_t));
	}
	if (difficult)
		for (int64_t i = 0; i < n; i++)
			im.gt_difficult[i] = difficult[i] != 0;
	for (int64_t i = 0; i < n; i++)
		m->gts[labels[i]] += !im.gt_difficult[i];
	*find_slot(m, id) = m->nimg;
	m->img[m->nimg++] = im;
	return 0;
}

static int push_det(det_list *l, det d)
{
	if (l->n == l->cap) {
		int64_t cap = l->cap ? 2 * l->cap : 1024;
		det *v = realloc(l->v, (size_t)cap * sizeof *v);
		if (!v)
			return err_set("out of memory");
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = d;
	return 0;
}

typedef struct dets_view {
	const float *scores;
	const int32_t *labels;
} dets_view;

/* One image's detections by label, score descending, position. */
static int by_label_score(const void *pa, const void *pb, void *ctx)
{
	const dets_view *v = ctx;
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
	if (v->labels[a] != v->labels[b])
		return v->labels[a] < v->labels[b] ? -1 : 1;
	if (v->scores[a] != v->scores[b])
		return v->scores[a] > v->scores[b] ? -1 : 1;
	return (a > b) - (a < b);
}

static int reserve_scratch(map_eval *m, int64_t ndet, int64_t ngt)
{
	if (ndet > m->cap_order) {
		free(m->order);
		m->order = malloc((size_t)ndet * sizeof *m->order);
		m->cap_order = m->order ? ndet : 0;
		if (!m->order)
			return err_set("out of memory");
	}
	if (ngt > m->cap_gt) {
		free(m->gt_idx);
		free(m->covered);
		m->gt_idx = malloc((size_t)ngt * sizeof *m->gt_idx);
		m->covered = malloc((size_t)ngt);
		m->cap_gt = m->gt_idx && m->covered ? ngt : 0;
		if (!m->gt_idx || !m->covered)
			return err_set("out of memory");
	}
	return 0;
}

int map_add_dets(map_eval *m, const char *id, const float *boxes, const float *scores, const int32_t *labels,
		 int64_t n)
{
	int64_t *slot = find_slot(m, id);
	if (!slot || *slot < 0)
		return err_set("dets for image %s, which has no ground truth", id);
	image *im = &m->img[*slot];
	if (im->has_dets)
		return err_set("image %s appears twice", id);
	if (n > INT32_MAX)
		return err_set("image %s: %lld dets", id, (long long)n);
	for (int64_t i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= m->nclasses)
			return err_set("image %s: det label %d outside 0..%d (mismatched classes?)", id, (int)labels[i],
				       m->nclasses - 1);
	if (reserve_scratch(m, n, im->ngt) < 0)
		return -1;
	for (int64_t i = 0; i < n; i++)
		m->order[i] = i;
	dets_view view = {scores, labels};
	if (n)
		qsort_r(m->order, (size_t)n, sizeof *m->order, by_label_score, &view);

	for (int64_t lo = 0, hi; lo < n; lo = hi) {
		int c = labels[m->order[lo]];
		for (hi = lo; hi < n && labels[m->order[hi]] == c; hi++)
			;
		/* this class's gts: non-difficult first, then the difficult ("ignore") ones */
		int64_t ng = 0, nnormal;
		for (int64_t g = 0; g < im->ngt; g++)
			if (im->gt_labels[g] == c && !im->gt_difficult[g])
				m->gt_idx[ng++] = g;
		nnormal = ng;
		for (int64_t g = 0; g < im->ngt; g++)
			if (im->gt_labels[g] == c && im->gt_difficult[g])
				m->gt_idx[ng++] = g;
		if (ng)
			memset(m->covered, 0, (size_t)ng);
		for (int64_t k = lo; k < hi; k++) {
			int64_t i = m->order[k];
			float best = -1;
			int64_t arg = -1;
			for (int64_t g = 0; g < ng; g++) {
				float iou = box_iou(boxes + 4 * i, im->gt_boxes + 4 * m->gt_idx[g], m->extra);
				if (iou > best) {
					best = iou;
					arg = g;
				}
			}
			uint8_t flag = DET_FP;
			if (arg >= 0 && best >= m->iou_thr) {
				if (arg >= nnormal)
					flag = DET_IGNORED;
				else if (!m->covered[arg]) {
					m->covered[arg] = 1;
					flag = DET_TP;
				}
			}
			if (push_det(&m->cls[c], (det){scores[i], flag, (int32_t)i, *slot}) < 0)
				return -1;
		}
	}
	im->has_dets = 1;
	m->nwith_dets++;
	return 0;
}

/* ---- AP ---- */

static int by_index_id(const void *pa, const void *pb, void *ctx)
{
	const image *img = ctx, *a = &img[*(const int64_t *)pa], *b = &img[*(const int64_t *)pb];
	if (a->index != b->index)
		return a->index < b->index ? -1 : 1;
	return strcmp(a->id, b->id);
}

static int by_score_image(const void *pa, const void *pb, void *ctx)
{
	const image *img = ctx;
	const det *a = pa, *b = pb;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	int64_t ra = img[a->img].rank, rb = img[b->img].rank;
	if (ra != rb)
		return ra < rb ? -1 : 1;
	return (a->pos > b->pos) - (a->pos < b->pos);
}

/* AP from the class's ordered flags. */
static double class_ap(const det *d, int64_t n, int64_t gts, enum map_mode mode, double *recall,
		       double *rec, double *prec)
{
	double tp = 0, fp = 0, ngt = gts > 0 ? (double)gts : DBL_EPSILON;
	for (int64_t i = 0; i < n; i++) {
		tp += d[i].flag == DET_TP;
		fp += d[i].flag == DET_FP;
		rec[i] = tp / ngt;
		prec[i] = tp / (tp + fp > DBL_EPSILON ? tp + fp : DBL_EPSILON);
	}
	*recall = n ? rec[n - 1] : 0;
	double ap = 0;
	if (mode == MAP_11POINTS) {
		for (int t = 0; t <= 10; t++) {
			double thr = t * 0.1, best = 0; /* as numpy's arange(0, 1 + 1e-3, 0.1) */
			for (int64_t i = 0; i < n; i++)
				if (rec[i] >= thr && prec[i] > best)
					best = prec[i];
			ap += best;
		}
		return ap / 11;
	}
	/* area: precision envelope over [0, rec..., 1] x [0, prec..., 0] */
	for (int64_t i = n - 2; i >= 0; i--)
		if (prec[i + 1] > prec[i])
			prec[i] = prec[i + 1];
	double prev = 0;
	for (int64_t i = 0; i < n; i++) {
		if (rec[i] != prev)
			ap += (rec[i] - prev) * prec[i];
		prev = rec[i];
	}
	/* the last step to recall 1 has precision 0 */
	return ap;
}

int map_compute(map_eval *m, enum map_mode mode, map_class *out, double *mean_ap)
{
	int64_t *perm = malloc((size_t)(m->nimg ? m->nimg : 1) * sizeof *perm);
	int64_t most = 1;
	for (int c = 0; c < m->nclasses; c++)
		most = m->cls[c].n > most ? m->cls[c].n : most;
	double *rec = malloc((size_t)most * sizeof *rec), *prec = malloc((size_t)most * sizeof *prec);
	if (!perm || !rec || !prec) {
		free(perm);
		free(rec);
		free(prec);
		return err_set("out of memory");
	}
	for (int64_t i = 0; i < m->nimg; i++)
		perm[i] = i;
	if (m->nimg)
		qsort_r(perm, (size_t)m->nimg, sizeof *perm, by_index_id, m->img);
	for (int64_t r = 0; r < m->nimg; r++)
		m->img[perm[r]].rank = r;
	free(perm);

	double sum = 0;
	int counted = 0;
	for (int c = 0; c < m->nclasses; c++) {
		det_list *l = &m->cls[c];
		if (l->n)
			qsort_r(l->v, (size_t)l->n, sizeof *l->v, by_score_image, m->img);
		out[c].gts = m->gts[c];
		out[c].dets = l->n;
		out[c].ap = class_ap(l->v, l->n, m->gts[c], mode, &out[c].recall, rec, prec);
		if (m->gts[c] > 0) {
			sum += out[c].ap;
			counted++;
		}
	}
	free(rec);
	free(prec);
	*mean_ap = counted ? sum / counted : 0;
	return 0;
}

/* ---- records ---- */

static const tensor *expect_len(const record *r, const char *name, enum dtype dt, int ndim, int64_t n)
{
	const tensor *t = record_expect(r, name, dt, ndim);
	if (!t)
		return NULL;
	if ((ndim == 2 && t->shape[1] != 4) || (n >= 0 && t->shape[0] != n)) {
		char have[128];
		err_set("%s record: tensor '%s' is %s, expected %s[%lld%s]", r->kind, name,
			tensor_describe(t, have, sizeof have), dtype_name(dt), (long long)(n >= 0 ? n : t->shape[0]),
			ndim == 2 ? ",4" : "");
		return NULL;
	}
	return t;
}

static const char *record_id(const record *r)
{
	const char *id = meta_str(r, "id", NULL);
	if (!id)
		err_set("%s record: meta.id: expected the image id (a string)", r->kind);
	return id;
}

/* boxes [n,4], labels [n], difficult [n] of a gt-bearing record */
static int add_gt(map_eval *m, const record *r, const char *id, const char *bn, const char *ln, const char *dn,
		  long *count)
{
	const tensor *b = expect_len(r, bn, DT_F32, 2, -1), *l, *d;
	if (!b || !(l = expect_len(r, ln, DT_I32, 1, b->shape[0])) || !(d = expect_len(r, dn, DT_U8, 1, b->shape[0])))
		return -1;
	double index = meta_num(r, "index", (double)*count);
	(*count)++;
	return map_add_gt(m, id, (int64_t)index, b->data, l->data, d->data, b->shape[0]);
}

int map_add_gt_record(map_eval *m, const record *r, long *count)
{
	const char *id = record_id(r);
	return id ? add_gt(m, r, id, "boxes", "labels", "difficult", count) : -1;
}

int map_add_dets_record(map_eval *m, const record *r, int with_gt, long *count)
{
	const char *id = record_id(r);
	if (!id)
		return -1;
	const cJSON *nc = cJSON_GetObjectItemCaseSensitive(r->meta, "num_classes");
	if (nc && (!cJSON_IsNumber(nc) || nc->valuedouble != m->nclasses))
		return err_set("image %s: mismatched classes: the dets have %g classes, the class list %d", id,
			       cJSON_IsNumber(nc) ? nc->valuedouble : NAN, m->nclasses);
	const tensor *b = expect_len(r, "boxes", DT_F32, 2, -1), *s, *l;
	if (!b || !(s = expect_len(r, "scores", DT_F32, 1, b->shape[0])) ||
	    !(l = expect_len(r, "labels", DT_I32, 1, b->shape[0])))
		return -1;
	if (with_gt && add_gt(m, r, id, "gt_boxes", "gt_labels", "gt_difficult", count) < 0)
		return -1;
	return map_add_dets(m, id, b->data, s->data, l->data, b->shape[0]);
}

/* ---- reports ---- */

char *map_table(const map_class *cls, const char *const *names, int nclasses, double mean_ap)
{
	int rows = nclasses + 2;
	char(*cell)[5][32] = calloc((size_t)rows, sizeof *cell);
	const char **first = calloc((size_t)rows, sizeof *first);
	if (!cell || !first) {
		free(cell);
		free(first);
		return err_set("out of memory"), NULL;
	}
	static const char *const head[5] = {"class", "gts", "dets", "recall", "ap"};
	for (int k = 1; k < 5; k++)
		snprintf(cell[0][k], sizeof cell[0][k], "%s", head[k]);
	first[0] = head[0];
	for (int c = 0; c < nclasses; c++) {
		first[c + 1] = names[c];
		snprintf(cell[c + 1][1], 32, "%lld", (long long)cls[c].gts);
		snprintf(cell[c + 1][2], 32, "%lld", (long long)cls[c].dets);
		snprintf(cell[c + 1][3], 32, "%.3f", cls[c].recall);
		snprintf(cell[c + 1][4], 32, "%.3f", cls[c].ap);
	}
	first[rows - 1] = "mAP";
	snprintf(cell[rows - 1][4], 32, "%.3f", mean_ap);
	size_t w[5] = {0};
	for (int i = 0; i < rows; i++)
		for (int k = 0; k < 5; k++) {
			size_t len = strlen(k ? cell[i][k] : first[i]);
			w[k] = len > w[k] ? len : w[k];
		}
	size_t line = 2;
	for (int k = 0; k < 5; k++)
		line += w[k] + 3;
	size_t cap = (size_t)(rows + 4) * line + 1;
	char *out = malloc(cap), *p = out;
	if (!out) {
		free(cell);
		free(first);
		return err_set("out of memory"), NULL;
	}
	/* terminaltables' AsciiTable, as mmdet's print_map_summary draws it */
	for (int i = 0; i < rows; i++) {
		if (i == 0 || i == 1 || i == rows - 1) {
			for (int k = 0; k < 5; k++) {
				*p++ = '+';
				memset(p, '-', w[k] + 2);
				p += w[k] + 2;
			}
			*p++ = '+';
			*p++ = '\n';
		}
		for (int k = 0; k < 5; k++)
			p += sprintf(p, "| %-*s ", (int)w[k], k ? cell[i][k] : first[i]);
		p += sprintf(p, "|\n");
	}
	for (int k = 0; k < 5; k++) {
		*p++ = '+';
		memset(p, '-', w[k] + 2);
		p += w[k] + 2;
	}
	*p++ = '+';
	*p++ = '\n';
	*p = 0;
	free(cell);
	free(first);
	return out;
}

cJSON *map_json(const map_eval *m, const map_class *cls, const char *const *names, enum map_mode mode,
		double mean_ap)
{
	cJSON *j = cJSON_CreateObject(), *arr = NULL;
	int ok = j && cJSON_AddNumberToObject(j, "mAP", mean_ap) &&
		 cJSON_AddStringToObject(j, "mode", mode == MAP_AREA ? "area" : "11points") &&
		 cJSON_AddNumberToObject(j, "iou_thr", m->iou) &&
		 cJSON_AddBoolToObject(j, "legacy_coordinate", m->legacy) &&
		 cJSON_AddNumberToObject(j, "images", (double)m->nimg) && (arr = cJSON_AddArrayToObject(j, "classes"));
	for (int c = 0; ok && c < m->nclasses; c++) {
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			ok = 0;
			break;
		}
		ok = cJSON_AddStringToObject(o, "name", names[c]) &&
		     cJSON_AddNumberToObject(o, "gts", (double)cls[c].gts) &&
		     cJSON_AddNumberToObject(o, "dets", (double)cls[c].dets) &&
		     cJSON_AddNumberToObject(o, "recall", cls[c].recall) && cJSON_AddNumberToObject(o, "ap", cls[c].ap);
	}
	if (!ok) {
		cJSON_Delete(j);
		return err_set("out of memory"), NULL;
	}
	return j;
}
