#include "data/image.h"

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <libexif/exif-data.h>

#include "core/err.h"
#include "core/input_limits.h"

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

/* CMYK rows as OpenCV's JPEG decoder converts them (icvCvt_CMYK2BGR): every file is
 * taken to store its inks inverted, as Adobe's do (nearly all CMYK JPEGs), and
 * R = K - ((255 - C) * K >> 8), likewise G from M and B from Y. */
static void scatter_cmyk(unsigned char *chw, size_t plane, int y, int w, const unsigned char *row)
{
	unsigned char *r = chw + (size_t)y * w, *g = r + plane, *b = g + plane;
	for (int x = 0; x < w; x++) {
		const unsigned char *p = row + 4 * x;
		int k = p[3];
		r[x] = (unsigned char)(k - ((255 - p[0]) * k >> 8));
		g[x] = (unsigned char)(k - ((255 - p[1]) * k >> 8));
		b[x] = (unsigned char)(k - ((255 - p[2]) * k >> 8));
	}
}

/* EXIF orientation (tag 0x0112 of IFD0, 1..8) of a JPEG whose APP1 markers were saved;
 * 1 (as it is) when there is none or it cannot be read, as OpenCV does. */
static int exif_orientation(j_decompress_ptr c)
{
	for (jpeg_saved_marker_ptr m = c->marker_list; m; m = m->next) {
		if (m->marker != JPEG_APP0 + 1 || m->data_length < 6 || memcmp(m->data, "Exif\0\0", 6))
			continue;
		ExifData *ed = exif_data_new();
		if (!ed)
			return 1;
		/* read what is there: no fixing up of entries the specification wants */
		exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
		exif_data_load_data(ed, m->data, m->data_length);
		ExifEntry *e = exif_content_get_entry(ed->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
		int o = 1;
		if (e && e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->size >= 2)
			o = exif_get_short(e->data, exif_data_get_byte_order(ed));
		exif_data_unref(ed);
		return o >= 1 && o <= 8 ? o : 1;
	}
	return 1;
}

/* Turns a decoded w x h CHW image upright for EXIF orientation o (2..8) into out, as
 * OpenCV's ApplyExifOrientation: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 anticlockwise. out is h x w for
 * 5..8. */
static void orient(unsigned char *out, const unsigned char *in, int w, int h, int o)
{
	int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
	size_t plane = (size_t)w * h;
	for (int c = 0; c < 3; c++)
		for (int y = 0; y < oh; y++)
			for (int x = 0; x < ow; x++) {
				int sy, sx;
				switch (o) {
				case 2: sy = y, sx = w - 1 - x; break;
				case 3: sy = h - 1 - y, sx = w - 1 - x; break;
				case 4: sy = h - 1 - y, sx = x; break;
				case 5: sy = x, sx = y; break;
				case 6: sy = h - 1 - x, sx = y; break;
				case 7: sy = h - 1 - x, sx = w - 1 - y; break;
				default: sy = x, sx = w - 1 - y; break;
				}
				out[c * plane + (size_t)y * ow + x] = in[c * plane + (size_t)sy * w + sx];
			}
}

/* Reads the header (chw NULL) or the whole image into chw. */
static int jpeg_run(const unsigned char *buf, size_t len, unsigned char *chw, int *width, int *height)
{
	struct jpeg_decompress_struct cinfo;
	struct jpeg_fail fail;
	unsigned char *volatile row = NULL, *volatile upright = NULL;

	cinfo.err = jpeg_std_error(&fail.pub);
	fail.pub.error_exit = jpeg_fail_exit;
	fail.pub.emit_message = jpeg_fail_message;
	if (setjmp(fail.jb)) {
		jpeg_destroy_decompress(&cinfo);
		free(row);
		free(upright);
		return err_set("corrupt JPEG: %s", fail.msg);
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, buf, (unsigned long)len);
	jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
	jpeg_read_header(&cinfo, TRUE);
	int o = exif_orientation(&cinfo), turned = o >= 5;
	if (!chw) {
		int rc = check_dims(cinfo.image_width, cinfo.image_height);
		if (rc == 0 && !cinfo.progressive_mode && !cinfo.arith_code) {
			size_t blocks = 0;
			for (int c = 0; c < cinfo.num_components; c++)
				blocks += (size_t)cinfo.comp_info[c].width_in_blocks * cinfo.comp_info[c].height_in_blocks;
			rc = too_small_for(len, blocks / 4, "JPEG", (long)cinfo.image_width, (long)cinfo.image_height);
		}
		*width = (int)(turned ? cinfo.image_height : cinfo.image_width);
		*height = (int)(turned ? cinfo.image_width : cinfo.image_height);
		jpeg_destroy_decompress(&cinfo);
		return rc;
	}
	int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
	cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
	jpeg_start_decompress(&cinfo);
	int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
	if ((turned ? h : w) != *width || (turned ? w : h) != *height || cinfo.output_components != (cmyk ? 4 : 3)) {
		jpeg_destroy_decompress(&cinfo);
		return err_set("JPEG size changed between header and decode");
	}
	row = malloc((size_t)w * cinfo.output_components);
	/* a turned picture is decoded as stored first, then moved into chw */
	unsigned char *dst = chw;
	if (o != 1)
		dst = upright = malloc((size_t)w * h * 3);
	if (!row || !dst) {
		jpeg_destroy_decompress(&cinfo);
		free(row);
		free(upright);
		return err_set("out of memory");
	}
	size_t plane = (size_t)w * h;
	while (cinfo.output_scanline < cinfo.output_height) {
		int y = (int)cinfo.output_scanline;
		JSAMPROW rows[1] = {row};
		if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
			free(row);
			free(upright);
			jpeg_destroy_decompress(&cinfo);
			return err_set("corrupt JPEG: decoder stopped at row %d", y);
		}
		if (cmyk)
			scatter_cmyk(dst, plane, y, w, row);
		else
			scatter_rgb(dst, plane, y, w, row);
	}
	jpeg_finish_decompress(&cinfo);
	jpeg_destroy_decompress(&cinfo);
	if (o != 1)
		orient(chw, upright, w, h, o);
	free(row);
	free(upright);
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
