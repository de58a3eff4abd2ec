/* Unit tests of lib/augment, lib/rng and lib/config: every transform's effect on boxes
 * for given parameters, pixels against the numpy reference (tests/ref_augment.py
 * fixtures), the fused expand+crop+resize against a materialising slow path, pixel/box
 * consistency over many seeds, and determinism across thread counts. Run from the
 * repository root (tests/run does). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/augment.h"
#include "check.h"
#include "core/config.h"
#include "core/err.h"
#include "core/rng.h"
#include "core/stream.h"

#define FIX "tests/fixtures/augment/"

/* ---------------------------------------------------------------- helpers */

typedef struct timg {
	uint8_t *px;
	float *boxes;
	int32_t *labels;
	uint8_t *diff;
	aug_image im;
} timg;

static void timg_init(timg *t, int w, int h, int n)
{
	t->px = calloc((size_t)3 * w * h, 1);
	t->boxes = calloc((size_t)n * 4 + 4, sizeof(float));
	t->labels = calloc((size_t)n + 1, sizeof(int32_t));
	t->diff = calloc((size_t)n + 1, 1);
	memset(&t->im, 0, sizeof t->im);
	t->im.pixels = t->px;
	t->im.w = w;
	t->im.h = h;
	t->im.n = n;
	t->im.boxes = t->boxes;
	t->im.labels = t->labels;
	t->im.difficult = t->diff;
}

static void timg_free(timg *t)
{
	free(t->px);
	free(t->boxes);
	free(t->labels);
	free(t->diff);
}

/* Pseudo-random pixels and boxes from a seed. */
static void timg_random(timg *t, int w, int h, int n, uint64_t seed)
{
	rng r;
	rng_seed(&r, seed);
	timg_init(t, w, h, n);
	for (size_t i = 0; i < (size_t)3 * w * h; i++)
		t->px[i] = (uint8_t)rng_randint(&r, 256);
	for (int i = 0; i < n; i++) {
		float x0 = (float)rng_uniform(&r, 0, w - 2), y0 = (float)rng_uniform(&r, 0, h - 2);
		float *b = t->boxes + 4 * i;
		b[0] = x0;
		b[1] = y0;
		b[2] = (float)rng_uniform(&r, x0 + 1, w);
		b[3] = (float)rng_uniform(&r, y0 + 1, h);
		t->labels[i] = (int32_t)i;
		t->diff[i] = rng_randint(&r, 5) == 0;
	}
}

typedef struct ttarget {
	aug_target t;
	int size;
} ttarget;

static void tt_init(ttarget *o, int size, int n)
{
	memset(o, 0, sizeof *o);
	o->size = size;
	o->t.pixels = calloc((size_t)3 * size * size, sizeof(float));
	o->t.boxes = calloc((size_t)n * 4 + 4, sizeof(float));
	o->t.labels = calloc((size_t)n + 1, sizeof(int32_t));
	o->t.difficult = calloc((size_t)n + 1, 1);
}

static void tt_free(ttarget *o)
{
	free(o->t.pixels);
	free(o->t.boxes);
	free(o->t.labels);
	free(o->t.difficult);
}

static void opts_init(aug_opts *o, int train, int size)
{
	memset(o, 0, sizeof *o);
	data_config_default(&o->cfg);
	o->cfg.size = size;
	o->train = train;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - (double)b[i]);
		if (!(d <= m))
			m = d; /* NaN propagates as a failure */
	}
	return m;
}

/* ---------------------------------------------------------------- rng */

static void test_rng(void)
{
	rng a, b;
	rng_seed3(&a, 1, 2, 3);
	rng_seed3(&b, 1, 2, 3);
	int same = 1;
	for (int i = 0; i < 100; i++)
		same &= rng_next(&a) == rng_next(&b);
	CHECK(same);
	rng_seed3(&b, 2, 1, 3);
	rng_seed3(&a, 1, 2, 3);
	CHECK(rng_next(&a) != rng_next(&b));

	int counts[7] = {0}, in_range = 1, perm_ok = 1;
	double sum = 0;
	for (int i = 0; i < 70000; i++) {
		counts[rng_randint(&a, 7)]++;
		double u = rng_uniform(&a, -2, 3);
		in_range &= u >= -2 && u < 3;
		sum += u;
	}
	CHECK(in_range);
	CHECK_NEAR(sum / 70000, 0.5, 0.03);
	for (int k = 0; k < 7; k++)
		CHECK_MSG(counts[k] > 9500 && counts[k] < 10500, "randint(7) bucket %d has %d of 70000", k, counts[k]);
	for (int i = 0; i < 100; i++) {
		int p[5], seen = 0;
		rng_permutation(&a, p, 5);
		for (int k = 0; k < 5; k++)
			seen |= 1 << p[k];
		perm_ok &= seen == 31;
	}
	CHECK(perm_ok);
}

/* ---------------------------------------------------------------- boxes */

