/* gen_dets: a synthetic dets stream (ssd-decode's output contract) for timing map-eval:
 * IMAGES images of 500 x 375 pixels, each with about GTS ground truth boxes of random
 * classes (1 in 10 difficult) and DETS detections: jittered copies of the gts (hits,
 * near misses, duplicates) and random boxes, scores uniform. Seeded, so the stream is the
 * same on every machine.
 * Usage: gen_dets [IMAGES [CLASSES [DETS [GTS [SEED]]]]] > dets.tns
 * (default 4952 images, 20 classes, 200 dets, 3 gts: VOC07 test's size) */
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/stream.h"
#include "tool/tool.h"

static void jitter(float *out, const float *b, rng *r, double amount)
{
	double w = b[2] - b[0], h = b[3] - b[1];
	out[0] = (float)(b[0] + rng_uniform(r, -amount, amount) * w);
	out[1] = (float)(b[1] + rng_uniform(r, -amount, amount) * h);
	out[2] = (float)(b[2] + rng_uniform(r, -amount, amount) * w);
	out[3] = (float)(b[3] + rng_uniform(r, -amount, amount) * h);
}

int main(int argc, char **argv)
{
	tool_init("gen_dets");
	long images = argc > 1 ? arg_long("IMAGES", argv[1], 1, 10000000) : 4952;
	int classes = argc > 2 ? (int)arg_long("CLASSES", argv[2], 1, 10000) : 20;
	int ndet = argc > 3 ? (int)arg_long("DETS", argv[3], 0, 100000) : 200;
	int ngt_mean = argc > 4 ? (int)arg_long("GTS", argv[4], 0, 1000) : 3;
	long seed = argc > 5 ? arg_long("SEED", argv[5], 0, 1L << 62) : 0;
	refuse_terminal_stdout();
	stream_writer *w = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	if (!w)
		die_err();
	const float W = 500, H = 375;
	for (long i = 0; i < images; i++) {
		rng r;
		rng_seed3(&r, (uint64_t)seed, 7, (uint64_t)i);
		int G = (int)rng_randint(&r, (uint32_t)(2 * ngt_mean + 1));
		record *rec = record_new("dets");
		tensor *gb = record_add(rec, "gt_boxes", DT_F32, 2, (int64_t[]){G, 4});
		tensor *gl = record_add(rec, "gt_labels", DT_I32, 1, (int64_t[]){G});
		tensor *gd = record_add(rec, "gt_difficult", DT_U8, 1, (int64_t[]){G});
		tensor *db = record_add(rec, "boxes", DT_F32, 2, (int64_t[]){ndet, 4});
		tensor *ds = record_add(rec, "scores", DT_F32, 1, (int64_t[]){ndet});
		tensor *dl = record_add(rec, "labels", DT_I32, 1, (int64_t[]){ndet});
		if (!gb || !gl || !gd || !db || !ds || !dl)
			die_err();
		float *g = gb->data, *b = db->data, *s = ds->data;
		int32_t *l = gl->data, *L = dl->data;
		for (int k = 0; k < G; k++) {
			float x = (float)rng_uniform(&r, 0, W - 40), y = (float)rng_uniform(&r, 0, H - 40);
			g[4 * k] = x;
			g[4 * k + 1] = y;
			g[4 * k + 2] = x + (float)rng_uniform(&r, 20, W - x);
			g[4 * k + 3] = y + (float)rng_uniform(&r, 20, H - y);
			l[k] = (int32_t)rng_randint(&r, (uint32_t)classes);
			((uint8_t *)gd->data)[k] = rng_randint(&r, 10) == 0;
		}
		for (int k = 0; k < ndet; k++) {
			if (G && k < 4 * G) { /* around a gt, mostly its class */
				int j = k % G;
				jitter(b + 4 * k, g + 4 * j, &r, k < G ? 0.05 : 0.3);
				L[k] = rng_randint(&r, 5) ? l[j] : (int32_t)rng_randint(&r, (uint32_t)classes);
			} else {
				float x = (float)rng_uniform(&r, 0, W - 10), y = (float)rng_uniform(&r, 0, H - 10);
				float box[4] = {x, y, x + (float)rng_uniform(&r, 5, W - x), y + (float)rng_uniform(&r, 5, H - y)};
				memcpy(b + 4 * k, box, sizeof box);
				L[k] = (int32_t)rng_randint(&r, (uint32_t)classes);
			}
			s[k] = (float)(G && k < G ? 0.5 + 0.5 * rng_double(&r) : rng_double(&r)); /* hits score higher */
		}
		char id[32];
		snprintf(id, sizeof id, "%06ld", i);
		cJSON_AddStringToObject(rec->meta, "id", id);
		cJSON_AddNumberToObject(rec->meta, "index", (double)i);
		cJSON_AddNumberToObject(rec->meta, "width", W);
		cJSON_AddNumberToObject(rec->meta, "height", H);
		cJSON_AddNumberToObject(rec->meta, "num_classes", classes);
		if (stream_write(w, rec) < 0)
			die_err();
		record_free(rec);
	}
	if (stream_close_write(w) < 0)
		die_err();
	close_stdout();
	return 0;
}
