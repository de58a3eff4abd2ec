#include "data/voc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <expat.h>

#include "core/err.h"
#include "data/image.h"
#include "core/files.h"
#include "data/image_record.h"

static const char *const IMAGE_EXTS[] = {"jpg", "png", "jpeg"};
#define NEXTS 3

/* ---------------------------------------------------------------- small helpers */

/* Grows *p (of *cap elements of size elem) to hold at least need. */
static int grow(void *p, long *cap, long need, size_t elem)
{
	if (need <= *cap)
		return 0;
	long n = *cap ? *cap : 16;
	while (n < need)
		n *= 2;
	void *q = realloc(*(void **)p, (size_t)n * elem);
	if (!q)
		return err_set("out of memory");
	*(void **)p = q;
	*cap = n;
	return 0;
}

static char *xstrdup(const char *s)
{
	char *t = strdup(s);
	if (!t)
		err_set("out of memory");
	return t;
}

static char *xprintf(const char *fmt, ...) ERR_PRINTF(1, 2);
static char *xprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		err_set("out of memory");
		return NULL;
	}
	return s;
}


static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---------------------------------------------------------------- classes */

const char *const voc_class_names[VOC_NCLASSES] = {
	"aeroplane", "bicycle", "bird",  "boat",        "bottle", "bus",   "car",  "cat",   "chair", "cow",
	"diningtable", "dog",   "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
};

void voc_classes_free(voc_classes *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		free(c->names[i]);
	free(c->names);
	free(c);
}

static int classes_add(voc_classes *c, long *cap, const char *name, size_t len)
{
	if (grow(&c->names, cap, c->n + 1, sizeof *c->names) < 0)
		return -1;
	char *s = strndup(name, len);
	if (!s)
		return err_set("out of memory");
	if (voc_class_index(c, s) >= 0) {
		err_set("duplicate class '%s'", s);
		free(s);
		return -1;
	}
	c->names[c->n++] = s;
	return 0;
}

voc_classes *voc_classes_default(void)
{
	voc_classes *c = calloc(1, sizeof *c);
	long cap = 0;
	if (!c) {
		err_set("out of memory");
		return NULL;
	}
	for (int i = 0; i < VOC_NCLASSES; i++) {
		if (classes_add(c, &cap, voc_class_names[i], strlen(voc_class_names[i])) < 0) {
			voc_classes_free(c);
			return NULL;
		}
	}
	return c;
}

voc_classes *voc_classes_load(const char *path)
{
	char *text;
	size_t len;
	int rc = files_read(path, &text, &len);
	if (rc < 0) {
		if (rc == -2)
			err_set("%s", strerror(ENOENT));
		err_wrap("%s", path);
		return NULL;
	}
	voc_classes *c = calloc(1, sizeof *c);
	long cap = 0;
	if (!c) {
		free(text);
		err_set("out of memory");
		return NULL;
	}
	int line = 0;
	for (char *p = text; *p;) {
		char *end = strchr(p, '\n');
		char *next = end ? end + 1 : p + strlen(p);
		if (!end)
			end = next;
		line++;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			end--;
		if (end > p && classes_add(c, &cap, p, (size_t)(end - p)) < 0) {
			err_wrap("%s: line %d", path, line);
			goto fail;
		}
		p = next;
	}
	if (c->n == 0) {
		err_set("%s: no class names", path);
		goto fail;
	}
	free(text);
	return c;
fail:
	free(text);
	voc_classes_free(c);
	return NULL;
}

int voc_class_index(const voc_classes *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->names[i], name))
			return i;
	return -1;
}

/* ---------------------------------------------------------------- annotation XML */

/* The elements we read, by their place in the tree; everything else is T_OTHER, so
 * e.g. the <name> and <bndbox> of a VOC2012 <part> inside an <object> are ignored. */
enum tag { T_OTHER, T_ANNOTATION, T_SIZE, T_WIDTH, T_HEIGHT, T_OBJECT, T_NAME, T_DIFFICULT, T_BNDBOX, T_COORD };

#define XML_MAXDEPTH 32
#define XML_TEXTMAX 256

struct xml_state {
	XML_Parser parser;
	const voc_classes *classes;
	voc_annotation *a;
	long cap;
	int depth;
	enum tag tags[XML_MAXDEPTH];
	int coord;              /* 0..3 while in xmin..ymax */
	char text[XML_TEXTMAX]; /* text of the leaf being read */
	size_t tlen;
	int collecting;
	/* the object being read */
	char name[XML_TEXTMAX];
	int has_name, has_box, have_coord[4];
	voc_object obj;
	int failed;
};

static const char *const COORDS[4] = {"xmin", "ymin", "xmax", "ymax"};

static void xml_fail(struct xml_state *s, const char *fmt, ...) ERR_PRINTF(2, 3);
static void xml_fail(struct xml_state *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	err_set("line %lu: %s", (unsigned long)XML_GetCurrentLineNumber(s->parser), msg);
	s->failed = 1;
	XML_StopParser(s->parser, XML_FALSE);
}

/* Python's int(float(text)): surrounding blanks allowed, truncated toward zero. */
static int parse_coord(const char *text, int *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
		end++;
	if (end == text || *end || errno || !isfinite(v) || fabs(v) > 1e9)
		return -1;
	*out = (int)v;
	return 0;
}

