#include "eval/coco_eval.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/err.h"

const char *const coco_stat_names[COCO_NSTATS] = {
	"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
	"AR@1",	    "AR@10",	   "AR@100",	  "AR_s@100",	"AR_m@100",   "AR_l@100"};

enum { NTHR = 10, NREC = 101, NAREA = 4, NMAXDET = 3, MAXDET = 100 };
static const int max_dets[NMAXDET] = {1, 10, 100};
static const double area_lo[NAREA] = {0, 0, 32 * 32, 96 * 96}, area_hi[NAREA] = {1e10, 32 * 32, 96 * 96, 1e10};

struct box {
	int64_t image_id;
	long image; /* rank of the image in id order, set by coco_eval_compute */
	int cat;
	int crowd;      /* gts */
	double bbox[4];
	double area;    /* gts: the annotation's; dets: w * h */
	double score;   /* dets */
	long seq;       /* order of adding */
};

struct image_id {
	int64_t id;
};

struct coco_eval {
	int ncats;
	long nimages, images_cap;
	struct image_id *images; /* sorted by id (kept sorted on insert) */
	long ngts, gts_cap, ndets, dets_cap;
	struct box *gts, *dets;
};

coco_eval *coco_eval_new(int ncats)
{
	coco_eval *e = calloc(1, sizeof *e);
	if (!e)
		err_set("out of memory");
	else
		e->ncats = ncats;
	return e;
}

void coco_eval_free(coco_eval *e)
{
	if (!e)
		return;
	free(e->images);
	free(e->gts);
	free(e->dets);
	free(e);
}