static void test_boxes(void)
{
	/* flip: x1' = W - x2, x2' = W - x1, y untouched */
	float b[8] = {10, 20, 30, 40, 0, 1, 512, 2};
	aug_boxes_flip(b, 2, 512);
	CHECK(b[0] == 482 && b[1] == 20 && b[2] == 502 && b[3] == 40);
	CHECK(b[4] == 0 && b[5] == 1 && b[6] == 512 && b[7] == 2);

	/* expand: boxes move by (left, top) */
	float e[4] = {1.5f, 2, 3, 4.25f};
	aug_boxes_shift(e, 1, 17, 9);
	CHECK(e[0] == 18.5f && e[1] == 11 && e[2] == 20 && e[3] == 13.25f);

	/* difficult boxes are marked, survive the geometry, then dropped with labels aligned */
	float d[12] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5};
	int32_t dl[3] = {7, 0, 9};
	uint8_t dd[3] = {0, 1, 0};
	aug_mark_difficult(dl, dd, 3);
	CHECK(dl[0] == 7 && dl[1] == -1 && dl[2] == 9);
	CHECK(aug_boxes_drop_marked(d, dl, 3) == 2);
	CHECK(d[4] == 4 && d[7] == 5 && dl[0] == 7 && dl[1] == 9);
	aug_mark_difficult(dl, NULL, 2);
	CHECK(aug_boxes_drop_marked(d, dl, 2) == 2);

	/* crop: patch (10,20)-(50,60). Centres strictly inside are kept, clipped, shifted */
	float c[6 * 4] = {
		12, 22, 20, 30, /* inside: -> (2,2,10,10) */
		0, 0, 30, 50,   /* centre (15,25) inside, sticks out left/top: -> (0,0,20,30) */
		40, 50, 70, 90, /* centre (55,70) outside: dropped */
		5, 30, 15, 40,  /* centre (10,35): on the edge, not strictly inside: dropped */
		45, 55, 52, 70, /* centre (48.5,62.5): y outside: dropped */
		30, 30, 60, 58, /* centre (45,44) inside, sticks out right: -> (20,10,40,38) */
	};
	int32_t cl[6] = {1, 2, 3, 4, 5, 6};
	int n = aug_boxes_crop(c, cl, 6, 10, 20, 50, 60);
	CHECK(n == 3);
	CHECK(c[0] == 2 && c[1] == 2 && c[2] == 10 && c[3] == 10);
	CHECK(c[4] == 0 && c[5] == 0 && c[6] == 20 && c[7] == 30);
	CHECK(c[8] == 20 && c[9] == 10 && c[10] == 40 && c[11] == 38);
	CHECK(cl[0] == 1 && cl[1] == 2 && cl[2] == 6);

	/* resize: scale by (S/w, S/h) in f32, clip to [0, S] */
	float r[8] = {10, 10, 20, 30, -4, 5, 700, 90};
	aug_boxes_resize(r, 2, 640, 480, 512);
	float sx = (float)(512.0 / 640), sy = (float)(512.0 / 480);
	CHECK(r[0] == 10 * sx && r[1] == 10 * sy && r[2] == 20 * sx && r[3] == 30 * sy);
	CHECK(r[4] == 0 && r[5] == 5 * sy && r[6] == 512 && r[7] == 90 * sy);

	/* IoU without +1 */
	float p[4] = {0, 0, 10, 10}, q[4] = {5, 0, 15, 10}, z[4] = {20, 20, 30, 30};
	CHECK_NEAR(aug_iou(p, q), 50.0 / 150.0, 1e-7);
	CHECK(aug_iou(p, z) == 0);
	CHECK(aug_iou(p, p) == 1);
}

static void test_draws(void)
{
	data_config c;
	data_config_default(&c);
	int expanded = 0, cropped = 0, ok = 1, iou_ok = 1;
	for (int s = 0; s < 2000; s++) {
		rng r;
		rng_seed3(&r, 5, 0, (uint64_t)s);
		aug_geom g = {.w = 50, .h = 30, .size = 64};
		aug_draw_expand(&g, &r, &c);
		expanded += g.cw != 50;
		ok &= g.cw >= 50 && g.cw <= 200 && g.ch >= 30 && g.ch <= 120;
		ok &= g.left >= 0 && g.top >= 0 && g.left + 50 <= g.cw && g.top + 30 <= g.ch;
		float bx[8] = {(float)g.left + 5, (float)g.top + 5, (float)g.left + 20, (float)g.top + 25,
			       (float)g.left + 30, (float)g.top + 2, (float)g.left + 48, (float)g.top + 12};
		if (aug_draw_crop(&g, &r, &c, bx, 2)) {
			cropped++;
			int any = 0;
			for (int i = 0; i < 2; i++) {
				float cx = (bx[4 * i] + bx[4 * i + 2]) / 2, cy = (bx[4 * i + 1] + bx[4 * i + 3]) / 2;
				any |= cx > g.x0 && cx < g.x1 && cy > g.y0 && cy < g.y1;
			}
			ok &= any && g.x0 >= 0 && g.y0 >= 0 && g.x1 <= g.cw && g.y1 <= g.ch && g.x1 > g.x0 && g.y1 > g.y0;
			/* new_w >= 0.3 w and new_h/new_w in [0.5, 2], up to the int truncation */
			ok &= g.x1 - g.x0 >= (int)(0.3 * g.cw) - 1 && g.y1 - g.y0 >= (int)(0.3 * g.ch) - 1;
		} else {
			ok &= g.x0 == 0 && g.y0 == 0 && g.x1 == g.cw && g.y1 == g.ch && !g.crop;
		}
	}
	CHECK(ok);
	CHECK_MSG(expanded > 850 && expanded < 1150, "expanded %d of 2000 (prob 0.5)", expanded);
	/* no crop is 1 of 7 modes per round; a mode whose IoU no patch reaches is redrawn, so
	 * with these small boxes on expanded canvases fewer than 6/7 of the images are cropped */
	CHECK_MSG(cropped > 1000 && cropped < 1800, "cropped %d of 2000", cropped);

	/* a min IoU mode that no patch satisfies for a tiny box ends in "no crop" eventually */
	c.n_min_ious = 1;
	c.min_ious[0] = 0.99;
	for (int s = 0; s < 50; s++) {
		rng r;
		rng_seed3(&r, 9, 9, (uint64_t)s);
		aug_geom g = {.cw = 100, .ch = 100};
		float tiny[4] = {50, 50, 51, 51};
		if (aug_draw_crop(&g, &r, &c, tiny, 1)) {
			float patch[4] = {(float)g.x0, (float)g.y0, (float)g.x1, (float)g.y1};
			iou_ok &= aug_iou(patch, tiny) >= 0; /* only mode 0 (any IoU) can crop */
		}
	}
	CHECK(iou_ok);
}

