#include "core/boxes.h"

#include <float.h>
#include <math.h>
#include <string.h>

float box_iou(const float *a, const float *b, float extra)
{
	float area_a = (a[2] - a[0] + extra) * (a[3] - a[1] + extra);
	float area_b = (b[2] - b[0] + extra) * (b[3] - b[1] + extra);
	float w = fminf(a[2], b[2]) - fmaxf(a[0], b[0]) + extra;
	float h = fminf(a[3], b[3]) - fmaxf(a[1], b[1]) + extra;
	float overlap = fmaxf(w, 0.0f) * fmaxf(h, 0.0f);
	float uni = area_a + area_b - overlap;
	return overlap / fmaxf(uni, FLT_EPSILON);
}

void box_coder_default(box_coder *c)
{
	static const double stds[4] = {0.1, 0.1, 0.2, 0.2};
	memset(c->means, 0, sizeof c->means);
	memcpy(c->stds, stds, sizeof stds);
	c->wh_ratio_clip = 16.0 / 1000.0;
}

void box_encode(float *deltas, const float *anchors, const float *gt, int64_t n, const box_coder *c)
{
	for (int64_t i = 0; i < n; i++) {
		const float *p = anchors + 4 * i, *g = gt + 4 * i;
		float px = (p[0] + p[2]) * 0.5f, py = (p[1] + p[3]) * 0.5f;
		float pw = p[2] - p[0], ph = p[3] - p[1];
		float gx = (g[0] + g[2]) * 0.5f, gy = (g[1] + g[3]) * 0.5f;
		float gw = g[2] - g[0], gh = g[3] - g[1];
		float d[4] = {(gx - px) / pw, (gy - py) / ph, logf(gw / pw), logf(gh / ph)};
		for (int k = 0; k < 4; k++)
			deltas[4 * i + k] = (float)((d[k] - c->means[k]) / c->stds[k]);
	}
}

float box_coder_max_ratio(const box_coder *c)
{
	return (float)fabs(log(c->wh_ratio_clip)); /* mmdet: np.abs(np.log(clip)) */
}

static inline void centre_size(float *cs, const float *p)
{
	cs[0] = (p[0] + p[2]) * 0.5f;
	cs[1] = (p[1] + p[3]) * 0.5f;
	cs[2] = p[2] - p[0];
	cs[3] = p[3] - p[1];
}

void box_centre_size(float *cs, const float *boxes, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		centre_size(cs + 4 * i, boxes + 4 * i);
}

void box_decode(float *boxes, const float *anchors, const float *deltas, int64_t n, const box_coder *c,
		float max_w, float max_h)
{
	float max_ratio = box_coder_max_ratio(c);
	float mean[4], std[4];
	for (int k = 0; k < 4; k++) {
		mean[k] = (float)c->means[k];
		std[k] = (float)c->stds[k];
	}
	for (int64_t i = 0; i < n; i++) {
		const float *p = anchors + 4 * i, *d = deltas + 4 * i;
		float dx = d[0] * std[0] + mean[0], dy = d[1] * std[1] + mean[1];
		float dw = clampf(d[2] * std[2] + mean[2], -max_ratio, max_ratio);
		float dh = clampf(d[3] * std[3] + mean[3], -max_ratio, max_ratio);
		float a[4];
		centre_size(a, p);
		float px = a[0], py = a[1], pw = a[2], ph = a[3];
		float gw = pw * expf(dw), gh = ph * expf(dh);
		float gx = px + pw * dx, gy = py + ph * dy;
		float *b = boxes + 4 * i;
		b[0] = gx - gw * 0.5f;
		b[1] = gy - gh * 0.5f;
		b[2] = gx + gw * 0.5f;
		b[3] = gy + gh * 0.5f;
		if (max_w > 0) {
			b[0] = clampf(b[0], 0, max_w);
			b[2] = clampf(b[2], 0, max_w);
			b[1] = clampf(b[1], 0, max_h);
			b[3] = clampf(b[3], 0, max_h);
		}
	}
}

int64_t box_nms(int64_t *keep, const float *boxes, const int64_t *order, int64_t n, float iou_thr,
		int64_t max_keep)
{
	/* a box is checked against the kept ones only: the same result as suppressing with
	 * every kept box in turn, and at most n x max_keep IoUs */
	int64_t nkeep = 0;
	for (int64_t i = 0; i < n && nkeep < max_keep; i++) {
		const float *b = boxes + 4 * order[i];
		int suppressed = 0;
		for (int64_t k = 0; k < nkeep && !suppressed; k++) {
			const float *a = boxes + 4 * keep[k];
			/* disjoint boxes (the common case) cannot suppress: skip the division */
			if (a[0] >= b[2] || b[0] >= a[2] || a[1] >= b[3] || b[1] >= a[3])
				continue;
			suppressed = box_iou(a, b, 0.0f) > iou_thr;
		}
		if (!suppressed)
			keep[nkeep++] = order[i];
	}
	return nkeep;
}
