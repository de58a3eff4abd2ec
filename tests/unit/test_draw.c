/* The output side of detection: draw_dets' pixels (decoded back from its PNG), the JPEG
 * and PNG encoders against the decoder, the dets pairing and the JSON numbers. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "eval/dets_out.h"
#include "core/err.h"
#include "eval/draw.h"
#include "data/image.h"

/* A dets record for one W x H image with the given boxes, scores and labels. */
static record *dets_of(int W, int H, int n, const float *boxes, const float *scores, const int32_t *labels)
{
	record *r = record_new("dets");
	tensor *b = record_add(r, "boxes", DT_F32, 2, (int64_t[]){n, 4});
	tensor *s = record_add(r, "scores", DT_F32, 1, (int64_t[]){n});
	tensor *l = record_add(r, "labels", DT_I32, 1, (int64_t[]){n});
	record_add(r, "gt_boxes", DT_F32, 2, (int64_t[]){0, 4});
	record_add(r, "gt_labels", DT_I32, 1, (int64_t[]){0});
	record_add(r, "gt_difficult", DT_U8, 1, (int64_t[]){0});
	memcpy(b->data, boxes, (size_t)n * 16);
	memcpy(s->data, scores, (size_t)n * 4);
	memcpy(l->data, labels, (size_t)n * 4);
	cJSON_AddStringToObject(r->meta, "id", "im");
	cJSON_AddNumberToObject(r->meta, "index", 4);
	cJSON_AddNumberToObject(r->meta, "width", W);
	cJSON_AddNumberToObject(r->meta, "height", H);
	cJSON_AddNumberToObject(r->meta, "num_classes", 3);
	return r;
}

/* Writes with f into memory and decodes it back. */
static unsigned char *round_trip(int (*write)(FILE *, void *), void *arg, int *w, int *h)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int rc = write(f, arg);
	fclose(f);
	unsigned char *chw = NULL;
	if (rc == 0 && image_size(buf, len, w, h) == 0) {
		chw = malloc((size_t)3 * *w * *h);
		if (image_decode_chw(buf, len, chw, *w, *h) < 0) {
			free(chw);
			chw = NULL;
		}
	}
	free(buf);
	return chw;
}

struct draw_args {
	const uint8_t *chw;
	dets_view *v;
	voc_classes *names;
	draw_style *st;
};

static int write_drawing(FILE *f, void *arg)
{
	struct draw_args *a = arg;
	return draw_dets(f, a->chw, a->v, a->names, a->st);
}

static int same(const unsigned char *chw, int W, int H, int x, int y, const unsigned char rgb[3])
{
	size_t plane = (size_t)W * H, i = (size_t)y * W + x;
	return chw[i] == rgb[0] && chw[plane + i] == rgb[1] && chw[2 * plane + i] == rgb[2];
}

static void test_draw_pixels(void)
{
	enum { W = 64, H = 48 };
	static uint8_t img[3 * W * H];
	memset(img, 100, sizeof img);
	/* [5.9, 20.1, 30.99, 40] -> columns 5..30, rows 20..40; the second is under the threshold */
	float boxes[8] = {5.9f, 20.1f, 30.99f, 40.f, 40, 5, 60, 15}, scores[2] = {0.8f, 0.1f};
	int32_t labels[2] = {1, 2};
	record *r = dets_of(W, H, 2, boxes, scores, labels);
	dets_view v;
	CHECK(dets_view_of(&v, r) == 0);
	voc_classes *names = voc_classes_load("configs/bccd.classes");
	CHECK(names && dets_check_classes(names, v.num_classes) == 0);
	draw_style st = {.score_thr = 0.3, .thickness = 1, .format = DRAW_PNG, .font_size = 8};
	struct draw_args a = {img, &v, names, &st};
	int w = 0, h = 0;
	unsigned char *out = round_trip(write_drawing, &a, &w, &h);
	CHECK(out && w == W && h == H);
	unsigned char c[3], grey[3] = {100, 100, 100};
	draw_class_colour(1, c);
	if (out) {
		int ok = 1;
		for (int y = 20; y <= 40; y++)
			ok &= same(out, W, H, 5, y, c) && same(out, W, H, 30, y, c) && same(out, W, H, 4, y, grey) &&
			      same(out, W, H, 31, y, grey) && same(out, W, H, 6, y > 21 && y < 40 ? y : 30, grey);
		for (int x = 5; x <= 30; x++)
			ok &= same(out, W, H, x, 40, c) && same(out, W, H, x, 41, grey);
		CHECK_MSG(ok, "the outline is not on columns 5, 30 and row 40 alone");
		/* nothing of the detection under the threshold */
		CHECK(same(out, W, H, 60, 14, grey) && same(out, W, H, 55, 15, grey));
	}
	free(out);
	voc_classes_free(names);
	record_free(r);
}

