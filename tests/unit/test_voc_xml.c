/* Unit tests of lib/data/voc_xml.c: annotation XML as mmdet reads it, and the box checks.
 * The tool-level behaviour is in tests/bats/voc-decode.bats. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "data/voc_xml.h"

static voc_classes *three(void)
{
	voc_classes *c = calloc(1, sizeof *c);
	static const char *names[] = {"RBC", "WBC", "Platelets"};
	c->n = 3;
	c->names = calloc(3, sizeof *c->names);
	for (int i = 0; i < 3; i++)
		c->names[i] = strdup(names[i]);
	return c;
}

static int parse(const char *xml, const voc_classes *c, voc_annotation *a)
{
	return voc_parse_xml(xml, strlen(xml), c, a);
}

static void test_xml(void)
{
	voc_classes *c = three();
	voc_annotation a;

	/* mmdet 2.x: int(float(text)), no -1 shift; missing difficult = 0; blanks around text */
	CHECK(parse("<annotation><size><width>640</width><height> 480 </height></size>"
		    "<object><name> WBC </name><bndbox><xmin>1.9</xmin><ymin>-0.7</ymin><xmax>10.0</xmax>"
		    "<ymax>\n 20.5\n</ymax></bndbox></object>"
		    "<object><name>RBC</name><difficult>1</difficult><bndbox><xmin>0</xmin><ymin>0</ymin>"
		    "<xmax>640</xmax><ymax>480</ymax></bndbox></object></annotation>",
		    c, &a) == 0);
	CHECK(a.width == 640 && a.height == 480 && a.nobj == 2);
	CHECK(a.obj[0].label == 1 && a.obj[0].difficult == 0);
	CHECK(a.obj[0].box[0] == 1 && a.obj[0].box[1] == 0 && a.obj[0].box[2] == 10 && a.obj[0].box[3] == 20);
	CHECK(a.obj[1].label == 0 && a.obj[1].difficult == 1 && a.obj[1].box[3] == 480);
	CHECK(voc_check_boxes(&a, 640, 480) == 0);
	CHECK(voc_check_boxes(&a, 639, 480) < 0 && strstr(err_msg(), "object 2") && strstr(err_msg(), "outside"));
	voc_annotation_clear(&a);

	/* VOC2012 <part> children of an object have their own name and bndbox: ignored */
	CHECK(parse("<annotation><object><name>RBC</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax>"
		    "<ymax>4</ymax></bndbox><part><name>head</name><bndbox><xmin>9</xmin><ymin>9</ymin>"
		    "<xmax>99</xmax><ymax>99</ymax></bndbox></part></object></annotation>",
		    c, &a) == 0);
	CHECK(a.nobj == 1 && a.obj[0].box[2] == 3 && a.width == 0);
	voc_annotation_clear(&a);

	/* a refused root element that ends at once: the end handler ran with depth 0 and
	 * read tags[-1] (found by fuzz/fuzz_voc_xml.c; the sanitizer build catches it) */
	CHECK(parse("<ai/>poni<theightf", c, &a) < 0 && strstr(err_msg(), "root element is <ai>"));
	voc_annotation_clear(&a);

	/* no objects is fine */
	CHECK(parse("<?xml version=\"1.0\"?>\n<annotation><filename>x.jpg</filename></annotation>", c, &a) == 0);
	CHECK(a.nobj == 0);
	voc_annotation_clear(&a);

	/* a box the way round: min > max; zero area is legal */
	CHECK(parse("<annotation><object><name>RBC</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>5</xmax>"
		    "<ymax>5</ymax></bndbox></object><object><name>RBC</name><bndbox><xmin>6</xmin><ymin>5</ymin>"
		    "<xmax>5</xmax><ymax>9</ymax></bndbox></object></annotation>",
		    c, &a) == 0);
	CHECK(voc_check_boxes(&a, 10, 10) < 0 && strstr(err_msg(), "object 2") && strstr(err_msg(), "min > max"));
	voc_annotation_clear(&a);

	static const struct {
		const char *xml, *why;
	} bad[] = {
		{"<annotation><object><name>RBC</name>", "malformed XML"},
		{"<annotation></annotatio>", "malformed XML"},
		{"", "malformed XML"},
		{"<voc><object/></voc>", "not <annotation>"},
		{"<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
		 "</bndbox></object></annotation>",
		 "unknown class 'dog'"},
		{"<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>"
		 "</object></annotation>",
		 "no <name>"},
		{"<annotation><object><name>RBC</name></object></annotation>", "no <bndbox>"},
		{"<annotation><object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><ymax>2</ymax></bndbox>"
		 "</object></annotation>",
		 "no <xmax>"},
		{"<annotation><object><name>RBC</name><bndbox><xmin>1e</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
		 "</bndbox></object></annotation>",
		 "bad <xmin>"},
		{"<annotation><object><name>RBC</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
		 "</bndbox></object></annotation>",
		 "bad <xmin>"},
		{"<annotation><object><name>RBC</name><difficult>yes</difficult></object></annotation>",
		 "bad <difficult>"},
		{"<annotation><size><width>6.5</width></size></annotation>", "bad <width>"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int rc = parse(bad[i].xml, c, &a);
		CHECK_MSG(rc < 0 && strstr(err_msg(), bad[i].why), "case %zu: rc %d, '%s' (want '%s')", i, rc, err_msg(),
			  bad[i].why);
		voc_annotation_clear(&a);
	}
	voc_classes_free(c);
}

int main(void)
{
	test_xml();
	return check_done("test_voc_xml");
}
