/* coco: COCO instance annotations (instances_*.json, as COCO, CVAT, Label Studio or
 * Roboflow export them) read with cJSON into flat arrays, as pycocotools' COCO() and
 * mmdetection 2.x's CocoDataset see them.
 *
 * Kept: images (id, file_name, width, height) in file order; annotations (id, image_id,
 * category_id, bbox [x, y, w, h], area, iscrowd) grouped by image, file order within an
 * image (pycocotools' imgToAnns); categories (id, name) sorted by id, each with its
 * position in the file (which labels follow). Segmentations
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
	int file_pos; /* its position in the file's "categories" */
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

/* Labels are mmdetection 2.x's cat2label: cat_ids = getCatIds(catNms=CLASSES), which
 * lists the categories named in the class list in the FILE's category order, whatever
 * the list's order; label = position in cat_ids. So a list ordered unlike the file
 * gives labels in the file's order (coco_label_names says which name each has).
 *
 * The class list of a set: its category names in the file's order (mmdet's CLASSES
 * when none is given, as on COCO itself, where file order is id order). NULL (err). */
voc_classes *coco_classes(const coco_set *s);
/* label[categories]: each category's label, or -1 when classes leaves it out (its
 * annotations are not used, as mmdet's cat_ids filter); classes NULL: every category.
 * A class name no category has, or two categories have, fails (err). Free the result. */
int *coco_labels(const coco_set *s, const voc_classes *classes);
/* The names of the labels (the categories' own) in label order. NULL (err). */
voc_classes *coco_label_names(const coco_set *s, const int *label);

/* ---- as a dataset (mmdetection 2.x's CocoDataset) ----
 * Every image in file order, but (mmdet's _filter_imgs, which mmdet runs on training
 * sets) with filter_empty_gt only those with an annotation of a labelled category (any:
 * crowds and boxes dropped below count), and only those whose width and height in the
 * file are both at least min_size (mmdet: 32; 0 keeps all). Its annotations as mmdet's
 * _parse_ann_info keeps them: categories without a label skipped, w < 1, h < 1 or
 * area <= 0 dropped, bbox [x, y, w, h] -> [x, y, x + w, y + h] (float32 of the double
 * sums), iscrowd ones kept with their label and the ignore mask set. A box reaching
 * more than one pixel outside its image makes that image bad (mmdet would keep it if
 * it overlaps the image at all; here an export that bad is reported), as does a box
 * reaching less far in but not overlapping the image. Record ids are the image ids in
 * decimal; label gives the labels (coco_labels). NULL (err). */
voc_dataset *coco_dataset(const coco_set *s, const int *label, const char *img_prefix, int filter_empty_gt,
			  int min_size);

#endif
