#include "data/augment.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/boxes.h"
#include "core/err.h"

/* Largest image side accepted: keeps every canvas index (4x expand of it) far inside int. */
#define AUG_MAX_SIDE 32768

void aug_norm_init(aug_norm *nm, const data_config *c)
{
	for (int ch = 0; ch < 3; ch++) {
		int oc = c->to_rgb ? ch : 2 - ch;
		nm->out_chan[ch] = oc;
		nm->mean[ch] = (float)c->mean[oc];
		nm->istd[ch] = (float)(1.0 / c->std[oc]);
		nm->fill[ch] = (float)c->mean[oc];
	}
}

/* ---------------------------------------------------------------- draws */

void aug_draw_photo(aug_photo *p, rng *r, const data_config *c)
{
	memset(p, 0, sizeof *p);
	for (int i = 0; i < 3; i++)
		p->perm[i] = i;
	if ((p->brightness = (int)rng_randint(r, 2)))
		p->delta = (float)rng_uniform(r, -c->brightness_delta, c->brightness_delta);
	p->contrast_first = (int)rng_randint(r, 2);
	if (p->contrast_first && (p->contrast = (int)rng_randint(r, 2)))
		p->alpha = (float)rng_uniform(r, c->contrast_range[0], c->contrast_range[1]);
	if ((p->saturation = (int)rng_randint(r, 2)))
		p->sat = (float)rng_uniform(r, c->saturation_range[0], c->saturation_range[1]);
	if ((p->hue = (int)rng_randint(r, 2)))
		p->hue_shift = (float)rng_uniform(r, -c->hue_delta, c->hue_delta);
	if (!p->contrast_first && (p->contrast = (int)rng_randint(r, 2)))
		p->alpha = (float)rng_uniform(r, c->contrast_range[0], c->contrast_range[1]);
	if ((p->swap = (int)rng_randint(r, 2)))
		rng_permutation(r, p->perm, 3);
}

void aug_draw_expand(aug_geom *g, rng *r, const data_config *c)
{
	g->cw = g->w;
	g->ch = g->h;
	g->left = g->top = 0;
	if (!c->expand || !(rng_double(r) < c->expand_prob))
		return;
	double ratio = rng_uniform(r, c->expand_ratio[0], c->expand_ratio[1]);
	g->cw = (int)(g->w * ratio);
	g->ch = (int)(g->h * ratio);
	g->left = (int)rng_uniform(r, 0, g->w * ratio - g->w);
	g->top = (int)rng_uniform(r, 0, g->h * ratio - g->h);
}

float aug_iou(const float a[4], const float b[4])
{
	float area_a = (a[2] - a[0]) * (a[3] - a[1]);
	float area_b = (b[2] - b[0]) * (b[3] - b[1]);
	float iw = fminf(a[2], b[2]) - fmaxf(a[0], b[0]);
	float ih = fminf(a[3], b[3]) - fmaxf(a[1], b[1]);
	float overlap = fmaxf(iw, 0.f) * fmaxf(ih, 0.f);
	float uni = fmaxf(area_a + area_b - overlap, 1e-6f);
	return overlap / uni;
}

static int centre_inside(const float *b, int x0, int y0, int x1, int y1)
{
	float cx = (b[0] + b[2]) / 2, cy = (b[1] + b[3]) / 2;
	return cx > (float)x0 && cy > (float)y0 && cx < (float)x1 && cy < (float)y1;
}

/* Rounds of mode choice before giving up on cropping. Each round ends with no crop with
 * probability 1/(n_min_ious + 2), so this bound is never reached in practice; it only
 * keeps a pathological config from spinning. */
#define CROP_MAX_ROUNDS 10000