/* Position of id in the sorted image list, or where it would go (*found 0). */
static long find_image(const coco_eval *e, int64_t id, int *found)
{
	long lo = 0, hi = e->nimages;
	while (lo < hi) {
		long mid = lo + (hi - lo) / 2;
		if (e->images[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < e->nimages && e->images[lo].id == id;
	return lo;
}

int coco_eval_add_image(coco_eval *e, int64_t image_id)
{
	int found;
	long at = find_image(e, image_id, &found);
	if (found)
		return err_set("image %lld registered twice", (long long)image_id);
	if (array_grow(&e->images, &e->images_cap, e->nimages + 1, sizeof *e->images) < 0)
		return -1;
	/* ids mostly come in ascending order: the move is usually empty */
	memmove(e->images + at + 1, e->images + at, (size_t)(e->nimages - at) * sizeof *e->images);
	e->images[at] = (struct image_id){image_id};
	e->nimages++;
	return 0;
}

int coco_eval_has_image(const coco_eval *e, int64_t image_id)
{
	int found;
	find_image(e, image_id, &found);
	return found;
}

int64_t coco_eval_ndets(const coco_eval *e)
{
	return e->ndets;
}

static int add_box(coco_eval *e, struct box **v, long *n, long *cap, int64_t image_id, int cat, const double bbox[4])
{
	int found;
	find_image(e, image_id, &found);
	if (!found)
		return err_set("image %lld: not among the evaluated images", (long long)image_id);
	if (cat < 0 || cat >= e->ncats)
		return err_set("image %lld: category %d outside 0..%d", (long long)image_id, cat, e->ncats - 1);
	if (array_grow(v, cap, *n + 1, sizeof **v) < 0)
		return -1;
	struct box *b = &(*v)[*n];
	memset(b, 0, sizeof *b);
	b->image_id = image_id;
	b->cat = cat;
	memcpy(b->bbox, bbox, sizeof b->bbox);
	b->seq = (*n)++;
	return 0;
}

int coco_eval_add_gt(coco_eval *e, int64_t image_id, int cat, const double bbox[4], double area, int iscrowd)
{
	if (add_box(e, &e->gts, &e->ngts, &e->gts_cap, image_id, cat, bbox) < 0)
		return -1;
	e->gts[e->ngts - 1].area = area;
	e->gts[e->ngts - 1].crowd = iscrowd != 0;
	return 0;
}

int coco_eval_add_det(coco_eval *e, int64_t image_id, int cat, const double bbox[4], double score)
{
	if (add_box(e, &e->dets, &e->ndets, &e->dets_cap, image_id, cat, bbox) < 0)
		return -1;
	e->dets[e->ndets - 1].area = bbox[2] * bbox[3];
	e->dets[e->ndets - 1].score = score;
	return 0;
}

/* ---------------------------------------------------------------- evaluate */

/* (category, image, order of adding): the (image, category) groups of pycocotools. */
static int by_cat_image(const void *pa, const void *pb)
{
	const struct box *a = pa, *b = pb;
	if (a->cat != b->cat)
		return a->cat < b->cat ? -1 : 1;
	if (a->image != b->image)
		return a->image < b->image ? -1 : 1;
	return (a->seq > b->seq) - (a->seq < b->seq);
}

/* Descending score, stable (numpy's mergesort of -score). */
static int by_score(const void *pa, const void *pb)
{
	const struct box *a = pa, *b = pb;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return (a->seq > b->seq) - (a->seq < b->seq);
}

/* maskApi's bbIou of one det and one gt. */
static double box_iou(const double *d, const double *g, int crowd)
{
	double w = fmin(d[2] + d[0], g[2] + g[0]) - fmax(d[0], g[0]);
	if (w <= 0)
		return 0;
	double h = fmin(d[3] + d[1], g[3] + g[1]) - fmax(d[1], g[1]);
	if (h <= 0)
		return 0;
	double i = w * h, da = d[2] * d[3], ga = g[2] * g[3];
	return i / (crowd ? da : da + ga - i);
}

/* One (category, area range, image)'s evaluation: its kept dets in score order with
 * their score, and per threshold matched / ignored flags; its real (not ignored) gts. */
struct img_eval {
	long image;
	int ndet;
	long first; /* into the flag and score arrays */
	long npos;
};

struct cat_eval {
	long nimg, cap;
	struct img_eval *img;
	long nflags, flags_cap;
	double *score;        /* [nflags] */
	unsigned char *flags; /* [nflags][NTHR]: bit 0 matched, bit 1 ignored */
};

/* Matches one image's dets (sorted, at most MAXDET) against its gts for area range a. */
static int eval_image(struct cat_eval *ce, long image, const struct box *dt, int nd, const struct box *gt, int ng,
		      const double *iou /* [nd][ng] */, int a, int *order, unsigned char *gt_taken)
{
	long npos = 0;
	/* real gts first, then the ignored ones, each in their order (mergesort of _ignore) */
	int k = 0;
	for (int pass = 0; pass < 2; pass++)
		for (int g = 0; g < ng; g++) {
			int ig = gt[g].crowd || gt[g].area < area_lo[a] || gt[g].area > area_hi[a];
			if (ig == pass)
				order[k++] = g;
			npos += !pass && !ig;
		}
	if (array_grow(&ce->img, &ce->cap, ce->nimg + 1, sizeof *ce->img) < 0 ||
	    array_grow(&ce->score, &ce->flags_cap, ce->nflags + nd, sizeof *ce->score) < 0)
		return -1;
	/* flags_cap counts doubles of score; keep flags as large */
	unsigned char *f = realloc(ce->flags, (size_t)(ce->flags_cap ? ce->flags_cap : 1) * NTHR);
	if (!f)
		return err_set("out of memory");
	ce->flags = f;
	struct img_eval *ie = &ce->img[ce->nimg++];
	*ie = (struct img_eval){.image = image, .ndet = nd, .first = ce->nflags, .npos = npos};
	static const double thr_step = (0.95 - 0.5) / 9;
	for (int t = 0; t < NTHR; t++) {
		/* numpy's linspace(.5, .95, 10): i * step + start, the last one exactly stop */
		double thr = t == NTHR - 1 ? 0.95 : t * thr_step + 0.5;
		thr = fmin(thr, 1 - 1e-10);
		memset(gt_taken, 0, (size_t)(ng ? ng : 1));
		for (int d = 0; d < nd; d++) {
			double best = thr;
			int m = -1, m_ignored = 0;
			for (int kk = 0; kk < ng; kk++) {
				int g = order[kk];
				int ig = kk >= npos;
				if (gt_taken[kk] && !gt[g].crowd)
					continue;
				if (m > -1 && !m_ignored && ig)
					break;
				if (iou[(long)d * ng + g] < best)
					continue;
				best = iou[(long)d * ng + g];
				m = kk;
				m_ignored = ig;
			}
			unsigned char fl = 0;
			if (m > -1) {
				gt_taken[m] = 1;
				fl = (unsigned char)(1 | (m_ignored ? 2 : 0));
			} else if (dt[d].area < area_lo[a] || dt[d].area > area_hi[a]) {
				fl = 2;
			}
			ce->flags[(ce->nflags + d) * NTHR + t] = fl;
		}
	}
	for (int d = 0; d < nd; d++)
		ce->score[ce->nflags + d] = dt[d].score;
	ce->nflags += nd;
	return 0;
}

/* ---------------------------------------------------------------- accumulate */

struct ranked {
	double score;
	long pos; /* position in the concatenation over images */
	long flag;
};

static int by_ranked(const void *pa, const void *pb)
{
	const struct ranked *a = pa, *b = pb;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return (a->pos > b->pos) - (a->pos < b->pos);
}

/* precision[t][r] and recall[t] of one category, area range and maxDets; returns 0 if
 * it counts (*counts 1) or not (-1 entries: no image, or no real gt). */
static int accumulate(const struct cat_eval *ce, int maxdet, struct ranked *rk, double *precision /* [NTHR][NREC] */,
		      double *recall /* [NTHR] */, int *counts)
{
	long n = 0, npos = 0;
	*counts = 0;
	if (!ce->nimg)
		return 0;
	for (long i = 0; i < ce->nimg; i++) {
		const struct img_eval *ie = &ce->img[i];
		npos += ie->npos;
		for (int d = 0; d < ie->ndet && d < maxdet; d++, n++)
			rk[n] = (struct ranked){ce->score[ie->first + d], n, ie->first + d};
	}
	if (!npos)
		return 0;
	*counts = 1;
	qsort(rk, (size_t)n, sizeof *rk, by_ranked);
	double *rc = malloc((size_t)(n ? n : 1) * 2 * sizeof *rc), *pr = rc ? rc + (n ? n : 1) : NULL;
	if (!rc)
		return err_set("out of memory");
	static const double rec_step = 1.0 / 100;
	for (int t = 0; t < NTHR; t++) {
		double tp = 0, fp = 0;
		long nd = 0;
		for (long k = 0; k < n; k++) {
			unsigned char fl = ce->flags[rk[k].flag * NTHR + t];
			if (fl & 2) {
				/* ignored: the sums stay, but the point is still one of the curve's */
			} else if (fl & 1) {
				tp++;
			} else {
				fp++;
			}
			rc[nd] = tp / (double)npos;
			pr[nd] = tp / (fp + tp + DBL_EPSILON);
			nd++;
		}
		recall[t] = nd ? rc[nd - 1] : 0;
		for (long i = nd - 1; i > 0; i--)
			if (pr[i] > pr[i - 1])
				pr[i - 1] = pr[i];
		long at = 0;
		for (int r = 0; r < NREC; r++) {
			double thr = r == NREC - 1 ? 1.0 : r * rec_step;
			while (at < nd && rc[at] < thr)
				at++;
			precision[t * NREC + r] = at < nd ? pr[at] : 0;
		}
	}
	free(rc);
	return 0;
}

/* ---------------------------------------------------------------- compute */

/* One thread's buffers for evaluating categories. */
struct work {
	struct cat_eval ce[NAREA];
	double *iou;
	int *order;
	unsigned char *taken;
	struct ranked *rk;
	long iou_cap, order_cap, rk_cap;
};

static void work_free(struct work *w)
{
	for (int a = 0; a < NAREA; a++) {
		free(w->ce[a].img);
		free(w->ce[a].score);
		free(w->ce[a].flags);
	}
	free(w->iou);
	free(w->order);
	free(w->taken);
	free(w->rk);
}

/* Category c: its gts gt[0..ng) and dets dt[0..nd) (sorted by image), into its slots of
 * prec, rec and valid. The dets of each image get sorted by score in place. */
static int eval_category(struct work *w, int c, const struct box *gt, long ng, struct box *dt, long nd, double *prec,
			 double *rec, int *valid)
{
	for (int a = 0; a < NAREA; a++) {
		w->ce[a].nimg = 0;
		w->ce[a].nflags = 0;
	}
	if (array_grow(&w->rk, &w->rk_cap, nd + 1, sizeof *w->rk) < 0)
		return -1;
	long gi = 0, di = 0;
	while (gi < ng || di < nd) {
		long image = gi < ng && di < nd ? (gt[gi].image < dt[di].image ? gt[gi].image : dt[di].image)
			   : gi < ng	       ? gt[gi].image
					       : dt[di].image;
		long g0 = gi, d0 = di;
		while (gi < ng && gt[gi].image == image)
			gi++;
		while (di < nd && dt[di].image == image)
			di++;
		int ngi = (int)(gi - g0), ndi = (int)(di - d0);
		qsort(dt + d0, (size_t)ndi, sizeof *dt, by_score);
		if (ndi > MAXDET)
			ndi = MAXDET;
		if (array_grow(&w->iou, &w->iou_cap, (long)ndi * ngi + 1, sizeof *w->iou) < 0 ||
		    array_grow(&w->order, &w->order_cap, ngi + 1, sizeof *w->order) < 0)
			return -1;
		unsigned char *t2 = realloc(w->taken, (size_t)w->order_cap);
		if (!t2)
			return err_set("out of memory");
		w->taken = t2;
		for (int d = 0; d < ndi; d++)
			for (int g = 0; g < ngi; g++)
				w->iou[(long)d * ngi + g] = box_iou(dt[d0 + d].bbox, gt[g0 + g].bbox, gt[g0 + g].crowd);
		for (int a = 0; a < NAREA; a++)
			if (eval_image(&w->ce[a], image, dt + d0, ndi, gt + g0, ngi, w->iou, a, w->order, w->taken) < 0)
				return -1;
	}
	for (int a = 0; a < NAREA; a++)
		for (int m = 0; m < NMAXDET; m++) {
			long at = ((long)c * NAREA + a) * NMAXDET + m;
			if (accumulate(&w->ce[a], max_dets[m], w->rk, prec + at * NTHR * NREC, rec + at * NTHR, &valid[at]) < 0)
				return -1;
		}
	return 0;
}

/* first[c]: where category c starts in v (sorted by category); first[ncats] = n */
static void category_starts(const struct box *v, long n, int ncats, long *first)
{
	long i = 0;
	for (int c = 0; c <= ncats; c++) {
		while (i < n && v[i].cat < c)
			i++;
		first[c] = i;
	}
}

int coco_eval_compute(coco_eval *e, double *stats, double *class_ap)
{
	int C = e->ncats, rc = -1, failed = 0;
	struct box *gts = malloc((size_t)(e->ngts ? e->ngts : 1) * sizeof *gts);
	struct box *dts = malloc((size_t)(e->ndets ? e->ndets : 1) * sizeof *dts);
	/* [cat][area][maxdet] precision [NTHR][NREC] and recall [NTHR], counts */
	double *prec = malloc((size_t)(C ? C : 1) * NAREA * NMAXDET * NTHR * NREC * sizeof *prec);
	double *rec = malloc((size_t)(C ? C : 1) * NAREA * NMAXDET * NTHR * sizeof *rec);
	int *valid = calloc((size_t)(C ? C : 1) * NAREA * NMAXDET, sizeof *valid);
	long *gfirst = malloc((size_t)(C + 1) * sizeof *gfirst), *dfirst = malloc((size_t)(C + 1) * sizeof *dfirst);
	if (!gts || !dts || !prec || !rec || !valid || !gfirst || !dfirst) {
		err_set("out of memory");
		goto out;
	}
	memcpy(gts, e->gts, (size_t)e->ngts * sizeof *gts);
	memcpy(dts, e->dets, (size_t)e->ndets * sizeof *dts);
	/* images in id order (pycocotools' np.unique of imgIds) */
	int found;
	for (long i = 0; i < e->ngts; i++)
		gts[i].image = find_image(e, gts[i].image_id, &found);
	for (long i = 0; i < e->ndets; i++)
		dts[i].image = find_image(e, dts[i].image_id, &found);
	qsort(gts, (size_t)e->ngts, sizeof *gts, by_cat_image);
	qsort(dts, (size_t)e->ndets, sizeof *dts, by_cat_image);
	category_starts(gts, e->ngts, C, gfirst);
	category_starts(dts, e->ndets, C, dfirst);
	/* categories are independent: one per thread at a time, each into its own slots */
#pragma omp parallel reduction(| : failed)
	{
		struct work w;
		memset(&w, 0, sizeof w);
#pragma omp for schedule(dynamic)
		for (int c = 0; c < C; c++)
			if (!failed && eval_category(&w, c, gts + gfirst[c], gfirst[c + 1] - gfirst[c], dts + dfirst[c],
						     dfirst[c + 1] - dfirst[c], prec, rec, valid) < 0)
				failed = 1;
		work_free(&w);
	}
	if (failed) {
		err_set("out of memory"); /* the only way a category fails; its message was another thread's */
		goto out;
	}
	/* summarize: means over the entries that count (> -1 in pycocotools' arrays) */
	struct {
		int ap, thr /* -1: all */, area, maxdet;
	} want[COCO_NSTATS] = {{1, -1, 0, 2}, {1, 0, 0, 2}, {1, 5, 0, 2},  {1, -1, 1, 2}, {1, -1, 2, 2}, {1, -1, 3, 2},
			       {0, -1, 0, 0}, {0, -1, 0, 1}, {0, -1, 0, 2}, {0, -1, 1, 2}, {0, -1, 2, 2}, {0, -1, 3, 2}};
	for (int s = 0; s < COCO_NSTATS; s++) {
		double sum = 0;
		long cnt = 0;
		for (int c = 0; c < C; c++) {
			long at = ((long)c * NAREA + want[s].area) * NMAXDET + want[s].maxdet;
			if (!valid[at])
				continue;
			for (int t = 0; t < NTHR; t++) {
				if (want[s].thr >= 0 && t != want[s].thr)
					continue;
				if (want[s].ap) {
					for (int r = 0; r < NREC; r++)
						sum += prec[(at * NTHR + t) * NREC + r];
					cnt += NREC;
				} else {
					sum += rec[at * NTHR + t];
					cnt++;
				}
			}
		}
		stats[s] = cnt ? sum / (double)cnt : -1;
	}
	for (int c = 0; class_ap && c < C; c++) {
		long at = ((long)c * NAREA + 0) * NMAXDET + 2;
		double sum = 0;
		for (int i = 0; valid[at] && i < NTHR * NREC; i++)
			sum += prec[at * NTHR * NREC + i];
		class_ap[c] = valid[at] ? sum / (NTHR * NREC) : NAN;
	}
	rc = 0;
out:
	free(gts);
	free(dts);
	free(prec);
	free(rec);
	free(valid);
	free(gfirst);
	free(dfirst);
	return rc;
}

/* ---------------------------------------------------------------- records */

int coco_eval_add_set(coco_eval *e, const coco_source *src, const int *label)
{
	const coco_set *s = src->set;
	for (long i = 0; i < s->nimages; i++)
		if (coco_eval_add_image(e, s->images[i].id) < 0)
			return -1;
	for (long i = 0; i < s->nimages; i++)
		for (long k = s->images[i].first_ann; k < s->images[i].first_ann + s->images[i].nanns; k++) {
			const coco_ann *a = &s->anns[k];
			if (label[a->category] >= 0 &&
			    coco_eval_add_gt(e, s->images[i].id, label[a->category], a->bbox, a->area, a->iscrowd) < 0)
				return -1;
		}
	return 0;
}

static const tensor *boxes_tensor(const record *r, const char *name)
{
	const tensor *t = record_expect(r, name, DT_F32, 2);
	if (t && t->shape[1] != 4) {
		err_set("%s record: tensor '%s': expected [n,4]", r->kind, name);
		return NULL;
	}
	return t;
}

/* boxes f32[n,4], labels i32[n], and the u8[n] mask or f32[n] scores named third. */
static int triple(const record *r, const char *bn, const char *ln, const char *xn, enum dtype xt, const tensor **b,
		  const tensor **l, const tensor **x)
{
	if (!(*b = boxes_tensor(r, bn)) || !(*l = record_expect(r, ln, DT_I32, 1)) ||
	    !(*x = record_expect(r, xn, xt, 1)))
		return -1;
	if ((*l)->shape[0] != (*b)->shape[0] || (*x)->shape[0] != (*b)->shape[0])
		return err_set("%s record: %s, %s and %s disagree in length", r->kind, bn, ln, xn);
	return 0;
}

static void corners_to_xywh(const float *c, double *bbox)
{
	/* mmdet's xyxy2xywh: the float32 corners as doubles, widths in double */
	bbox[0] = c[0];
	bbox[1] = c[1];
	bbox[2] = (double)c[2] - c[0];
	bbox[3] = (double)c[3] - c[1];
}

/* The image key of a record: with a set, its id as an image id; else meta index. */
static int record_key(const coco_source *src, const record *r, int64_t *key)
{
	const char *id = meta_str(r, "id", NULL);
	if (!id)
		return err_set("%s record: meta.id: expected the image id (a string)", r->kind);
	if (src && src->set) {
		char *end;
		errno = 0;
		long long v = strtoll(id, &end, 10);
		if (!*id || *end || errno)
			return err_set("image %s: not a COCO image id", id);
		*key = v;
		return 0;
	}
	const cJSON *ix = cJSON_GetObjectItemCaseSensitive(r->meta, "index");
	if (!cJSON_IsNumber(ix))
		return err_set("image %s: meta.index: expected the image's position (a number)", id);
	*key = (int64_t)ix->valuedouble;
	return 0;
}

static int add_record_gt(coco_eval *e, const record *r, int64_t key, const char *bn, const char *ln, const char *dn)
{
	const tensor *b, *l, *d;
	if (triple(r, bn, ln, dn, DT_U8, &b, &l, &d) < 0)
		return -1;
	if (coco_eval_add_image(e, key) < 0)
		return err_wrap("image %s", meta_str(r, "id", "?"));
	for (int64_t i = 0; i < b->shape[0]; i++) {
		double bbox[4];
		corners_to_xywh((const float *)b->data + 4 * i, bbox);
		if (coco_eval_add_gt(e, key, ((const int32_t *)l->data)[i], bbox, bbox[2] * bbox[3],
				     ((const uint8_t *)d->data)[i]) < 0)
			return -1;
	}
	return 0;
}

int coco_eval_add_gt_record(coco_eval *e, const record *r)
{
	int64_t key;
	return record_key(NULL, r, &key) < 0 ? -1 : add_record_gt(e, r, key, "boxes", "labels", "difficult");
}

int coco_eval_add_dets_record(coco_eval *e, coco_source *src, const record *r, int with_gt)
{
	int64_t key;
	const tensor *b, *l, *s;
	if (record_key(src, r, &key) < 0 || triple(r, "boxes", "labels", "scores", DT_F32, &b, &l, &s) < 0)
		return -1;
	if (!src->set && with_gt && add_record_gt(e, r, key, "gt_boxes", "gt_labels", "gt_difficult") < 0)
		return -1;
	const char *id = meta_str(r, "id", "?");
	for (int64_t i = 0; i < b->shape[0]; i++) {
		double bbox[4], score = ((const float *)s->data)[i];
		int label = ((const int32_t *)l->data)[i];
		corners_to_xywh((const float *)b->data + 4 * i, bbox);
		if (coco_eval_add_det(e, key, label, bbox, score) < 0)
			return err_wrap("dets of image %s", id);
		if (!src->results)
			continue;
		/* %.17g: pycocotools' loadRes reads back exactly what was evaluated */
		int w = src->set ? fprintf(src->results, "%s\n{\"image_id\": %lld, ", src->nresults ? "," : "[",
					   (long long)key)
				 : fprintf(src->results, "%s\n{\"image_id\": \"%s\", ", src->nresults ? "," : "[", id);
		long long cat = src->set ? (long long)src->set->categories[src->category[label]].id : label + 1;
		if (w < 0 || fprintf(src->results,
				     "\"category_id\": %lld, \"bbox\": [%.17g, %.17g, %.17g, %.17g], \"score\": %.17g}",
				     cat, bbox[0], bbox[1], bbox[2], bbox[3], score) < 0)
			return err_set("results: write error");
		src->nresults++;
	}
	return 0;
}

int coco_results_finish(coco_source *src)
{
	if (src->results && fprintf(src->results, "%s]\n", src->nresults ? "\n" : "[") < 0)
		return err_set("results: write error");
	return 0;
}

/* ---------------------------------------------------------------- reports */

char *coco_eval_report(const double *stats, const double *class_ap, const char *const *names, int ncats)
{
	static const char *const iou[COCO_NSTATS] = {"0.50:0.95", "0.50", "0.75"};
	static const char *const area[4] = {"all", "small", "medium", "large"};
	static const int area_of[COCO_NSTATS] = {0, 0, 0, 1, 2, 3, 0, 0, 0, 1, 2, 3};
	static const int dets_of[COCO_NSTATS] = {100, 100, 100, 100, 100, 100, 1, 10, 100, 100, 100, 100};
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	if (!f)
		return err_set("out of memory"), NULL;
	for (int s = 0; s < COCO_NSTATS; s++)
		fprintf(f, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
			s < 6 ? "Average Precision" : "Average Recall", s < 6 ? "(AP)" : "(AR)",
			iou[s] ? iou[s] : "0.50:0.95", area[area_of[s]], dets_of[s], stats[s]);
	int w = 8;
	for (int c = 0; c < ncats; c++)
		w = (int)strlen(names[c]) > w ? (int)strlen(names[c]) : w;
	fprintf(f, "\n+-%.*s-+-------+\n| %-*s | AP    |\n+-%.*s-+-------+\n", w,
		"----------------------------------------------------------------", w, "category", w,
		"----------------------------------------------------------------");
	for (int c = 0; c < ncats; c++) {
		if (isnan(class_ap[c]))
			fprintf(f, "| %-*s | nan   |\n", w, names[c]);
		else
			fprintf(f, "| %-*s | %0.3f |\n", w, names[c], class_ap[c]);
	}
	fprintf(f, "+-%.*s-+-------+\n", w, "----------------------------------------------------------------");
	if (fclose(f) != 0) {
		free(out);
		return err_set("out of memory"), NULL;
	}
	return out;
}

cJSON *coco_eval_json(const coco_eval *e, const double *stats, const double *class_ap, const char *const *names,
		      int ncats)
{
	cJSON *j = cJSON_CreateObject(), *arr = NULL;
	char copy[128];
	snprintf(copy, sizeof copy, "%.3f %.3f %.3f %.3f %.3f %.3f", stats[0], stats[1], stats[2], stats[3], stats[4],
		 stats[5]);
	int ok = j && cJSON_AddStringToObject(j, "metric", "coco");
	for (int s = 0; ok && s < COCO_NSTATS; s++)
		ok = cJSON_AddNumberToObject(j, coco_stat_names[s], stats[s]) != NULL;
	ok = ok && cJSON_AddStringToObject(j, "bbox_mAP_copypaste", copy) &&
	     cJSON_AddNumberToObject(j, "images", (double)e->nimages) &&
	     cJSON_AddNumberToObject(j, "dets", (double)e->ndets) && (arr = cJSON_AddArrayToObject(j, "classwise"));
	for (int c = 0; ok && c < ncats; c++) {
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			ok = 0;
			break;
		}
		/* no gt: null (mmdet's nan) */
		ok = cJSON_AddStringToObject(o, "name", names[c]) &&
		     (isnan(class_ap[c]) ? cJSON_AddNullToObject(o, "ap") != NULL
					 : cJSON_AddNumberToObject(o, "ap", class_ap[c]) != NULL);
	}
	if (!ok) {
		cJSON_Delete(j);
		return err_set("out of memory"), NULL;
	}
	return j;
}
