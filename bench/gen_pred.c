/* gen_pred: stands in for forward when timing or checking ssd-decode. Reads augment
 * --eval batch records and writes "pred" records whose logits and deltas encode each
 * image's ground truth on the SSD anchors at meta.size (anchors with IoU >= 0.5 to a gt,
 * and each gt's best anchor, predict it with score rising with the IoU; the others are
 * background), plus Gaussian noise of NOISE (logits) and NOISE / 10 (deltas), seeded.
 * With NOISE 0, ssd-decode | map-eval must find nearly every gt (a real-data check of
 * anchors, box coder, rescaling and NMS together); with noise, ssd-decode has a
 * realistic amount of candidates to sort and suppress.
 * Usage: gen_pred CLASSES [NOISE [SEED]] < batches > preds */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ssd/anchors.h"
#include "core/boxes.h"
#include "core/rng.h"
#include "core/stream.h"
#include "tool/tool.h"

static double gauss(rng *r)
{
	double u = rng_double(r), v = rng_double(r);
	return sqrt(-2 * log(1 - u)) * cos(2 * M_PI * v);
}

/* One image: cls [A, C+1], reg [A, 4] from gts already in input pixels. */
static void encode_image(float *cls, float *reg, const anchor_set *an, const float *gt, const int32_t *labels, int G,
			 int C, double noise, rng *r)
{
	int64_t A = an->count;
	box_coder bc;
	box_coder_default(&bc);
	int64_t *best_anchor = calloc((size_t)(G ? G : 1), sizeof *best_anchor);
	float *best_anchor_iou = calloc((size_t)(G ? G : 1), sizeof *best_anchor_iou);
	int *match = malloc((size_t)A * sizeof *match);
	float *match_iou = malloc((size_t)A * sizeof *match_iou);
	if (!best_anchor || !best_anchor_iou || !match || !match_iou)
		die("out of memory");
	for (int64_t a = 0; a < A; a++) {
		match[a] = -1;
		match_iou[a] = 0;
		for (int g = 0; g < G; g++) {
			float iou = box_iou(an->boxes + 4 * a, gt + 4 * g, 0);
			if (iou > match_iou[a]) {
				match_iou[a] = iou;
				match[a] = g;
			}
			if (iou > best_anchor_iou[g]) {
				best_anchor_iou[g] = iou;
				best_anchor[g] = a;
			}
		}
		if (match_iou[a] < 0.5f)
			match[a] = -1;
	}
	for (int g = 0; g < G; g++)
		if (best_anchor_iou[g] > 0) {
			match[best_anchor[g]] = g;
			match_iou[best_anchor[g]] = best_anchor_iou[g];
		}
	for (int64_t a = 0; a < A; a++) {
		float *x = cls + a * (C + 1), *d = reg + 4 * a;
		for (int j = 0; j < C; j++)
			x[j] = (float)(noise * gauss(r));
		x[C] = (float)(4 + noise * gauss(r));
		if (match[a] >= 0) {
			x[C] = 0;
			x[labels[match[a]]] = 2 + 6 * match_iou[a];
			box_encode(d, an->boxes + 4 * a, gt + 4 * match[a], 1, &bc);
		}
		for (int k = 0; k < 4; k++)
			d[k] += (float)(noise * 0.1 * gauss(r));
	}
	free(best_anchor);
	free(best_anchor_iou);
	free(match);
	free(match_iou);
}

int main(int argc, char **argv)
{
	tool_init("gen_pred");
	if (argc < 2 || argc > 4)
		usage_error("usage: gen_pred CLASSES [NOISE [SEED]] < batches > preds");
	int C = (int)arg_long("CLASSES", argv[1], 1, 1000);
	double noise = argc > 2 ? arg_double("NOISE", argv[2], 0, 100) : 0;
	long seed = argc > 3 ? arg_long("SEED", argv[3], 0, 1L << 62) : 0;
	refuse_terminal_stdout();
	stream_reader *in = stream_open_read("-");
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	anchor_config ac;
	anchor_config_default(&ac);
	anchor_set *an = NULL;
	if (!in || !out)
		die_err();
	record *b;
	int rc;
	long images = 0;
	while ((rc = stream_read(in, &b)) > 0) {
		if (strcmp(b->kind, "batch")) {
			if (stream_pass(out, b) < 0)
				die_err();
			record_free(b);
			continue;
		}
		int S = (int)meta_num(b, "size", 0);
		if (!an || an->size != S) {
			anchors_free(an);
			if (!(an = anchors_new(&ac, S)))
				die_err();
		}
		const tensor *img = record_expect(b, "image", DT_F32, 4), *boxes = record_expect(b, "boxes", DT_F32, 3),
			     *labels = record_expect(b, "labels", DT_I32, 2), *nbox = record_expect(b, "nbox", DT_I32, 1),
			     *sf = record_expect(b, "scale_factor", DT_F32, 2);
		if (!img || !boxes || !labels || !nbox || !sf)
			die_err();
		int64_t N = img->shape[0], M = boxes->shape[1], A = an->count;
		record *p = record_new("pred");
		tensor *cls = record_add(p, "cls", DT_F32, 3, (int64_t[]){N, A, C + 1});
		tensor *reg = record_add(p, "reg", DT_F32, 3, (int64_t[]){N, A, 4});
		if (!cls || !reg)
			die_err();
		for (int64_t n = 0; n < N; n++) {
			int G = ((const int32_t *)nbox->data)[n];
			float *gt = malloc((size_t)(G ? G : 1) * 4 * sizeof *gt);
			const float *f = (const float *)sf->data + 4 * n;
			for (int k = 0; k < 4 * G; k++) {
				float v = ((const float *)boxes->data)[(n * M) * 4 + k] * f[k & 3];
				gt[k] = v < 0 ? 0 : v > S ? (float)S : v;
			}
			rng r;
			rng_seed3(&r, (uint64_t)seed, 11, (uint64_t)images++);
			encode_image((float *)cls->data + n * A * (C + 1), (float *)reg->data + n * A * 4, an, gt,
				     (const int32_t *)labels->data + n * M, G, C, noise, &r);
			free(gt);
		}
		/* everything but the image rides along */
		for (int t = 0; t < b->ntensors; t++) {
			const tensor *src = &b->tensors[t];
			if (!strcmp(src->name, "image"))
				continue;
			tensor *dst = record_add(p, src->name, src->dtype, src->ndim, src->shape);
			if (!dst)
				die_err();
			if (tensor_nbytes(src))
				memcpy(dst->data, src->data, tensor_nbytes(src));
		}
		cJSON_Delete(p->meta);
		p->meta = cJSON_Duplicate(b->meta, 1);
		if (stream_write(out, p) < 0)
			die_err();
		record_free(p);
		record_free(b);
	}
	if (rc < 0 || stream_close_write(out) < 0)
		die_err();
	stream_close_read(in);
	anchors_free(an);
	close_stdout();
	return 0;
}
