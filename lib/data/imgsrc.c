#include "data/imgsrc.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/files.h"
#include "core/str.h"
#include "data/image_record.h"

struct item {
	char *id, *root, *file;
	char *path;   /* on disk, or NULL for an archive entry */
	int archive;  /* index into archives (path NULL) */
	char *entry;  /* the entry's name in it */
};

struct imgsrc {
	struct item *items;
	long n, cap;
	char **archives;
	int narchives, archives_cap;
	/* reading */
	long pos;
	struct archive *a; /* the archive being read, positioned after the last entry taken */
	int a_index;
};

/* Names a directory or an archive holds as images. */
static int image_name(const char *name)
{
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	if (base[0] == '.')
		return 0;
	return ends_with_nocase(base, ".jpg") || ends_with_nocase(base, ".jpeg") || ends_with_nocase(base, ".png");
}

static int archive_name(const char *name)
{
	static const char *const exts[] = {".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".zip"};
	/* a file named only ".zip" is not taken for an archive */
	for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
		if (ends_with_nocase(name, exts[i]) && strlen(name) > strlen(exts[i]))
			return 1;
	return 0;
}

/* rel without its extension (after the last '.' of the last component, if any). */
static char *strip_ext(const char *rel)
{
	const char *base = strrchr(rel, '/'), *dot = strrchr(base ? base + 1 : rel, '.');
	size_t n = dot && dot > (base ? base + 1 : rel) ? (size_t)(dot - rel) : strlen(rel);
	char *s = strndup(rel, n);
	if (!s)
		err_set("out of memory");
	return s;
}

static int add_item(imgsrc *s, const char *rel, const char *root, char *file, char *path, int archive, const char *entry)
{
	if (s->n == s->cap) {
		long cap = s->cap ? 2 * s->cap : 64;
		struct item *it = realloc(s->items, (size_t)cap * sizeof *it);
		if (!it) {
			free(file);
			free(path);
			return err_set("out of memory");
		}
		s->items = it;
		s->cap = cap;
	}
	struct item *it = &s->items[s->n++];
	memset(it, 0, sizeof *it);
	it->file = file;
	it->path = path;
	it->archive = archive;
	it->id = strip_ext(rel);
	it->root = strdup(root);
	it->entry = entry ? strdup(entry) : NULL;
	if (!it->file || !it->id || !it->root || (entry && !it->entry) || (!entry && !path))
		return err_set("out of memory");
	return 0;
}

/* A path with trailing slashes removed (but "/" stays). */
static char *trim_slashes(const char *p)
{
	char *s = strdup(p);
	if (!s) {
		err_set("out of memory");
		return NULL;
	}
	for (size_t n = strlen(s); n > 1 && s[n - 1] == '/'; n--)
		s[n - 1] = 0;
	return s;
}

static int rel_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the image names under dir/sub ("" at the top) into *rels. */
static int scan_dir(const char *dir, const char *sub, int recursive, char ***rels, long *n, long *cap)
{
	char *path = sub[0] ? str_printf("%s/%s", dir, sub) : strdup(dir);
	if (!path)
		return err_set("out of memory");
	DIR *d = opendir(path);
	if (!d) {
		err_set("%s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *rel = sub[0] ? str_printf("%s/%s", sub, e->d_name) : strdup(e->d_name);
		char *full = rel ? str_printf("%s/%s", dir, rel) : NULL;
		struct stat st;
		if (!full) {
			free(rel);
			rc = err_set("out of memory");
			break;
		}
		if (stat(full, &st) < 0) {
			rc = err_set("%s: %s", full, strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			if (recursive)
				rc = scan_dir(dir, rel, recursive, rels, n, cap);
		} else if (S_ISREG(st.st_mode) && image_name(rel)) {
			if (*n == *cap) {
				long c = *cap ? 2 * *cap : 64;
				char **r = realloc(*rels, (size_t)c * sizeof *r);
				if (!r)
					rc = err_set("out of memory");
				else
					*rels = r, *cap = c;
			}
			if (rc == 0) {
				(*rels)[(*n)++] = rel;
				rel = NULL;
			}
		}
		free(rel);
		free(full);
	}
	closedir(d);
	free(path);
	return rc;
}

static int open_dir(imgsrc *s, const char *arg, int recursive)
{
	char *dir = trim_slashes(arg);
	char **rels = NULL;
	long n = 0, cap = 0;
	int rc = dir ? scan_dir(dir, "", recursive, &rels, &n, &cap) : -1;
	if (rc == 0 && n == 0)
		rc = err_set("%s: no JPEG or PNG images (*.jpg, *.jpeg, *.png)%s", arg,
			     recursive ? " in it or below" : " (--recursive looks in subdirectories)");
	if (rc == 0)
		qsort(rels, (size_t)n, sizeof *rels, rel_cmp);
	for (long i = 0; i < n; i++) {
		if (rc == 0) {
			char *file = str_printf("%s/%s", dir, rels[i]);
			rc = add_item(s, rels[i], arg, file, file ? strdup(file) : NULL, -1, NULL);
		}
		free(rels[i]);
	}
	free(rels);
	free(dir);
	return rc;
}

static int open_archive(imgsrc *s, const char *path)
{
	struct archive *a = files_archive_open(path);
	if (!a)
		return -1;
	if (s->narchives == s->archives_cap) {
		int cap = s->archives_cap ? 2 * s->archives_cap : 4;
		char **p = realloc(s->archives, (size_t)cap * sizeof *p);
		if (!p) {
			archive_read_free(a);
			return err_set("out of memory");
		}
		s->archives = p;
		s->archives_cap = cap;
	}
	int ai = s->narchives;
	if (!(s->archives[ai] = strdup(path))) {
		archive_read_free(a);
		return err_set("out of memory");
	}
	s->narchives++;
	long before = s->n;
	struct archive_entry *e;
	int r, rc = 0;
	while (rc == 0 && ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN)) {
		const char *name = files_entry_path(e);
		/* the resource-fork shadows macOS puts into zips */
		if (archive_entry_filetype(e) != AE_IFREG || !image_name(name) || !strncmp(name, "__MACOSX/", 9))
			continue;
		rc = add_item(s, name, path, str_printf("%s:%s", path, name), NULL, ai, name);
	}
	if (rc == 0 && r != ARCHIVE_EOF)
		rc = err_set("%s: %s", path, archive_error_string(a));
	if (rc == 0 && s->n == before)
		rc = err_set("%s: no JPEG or PNG images (*.jpg, *.jpeg, *.png) inside", path);
	archive_read_free(a);
	return rc;
}

static int add_file(imgsrc *s, const char *path)
{
	const char *base = strrchr(path, '/');
	char *file = strdup(path);
	return add_item(s, base ? base + 1 : path, path, file, file ? strdup(file) : NULL, -1, NULL);
}

static int open_path(imgsrc *s, const char *path, int recursive)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return err_set("%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return open_dir(s, path, recursive);
	if (archive_name(path))
		return open_archive(s, path);
	return add_file(s, path);
}

/* Paths, one a line; a missing file is the image's own error when it is read. */
static int open_list(imgsrc *s, FILE *f, const char *name)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = 0;
	while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
		char *p = line, *end = line + len;
		while (p < end && isspace((unsigned char)*p))
			p++;
		while (end > p && isspace((unsigned char)end[-1]))
			end--;
		*end = 0;
		if (*p)
			rc = add_file(s, p);
	}
	if (rc == 0 && ferror(f))
		rc = err_set("%s: %s", name, strerror(errno));
	free(line);
	return rc;
}

