/* tidl_prototxt: caffe PriorBox parameters from mmdet's anchors, and the TIDL SSD
 * meta-architecture text (see tidl_prototxt.h). */
#include "export/tidl_prototxt.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

void tidl_prior_boxes(const tidl_prior *p, int img_w, int img_h, float *boxes)
{
	/* caffe's aspect ratio list: 1, then r and (flip) 1 / r per ratio */
	float ars[2 * ANCHOR_MAX_RATIOS];
	int nar = 0;
	for (int i = 0; i < p->nratios; i++) {
		ars[nar++] = (float)p->ratio[i];
		ars[nar++] = 1.0f / (float)p->ratio[i];
	}
	float *o = boxes, minsz = (float)p->min_size, maxsz = (float)p->max_size;
	for (int h = 0; h < p->feat_h; h++)
		for (int w = 0; w < p->feat_w; w++) {
			float cx = (float)((w + p->offset) * p->step), cy = (float)((h + p->offset) * p->step);
			float bw[2 + 2 * ANCHOR_MAX_RATIOS], bh[2 + 2 * ANCHOR_MAX_RATIOS];
			int n = 0;
			bw[n] = bh[n] = minsz, n++;
			bw[n] = bh[n] = sqrtf(minsz * maxsz), n++;
			for (int a = 0; a < nar; a++, n++) {
				bw[n] = minsz * sqrtf(ars[a]);
				bh[n] = minsz / sqrtf(ars[a]);
			}
			for (int j = 0; j < n; j++, o += 4) {
				o[0] = (cx - bw[j] / 2.f) / (float)img_w * (float)img_w;
				o[1] = (cy - bh[j] / 2.f) / (float)img_h * (float)img_h;
				o[2] = (cx + bw[j] / 2.f) / (float)img_w * (float)img_w;
				o[3] = (cy + bh[j] / 2.f) / (float)img_h * (float)img_h;
			}
		}
}

int tidl_priors(const anchor_config *c, int size, tidl_prior *priors, int *nlevels, double *max_diff)
{
	anchor_set *a = anchors_new(c, size);
	if (!a)
		return err_wrap("prior boxes");
	double worst = 0;
	float *boxes = NULL;
	int rc = -1;
	for (int k = 0; k < a->nlevels; k++) {
		const anchor_level *lv = &a->level[k];
		tidl_prior *p = &priors[k];
		memset(p, 0, sizeof *p);
		p->min_size = lv->min_size;
		p->max_size = lv->max_size;
		p->nratios = c->nratios[k];
		memcpy(p->ratio, c->ratios[k], sizeof p->ratio);
		p->step = lv->stride;
		p->offset = (lv->stride - c->center_offset) / 2.0 / lv->stride;
		p->feat_h = lv->feat_h;
		p->feat_w = lv->feat_w;
		free(boxes);
		if (!(boxes = malloc((size_t)lv->count * 4 * sizeof *boxes))) {
			err_set("out of memory");
			goto done;
		}
		tidl_prior_boxes(p, size, size, boxes);
		const float *ref = a->boxes + lv->first * 4;
		for (int64_t i = 0; i < lv->count * 4; i++) {
			double d = fabs((double)boxes[i] - ref[i]);
			if (d > worst)
				worst = d;
			if (d > 1e-3 * size) {
				err_set("prior boxes: level %d anchor %lld differs from caffe's PriorBox by %g pixels "
					"(scale_major or ratios caffe cannot express)",
					k, (long long)(i / 4), d);
				goto done;
			}
		}
	}
	*nlevels = a->nlevels;
	*max_diff = worst;
	rc = 0;
done:
	free(boxes);
	anchors_free(a);
	return rc;
}

int tidl_prototxt_write(FILE *f, const tidl_ssd *s)
{
	fprintf(f, "name: \"ssd\"\ncaffe_ssd {\n");
	for (int k = 0; k < s->nlevels; k++)
		fprintf(f, "  box_input: \"%s\"\n", s->box_input[k]);
	for (int k = 0; k < s->nlevels; k++)
		fprintf(f, "  class_input: \"%s\"\n", s->class_input[k]);
	if (s->single_output)
		fprintf(f, "  output: \"detections\"\n");
	else
		fprintf(f, "  output: \"dets\"\n  output: \"labels\"\n");
	fprintf(f, "  in_width: %d\n  in_height: %d\n", s->in_width, s->in_height);
	for (int k = 0; k < s->nlevels; k++) {
		const tidl_prior *p = &s->prior[k];
		fprintf(f, "  prior_box_param {\n    min_size: %.1f\n    max_size: %.1f\n", p->min_size, p->max_size);
		for (int i = 0; i < p->nratios; i++)
			fprintf(f, "    aspect_ratio: %g\n", p->ratio[i]);
		fprintf(f, "    flip: true\n    clip: false\n");
		for (int i = 0; i < 4; i++)
			fprintf(f, "    variance: %g\n", s->variance[i]);
		fprintf(f, "    step: %.1f\n", p->step);
		if (p->offset != 0.5)
			fprintf(f, "    offset: %.9g\n", p->offset);
		fprintf(f, "  }\n");
	}
	fprintf(f,
		"  detection_output_param {\n    num_classes: %d\n    share_location: true\n"
		"    background_label_id: %d\n    nms_param {\n      nms_threshold: %g\n      top_k: %d\n    }\n"
		"    code_type: CENTER_SIZE\n    keep_top_k: %d\n    confidence_threshold: %g\n  }\n",
		s->num_classes, s->background_label_id, s->nms_threshold, s->top_k, s->keep_top_k,
		s->confidence_threshold);
	fprintf(f, "  framework: \"MMDetection\"\n}\n");
	if (ferror(f))
		return err_set("prototxt: %s", strerror(errno));
	return 0;
}
