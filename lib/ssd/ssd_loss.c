#include "ssd/ssd_loss.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/config.h"
#include "core/err.h"
#include "core/tensor.h"

/* ------------------------------------------------------------------ config */

void loss_params_default(loss_params *p)
{
	p->pos_iou_thr = 0.5;
	p->neg_iou_thr = 0.5;
	p->min_pos_iou = 0.0;
	p->neg_pos_ratio = 3;
	p->smoothl1_beta = 1.0;
}

int loss_params_apply(loss_params *p, const cJSON *train, const char *where)
{
	static const char *const keys[] = {"pos_iou_thr",   "neg_iou_thr",   "min_pos_iou",
					   "neg_pos_ratio", "smoothl1_beta", NULL};
	if (!cJSON_IsObject(train))
		return err_set("%s: expected an object", where);
	loss_params n = *p;
	if (cfg_check_keys(train, where, keys) < 0 ||
	    cfg_num(train, "pos_iou_thr", where, 0, 1, &n.pos_iou_thr) < 0 ||
	    cfg_num(train, "neg_iou_thr", where, 0, 1, &n.neg_iou_thr) < 0 ||
	    cfg_num(train, "min_pos_iou", where, 0, 1, &n.min_pos_iou) < 0 ||
	    cfg_int(train, "neg_pos_ratio", where, 0, 1000, &n.neg_pos_ratio) < 0 ||
	    cfg_num(train, "smoothl1_beta", where, 1e-6, 1e6, &n.smoothl1_beta) < 0)
		return -1;
	*p = n;
	return 0;
}

int loss_config_load(head_config *m, loss_params *p, const char *path)
{
	cJSON *j = config_read(path);
	if (!j)
		return -1;
	char where[512];
	snprintf(where, sizeof where, "%s: model", path);
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
	int rc = model ? head_config_apply(m, model, where) : 0;
	const cJSON *train = model ? cJSON_GetObjectItemCaseSensitive(model, "train") : NULL;
	if (rc == 0 && train) {
		snprintf(where, sizeof where, "%s: model.train", path);
		rc = loss_params_apply(p, train, where);
	}
	cJSON_Delete(j);
	return rc;
}

/* ------------------------------------------------------------------ assignment */

/* Thresholds compare as float, as torch compares a float tensor with a Python number. */
static void assign_finish(int32_t *assigned, const float *max_iou, const float *gt_best, const int64_t *gt_arg,
			  int64_t A, int G, const loss_params *p)
{
	float pos = (float)p->pos_iou_thr, neg = (float)p->neg_iou_thr, minpos = (float)p->min_pos_iou;
	for (int64_t a = 0; a < A; a++) {
		/* assigned[a] holds the anchor's best gt (0-based) until here */
		int32_t best = assigned[a], v = -1;
		if (max_iou[a] >= 0 && max_iou[a] < neg)
			v = 0;
		if (max_iou[a] >= pos)
			v = best + 1;
		assigned[a] = v;
	}
	for (int g = 0; g < G; g++)
		if (gt_best[g] >= minpos)
			assigned[gt_arg[g]] = g + 1;
}

static void assign_start(int32_t *assigned, float *max_iou, int64_t A)
{
	/* all IoUs 0 and gt 0 the best: torch's max over an all-zero column */
	for (int64_t a = 0; a < A; a++) {
		assigned[a] = 0;
		max_iou[a] = 0;
	}
}

void ssd_assign_ref(int32_t *assigned, float *max_iou, float *gt_best, int64_t *gt_arg, const float *anchors,
		    int64_t A, const float *gt, int G, const loss_params *p)
{
	assign_start(assigned, max_iou, A);
	if (G == 0)
		return; /* all background */
	for (int g = 0; g < G; g++) {
		gt_best[g] = 0;
		gt_arg[g] = 0;
		for (int64_t a = 0; a < A; a++) {
			float iou = box_iou(anchors + 4 * a, gt + 4 * g, 0);
			if (iou > max_iou[a]) {
				max_iou[a] = iou;
				assigned[a] = g;
			}
			if (iou > gt_best[g]) {
				gt_best[g] = iou;
				gt_arg[g] = a;
			}
		}
	}
	assign_finish(assigned, max_iou, gt_best, gt_arg, A, G, p);
}

