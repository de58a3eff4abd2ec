/* Fuzzes COCO instance JSON (lib/data/coco.c): parsing with the segmentations blanked, the
 * checks of images, categories and annotations, the class list, the labels and the
 * dataset built from them (mmdet's CocoDataset rules). No image is read: the dataset
 * is only built and closed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/coco.h"
#include "data/classes.h"
#include "data/voc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1); /* coco_parse blanks in place and wants a NUL */
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;
	coco_set *s = coco_parse(text, size, "fuzz.json");
	free(text);
	if (!s)
		return 0;
	voc_classes *classes = coco_classes(s);
	int *label = classes ? coco_labels(s, classes) : NULL;
	if (label) {
		voc_classes_free(coco_label_names(s, label));
		voc_close(coco_dataset(s, label, "/nonexistent", 0, 0));
		voc_close(coco_dataset(s, label, "/nonexistent", 1, 32));
	}
	free(label);
	voc_classes_free(classes);
	coco_free(s);
	return 0;
}