/* ---------------------------------------------------------------- pixels */

static void test_hsv(void)
{
	float hsv[3], rgb[3];
	aug_rgb2hsv((float[]){255, 0, 0}, hsv);
	CHECK_NEAR(hsv[0], 0, 1e-4);
	CHECK_NEAR(hsv[1], 1, 1e-6);
	CHECK(hsv[2] == 255);
	aug_rgb2hsv((float[]){0, 200, 0}, hsv);
	CHECK_NEAR(hsv[0], 120, 1e-3);
	aug_rgb2hsv((float[]){0, 0, 100}, hsv);
	CHECK_NEAR(hsv[0], 240, 1e-3);
	aug_rgb2hsv((float[]){77, 77, 77}, hsv);
	CHECK(hsv[1] == 0 && hsv[2] == 77);
	aug_hsv2rgb((float[]){300, 0.5f, 200}, rgb); /* magenta side: r = v, g = v(1-s), b between */
	CHECK_NEAR(rgb[0], 200, 1e-3);
	CHECK_NEAR(rgb[1], 100, 1e-3);
	CHECK_NEAR(rgb[2], 200, 1e-3);

	/* round trip: identity up to float rounding, also with channels below 0 or above 255
	 * (brightness, contrast) as long as V >= 0: OpenCV's S = diff / |V| does not invert for V < 0 */
	double worst[2] = {0, 0}; /* pixel values 0..255; -40..300 */
	rng r;
	rng_seed(&r, 11);
	for (int i = 0; i < 200000; i++) {
		float in[3], out[3];
		int ext = i >= 100000;
		for (int c = 0; c < 3; c++)
			in[c] = ext ? (float)rng_uniform(&r, -40, 300) : (float)rng_randint(&r, 256);
		if (fmaxf(in[0], fmaxf(in[1], in[2])) < 0)
			continue;
		aug_rgb2hsv(in, hsv);
		aug_hsv2rgb(hsv, out);
		for (int c = 0; c < 3; c++) {
			double d = fabs(out[c] - in[c]) / fmax(1.0, fabs(in[c]));
			worst[ext] = d > worst[ext] ? d : worst[ext];
		}
	}
	CHECK_MSG(worst[0] <= 1e-4, "HSV round trip of 0..255: worst relative error %g", worst[0]);
	/* S > 1 (a negative channel) amplifies the rounding a little */
	CHECK_MSG(worst[1] <= 1e-3, "HSV round trip of -40..300: worst relative error %g", worst[1]);
	printf("HSV round trip: worst relative error %.3g (0..255), %.3g (-40..300)\n", worst[0], worst[1]);
}

static int read_fixture(const char *path, record ***recs)
{
	stream_reader *s = stream_open_read(path);
	if (!s) {
		fprintf(stderr, "%s\n", err_msg());
		return -1;
	}
	int n = 0, rc;
	record *r;
	*recs = NULL;
	while ((rc = stream_read(s, &r)) > 0) {
		*recs = realloc(*recs, (size_t)(n + 1) * sizeof **recs);
		(*recs)[n++] = r;
	}
	if (rc < 0)
		fprintf(stderr, "%s\n", err_msg());
	stream_close_read(s);
	return rc < 0 ? -1 : n;
}

static void free_fixture(record **recs, int n)
{
	for (int i = 0; i < n; i++)
		record_free(recs[i]);
	free(recs);
}