/* box_iou(a, b, 0) with the same float operations in the same order, inlined: the
 * assigner's inner loop (test_loss checks the two agree bit for bit). Inputs are finite,
 * where these ternaries and fminf / fmaxf agree (up to the sign of a zero overlap). */
static inline float iou_inline(const float *a, const float *b)
{
	float area_a = (a[2] - a[0]) * (a[3] - a[1]);
	float area_b = (b[2] - b[0]) * (b[3] - b[1]);
	float w = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
	float h = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
	float overlap = (w > 0 ? w : 0.0f) * (h > 0 ? h : 0.0f);
	float uni = area_a + area_b - overlap;
	return overlap / (uni > FLT_EPSILON ? uni : FLT_EPSILON);
}

/* Columns (or rows) i of a level whose anchors [lo + i s, hi + i s] can overlap (g0, g1):
 * a conservative range, one cell wider each side than the inequalities give. */
static void grid_range(int *first, int *last, double g0, double g1, double lo, double hi, int stride, int n)
{
	double a = floor((g0 - hi) / stride) - 1, b = ceil((g1 - lo) / stride) + 1;
	*first = a < 0 ? 0 : a > n - 1 ? n : (int)a;
	*last = b > n - 1 ? n - 1 : b < 0 ? -1 : (int)b;
}

void ssd_assign(int32_t *assigned, float *max_iou, float *gt_best, int64_t *gt_arg, const anchor_set *an,
		const float *gt, int G, const loss_params *p)
{
	int64_t A = an->count;
	assign_start(assigned, max_iou, A);
	if (G == 0)
		return;
	for (int g = 0; g < G; g++) {
		const float *b = gt + 4 * g;
		/* anchors are visited in increasing index, so strict '>' keeps the first best */
		float best = 0;
		int64_t arg = 0;
		for (int k = 0; k < an->nlevels; k++) {
			const anchor_level *lv = &an->level[k];
			double x0 = INFINITY, y0 = INFINITY, x1 = -INFINITY, y1 = -INFINITY;
			for (int j = 0; j < lv->nbase; j++) {
				x0 = fmin(x0, lv->base[j][0]);
				y0 = fmin(y0, lv->base[j][1]);
				x1 = fmax(x1, lv->base[j][2]);
				y1 = fmax(y1, lv->base[j][3]);
			}
			int cx0, cx1, cy0, cy1;
			grid_range(&cx0, &cx1, b[0], b[2], x0, x1, lv->stride, lv->feat_w);
			grid_range(&cy0, &cy1, b[1], b[3], y0, y1, lv->stride, lv->feat_h);
			for (int y = cy0; y <= cy1; y++)
				for (int x = cx0; x <= cx1; x++) {
					int64_t a0 = lv->first + ((int64_t)y * lv->feat_w + x) * lv->nbase;
					for (int64_t a = a0; a < a0 + lv->nbase; a++) {
						float iou = iou_inline(an->boxes + 4 * a, b);
						if (iou > max_iou[a]) {
							max_iou[a] = iou;
							assigned[a] = g;
						}
						if (iou > best) {
							best = iou;
							arg = a;
						}
					}
				}
		}
		gt_best[g] = best;
		gt_arg[g] = arg;
	}
	assign_finish(assigned, max_iou, gt_best, gt_arg, A, G, p);
}

/* ------------------------------------------------------------------ mining */

typedef struct negc {
	float ce;
	int32_t idx;
} negc;

/* a ranks before b: larger ce, then lower anchor index (a total order: indices differ) */
static inline int before(const negc *a, const negc *b)
{
	return a->ce > b->ce || (a->ce == b->ce && a->idx < b->idx);
}

static inline void swap_negc(negc *a, negc *b)
{
	negc t = *a;
	*a = *b;
	*b = t;
}

/* Reorders v[0..n) so that v[0..k) are its first k in the 'before' order (in any order
 * among themselves): quickselect, O(n) on average, no allocation. */
