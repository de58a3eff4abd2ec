/* Unit tests of lib/voc (annotation XML, boxes, class lists, shuffling) and lib/image
 * (format sniffing, damaged input). The tool-level behaviour is in tests/bats. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "data/image.h"
#include "data/voc.h"

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

static void test_classes(void)
{
	voc_classes *c = voc_classes_default();
	CHECK(c && c->n == 20);
	CHECK(voc_class_index(c, "aeroplane") == 0 && voc_class_index(c, "person") == 14);
	CHECK(voc_class_index(c, "tvmonitor") == 19 && voc_class_index(c, "RBC") == -1);
	voc_classes_free(c);
	voc_classes_free(NULL);
	CHECK(voc_classes_load("/nonexistent/classes") == NULL && strstr(err_msg(), "/nonexistent/classes"));
}

static void test_shuffle(void)
{
	/* splitmix64 from state 0: the published first outputs */
	uint64_t st = 0;
	CHECK(voc_splitmix64(&st) == 0xe220a8397b1dcdafull);
	CHECK(voc_splitmix64(&st) == 0x6e789e6aa1b965f4ull);

	enum { N = 101 };
	long a[N], b[N];
	int seen[N] = {0};
	for (int i = 0; i < N; i++)
		a[i] = b[i] = i;
	voc_shuffle(a, N, 42);
	voc_shuffle(b, N, 42);
	CHECK(memcmp(a, b, sizeof a) == 0);
	int moved = 0;
	for (int i = 0; i < N; i++) {
		seen[a[i]]++;
		moved += a[i] != i;
	}
	int perm = 1;
	for (int i = 0; i < N; i++)
		perm &= seen[i] == 1;
	CHECK(perm);
	CHECK(moved > N / 2);
	for (int i = 0; i < N; i++)
		b[i] = i;
	voc_shuffle(b, N, 43);
	CHECK(memcmp(a, b, sizeof a) != 0);
	CHECK(voc_epoch_seed(1, 0) != voc_epoch_seed(1, 1) && voc_epoch_seed(1, 0) != voc_epoch_seed(2, 0));
	CHECK(voc_epoch_seed(7, 3) == voc_epoch_seed(7, 3));
	/* n = 0 and 1 are no-ops */
	long one = 5;
	voc_shuffle(&one, 1, 9);
	voc_shuffle(NULL, 0, 9);
	CHECK(one == 5);

	/* every position is roughly equally likely for the first element */
	int count[4] = {0};
	for (uint64_t s = 0; s < 4000; s++) {
		long v[4] = {0, 1, 2, 3};
		voc_shuffle(v, 4, s);
		count[v[0]]++;
	}
	for (int i = 0; i < 4; i++)
		CHECK_MSG(count[i] > 850 && count[i] < 1150, "first = %d: %d of 4000", i, count[i]);
}

static void test_image(void)
{
	static const unsigned char png_sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	static const unsigned char jpeg_soi[] = {0xff, 0xd8, 0xff, 0xe0};
	CHECK(image_sniff(png_sig, sizeof png_sig) == IMAGE_PNG);
	CHECK(image_sniff(jpeg_soi, sizeof jpeg_soi) == IMAGE_JPEG);
	CHECK(image_sniff("GIF89a", 6) == IMAGE_UNKNOWN);
	int w, h;
	CHECK(image_size("GIF89a", 6, &w, &h) < 0 && strstr(err_msg(), "not a JPEG or PNG"));
	CHECK(image_size("", 0, &w, &h) < 0 && strstr(err_msg(), "empty"));
	/* headers cut short at every length: an error, never a crash */
	int all_failed = 1;
	for (size_t n = 0; n <= sizeof jpeg_soi; n++)
		all_failed &= image_size(jpeg_soi, n, &w, &h) < 0;
	for (size_t n = 0; n <= sizeof png_sig; n++)
		all_failed &= image_size(png_sig, n, &w, &h) < 0;
	CHECK(all_failed);
	/* a PNG header claiming 2^31 x 1 pixels */
	unsigned char big[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
				 0x80, 0, 0, 0, 0, 0, 0, 1, 8, 2, 0, 0, 0};
	CHECK(image_size(big, sizeof big, &w, &h) < 0);
	/* a valid-looking IHDR but no image data */
	unsigned char tiny[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
				  0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0, 0, 0};
	unsigned char chw[12];
	CHECK(image_size(tiny, sizeof tiny, &w, &h) == 0 && w == 2 && h == 2);
	CHECK(image_decode_chw(tiny, sizeof tiny, chw, 2, 2) < 0 && strstr(err_msg(), "corrupt PNG"));
}

int main(void)
{
	test_xml();
	test_classes();
	test_shuffle();
	test_image();
	return check_done("test_voc");
}
