#include "core/array.h"

#include <stdlib.h>

#include "core/err.h"

int array_grow(void *p, long *cap, long need, size_t elem)
{
	if (need <= *cap)
		return 0;
	long n = *cap ? *cap : 16;
	while (n < need)
		n *= 2;
	void *q = realloc(*(void **)p, (size_t)n * elem);
	if (!q)
		return err_set("out of memory");
	*(void **)p = q;
	*cap = n;
	return 0;
}