static void select_first(negc *v, int64_t n, int64_t k)
{
	if (k <= 0 || k >= n)
		return;
	int64_t lo = 0, hi = n - 1, t = k - 1;
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		if (before(&v[mid], &v[lo]))
			swap_negc(&v[mid], &v[lo]);
		if (before(&v[hi], &v[lo]))
			swap_negc(&v[hi], &v[lo]);
		if (before(&v[hi], &v[mid]))
			swap_negc(&v[hi], &v[mid]);
		negc pivot = v[mid];
		int64_t i = lo, j = hi;
		while (i <= j) {
			while (before(&v[i], &pivot))
				i++;
			while (before(&pivot, &v[j]))
				j--;
			if (i <= j) {
				swap_negc(&v[i], &v[j]);
				i++;
				j--;
			}
		}
		if (t <= j)
			hi = j;
		else if (t >= i)
			lo = i;
		else
			break;
	}
}

/* ------------------------------------------------------------------ one image */

/* exp(x) for x <= 0 (a logit minus its row's max), vectorisable: x = n ln2 + r with
 * ln2 split in two (Cody-Waite), e^r by its degree-6 Taylor polynomial (|r| <= ln2 / 2:
 * relative error under 3e-7, test_loss checks), 2^n by the exponent bits. Below -87
 * it returns exp(-87) ~ 1.6e-38 instead of a denormal or 0: nothing next to the row's
 * max term 1. */
static inline float exp_neg(float x)
{
	x = x < -87.0f ? -87.0f : x;
	float n = rintf(x * 1.44269504088896341f);
	float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
	float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
	union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
	return p * scale.f;
}

float ssd_exp_neg(float x)
{
	return exp_neg(x);
}

/* log(sum(exp(x))) of one row, max-shifted as torch's log_softmax; *m gets the max, *s
 * the shifted sum. */
static inline float row_lse(const float *x, int n, float *m, float *s)
{
	float mx = x[0];
#pragma omp simd reduction(max : mx)
	for (int j = 1; j < n; j++)
		mx = x[j] > mx ? x[j] : mx;
	float sum = 0;
#pragma omp simd reduction(+ : sum)
	for (int j = 0; j < n; j++)
		sum += exp_neg(x[j] - mx);
	*m = mx;
	*s = sum;
	return mx + logf(sum);
}

/* row_lse of rows 0..nb-1 (nb <= LSE_BLOCK) of x[., K], K <= LSE_MAXK: the block is
 * transposed first so that the max and the exps run across rows, LSE_BLOCK lanes wide,
 * instead of along rows of an odd length like 21. */
#define LSE_BLOCK 16
#define LSE_MAXK 256
static void block_lse(float *lse, const float *x, int nb, int K)
{
	float t[LSE_MAXK][LSE_BLOCK], m[LSE_BLOCK], s[LSE_BLOCK];
	for (int j = 0; j < K; j++)
		for (int i = 0; i < LSE_BLOCK; i++)
			t[j][i] = i < nb ? x[(int64_t)i * K + j] : 0.0f;
	for (int i = 0; i < LSE_BLOCK; i++) {
		m[i] = -FLT_MAX; /* inputs are finite (checked) */
		s[i] = 0;
	}
	for (int j = 0; j < K; j++)
#pragma omp simd
		for (int i = 0; i < LSE_BLOCK; i++)
			m[i] = t[j][i] > m[i] ? t[j][i] : m[i];
	for (int j = 0; j < K; j++)
#pragma omp simd
		for (int i = 0; i < LSE_BLOCK; i++)
			s[i] += exp_neg(t[j][i] - m[i]);
	for (int i = 0; i < nb; i++)
		lse[i] = m[i] + logf(s[i]);
}

static int all_finite(const float *x, int64_t n)
{
	int bad = 0;
#pragma omp simd reduction(| : bad)
	for (int64_t i = 0; i < n; i++)
		bad |= !(fabsf(x[i]) <= FLT_MAX);
	return !bad;
}

typedef struct scratch {
	float *max_iou, *gt_best, *gtc; /* [A], [M], [M,4] */
	int64_t *gt_arg;                /* [M] */
	negc *neg;                      /* [A] */
} scratch;

typedef struct image_out {
	int64_t num_pos, num_neg;
	double cls, bbox;    /* sums, before dividing by num_total_pos */
	int bad;             /* 1: non-finite cls, 2: non-finite reg */
} image_out;

