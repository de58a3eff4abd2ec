#include "data/coco.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/files.h"

/* ---------------------------------------------------------------- blanking segmentations */

/* End of the JSON string starting at t[i] == '"' (index after the closing quote), or
 * n when it is unterminated. */
static size_t string_end(const char *t, size_t i, size_t n)
{
	for (i++; i < n; i++) {
		if (t[i] == '\\')
			i++;
		else if (t[i] == '"')
			return i + 1;
	}
	return n;
}

/* End of the JSON value starting at t[i] (after a member's colon and blanks), or 0 when
 * it does not end before n (then it is left to cJSON to report). */
static size_t value_end(const char *t, size_t i, size_t n)
{
	long depth = 0;
	while (i < n) {
		char c = t[i];
		if (c == '"') {
			i = string_end(t, i, n);
			if (i >= n && t[n - 1] != '"')
				return 0;
			if (!depth)
				return i;
			continue;
		}
		if (c == '[' || c == '{') {
			depth++;
		} else if (c == ']' || c == '}') {
			if (!depth)
				return i; /* a scalar ended by its container */
			if (!--depth)
				return i + 1;
		} else if (!depth && (c == ',')) {
			return i;
		}
		i++;
	}
	return 0;
}

/* Replaces the value of every member named key with 0 and blanks (newlines kept, so
 * cJSON's error offsets still give the file's lines and columns). */
static void blank_members(char *t, size_t n, const char *key)
{
	size_t klen = strlen(key);
	for (size_t i = 0; i < n;) {
		if (t[i] != '"') {
			i++;
			continue;
		}
		size_t end = string_end(t, i, n);
		int match = end - i == klen + 2 && !memcmp(t + i + 1, key, klen);
		i = end;
		if (!match)
			continue;
		size_t j = i + strspn(t + i, " \t\r\n");
		if (j >= n || t[j] != ':')
			continue; /* a string value, not a member name */
		j++;
		j += strspn(t + j, " \t\r\n");
		size_t v = value_end(t, j, n);
		if (!v || v == j)
			continue;
		t[j] = '0';
		for (size_t k = j + 1; k < v; k++)
			if (t[k] != '\n')
				t[k] = ' ';
		i = v;
	}
}

/* ---------------------------------------------------------------- fields */

struct ctx {
	const char *where;
};

static int fail(const struct ctx *c, const char *fmt, ...) ERR_PRINTF(2, 3);
static int fail(const struct ctx *c, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return err_set("%s: %s", c->where, msg);
}

/* A member that must be a number (integral when integral is set). */
static int get_num(const struct ctx *c, const cJSON *o, const char *sect, long i, const char *key, int integral,
		   double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return fail(c, "%s[%ld]: no \"%s\"", sect, i, key);
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || (integral && v->valuedouble != floor(v->valuedouble)))
		return fail(c, "%s[%ld].%s: expected %s", sect, i, key, integral ? "an integer" : "a number");
	*out = v->valuedouble;
	return 0;
}

static int get_id(const struct ctx *c, const cJSON *o, const char *sect, long i, const char *key, int64_t *out)
{
	double v;
	if (get_num(c, o, sect, i, key, 1, &v) < 0)
		return -1;
	if (fabs(v) > 9007199254740992.0)
		return fail(c, "%s[%ld].%s: %.0f is beyond exact integers", sect, i, key, v);
	*out = (int64_t)v;
	return 0;
}

static const cJSON *get_array(const struct ctx *c, const cJSON *root, const char *key, int required)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!a && !required)
		return NULL;
	if (!cJSON_IsArray(a)) {
		fail(c, "\"%s\": %s", key, a ? "expected an array" : "missing");
		return NULL;
	}
	return a;
}

/* ---------------------------------------------------------------- lookup by id */

struct id_index {
	int64_t id;
	long index;
};

static int id_index_cmp(const void *a, const void *b)
{
	const struct id_index *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id ? 1 : (x->index > y->index) - (x->index < y->index);
}

/* Sorts ids; the first repeated id into *dup (returns 1), else 0. */
static int sort_ids(struct id_index *v, long n, int64_t *dup)
{
	qsort(v, (size_t)n, sizeof *v, id_index_cmp);
	for (long i = 1; i < n; i++)
		if (v[i].id == v[i - 1].id) {
			*dup = v[i].id;
			return 1;
		}
	return 0;
}

