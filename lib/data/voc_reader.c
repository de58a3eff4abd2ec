#include "data/voc_reader.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "core/str.h"
#include "data/image_record.h"
#include "data/voc_private.h"
#include "data/voc_xml.h"

uint64_t voc_epoch_seed(uint64_t seed, int epoch)
{
	uint64_t st = seed ^ (0x632be59bd9b4e019ull * (uint64_t)(epoch + 1));
	return splitmix64(&st);
}

struct job {
	long item, index;
	int epoch;
	int done;
	int status; /* VOC_RECORD or VOC_BAD */
	record *rec;
	char *msg;
};

/* The caller's thread plans jobs into a ring; workers claim them in order and decode;
 * the caller takes them out in order, so the output does not depend on timing. */
struct voc_reader {
	voc_dataset *d;
	voc_plan p;
	long nsel;       /* images per epoch, before sharding */
	long *order;     /* the current epoch's order */
	int epoch;       /* the epoch being planned */
	int order_epoch; /* the epoch order[] is for, or -1 */
	long pos;        /* next position of order[] to plan */
	struct job *ring;
	long window, head, tail, claim;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	pthread_t *th;
	int nth, quit;
};

static void epoch_order(voc_reader *r, int epoch)
{
	for (long i = 0; i < r->nsel; i++)
		r->order[i] = i;
	if (r->p.shuffle)
		splitmix64_shuffle(r->order, r->nsel, voc_epoch_seed(r->p.seed, epoch));
	r->order_epoch = epoch;
}

/* The positions of an epoch the shards share out: all, or with even_shards the
 * largest multiple of the shard count, so every shard gets as many. */
static long shard_end(const voc_reader *r)
{
	return r->p.even_shards ? r->nsel - r->nsel % r->p.shard_n : r->nsel;
}

/* The next (item, index, epoch) of this shard; 0 when all epochs are planned. */
static int next_planned(voc_reader *r, struct job *j)
{
	for (;;) {
		if (r->epoch >= r->p.epochs)
			return 0;
		if (r->order_epoch != r->epoch) {
			epoch_order(r, r->epoch);
			r->pos = r->p.shard_k;
			/* resuming: the first position at or after skip_to that is this shard's */
			if (r->epoch == r->p.start_epoch && r->p.skip_to > r->pos)
				r->pos += (r->p.skip_to - r->pos + r->p.shard_n - 1) / r->p.shard_n * r->p.shard_n;
		}
		if (r->pos >= shard_end(r)) {
			r->epoch++;
			continue;
		}
		j->item = r->order[r->pos];
		j->index = r->pos;
		j->epoch = r->epoch;
		r->pos += r->p.shard_n;
		return 1;
	}
}

/* An image's ground truth as records carry it, from its XML or from a listed dataset. */
struct truth {
	int width, height; /* the size the annotation gives; 0 when absent */
	int n;
	float *boxes;
	int32_t *labels;
	uint8_t *ignore;
	void *own; /* the arrays, when made from XML */
};

static int truth_from_xml(const voc_annotation *a, struct truth *t)
{
	int n = a->nobj;
	t->own = malloc((size_t)(n ? n : 1) * (4 * sizeof(float) + sizeof(int32_t) + 1));
	if (!t->own)
		return err_set("out of memory");
	t->boxes = t->own;
	t->labels = (int32_t *)(t->boxes + 4 * n);
	t->ignore = (uint8_t *)(t->labels + n);
	t->n = n;
	t->width = a->width;
	t->height = a->height;
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < 4; k++)
			t->boxes[4 * i + k] = (float)a->obj[i].box[k];
		t->labels[i] = a->obj[i].label;
		t->ignore[i] = (uint8_t)a->obj[i].difficult;
	}
	return 0;
}

/* A VOC item's annotation (XML from disk or archive), parsed; xml_where names it. */
static int voc_truth(voc_reader *r, const struct item *it, const char *xml_where, voc_annotation *ann)
{
	char *xml_own = NULL;
	const char *xml = NULL;
	size_t xml_len = 0;
	int rc = -1;
	if (voc_load_xml(r->d, it, xml_where, &xml_own, &xml, &xml_len) < 0)
		goto out;
	if (voc_parse_xml(xml, xml_len, r->p.classes, ann) < 0) {
		err_wrap("%s", xml_where);
		goto out;
	}
	rc = 0;
out:
	free(xml_own);
	return rc;
}