static void test_photometric_fixture(void)
{
	record **recs;
	int n = read_fixture(FIX "photometric.tns", &recs);
	CHECK_MSG(n == 6, "photometric fixture: %d records", n);
	if (n < 2) {
		free_fixture(recs, n > 0 ? n : 0);
		return;
	}
	const tensor *in = record_find(recs[0], "image");
	int h = (int)in->shape[1], w = (int)in->shape[2];
	size_t np = (size_t)3 * w * h;
	float *img = malloc(np * sizeof *img);
	for (int k = 1; k < n; k++) {
		const record *r = recs[k];
		aug_photo p = {
			.brightness = (int)meta_num(r, "brightness", 0), .delta = (float)meta_num(r, "delta", 0),
			.contrast_first = (int)meta_num(r, "contrast_first", 0), .contrast = (int)meta_num(r, "contrast", 0),
			.alpha = (float)meta_num(r, "alpha", 1), .saturation = (int)meta_num(r, "saturation", 0),
			.sat = (float)meta_num(r, "sat", 1), .hue = (int)meta_num(r, "hue", 0),
			.hue_shift = (float)meta_num(r, "hue_shift", 0), .swap = (int)meta_num(r, "swap", 0)};
		const cJSON *perm = cJSON_GetObjectItem(r->meta, "perm");
		for (int c = 0; c < 3; c++)
			p.perm[c] = cJSON_GetArrayItem(perm, c)->valueint;
		for (size_t i = 0; i < np; i++)
			img[i] = ((const uint8_t *)in->data)[i];
		aug_photometric(img, w, h, w, (ptrdiff_t)w * h, &p, 1);
		const float *want = record_find(r, "out")->data;
		double worst = 0;
		for (size_t i = 0; i < np; i++) {
			double d = fabs(img[i] - want[i]) / fmax(1.0, fabs(want[i]));
			worst = d > worst || d != d ? d : worst;
		}
		CHECK_MSG(worst <= 1e-5, "photometric case %d: worst relative difference %g", k, worst);
	}
	free(img);
	free_fixture(recs, n);
}

static void test_geometry_fixture(void)
{
	record **recs;
	int n = read_fixture(FIX "geometry.tns", &recs);
	CHECK_MSG(n == 9, "geometry fixture: %d records", n);
	if (n < 2) {
		free_fixture(recs, n > 0 ? n : 0);
		return;
	}
	aug_image im;
	CHECK(aug_image_view(&im, recs[0], 0) == 0);
	aug_work *wk = aug_work_new();
	for (int k = 1; k < n; k++) {
		const record *r = recs[k];
		aug_geom g = {.w = im.w, .h = im.h};
		g.cw = (int)meta_num(r, "cw", 0);
		g.ch = (int)meta_num(r, "ch", 0);
		g.left = (int)meta_num(r, "left", 0);
		g.top = (int)meta_num(r, "top", 0);
		g.crop = (int)meta_num(r, "crop", 0);
		g.x0 = (int)meta_num(r, "x0", 0);
		g.y0 = (int)meta_num(r, "y0", 0);
		g.x1 = (int)meta_num(r, "x1", 0);
		g.y1 = (int)meta_num(r, "y1", 0);
		g.size = (int)meta_num(r, "size", 0);
		g.flip = (int)meta_num(r, "flip", 0);
		aug_opts o;
		opts_init(&o, 1, g.size);
		ttarget t;
		tt_init(&t, g.size, im.n);
		aug_photo p = {.perm = {0, 1, 2}};
		CHECK(aug_apply(&t.t, &im, &p, 0, &g, &o, wk) == 0);
		const tensor *want = record_find(r, "out"), *wb = record_find(r, "boxes"), *wl = record_find(r, "labels");
		double d = max_abs_diff(t.t.pixels, want->data, (size_t)tensor_numel(want));
		CHECK_MSG(d <= 1e-5, "geometry case %d (size %d): pixels differ by %g", k, g.size, d);
		CHECK_MSG(t.t.n == wb->shape[0], "geometry case %d: %d boxes, want %lld", k, t.t.n, (long long)wb->shape[0]);
		if (t.t.n == wb->shape[0]) {
			CHECK_MSG(max_abs_diff(t.t.boxes, wb->data, (size_t)t.t.n * 4) == 0, "geometry case %d: boxes differ", k);
			CHECK(memcmp(t.t.labels, wl->data, (size_t)t.t.n * 4) == 0);
		}
		tt_free(&t);
	}
	aug_work_free(wk);
	free_fixture(recs, n);
}

/* The slow path: materialise the expanded canvas, crop it, resize with the plain kernel,
 * flip, normalise. */
static void slow_path(float *out, const aug_image *im, const aug_photo *p, int pon, const aug_geom *g,
		      const aug_opts *o)
{
	aug_norm nm;
	aug_norm_init(&nm, &o->cfg);
	int w = im->w, h = im->h, kw = g->x1 - g->x0, kh = g->y1 - g->y0, S = g->size;
	float *img = malloc((size_t)3 * w * h * sizeof *img);
	for (size_t i = 0; i < (size_t)3 * w * h; i++)
		img[i] = im->pixels[i];
	aug_photometric(img, w, h, w, (ptrdiff_t)w * h, p, pon);
	float *canvas = malloc((size_t)3 * g->cw * g->ch * sizeof *canvas);
	for (int c = 0; c < 3; c++)
		for (int y = 0; y < g->ch; y++)
			for (int x = 0; x < g->cw; x++) {
				int sx = x - g->left, sy = y - g->top;
				canvas[((size_t)c * g->ch + y) * g->cw + x] = sx >= 0 && sx < w && sy >= 0 && sy < h
										   ? img[((size_t)c * h + sy) * w + sx]
										   : nm.fill[c];
			}
	float *crop = malloc((size_t)kw * kh * sizeof *crop), *res = malloc((size_t)S * S * sizeof *res);
	for (int c = 0; c < 3; c++) {
		for (int y = 0; y < kh; y++)
			for (int x = 0; x < kw; x++)
				crop[y * kw + x] = canvas[((size_t)c * g->ch + g->y0 + y) * g->cw + g->x0 + x];
		aug_resize_ref(res, S, S, crop, kw, kh);
		float *o_c = out + (size_t)nm.out_chan[c] * S * S;
		for (int y = 0; y < S; y++)
			for (int x = 0; x < S; x++) {
				float v = res[y * S + (g->flip ? S - 1 - x : x)];
				o_c[y * S + x] = (v - nm.mean[c]) * nm.istd[c];
			}
	}
	free(img);
	free(canvas);
	free(crop);
	free(res);
}