static long find_id(const struct id_index *v, long n, int64_t id)
{
	long lo = 0, hi = n;
	while (lo < hi) {
		long mid = lo + (hi - lo) / 2;
		if (v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && v[lo].id == id ? v[lo].index : -1;
}

/* The set keeps its image index sorted by id behind the public struct. */
struct coco_set_full {
	coco_set s;
	struct id_index *image_ids;
};

long coco_image_index(const coco_set *s, int64_t id)
{
	const struct coco_set_full *f = (const struct coco_set_full *)s;
	return find_id(f->image_ids, s->nimages, id);
}

void coco_free(coco_set *s)
{
	if (!s)
		return;
	for (long i = 0; i < s->nimages; i++)
		free(s->images[i].file_name);
	for (int i = 0; i < s->ncategories; i++)
		free(s->categories[i].name);
	free(s->images);
	free(s->anns);
	free(s->categories);
	free(((struct coco_set_full *)s)->image_ids);
	free(s->where);
	free(s);
}

/* ---------------------------------------------------------------- reading */

static int read_categories(const struct ctx *c, const cJSON *arr, coco_set *s)
{
	int n = cJSON_GetArraySize(arr);
	s->categories = calloc((size_t)(n ? n : 1), sizeof *s->categories);
	if (!s->categories)
		return err_set("out of memory");
	const cJSON *o;
	cJSON_ArrayForEach(o, arr)
	{
		long i = s->ncategories;
		coco_category *cat = &s->categories[i];
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
		if (get_id(c, o, "categories", i, "id", &cat->id) < 0)
			return -1;
		if (!cJSON_IsString(name) || !name->valuestring[0])
			return fail(c, "categories[%ld].name: expected a non-empty string", i);
		if (!(cat->name = strdup(name->valuestring)))
			return err_set("out of memory");
		cat->file_pos = (int)i;
		s->ncategories++;
	}
	/* id order: what category_id lookups search */
	for (int i = 1; i < s->ncategories; i++)
		for (int j = i; j > 0 && s->categories[j - 1].id >= s->categories[j].id; j--) {
			if (s->categories[j - 1].id == s->categories[j].id)
				return fail(c, "categories: id %lld twice", (long long)s->categories[j].id);
			coco_category t = s->categories[j];
			s->categories[j] = s->categories[j - 1];
			s->categories[j - 1] = t;
		}
	return 0;
}

static int find_category(const coco_set *s, int64_t id)
{
	int lo = 0, hi = s->ncategories;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (s->categories[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->ncategories && s->categories[lo].id == id ? lo : -1;
}

static int read_images(const struct ctx *c, const cJSON *arr, struct coco_set_full *f)
{
	coco_set *s = &f->s;
	long n = cJSON_GetArraySize(arr);
	s->images = calloc((size_t)(n ? n : 1), sizeof *s->images);
	f->image_ids = calloc((size_t)(n ? n : 1), sizeof *f->image_ids);
	if (!s->images || !f->image_ids)
		return err_set("out of memory");
	const cJSON *o;
	cJSON_ArrayForEach(o, arr)
	{
		long i = s->nimages;
		coco_image *im = &s->images[i];
		const cJSON *file = cJSON_GetObjectItemCaseSensitive(o, "file_name");
		double w, h;
		if (get_id(c, o, "images", i, "id", &im->id) < 0 || get_num(c, o, "images", i, "width", 1, &w) < 0 ||
		    get_num(c, o, "images", i, "height", 1, &h) < 0)
			return -1;
		if (!cJSON_IsString(file) || !file->valuestring[0])
			return fail(c, "images[%ld].file_name: expected a non-empty string", i);
		if (w < 1 || h < 1 || w > 1 << 20 || h > 1 << 20)
			return fail(c, "images[%ld]: size %gx%g is not an image's", i, w, h);
		if (!(im->file_name = strdup(file->valuestring)))
			return err_set("out of memory");
		im->width = (int)w;
		im->height = (int)h;
		f->image_ids[i] = (struct id_index){im->id, i};
		s->nimages++;
	}
	int64_t dup;
	if (sort_ids(f->image_ids, s->nimages, &dup))
		return fail(c, "images: id %lld twice", (long long)dup);
	return 0;
}

/* Annotations, then grouped by image (a stable counting sort: file order within each). */
static int read_annotations(const struct ctx *c, const cJSON *arr, coco_set *s)
{
	long n = arr ? cJSON_GetArraySize(arr) : 0;
	coco_ann *v = calloc((size_t)(n ? n : 1), sizeof *v);
	struct id_index *ids = calloc((size_t)(n ? n : 1), sizeof *ids);
	int rc = -1;
	if (!v || !ids) {
		err_set("out of memory");
		goto out;
	}
	long i = 0;
	const cJSON *o;
	for (o = arr ? arr->child : NULL; o; o = o->next, i++) {
		coco_ann *a = &v[i];
		int64_t image_id, cat_id;
		double crowd = 0;
		if (get_id(c, o, "annotations", i, "id", &a->id) < 0 ||
		    get_id(c, o, "annotations", i, "image_id", &image_id) < 0 ||
		    get_id(c, o, "annotations", i, "category_id", &cat_id) < 0)
			goto out;
		const cJSON *bb = cJSON_GetObjectItemCaseSensitive(o, "bbox");
		if (!cJSON_IsArray(bb) || cJSON_GetArraySize(bb) != 4) {
			fail(c, "annotations[%ld].bbox: expected [x, y, w, h]", i);
			goto out;
		}
		int k = 0;
		const cJSON *x;
		cJSON_ArrayForEach(x, bb)
		{
			if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) {
				fail(c, "annotations[%ld].bbox[%d]: expected a number", i, k);
				goto out;
			}
			a->bbox[k++] = x->valuedouble;
		}
		if (cJSON_GetObjectItemCaseSensitive(o, "area")) {
			if (get_num(c, o, "annotations", i, "area", 0, &a->area) < 0)
				goto out;
		} else {
			a->area = a->bbox[2] * a->bbox[3];
		}
		if (cJSON_GetObjectItemCaseSensitive(o, "iscrowd") &&
		    get_num(c, o, "annotations", i, "iscrowd", 1, &crowd) < 0)
			goto out;
		a->iscrowd = crowd != 0;
		if ((a->image = coco_image_index(s, image_id)) < 0) {
			fail(c, "annotations[%ld]: image_id %lld: no such image", i, (long long)image_id);
			goto out;
		}
		if ((a->category = find_category(s, cat_id)) < 0) {
			fail(c, "annotations[%ld]: category_id %lld: no such category", i, (long long)cat_id);
			goto out;
		}
		ids[i] = (struct id_index){a->id, i};
	}
	int64_t dup;
	if (sort_ids(ids, n, &dup)) {
		fail(c, "annotations: id %lld twice", (long long)dup);
		goto out;
	}
	if (!(s->anns = malloc((size_t)(n ? n : 1) * sizeof *s->anns))) {
		err_set("out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		s->images[v[i].image].nanns++;
	long at = 0;
	for (long k = 0; k < s->nimages; k++) {
		s->images[k].first_ann = at;
		at += s->images[k].nanns;
		s->images[k].nanns = 0;
	}
	for (i = 0; i < n; i++) {
		coco_image *im = &s->images[v[i].image];
		s->anns[im->first_ann + im->nanns++] = v[i];
	}
	s->nanns = n;
	rc = 0;
out:
	free(v);
	free(ids);
	return rc;
}

/* Line and column (from 1) of offset off in text. */
static void line_col(const char *text, size_t off, long *line, long *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			++*line;
			*col = 1;
		} else {
			++*col;
		}
	}
}

coco_set *coco_parse(char *text, size_t len, const char *where)
{
	struct ctx c = {where};
	blank_members(text, len, "segmentation");
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!root) {
		long line, col;
		size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : len;
		line_col(text, off, &line, &col);
		err_set("%s: line %ld, column %ld: malformed JSON", where, line, col);
		return NULL;
	}
	struct coco_set_full *f = calloc(1, sizeof *f);
	coco_set *s = f ? &f->s : NULL;
	const cJSON *cats, *imgs, *anns;
	if (!f || !(s->where = strdup(where))) {
		err_set("out of memory");
	} else if (!cJSON_IsObject(root)) {
		fail(&c, "expected an object with images, annotations and categories");
	} else if ((cats = get_array(&c, root, "categories", 1)) && (imgs = get_array(&c, root, "images", 1)) &&
		   (anns = get_array(&c, root, "annotations", 0), 1) &&
		   (anns || !cJSON_GetObjectItemCaseSensitive(root, "annotations")) &&
		   read_categories(&c, cats, s) == 0 && read_images(&c, imgs, f) == 0 &&
		   read_annotations(&c, anns, s) == 0) {
		cJSON_Delete(root);
		return s;
	}
	cJSON_Delete(root);
	coco_free(s);
	return NULL;
}

coco_set *coco_load(const char *path)
{
	char *text;
	size_t len;
	int rc = files_read(path, &text, &len);
	if (rc == -2) {
		err_set("%s: no such file", path);
		return NULL;
	}
	if (rc < 0) {
		err_wrap("%s", path);
		return NULL;
	}
	coco_set *s = coco_parse(text, len, path);
	free(text);
	return s;
}

/* ---------------------------------------------------------------- labels */

/* The categories' indices in the file's order. */
static int *file_order(const coco_set *s)
{
	int *order = malloc((size_t)(s->ncategories ? s->ncategories : 1) * sizeof *order);
	if (!order) {
		err_set("out of memory");
		return NULL;
	}
	for (int i = 0; i < s->ncategories; i++)
		order[s->categories[i].file_pos] = i;
	return order;
}

/* Names indexed by position: names[at[i]] = category i's name for at[i] >= 0. */
static voc_classes *names_at(const coco_set *s, const int *at, int n)
{
	voc_classes *c = calloc(1, sizeof *c);
	if (c && (c->names = calloc((size_t)(n ? n : 1), sizeof *c->names)))
		c->n = n;
	int ok = c && c->names;
	for (int i = 0; ok && i < s->ncategories; i++)
		if (at[i] >= 0 && at[i] < n && !c->names[at[i]])
			ok = (c->names[at[i]] = strdup(s->categories[i].name)) != NULL;
	if (!ok) {
		voc_classes_free(c);
		err_set("out of memory");
		return NULL;
	}
	return c;
}

voc_classes *coco_classes(const coco_set *s)
{
	int *label = coco_labels(s, NULL);
	voc_classes *c = label ? names_at(s, label, s->ncategories) : NULL;
	free(label);
	return c;
}

int *coco_labels(const coco_set *s, const voc_classes *classes)
{
	int *label = malloc((size_t)(s->ncategories ? s->ncategories : 1) * sizeof *label);
	int *order = file_order(s);
	int *matched = classes ? calloc((size_t)(classes->n ? classes->n : 1), sizeof *matched) : NULL;
	if (!label || !order || (classes && !matched)) {
		err_set("out of memory");
		goto fail;
	}
	/* a class names one category: two of one name would make more labels than classes */
	for (int i = 0; i < s->ncategories; i++) {
		int k = classes ? voc_class_index(classes, s->categories[i].name) : 0;
		label[i] = k;
		if (k < 0 || !classes)
			continue;
		if (matched[k]) {
			err_set("class '%s': categories %lld and %lld both have that name", classes->names[k],
				(long long)s->categories[matched[k] - 1].id, (long long)s->categories[i].id);
			goto fail;
		}
		matched[k] = i + 1;
	}
	for (int k = 0; classes && k < classes->n; k++)
		if (!matched[k]) {
			err_set("class '%s': no category of that name", classes->names[k]);
			goto fail;
		}
	/* pycocotools' getCatIds(catNms=...) keeps the file's order, whatever the list's */
	for (int r = 0, next = 0; r < s->ncategories; r++)
		if (label[order[r]] >= 0)
			label[order[r]] = next++;
	free(order);
	free(matched);
	return label;
fail:
	free(label);
	free(order);
	free(matched);
	return NULL;
}

voc_classes *coco_label_names(const coco_set *s, const int *label)
{
	int n = 0;
	for (int i = 0; i < s->ncategories; i++)
		n += label[i] >= 0;
	return names_at(s, label, n);
}

/* ---------------------------------------------------------------- as a dataset */

/* Why box a of image im is bad, or NULL. Exports round coordinates, so an edge up to a
 * pixel past the border is kept as it is. */
static const char *box_fault(const coco_ann *a, const coco_image *im)
{
	double x1 = a->bbox[0], y1 = a->bbox[1], x2 = x1 + a->bbox[2], y2 = y1 + a->bbox[3];
	if (a->bbox[2] < 0 || a->bbox[3] < 0)
		return "has a negative width or height";
	if (x1 < -1 || y1 < -1 || x2 > im->width + 1 || y2 > im->height + 1)
		return "lies outside the image";
	if (x2 <= 0 || y2 <= 0 || x1 >= im->width || y1 >= im->height)
		return "does not overlap the image";
	return NULL;
}

voc_dataset *coco_dataset(const coco_set *s, const int *label, const char *img_prefix, int filter_empty_gt, int min_size)
{
	long n = 0, nb = 0;
	voc_listed_image *li = calloc((size_t)(s->nimages ? s->nimages : 1), sizeof *li);
	float *boxes = malloc((size_t)(s->nanns ? s->nanns : 1) * 4 * sizeof *boxes);
	int32_t *labels = malloc((size_t)(s->nanns ? s->nanns : 1) * sizeof *labels);
	uint8_t *ignore = malloc((size_t)(s->nanns ? s->nanns : 1));
	char *ids = malloc((size_t)(s->nimages ? s->nimages : 1) * 24);
	char **why = calloc((size_t)(s->nimages ? s->nimages : 1), sizeof *why);
	voc_dataset *d = NULL;
	if (!li || !boxes || !labels || !ignore || !ids || !why) {
		err_set("out of memory");
		goto out;
	}
	for (long i = 0; i < s->nimages; i++) {
		const coco_image *im = &s->images[i];
		long first = nb, labelled = 0;
		for (long k = im->first_ann; k < im->first_ann + im->nanns; k++) {
			const coco_ann *a = &s->anns[k];
			int lab = label[a->category];
			if (lab < 0)
				continue;
			labelled++;
			const char *fault = box_fault(a, im);
			if (fault && !why[n]) {
				if (asprintf(&why[n], "%s: image %lld (%s): annotation %lld: box [%g, %g, %g, %g] %s (%dx%d)",
					     s->where, (long long)im->id, im->file_name, (long long)a->id, a->bbox[0], a->bbox[1], a->bbox[2], a->bbox[3], fault,
					     im->width, im->height) < 0) {
					why[n] = NULL;
					err_set("out of memory");
					goto out;
				}
			}
			if (a->area <= 0 || a->bbox[2] < 1 || a->bbox[3] < 1)
				continue;
			boxes[4 * nb + 0] = (float)a->bbox[0];
			boxes[4 * nb + 1] = (float)a->bbox[1];
			boxes[4 * nb + 2] = (float)(a->bbox[0] + a->bbox[2]);
			boxes[4 * nb + 3] = (float)(a->bbox[1] + a->bbox[3]);
			labels[nb] = lab;
			ignore[nb] = (uint8_t)a->iscrowd;
			nb++;
		}
		/* mmdet's _filter_imgs: the file's sizes, checked after the annotations */
		if ((filter_empty_gt && !labelled) || im->width < min_size || im->height < min_size) {
			free(why[n]);
			why[n] = NULL;
			nb = first;
			continue;
		}
		snprintf(ids + 24 * n, 24, "%lld", (long long)im->id);
		li[n] = (voc_listed_image){.id = ids + 24 * n, .file = im->file_name, .width = im->width,
					   .height = im->height, .n = (int)(nb - first), .bad = why[n],
					   .boxes = boxes + 4 * first, .labels = labels + first, .ignore = ignore + first};
		n++;
	}
	const char *base;
	size_t blen = strlen(img_prefix);
	while (blen > 1 && img_prefix[blen - 1] == '/')
		blen--;
	char *root = strndup(img_prefix, blen);
	base = root ? strrchr(root, '/') : NULL;
	if (root)
		d = voc_open_listed(img_prefix, base && base[1] ? base + 1 : root, n, li);
	else
		err_set("out of memory");
	free(root);
out:
	for (long i = 0; why && i < s->nimages; i++)
		free(why[i]);
	free(why);
	free(li);
	free(boxes);
	free(labels);
	free(ignore);
	free(ids);
	return d;
}
