#include "eval/dets_out.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

int dets_view_of(dets_view *v, const record *r)
{
	memset(v, 0, sizeof *v);
	if (strcmp(r->kind, "dets"))
		return err_set("expected a dets record, got %s", r->kind);
	const tensor *b = record_expect(r, "boxes", DT_F32, 2);
	if (!b)
		return -1;
	int64_t n = b->shape[0];
	const tensor *s, *l, *gb, *gl, *gd;
	if (!record_expect_shape(r, "boxes", DT_F32, 2, (int64_t[]){n, 4}) ||
	    !(s = record_expect_shape(r, "scores", DT_F32, 1, (int64_t[]){n})) ||
	    !(l = record_expect_shape(r, "labels", DT_I32, 1, (int64_t[]){n})) ||
	    !(gb = record_expect_shape(r, "gt_boxes", DT_F32, 2, (int64_t[]){-1, 4})) ||
	    !(gl = record_expect_shape(r, "gt_labels", DT_I32, 1, (int64_t[]){gb->shape[0]})) ||
	    !(gd = record_expect_shape(r, "gt_difficult", DT_U8, 1, (int64_t[]){gb->shape[0]})))
		return err_wrap("dets record");
	v->id = meta_str(r, "id", NULL);
	double index = meta_num(r, "index", -1), w = meta_num(r, "width", 0), h = meta_num(r, "height", 0),
	       c = meta_num(r, "num_classes", 0);
	if (!v->id)
		return err_set("dets record: meta.id: expected the image id (a string)");
	if (!(index >= 0 && index == floor(index)) || !(w >= 1 && w <= 1 << 20 && w == floor(w)) ||
	    !(h >= 1 && h <= 1 << 20 && h == floor(h)) || !(c >= 1 && c <= 1 << 20 && c == floor(c)))
		return err_set("dets record %s: meta index, width, height, num_classes: expected whole numbers, "
			       "the sizes and class count >= 1",
			       v->id);
	v->index = (long)index;
	v->width = (int)w;
	v->height = (int)h;
	v->num_classes = (int)c;
	v->n = n;
	v->ngt = gb->shape[0];
	v->boxes = b->data;
	v->scores = s->data;
	v->labels = l->data;
	v->gt_boxes = gb->data;
	v->gt_labels = gl->data;
	v->gt_difficult = gd->data;
	for (int64_t i = 0; i < n; i++)
		if (v->labels[i] < 0 || v->labels[i] >= v->num_classes)
			return err_set("dets record %s: label %d of detection %lld outside 0..%d", v->id, v->labels[i],
				       (long long)i, v->num_classes - 1);
	for (int64_t i = 0; i < v->ngt; i++)
		if (v->gt_labels[i] < 0 || v->gt_labels[i] >= v->num_classes)
			return err_set("dets record %s: gt label %d of box %lld outside 0..%d", v->id, v->gt_labels[i],
				       (long long)i, v->num_classes - 1);
	return 0;
}

int dets_check_classes(const voc_classes *names, int num_classes)
{
	if (names->n != num_classes)
		return err_set("the detections have %d classes, the class list %d", num_classes, names->n);
	return 0;
}

/* ---------------------------------------------------------------- pairing */

/* A FIFO: the images of one batch at most wait at a time, so a plain array does. */
struct dets_pairs {
	record **q;
	long head, tail, cap;
	int seen;
};

dets_pairs *dets_pairs_new(void)
{
	dets_pairs *p = calloc(1, sizeof *p);
	if (!p)
		err_set("out of memory");
	return p;
}

void dets_pairs_free(dets_pairs *p)
{
	if (!p)
		return;
	for (long i = p->head; i < p->tail; i++)
		record_free(p->q[i]);
	free(p->q);
	free(p);
}

int dets_pairs_add(dets_pairs *p, record *image)
{
	if (p->head > 0 && p->head == p->tail)
		p->head = p->tail = 0;
	if (p->tail == p->cap) {
		long live = p->tail - p->head;
		if (p->head > 0) {
			memmove(p->q, p->q + p->head, (size_t)live * sizeof *p->q);
			p->head = 0;
			p->tail = live;
		}
		if (p->tail == p->cap) {
			long cap = p->cap ? 2 * p->cap : 16;
			record **q = realloc(p->q, (size_t)cap * sizeof *q);
			if (!q) {
				record_free(image);
				return err_set("out of memory");
			}
			p->q = q;
			p->cap = cap;
		}
	}
	p->q[p->tail++] = image;
	p->seen = 1;
	return 0;
}

record *dets_pairs_take(dets_pairs *p, const dets_view *v)
{
	if (p->head == p->tail) {
		err_set("dets of image %s: no image record before them (augment --pass-images writes them)", v->id);
		return NULL;
	}
	record *im = p->q[p->head];
	const char *id = meta_str(im, "id", "");
	double index = meta_num(im, "index", -1);
	if (strcmp(id, v->id) || index != (double)v->index) {
		err_set("dets of image %s (index %ld) follow the image record of %s (index %.0f): the streams are out of step",
			v->id, v->index, id, index);
		return NULL;
	}
	p->head++;
	return im;
}

long dets_pairs_waiting(const dets_pairs *p)
{
	return p->tail - p->head;
}

int dets_pairs_seen(const dets_pairs *p)
{
	return p->seen;
}

/* ---------------------------------------------------------------- JSON */

cJSON *dets_json(const dets_view *v, const char *file, const voc_classes *names, double score_thr)
{
	cJSON *o = cJSON_CreateObject(), *list;
	if (!o || !cJSON_AddStringToObject(o, "id", v->id) ||
	    !(file ? cJSON_AddStringToObject(o, "file", file) : cJSON_AddNullToObject(o, "file")) ||
	    !cJSON_AddNumberToObject(o, "index", (double)v->index) || !cJSON_AddNumberToObject(o, "width", v->width) ||
	    !cJSON_AddNumberToObject(o, "height", v->height) || !(list = cJSON_AddArrayToObject(o, "detections")))
		goto oom;
	for (int64_t i = 0; i < v->n; i++) {
		if (!(v->scores[i] > score_thr))
			continue;
		cJSON *d = cJSON_CreateObject();
		double box[4] = {v->boxes[4 * i], v->boxes[4 * i + 1], v->boxes[4 * i + 2], v->boxes[4 * i + 3]};
		cJSON *b = cJSON_CreateDoubleArray(box, 4);
		if (!d || !b || !cJSON_AddItemToArray(list, d)) {
			cJSON_Delete(d);
			cJSON_Delete(b);
			goto oom;
		}
		if (!cJSON_AddNumberToObject(d, "label", v->labels[i]) ||
		    !cJSON_AddStringToObject(d, "class", names->names[v->labels[i]]) ||
		    !cJSON_AddNumberToObject(d, "score", v->scores[i]) || !cJSON_AddItemToObject(d, "box", b)) {
			if (!cJSON_GetObjectItemCaseSensitive(d, "box"))
				cJSON_Delete(b);
			goto oom;
		}
	}
	return o;
oom:
	cJSON_Delete(o);
	err_set("out of memory");
	return NULL;
}
