/* The roots inside .tar, .tar.gz, .tgz and .zip archives (voc.h): pass 1 at open for
 * the split lists and annotations, pass 2 for the images a reader selects. */
#include "data/voc.h"

#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/array.h"
#include "core/err.h"
#include "core/files.h"
#include "core/str.h"
#include "data/voc_private.h"

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
				for (int e = 0; dot && dot > rest && e < VOC_NEXTS; e++)
					if (!strcmp(dot + 1, voc_image_exts[e])) {
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
	if (array_grow(&p->prefixes, &p->prefix_cap, p->nprefix + 1, sizeof *p->prefixes) < 0 ||
	    array_grow(&p->splits, &cap2, p->nprefix + 1, sizeof *p->splits) < 0)
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
	if (!(f.prefix = str_dup(p->prefixes[pi])))
		goto fail;
	if (k == E_XML && files_entry_data(a, e, &f.data, &f.len) < 0) {
		err_wrap("%s", path);
		free(f.prefix);
		goto fail;
	}
	int bad = k == E_XML ? array_grow(&p->xml, &p->xml_cap, p->nxml + 1, sizeof *p->xml)
			     : array_grow(&p->img, &p->img_cap, p->nimg + 1, sizeof *p->img);
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

/* Registers archive path in d: its index, or -1 (err). */
static int add_archive(voc_dataset *d, const char *path)
{
	if (array_grow(&d->archives, &d->archives_cap, d->narchives + 1, sizeof *d->archives) < 0 ||
	    !(d->archives[d->narchives] = str_dup(path)))
		return -1;
	return d->narchives++;
}

/* A root's name in archive path: its prefix without the '/', or for the archive's top
 * the archive's base name up to its first dot ("VOC2007.tar.gz" -> "VOC2007"). */
static char *archive_root_name(const char *path, const char *prefix)
{
	char *name = prefix[0] ? strndup(prefix, strlen(prefix) - 1) : voc_base_name(path);
	char *dot = name && !prefix[0] ? strchr(name, '.') : NULL;
	if (dot && dot != name)
		*dot = 0;
	if (!name)
		err_set("out of memory");
	return name;
}

int voc_open_archive(voc_dataset *d, const char *path)
{
	int ai = add_archive(d, path);
	if (ai < 0)
		return -1;
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
		char *name = archive_root_name(path, prefix);
		if (!name) {
			free(order);
			goto out;
		}
		int ok = voc_add_root(d, name, NULL, ai, prefix);
		free(name);
		if (ok < 0) {
			free(order);
			goto out;
		}
		char *where = str_printf("%s:%sImageSets/Main/%s.txt", path, prefix, d->split);
		if (!where || !p.splits[i]) {
			if (where)
				err_set("%s: missing split file (no split '%s')", where, d->split);
			free(where);
			free(order);
			goto out;
		}
		long first = d->nitems;
		ok = voc_add_split(d, p.splits[i], where);
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
				if (array_grow(&d->xmls, &d->xmls_cap, d->nxmls + 1, sizeof *d->xmls) < 0) {
					free(order);
					goto out;
				}
				d->xmls[d->nxmls++] = f->data;
				it->xml = f->data;
				it->xml_len = f->len;
				f->data = NULL;
			}
			for (int x = 0; x < VOC_NEXTS && !it->ext; x++) {
				key.ext = x;
				if (p.nimg && bsearch(&key, p.img, (size_t)p.nimg, sizeof *p.img, found_cmp))
					it->ext = voc_image_exts[x];
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
static int item_cmp_key(const void *key, const void *elem)
{
	const struct item *x = key, *y = *(struct item *const *)elem;
	return x->root != y->root ? (x->root < y->root ? -1 : 1) : strcmp(x->id, y->id);
}

/* The wanted items sorted for a pass 2, and the lookup of an entry among them. */
struct wanted {
	struct item **sorted;
	long n;
	struct item *(*find)(const voc_dataset *d, int ai, const struct wanted *w, const char *name);
};

/* Pass 2 over one archive: keeps the compressed bytes of the images w finds. */
static int read_images(voc_dataset *d, int ai, const struct wanted *w)
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
		struct item *it = w->find(d, ai, w, name);
		if (!it || it->img)
			continue;
		char *data;
		if (files_entry_data(a, e, &data, &it->img_len) < 0) {
			err_wrap("%s:%s", path, name);
			goto out;
		}
		it->img = (unsigned char *)data;
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

/* A VOC image entry ROOT/JPEGImages/ID.EXT: the wanted item of that root and id, if the
 * extension is the one found at open. */
static struct item *find_voc_image(const voc_dataset *d, int ai, const struct wanted *w, const char *name)
{
	size_t plen;
	char *id;
	int ext;
	if (classify(name, d->split, &plen, &id, &ext) != E_IMAGE) {
		free(id);
		return NULL;
	}
	struct item key = {.root = -1, .id = id};
	for (int i = 0; i < d->nroots; i++)
		if (d->roots[i].archive == ai && !d->roots[i].dir && strlen(d->roots[i].prefix) == plen &&
		    !strncmp(d->roots[i].prefix, name, plen))
			key.root = i;
	struct item **hit = key.root < 0 ? NULL : bsearch(&key, w->sorted, (size_t)w->n, sizeof *w->sorted, item_cmp_key);
	free(id);
	if (!hit || !(*hit)->ext || strcmp((*hit)->ext, voc_image_exts[ext]))
		return NULL;
	return *hit;
}

/* ---------------------------------------------------------------- listed images */

static int item_cmp_file(const void *a, const void *b)
{
	return strcmp((*(struct item *const *)a)->file, (*(struct item *const *)b)->file);
}

/* The listed item whose file is name, or NULL (sorted by file). */
static struct item *listed_find(struct item **sorted, long n, const char *name)
{
	struct item key = {.file = (char *)name}, *k = &key, **hit;
	hit = n ? bsearch(&k, sorted, (size_t)n, sizeof *sorted, item_cmp_file) : NULL;
	return hit ? *hit : NULL;
}

/* The items (all, or only the wanted ones) sorted by file: their count, or -1 (err). */
static long listed_sorted(voc_dataset *d, struct item ***out, int wanted_only)
{
	struct item **s = malloc((size_t)(d->nitems ? d->nitems : 1) * sizeof *s);
	if (!s)
		return err_set("out of memory");
	long n = 0;
	for (long i = 0; i < d->nitems; i++)
		if (!wanted_only || d->items[i].wanted)
			s[n++] = &d->items[i];
	if (n)
		qsort(s, (size_t)n, sizeof *s, item_cmp_file);
	*out = s;
	return n;
}

/* A listed file found in an archive under folder `prefix` (pass 1 of voc_open_listed_archive). */
struct listed_hit {
	int prefix;
	struct item *it;
};

int voc_open_listed_archive(voc_dataset *d, const char *path)
{
	int ai = add_archive(d, path);
	if (ai < 0)
		return -1;
	struct item **sorted;
	long n = listed_sorted(d, &sorted, 0);
	if (n < 0)
		return -1;
	struct archive *a = files_archive_open(path);
	char **prefixes = NULL;
	long *counts = NULL, nprefix = 0, prefix_cap = 0, counts_cap = 0, nhits = 0, hits_cap = 0;
	struct listed_hit *hits = NULL;
	int r, rc = -1;
	struct archive_entry *e;
	/* every folder under which a listed file is: the one with the most of them is the
	 * image folder (a stray file of the same name elsewhere does not decide it) */
	while (a && ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN)) {
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		const char *name = files_entry_path(e);
		for (const char *rel = name; rel; rel = strchr(rel, '/') ? strchr(rel, '/') + 1 : NULL) {
			struct item *it = listed_find(sorted, n, rel);
			if (!it)
				continue;
			size_t pl = (size_t)(rel - name);
			long p = 0;
			while (p < nprefix && (strlen(prefixes[p]) != pl || strncmp(prefixes[p], name, pl)))
				p++;
			if (p == nprefix) {
				if (array_grow(&prefixes, &prefix_cap, nprefix + 1, sizeof *prefixes) < 0 ||
				    array_grow(&counts, &counts_cap, nprefix + 1, sizeof *counts) < 0 ||
				    !(prefixes[nprefix] = strndup(name, pl)))
					goto out;
				counts[nprefix++] = 0;
			}
			if (array_grow(&hits, &hits_cap, nhits + 1, sizeof *hits) < 0)
				goto out;
			hits[nhits++] = (struct listed_hit){.prefix = (int)p, .it = it};
			counts[p]++;
		}
	}
	if (!a)
		goto out;
	if (r != ARCHIVE_EOF) {
		err_set("%s: %s", path, archive_error_string(a));
		goto out;
	}
	long best = -1;
	for (long p = 0; p < nprefix; p++)
		if (best < 0 || counts[p] > counts[best] ||
		    (counts[p] == counts[best] && strlen(prefixes[p]) < strlen(prefixes[best])))
			best = p;
	for (long h = 0; h < nhits; h++)
		if (hits[h].prefix == best)
			hits[h].it->ext = ""; /* there: read by voc_load_archive_images */
	/* the root is named as the folder unpacked would be */
	const char *prefix = best >= 0 ? prefixes[best] : "";
	char *name = archive_root_name(path, prefix), *slash = name ? strrchr(name, '/') : NULL;
	rc = name ? voc_add_root(d, slash ? slash + 1 : name, NULL, ai, prefix) : -1;
	free(name);
	if (rc == 0)
		d->roots[d->nroots - 1].listed = 1;
	for (long i = 0; rc == 0 && i < d->nitems; i++)
		d->items[i].root = d->nroots - 1;
out:
	for (long p = 0; p < nprefix; p++)
		free(prefixes[p]);
	free(prefixes);
	free(counts);
	free(hits);
	free(sorted);
	if (a)
		archive_read_free(a);
	return rc;
}

/* An entry under a listed dataset's image folder: the wanted item of that file. */
static struct item *find_listed_image(const voc_dataset *d, int ai, const struct wanted *w, const char *name)
{
	const char *prefix = d->roots[d->nroots - 1].prefix;
	size_t pl = strlen(prefix);
	return strncmp(name, prefix, pl) ? NULL : listed_find(w->sorted, w->n, name + pl);
}

int voc_load_archive_images(voc_dataset *d)
{
	if (d->gt_boxes) { /* listed: one archive at most, its items sorted by file */
		struct wanted w = {.find = find_listed_image};
		if (!d->narchives)
			return 0;
		if ((w.n = listed_sorted(d, &w.sorted, 1)) < 0)
			return -1;
		int rc = w.n ? read_images(d, 0, &w) : 0;
		free(w.sorted);
		return rc;
	}
	long nwanted = 0;
	for (long i = 0; i < d->nitems; i++)
		nwanted += d->items[i].wanted;
	struct item **sorted = malloc((size_t)(nwanted ? nwanted : 1) * sizeof *sorted);
	if (!sorted)
		return err_set("out of memory");
	long n = 0;
	for (long i = 0; i < d->nitems; i++)
		if (d->items[i].wanted && !d->roots[d->items[i].root].dir)
			sorted[n++] = &d->items[i];
	qsort(sorted, (size_t)n, sizeof *sorted, voc_item_cmp_id);
	int rc = 0;
	struct wanted w = {.sorted = sorted, .n = n, .find = find_voc_image};
	for (int ai = 0; ai < d->narchives && rc == 0 && n > 0; ai++)
		rc = read_images(d, ai, &w);
	free(sorted);
	return rc;
}
