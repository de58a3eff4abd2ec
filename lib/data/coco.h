/* coco: COCO instance annotations (instances_*.json, as COCO, CVAT, Label Studio or
 * Roboflow export them) read with cJSON into flat arrays, as pycocotools' COCO() and
 * mmdetection 2.x's CocoDataset see them.
 *
 * Kept: images (id, file_name, width, height) in file order; annotations (id, image_id,
 * category_id, bbox [x, y, w, h], area, iscrowd) grouped by image, file order within an
 * image (pycocotools' imgToAnns); categories (id, name) sorted by id. Segmentations
 * are never parsed: their values are blanked in the text before cJSON sees it, which
 * keeps COCO's own 448 MB instances_train2017.json to about 1.5 GB of memory (the
 * polygons are most of its 60 million numbers). A missing "area" is w * h, a missing
 * "iscrowd" is 0.
 *
 * Whole-file errors (err, with the file's name): malformed JSON (line and column of
 * where cJSON stopped), a missing or mistyped field, duplicate image, annotation or
 * category ids, an annotation of an unknown image or unknown category. */
#ifndef COCO_H
#define COCO_H

#include <stdint.h>

#include "data/classes.h"
#include "data/voc.h"

typedef struct coco_image {
	int64_t id;
	char *file_name;
	int width, height;
	long first_ann, nanns; /* its annotations: anns[first_ann .. first_ann + nanns) */
} coco_image;

typedef struct coco_ann {
	int64_t id;
	long image;     /* index into images */
	int category;   /* index into categories */
	double bbox[4]; /* x, y, w, h */
	double area;
	int iscrowd;
} coco_ann;

typedef struct coco_category {
	int64_t id;
	char *name;
} coco_category;

typedef struct coco_set {
	char *where; /* the file, for messages */
	long nimages, nanns;
	int ncategories;
	coco_image *images;
	coco_ann *anns;
	coco_category *categories;
} coco_set;

/* Reads and checks an annotation file. NULL (err) on failure. */
coco_set *coco_load(const char *path);
/* The same from text (modified in place: segmentations blanked); where names it in
 * messages. */
coco_set *coco_parse(char *text, size_t len, const char *where);
void coco_free(coco_set *s);

/* Index of the image with this id, or -1. */
long coco_image_index(const coco_set *s, int64_t id);

/* The class list of a set: its category names in id order (mmdet's CLASSES when none
 * is given). NULL (err). */
voc_classes *coco_classes(const coco_set *s);
/* label[categories]: each category's label, its index in classes, or -1 when classes
 * leaves it out (its annotations are not used, as mmdet's cat_ids filter). A class name
 * no category has fails (err). Free the result. */
int *coco_labels(const coco_set *s, const voc_classes *classes);

#endif

/* ---- as a dataset (mmdetection 2.x's CocoDataset) ----
 * Every image in file order (filter_empty_gt: only those with an annotation of a
 * labelled category, mmdet's training filter), its annotations as mmdet's
 * _parse_ann_info keeps them: categories without a label skipped, w < 1, h < 1 or
 * area <= 0 dropped, bbox [x, y, w, h] -> [x, y, x + w, y + h] (float32 of the double
 * sums), iscrowd ones kept with their label and the ignore mask set. A box reaching
 * more than one pixel outside its image makes that image bad (mmdet would keep it if
 * it overlaps the image at all; here an export that bad is reported), as does a box
 * reaching less far in but not overlapping the image. Record ids are the image ids in
 * decimal; classes gives the labels (coco_labels). NULL (err). */
voc_dataset *coco_dataset(const coco_set *s, const int *label, const char *img_prefix, int filter_empty_gt);
