/* Unit tests of lib/core/str.c: formatted and copied strings, suffix tests. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/str.h"

static void test_str(void)
{
	char *s = str_printf("%s/%s.%d", "JPEGImages", "BloodImage_00007", 3);
	CHECK(s && !strcmp(s, "JPEGImages/BloodImage_00007.3"));
	free(s);
	s = str_printf("%s", "");
	CHECK(s && s[0] == 0);
	free(s);
	s = str_dup("root");
	CHECK(s && !strcmp(s, "root"));
	free(s);

	CHECK(ends_with("backbone.bn.num_batches_tracked", ".num_batches_tracked"));
	CHECK(ends_with(".num_batches_tracked", ".num_batches_tracked")); /* the whole string counts */
	CHECK(!ends_with("num_batches_tracked", ".num_batches_tracked"));
	CHECK(!ends_with("a.running_mean.x", ".running_mean"));
	CHECK(ends_with("anything", ""));
	CHECK(!ends_with("photo.JPG", ".jpg"));
	CHECK(ends_with_nocase("photo.JPG", ".jpg") && ends_with_nocase("x.Tar.Gz", ".tar.gz"));
	CHECK(!ends_with_nocase("photo.jpg.txt", ".jpg") && !ends_with_nocase("jpg", ".jpg"));
}

int main(void)
{
	test_str();
	return check_done("test_str");
}
