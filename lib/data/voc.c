#include "data/voc.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/array.h"
#include "core/err.h"
#include "core/files.h"
#include "core/str.h"
#include "data/voc_private.h"

const char *const voc_image_exts[VOC_NEXTS] = {"jpg", "png", "jpeg"};

static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---------------------------------------------------------------- roots and items */

char *voc_file_where(const voc_dataset *d, const struct root *rt, const char *rel)
{
	if (rt->dir)
		return str_printf("%s/%s", rt->dir, rel);
	return str_printf("%s:%s%s", d->archives[rt->archive], rt->prefix, rel);
}

char *voc_file_meta(const struct root *rt, const char *rel)
{
	if (rt->dir || rt->listed)
		return str_printf("%s/%s", rt->name, rel);
	return str_printf("%s%s", rt->prefix, rel);
}

int voc_add_root(voc_dataset *d, const char *name, const char *dir, int archive, const char *prefix)
{
	if (array_grow(&d->roots, &d->roots_cap, d->nroots + 1, sizeof *d->roots) < 0)
		return -1;
	struct root *rt = &d->roots[d->nroots];
	memset(rt, 0, sizeof *rt);
	rt->archive = archive;
	rt->name = str_dup(name);
	rt->dir = dir ? str_dup(dir) : NULL;
	for (size_t n = rt->dir ? strlen(rt->dir) : 0; n > 1 && rt->dir[n - 1] == '/'; n--)
		rt->dir[n - 1] = 0;
	rt->prefix = prefix ? str_dup(prefix) : NULL;
	d->nroots++;
	if (!rt->name || (dir && !rt->dir) || (prefix && !rt->prefix))
		return -1;
	return 0;
}

int voc_item_cmp_id(const void *a, const void *b)
{
	const struct item *x = *(struct item *const *)a, *y = *(struct item *const *)b;
	return x->root != y->root ? (x->root < y->root ? -1 : 1) : strcmp(x->id, y->id);
}

int voc_add_split(voc_dataset *d, char *text, const char *where)
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
		if (array_grow(&d->items, &d->items_cap, d->nitems + 1, sizeof *d->items) < 0)
			return -1;
		struct item *it = &d->items[d->nitems];
		memset(it, 0, sizeof *it);
		it->root = root;
		if (!(it->id = str_dup(tok)))
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
	qsort(sorted, (size_t)n, sizeof *sorted, voc_item_cmp_id);
	for (long i = 1; i < n; i++)
		if (!strcmp(sorted[i]->id, sorted[i - 1]->id)) {
			err_set("%s: image id '%s' listed twice", where, sorted[i]->id);
			free(sorted);
			return -1;
		}
	free(sorted);
	return 0;
}

/* ---------------------------------------------------------------- roots on disk */

static int open_dir_root(voc_dataset *d, const char *dir, const char *name)
{
	if (voc_add_root(d, name, dir, -1, NULL) < 0)
		return -1;
	char *rel = str_printf("ImageSets/Main/%s.txt", d->split);
	char *path = rel ? str_printf("%s/%s", dir, rel) : NULL;
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
		rc = voc_add_split(d, text, path);
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
		char *p = str_printf("%s/%s", dir, subs[i]);
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

char *voc_base_name(const char *path)
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
		s = real && strcmp(real, "/") ? voc_base_name(real) : str_dup("root");
		free(real);
		return s;
	}
	if (!s)
		err_set("out of memory");
	return s;
}

static int open_dir(voc_dataset *d, const char *path)
{
	char *name = voc_base_name(path);
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
		char *sub = e[0] != '.' ? str_printf("%s/%s", path, e) : NULL;
		char *subname = sub ? str_printf("%s/%s", name, e) : NULL;
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
/* ---------------------------------------------------------------- the dataset */

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
		if ((S_ISDIR(st.st_mode) ? open_dir(d, paths[i]) : voc_open_archive(d, paths[i])) < 0)
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
	int archive = !is_dir(image_dir);
	if (archive) {
		struct stat st;
		if (stat(image_dir, &st) != 0 || !S_ISREG(st.st_mode)) {
			err_set("%s: not a directory of images, nor an archive of them", image_dir);
			goto fail;
		}
	} else if (voc_add_root(d, root_name, image_dir, -1, NULL) < 0) {
		goto fail;
	}
	long at = 0;
	for (long i = 0; i < n; i++, d->nitems++) {
		const voc_listed_image *li = &images[i];
		struct item *it = &d->items[i];
		it->width = li->width;
		it->height = li->height;
		it->gt_first = at;
		it->gt_n = li->n;
		if (!(it->id = str_dup(li->id)) || !(it->file = str_dup(li->file)) ||
		    (li->bad && !(it->why_bad = str_dup(li->bad))))
			goto fail;
		memcpy(d->gt_boxes + 4 * at, li->boxes, (size_t)li->n * 4 * sizeof *d->gt_boxes);
		memcpy(d->gt_labels + at, li->labels, (size_t)li->n * sizeof *d->gt_labels);
		memcpy(d->gt_ignore + at, li->ignore, (size_t)li->n * sizeof *d->gt_ignore);
		at += li->n;
	}
	/* an archive's root and its prefix come from where the listed files are in it */
	if (archive && voc_open_listed_archive(d, image_dir) < 0)
		goto fail;
	return d;
fail:
	voc_close(d);
	return NULL;
}

/* ---------------------------------------------------------------- an item's files */

int voc_load_xml(const voc_dataset *d, const struct item *it, const char *where, char **own, const char **xml,
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

int voc_load_image(const voc_dataset *d, const struct item *it, int want_bytes, char **rel, unsigned char **own,
		   const unsigned char **img, size_t *len)
{
	const struct root *rt = &d->roots[it->root];
	*own = NULL;
	*rel = NULL;
	if (!rt->dir) {
		*rel = str_printf("JPEGImages/%s.%s", it->id, it->ext ? it->ext : voc_image_exts[0]);
		if (!*rel)
			return -1;
		if (!it->ext || (want_bytes && !it->img)) {
			char *w = voc_file_where(d, rt, *rel);
			err_set("%s: missing image", w ? w : *rel);
			free(w);
			return -1;
		}
		*img = it->img;
		*len = it->img_len;
		return 0;
	}
	for (int e = 0; e < VOC_NEXTS; e++) {
		char *r = str_printf("JPEGImages/%s.%s", it->id, voc_image_exts[e]);
		char *path = r ? voc_file_where(d, rt, r) : NULL;
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
		if (rc == -2 && e + 1 < VOC_NEXTS) {
			free(r);
			free(path);
			continue;
		}
		if (rc == -2) {
			free(r);
			free(path);
			path = voc_file_where(d, rt, "JPEGImages/");
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

int voc_load_listed_image(const voc_dataset *d, const struct item *it, int want_bytes, char **rel,
			  unsigned char **own, const unsigned char **img, size_t *len)
{
	const struct root *rt = &d->roots[it->root];
	char *path = voc_file_where(d, rt, it->file);
	*own = NULL;
	if (!(*rel = str_dup(it->file)) || !path) {
		free(path);
		return -1;
	}
	if (!rt->dir) { /* in an archive: found at open (ext), read by the reader (img) */
		int rc = 0;
		if (!it->ext || (want_bytes && !it->img))
			rc = err_set("%s: missing image", path);
		*img = it->img;
		*len = it->img_len;
		free(path);
		return rc;
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
