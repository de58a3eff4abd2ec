/* ssd_loss: mmdetection 2.x's SSDHead training loss and its gradient w.r.t. the head's
 * outputs, over the anchors of anchors.h and the DeltaXYWH coder of boxes.h.
 *
 * Per image with G ground-truth boxes (network-input pixels) and A anchors:
 *  1. MaxIoUAssigner: every anchor starts ignored (-1); max IoU over the gts in
 *     [0, neg_iou_thr) makes it background (0); >= pos_iou_thr assigns its best gt
 *     (g + 1; the first gt on ties); then each gt in order 0..G-1 whose best IoU over the
 *     anchors is >= min_pos_iou takes its best anchor (the first on ties; later gts
 *     overwrite earlier ones). G = 0: all background.
 *  2. Targets: a positive's label is its gt's (0..C-1), a background anchor's is C;
 *     bbox targets DeltaXYWH-encode the assigned gt against the anchor.
 *  3. num_total_pos = sum over the batch's images of max(positives, 1).
 *  4. ce = cross-entropy (log-softmax over C+1) of every positive and background anchor;
 *     hard negative mining keeps the min(neg_pos_ratio x positives, background anchors)
 *     background anchors of largest ce (ties: lower anchor index first, so the choice is
 *     deterministic where torch's topk is not); loss_cls = (sum of positive ce + sum of
 *     kept negative ce) / num_total_pos; loss_bbox = smooth-L1 (beta) of reg - target
 *     over the positives' 4 coordinates / num_total_pos. Both summed over images.
 *  5. Gradients: dcls = (softmax - onehot(label)) / num_total_pos on positives and kept
 *     negatives, 0 elsewhere; dreg = smooth-L1'(reg - target) / num_total_pos on
 *     positives, 0 elsewhere.
 * Differences from mmdet, on purpose:
 *  - gt boxes with no area (x2 == x1 or y2 == y1) are left out before matching: mmdet
 *    would give one an anchor (min_pos_iou 0) and a log(0) = -inf target, an infinite
 *    loss. Boxes with x2 < x1 or y2 < y1, or non-finite coordinates, are errors.
 *  - mmdet's negatives also include ignored anchors (label C with weight 0, ce 0); they
 *    never add to the loss or the gradient, but here they are not counted in num_neg.
 * Non-finite logits or deltas are an error (mmdet asserts the same).
 *
 * Config: "model.train" {"pos_iou_thr", "neg_iou_thr", "min_pos_iou", "neg_pos_ratio",
 * "smoothl1_beta"} (defaults 0.5, 0.5, 0.0, 3, 1.0: mmdet's SSD train_cfg); anchors and
 * bbox_coder as detect.h reads them. Nothing here does I/O or exits. */
#ifndef SSD_LOSS_H
#define SSD_LOSS_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "ssd/anchors.h"
#include "core/boxes.h"
#include "ssd/detect.h"
#include "core/stream.h"

typedef struct loss_params {
	double pos_iou_thr, neg_iou_thr, min_pos_iou;
	int neg_pos_ratio;
	double smoothl1_beta;
} loss_params;

void loss_params_default(loss_params *p);
/* Applies a "train" object over *p; where names it in messages ("file: model.train"). */
int loss_params_apply(loss_params *p, const cJSON *train, const char *where);
/* Reads a config file: "model" through head_config_apply (anchors, bbox_coder, test)
 * and "model.train" into *p. Absent sections leave the defaults. */
int loss_config_load(head_config *m, loss_params *p, const char *path);

/* ---- kernels (no allocation) ---- */

/* MaxIoUAssigner (step 1) of one image: assigned[A] gets -1, 0 or g + 1. gt[G,4] must
 * have positive areas. Scratch: gt_best[G] floats and gt_arg[G] (best anchor per gt).
 * Only anchors that can overlap a gt are visited (the anchor grid gives their range), so
 * the cost is O(A + overlapping pairs). */
void ssd_assign(int32_t *assigned, float *max_iou, float *gt_best, int64_t *gt_arg, const anchor_set *an,
		const float *gt, int G, const loss_params *p);