struct ssd_loss {
	head_config m;
	loss_params p;
	int nthreads;
	anchor_set *anchors;
	int64_t cap_a, cap_m, cap_na, cap_nm;
	scratch *sc;         /* [nthreads] */
	int32_t *assigned;   /* [N,A] compact gt indices (g + 1 of gmap) */
	int32_t *gmap;       /* [N,M] compact gt -> index among the image's boxes */
	int32_t *ngt;        /* [N] gts kept */
	image_out *res;      /* [N] */
};

/* Step 1 for image n: compacts the boxes with area, assigns, counts positives. */
static void image_assign(ssd_loss *l, const loss_batch *b, int64_t n, scratch *s)
{
	const float *bx = b->boxes + n * b->M * 4;
	int G = 0;
	for (int g = 0; g < b->nbox[n]; g++)
		if (bx[4 * g + 2] > bx[4 * g] && bx[4 * g + 3] > bx[4 * g + 1]) {
			memcpy(s->gtc + 4 * G, bx + 4 * g, 4 * sizeof(float));
			l->gmap[n * b->M + G++] = g;
		}
	l->ngt[n] = G;
	int32_t *as = l->assigned + n * b->A;
	ssd_assign(as, s->max_iou, s->gt_best, s->gt_arg, l->anchors, s->gtc, G, &l->p);
	int64_t pos = 0;
	for (int64_t a = 0; a < b->A; a++)
		pos += as[a] > 0;
	l->res[n].num_pos = pos;
}

static inline float smooth_l1(float x, float beta, float *grad)
{
	float ax = fabsf(x);
	if (ax < beta) {
		*grad = x / beta;
		return 0.5f * x * x / beta;
	}
	*grad = x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f;
	return ax - 0.5f * beta;
}

/* Steps 2-5 for image n. */
static void image_loss(ssd_loss *l, const loss_batch *b, int64_t n, double ntp, float *dcls, float *dreg, scratch *s)
{
	int64_t A = b->A;
	int C = b->C, K = C + 1;
	const float *cls = b->cls + n * A * K, *reg = b->reg + n * A * 4;
	const float *bx = b->boxes + n * b->M * 4;
	const int32_t *lab = b->labels + n * b->M, *gm = l->gmap + n * b->M, *as = l->assigned + n * A;
	image_out *r = &l->res[n];
	float inv = (float)(1.0 / ntp), beta = (float)l->p.smoothl1_beta;
	r->bad = !all_finite(cls, A * K) ? 1 : !all_finite(reg, A * 4) ? 2 : 0;
	r->cls = r->bbox = 0;
	r->num_neg = 0;
	if (dcls) {
		memset(dcls, 0, (size_t)(A * K) * sizeof(float));
		memset(dreg, 0, (size_t)(A * 4) * sizeof(float));
	}
	if (r->bad)
		return;
	/* a positive-free image mines no negatives and adds nothing */
	if (r->num_pos == 0)
		return;
	double pos_ce = 0, bbox = 0;
	int64_t nneg = 0;
	float *lse_all = s->max_iou; /* free once step 1 is done */
	if (K <= LSE_MAXK)
		for (int64_t a = 0; a < A; a += LSE_BLOCK)
			block_lse(lse_all + a, cls + a * K, A - a < LSE_BLOCK ? (int)(A - a) : LSE_BLOCK, K);
	for (int64_t a = 0; a < A; a++) {
		if (as[a] < 0)
			continue;
		const float *x = cls + a * K;
		float m = 0, sum = 1, lse;
		if (K <= LSE_MAXK && as[a] == 0)
			lse = lse_all[a];
		else
			lse = row_lse(x, K, &m, &sum);
		if (as[a] == 0) {
			s->neg[nneg].ce = lse - x[C];
			s->neg[nneg++].idx = (int32_t)a;
			continue;
		}
		int g = gm[as[a] - 1];
		int label = lab[g];
		pos_ce += lse - x[label];
		float t[4], *gr = dreg ? dreg + a * 4 : t;
		box_encode(t, l->anchors->boxes + 4 * a, bx + 4 * g, 1, &l->m.coder);
		for (int c = 0; c < 4; c++) {
			bbox += smooth_l1(reg[a * 4 + c] - t[c], beta, &gr[c]);
			gr[c] *= inv;
		}
		if (dcls) {
			float *d = dcls + a * K;
			for (int j = 0; j < K; j++)
				d[j] = exp_neg(x[j] - m) / sum * inv;
			d[label] -= inv;
		}
	}
	int64_t k = (int64_t)l->p.neg_pos_ratio * r->num_pos;
	if (k > nneg)
		k = nneg;
	select_first(s->neg, nneg, k);
	double neg_ce = 0;
	for (int64_t i = 0; i < k; i++) {
		neg_ce += s->neg[i].ce;
		if (dcls) {
			int64_t a = s->neg[i].idx;
			const float *x = cls + a * K;
			float m, sum;
			row_lse(x, K, &m, &sum);
			float *d = dcls + a * K;
			for (int j = 0; j < K; j++)
				d[j] = exp_neg(x[j] - m) / sum * inv;
			d[C] -= inv;
		}
	}
	r->num_neg = k;
	r->cls = pos_ce + neg_ce;
	r->bbox = bbox;
}

