/* Unit tests of lib/data/classes.c: the VOC class list and class files. */
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "data/classes.h"

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

int main(void)
{
	test_classes();
	return check_done("test_classes");
}