static void test_fused_vs_slow(void)
{
	static const int sizes[][2] = {{1, 1}, {2, 3}, {5, 7}, {13, 9}, {31, 17}, {40, 64}, {64, 48}};
	static const int outs[] = {1, 3, 7, 16, 33};
	aug_work *wk = aug_work_new();
	int cases = 0, bad = 0, crops = 0, expands = 0;
	for (int si = 0; si < 7; si++)
		for (int oi = 0; oi < 5; oi++)
			for (int s = 0; s < 12; s++) {
				timg ti;
				int w = sizes[si][0], h = sizes[si][1], S = outs[oi];
				timg_random(&ti, w, h, w > 2 && h > 2 ? 4 : 0, (uint64_t)(si * 1000 + oi * 100 + s));
				aug_opts o;
				opts_init(&o, 1, S);
				o.cfg.to_rgb = s & 1; /* also the BGR output order */
				rng r;
				rng_seed3(&r, 42, (uint64_t)si, (uint64_t)(oi * 100 + s));
				aug_photo p;
				aug_draw_photo(&p, &r, &o.cfg);
				aug_geom g = {.w = w, .h = h, .size = S};
				aug_draw_expand(&g, &r, &o.cfg);
				float bx[16];
				memcpy(bx, ti.boxes, (size_t)ti.im.n * 4 * sizeof *bx);
				aug_boxes_shift(bx, ti.im.n, (float)g.left, (float)g.top);
				aug_draw_crop(&g, &r, &o.cfg, bx, ti.im.n);
				g.flip = (int)rng_randint(&r, 2);
				crops += g.crop;
				expands += g.cw != w;
				ttarget t;
				tt_init(&t, S, ti.im.n);
				float *slow = malloc((size_t)3 * S * S * sizeof *slow);
				if (aug_apply(&t.t, &ti.im, &p, 1, &g, &o, wk) < 0)
					bad++;
				slow_path(slow, &ti.im, &p, 1, &g, &o);
				if (memcmp(slow, t.t.pixels, (size_t)3 * S * S * sizeof *slow) != 0) {
					if (bad++ < 5)
						fprintf(stderr, "fused != slow: %dx%d -> %d, canvas %dx%d at %d,%d, patch %d,%d-%d,%d flip %d: %g\n",
							w, h, S, g.cw, g.ch, g.left, g.top, g.x0, g.y0, g.x1, g.y1, g.flip,
							max_abs_diff(slow, t.t.pixels, (size_t)3 * S * S));
				}
				cases++;
				free(slow);
				tt_free(&t);
				timg_free(&ti);
			}
	CHECK_MSG(bad == 0, "fused expand+crop+resize differs from the slow path in %d of %d cases", bad, cases);
	CHECK_MSG(crops > cases / 3 && expands > cases / 4, "parameters too tame: %d crops, %d expands of %d", crops,
		  expands, cases);
	aug_work_free(wk);
}

/* A red rectangle on a green image with its box: after any train transform the box must
 * cover red output pixels and nothing red may lie outside it (away from interpolation
 * borders). Photometric is off so the colours stay known. */
static void test_paint_consistency(void)
{
	int w = 64, h = 48, S = 64, bad = 0, checked = 0;
	aug_work *wk = aug_work_new();
	aug_opts o;
	opts_init(&o, 1, S);
	o.cfg.photometric = 0;
	aug_norm nm;
	aug_norm_init(&nm, &o.cfg);
	for (int seed = 0; seed < 300; seed++) {
		timg ti;
		timg_init(&ti, w, h, 2);
		int x0 = 10 + seed % 17, y0 = 6 + seed % 11, x1 = x0 + 14 + seed % 9, y1 = y0 + 10 + seed % 13;
		for (int y = 0; y < h; y++)
			for (int x = 0; x < w; x++) {
				int in = x >= x0 && x < x1 && y >= y0 && y < y1;
				ti.px[(0 * h + y) * w + x] = in ? 250 : 20;
				ti.px[(1 * h + y) * w + x] = in ? 10 : 220;
				ti.px[(2 * h + y) * w + x] = in ? 10 : 40;
			}
		float bx[8] = {(float)x0, (float)y0, (float)x1, (float)y1, 1, 1, 3, 3};
		memcpy(ti.boxes, bx, sizeof bx);
		ti.labels[0] = 5;
		ti.labels[1] = 6;
		ti.diff[1] = 1; /* dropped in train */
		ti.im.index = seed;
		ttarget t;
		tt_init(&t, S, 2);
		CHECK(aug_one(&t.t, &ti.im, &o, wk) == 0);
		int found = -1;
		for (int i = 0; i < t.t.n; i++)
			if (t.t.labels[i] == 5)
				found = i;
			else
				bad++; /* the difficult box must be gone */
		const aug_geom *g = &t.t.geom;
		/* interpolation spreads a source edge over about one source pixel */
		float margin = 1.5f + fmaxf((float)S / (g->x1 - g->x0), (float)S / (g->y1 - g->y0));
		for (int y = 0; y < S; y++)
			for (int x = 0; x < S; x++) {
				float r = t.t.pixels[(0 * S + y) * S + x] / nm.istd[0] + nm.mean[0];
				float gg = t.t.pixels[(1 * S + y) * S + x] / nm.istd[1] + nm.mean[1];
				int red = r > 240 && gg < 20;
				float cx = x + 0.5f, cy = y + 0.5f;
				if (found >= 0) {
					const float *b = t.t.boxes + 4 * found;
					int inside = cx > b[0] + margin && cx < b[2] - margin && cy > b[1] + margin && cy < b[3] - margin;
					int outside = cx < b[0] - margin || cx > b[2] + margin || cy < b[1] - margin || cy > b[3] + margin;
					if ((inside && !red) || (outside && red)) {
						if (bad++ < 5)
							fprintf(stderr, "seed %d: pixel (%d,%d) red=%d, box %g %g %g %g\n", seed, x, y,
								red, b[0], b[1], b[2], b[3]);
					}
					checked += inside || outside;
				} else if (red && x > margin && y > margin && x < S - margin && y < S - margin) {
					/* the rectangle was cropped away (its centre is outside): at most a sliver of it may remain */
					checked++;
				}
			}
		tt_free(&t);
		timg_free(&ti);
	}
	CHECK_MSG(bad == 0, "painted rectangle and its box disagree (%d)", bad);
	CHECK(checked > 300 * S * S / 2);
	aug_work_free(wk);
}