/* ------------------------------------------------------------------ batch */

static void scratch_free(scratch *s)
{
	free(s->max_iou);
	free(s->gt_best);
	free(s->gtc);
	free(s->gt_arg);
	free(s->neg);
	memset(s, 0, sizeof *s);
}

ssd_loss *ssd_loss_new(const head_config *m, const loss_params *p, int nthreads)
{
	ssd_loss *l = calloc(1, sizeof *l);
	if (nthreads < 1)
		nthreads = 1;
	if (l)
		l->sc = calloc((size_t)nthreads, sizeof *l->sc);
	if (!l || !l->sc) {
		free(l);
		return err_set("out of memory"), NULL;
	}
	l->m = *m;
	l->p = *p;
	l->nthreads = nthreads;
	return l;
}

void ssd_loss_free(ssd_loss *l)
{
	if (!l)
		return;
	for (int t = 0; t < l->nthreads; t++)
		scratch_free(&l->sc[t]);
	free(l->sc);
	anchors_free(l->anchors);
	free(l->assigned);
	free(l->gmap);
	free(l->ngt);
	free(l->res);
	free(l);
}

const anchor_set *ssd_loss_anchors(ssd_loss *l, int size)
{
	return anchors_cached(&l->anchors, &l->m.anchors, size);
}

/* Grows the buffers to N images of A anchors and M boxes. */
static int reserve(ssd_loss *l, int64_t N, int64_t A, int64_t M)
{
	if (M < 1)
		M = 1;
	if (A > l->cap_a || M > l->cap_m) {
		int64_t ca = A > l->cap_a ? A : l->cap_a, cm = M > l->cap_m ? M : l->cap_m;
		for (int t = 0; t < l->nthreads; t++) {
			scratch *s = &l->sc[t];
			scratch_free(s);
			s->max_iou = malloc((size_t)ca * sizeof *s->max_iou);
			s->neg = malloc((size_t)ca * sizeof *s->neg);
			s->gt_best = malloc((size_t)cm * sizeof *s->gt_best);
			s->gtc = malloc((size_t)cm * 4 * sizeof *s->gtc);
			s->gt_arg = malloc((size_t)cm * sizeof *s->gt_arg);
			if (!s->max_iou || !s->neg || !s->gt_best || !s->gtc || !s->gt_arg) {
				l->cap_a = l->cap_m = 0; /* partly freed: start over next time */
				return err_set("out of memory");
			}
		}
		l->cap_a = ca;
		l->cap_m = cm;
	}
	if (N * A > l->cap_na) {
		free(l->assigned);
		if (!(l->assigned = malloc((size_t)(N * A) * sizeof *l->assigned))) {
			l->cap_na = 0;
			return err_set("out of memory");
		}
		l->cap_na = N * A;
	}
	if (N * M > l->cap_nm || N > l->cap_nm) {
		int64_t c = N * M > N ? N * M : N;
		free(l->gmap);
		free(l->ngt);
		free(l->res);
		l->gmap = malloc((size_t)c * sizeof *l->gmap);
		l->ngt = malloc((size_t)c * sizeof *l->ngt);
		l->res = malloc((size_t)c * sizeof *l->res);
		if (!l->gmap || !l->ngt || !l->res) {
			l->cap_nm = 0;
			return err_set("out of memory");
		}
		l->cap_nm = c;
	}
	return 0;
}

