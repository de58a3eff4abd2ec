/* image_record: the "image" record every image source makes (voc-decode, image-decode):
 * the decoded pixels and the meta that names the image, built in one place so that two
 * sources given the same file give the same bytes.
 *
 *   image  u8 [3,H,W]  RGB planes, as lib/data/image.h decodes them
 *   meta   id, root, file, width, height, index, epoch (in this order)
 *
 * A source adds its own tensors (voc: boxes, labels, difficult) between the two calls.
 * Nothing here prints or exits. */
#ifndef IMAGE_RECORD_H
#define IMAGE_RECORD_H

#include <stddef.h>

#include "core/stream.h"

/* A new "image" record holding the decoded bytes (of a JPEG or PNG file), or with
 * decode 0 none (listing: only *width and *height are read from the header). where
 * names the file in messages. *width and *height are set on success. NULL (err). */
record *image_record_new(const void *bytes, size_t len, int decode, const char *where, int *width, int *height);

/* Adds the meta members in the fixed order. -1 (err) when out of memory. */
int image_record_meta(record *r, const char *id, const char *root, const char *file, int width, int height, long index,
		      int epoch);

#endif
