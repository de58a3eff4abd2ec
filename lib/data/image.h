/* image: JPEG (libjpeg-turbo) and PNG (libpng) decoding from memory into u8 RGB, CHW,
 * and encoding packed RGB rows into a file.
 *
 * The format is found from the first bytes, not from a file name. Pixels come out as
 * mmcv 1.x's imread(flag='color') gives them with OpenCV 4 (cv2.imdecode with
 * IMREAD_COLOR), checked against it by tests/gen_image_fixtures.py: every JPEG colour
 * space becomes RGB (grayscale replicated, CMYK/YCCK by OpenCV's formula), a JPEG's EXIF
 * orientation (libexif) is applied, so width and height are the upright picture's;
 * PNG palette, gray, 16-bit (high byte) and alpha are expanded to 8-bit RGB and alpha
 * is dropped. A corrupt or
 * truncated file is an error (err), never an exit: libjpeg's corrupt-data warnings
 * (premature end, bad Huffman code, ...) count as errors too. Thread-safe. */
#ifndef IMAGE_H
#define IMAGE_H

#include <stddef.h>
#include <stdio.h>

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

/* Encode height rows of width packed RGB pixels (row y at rgb + y * stride) into f:
 * baseline JPEG at quality 1..100 (4:2:0), or 8-bit RGB PNG. 0, or -1 (err). */
int image_write_jpeg(FILE *f, const unsigned char *rgb, size_t stride, int width, int height, int quality);
int image_write_png(FILE *f, const unsigned char *rgb, size_t stride, int width, int height);

#endif
