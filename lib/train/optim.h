/* optim: the training state sgd-step owns and the rules that change it.
 *
 * - The config's "train" section: SGD hyper-parameters, mmcv's LR policies (step,
 *   cosine annealing; linear, constant or exp warm-up), epochs, batch, checkpoint
 *   period, BN momentum.
 * - lr_at(): the learning rate of an iteration, as mmcv's LrUpdaterHook sets it.
 * - sgd: the parameters (a "params" record, trainable tensors and BN running
 *   statistics), the momentum buffers (an "optim" record) and the step counter; one
 *   sgd_step() per "grads" record does torch.optim.SGD's update in float32, in torch's
 *   operation order, and torch's BN running-statistics update.
 *
 * A parameter is trainable unless its name ends in ".running_mean", ".running_var" or
 * ".num_batches_tracked" or it is not f32. Nothing here prints or exits. */
#ifndef OPTIM_H
#define OPTIM_H

#include <cjson/cJSON.h>

#include "core/stream.h"

#define OPTIM_MAX_MILESTONES 32

enum lr_policy { LR_FIXED, LR_STEP, LR_COSINE };
enum lr_warmup { WARMUP_NONE, WARMUP_LINEAR, WARMUP_CONSTANT, WARMUP_EXP };

typedef struct optim_config {
	/* train.optimizer */
	double lr, momentum, weight_decay;
	/* train.lr_config */
	enum lr_policy policy;
	enum lr_warmup warmup;
	long warmup_iters;
	double warmup_ratio;
	double min_lr_ratio;    /* cosine: target = lr * min_lr_ratio, unless min_lr >= 0 */
	double min_lr;          /* cosine target, or step's floor; < 0: none */
	int nmilestones;        /* step: lr * gamma^(milestones <= progress); 0: every step_every */
	long milestones[OPTIM_MAX_MILESTONES];
	long step_every;
	double gamma;
	int by_epoch;           /* progress counts epochs (1) or iterations (0) */
	/* train */
	long epochs, batch, checkpoint_every;
	double bn_momentum;
} optim_config;

/* TI's ssd_mobilenet_fpn_lite recipe: lr 0.04, momentum 0.9, wd 4e-5, cosine by
 * epoch with linear warm-up over 1000 iterations from 0.001, min_lr_ratio 1e-4,
 * 24 epochs, batch 8, a checkpoint every 500 steps, BN momentum 0.1. */
void optim_config_default(optim_config *c);
/* Applies a "train" section; where names it in messages ("file: train"). Unknown keys,
 * wrong types and values out of range are errors naming the key path. */
int optim_config_apply(optim_config *c, const cJSON *train, const char *where);
/* The "train" section c stands for, every key written out: optim_config_apply() of it
 * over the defaults gives c back. NULL (err) when out of memory. */
cJSON *optim_config_json(const optim_config *c);
/* The config at path (NULL: none) as the pipelines read it: its bases merged, its
 * "train" section complete (optim_config_json of it over the defaults, checked) and
 * "qat" given TI's defaults for what it leaves out: epochs a quarter of train's (at
 * least 1), lr a tenth of train's. NULL (err) on a bad config. */
cJSON *config_resolved(const char *path);
/* Checks that the schedule can be computed: by_epoch false with a policy that needs
 * the run's length (cosine) needs max_iters > 0. */
int optim_config_check(const optim_config *c, long max_iters);

/* The learning rate for 0-based iteration iter of 0-based epoch epoch, as mmcv sets it
 * before that iteration; max_iters is the run's length in iterations (by_epoch false). */
double lr_at(const optim_config *c, long iter, long epoch, long max_iters);

/* ---- the optimizer state ---- */
typedef struct sgd sgd;

/* Takes a copy of a "params" record's tensors and meta: f32 tensors (any rank), other
 * dtypes kept untouched. Momentum buffers start empty (torch: None). */
sgd *sgd_new(const record *params);
/* Restores a checkpoint's state: params and its "optim" record (momentum buffers, one
 * per trainable tensor, or none before the first step). Names and shapes must agree. */
sgd *sgd_from_checkpoint(const record *params, const record *optim);
void sgd_free(sgd *s);

/* One step from a "grads" record: every trainable tensor needs its gradient (f32, same
 * shape); "<bn>.batch_mean" / "<bn>.batch_var" update "<bn>.running_mean/var" with
 * bn_momentum (a BN layer without them keeps its statistics, as a frozen BN). Any
 * other tensor is an error. The record is checked in full before anything changes.
 * torch.optim.SGD (dampening 0, nesterov false), per element in float32:
 *   d = g + wd * p; buf = d (first step) or momentum * buf + d; p = p - lr * buf. */
int sgd_step(sgd *s, const record *grads, double lr, const optim_config *c);

/* The current params record (owned by s; its meta is the initial one). */
record *sgd_params(sgd *s);
/* The momentum buffers as an "optim" record (owned by s; tensors only: the caller adds
 * meta), or an empty record before the first step. */
record *sgd_momentum(sgd *s);
int sgd_ntrainable(const sgd *s);
int sgd_nbn(const sgd *s);

/* Name tests shared with the .pth import. */
int param_is_running_stat(const char *name);

#endif