struct enc_args {
	const unsigned char *rgb;
	int w, h, png;
};

static int write_encoded(FILE *f, void *arg)
{
	struct enc_args *a = arg;
	return a->png ? image_write_png(f, a->rgb, (size_t)a->w * 3, a->w, a->h)
		      : image_write_jpeg(f, a->rgb, (size_t)a->w * 3, a->w, a->h, 100);
}

static void test_encoders(void)
{
	enum { W = 13, H = 7 };
	unsigned char rgb[W * H * 3];
	for (int i = 0; i < W * H * 3; i++)
		rgb[i] = (unsigned char)(i * 37 % 251);
	struct enc_args a = {rgb, W, H, 1};
	int w, h;
	unsigned char *chw = round_trip(write_encoded, &a, &w, &h);
	CHECK(chw && w == W && h == H);
	int exact = 1;
	for (int y = 0; chw && y < H; y++)
		for (int x = 0; x < W; x++)
			for (int c = 0; c < 3; c++)
				exact &= chw[(size_t)c * W * H + y * W + x] == rgb[(y * W + x) * 3 + c];
	CHECK_MSG(exact, "PNG does not decode to the pixels written");
	free(chw);
	/* JPEG is lossy: the size and a flat picture's value come back */
	memset(rgb, 77, sizeof rgb);
	a.png = 0;
	chw = round_trip(write_encoded, &a, &w, &h);
	CHECK(chw && w == W && h == H && abs(chw[0] - 77) <= 1 && abs(chw[3 * W * H - 1] - 77) <= 1);
	free(chw);
}

static void test_colours(void)
{
	/* neighbours differ clearly, and a class keeps its colour */
	for (int c = 0; c < 30; c++) {
		unsigned char a[3], b[3], a2[3];
		draw_class_colour(c, a);
		draw_class_colour(c + 1, b);
		draw_class_colour(c, a2);
		CHECK(!memcmp(a, a2, 3));
		CHECK(abs(a[0] - b[0]) + abs(a[1] - b[1]) + abs(a[2] - b[2]) > 60);
	}
}

static void test_pairs_and_json(void)
{
	float boxes[4] = {1.1f, 2.2f, 3.3f, 4.4f}, scores[1] = {0.7f};
	int32_t labels[1] = {2};
	record *d = dets_of(10, 10, 1, boxes, scores, labels);
	dets_view v;
	CHECK(dets_view_of(&v, d) == 0 && v.index == 4 && v.n == 1);
	dets_pairs *p = dets_pairs_new();
	CHECK(!dets_pairs_seen(p) && !dets_pairs_take(p, &v));
	CHECK(strstr(err_msg(), "no image record before them"));
	record *other = record_new("image");
	cJSON_AddStringToObject(other->meta, "id", "im");
	cJSON_AddNumberToObject(other->meta, "index", 3);
	record *mine = record_new("image");
	cJSON_AddStringToObject(mine->meta, "id", "im");
	cJSON_AddNumberToObject(mine->meta, "index", 4);
	CHECK(dets_pairs_add(p, other) == 0 && dets_pairs_add(p, mine) == 0 && dets_pairs_waiting(p) == 2);
	CHECK(!dets_pairs_take(p, &v) && strstr(err_msg(), "out of step"));
	dets_pairs_free(p);

	voc_classes *names = voc_classes_load("configs/bccd.classes");
	cJSON *o = dets_json(&v, "f.jpg", names, 0.5);
	cJSON *det = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "detections"), 0);
	CHECK(det && (float)cJSON_GetObjectItem(det, "score")->valuedouble == 0.7f);
	CHECK(det && !strcmp(cJSON_GetObjectItem(det, "class")->valuestring, "Platelets"));
	CHECK(det && (float)cJSON_GetArrayItem(cJSON_GetObjectItem(det, "box"), 3)->valuedouble == 4.4f);
	cJSON_Delete(o);
	o = dets_json(&v, NULL, names, 0.7); /* strictly above the threshold */
	CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "detections")) == 0 && cJSON_IsNull(cJSON_GetObjectItem(o, "file")));
	cJSON_Delete(o);
	/* a label outside the classes is refused */
	((int32_t *)record_find(d, "labels")->data)[0] = 3;
	CHECK(dets_view_of(&v, d) < 0 && strstr(err_msg(), "outside 0..2"));
	voc_classes_free(names);
	record_free(d);
}

int main(void)
{
	test_draw_pixels();
	test_encoders();
	test_colours();
	test_pairs_and_json();
	draw_cleanup();
	return check_done("test_draw");
}
