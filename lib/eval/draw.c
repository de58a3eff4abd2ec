#include "eval/draw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cairo.h>
#include <fontconfig/fontconfig.h>

#include "core/err.h"
#include "data/image.h"

/* The font every label is set in (fonts-dejavu-core; fontconfig picks a near one when
 * it is missing). */
#define LABEL_FONT "DejaVu Sans"

void draw_class_colour(int c, unsigned char rgb[3])
{
	/* hues 137.5 degrees apart never repeat and stay far apart for neighbours */
	double h = fmod(c * 137.507764, 360.0) / 60.0, s = 0.85, v = 0.95;
	int i = (int)h;
	double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
	double r, g, b;
	switch (i) {
	case 0: r = v, g = t, b = p; break;
	case 1: r = q, g = v, b = p; break;
	case 2: r = p, g = v, b = t; break;
	case 3: r = p, g = q, b = v; break;
	case 4: r = t, g = p, b = v; break;
	default: r = v, g = p, b = q; break;
	}
	rgb[0] = (unsigned char)lround(r * 255);
	rgb[1] = (unsigned char)lround(g * 255);
	rgb[2] = (unsigned char)lround(b * 255);
}

static void set_colour(cairo_t *cr, const unsigned char rgb[3])
{
	cairo_set_source_rgb(cr, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
}

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* mmcv's astype(int32) of a float coordinate: truncation toward zero, kept in the image. */
static int pixel(float x, int size)
{
	if (!(x > -1e9f && x < 1e9f))
		return 0;
	return clampi((int)x, 0, size - 1);
}

/* The outline of columns x1..x2, rows y1..y2, t pixels wide inwards: four filled bands,
 * which cover exactly those pixels with antialiasing off. */
static void outline(cairo_t *cr, int x1, int y1, int x2, int y2, int t)
{
	int w = x2 - x1 + 1, h = y2 - y1 + 1;
	if (2 * t >= w || 2 * t >= h) {
		cairo_rectangle(cr, x1, y1, w, h);
	} else {
		cairo_rectangle(cr, x1, y1, w, t);
		cairo_rectangle(cr, x1, y2 - t + 1, w, t);
		cairo_rectangle(cr, x1, y1 + t, t, h - 2 * t);
		cairo_rectangle(cr, x2 - t + 1, y1 + t, t, h - 2 * t);
	}
	cairo_fill(cr);
}

static void dashed(cairo_t *cr, int x1, int y1, int x2, int y2, int t)
{
	static const double dash[2] = {6, 4};
	/* a stroke of width t centred t/2 inside the pixel edges covers the same bands */
	double in = t / 2.0;
	cairo_set_line_width(cr, t);
	cairo_set_dash(cr, dash, 2, 0);
	cairo_rectangle(cr, x1 + in, y1 + in, x2 - x1 + 1 - t, y2 - y1 + 1 - t);
	cairo_stroke(cr);
	cairo_set_dash(cr, NULL, 0, 0);
}

static void label(cairo_t *cr, const char *text, int x1, int y1, int w, int h, const unsigned char rgb[3],
		  double size)
{
	cairo_text_extents_t te;
	cairo_font_extents_t fe;
	cairo_set_font_size(cr, size);
	cairo_text_extents(cr, text, &te);
	cairo_font_extents(cr, &fe);
	double pad = ceil(size / 6), bw = ceil(te.x_advance + 2 * pad), bh = ceil(fe.ascent + fe.descent + pad);
	double x = x1, y = y1 - bh;
	if (y < 0)
		y = y1; /* no room above: inside the box's top */
	if (x + bw > w)
		x = w - bw;
	if (x < 0)
		x = 0;
	if (y + bh > h)
		y = h - bh;
	set_colour(cr, rgb);
	cairo_rectangle(cr, x, y, bw, bh);
	cairo_fill(cr);
	/* dark text on light colours, white on dark ones */
	double luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
	double ink = luma > 150 ? 0 : 1;
	cairo_set_source_rgb(cr, ink, ink, ink);
	cairo_move_to(cr, x + pad, y + pad / 2 + fe.ascent);
	cairo_show_text(cr, text);
}

/* Indices of the drawn detections, lowest score first (drawn first, so under). */
static int64_t *drawn_order(const dets_view *v, double thr, int64_t *n)
{
	int64_t *ix = malloc((size_t)(v->n ? v->n : 1) * sizeof *ix);
	if (!ix)
		return NULL;
	*n = 0;
	/* the dets come best first: walking them backwards gives ascending scores */
	for (int64_t i = v->n - 1; i >= 0; i--)
		if (v->scores[i] > thr)
			ix[(*n)++] = i;
	return ix;
}

static int encode(FILE *f, cairo_surface_t *s, int w, int h, const draw_style *st)
{
	unsigned char *rgb = malloc((size_t)w * h * 3);
	if (!rgb)
		return err_set("out of memory");
	cairo_surface_flush(s);
	const unsigned char *data = cairo_image_surface_get_data(s);
	int stride = cairo_image_surface_get_stride(s);
	for (int y = 0; y < h; y++) {
		const uint32_t *row = (const uint32_t *)(data + (size_t)y * stride);
		unsigned char *o = rgb + (size_t)y * w * 3;
		for (int x = 0; x < w; x++) {
			o[3 * x] = (unsigned char)(row[x] >> 16);
			o[3 * x + 1] = (unsigned char)(row[x] >> 8);
			o[3 * x + 2] = (unsigned char)row[x];
		}
	}
	int rc = st->format == DRAW_PNG ? image_write_png(f, rgb, (size_t)w * 3, w, h)
					: image_write_jpeg(f, rgb, (size_t)w * 3, w, h, st->quality);
	free(rgb);
	return rc;
}

int draw_dets(FILE *f, const uint8_t *chw, const dets_view *v, const voc_classes *names, const draw_style *st)
{
	int w = v->width, h = v->height, rc = -1;
	cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
	if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
		cairo_surface_destroy(s);
		return err_set("cairo: %s", cairo_status_to_string(cairo_surface_status(s)));
	}
	unsigned char *data = cairo_image_surface_get_data(s);
	int stride = cairo_image_surface_get_stride(s);
	size_t plane = (size_t)w * h;
	for (int y = 0; y < h; y++) {
		uint32_t *row = (uint32_t *)(data + (size_t)y * stride);
		const uint8_t *r = chw + (size_t)y * w, *g = r + plane, *b = g + plane;
		for (int x = 0; x < w; x++)
			row[x] = (uint32_t)r[x] << 16 | (uint32_t)g[x] << 8 | b[x];
	}
	cairo_surface_mark_dirty(s);
	cairo_t *cr = cairo_create(s);
	int64_t nd = 0, *order = drawn_order(v, st->score_thr, &nd);
	if (!order) {
		err_set("out of memory");
		goto out;
	}
	cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
	int t = st->thickness;
	unsigned char rgb[3];
	if (st->gt)
		for (int64_t i = 0; i < v->ngt; i++) {
			const float *b = v->gt_boxes + 4 * i;
			draw_class_colour(v->gt_labels[i], rgb);
			set_colour(cr, rgb);
			dashed(cr, pixel(b[0], w), pixel(b[1], h), pixel(b[2], w), pixel(b[3], h), t);
		}
	for (int64_t k = 0; k < nd; k++) {
		const float *b = v->boxes + 4 * order[k];
		draw_class_colour(v->labels[order[k]], rgb);
		set_colour(cr, rgb);
		outline(cr, pixel(b[0], w), pixel(b[1], h), pixel(b[2], w), pixel(b[3], h), t);
	}
	/* labels after every box, so no box covers one; text antialiased for reading */
	cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
	cairo_select_font_face(cr, LABEL_FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
	double size = st->font_size > 0 ? st->font_size : fmax(11, fmin(w, h) / 40.0);
	for (int64_t k = 0; k < nd; k++) {
		int64_t i = order[k];
		const float *b = v->boxes + 4 * i;
		char text[160];
		snprintf(text, sizeof text, "%.60s %.2f", names->names[v->labels[i]], v->scores[i]);
		draw_class_colour(v->labels[i], rgb);
		label(cr, text, pixel(b[0], w), pixel(b[1], h), w, h, rgb, size);
	}
	if (cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
		err_set("cairo: %s", cairo_status_to_string(cairo_status(cr)));
		goto out;
	}
	rc = encode(f, s, w, h, st);
out:
	free(order);
	cairo_destroy(cr);
	cairo_surface_destroy(s);
	return rc;
}

void draw_cleanup(void)
{
	/* cairo's font caches hold fontconfig's objects: cairo lets go first */
	cairo_debug_reset_static_data();
	FcFini();
}
