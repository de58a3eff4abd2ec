/* voc_private: the dataset's insides, shared by the three files that implement it and
 * by no other: voc.c (trees, listed datasets, an item's files), voc_archive.c (roots
 * inside archives) and voc_reader.c (records from the items). Everything else goes
 * through voc.h and voc_reader.h. */
#ifndef VOC_PRIVATE_H
#define VOC_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include "data/voc.h"

/* An image is JPEGImages/<id>.<ext>, the first of these that exists. */
#define VOC_NEXTS 3
extern const char *const voc_image_exts[VOC_NEXTS];

struct root {
	char *name;   /* meta "root" */
	char *dir;    /* a root on disk, or NULL */
	int archive;  /* a root inside d->archives[archive] (dir NULL) */
	char *prefix; /* entry path prefix in the archive: "" or ending in '/' */
	int listed;   /* a listed dataset's archive: files named "<name>/<rel>", as its folder's */
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

/* ---- voc.c */

/* Where a root's file is, for messages: a path, or "archive:entry". */
char *voc_file_where(const voc_dataset *d, const struct root *rt, const char *rel);
/* The file's path as the records name it: "<root name>/<rel>" (for a VOC archive, the
 * entry path), so a tree and an archive of it give identical records. */
char *voc_file_meta(const struct root *rt, const char *rel);
/* Adds a root: on disk (dir) or in archive number `archive` under prefix. */
int voc_add_root(voc_dataset *d, const char *name, const char *dir, int archive, const char *prefix);
/* Adds the ids of a split list (first token per line) as items of the last root. */
int voc_add_split(voc_dataset *d, char *text, const char *where);
/* The last path component, ignoring trailing slashes ("data/VOC2007/" -> "VOC2007"). */
char *voc_base_name(const char *path);
/* qsort order of struct item * by (root, id). */
int voc_item_cmp_id(const void *a, const void *b);

/* The annotation text of a VOC item: from the archive read at open, or from disk
 * (where: its path); *own is what to free. */
int voc_load_xml(const voc_dataset *d, const struct item *it, const char *where, char **own, const char **xml,
		 size_t *len);
/* Finds the image of a VOC item (JPEGImages/<id>.jpg, else .png, else .jpeg); reads it
 * when want_bytes. Sets *rel to its root-relative path; *own is what to free. */
int voc_load_image(const voc_dataset *d, const struct item *it, int want_bytes, char **rel, unsigned char **own,
		   const unsigned char **img, size_t *len);
/* A listed item's image (read when want_bytes); *rel is its root-relative path. */
int voc_load_listed_image(const voc_dataset *d, const struct item *it, int want_bytes, char **rel,
			  unsigned char **own, const unsigned char **img, size_t *len);

/* ---- voc_archive.c */

/* Pass 1 over an archive: its roots, their split lists and annotations. */
int voc_open_archive(voc_dataset *d, const char *path);
/* Pass 1 for a listed dataset (voc_open_listed) whose images are in an archive: its
 * root (the prefix under which the listed files are) and which of them are there. */
int voc_open_listed_archive(voc_dataset *d, const char *path);
/* Pass 2 over every archive: the compressed bytes of the items marked wanted. */
int voc_load_archive_images(voc_dataset *d);

#endif
