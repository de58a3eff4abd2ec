#include "image.h"

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "err.h"

static const unsigned char PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

enum image_format image_sniff(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
		return IMAGE_JPEG;
	if (len >= 8 && !memcmp(p, PNG_SIG, 8))
		return IMAGE_PNG;
	return IMAGE_UNKNOWN;
}

const char *image_format_name(enum image_format f)
{
	return f == IMAGE_JPEG ? "JPEG" : f == IMAGE_PNG ? "PNG" : "unknown";
}

static int check_dims(long w, long h)
{
	if (w < 1 || h < 1 || (size_t)w * (size_t)h > IMAGE_MAX_PIXELS)
		return err_set("bad image size %ldx%ld", w, h);
	return 0;
}

/* ---------------------------------------------------------------- JPEG */

struct jpeg_fail {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	char msg[JMSG_LENGTH_MAX];
};

static void jpeg_fail_exit(j_common_ptr c)
{
	struct jpeg_fail *f = (struct jpeg_fail *)c->err;
	c->err->format_message(c, f->msg);
	longjmp(f->jb, 1);
}

/* libjpeg reports damaged data (premature end, bad Huffman code, junk before a
 * marker, ...) as a warning and goes on with a grey or garbled picture. A training set
 * should not silently contain that, so every warning is an error except the two that
 * say nothing about the pixels. Trace messages (level >= 0) are ignored. */
static void jpeg_fail_message(j_common_ptr c, int level)
{
	if (level >= 0)
		return;
	int code = c->err->msg_code;
	if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM)
		return;
	jpeg_fail_exit(c);
}

/* Each pixel row of planes R, G, B from a row of n interleaved samples. */
static void scatter_rgb(unsigned char *chw, size_t plane, int y, int w, const unsigned char *row)
{
	unsigned char *r = chw + (size_t)y * w, *g = r + plane, *b = g + plane;
	for (int x = 0; x < w; x++) {
		r[x] = row[3 * x];
		g[x] = row[3 * x + 1];
		b[x] = row[3 * x + 2];
	}
}

static unsigned char mul255(unsigned a, unsigned b)
{
	return (unsigned char)((a * b + 127) / 255);
}

/* CMYK rows: Adobe files store the inks inverted (0 = full ink), others do not. */
static void scatter_cmyk(unsigned char *chw, size_t plane, int y, int w, const unsigned char *row, int inverted)
{
	unsigned char *r = chw + (size_t)y * w, *g = r + plane, *b = g + plane;
	for (int x = 0; x < w; x++) {
		const unsigned char *p = row + 4 * x;
		unsigned c = p[0], m = p[1], ye = p[2], k = p[3];
		if (!inverted) {
			c = 255 - c;
			m = 255 - m;
			ye = 255 - ye;
			k = 255 - k;
		}
		r[x] = mul255(c, k);
		g[x] = mul255(m, k);
		b[x] = mul255(ye, k);
	}
}

/* Reads the header (chw NULL) or the whole image into chw. */
static int jpeg_run(const unsigned char *buf, size_t len, unsigned char *chw, int *width, int *height)
{
	struct jpeg_decompress_struct cinfo;
	struct jpeg_fail fail;
	unsigned char *volatile row = NULL;

	cinfo.err = jpeg_std_error(&fail.pub);
	fail.pub.error_exit = jpeg_fail_exit;
	fail.pub.emit_message = jpeg_fail_message;
	if (setjmp(fail.jb)) {
		jpeg_destroy_decompress(&cinfo);
		free(row);
		return err_set("corrupt JPEG: %s", fail.msg);
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, buf, (unsigned long)len);
	jpeg_read_header(&cinfo, TRUE);
	if (!chw) {
		int rc = check_dims(cinfo.image_width, cinfo.image_height);
		*width = (int)cinfo.image_width;
		*height = (int)cinfo.image_height;
		jpeg_destroy_decompress(&cinfo);
		return rc;
	}
	int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
	cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
	jpeg_start_decompress(&cinfo);
	int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
	if (w != *width || h != *height || cinfo.output_components != (cmyk ? 4 : 3)) {
		jpeg_destroy_decompress(&cinfo);
		return err_set("JPEG size changed between header and decode");
	}
	row = malloc((size_t)w * cinfo.output_components);
	if (!row) {
		jpeg_destroy_decompress(&cinfo);
		return err_set("out of memory");
	}
	size_t plane = (size_t)w * h;
	while (cinfo.output_scanline < cinfo.output_height) {
		int y = (int)cinfo.output_scanline;
		JSAMPROW rows[1] = {row};
		if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
			free(row);
			jpeg_destroy_decompress(&cinfo);
			return err_set("corrupt JPEG: decoder stopped at row %d", y);
		}
		if (cmyk)
			scatter_cmyk(chw, plane, y, w, row, cinfo.saw_Adobe_marker);
		else
			scatter_rgb(chw, plane, y, w, row);
	}
	jpeg_finish_decompress(&cinfo);
	jpeg_destroy_decompress(&cinfo);
	free(row);
	return 0;
}

/* ---------------------------------------------------------------- PNG */

struct png_src {
	const unsigned char *p;
	size_t len, pos;
	jmp_buf jb;
	char msg[200];
};

static void png_fail(png_structp png, png_const_charp msg)
{
	struct png_src *s = png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	longjmp(s->jb, 1);
}

static void png_note(png_structp png, png_const_charp msg)
{
}

static void png_take(png_structp png, png_bytep out, size_t n)
{
	struct png_src *s = png_get_io_ptr(png);
	if (n > s->len - s->pos)
		png_error(png, "truncated file");
	memcpy(out, s->p + s->pos, n);
	s->pos += n;
}