static void test_eval(void)
{
	timg ti;
	timg_random(&ti, 37, 21, 3, 99);
	aug_opts o;
	opts_init(&o, 0, 50);
	aug_work *wk = aug_work_new();
	ttarget t;
	tt_init(&t, 50, 3);
	CHECK(aug_one(&t.t, &ti.im, &o, wk) == 0);
	/* boxes, labels and difficult flags are untouched */
	CHECK(t.t.n == 3 && memcmp(t.t.boxes, ti.boxes, 12 * sizeof(float)) == 0);
	CHECK(memcmp(t.t.difficult, ti.diff, 3) == 0);
	/* pixels: the plain resize rounded to integers, normalised */
	aug_norm nm;
	aug_norm_init(&nm, &o.cfg);
	float *src = malloc(37 * 21 * sizeof *src), *res = malloc(50 * 50 * sizeof *res);
	double worst = 0;
	for (int c = 0; c < 3; c++) {
		for (int i = 0; i < 37 * 21; i++)
			src[i] = ti.px[c * 37 * 21 + i];
		aug_resize_ref(res, 50, 50, src, 37, 21);
		for (int i = 0; i < 50 * 50; i++) {
			float v = (floorf(res[i] + 0.5f) - nm.mean[c]) * nm.istd[c];
			double d = fabs(v - t.t.pixels[c * 2500 + i]);
			worst = d > worst ? d : worst;
		}
	}
	CHECK_MSG(worst == 0, "eval pixels differ by %g", worst);
	free(src);
	free(res);
	tt_free(&t);
	timg_free(&ti);
	aug_work_free(wk);
}

/* ---------------------------------------------------------------- batches, threads */

static void run_batch(aug_pool *pool, aug_job *jobs, timg *imgs, int n, const aug_opts *o, record **out)
{
	for (int i = 0; i < n; i++)
		jobs[i].in = imgs[i].im;
	*out = aug_batch_begin(jobs, n, o);
	CHECK(*out != NULL);
	CHECK(aug_pool_run(pool, jobs, n, o) == 0);
	CHECK(aug_batch_end(*out, jobs, n, o) == 0);
}

static int same_records(const record *a, const record *b)
{
	if (a->ntensors != b->ntensors)
		return 0;
	for (int i = 0; i < a->ntensors; i++)
		if (strcmp(a->tensors[i].name, b->tensors[i].name) || tensor_nbytes(&a->tensors[i]) != tensor_nbytes(&b->tensors[i]) ||
		    memcmp(a->tensors[i].data, b->tensors[i].data, tensor_nbytes(&a->tensors[i])))
			return 0;
	char *ma = cJSON_PrintUnformatted(a->meta), *mb = cJSON_PrintUnformatted(b->meta);
	int same = !strcmp(ma, mb);
	cJSON_free(ma);
	cJSON_free(mb);
	return same;
}