static int build_record(voc_reader *r, const struct job *j, record **out)
{
	const voc_dataset *d = r->d;
	const struct item *it = &d->items[j->item];
	const struct root *rt = &d->roots[it->root];
	struct truth gt = {0};
	voc_annotation ann = {0};
	char *xml_rel = NULL, *where = NULL, *img_rel = NULL, *img_where = NULL, *file = NULL;
	unsigned char *img_own = NULL;
	const unsigned char *img = NULL;
	size_t img_len = 0;
	record *rec = NULL;
	int rc = -1, w = 0, h = 0;

	*out = NULL;
	if (it->file) {
		/* listed: the annotation was read and checked at open */
		if (it->why_bad) {
			err_set("%s", it->why_bad);
			goto out;
		}
		gt = (struct truth){.width = it->width, .height = it->height, .n = it->gt_n,
				    .boxes = d->gt_boxes + 4 * it->gt_first, .labels = d->gt_labels + it->gt_first,
				    .ignore = d->gt_ignore + it->gt_first};
		if (voc_load_listed_image(d, it, r->p.images, &img_rel, &img_own, &img, &img_len) < 0)
			goto out;
		if (!(where = voc_file_where(d, rt, img_rel)))
			goto out;
	} else {
		if (!(xml_rel = str_printf("Annotations/%s.xml", it->id)) || !(where = voc_file_where(d, rt, xml_rel)) ||
		    voc_truth(r, it, where, &ann) < 0)
			goto out;
		gt.width = ann.width;
		gt.height = ann.height;
		if (voc_load_image(d, it, r->p.images, &img_rel, &img_own, &img, &img_len) < 0)
			goto out;
	}
	if (!(img_where = voc_file_where(d, rt, img_rel)) || !(file = voc_file_meta(rt, img_rel)))
		goto out;
	if (r->p.images) {
		if (!(rec = image_record_new(img, img_len, 1, img_where, &w, &h)))
			goto out;
		/* a <size> of 0 means "not filled in" to some annotation tools */
		if (gt.width > 0 && gt.height > 0 && (gt.width != w || gt.height != h)) {
			err_set("%s: %s %dx%d disagrees with the image (%dx%d)", where, it->file ? "size" : "<size>",
				gt.width, gt.height, w, h);
			goto out;
		}
	} else {
		w = gt.width;
		h = gt.height;
		if (!(rec = record_new("image")))
			goto out;
	}
	/* listed boxes were checked at open, against the annotation's size */
	if (!it->file && (voc_check_boxes(&ann, w > 0 && h > 0 ? w : INT_MAX, w > 0 && h > 0 ? h : INT_MAX) < 0 ||
			  truth_from_xml(&ann, &gt) < 0)) {
		err_wrap("%s", where);
		goto out;
	}
	int n = gt.n;
	tensor *boxes = record_add(rec, "boxes", DT_F32, 2, (int64_t[]){n, 4});
	tensor *labels = boxes ? record_add(rec, "labels", DT_I32, 1, (int64_t[]){n}) : NULL;
	tensor *diff = labels ? record_add(rec, "difficult", DT_U8, 1, (int64_t[]){n}) : NULL;
	if (!diff)
		goto out;
	memcpy(boxes->data, gt.boxes, (size_t)n * 4 * sizeof(float));
	memcpy(labels->data, gt.labels, (size_t)n * sizeof(int32_t));
	memcpy(diff->data, gt.ignore, (size_t)n);
	if (image_record_meta(rec, it->id, rt->name, file, w, h, j->index, j->epoch) < 0)
		goto out;
	/* what the "difficult" mask holds: COCO's crowd regions are ignored as VOC's difficult are */
	if (it->file && !cJSON_AddStringToObject(rec->meta, "difficult_is", "iscrowd")) {
		err_set("out of memory");
		goto out;
	}
	/* compressing here puts it on the decoding threads too */
	if (r->p.encode && record_encode(rec, r->p.level) < 0)
		goto out;
	*out = rec;
	rec = NULL;
	rc = 0;
out:
	record_free(rec);
	voc_annotation_clear(&ann);
	free(gt.own);
	free(xml_rel);
	free(where);
	free(img_rel);
	free(img_where);
	free(img_own);
	free(file);
	return rc;
}

static void run_job(voc_reader *r, struct job *j)
{
	if (build_record(r, j, &j->rec) == 0) {
		j->status = VOC_RECORD;
	} else {
		j->status = VOC_BAD;
		j->msg = strdup(err_msg());
	}
}