/* The IHDR chunk must come first, so the size needs no libpng. */
static int png_header(const unsigned char *buf, size_t len, int *width, int *height)
{
	if (len < 24 || memcmp(buf + 12, "IHDR", 4))
		return err_set("corrupt PNG: no IHDR chunk");
	uint32_t w = (uint32_t)buf[16] << 24 | (uint32_t)buf[17] << 16 | (uint32_t)buf[18] << 8 | buf[19];
	uint32_t h = (uint32_t)buf[20] << 24 | (uint32_t)buf[21] << 16 | (uint32_t)buf[22] << 8 | buf[23];
	if (w > 1u << 30 || h > 1u << 30 || check_dims((long)w, (long)h) < 0)
		return err_set("bad PNG size %ux%u", w, h);
	*width = (int)w;
	*height = (int)h;
	return 0;
}

static int png_run(const unsigned char *buf, size_t len, unsigned char *chw, int width, int height)
{
	struct png_src src = {.p = buf, .len = len};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_note);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	unsigned char *volatile hwc = NULL;
	png_bytep *volatile rows = NULL;
	if (!info) {
		png_destroy_read_struct(&png, NULL, NULL);
		return err_set("out of memory");
	}
	if (setjmp(src.jb)) {
		png_destroy_read_struct(&png, &info, NULL);
		free(hwc);
		free(rows);
		return err_set("corrupt PNG: %s", src.msg);
	}
	png_set_read_fn(png, &src, png_take);
	png_set_user_limits(png, 1u << 30, 1u << 30);
	png_read_info(png, info);
	png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
	if ((int)w != width || (int)h != height)
		png_error(png, "size differs from IHDR");
	int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
	if (color == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(png);
	if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
		png_set_expand_gray_1_2_4_to_8(png);
	if (depth == 16)
		png_set_strip_16(png);
	if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
		png_set_gray_to_rgb(png);
	/* alpha from the colour type, or from a tRNS chunk expanded along with a palette */
	png_set_strip_alpha(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);
	if (png_get_channels(png, info) != 3 || png_get_rowbytes(png, info) != (size_t)w * 3)
		png_error(png, "unexpected row layout after expansion");
	hwc = malloc((size_t)w * h * 3);
	rows = malloc(h * sizeof *rows);
	if (!hwc || !rows)
		png_error(png, "out of memory");
	for (png_uint_32 y = 0; y < h; y++)
		rows[y] = hwc + (size_t)y * w * 3;
	png_read_image(png, rows);
	png_read_end(png, NULL);
	size_t plane = (size_t)w * h;
	for (png_uint_32 y = 0; y < h; y++)
		scatter_rgb(chw, plane, (int)y, (int)w, rows[y]);
	png_destroy_read_struct(&png, &info, NULL);
	free(hwc);
	free(rows);
	return 0;
}

/* ---------------------------------------------------------------- API */

int image_size(const void *buf, size_t len, int *width, int *height)
{
	switch (image_sniff(buf, len)) {
	case IMAGE_JPEG:
		return jpeg_run(buf, len, NULL, width, height);
	case IMAGE_PNG:
		return png_header(buf, len, width, height);
	default:
		return err_set(len ? "not a JPEG or PNG image" : "empty image file");
	}
}

int image_decode_chw(const void *buf, size_t len, unsigned char *chw, int width, int height)
{
	switch (image_sniff(buf, len)) {
	case IMAGE_JPEG:
		return jpeg_run(buf, len, chw, &width, &height);
	case IMAGE_PNG:
		return png_run(buf, len, chw, width, height);
	default:
		return err_set(len ? "not a JPEG or PNG image" : "empty image file");
	}
}

/* ---------------------------------------------------------------- encoding */

int image_write_jpeg(FILE *f, const unsigned char *rgb, size_t stride, int width, int height, int quality)
{
	struct jpeg_compress_struct cinfo;
	struct jpeg_fail fail;
	cinfo.err = jpeg_std_error(&fail.pub);
	fail.pub.error_exit = jpeg_fail_exit;
	if (setjmp(fail.jb)) {
		jpeg_destroy_compress(&cinfo);
		return err_set("JPEG encoding: %s", fail.msg);
	}
	jpeg_create_compress(&cinfo);
	jpeg_stdio_dest(&cinfo, f);
	cinfo.image_width = (JDIMENSION)width;
	cinfo.image_height = (JDIMENSION)height;
	cinfo.input_components = 3;
	cinfo.in_color_space = JCS_RGB;
	jpeg_set_defaults(&cinfo);
	jpeg_set_quality(&cinfo, quality, TRUE);
	jpeg_start_compress(&cinfo, TRUE);
	while (cinfo.next_scanline < cinfo.image_height) {
		JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * stride);
		jpeg_write_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_compress(&cinfo);
	jpeg_destroy_compress(&cinfo);
	return ferror(f) ? err_set("write error") : 0;
}

struct png_sink {
	jmp_buf jb;
	char msg[200];
};

static void png_sink_fail(png_structp png, png_const_charp msg)
{
	struct png_sink *s = png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	longjmp(s->jb, 1);
}

int image_write_png(FILE *f, const unsigned char *rgb, size_t stride, int width, int height)
{
	struct png_sink sink;
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_sink_fail, png_note);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	if (!info) {
		png_destroy_write_struct(&png, NULL);
		return err_set("out of memory");
	}
	if (setjmp(sink.jb)) {
		png_destroy_write_struct(&png, &info);
		return err_set("PNG encoding: %s", sink.msg);
	}
	png_init_io(png, f);
	png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	for (int y = 0; y < height; y++)
		png_write_row(png, (png_const_bytep)(rgb + (size_t)y * stride));
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	return ferror(f) ? err_set("write error") : 0;
}
