/* image: JPEG (libjpeg-turbo) and PNG (libpng) decoding from memory into u8 RGB, CHW.
 *
 * The format is found from the first bytes, not from a file name. Every JPEG colour
 * space becomes RGB (grayscale replicated, CMYK/YCCK converted); PNG palette, gray,
 * 16-bit and alpha are expanded to 8-bit RGB and alpha is dropped. A corrupt or
 * truncated file is an error (err), never an exit: libjpeg's corrupt-data warnings
 * (premature end, bad Huffman code, ...) count as errors too. Thread-safe. */
#ifndef IMAGE_H
#define IMAGE_H

#include <stddef.h>

enum image_format { IMAGE_UNKNOWN, IMAGE_JPEG, IMAGE_PNG };


enum image_format image_sniff(const void *buf, size_t len);
const char *image_format_name(enum image_format f);

/* Reads the header only: sets *width and *height. 0, or -1 (err) when the header is
 * corrupt, claims more pixels than TNS_MAX_PIXELS (input_limits.h), or claims more than
 * the file's bytes can encode (PNG; sequential JPEG), so that no caller allocates for
 * an image the file cannot hold. */
int image_size(const void *buf, size_t len, int *width, int *height);

/* Decodes into chw, which holds 3 * width * height bytes (planes R, G, B), where
 * width and height are what image_size() reported. 0, or -1 (err). */
int image_decode_chw(const void *buf, size_t len, unsigned char *chw, int width, int height);

#endif