/* Python's int(text). */
static int parse_int(const char *text, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
		end++;
	if (end == text || *end || errno || v < INT_MIN || v > INT_MAX)
		return -1;
	*out = (int)v;
	return 0;
}

/* Once the parse has failed, the handlers do nothing: expat may still deliver the end
 * of an element whose start was refused (found by fuzz/fuzz_voc_xml.c: <ai/> as the
 * root took depth to -1 and read tags[-1]). */
static void XMLCALL xml_start(void *ud, const XML_Char *el, const XML_Char **attr)
{
	struct xml_state *s = ud;
	if (s->failed)
		return;
	enum tag parent = s->depth > 0 && s->depth <= XML_MAXDEPTH ? s->tags[s->depth - 1] : T_OTHER;
	enum tag t = T_OTHER;
	if (s->depth == 0) {
		if (strcmp(el, "annotation")) {
			xml_fail(s, "root element is <%s>, not <annotation>", el);
			return;
		}
		t = T_ANNOTATION;
	} else if (parent == T_ANNOTATION) {
		if (!strcmp(el, "size"))
			t = T_SIZE;
		else if (!strcmp(el, "object"))
			t = T_OBJECT;
	} else if (parent == T_SIZE) {
		if (!strcmp(el, "width"))
			t = T_WIDTH;
		else if (!strcmp(el, "height"))
			t = T_HEIGHT;
	} else if (parent == T_OBJECT) {
		if (!strcmp(el, "name"))
			t = T_NAME;
		else if (!strcmp(el, "difficult"))
			t = T_DIFFICULT;
		else if (!strcmp(el, "bndbox"))
			t = T_BNDBOX;
	} else if (parent == T_BNDBOX) {
		for (int i = 0; i < 4; i++)
			if (!strcmp(el, COORDS[i])) {
				t = T_COORD;
				s->coord = i;
			}
	}
	if (t == T_OBJECT) {
		memset(&s->obj, 0, sizeof s->obj);
		s->has_name = s->has_box = 0;
		memset(s->have_coord, 0, sizeof s->have_coord);
	}
	if (t == T_BNDBOX)
		s->has_box = 1;
	s->collecting = t == T_WIDTH || t == T_HEIGHT || t == T_NAME || t == T_DIFFICULT || t == T_COORD;
	s->tlen = 0;
	s->text[0] = 0;
	if (s->depth < XML_MAXDEPTH)
		s->tags[s->depth] = t;
	s->depth++;
}

static void XMLCALL xml_text(void *ud, const XML_Char *text, int len)
{
	struct xml_state *s = ud;
	if (s->failed || !s->collecting)
		return;
	if (s->tlen + (size_t)len >= XML_TEXTMAX) {
		xml_fail(s, "text longer than %d bytes", XML_TEXTMAX - 1);
		return;
	}
	memcpy(s->text + s->tlen, text, (size_t)len);
	s->tlen += (size_t)len;
	s->text[s->tlen] = 0;
}

static void end_object(struct xml_state *s)
{
	int n = s->a->nobj + 1;
	if (!s->has_name) {
		xml_fail(s, "object %d has no <name>", n);
		return;
	}
	if (!s->has_box) {
		xml_fail(s, "object %d (%s) has no <bndbox>", n, s->name);
		return;
	}
	for (int i = 0; i < 4; i++)
		if (!s->have_coord[i]) {
			xml_fail(s, "object %d (%s) has no <%s>", n, s->name, COORDS[i]);
			return;
		}
	s->obj.label = voc_class_index(s->classes, s->name);
	if (s->obj.label < 0) {
		xml_fail(s, "unknown class '%s'", s->name);
		return;
	}
	if (grow(&s->a->obj, &s->cap, n, sizeof *s->a->obj) < 0) {
		xml_fail(s, "out of memory");
		return;
	}
	s->a->obj[s->a->nobj++] = s->obj;
}

static void XMLCALL xml_end(void *ud, const XML_Char *el)
{
	struct xml_state *s = ud;
	if (s->failed)
		return;
	s->depth--;
	enum tag t = s->depth < XML_MAXDEPTH ? s->tags[s->depth] : T_OTHER;
	const char *text = s->text;
	int v;
	switch (t) {
	case T_WIDTH:
	case T_HEIGHT:
		if (parse_int(text, &v) < 0 || v < 0) {
			xml_fail(s, "bad <%s> '%s'", el, text);
			return;
		}
		*(t == T_WIDTH ? &s->a->width : &s->a->height) = v;
		break;
	case T_NAME: {
		/* surrounding blanks are not part of the name */
		size_t a = strspn(text, " \t\r\n"), b = strlen(text);
		while (b > a && strchr(" \t\r\n", text[b - 1]))
			b--;
		snprintf(s->name, sizeof s->name, "%.*s", (int)(b - a), text + a);
		s->has_name = 1;
		break;
	}
	case T_DIFFICULT:
		if (parse_int(text, &v) < 0) {
			xml_fail(s, "bad <difficult> '%s'", text);
			return;
		}
		s->obj.difficult = v != 0;
		break;
	case T_COORD:
		if (parse_coord(text, &s->obj.box[s->coord]) < 0) {
			xml_fail(s, "bad <%s> '%s'", COORDS[s->coord], text);
			return;
		}
		s->have_coord[s->coord] = 1;
		break;
	case T_OBJECT:
		end_object(s);
		break;
	default:
		break;
	}
	s->collecting = 0;
}

