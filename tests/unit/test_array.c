/* Unit tests of lib/core/array.c: growing by doubling, contents kept. */
#include <stdlib.h>

#include "check.h"
#include "core/array.h"

static void test_grow(void)
{
	int *v = NULL;
	long cap = 0;
	CHECK(array_grow(&v, &cap, 1, sizeof *v) == 0 && v && cap == 16);
	for (int i = 0; i < 16; i++)
		v[i] = i;
	int *before = v;
	CHECK(array_grow(&v, &cap, 16, sizeof *v) == 0 && v == before && cap == 16); /* enough: untouched */
	CHECK(array_grow(&v, &cap, 17, sizeof *v) == 0 && cap == 32);
	CHECK(array_grow(&v, &cap, 1000, sizeof *v) == 0 && cap == 1024);
	int kept = 1;
	for (int i = 0; i < 16; i++)
		kept &= v[i] == i;
	CHECK(kept);
	v[999] = 7; /* the new room is there (ASan would see otherwise) */
	CHECK(v[999] == 7);
	free(v);
}

int main(void)
{
	test_grow();
	return check_done("test_array");
}
