/* Fuzzes VOC annotation parsing (lib/data/voc_xml.c: voc_parse_xml, voc_check_boxes) as
 * voc-decode reads an Annotations/<id>.xml, with the 20 VOC classes and BCCD's 3. */
#include <stdint.h>
#include <stdlib.h>

#include "data/voc_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *names[VOC_NCLASSES + 3] = {[VOC_NCLASSES] = "RBC", "WBC", "Platelets"};
	static voc_classes both = {VOC_NCLASSES + 3, names}, *classes = &both;
	for (int i = 0; i < VOC_NCLASSES; i++)
		names[i] = (char *)voc_class_names[i];
	voc_annotation a;
	if (voc_parse_xml((const char *)data, size, classes, &a) == 0) {
		for (int i = 0; i < a.nobj; i++)
			if (a.obj[i].label < 0 || a.obj[i].label >= classes->n || (a.obj[i].difficult & ~1))
				abort(); /* a parsed object must have a known class and a 0/1 flag */
		voc_check_boxes(&a, a.width > 0 ? a.width : 500, a.height > 0 ? a.height : 500);
	}
	voc_annotation_clear(&a);
	return 0;
}