static void *worker(void *arg)
{
	voc_reader *r = arg;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (!r->quit && r->claim >= r->tail)
			pthread_cond_wait(&r->work, &r->mu);
		if (r->quit)
			break;
		struct job *j = &r->ring[r->claim++ % r->window];
		pthread_mutex_unlock(&r->mu);
		run_job(r, j);
		pthread_mutex_lock(&r->mu);
		j->done = 1;
		pthread_cond_broadcast(&r->done);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Marks the items some epoch of this shard uses and reads their images from archives. */
static int select_and_load(voc_reader *r)
{
	voc_dataset *d = r->d;
	long nwanted = 0;
	if (!r->p.images || !d->narchives)
		return 0;
	for (int e = r->p.start_epoch; e < r->p.epochs && nwanted < r->nsel; e++) {
		if (e > r->p.start_epoch && !r->p.shuffle)
			break;
		epoch_order(r, e);
		for (long p = r->p.shard_k; p < shard_end(r); p += r->p.shard_n)
			if (!d->items[r->order[p]].wanted) {
				d->items[r->order[p]].wanted = 1;
				nwanted++;
			}
	}
	r->order_epoch = -1;
	return voc_load_archive_images(d);
}

void voc_reader_free(voc_reader *r)
{
	if (!r)
		return;
	if (r->th) {
		pthread_mutex_lock(&r->mu);
		r->quit = 1;
		pthread_cond_broadcast(&r->work);
		pthread_mutex_unlock(&r->mu);
		for (int i = 0; i < r->nth; i++)
			pthread_join(r->th[i], NULL);
		free(r->th);
	}
	if (r->ring) {
		for (long j = r->head; j < r->tail; j++) {
			record_free(r->ring[j % r->window].rec);
			free(r->ring[j % r->window].msg);
		}
	}
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->work);
	pthread_cond_destroy(&r->done);
	free(r->ring);
	free(r->order);
	free(r);
}

voc_reader *voc_reader_new(voc_dataset *d, const voc_plan *p)
{
	if (!p->classes || p->epochs < 1 || p->shard_n < 1 || p->shard_k < 0 || p->shard_k >= p->shard_n ||
	    p->start_epoch < 0 || p->skip_to < 0) {
		err_set("bad reading plan");
		return NULL;
	}
	voc_reader *r = calloc(1, sizeof *r);
	if (!r) {
		err_set("out of memory");
		return NULL;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->work, NULL);
	pthread_cond_init(&r->done, NULL);
	r->d = d;
	r->p = *p;
	r->nsel = p->limit >= 0 && p->limit < d->nitems ? p->limit : d->nitems;
	r->order_epoch = -1;
	r->epoch = p->start_epoch;
	r->nth = p->threads > 1 ? p->threads : 0;
	r->window = r->nth ? 4L * r->nth : 1;
	r->order = malloc((size_t)(r->nsel ? r->nsel : 1) * sizeof *r->order);
	r->ring = calloc((size_t)r->window, sizeof *r->ring);
	if (!r->order || !r->ring) {
		err_set("out of memory");
		goto fail;
	}
	if (select_and_load(r) < 0)
		goto fail;
	if (r->nth) {
		if (!(r->th = calloc((size_t)r->nth, sizeof *r->th))) {
			err_set("out of memory");
			goto fail;
		}
		for (int i = 0; i < r->nth; i++)
			if (pthread_create(&r->th[i], NULL, worker, r) != 0) {
				r->nth = i;
				err_set("cannot start a decoding thread");
				goto fail;
			}
	}
	return r;
fail:
	voc_reader_free(r);
	return NULL;
}

int voc_reader_next(voc_reader *r, record **out)
{
	*out = NULL;
	for (;;) {
		if (r->nth)
			pthread_mutex_lock(&r->mu);
		/* plan ahead, leaving out images already found bad */
		while (r->tail - r->head < r->window) {
			struct job *j = &r->ring[r->tail % r->window];
			memset(j, 0, sizeof *j);
			if (!next_planned(r, j))
				break;
			if (!r->d->items[j->item].bad)
				r->tail++;
		}
		if (r->head == r->tail) {
			if (r->nth)
				pthread_mutex_unlock(&r->mu);
			return VOC_END;
		}
		struct job *j = &r->ring[r->head % r->window];
		if (r->nth) {
			pthread_cond_broadcast(&r->work);
			while (!j->done)
				pthread_cond_wait(&r->done, &r->mu);
		} else {
			run_job(r, j);
		}
		r->head++;
		if (r->nth)
			pthread_mutex_unlock(&r->mu);
		if (j->status == VOC_RECORD) {
			*out = j->rec;
			j->rec = NULL;
			return VOC_RECORD;
		}
		struct item *it = &r->d->items[j->item];
		err_set("%s", j->msg ? j->msg : "out of memory");
		free(j->msg);
		j->msg = NULL;
		if (!it->bad) {
			it->bad = 1;
			return VOC_BAD;
		}
	}
}