/* Boxes and labels of every image, before any work. */
static int check_gt(const loss_batch *b)
{
	for (int64_t n = 0; n < b->N; n++) {
		int64_t G = b->nbox[n];
		if (G < 0 || G > b->M)
			return err_set("image %lld: nbox %lld outside 0..%lld", (long long)n, (long long)G, (long long)b->M);
		for (int64_t g = 0; g < G; g++) {
			const float *x = b->boxes + (n * b->M + g) * 4;
			int32_t lb = b->labels[n * b->M + g];
			if (lb < 0 || lb >= b->C)
				return err_set("image %lld: box %lld has label %d, expected 0..%d (C = %d classes)", (long long)n,
					       (long long)g, lb, b->C - 1, b->C);
			if (!all_finite(x, 4))
				return err_set("image %lld: box %lld has a non-finite coordinate", (long long)n, (long long)g);
			if (x[2] < x[0] || x[3] < x[1])
				return err_set("image %lld: box %lld is [%g, %g, %g, %g]: x2 < x1 or y2 < y1", (long long)n,
					       (long long)g, x[0], x[1], x[2], x[3]);
		}
	}
	return 0;
}

int ssd_loss_run(ssd_loss *l, int size, const loss_batch *b, float *dcls, float *dreg, int32_t *assigned,
		 loss_result *out)
{
	memset(out, 0, sizeof *out);
	if (b->C < 1)
		return err_set("%d classes: expected at least 1 (cls has C + 1 columns, background last)", b->C);
	if ((dcls == NULL) != (dreg == NULL))
		return err_set("ssd_loss_run: dcls and dreg go together");
	const anchor_set *an = ssd_loss_anchors(l, size);
	if (!an)
		return -1;
	if (b->A != an->count)
		return err_set("%lld anchors in the pred, but the anchor config gives %lld at input size %d",
			       (long long)b->A, (long long)an->count, size);
	if (check_gt(b) < 0 || reserve(l, b->N, b->A, b->M) < 0)
		return -1;
	int64_t N = b->N, A = b->A, K = b->C + 1;
	int nt = N < l->nthreads ? (int)(N > 0 ? N : 1) : l->nthreads;

	/* step 1 for every image, then the normaliser, then steps 2-5: the images are
	 * independent but for num_total_pos */
#pragma omp parallel for num_threads(nt) schedule(dynamic)
	for (int64_t n = 0; n < N; n++)
		image_assign(l, b, n, &l->sc[omp_get_thread_num()]);
	int64_t ntp = 0;
	for (int64_t n = 0; n < N; n++)
		ntp += l->res[n].num_pos > 0 ? l->res[n].num_pos : 1;
#pragma omp parallel for num_threads(nt) schedule(dynamic)
	for (int64_t n = 0; n < N; n++)
		image_loss(l, b, n, (double)ntp, dcls ? dcls + n * A * K : NULL, dreg ? dreg + n * A * 4 : NULL,
			   &l->sc[omp_get_thread_num()]);

	/* sums in image order, whatever the threads did */
	for (int64_t n = 0; n < N; n++) {
		const image_out *r = &l->res[n];
		if (r->bad)
			return err_set("image %lld: non-finite value in '%s' (the network diverged?)", (long long)n,
				       r->bad == 1 ? "cls" : "reg");
		out->loss_cls += r->cls / (double)ntp;
		out->loss_bbox += r->bbox / (double)ntp;
		out->num_pos += r->num_pos;
		out->num_neg += r->num_neg;
	}
	out->num_total_pos = ntp;
	if (assigned)
		for (int64_t n = 0; n < N; n++) {
			const int32_t *as = l->assigned + n * A, *gm = l->gmap + n * b->M;
			for (int64_t a = 0; a < A; a++)
				assigned[n * A + a] = as[a] > 0 ? gm[as[a] - 1] + 1 : as[a];
		}
	return 0;
}