static int item_id_cmp(const void *a, const void *b)
{
	const struct item *x = *(struct item *const *)a, *y = *(struct item *const *)b;
	int c = strcmp(x->id, y->id);
	return c ? c : (x < y ? -1 : x > y);
}

/* The pictures and JSON written per image are named by id, so two images must not share one. */
static int check_unique(const imgsrc *s)
{
	struct item **v = malloc((size_t)(s->n ? s->n : 1) * sizeof *v);
	if (!v)
		return err_set("out of memory");
	for (long i = 0; i < s->n; i++)
		v[i] = &s->items[i];
	qsort(v, (size_t)s->n, sizeof *v, item_id_cmp);
	int rc = 0;
	for (long i = 1; i < s->n && rc == 0; i++)
		if (!strcmp(v[i]->id, v[i - 1]->id))
			rc = err_set("%s and %s: both have the image id '%s'", v[i - 1]->file, v[i]->file, v[i]->id);
	free(v);
	return rc;
}

void imgsrc_close(imgsrc *s)
{
	if (!s)
		return;
	for (long i = 0; i < s->n; i++) {
		free(s->items[i].id);
		free(s->items[i].root);
		free(s->items[i].file);
		free(s->items[i].path);
		free(s->items[i].entry);
	}
	free(s->items);
	for (int i = 0; i < s->narchives; i++)
		free(s->archives[i]);
	free(s->archives);
	if (s->a)
		archive_read_free(s->a);
	free(s);
}

