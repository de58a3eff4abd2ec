/* voc_xml: one Pascal VOC annotation (Annotations/<id>.xml) read as mmdetection 2.x's
 * XMLDataset reads it: coordinates are int(float(text)) with no -1 shift, a missing
 * <difficult> is 0, label = index of the class name in the class list. Only the elements
 * at their VOC places are read (<annotation><size>, <annotation><object>...), so the
 * <name> and <bndbox> of a VOC2012 <part> are ignored. Parsed with expat. */
#ifndef VOC_XML_H
#define VOC_XML_H

#include <stddef.h>

#include "data/classes.h"

typedef struct voc_object {
	int label;
	int difficult;  /* 0 or 1 */
	int box[4];     /* xmin, ymin, xmax, ymax */
} voc_object;

typedef struct voc_annotation {
	int width, height; /* from <size>; 0 when absent */
	int nobj;
	voc_object *obj;
} voc_annotation;

/* Parses one annotation. -1 (err) on malformed XML, a missing or non-numeric field,
 * or a class name not in c. Free with voc_annotation_clear() (also after a failure). */
int voc_parse_xml(const char *xml, size_t len, const voc_classes *c, voc_annotation *out);
void voc_annotation_clear(voc_annotation *a);
/* Every box inside a width x height image with min <= max (zero area is legal). */
int voc_check_boxes(const voc_annotation *a, int width, int height);

#endif