static void test_batches_and_threads(void)
{
	enum { N = 7 };
	timg imgs[N];
	for (int i = 0; i < N; i++) {
		timg_random(&imgs[i], 20 + 7 * i, 30 - 2 * i, i % 4 == 3 ? 0 : 2 + i, 500 + (uint64_t)i);
		imgs[i].im.index = 100 + i;
		imgs[i].im.epoch = 2;
		imgs[i].im.id = i % 2 ? "odd" : NULL;
	}
	aug_opts o;
	opts_init(&o, 1, 40);
	o.seed = 17;
	record *ref = NULL;
	for (int th = 1; th <= 4; th++) {
		aug_pool *pool = aug_pool_new(th);
		aug_job jobs[N];
		record *b;
		run_batch(pool, jobs, imgs, N, &o, &b);
		if (!ref)
			ref = b;
		else {
			CHECK_MSG(same_records(ref, b), "batch with %d threads differs from 1 thread", th);
			record_free(b);
		}
		aug_pool_free(pool);
	}
	/* batches completed by the workers (aug_pool_submit_batch) equal the plain path, and
	 * two batches in flight at once do not disturb each other */
	{
		aug_pool *pool = aug_pool_new(3);
		aug_job jobs[2][N];
		aug_batch bt[2];
		for (int k = 0; k < 2; k++) {
			for (int i = 0; i < N; i++)
				jobs[k][i].in = imgs[i].im;
			bt[k] = (aug_batch){.jobs = jobs[k], .n = N, .level = k ? 1 : AUG_NO_ENCODE};
			bt[k].rec = aug_batch_begin(jobs[k], N, &o);
			CHECK(bt[k].rec && aug_pool_submit_batch(pool, &bt[k], &o) == 0);
		}
		CHECK(aug_pool_wait(pool, jobs[1], N) == 0 && aug_pool_wait(pool, jobs[0], N) == 0);
		CHECK(same_records(ref, bt[0].rec) && same_records(ref, bt[1].rec));
		CHECK(!bt[0].rec->frame && bt[1].rec->frame && bt[1].rec->frame_len > 0);
		record_free(bt[0].rec);
		record_free(bt[1].rec);
		aug_pool_free(pool);
	}

	/* contract: shapes, padding, nbox, meta */
	const tensor *img = record_find(ref, "image"), *bx = record_find(ref, "boxes"), *lb = record_find(ref, "labels"),
		     *nb = record_find(ref, "nbox");
	CHECK(img && img->ndim == 4 && img->shape[0] == N && img->shape[1] == 3 && img->shape[2] == 40 && img->shape[3] == 40);
	CHECK(bx && lb && nb && !record_find(ref, "scale_factor"));
	if (bx && lb && nb) {
		int m = (int)bx->shape[1], maxn = 0, pad_ok = 1;
		for (int i = 0; i < N; i++) {
			int k = ((int32_t *)nb->data)[i];
			maxn = k > maxn ? k : maxn;
			for (int j = 0; j < m; j++) {
				int32_t l = ((int32_t *)lb->data)[i * m + j];
				pad_ok &= j < k ? l >= 0 : l == -1;
				for (int c = 0; c < 4 && j >= k; c++)
					pad_ok &= ((float *)bx->data)[(i * m + j) * 4 + c] == 0;
			}
		}
		CHECK(m == maxn && pad_ok);
	}
	CHECK(!strcmp(meta_str(ref, "mode", ""), "train") && !strcmp(meta_str(ref, "boxes_frame", ""), "input"));
	CHECK(meta_num(ref, "epoch", -1) == 2 && meta_num(ref, "size", 0) == 40);
	const cJSON *ids = cJSON_GetObjectItem(ref->meta, "ids"), *idx = cJSON_GetObjectItem(ref->meta, "indices");
	CHECK(cJSON_GetArraySize(ids) == N && cJSON_IsNull(cJSON_GetArrayItem(ids, 0)) &&
	      !strcmp(cJSON_GetArrayItem(ids, 1)->valuestring, "odd"));
	CHECK(cJSON_GetArraySize(idx) == N && cJSON_GetArrayItem(idx, 6)->valuedouble == 106);

	/* an image's result does not depend on its batch: image 3 alone equals its slot */
	aug_pool *pool = aug_pool_new(2);
	aug_job one[1];
	record *b1;
	run_batch(pool, one, imgs + 3, 1, &o, &b1);
	const float *a = record_find(b1, "image")->data, *full = (const float *)img->data + (size_t)3 * 3 * 40 * 40;
	CHECK(memcmp(a, full, 3 * 40 * 40 * sizeof(float)) == 0);
	record_free(b1);

	/* eval batch: scale factors and original sizes */
	opts_init(&o, 0, 32);
	aug_job jobs[N];
	record *e;
	run_batch(pool, jobs, imgs, N, &o, &e);
	const tensor *sf = record_find(e, "scale_factor"), *os = record_find(e, "orig_size"), *df = record_find(e, "difficult");
	CHECK(sf && os && df && sf->shape[0] == N && sf->shape[1] == 4);
	if (sf && os) {
		const float *f = sf->data;
		const int32_t *s = os->data;
		CHECK(f[4 * 2 + 0] == (float)(32.0 / imgs[2].im.w) && f[4 * 2 + 1] == (float)(32.0 / imgs[2].im.h));
		CHECK(f[4 * 2 + 2] == f[4 * 2 + 0] && f[4 * 2 + 3] == f[4 * 2 + 1]);
		CHECK(s[2 * 5] == imgs[5].im.h && s[2 * 5 + 1] == imgs[5].im.w);
	}
	CHECK(!strcmp(meta_str(e, "boxes_frame", ""), "original") && !strcmp(meta_str(e, "mode", ""), "eval"));
	const tensor *en = record_find(e, "nbox");
	CHECK(en && ((int32_t *)en->data)[1] == imgs[1].im.n); /* difficult boxes kept */
	record_free(e);
	aug_pool_free(pool);
	record_free(ref);
	for (int i = 0; i < N; i++)
		timg_free(&imgs[i]);
}

/* ---------------------------------------------------------------- records, config */

