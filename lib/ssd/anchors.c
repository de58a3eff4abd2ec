#include "ssd/anchors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/tensor.h"

void anchor_config_default(anchor_config *c)
{
	static const int strides[6] = {8, 16, 32, 64, 128, 256};
	static const int nratios[6] = {1, 2, 2, 2, 2, 1};
	memset(c, 0, sizeof *c);
	c->nlevels = 6;
	for (int k = 0; k < 6; k++) {
		c->strides[k] = strides[k];
		c->nratios[k] = nratios[k];
		c->ratios[k][0] = 2;
		c->ratios[k][1] = 3;
	}
	c->basesize_min = 0.1;
	c->basesize_max = 0.9;
	c->scale_major = 0;
	c->center_offset = 0;
}

/* min_sizes / max_sizes as mmdet computes them (see anchors.h). */
static int base_sizes(const anchor_config *c, int size, int *mins, int *maxs)
{
	int L = c->nlevels;
	if (L < 3)
		return err_set("anchors: %d levels; SSD anchors need at least 3", L);
	int min_r = (int)(c->basesize_min * 100), max_r = (int)(c->basesize_max * 100);
	int step = (int)(floor((double)(max_r - min_r)) / (L - 2));
	if (step < 1)
		return err_set("anchors: basesize_ratio_range [%g, %g] is too narrow for %d levels", c->basesize_min,
			       c->basesize_max, L);
	static const struct { double min; int lo, hi; } first[] = {{0.1, 4, 10}, {0.15, 7, 15}, {0.2, 10, 20}};
	int f = -1;
	for (int i = 0; i < 3; i++)
		if (fabs(c->basesize_min - first[i].min) < 1e-9)
			f = i;
	if (f < 0)
		return err_set("anchors: basesize_ratio_range min %g has no first-level rule (known: 0.1, 0.15, 0.2)",
			       c->basesize_min);
	mins[0] = (int)((double)size * first[f].lo / 100);
	maxs[0] = (int)((double)size * first[f].hi / 100);
	int n = 1;
	for (int r = min_r; r <= max_r; r += step) {
		if (n < L) {
			mins[n] = (int)((double)size * r / 100);
			maxs[n] = (int)((double)size * (r + step) / 100);
		}
		n++;
	}
	if (n != L)
		return err_set("anchors: basesize_ratio_range [%g, %g] gives %d levels of sizes, the strides %d",
			       c->basesize_min, c->basesize_max, n, L);
	return 0;
}

static void base_anchors(anchor_level *lv, const anchor_config *c, int k)
{
	float scales[2] = {1.0f, (float)sqrt((double)lv->max_size / lv->min_size)};
	float ratios[1 + 2 * ANCHOR_MAX_RATIOS];
	int R = 0;
	ratios[R++] = 1.0f;
	for (int i = 0; i < c->nratios[k]; i++) {
		ratios[R++] = (float)(1.0 / c->ratios[k][i]);
		ratios[R++] = (float)c->ratios[k][i];
	}
	float ctr = (float)((lv->stride - c->center_offset) / 2.0), b = (float)lv->min_size;
	float all[2 * (1 + 2 * ANCHOR_MAX_RATIOS)][4];
	for (int s = 0; s < 2; s++)
		for (int r = 0; r < R; r++) {
			float hr = sqrtf(ratios[r]), wr = 1.0f / hr;
			/* mmdet's multiplication order, so float rounding agrees */
			float w = c->scale_major ? b * wr * scales[s] : b * scales[s] * wr;
			float h = c->scale_major ? b * hr * scales[s] : b * scales[s] * hr;
			int i = c->scale_major ? r * 2 + s : s * R + r;
			all[i][0] = ctr - 0.5f * w;
			all[i][1] = ctr - 0.5f * h;
			all[i][2] = ctr + 0.5f * w;
			all[i][3] = ctr + 0.5f * h;
		}
	/* mmdet keeps [0, R, 1, 2, ..., R - 1] */
	memcpy(lv->base[0], all[0], sizeof all[0]);
	memcpy(lv->base[1], all[R], sizeof all[0]);
	for (int i = 1; i < R; i++)
		memcpy(lv->base[i + 1], all[i], sizeof all[0]);
	lv->nbase = R + 1;
}

anchor_set *anchors_new(const anchor_config *c, int size)
{
	if (c->nlevels > ANCHOR_MAX_LEVELS)
		return err_set("anchors: %d levels, at most %d", c->nlevels, ANCHOR_MAX_LEVELS), NULL;
	if (size < 1)
		return err_set("anchors: input size %d", size), NULL;
	int mins[ANCHOR_MAX_LEVELS], maxs[ANCHOR_MAX_LEVELS];
	if (base_sizes(c, size, mins, maxs) < 0)
		return NULL;
	anchor_set *a = calloc(1, sizeof *a);
	if (!a)
		return err_set("out of memory"), NULL;
	a->size = size;
	a->nlevels = c->nlevels;
	for (int k = 0; k < c->nlevels; k++) {
		anchor_level *lv = &a->level[k];
		if (mins[k] < 1) {
			free(a);
			return err_set("anchors: level %d has base size %d at input size %d", k, mins[k], size), NULL;
		}
		lv->stride = c->strides[k];
		lv->feat_h = lv->feat_w = (size + lv->stride - 1) / lv->stride;
		lv->min_size = mins[k];
		lv->max_size = maxs[k];
		base_anchors(lv, c, k);
		lv->first = a->count;
		lv->count = (int64_t)lv->feat_h * lv->feat_w * lv->nbase;
		a->count += lv->count;
	}
	a->boxes = aligned_zalloc((size_t)a->count * 4 * sizeof(float));
	if (!a->boxes) {
		free(a);
		return NULL;
	}
	float *o = a->boxes;
	for (int k = 0; k < a->nlevels; k++) {
		const anchor_level *lv = &a->level[k];
		for (int y = 0; y < lv->feat_h; y++)
			for (int x = 0; x < lv->feat_w; x++) {
				float sx = (float)(x * lv->stride), sy = (float)(y * lv->stride);
				for (int j = 0; j < lv->nbase; j++, o += 4) {
					o[0] = lv->base[j][0] + sx;
					o[1] = lv->base[j][1] + sy;
					o[2] = lv->base[j][2] + sx;
					o[3] = lv->base[j][3] + sy;
				}
			}
	}
	return a;
}

void anchors_free(anchor_set *a)
{
	if (!a)
		return;
	free(a->boxes);
	free(a);
}

const anchor_set *anchors_cached(anchor_set **cache, const anchor_config *c, int size)
{
	if (*cache && (*cache)->size == size)
		return *cache;
	anchors_free(*cache);
	*cache = anchors_new(c, size);
	return *cache;
}