int aug_draw_crop(aug_geom *g, rng *r, const data_config *c, const float *boxes, int n)
{
	int w = g->cw, h = g->ch;
	g->crop = 0;
	g->x0 = g->y0 = 0;
	g->x1 = w;
	g->y1 = h;
	if (!c->min_iou_crop)
		return 0;
	/* mmdet's sample_mode = (1, *min_ious, 0): 1 is "no crop", 0 "any IoU" */
	uint32_t nmodes = (uint32_t)c->n_min_ious + 2;
	for (int round = 0; round < CROP_MAX_ROUNDS; round++) {
		uint32_t mode = rng_randint(r, nmodes);
		if (mode == 0)
			return 0;
		float min_iou = mode <= (uint32_t)c->n_min_ious ? (float)c->min_ious[mode - 1] : 0.f;
		for (int trial = 0; trial < 50; trial++) {
			double new_w = rng_uniform(r, c->min_crop_size * w, w);
			double new_h = rng_uniform(r, c->min_crop_size * h, h);
			if (new_h / new_w < 0.5 || new_h / new_w > 2)
				continue;
			double left = rng_uniform(r, 0, w - new_w);
			double top = rng_uniform(r, 0, h - new_h);
			int x0 = (int)left, y0 = (int)top, x1 = (int)(left + new_w), y1 = (int)(top + new_h);
			if (x1 == x0 || y1 == y0)
				continue;
			if (n > 0) {
				float patch[4] = {(float)x0, (float)y0, (float)x1, (float)y1};
				int ok = 1, any = 0;
				for (int i = 0; i < n && ok; i++)
					ok = !(aug_iou(patch, boxes + 4 * i) < min_iou);
				for (int i = 0; i < n && ok && !any; i++)
					any = centre_inside(boxes + 4 * i, x0, y0, x1, y1);
				if (!ok || !any)
					continue;
			}
			g->crop = 1;
			g->x0 = x0;
			g->y0 = y0;
			g->x1 = x1;
			g->y1 = y1;
			return 1;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- boxes */

void aug_mark_difficult(int32_t *labels, const uint8_t *difficult, int n)
{
	for (int i = 0; difficult && i < n; i++)
		if (difficult[i])
			labels[i] = -1 - labels[i];
}

int aug_boxes_drop_marked(float *boxes, int32_t *labels, int n)
{
	int k = 0;
	for (int i = 0; i < n; i++) {
		if (labels[i] < 0)
			continue;
		memmove(boxes + 4 * k, boxes + 4 * i, 4 * sizeof *boxes);
		labels[k++] = labels[i];
	}
	return k;
}

void aug_boxes_shift(float *boxes, int n, float dx, float dy)
{
	for (int i = 0; i < n; i++) {
		boxes[4 * i + 0] += dx;
		boxes[4 * i + 1] += dy;
		boxes[4 * i + 2] += dx;
		boxes[4 * i + 3] += dy;
	}
}

int aug_boxes_crop(float *boxes, int32_t *labels, int n, int x0, int y0, int x1, int y1)
{
	int k = 0;
	for (int i = 0; i < n; i++) {
		const float *b = boxes + 4 * i;
		if (!centre_inside(b, x0, y0, x1, y1))
			continue;
		/* mmdet clips only the far corner to the patch's far corner and the near to the near */
		float c[4] = {fmaxf(b[0], (float)x0), fmaxf(b[1], (float)y0), fminf(b[2], (float)x1), fminf(b[3], (float)y1)};
		float *o = boxes + 4 * k;
		o[0] = c[0] - (float)x0;
		o[1] = c[1] - (float)y0;
		o[2] = c[2] - (float)x0;
		o[3] = c[3] - (float)y0;
		labels[k++] = labels[i];
	}
	return k;
}

void aug_boxes_resize(float *boxes, int n, int w, int h, int size)
{
	/* mmdet keeps scale_factor as f32 and multiplies the f32 boxes by it */
	float sx = (float)((double)size / w), sy = (float)((double)size / h), s = (float)size;
	for (int i = 0; i < n; i++) {
		float *b = boxes + 4 * i;
		b[0] = clampf(b[0] * sx, 0, s);
		b[1] = clampf(b[1] * sy, 0, s);
		b[2] = clampf(b[2] * sx, 0, s);
		b[3] = clampf(b[3] * sy, 0, s);
	}
}

void aug_boxes_flip(float *boxes, int n, int width)
{
	float w = (float)width;
	for (int i = 0; i < n; i++) {
		float *b = boxes + 4 * i;
		float x1 = b[0];
		b[0] = w - b[2];
		b[2] = w - x1;
	}
}

/* ---------------------------------------------------------------- pixels */

static inline void rgb2hsv_px(const float rgb[3], float hsv[3])
{
	float r = rgb[0], g = rgb[1], b = rgb[2];
	float v = r, vmin = r;
	if (v < g)
		v = g;
	if (v < b)
		v = b;
	if (vmin > g)
		vmin = g;
	if (vmin > b)
		vmin = b;
	float diff = v - vmin;
	float s = diff / (fabsf(v) + FLT_EPSILON);
	diff = (float)(60. / (diff + FLT_EPSILON));
	float h;
	if (v == r)
		h = (g - b) * diff;
	else if (v == g)
		h = (b - r) * diff + 120.f;
	else
		h = (r - g) * diff + 240.f;
	if (h < 0)
		h += 360.f;
	hsv[0] = h;
	hsv[1] = s;
	hsv[2] = v;
}

static inline void hsv2rgb_px(const float hsv[3], float rgb[3])
{
	float h = hsv[0], s = hsv[1], v = hsv[2];
	if (s == 0) {
		rgb[0] = rgb[1] = rgb[2] = v;
		return;
	}
	h *= 6.f / 360.f;
	if (h < 0 || h >= 6.f) /* rare: H is in [0, 360] but for rounding */
		h = fmodf(h, 6.f);
	if (h < 0)
		h += 6.f;
	int sector = (int)floorf(h);
	h -= (float)sector;
	if (sector < 0 || sector >= 6) {
		sector = 0;
		h = 0;
	}
	float p = v * (1.f - s), q = v * (1.f - s * h), t = v * (1.f - s * (1.f - h));
	float r, g, b;
	switch (sector) {
	case 0: r = v, g = t, b = p; break;
	case 1: r = q, g = v, b = p; break;
	case 2: r = p, g = v, b = t; break;
	case 3: r = p, g = q, b = v; break;
	case 4: r = t, g = p, b = v; break;
	default: r = v, g = p, b = q; break;
	}
	rgb[0] = r;
	rgb[1] = g;
	rgb[2] = b;
}

void aug_rgb2hsv(const float rgb[3], float hsv[3])
{
	rgb2hsv_px(rgb, hsv);
}

void aug_hsv2rgb(const float hsv[3], float rgb[3])
{
	hsv2rgb_px(hsv, rgb);
}

void aug_photometric(float *img, int w, int h, ptrdiff_t stride, ptrdiff_t plane, const aug_photo *p, int on)
{
	if (!on)
		return;
	for (int y = 0; y < h; y++) {
		float *c0 = img + y * stride, *c1 = c0 + plane, *c2 = c1 + plane;
		for (int x = 0; x < w; x++) {
			float px[3] = {c0[x], c1[x], c2[x]}, hsv[3];
			for (int c = 0; c < 3 && p->brightness; c++)
				px[c] += p->delta;
			for (int c = 0; c < 3 && p->contrast && p->contrast_first; c++)
				px[c] *= p->alpha;
			/* mmdet always goes through HSV, even when neither S nor H changes */
			rgb2hsv_px(px, hsv);
			if (p->saturation)
				hsv[1] *= p->sat;
			if (p->hue) {
				hsv[0] += p->hue_shift;
				if (hsv[0] > 360.f)
					hsv[0] -= 360.f;
				if (hsv[0] < 0.f)
					hsv[0] += 360.f;
			}
			hsv2rgb_px(hsv, px);
			for (int c = 0; c < 3 && p->contrast && !p->contrast_first; c++)
				px[c] *= p->alpha;
			c0[x] = px[p->perm[0]];
			c1[x] = px[p->perm[1]];
			c2[x] = px[p->perm[2]];
		}
	}
}

/* cv2 INTER_LINEAR source taps along one axis for output position d of dst, sampling
 * an axis of length src: src position (d + 0.5) * scale - 0.5 with scale computed as
 * OpenCV does (1 / (dst / src)). Columns clamp index and weight at the borders (fx = 0);
 * rows clamp only the indices and keep the weights, as cv::resize does. */
static void linear_tap(int d, int dst, int src, int clamp_weight, int *i0, int *i1, float *a0, float *a1)
{
	double scale = 1. / ((double)dst / src);
	float f = (float)((d + 0.5) * scale - 0.5);
	int s = (int)floorf(f);
	f -= (float)s;
	if (clamp_weight) {
		if (s < 0)
			s = 0, f = 0;
		if (s >= src - 1)
			s = src - 1, f = 0;
	}
	*i0 = s < 0 ? 0 : s > src - 1 ? src - 1 : s;
	*i1 = s + 1 < 0 ? 0 : s + 1 > src - 1 ? src - 1 : s + 1;
	*a0 = 1.f - f;
	*a1 = f;
}

void aug_resize_ref(float *dst, int dw, int dh, const float *src, int sw, int sh)
{
	for (int y = 0; y < dh; y++) {
		int r0, r1, c0, c1;
		float b0, b1, a0, a1;
		linear_tap(y, dh, sh, 0, &r0, &r1, &b0, &b1);
		for (int x = 0; x < dw; x++) {
			linear_tap(x, dw, sw, 1, &c0, &c1, &a0, &a1);
			float h0 = src[r0 * sw + c0] * a0 + src[r0 * sw + c1] * a1;
			float h1 = src[r1 * sw + c0] * a0 + src[r1 * sw + c1] * a1;
			dst[y * dw + x] = h0 * b0 + h1 * b1;
		}
	}
}

struct aug_work {
	float *buf; /* the distorted original, 3 planes of (h + 1) x (w + 1): row h and column w hold the fill */
	size_t cap;
	int *ti;    /* 4 x size: column taps 0/1, row offsets 0/1 */
	float *tf;  /* 4 x size: column weights 0/1, row weights 0/1 */
	int tcap;
};

aug_work *aug_work_new(void)
{
	aug_work *w = calloc(1, sizeof *w);
	if (!w)
		err_set("out of memory");
	return w;
}

void aug_work_free(aug_work *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w->ti);
	free(w->tf);
	free(w);
}

static int work_reserve(aug_work *wk, size_t floats, int size)
{
	if (floats > wk->cap) {
		float *b = realloc(wk->buf, floats * sizeof *b);
		if (!b)
			return err_set("out of memory allocating %zu floats", floats);
		wk->buf = b;
		wk->cap = floats;
	}
	if (size > wk->tcap) {
		int *ti = realloc(wk->ti, 4 * (size_t)size * sizeof *ti);
		if (ti)
			wk->ti = ti;
		float *tf = realloc(wk->tf, 4 * (size_t)size * sizeof *tf);
		if (tf)
			wk->tf = tf;
		if (!ti || !tf)
			return err_set("out of memory");
		wk->tcap = size;
	}
	return 0;
}

/* out[oc][y][x] = normalised bilinear sample; columns/rows are taps into planes of
 * stride `stride`, row offsets already multiplied. */
static void render_planes(float *out, const float *src, ptrdiff_t plane, int size, const int *xi0, const int *xi1,
			  const float *xa0, const float *xa1, const int *yo0, const int *yo1, const float *yb0,
			  const float *yb1, const aug_norm *nm, int round_u8)
{
	for (int c = 0; c < 3; c++) {
		const float *P = src + c * plane;
		float *o = out + (size_t)nm->out_chan[c] * size * size;
		float mean = nm->mean[c], istd = nm->istd[c];
		for (int y = 0; y < size; y++, o += size) {
			const float *R0 = P + yo0[y], *R1 = P + yo1[y];
			float b0 = yb0[y], b1 = yb1[y];
			for (int x = 0; x < size; x++) {
				float h0 = R0[xi0[x]] * xa0[x] + R0[xi1[x]] * xa1[x];
				float h1 = R1[xi0[x]] * xa0[x] + R1[xi1[x]] * xa1[x];
				float v = h0 * b0 + h1 * b1;
				if (round_u8)
					v = floorf(v + 0.5f);
				o[x] = (v - mean) * istd;
			}
		}
	}
}

/* Expand + crop + resize + flip + normalise of the distorted original in wk->buf. */
static void render_train(float *out, const aug_geom *g, const aug_norm *nm, aug_work *wk)
{
	int S = g->size, w = g->w, h = g->h, kw = g->x1 - g->x0, kh = g->y1 - g->y0;
	ptrdiff_t stride = w + 1, plane = stride * (h + 1);
	int *xi0 = wk->ti, *xi1 = xi0 + S, *yo0 = xi1 + S, *yo1 = yo0 + S;
	float *xa0 = wk->tf, *xa1 = xa0 + S, *yb0 = xa1 + S, *yb1 = yb0 + S;
	for (int j = 0; j < S; j++) {
		int i0, i1;
		linear_tap(g->flip ? S - 1 - j : j, S, kw, 1, &i0, &i1, &xa0[j], &xa1[j]);
		/* crop column -> canvas column -> original column, or w (the fill column) */
		i0 += g->x0 - g->left;
		i1 += g->x0 - g->left;
		xi0[j] = i0 < 0 || i0 >= w ? w : i0;
		xi1[j] = i1 < 0 || i1 >= w ? w : i1;
		linear_tap(j, S, kh, 0, &i0, &i1, &yb0[j], &yb1[j]);
		i0 += g->y0 - g->top;
		i1 += g->y0 - g->top;
		yo0[j] = (i0 < 0 || i0 >= h ? h : i0) * (int)stride;
		yo1[j] = (i1 < 0 || i1 >= h ? h : i1) * (int)stride;
	}
	render_planes(out, wk->buf, plane, S, xi0, xi1, xa0, xa1, yo0, yo1, yb0, yb1, nm, 0);
}

/* The u8 original into wk->buf as floats with the fill row and column. */
static void load_padded(aug_work *wk, const uint8_t *px, int w, int h, const float fill[3])
{
	ptrdiff_t stride = w + 1, plane = stride * (h + 1);
	for (int c = 0; c < 3; c++) {
		float *P = wk->buf + c * plane;
		const uint8_t *s = px + (size_t)c * w * h;
		for (int y = 0; y < h; y++) {
			float *row = P + y * stride;
			for (int x = 0; x < w; x++)
				row[x] = s[(size_t)y * w + x];
			row[w] = fill[c];
		}
		for (int x = 0; x <= w; x++)
			P[h * stride + x] = fill[c];
	}
}

int aug_apply(aug_target *t, const aug_image *im, const aug_photo *p, int pon, const aug_geom *g,
	      const aug_opts *o, aug_work *wk)
{
	int S = o->cfg.size;
	size_t floats = 3 * (size_t)(im->w + 1) * (im->h + 1);
	if (work_reserve(wk, floats, S) < 0)
		return -1;
	aug_norm nm;
	aug_norm_init(&nm, &o->cfg);

	memcpy(t->boxes, im->boxes, (size_t)im->n * 4 * sizeof *t->boxes);
	memcpy(t->labels, im->labels, (size_t)im->n * sizeof *t->labels);
	aug_mark_difficult(t->labels, im->difficult, im->n);
	int n = im->n;
	aug_boxes_shift(t->boxes, n, (float)g->left, (float)g->top);
	if (g->crop)
		n = aug_boxes_crop(t->boxes, t->labels, n, g->x0, g->y0, g->x1, g->y1);
	aug_boxes_resize(t->boxes, n, g->x1 - g->x0, g->y1 - g->y0, S);
	if (g->flip)
		aug_boxes_flip(t->boxes, n, S);
	t->n = aug_boxes_drop_marked(t->boxes, t->labels, n);
	t->geom = *g;

	load_padded(wk, im->pixels, im->w, im->h, nm.fill);
	ptrdiff_t stride = im->w + 1;
	aug_photometric(wk->buf, im->w, im->h, stride, stride * (im->h + 1), p, pon);
	render_train(t->pixels, g, &nm, wk);
	return 0;
}

/* Eval: resize + normalise straight from the u8 image. mmdet's test pipeline resizes the
 * u8 image and cv2 returns u8, so the interpolated value is rounded to an integer. */
static int eval_one(aug_target *t, const aug_image *im, const aug_opts *o, aug_work *wk)
{
	int S = o->cfg.size, w = im->w, h = im->h;
	if (work_reserve(wk, 0, S) < 0)
		return -1;
	aug_norm nm;
	aug_norm_init(&nm, &o->cfg);
	memcpy(t->boxes, im->boxes, (size_t)im->n * 4 * sizeof *t->boxes);
	memcpy(t->labels, im->labels, (size_t)im->n * sizeof *t->labels);
	for (int i = 0; i < im->n; i++)
		t->difficult[i] = im->difficult ? im->difficult[i] : 0;
	t->n = im->n;
	memset(&t->geom, 0, sizeof t->geom);
	t->geom.w = t->geom.cw = t->geom.x1 = w;
	t->geom.h = t->geom.ch = t->geom.y1 = h;
	t->geom.size = S;

	int *xi0 = wk->ti, *xi1 = xi0 + S, *yo0 = xi1 + S, *yo1 = yo0 + S;
	float *xa0 = wk->tf, *xa1 = xa0 + S, *yb0 = xa1 + S, *yb1 = yb0 + S;
	for (int j = 0; j < S; j++) {
		linear_tap(j, S, w, 1, &xi0[j], &xi1[j], &xa0[j], &xa1[j]);
		linear_tap(j, S, h, 0, &yo0[j], &yo1[j], &yb0[j], &yb1[j]);
		yo0[j] *= w;
		yo1[j] *= w;
	}
	/* u8 taps: a small per-row conversion keeps the inner loop the float kernel */
	for (int c = 0; c < 3; c++) {
		const uint8_t *P = im->pixels + (size_t)c * w * h;
		float *out = t->pixels + (size_t)nm.out_chan[c] * S * S;
		float mean = nm.mean[c], istd = nm.istd[c];
		for (int y = 0; y < S; y++, out += S) {
			const uint8_t *R0 = P + yo0[y], *R1 = P + yo1[y];
			float b0 = yb0[y], b1 = yb1[y];
			for (int x = 0; x < S; x++) {
				float h0 = (float)R0[xi0[x]] * xa0[x] + (float)R0[xi1[x]] * xa1[x];
				float h1 = (float)R1[xi0[x]] * xa0[x] + (float)R1[xi1[x]] * xa1[x];
				float v = floorf(h0 * b0 + h1 * b1 + 0.5f);
				out[x] = (v - mean) * istd;
			}
		}
	}
	return 0;
}

int aug_one(aug_target *t, const aug_image *im, const aug_opts *o, aug_work *wk)
{
	if (!o->train)
		return eval_one(t, im, o, wk);
	const data_config *c = &o->cfg;
	rng r;
	rng_seed3(&r, o->seed, (uint64_t)im->epoch, (uint64_t)im->index);
	aug_photo p = {.perm = {0, 1, 2}};
	if (c->photometric)
		aug_draw_photo(&p, &r, c);
	aug_geom g = {.w = im->w, .h = im->h, .size = c->size};
	aug_draw_expand(&g, &r, c);
	/* the crop is drawn against the boxes as they are on the canvas; t's arrays are
	 * scratch here, aug_apply recomputes them from the input */
	memcpy(t->boxes, im->boxes, (size_t)im->n * 4 * sizeof *t->boxes);
	aug_boxes_shift(t->boxes, im->n, (float)g.left, (float)g.top);
	aug_draw_crop(&g, &r, c, t->boxes, im->n);
	g.flip = rng_double(&r) < c->flip_ratio;
	return aug_apply(t, im, &p, c->photometric, &g, o, wk);
}

/* ---------------------------------------------------------------- records */

static int64_t meta_count(const record *r, const char *key, int64_t dflt)
{
	double v = meta_num(r, key, -1);
	return v >= 0 && v == floor(v) && v < 9007199254740992.0 ? (int64_t)v : dflt;
}

int aug_image_view(aug_image *im, const record *r, long ordinal)
{
	char d[128];
	memset(im, 0, sizeof *im);
	const tensor *img = record_expect(r, "image", DT_U8, 3);
	if (!img)
		return -1;
	if (img->shape[0] != 3 || img->shape[1] < 1 || img->shape[2] < 1 || img->shape[1] > AUG_MAX_SIDE ||
	    img->shape[2] > AUG_MAX_SIDE)
		return err_set("image record: tensor 'image' is %s, expected u8[3,H,W] with 1 <= H, W <= %d",
			       tensor_describe(img, d, sizeof d), AUG_MAX_SIDE);
	/* plain images (image-decode) carry no ground truth: neither boxes nor labels */
	static const float no_boxes[4];
	static const int32_t no_labels[1];
	im->no_gt = !record_find(r, "boxes") && !record_find(r, "labels");
	im->boxes = no_boxes;
	im->labels = no_labels;
	if (!im->no_gt) {
		const tensor *boxes = record_expect(r, "boxes", DT_F32, 2);
		if (!boxes)
			return -1;
		if (boxes->shape[1] != 4 || boxes->shape[0] > (1 << 20))
			return err_set("image record: tensor 'boxes' is %s, expected f32[n,4]", tensor_describe(boxes, d, sizeof d));
		int64_t n = boxes->shape[0];
		const tensor *labels = record_expect(r, "labels", DT_I32, 1);
		if (!labels)
			return -1;
		if (labels->shape[0] != n)
			return err_set("image record: %lld labels for %lld boxes", (long long)labels->shape[0], (long long)n);
		const tensor *diff = record_find(r, "difficult");
		if (diff && (diff->dtype != DT_U8 || diff->ndim != 1 || diff->shape[0] != n))
			return err_set("image record: tensor 'difficult' is %s, expected u8[%lld]",
				       tensor_describe(diff, d, sizeof d), (long long)n);
		const float *b = boxes->data;
		for (int64_t i = 0; i < 4 * n; i++)
			if (!isfinite(b[i]))
				return err_set("image record: box %lld is not finite", (long long)(i / 4));
		im->n = (int)n;
		im->boxes = b;
		im->labels = labels->data;
		im->difficult = diff ? diff->data : NULL;
	}
	im->pixels = img->data;
	im->h = (int)img->shape[1];
	im->w = (int)img->shape[2];
	im->id = meta_str(r, "id", NULL);
	im->index = meta_count(r, "index", ordinal);
	im->epoch = meta_count(r, "epoch", 0);
	return 0;
}

void aug_jobs_release(aug_job *jobs, int n)
{
	for (int i = 0; i < n; i++) {
		free(jobs[i].out.boxes);
		free(jobs[i].out.labels);
		free(jobs[i].out.difficult);
		jobs[i].out.boxes = NULL;
		jobs[i].out.labels = NULL;
		jobs[i].out.difficult = NULL;
	}
}

record *aug_batch_begin(aug_job *jobs, int n, const aug_opts *o)
{
	int S = o->cfg.size;
	record *b = record_new("batch");
	if (!b)
		return NULL;
	tensor *img = record_add(b, "image", DT_F32, 4, (int64_t[]){n, 3, S, S});
	if (!img) {
		record_free(b);
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		aug_job *j = &jobs[i];
		size_t m = (size_t)j->in.n + 1;
		memset(&j->out, 0, sizeof j->out);
		j->rc = 0;
		j->err[0] = 0;
		j->out.pixels = (float *)img->data + (size_t)i * 3 * S * S;
		j->out.boxes = malloc(m * 4 * sizeof(float));
		j->out.labels = malloc(m * sizeof(int32_t));
		j->out.difficult = malloc(m);
		if (!j->out.boxes || !j->out.labels || !j->out.difficult) {
			aug_jobs_release(jobs, i + 1);
			record_free(b);
			err_set("out of memory");
			return NULL;
		}
	}
	return b;
}

static int batch_meta(record *b, const aug_job *jobs, int n, const aug_opts *o)
{
	cJSON *ids = cJSON_AddArrayToObject(b->meta, "ids");
	cJSON *idx = cJSON_AddArrayToObject(b->meta, "indices");
	if (!ids || !idx)
		return -1;
	for (int i = 0; i < n; i++) {
		cJSON *id = jobs[i].in.id ? cJSON_CreateString(jobs[i].in.id) : cJSON_CreateNull();
		cJSON *x = cJSON_CreateNumber((double)jobs[i].in.index);
		if (!cJSON_AddItemToArray(ids, id) || !cJSON_AddItemToArray(idx, x)) {
			cJSON_Delete(id);
			cJSON_Delete(x);
			return -1;
		}
	}
	if (!cJSON_AddNumberToObject(b->meta, "epoch", n ? (double)jobs[0].in.epoch : 0) ||
	    !cJSON_AddNumberToObject(b->meta, "size", o->cfg.size) ||
	    !cJSON_AddStringToObject(b->meta, "mode", o->train ? "train" : "eval") ||
	    !cJSON_AddStringToObject(b->meta, "boxes_frame", o->train ? "input" : "original"))
		return -1;
	return 0;
}

int aug_batch_end(record *b, aug_job *jobs, int n, const aug_opts *o)
{
	int m = 0, rc = -1, gt = n > 0 && !jobs[0].in.no_gt;
	for (int i = 0; i < n; i++) {
		m = jobs[i].out.n > m ? jobs[i].out.n : m;
		if ((jobs[i].in.no_gt == 0) != gt) {
			err_set("image %s has %s and image %s %s: a batch takes one kind",
				jobs[0].in.id ? jobs[0].in.id : "?", gt ? "ground truth" : "no ground truth",
				jobs[i].in.id ? jobs[i].in.id : "?", gt ? "none" : "some");
			goto done;
		}
	}
	if (o->train && !gt) {
		err_set("image %s has no ground truth (boxes, labels): --train needs it",
			n && jobs[0].in.id ? jobs[0].in.id : "?");
		goto done;
	}
	/* without ground truth the batch has no box tensors at all, so nothing downstream
	 * mistakes "not annotated" for "annotated empty" */
	tensor *tb = NULL, *tl = NULL, *td = NULL, *tn = NULL, *ts = NULL, *to = NULL;
	if (gt) {
		tb = record_add(b, "boxes", DT_F32, 3, (int64_t[]){n, m, 4});
		tl = tb ? record_add(b, "labels", DT_I32, 2, (int64_t[]){n, m}) : NULL;
		td = tl && !o->train ? record_add(b, "difficult", DT_U8, 2, (int64_t[]){n, m}) : NULL;
		tn = tl && (o->train || td) ? record_add(b, "nbox", DT_I32, 1, (int64_t[]){n}) : NULL;
		if (!tn)
			goto done;
	}
	ts = !o->train ? record_add(b, "scale_factor", DT_F32, 2, (int64_t[]){n, 4}) : NULL;
	to = ts ? record_add(b, "orig_size", DT_I32, 2, (int64_t[]){n, 2}) : NULL;
	if (!o->train && !to)
		goto done;
	for (int i = 0; i < n; i++) {
		const aug_target *t = &jobs[i].out;
		if (gt) {
			float *bx = (float *)tb->data + (size_t)i * m * 4;
			int32_t *lb = (int32_t *)tl->data + (size_t)i * m;
			memcpy(bx, t->boxes, (size_t)t->n * 4 * sizeof *bx);
			for (int k = 0; k < m; k++)
				lb[k] = k < t->n ? t->labels[k] : -1;
			((int32_t *)tn->data)[i] = t->n;
			if (!o->train)
				memcpy((uint8_t *)td->data + (size_t)i * m, t->difficult, (size_t)t->n);
		}
		if (!o->train) {
			float *sf = (float *)ts->data + 4 * i;
			sf[0] = sf[2] = (float)((double)o->cfg.size / jobs[i].in.w);
			sf[1] = sf[3] = (float)((double)o->cfg.size / jobs[i].in.h);
			int32_t *os = (int32_t *)to->data + 2 * i;
			os[0] = jobs[i].in.h;
			os[1] = jobs[i].in.w;
		}
	}
	if (batch_meta(b, jobs, n, o) < 0) {
		err_set("out of memory");
		goto done;
	}
	rc = 0;
done:
	aug_jobs_release(jobs, n);
	return rc;
}

/* ---------------------------------------------------------------- pool */

/* A FIFO of submitted jobs served by nthreads - 1 helper threads; a thread waiting for
 * its jobs serves the queue too, so one thread alone still makes progress. */
struct aug_pool {
	int nthreads;     /* helpers running + the caller */
	int nworks;
	pthread_t *threads;
	aug_work **works; /* one per thread; [0] is for whoever waits */
	pthread_mutex_t mu;
	pthread_cond_t work_cv, done_cv;
	aug_job **queue;  /* queued jobs are queue[head..tail) */
	int head, tail, cap;
	int quit;
};

struct worker_arg {
	aug_pool *p;
	int id;
};

/* Completes and encodes a batch whose images are all done (no lock held). A failure is
 * reported through the first job. */
static void complete_batch(aug_batch *b, const aug_opts *o)
{
	for (int i = 0; i < b->n; i++)
		if (b->jobs[i].rc < 0) {
			aug_jobs_release(b->jobs, b->n);
			return;
		}
	if (aug_batch_end(b->rec, b->jobs, b->n, o) < 0 || (b->level != AUG_NO_ENCODE && record_encode(b->rec, b->level) < 0)) {
		b->jobs[0].rc = -1;
		snprintf(b->jobs[0].err, sizeof b->jobs[0].err, "%s", err_msg());
	}
}

/* Runs the next queued job; called with the mutex held, returns with it held. */
static void serve_one(aug_pool *p, int id)
{
	aug_job *j = p->queue[p->head++];
	if (p->head == p->tail)
		p->head = p->tail = 0;
	pthread_mutex_unlock(&p->mu);
	j->rc = aug_one(&j->out, &j->in, j->opts, p->works[id]);
	if (j->rc < 0)
		snprintf(j->err, sizeof j->err, "%s", err_msg());
	pthread_mutex_lock(&p->mu);
	aug_batch *b = j->batch;
	if (!b) {
		j->done = 1;
	} else if (--b->left == 0) {
		/* the last image of its batch: finish the record here, then release every job */
		pthread_mutex_unlock(&p->mu);
		complete_batch(b, j->opts);
		pthread_mutex_lock(&p->mu);
		for (int i = 0; i < b->n; i++)
			b->jobs[i].done = 1;
	}
	pthread_cond_broadcast(&p->done_cv);
}

static void *worker(void *arg)
{
	aug_pool *p = ((struct worker_arg *)arg)->p;
	int id = ((struct worker_arg *)arg)->id;
	free(arg);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->quit && p->head == p->tail)
			pthread_cond_wait(&p->work_cv, &p->mu);
		if (p->quit)
			break;
		serve_one(p, id);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

aug_pool *aug_pool_new(int nthreads)
{
	if (nthreads < 1)
		nthreads = 1;
	aug_pool *p = calloc(1, sizeof *p);
	if (!p || !(p->works = calloc((size_t)nthreads, sizeof *p->works)) ||
	    !(p->threads = calloc((size_t)nthreads, sizeof *p->threads))) {
		if (p)
			free(p->works);
		free(p);
		err_set("out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work_cv, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	p->nworks = nthreads;
	p->nthreads = 1;
	for (int i = 0; i < nthreads; i++)
		if (!(p->works[i] = aug_work_new())) {
			aug_pool_free(p);
			return NULL;
		}
	/* helpers start one by one, so after a failure aug_pool_free joins those running */
	for (int i = 1; i < nthreads; i++) {
		struct worker_arg *a = malloc(sizeof *a);
		if (a) {
			a->p = p;
			a->id = i;
		}
		if (!a || pthread_create(&p->threads[i], NULL, worker, a) != 0) {
			free(a);
			aug_pool_free(p);
			err_set("cannot start a worker thread");
			return NULL;
		}
		p->nthreads = i + 1;
	}
	return p;
}

void aug_pool_free(aug_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->work_cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	for (int i = 0; i < p->nworks; i++)
		aug_work_free(p->works[i]);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->work_cv);
	pthread_cond_destroy(&p->done_cv);
	free(p->queue);
	free(p->works);
	free(p->threads);
	free(p);
}

static int submit(aug_pool *p, aug_job *jobs, int n, const aug_opts *o, aug_batch *b)
{
	pthread_mutex_lock(&p->mu);
	if (p->tail + n > p->cap) {
		int cap = p->cap ? p->cap : 64;
		while (cap < p->tail + n)
			cap *= 2;
		aug_job **q = realloc(p->queue, (size_t)cap * sizeof *q);
		if (!q) {
			pthread_mutex_unlock(&p->mu);
			return err_set("out of memory");
		}
		p->queue = q;
		p->cap = cap;
	}
	if (b)
		b->left = n;
	for (int i = 0; i < n; i++) {
		jobs[i].opts = o;
		jobs[i].batch = b;
		jobs[i].done = 0;
		jobs[i].rc = 0;
		jobs[i].err[0] = 0;
		p->queue[p->tail++] = &jobs[i];
	}
	pthread_cond_broadcast(&p->work_cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

int aug_pool_submit(aug_pool *p, aug_job *jobs, int n, const aug_opts *o)
{
	return submit(p, jobs, n, o, NULL);
}

int aug_pool_submit_batch(aug_pool *p, aug_batch *b, const aug_opts *o)
{
	if (b->n == 0) /* nothing would complete it */
		return err_set("empty batch");
	return submit(p, b->jobs, b->n, o, b);
}

int aug_pool_wait(aug_pool *p, aug_job *jobs, int n)
{
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < n; i++)
		while (!jobs[i].done) {
			if (p->head < p->tail)
				serve_one(p, 0);
			else
				pthread_cond_wait(&p->done_cv, &p->mu);
		}
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < n; i++)
		if (jobs[i].rc < 0)
			return err_set("%s", jobs[i].err);
	return 0;
}

int aug_pool_run(aug_pool *p, aug_job *jobs, int n, const aug_opts *o)
{
	if (aug_pool_submit(p, jobs, n, o) < 0)
		return -1;
	return aug_pool_wait(p, jobs, n);
}