/* The same by brute force over every (gt, anchor) pair: the oracle for ssd_assign. */
void ssd_assign_ref(int32_t *assigned, float *max_iou, float *gt_best, int64_t *gt_arg, const float *anchors,
		    int64_t A, const float *gt, int G, const loss_params *p);

/* exp(x) for x <= 0 as the loss computes softmax terms (relative error < 3e-7). */
float ssd_exp_neg(float x);

/* ---- a batch ---- */

typedef struct loss_result {
	double loss_cls, loss_bbox;   /* loss = loss_cls + loss_bbox */
	int64_t num_pos, num_neg;     /* positives and kept negatives over the batch */
	int64_t num_total_pos;        /* the normaliser: sum of max(positives, 1) */
} loss_result;

typedef struct ssd_loss ssd_loss;

/* nthreads: images of a batch in parallel (values below 1 mean 1). */
ssd_loss *ssd_loss_new(const head_config *m, const loss_params *p, int nthreads);
void ssd_loss_free(ssd_loss *l);
/* The anchors at input size S (made once per size); NULL (err) if the config gives none. */
const anchor_set *ssd_loss_anchors(ssd_loss *l, int size);

typedef struct loss_batch {
	int64_t N, A, M;
	int C;                  /* foreground classes; cls has C + 1 columns */
	const float *cls;       /* [N,A,C+1] logits, background last */
	const float *reg;       /* [N,A,4] deltas */
	const float *boxes;     /* [N,M,4] gt in input pixels */
	const int32_t *labels;  /* [N,M], 0..C-1 for the first nbox[n] */
	const int32_t *nbox;    /* [N] */
} loss_batch;

/* Loss of a batch at input size S. dcls [N,A,C+1] and dreg [N,A,4] (both or neither):
 * the gradient, every element written. assigned [N,A] (optional): step 1's result with
 * gts counted among the boxes given (a left-out empty box keeps its index).
 * -1 (err naming the image) on bad input or no memory. */
int ssd_loss_run(ssd_loss *l, int size, const loss_batch *b, float *dcls, float *dreg, int32_t *assigned,
		 loss_result *out);

/* ---- records ----
 * In: a "pred" record: cls f32[N,A,C+1], reg f32[N,A,4], boxes f32[N,M,4], labels
 * i32[N,M] (padding -1), nbox i32[N]; meta size (S), and ids / indices / epoch / step,
 * which are copied when present; meta.boxes_frame, if present, must be "input".
 * grad (optional, NULL: no gradient): kind "grad", cls f32[N,A,C+1], reg f32[N,A,4];
 * meta ids, step (copied if present), num_total_pos and loss_cls, loss_bbox, num_pos,
 * num_neg, images (for ssd_grad_global).
 * loss: kind "loss", no tensors; meta loss_cls, loss_bbox, loss, num_pos, num_neg,
 * images (N), then epoch, ids, indices, step copied if present. */
int ssd_loss_record(ssd_loss *l, const record *pred, record **grad, record **loss);

/* ---- one batch in parts (data-parallel training, forward --mpi) ----
 * Each part's loss divides by its own num_total_pos; the whole batch's by their sum.
 * ssd_grad_sums reads a grad record's meta into the sums that add up over the parts
 * (num_total_pos, loss_cls and loss_bbox times it, num_pos, num_neg, images); given
 * those summed over all parts, ssd_grad_global rescales the record's cls and reg in
 * place to the whole batch's loss and returns that loss's numbers as a JSON object
 * (ranks, loss, loss_cls, loss_bbox, num_total_pos, num_pos, num_neg, images).
 * -1 / NULL (err) on a record without them. */
#define SSD_GRAD_SUMS 6
int ssd_grad_sums(const record *grad, double sums[SSD_GRAD_SUMS]);
cJSON *ssd_grad_global(record *grad, const double mine[SSD_GRAD_SUMS], const double all[SSD_GRAD_SUMS], int parts);

#endif
