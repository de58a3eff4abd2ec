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
#include "input_limits.h"

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
	if (w < 1 || h < 1)
		return err_set("bad image size %ldx%ld", w, h);
	size_t max = limit_get(LIMIT_PIXELS);
	if ((size_t)w > max / (size_t)h)
		return err_set("bad image size %ldx%ld (over %zu pixels; see %s)", w, h, max, limit_var(LIMIT_PIXELS));
	return 0;
}

/* A header may claim far more pixels than its file can encode; the caller would then
 * allocate the claimed image before the decoder finds out. These bounds come from the
 * formats: zlib inflates at most 1032 bytes per input byte (a 258-byte match in 2
 * bits), and a sequential Huffman-coded JPEG spends at least 2 bits on each 8x8 block
 * of each component (a DC code and an end-of-block code, each at least 1 bit). A
 * progressive or arithmetic-coded JPEG has no such bound: only the pixel limit holds it. */
#define INFLATE_MAX_RATIO 1032

static int too_small_for(size_t len, size_t need, const char *fmt, long w, long h)
{
	if (need <= len)
		return 0;
	return err_set("corrupt %s: %ldx%ld pixels cannot fit in %zu bytes (at least %zu needed)", fmt, w, h, len,
		       need);
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
		if (rc == 0 && !cinfo.progressive_mode && !cinfo.arith_code) {
			size_t blocks = 0;
			for (int c = 0; c < cinfo.num_components; c++)
				blocks += (size_t)cinfo.comp_info[c].width_in_blocks * cinfo.comp_info[c].height_in_blocks;
			rc = too_small_for(len, blocks / 4, "JPEG", (long)cinfo.image_width, (long)cinfo.image_height);
		}
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
	if (len < 29 || memcmp(buf + 12, "IHDR", 4)) /* signature, chunk length and type, 13 bytes of IHDR */
		return err_set("corrupt PNG: no IHDR chunk");
	uint32_t w = (uint32_t)buf[16] << 24 | (uint32_t)buf[17] << 16 | (uint32_t)buf[18] << 8 | buf[19];
	uint32_t h = (uint32_t)buf[20] << 24 | (uint32_t)buf[21] << 16 | (uint32_t)buf[22] << 8 | buf[23];
	if (w > 1u << 30 || h > 1u << 30)
		return err_set("bad PNG size %ux%u", w, h);
	if (check_dims((long)w, (long)h) < 0)
		return err_wrap("PNG");
	/* the smallest filtered image data these dimensions need: a filter byte and the
	 * packed samples per row (bits per pixel from IHDR's depth and colour type) */
	static const int channels[7] = {1, 0, 3, 1, 2, 0, 4};
	unsigned depth = buf[24], color = buf[25];
	unsigned bpp = depth * (color < 7 && channels[color] ? channels[color] : 1);
	uint64_t row = 1 + ((uint64_t)w * (bpp ? bpp : 1) + 7) / 8;
	uint64_t room = (uint64_t)len * INFLATE_MAX_RATIO;
	if (row > room / h)
		return too_small_for(len, (size_t)((row * h + INFLATE_MAX_RATIO - 1) / INFLATE_MAX_RATIO), "PNG",
				     (long)w, (long)h);
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
