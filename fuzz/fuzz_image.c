/* Fuzzes JPEG and PNG decoding (lib/data/image.c) the way voc-decode does it: the size from
 * the header, a buffer of 3 x width x height, then the decode into it. */
#include <stdint.h>
#include <stdlib.h>

#include "data/image.h"
#include "core/input_limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int w, h;
	if (image_size(data, size, &w, &h) < 0)
		return 0;
	if (w < 1 || h < 1 || (size_t)w > limit_get(LIMIT_PIXELS) / (size_t)h)
		abort(); /* image_size must enforce its own limits */
	unsigned char *chw = malloc((size_t)3 * w * h);
	if (!chw)
		return 0;
	image_decode_chw(data, size, chw, w, h);
	free(chw);
	return 0;
}