void voc_annotation_clear(voc_annotation *a)
{
	free(a->obj);
	memset(a, 0, sizeof *a);
}

int voc_parse_xml(const char *xml, size_t len, const voc_classes *c, voc_annotation *out)
{
	memset(out, 0, sizeof *out);
	if (len > INT_MAX)
		return err_set("annotation too large");
	struct xml_state s = {.classes = c, .a = out};
	s.parser = XML_ParserCreate(NULL);
	if (!s.parser)
		return err_set("out of memory");
	XML_SetUserData(s.parser, &s);
	XML_SetElementHandler(s.parser, xml_start, xml_end);
	XML_SetCharacterDataHandler(s.parser, xml_text);
	int ok = XML_Parse(s.parser, xml, (int)len, 1) == XML_STATUS_OK;
	if (!ok && !s.failed)
		err_set("malformed XML: line %lu: %s", (unsigned long)XML_GetCurrentLineNumber(s.parser),
			XML_ErrorString(XML_GetErrorCode(s.parser)));
	XML_ParserFree(s.parser);
	return ok && !s.failed ? 0 : -1;
}

int voc_check_boxes(const voc_annotation *a, int width, int height)
{
	for (int i = 0; i < a->nobj; i++) {
		const int *b = a->obj[i].box;
		const char *why = NULL;
		if (b[0] < 0 || b[1] < 0)
			why = "has a negative coordinate";
		else if (b[2] > width || b[3] > height)
			why = "lies outside the image";
		else if (b[0] > b[2] || b[1] > b[3])
			why = "has min > max";
		if (why) {
			if (width == INT_MAX)
				return err_set("object %d: box [%d,%d,%d,%d] %s", i + 1, b[0], b[1], b[2], b[3], why);
			return err_set("object %d: box [%d,%d,%d,%d] %s (%dx%d)", i + 1, b[0], b[1], b[2], b[3], why, width,
				       height);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- shuffling */

uint64_t voc_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias. */
static uint64_t below(uint64_t *state, uint64_t n)
{
	uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
	do
		r = voc_splitmix64(state);
	while (r >= limit);
	return r % n;
}

void voc_shuffle(long *v, long n, uint64_t seed)
{
	uint64_t st = seed;
	for (long i = n - 1; i > 0; i--) {
		long j = (long)below(&st, (uint64_t)i + 1);
		long t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

uint64_t voc_epoch_seed(uint64_t seed, int epoch)
{
	uint64_t st = seed ^ (0x632be59bd9b4e019ull * (uint64_t)(epoch + 1));
	return voc_splitmix64(&st);
}

/* ---------------------------------------------------------------- datasets */

struct root {
	char *name;   /* meta "root" */
	char *dir;    /* a root on disk, or NULL */
	int archive;  /* a root inside d->archives[archive] (dir NULL) */
	char *prefix; /* entry path prefix in the archive: "" or ending in '/' */
};

struct item {
	int root;
	char *id;
	const char *xml; /* archives: the annotation read at open (owned by d->xmls), or NULL */
	size_t xml_len;
	const char *ext; /* archives: the image extension found at open, or NULL */
	unsigned char *img; /* archives: the image bytes, read by voc_reader_new() */
	size_t img_len;
	int wanted;
	int bad;         /* reported bad once: skipped silently afterwards */
	/* listed datasets (voc_open_listed): the ground truth is known at open */
	char *file;      /* image path under the root; NULL for VOC items */
	int width, height;
	long gt_first;   /* its boxes: d->gt_*[gt_first .. gt_first + gt_n) */
	int gt_n;
	char *why_bad;   /* known bad at open, reported when read */
};

struct voc_dataset {
	char *split;
	int nroots;
	long roots_cap;
	struct root *roots;
	long nitems, items_cap;
	struct item *items;
	int narchives;
	long archives_cap;
	char **archives;
	long nxmls, xmls_cap;
	char **xmls; /* annotation texts read from archives */
	float *gt_boxes; /* listed datasets' ground truth, [n,4] */
	int32_t *gt_labels;
	uint8_t *gt_ignore;
};

long voc_size(const voc_dataset *d)
{
	return d->nitems;
}

int voc_nroots(const voc_dataset *d)
{
	return d->nroots;
}

const char *voc_root_name(const voc_dataset *d, int i)
{
	return d->roots[i].name;
}

void voc_close(voc_dataset *d)
{
	if (!d)
		return;
	for (int i = 0; i < d->nroots; i++) {
		free(d->roots[i].name);
		free(d->roots[i].dir);
		free(d->roots[i].prefix);
	}
	free(d->roots);
	for (long i = 0; i < d->nitems; i++) {
		free(d->items[i].id);
		free(d->items[i].img);
		free(d->items[i].file);
		free(d->items[i].why_bad);
	}
	free(d->gt_boxes);
	free(d->gt_labels);
	free(d->gt_ignore);
	free(d->items);
	for (int i = 0; i < d->narchives; i++)
		free(d->archives[i]);
	free(d->archives);
	for (long i = 0; i < d->nxmls; i++)
		free(d->xmls[i]);
	free(d->xmls);
	free(d->split);
	free(d);
}

/* Where a root's file is, for messages: a path, or "archive:entry". */
static char *file_where(const voc_dataset *d, const struct root *rt, const char *rel)
{
	if (rt->dir)
		return xprintf("%s/%s", rt->dir, rel);
	return xprintf("%s:%s%s", d->archives[rt->archive], rt->prefix, rel);
}

/* The file's path as the records name it: "<root name>/<rel>" (for an archive, the
 * entry path), so a tree and an archive of it give identical records. */
static char *file_meta(const struct root *rt, const char *rel)
{
	if (rt->dir)
		return xprintf("%s/%s", rt->name, rel);
	return xprintf("%s%s", rt->prefix, rel);
}

static int add_root(voc_dataset *d, const char *name, const char *dir, int archive, const char *prefix)
{
	if (grow(&d->roots, &d->roots_cap, d->nroots + 1, sizeof *d->roots) < 0)
		return -1;
	struct root *rt = &d->roots[d->nroots];
	memset(rt, 0, sizeof *rt);
	rt->archive = archive;
	rt->name = xstrdup(name);
	rt->dir = dir ? xstrdup(dir) : NULL;
	for (size_t n = rt->dir ? strlen(rt->dir) : 0; n > 1 && rt->dir[n - 1] == '/'; n--)
		rt->dir[n - 1] = 0;
	rt->prefix = prefix ? xstrdup(prefix) : NULL;
	d->nroots++;
	if (!rt->name || (dir && !rt->dir) || (prefix && !rt->prefix))
		return -1;
	return 0;
}

static int item_cmp_id(const void *a, const void *b)
{
	const struct item *x = *(struct item *const *)a, *y = *(struct item *const *)b;
	return x->root != y->root ? (x->root < y->root ? -1 : 1) : strcmp(x->id, y->id);
}

/* Adds the ids of a split list (first token per line) as items of the last root. */
static int add_split(voc_dataset *d, char *text, const char *where)
{
	int root = d->nroots - 1, line = 0;
	long first = d->nitems;
	for (char *p = text; *p;) {
		char *end = p + strcspn(p, "\n");
		char *next = *end ? end + 1 : end;
		*end = 0;
		line++;
		char *tok = p + strspn(p, " \t\r\f\v");
		size_t n = strcspn(tok, " \t\r\f\v");
		tok[n] = 0;
		p = next;
		if (!n)
			continue;
		if (strchr(tok, '/') || !strcmp(tok, ".") || !strcmp(tok, ".."))
			return err_set("%s: line %d: bad image id '%s'", where, line, tok);
		if (grow(&d->items, &d->items_cap, d->nitems + 1, sizeof *d->items) < 0)
			return -1;
		struct item *it = &d->items[d->nitems];
		memset(it, 0, sizeof *it);
		it->root = root;
		if (!(it->id = xstrdup(tok)))
			return -1;
		d->nitems++;
	}
	/* a repeated id would share one image buffer; VOC lists never repeat */
	long n = d->nitems - first;
	struct item **sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
	if (!sorted)
		return err_set("out of memory");
	for (long i = 0; i < n; i++)
		sorted[i] = &d->items[first + i];
	qsort(sorted, (size_t)n, sizeof *sorted, item_cmp_id);
	for (long i = 1; i < n; i++)
		if (!strcmp(sorted[i]->id, sorted[i - 1]->id)) {
			err_set("%s: image id '%s' listed twice", where, sorted[i]->id);
			free(sorted);
			return -1;
		}
	free(sorted);
	return 0;
}

static int open_dir_root(voc_dataset *d, const char *dir, const char *name)
{
	if (add_root(d, name, dir, -1, NULL) < 0)
		return -1;
	char *rel = xprintf("ImageSets/Main/%s.txt", d->split);
	char *path = rel ? xprintf("%s/%s", dir, rel) : NULL;
	char *text = NULL;
	size_t len;
	int rc = -1;
	if (!path)
		goto out;
	int r = files_read(path, &text, &len);
	if (r == -2)
		err_set("%s: missing split file (no split '%s')", path, d->split);
	else if (r < 0)
		err_wrap("%s", path);
	else
		rc = add_split(d, text, path);
out:
	free(rel);
	free(path);
	free(text);
	return rc;
}

static int dir_is_root(const char *dir)
{
	static const char *const subs[] = {"Annotations", "ImageSets", "JPEGImages"};
	for (int i = 0; i < 3; i++) {
		char *p = xprintf("%s/%s", dir, subs[i]);
		int yes = p && is_dir(p);
		free(p);
		if (yes)
			return 1;
	}
	return 0;
}

static int dirent_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* The last path component, ignoring trailing slashes ("data/VOC2007/" -> "VOC2007"). */
static char *base_name(const char *path)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	size_t b = n;
	while (b > 0 && path[b - 1] != '/')
		b--;
	char *s = strndup(path + b, n - b);
	if (s && (!strcmp(s, ".") || !strcmp(s, "..") || !strcmp(s, "/"))) {
		char *real = realpath(path, NULL);
		free(s);
		s = real && strcmp(real, "/") ? base_name(real) : xstrdup("root");
		free(real);
		return s;
	}
	if (!s)
		err_set("out of memory");
	return s;
}

static int open_dir(voc_dataset *d, const char *path)
{
	char *name = base_name(path);
	if (!name)
		return -1;
	int rc = -1;
	if (dir_is_root(path)) {
		rc = open_dir_root(d, path, name);
		free(name);
		return rc;
	}
	struct dirent **list;
	int n = scandir(path, &list, NULL, dirent_cmp), found = 0;
	if (n < 0) {
		err_set("%s: %s", path, strerror(errno));
		free(name);
		return -1;
	}
	rc = 0;
	for (int i = 0; i < n; i++) {
		const char *e = list[i]->d_name;
		char *sub = e[0] != '.' ? xprintf("%s/%s", path, e) : NULL;
		char *subname = sub ? xprintf("%s/%s", name, e) : NULL;
		if (rc == 0 && subname && is_dir(sub) && dir_is_root(sub)) {
			found++;
			rc = open_dir_root(d, sub, subname);
		}
		free(sub);
		free(subname);
		free(list[i]);
	}
	free(list);
	if (rc == 0 && !found)
		rc = err_set("%s: not a VOC root (no Annotations/, ImageSets/ or JPEGImages/) and holds none", path);
	free(name);
	return rc;
}

/* ---- archives */

enum entry_kind { E_NONE, E_XML, E_IMAGE, E_SPLIT, E_OTHER };

/* What an archive entry is: sets the prefix length (up to the marker directory), the id
 * and, for images, the extension index. E_OTHER: under a marker but not ours. */
static enum entry_kind classify(const char *path, const char *split, size_t *plen, char **id, int *ext)
{
	static const char *const marks[] = {"Annotations/", "JPEGImages/", "ImageSets/"};
	*id = NULL;
	/* the resource-fork shadows macOS puts into zips */
	const char *slash = strrchr(path, '/');
	if (!strncmp(path, "__MACOSX/", 9) || !strncmp(slash ? slash + 1 : path, "._", 2))
		return E_NONE;
	for (const char *p = path; *p; p = strchr(p, '/') ? strchr(p, '/') + 1 : p + strlen(p)) {
		for (int m = 0; m < 3; m++) {
			size_t ml = strlen(marks[m]);
			if (strncmp(p, marks[m], ml))
				continue;
			const char *rest = p + ml;
			size_t rl = strlen(rest);
			*plen = (size_t)(p - path);
			if (strchr(rest, '/') && m != 2)
				return E_OTHER;
			if (m == 0) {
				if (rl <= 4 || strcmp(rest + rl - 4, ".xml"))
					return E_OTHER;
				*id = strndup(rest, rl - 4);
				return *id ? E_XML : E_NONE;
			}
			if (m == 1) {
				const char *dot = strrchr(rest, '.');
				for (int e = 0; dot && dot > rest && e < NEXTS; e++)
					if (!strcmp(dot + 1, IMAGE_EXTS[e])) {
						*ext = e;
						*id = strndup(rest, (size_t)(dot - rest));
						return *id ? E_IMAGE : E_NONE;
					}
				return E_OTHER;
			}
			if (!strncmp(rest, "Main/", 5) && !strncmp(rest + 5, split, strlen(split)) &&
			    !strcmp(rest + 5 + strlen(split), ".txt"))
				return E_SPLIT;
			return E_OTHER;
		}
	}
	return E_NONE;
}




/* One annotation or image name found in pass 1. */
struct found {
	char *prefix;
	char *id;
	int ext;         /* images */
	char *data;      /* annotations */
	size_t len;
};

static int found_cmp(const void *a, const void *b)
{
	const struct found *x = a, *y = b;
	int c = strcmp(x->prefix, y->prefix);
	if (!c)
		c = strcmp(x->id, y->id);
	return c ? c : x->ext - y->ext;
}

struct pass1 {
	struct found *xml, *img;
	long nxml, nimg, xml_cap, img_cap;
	char **prefixes, **splits; /* splits[i]: the split list of prefixes[i], or NULL */
	long nprefix, prefix_cap, split_cap;
};

static void pass1_free(struct pass1 *p)
{
	for (long i = 0; i < p->nxml; i++) {
		free(p->xml[i].prefix);
		free(p->xml[i].id);
		free(p->xml[i].data);
	}
	for (long i = 0; i < p->nimg; i++) {
		free(p->img[i].prefix);
		free(p->img[i].id);
	}
	for (long i = 0; i < p->nprefix; i++) {
		free(p->prefixes[i]);
		free(p->splits[i]);
	}
	free(p->xml);
	free(p->img);
	free(p->prefixes);
	free(p->splits);
}

static long prefix_index(struct pass1 *p, const char *path, size_t plen)
{
	for (long i = 0; i < p->nprefix; i++)
		if (strlen(p->prefixes[i]) == plen && !strncmp(p->prefixes[i], path, plen))
			return i;
	long cap2 = p->split_cap;
	if (grow(&p->prefixes, &p->prefix_cap, p->nprefix + 1, sizeof *p->prefixes) < 0 ||
	    grow(&p->splits, &cap2, p->nprefix + 1, sizeof *p->splits) < 0)
		return -1;
	p->split_cap = cap2;
	if (!(p->prefixes[p->nprefix] = strndup(path, plen)))
		return err_set("out of memory");
	p->splits[p->nprefix] = NULL;
	return p->nprefix++;
}

static int pass1_entry(struct pass1 *p, struct archive *a, struct archive_entry *e, const char *split)
{
	const char *path = files_entry_path(e);
	size_t plen;
	char *id;
	int ext = 0;
	enum entry_kind k = classify(path, split, &plen, &id, &ext);
	if (k == E_NONE)
		return 0;
	long pi = prefix_index(p, path, plen);
	if (pi < 0)
		goto fail;
	if (k == E_OTHER)
		return 0;
	if (k == E_SPLIT) {
		char *text;
		size_t len;
		if (files_entry_data(a, e, &text, &len) < 0) {
			err_wrap("%s", path);
			goto fail;
		}
		free(p->splits[pi]);
		p->splits[pi] = text;
		return 0;
	}
	struct found f = {.id = id, .ext = ext};
	if (!(f.prefix = xstrdup(p->prefixes[pi])))
		goto fail;
	if (k == E_XML && files_entry_data(a, e, &f.data, &f.len) < 0) {
		err_wrap("%s", path);
		free(f.prefix);
		goto fail;
	}
	int bad = k == E_XML ? grow(&p->xml, &p->xml_cap, p->nxml + 1, sizeof *p->xml)
			     : grow(&p->img, &p->img_cap, p->nimg + 1, sizeof *p->img);
	if (bad < 0) {
		free(f.prefix);
		free(f.data);
		goto fail;
	}
	if (k == E_XML)
		p->xml[p->nxml++] = f;
	else
		p->img[p->nimg++] = f;
	return 0;
fail:
	free(id);
	return -1;
}

/* Pass 1 over an archive: split lists and annotations of every root inside it. */
static int open_archive(voc_dataset *d, const char *path)
{
	if (grow(&d->archives, &d->archives_cap, d->narchives + 1, sizeof *d->archives) < 0)
		return -1;
	if (!(d->archives[d->narchives] = xstrdup(path)))
		return -1;
	int ai = d->narchives++;
	struct archive *a = files_archive_open(path);
	if (!a)
		return -1;
	struct pass1 p = {0};
	struct archive_entry *e;
	int r, rc = -1;
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		if (pass1_entry(&p, a, e, d->split) < 0) {
			err_wrap("%s", path);
			goto out;
		}
	}
	if (r != ARCHIVE_EOF) {
		err_set("%s: %s", path, archive_error_string(a));
		goto out;
	}
	if (p.nprefix == 0) {
		err_set("%s: no VOC root inside (no Annotations/, ImageSets/ or JPEGImages/)", path);
		goto out;
	}
	/* roots in sorted prefix order */
	long *order = malloc((size_t)p.nprefix * sizeof *order);
	if (!order) {
		err_set("out of memory");
		goto out;
	}
	for (long i = 0; i < p.nprefix; i++)
		order[i] = i;
	for (long i = 1; i < p.nprefix; i++) /* insertion sort: a handful of roots */
		for (long j = i; j > 0 && strcmp(p.prefixes[order[j - 1]], p.prefixes[order[j]]) > 0; j--) {
			long t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	/* (an archive may hold no annotation or no image: qsort and bsearch take no NULL
	 * array, even empty; found by fuzz/fuzz_voc_archive.c under UBSan) */
	if (p.nxml)
		qsort(p.xml, (size_t)p.nxml, sizeof *p.xml, found_cmp);
	if (p.nimg)
		qsort(p.img, (size_t)p.nimg, sizeof *p.img, found_cmp);
	for (long oi = 0; oi < p.nprefix; oi++) {
		long i = order[oi];
		const char *prefix = p.prefixes[i];
		char *name;
		if (prefix[0])
			name = strndup(prefix, strlen(prefix) - 1);
		else {
			char *b = base_name(path);
			char *dot = b ? strchr(b, '.') : NULL;
			if (dot && dot != b)
				*dot = 0;
			name = b;
		}
		if (!name) {
			err_set("out of memory");
			free(order);
			goto out;
		}
		int ok = add_root(d, name, NULL, ai, prefix);
		free(name);
		if (ok < 0) {
			free(order);
			goto out;
		}
		char *where = xprintf("%s:%sImageSets/Main/%s.txt", path, prefix, d->split);
		if (!where || !p.splits[i]) {
			if (where)
				err_set("%s: missing split file (no split '%s')", where, d->split);
			free(where);
			free(order);
			goto out;
		}
		long first = d->nitems;
		ok = add_split(d, p.splits[i], where);
		free(where);
		if (ok < 0) {
			free(order);
			goto out;
		}
		for (long k = first; k < d->nitems; k++) {
			struct item *it = &d->items[k];
			struct found key = {.prefix = (char *)prefix, .id = it->id}, *f;
			f = p.nxml ? bsearch(&key, p.xml, (size_t)p.nxml, sizeof *p.xml, found_cmp) : NULL;
			if (f) {
				if (grow(&d->xmls, &d->xmls_cap, d->nxmls + 1, sizeof *d->xmls) < 0) {
					free(order);
					goto out;
				}
				d->xmls[d->nxmls++] = f->data;
				it->xml = f->data;
				it->xml_len = f->len;
				f->data = NULL;
			}
			for (int x = 0; x < NEXTS && !it->ext; x++) {
				key.ext = x;
				if (p.nimg && bsearch(&key, p.img, (size_t)p.nimg, sizeof *p.img, found_cmp))
					it->ext = IMAGE_EXTS[x];
			}
		}
	}
	free(order);
	rc = 0;
out:
	pass1_free(&p);
	archive_read_free(a);
	return rc;
}

voc_dataset *voc_open(int npaths, char *const *paths, const char *split)
{
	voc_dataset *d = calloc(1, sizeof *d);
	if (!d || !(d->split = strdup(split))) {
		free(d);
		err_set("out of memory");
		return NULL;
	}
	if (!split[0] || strchr(split, '/')) {
		err_set("bad split name '%s'", split);
		goto fail;
	}
	for (int i = 0; i < npaths; i++) {
		struct stat st;
		if (stat(paths[i], &st) < 0) {
			err_set("%s: %s", paths[i], strerror(errno));
			goto fail;
		}
		if ((S_ISDIR(st.st_mode) ? open_dir(d, paths[i]) : open_archive(d, paths[i])) < 0)
			goto fail;
	}
	return d;
fail:
	voc_close(d);
	return NULL;
}

voc_dataset *voc_open_listed(const char *image_dir, const char *root_name, long n, const voc_listed_image *images)
{
	voc_dataset *d = calloc(1, sizeof *d);
	long nboxes = 0;
	for (long i = 0; i < n; i++)
		nboxes += images[i].n;
	if (!d || !(d->split = strdup("listed")) || !(d->items = calloc((size_t)(n ? n : 1), sizeof *d->items)) ||
	    !(d->gt_boxes = malloc((size_t)(nboxes ? nboxes : 1) * 4 * sizeof *d->gt_boxes)) ||
	    !(d->gt_labels = malloc((size_t)(nboxes ? nboxes : 1) * sizeof *d->gt_labels)) ||
	    !(d->gt_ignore = malloc((size_t)(nboxes ? nboxes : 1) * sizeof *d->gt_ignore))) {
		err_set("out of memory");
		goto fail;
	}
	d->items_cap = n;
	if (!is_dir(image_dir)) {
		err_set("%s: not a directory of images", image_dir);
		goto fail;
	}
	if (add_root(d, root_name, image_dir, -1, NULL) < 0)
		goto fail;
	long at = 0;
	for (long i = 0; i < n; i++, d->nitems++) {
		const voc_listed_image *li = &images[i];
		struct item *it = &d->items[i];
		it->width = li->width;
		it->height = li->height;
		it->gt_first = at;
		it->gt_n = li->n;
		if (!(it->id = xstrdup(li->id)) || !(it->file = xstrdup(li->file)) ||
		    (li->bad && !(it->why_bad = xstrdup(li->bad))))
			goto fail;
		memcpy(d->gt_boxes + 4 * at, li->boxes, (size_t)li->n * 4 * sizeof *d->gt_boxes);
		memcpy(d->gt_labels + at, li->labels, (size_t)li->n * sizeof *d->gt_labels);
		memcpy(d->gt_ignore + at, li->ignore, (size_t)li->n * sizeof *d->gt_ignore);
		at += li->n;
	}
	return d;
fail:
	voc_close(d);
	return NULL;
}

/* ---------------------------------------------------------------- reading */

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
		voc_shuffle(r->order, r->nsel, voc_epoch_seed(r->p.seed, epoch));
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

/* The annotation text of an item: from the archive read at open, or from disk. */
static int load_xml(const voc_dataset *d, const struct item *it, const char *where, char **own, const char **xml,
		    size_t *len)
{
	const struct root *rt = &d->roots[it->root];
	*own = NULL;
	if (!rt->dir) {
		if (!it->xml)
			return err_set("%s: missing annotation", where);
		*xml = it->xml;
		*len = it->xml_len;
		return 0;
	}
	int rc = files_read(where, own, len);
	if (rc == -2)
		return err_set("%s: missing annotation", where);
	if (rc < 0)
		return err_wrap("%s", where);
	*xml = *own;
	return 0;
}

/* Finds the image of an item (JPEGImages/<id>.jpg, else .png, else .jpeg); reads it
 * when want_bytes. Sets *rel to its root-relative path. */
static int load_image(const voc_dataset *d, const struct item *it, int want_bytes, char **rel, unsigned char **own,
		      const unsigned char **img, size_t *len)
{
	const struct root *rt = &d->roots[it->root];
	*own = NULL;
	*rel = NULL;
	if (!rt->dir) {
		*rel = xprintf("JPEGImages/%s.%s", it->id, it->ext ? it->ext : IMAGE_EXTS[0]);
		if (!*rel)
			return -1;
		if (!it->ext || (want_bytes && !it->img)) {
			char *w = file_where(d, rt, *rel);
			err_set("%s: missing image", w ? w : *rel);
			free(w);
			return -1;
		}
		*img = it->img;
		*len = it->img_len;
		return 0;
	}
	for (int e = 0; e < NEXTS; e++) {
		char *r = xprintf("JPEGImages/%s.%s", it->id, IMAGE_EXTS[e]);
		char *path = r ? file_where(d, rt, r) : NULL;
		if (!path) {
			free(r);
			return -1;
		}
		int rc;
		if (want_bytes) {
			rc = files_read(path, (char **)own, len);
			*img = *own;
		} else {
			rc = access(path, F_OK) == 0 ? 0 : errno == ENOENT ? -2 : err_set("%s", strerror(errno));
		}
		if (rc == -2 && e + 1 < NEXTS) {
			free(r);
			free(path);
			continue;
		}
		if (rc == -2) {
			free(r);
			free(path);
			path = file_where(d, rt, "JPEGImages/");
			err_set("%s%s.jpg: missing image", path ? path : "", it->id);
			free(path);
			return -1;
		}
		if (rc < 0)
			err_wrap("%s", path);
		free(path);
		*rel = r;
		return rc;
	}
	return -1;
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
	if (load_xml(r->d, it, xml_where, &xml_own, &xml, &xml_len) < 0)
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

/* A listed item's image (read when want_bytes); *rel is its root-relative path. */
static int load_listed_image(const voc_dataset *d, const struct item *it, int want_bytes, char **rel,
			     unsigned char **own, const unsigned char **img, size_t *len)
{
	char *path = file_where(d, &d->roots[it->root], it->file);
	*own = NULL;
	if (!(*rel = xstrdup(it->file)) || !path) {
		free(path);
		return -1;
	}
	int rc = want_bytes ? files_read(path, (char **)own, len)
		 : access(path, F_OK) == 0 ? 0
		 : errno == ENOENT	  ? -2
					  : err_set("%s", strerror(errno));
	*img = *own;
	if (rc == -2)
		err_set("%s: missing image", path);
	else if (rc < 0)
		err_wrap("%s", path);
	free(path);
	return rc < 0 ? -1 : 0;
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
		if (load_listed_image(d, it, r->p.images, &img_rel, &img_own, &img, &img_len) < 0)
			goto out;
		if (!(where = file_where(d, rt, img_rel)))
			goto out;
	} else {
		if (!(xml_rel = xprintf("Annotations/%s.xml", it->id)) || !(where = file_where(d, rt, xml_rel)) ||
		    voc_truth(r, it, where, &ann) < 0)
			goto out;
		gt.width = ann.width;
		gt.height = ann.height;
		if (load_image(d, it, r->p.images, &img_rel, &img_own, &img, &img_len) < 0)
			goto out;
	}
	if (!(img_where = file_where(d, rt, img_rel)) || !(file = file_meta(rt, img_rel)))
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

static int item_cmp_key(const void *key, const void *elem)
{
	const struct item *x = key, *y = *(struct item *const *)elem;
	return x->root != y->root ? (x->root < y->root ? -1 : 1) : strcmp(x->id, y->id);
}

/* Pass 2 over one archive: keeps the compressed bytes of the wanted images. */
static int load_archive_images(voc_dataset *d, int ai, struct item **sorted, long nsorted)
{
	const char *path = d->archives[ai];
	struct archive *a = files_archive_open(path);
	if (!a)
		return -1;
	struct archive_entry *e;
	int r, rc = -1;
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		const char *name = files_entry_path(e);
		size_t plen;
		char *id;
		int ext;
		if (classify(name, d->split, &plen, &id, &ext) != E_IMAGE) {
			free(id);
			continue;
		}
		struct item key = {.root = -1, .id = id};
		for (int i = 0; i < d->nroots; i++)
			if (d->roots[i].archive == ai && !d->roots[i].dir && strlen(d->roots[i].prefix) == plen &&
			    !strncmp(d->roots[i].prefix, name, plen))
				key.root = i;
		struct item **hit = key.root < 0 ? NULL
						 : bsearch(&key, sorted, (size_t)nsorted, sizeof *sorted, item_cmp_key);
		free(id);
		if (!hit || (*hit)->img || !(*hit)->ext || strcmp((*hit)->ext, IMAGE_EXTS[ext]))
			continue;
		char *data;
		if (files_entry_data(a, e, &data, &(*hit)->img_len) < 0) {
			err_wrap("%s:%s", path, name);
			goto out;
		}
		(*hit)->img = (unsigned char *)data;
	}
	if (r != ARCHIVE_EOF) {
		err_set("%s: %s", path, archive_error_string(a));
		goto out;
	}
	rc = 0;
out:
	archive_read_free(a);
	return rc;
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
	struct item **sorted = malloc((size_t)(nwanted ? nwanted : 1) * sizeof *sorted);
	if (!sorted)
		return err_set("out of memory");
	long n = 0;
	for (long i = 0; i < d->nitems; i++)
		if (d->items[i].wanted && !d->roots[d->items[i].root].dir)
			sorted[n++] = &d->items[i];
	qsort(sorted, (size_t)n, sizeof *sorted, item_cmp_id);
	int rc = 0;
	for (int ai = 0; ai < d->narchives && rc == 0 && n > 0; ai++)
		rc = load_archive_images(d, ai, sorted, n);
	free(sorted);
	return rc;
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