imgsrc *imgsrc_open(int npaths, char *const *paths, const imgsrc_opts *o)
{
	imgsrc *s = calloc(1, sizeof *s);
	if (!s) {
		err_set("out of memory");
		return NULL;
	}
	s->a_index = -1;
	for (int i = 0; i < npaths; i++) {
		int rc;
		if (!strcmp(paths[i], "-")) {
			if (!o->list) {
				err_set("-: no list of paths to read");
				goto fail;
			}
			rc = open_list(s, o->list, o->list_name ? o->list_name : "stdin");
		} else {
			rc = open_path(s, paths[i], o->recursive);
		}
		if (rc < 0)
			goto fail;
	}
	if (check_unique(s) < 0)
		goto fail;
	return s;
fail:
	imgsrc_close(s);
	return NULL;
}

long imgsrc_size(const imgsrc *s)
{
	return s->n;
}

const char *imgsrc_id(const imgsrc *s, long i)
{
	return s->items[i].id;
}

const char *imgsrc_file(const imgsrc *s, long i)
{
	return s->items[i].file;
}

int imgsrc_planned(const imgsrc_plan *p, long pos)
{
	return (p->limit < 0 || pos < p->limit) && pos % p->shard_n == p->shard_k;
}

/* The bytes of an archive item: entries are taken in stored order, so the archive is
 * read once from front to back. */
static int archive_bytes(imgsrc *s, const struct item *it, char **out, size_t *len)
{
	if (s->a && s->a_index != it->archive) {
		archive_read_free(s->a);
		s->a = NULL;
	}
	const char *path = s->archives[it->archive];
	if (!s->a) {
		if (!(s->a = files_archive_open(path)))
			return -1;
		s->a_index = it->archive;
	}
	struct archive_entry *e;
	int r;
	while ((r = archive_read_next_header(s->a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		if (archive_entry_filetype(e) != AE_IFREG || strcmp(files_entry_path(e), it->entry))
			continue;
		if (files_entry_data(s->a, e, out, len) < 0)
			return err_wrap("%s", it->file);
		return 0;
	}
	if (r != ARCHIVE_EOF)
		return err_set("%s: %s", path, archive_error_string(s->a));
	return err_set("%s: entry gone from the archive since it was opened", it->file);
}

int imgsrc_next(imgsrc *s, const imgsrc_plan *p, record **out)
{
	*out = NULL;
	while (s->pos < s->n && !imgsrc_planned(p, s->pos))
		s->pos++;
	if (s->pos >= s->n)
		return IMGSRC_END;
	long pos = s->pos++;
	const struct item *it = &s->items[pos];
	char *bytes = NULL;
	size_t len = 0;
	if (it->path) {
		int rc = files_read(it->path, &bytes, &len);
		if (rc < 0) {
			if (rc == -2)
				err_set("%s", strerror(ENOENT));
			err_wrap("%s", it->file);
			return IMGSRC_BAD;
		}
	} else if (archive_bytes(s, it, &bytes, &len) < 0) {
		return -1; /* the archive itself broke off: nothing after it can be read */
	}
	int w, h;
	record *r = image_record_new(bytes, len, 1, it->file, &w, &h);
	free(bytes);
	if (!r)
		return IMGSRC_BAD;
	if (image_record_meta(r, it->id, it->root, it->file, w, h, pos, 0) < 0) {
		record_free(r);
		return -1;
	}
	*out = r;
	return IMGSRC_RECORD;
}
