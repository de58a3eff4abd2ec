/* classes: the class list of a dataset, whose order gives the labels (label = index of
 * the name; background is class n, left to the loss). The 20 Pascal VOC classes, or a
 * file of names one a line (configs/bccd.classes). */
#ifndef CLASSES_H
#define CLASSES_H

typedef struct voc_classes {
	int n;
	char **names;
} voc_classes;

#define VOC_NCLASSES 20
extern const char *const voc_class_names[VOC_NCLASSES];

voc_classes *voc_classes_default(void);
/* One name per line, surrounding blanks trimmed, blank lines ignored; duplicates fail. */
voc_classes *voc_classes_load(const char *path);
void voc_classes_free(voc_classes *c);
/* Index of name, or -1. */
int voc_class_index(const voc_classes *c, const char *name);

#endif