/* ------------------------------------------------------------------ records */

/* Copies meta[key] from src to dst if present. */
static int copy_meta(cJSON *dst, const cJSON *src, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, key);
	if (!v)
		return 0;
	cJSON *c = cJSON_Duplicate(v, 1);
	if (!c || !cJSON_AddItemToObject(dst, key, c)) {
		cJSON_Delete(c);
		return err_set("out of memory");
	}
	return 0;
}

int ssd_loss_record(ssd_loss *l, const record *pred, record **grad, record **loss)
{
	*loss = NULL;
	if (grad)
		*grad = NULL;
	const tensor *cls = record_expect(pred, "cls", DT_F32, 3);
	if (!cls)
		return err_wrap("pred record");
	int64_t N = cls->shape[0], A = cls->shape[1], C = cls->shape[2] - 1;
	if (C < 1 || C > 1000000)
		return err_set("pred record: tensor 'cls' has %lld columns, expected C + 1 >= 2 (classes, then background)",
			       (long long)C + 1);
	const tensor *reg, *bx, *lb, *nb;
	if (!(reg = record_expect_shape(pred, "reg", DT_F32, 3, (int64_t[]){N, A, 4})) ||
	    !(bx = record_expect_shape(pred, "boxes", DT_F32, 3, (int64_t[]){N, -1, 4})) ||
	    !(lb = record_expect_shape(pred, "labels", DT_I32, 2, (int64_t[]){N, bx->shape[1]})) ||
	    !(nb = record_expect_shape(pred, "nbox", DT_I32, 1, (int64_t[]){N})))
		return -1;
	const cJSON *meta = pred->meta, *size = cJSON_GetObjectItemCaseSensitive(meta, "size");
	if (!cJSON_IsNumber(size) || size->valuedouble < 1 || size->valuedouble > 65536 ||
	    size->valuedouble != floor(size->valuedouble))
		return err_set("pred record: meta.size: expected the network input size (an integer)");
	const char *frame = meta_str(pred, "boxes_frame", "input");
	if (strcmp(frame, "input"))
		return err_set("pred record: meta.boxes_frame is \"%s\": the loss needs gt boxes in network-input pixels "
			       "(augment --train batches)", frame);
	const cJSON *ids = cJSON_GetObjectItemCaseSensitive(meta, "ids");
	if (ids && (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) != N))
		return err_set("pred record: meta.ids: expected an array of %lld image ids", (long long)N);

	record *g = NULL, *o = record_new("loss");
	float *dcls = NULL, *dreg = NULL;
	if (!o)
		return -1;
	if (grad) {
		tensor *tc, *tr;
		if (!(g = record_new("grad")) || !(tc = record_add(g, "cls", DT_F32, 3, cls->shape)) ||
		    !(tr = record_add(g, "reg", DT_F32, 3, reg->shape)))
			goto fail;
		dcls = tc->data;
		dreg = tr->data;
	}
	loss_batch b = {.N = N, .A = A, .M = bx->shape[1], .C = (int)C, .cls = cls->data, .reg = reg->data,
			.boxes = bx->data, .labels = lb->data, .nbox = nb->data};
	loss_result res;
	if (ssd_loss_run(l, (int)size->valuedouble, &b, dcls, dreg, NULL, &res) < 0) {
		if (ids && cJSON_IsString(cJSON_GetArrayItem(ids, 0)) && !strncmp(err_msg(), "image ", 6)) {
			/* name the image by its id: "image 3" -> "image 3 (BloodImage_00042)" */
			long n = strtol(err_msg() + 6, NULL, 10);
			const cJSON *id = cJSON_GetArrayItem(ids, (int)n);
			if (cJSON_IsString(id)) {
				char msg[1024];
				const char *rest = strchr(err_msg(), ':');
				snprintf(msg, sizeof msg, "image %ld (%s)%s", n, id->valuestring, rest ? rest : "");
				err_set("%s", msg);
			}
		}
		goto fail;
	}
	cJSON *m = o->meta;
	if (!cJSON_AddNumberToObject(m, "loss_cls", res.loss_cls) || !cJSON_AddNumberToObject(m, "loss_bbox", res.loss_bbox) ||
	    !cJSON_AddNumberToObject(m, "loss", res.loss_cls + res.loss_bbox) ||
	    !cJSON_AddNumberToObject(m, "num_pos", (double)res.num_pos) ||
	    !cJSON_AddNumberToObject(m, "num_neg", (double)res.num_neg) || !cJSON_AddNumberToObject(m, "images", (double)N))
		goto oom;
	static const char *const carried[] = {"epoch", "ids", "indices", "step"};
	for (size_t i = 0; i < sizeof carried / sizeof *carried; i++)
		if (copy_meta(m, meta, carried[i]) < 0)
			goto fail;
	if (g && (copy_meta(g->meta, meta, "ids") < 0 || copy_meta(g->meta, meta, "step") < 0))
		goto fail;
	/* what data-parallel training needs to rescale the gradient to the global batch's
	 * normaliser and report the global loss (forward --mpi) */
	if (g && (!cJSON_AddNumberToObject(g->meta, "num_total_pos", (double)res.num_total_pos) ||
		  !cJSON_AddNumberToObject(g->meta, "loss_cls", res.loss_cls) ||
		  !cJSON_AddNumberToObject(g->meta, "loss_bbox", res.loss_bbox) ||
		  !cJSON_AddNumberToObject(g->meta, "num_pos", (double)res.num_pos) ||
		  !cJSON_AddNumberToObject(g->meta, "num_neg", (double)res.num_neg) ||
		  !cJSON_AddNumberToObject(g->meta, "images", (double)N)))
		goto oom;
	*loss = o;
	if (grad)
		*grad = g;
	return 0;