static void test_image_view(void)
{
	aug_image im;
	record *r = record_new("image");
	record_add(r, "image", DT_U8, 3, (int64_t[]){3, 4, 5});
	record_add(r, "boxes", DT_F32, 2, (int64_t[]){2, 4});
	CHECK(aug_image_view(&im, r, 0) < 0 && strstr(err_msg(), "no tensor 'labels'"));
	record_add(r, "labels", DT_I32, 1, (int64_t[]){3});
	CHECK(aug_image_view(&im, r, 0) < 0 && strstr(err_msg(), "3 labels for 2 boxes"));
	record_free(r);

	r = record_new("image");
	record_add(r, "image", DT_U8, 3, (int64_t[]){3, 4, 5});
	record_add(r, "boxes", DT_F32, 2, (int64_t[]){2, 4});
	record_add(r, "labels", DT_I32, 1, (int64_t[]){2});
	cJSON_AddNumberToObject(r->meta, "index", 12);
	CHECK(aug_image_view(&im, r, 3) == 0 && im.w == 5 && im.h == 4 && im.n == 2 && im.index == 12 && im.epoch == 0 &&
	      !im.difficult);
	record_add(r, "difficult", DT_U8, 1, (int64_t[]){1});
	CHECK(aug_image_view(&im, r, 0) < 0 && strstr(err_msg(), "'difficult'"));
	record_free(r);

	r = record_new("image");
	record_add(r, "image", DT_F32, 3, (int64_t[]){3, 4, 5});
	CHECK(aug_image_view(&im, r, 0) < 0 && strstr(err_msg(), "tensor 'image' is f32"));
	record_free(r);
	r = record_new("image");
	record_add(r, "image", DT_U8, 3, (int64_t[]){1, 4, 5});
	CHECK(aug_image_view(&im, r, 0) < 0 && strstr(err_msg(), "expected u8[3,H,W]"));
	record_free(r);
	r = record_new("image");
	record_add(r, "image", DT_U8, 3, (int64_t[]){3, 4, 5});
	tensor *b = record_add(r, "boxes", DT_F32, 2, (int64_t[]){1, 4});
	((float *)b->data)[2] = NAN;
	record_add(r, "labels", DT_I32, 1, (int64_t[]){1});
	CHECK(aug_image_view(&im, r, 0) < 0 && strstr(err_msg(), "not finite"));
	record_free(r);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static void test_config(void)
{
	data_config d, c;
	data_config_default(&d);
	c = d;
	CHECK(data_config_load(&c, "configs/ssd_mobilenet_fpn.json") == 0);
	CHECK(memcmp(&c, &d, sizeof c) == 0); /* the shipped config says what the defaults say */

	char path[] = "/tmp/test_augment_cfgXXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	close(fd);
	write_file(path, "{\"data\": {\"size\": 300, \"to_rgb\": false, \"mean\": [1, 2, 3],"
			 " \"train\": {\"expand\": false, \"min_iou_crop\": {\"min_ious\": [0.5]}, \"flip_ratio\": 0}}}");
	c = d;
	CHECK(data_config_load(&c, path) == 0);
	CHECK(c.size == 300 && !c.to_rgb && c.mean[2] == 3 && !c.expand && c.min_iou_crop && c.n_min_ious == 1 &&
	      c.min_ious[0] == 0.5 && c.flip_ratio == 0 && c.photometric && c.std[0] == d.std[0]);

	static const struct {
		const char *json, *msg;
	} bad[] = {
		{"{\"data\": {\"size\": \"big\"}}", "data.size: expected a number"},
		{"{\"data\": {\"size\": 12.5}}", "data.size: expected an integer"},
		{"{\"data\": {\"sise\": 300}}", "data.sise: unknown key"},
		{"{\"data\": {\"mean\": [1, 2]}}", "data.mean: expected an array of 3 numbers"},
		{"{\"data\": {\"std\": [1, 0, 1]}}", "data.std[1]: expected a number"},
		{"{\"data\": {\"to_rgb\": 1}}", "data.to_rgb: expected true or false"},
		{"{\"data\": {\"train\": {\"expand\": {\"prob\": 2}}}}", "data.train.expand.prob: expected a number in [0, 1]"},
		{"{\"data\": {\"train\": {\"expand\": {\"ratio_range\": [3, 2]}}}}", "ratio_range: expected [low, high]"},
		{"{\"data\": {\"train\": {\"photometric\": {\"hue\": 3}}}}", "data.train.photometric.hue: unknown key"},
		{"{\"data\": {\"train\": {\"min_iou_crop\": 3}}}", "data.train.min_iou_crop: expected an object"},
		{"{\"data\": {\"train\": []}}", "data.train: expected an object"},
		{"{\"data\": {\"size\": 300", "line 1: invalid JSON"},
		{"[1]", "expected a JSON object"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		write_file(path, bad[i].json);
		c = d;
		int rc = data_config_load(&c, path);
		CHECK_MSG(rc < 0 && strstr(err_msg(), bad[i].msg) && strstr(err_msg(), path), "config %s: rc %d, '%s'",
			  bad[i].json, rc, err_msg());
		CHECK(memcmp(&c, &d, sizeof c) == 0); /* a failed load leaves the config alone */
	}
	unlink(path);
	c = d;
	CHECK(data_config_load(&c, "/nonexistent/x.json") < 0 && strstr(err_msg(), "No such file"));
}

int main(void)
{
	test_rng();
	test_boxes();
	test_draws();
	test_hsv();
	test_photometric_fixture();
	test_geometry_fixture();
	test_fused_vs_slow();
	test_paint_consistency();
	test_eval();
	test_batches_and_threads();
	test_image_view();
	test_config();
	return check_done("test_augment");
}
