/* anchors: mmdetection 2.x's SSDAnchorGenerator, the anchors an SSD head predicts against.
 *
 * Per level k (strides ascending) base sizes come from basesize_ratio_range (min, max)
 * and the input size S: with L levels, r runs over int(100 min) .. int(100 max) in steps
 * of int((int(100 max) - int(100 min)) / (L - 2)), giving min size int(S r / 100) and max
 * size int(S (r + step) / 100); a first level is put in front: (4%, 10%) of S when
 * min = 0.1, (7%, 15%) when min = 0.15, (10%, 20%) when min = 0.2. mmdet knows these only
 * for S = 300 (0.15, 0.2) and S = 512 (0.1, 0.15) and raises otherwise; here the same
 * rule holds for every S (S = 320 runs use it), which gives mmdet's numbers where mmdet
 * has them.
 *
 * A level's anchors of one location: scales (1, sqrt(max/min)), ratios (1, 1/r1, r1,
 * 1/r2, r2, ...), centre (stride - center_offset) / 2 (center_offset 0: mmdet 2.x;
 * 1: mmdet 1.x's (stride - 1) / 2), w = min * scale / sqrt(ratio), h = min * scale *
 * sqrt(ratio), flattened scale-minor (for each scale every ratio; scale_major: the other
 * way), then mmdet's pick [0, R, 1, 2, ..., R - 1] of them (R ratios): 2 + 2 len(r)
 * anchors. Level k's grid is ceil(S / stride) square; anchors are ordered level by
 * level, then row-major over (y, x), then by that pick, as an SSD head's flattened
 * outputs are. */
#ifndef ANCHORS_H
#define ANCHORS_H

#include <stdint.h>

#define ANCHOR_MAX_LEVELS 8
#define ANCHOR_MAX_RATIOS 4                          /* extra ratios r per level */
#define ANCHOR_MAX_BASE (2 + 2 * ANCHOR_MAX_RATIOS) /* anchors per location */

typedef struct anchor_config {
	int nlevels;
	int strides[ANCHOR_MAX_LEVELS];
	int nratios[ANCHOR_MAX_LEVELS];
	double ratios[ANCHOR_MAX_LEVELS][ANCHOR_MAX_RATIOS];
	double basesize_min, basesize_max; /* basesize_ratio_range */
	int scale_major;
	double center_offset;
} anchor_config;

/* TI's ssd_mobilenet_fpn / mmdet SSD512 COCO: strides 8..256, ratios [[2],[2,3]x4,[2]],
 * range (0.1, 0.9), scale-minor, centre offset 0. */
void anchor_config_default(anchor_config *c);

typedef struct anchor_level {
	int stride, feat_h, feat_w; /* feat = ceil(S / stride) */
	int min_size, max_size;
	int nbase;                  /* anchors per location */
	float base[ANCHOR_MAX_BASE][4];
	int64_t first, count;       /* this level's range in the flattened anchors */
} anchor_level;

typedef struct anchor_set {
	int size;                   /* input size S */
	int nlevels;
	anchor_level level[ANCHOR_MAX_LEVELS];
	int64_t count;              /* all anchors */
	float *boxes;               /* [count, 4] x1 y1 x2 y2 in input pixels */
} anchor_set;

/* The anchors for input size S; NULL (err) for a config that gives no anchors at S (a
 * range not giving L - 1 sizes, a min without a first-level rule) or no memory. */
anchor_set *anchors_new(const anchor_config *c, int size);
void anchors_free(anchor_set *a);
/* The anchors at input size `size`, kept in *cache and rebuilt only when the size
 * changes (tools see one size per run, sometimes a few). NULL (err) on failure. */
const anchor_set *anchors_cached(anchor_set **cache, const anchor_config *c, int size);

#endif