oom:
	err_set("out of memory");
fail:
	record_free(o);
	record_free(g);
	return -1;
}

/* ------------------------------------------------------------------ parts */

static const char *const part_keys[SSD_GRAD_SUMS] = {"num_total_pos", "loss_cls", "loss_bbox",
						     "num_pos",	      "num_neg",  "images"};

int ssd_grad_sums(const record *grad, double sums[SSD_GRAD_SUMS])
{
	for (int i = 0; i < SSD_GRAD_SUMS; i++) {
		const cJSON *x = cJSON_GetObjectItemCaseSensitive(grad->meta, part_keys[i]);
		if (!cJSON_IsNumber(x))
			return err_set("meta.%s missing (a grad record of the loss tool has it)", part_keys[i]);
		sums[i] = x->valuedouble;
	}
	if (!(sums[0] >= 1))
		return err_set("meta.num_total_pos is %g, expected at least 1", sums[0]);
	sums[1] *= sums[0]; /* the sums the losses were normalised from */
	sums[2] *= sums[0];
	return 0;
}

cJSON *ssd_grad_global(record *grad, const double mine[SSD_GRAD_SUMS], const double all[SSD_GRAD_SUMS], int parts)
{
	float k = (float)(mine[0] / all[0]);
	static const char *const names[] = {"cls", "reg"};
	for (int i = 0; i < 2; i++) {
		tensor *t = record_expect(grad, names[i], DT_F32, 3);
		if (!t)
			return NULL;
		float *d = t->data;
		for (int64_t j = 0, n = tensor_numel(t); j < n; j++)
			d[j] *= k;
	}
	double ntp = all[0];
	cJSON *g = cJSON_CreateObject();
	if (!g || !cJSON_AddNumberToObject(g, "ranks", parts) ||
	    !cJSON_AddNumberToObject(g, "loss", (all[1] + all[2]) / ntp) ||
	    !cJSON_AddNumberToObject(g, "loss_cls", all[1] / ntp) || !cJSON_AddNumberToObject(g, "loss_bbox", all[2] / ntp) ||
	    !cJSON_AddNumberToObject(g, "num_total_pos", ntp) || !cJSON_AddNumberToObject(g, "num_pos", all[3]) ||
	    !cJSON_AddNumberToObject(g, "num_neg", all[4]) || !cJSON_AddNumberToObject(g, "images", all[5])) {
		cJSON_Delete(g);
		err_set("out of memory");
		return NULL;
	}
	return g;
}
