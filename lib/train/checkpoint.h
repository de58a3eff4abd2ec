/* checkpoint: a training run's state on disk, in its run directory.
 *
 * A checkpoint file is a tns stream of two or three records:
 *   1. "params": every parameter (what forward --weights reads), meta step, epoch, ...
 *   (2. "ranges": quantisation-aware training only, the activation ranges: what
 *      forward --quant reads after the params)
 *   2. "optim":  the momentum buffers (one per trainable tensor; none before the first
 *      step) and the run's position, meta {"step", "epoch", "epoch_steps", "images",
 *      "epoch_images", "lr", "seed" (decimal string: 64 bits), "config"}.
 * Files are written atomically: DIR/.tmp-XXXXXX, fsync, rename over the name, fsync of
 * the directory; a reader never sees a half-written checkpoint under any name.
 * Nothing here prints or exits. */
#ifndef CHECKPOINT_H
#define CHECKPOINT_H

#include "train/optim.h"
#include "core/stream.h"

typedef struct train_state {
	sgd *opt;              /* params and momentum */
	long step;             /* optimizer steps done */
	long epoch;            /* 0-based epoch of the last step (of the next one at the start) */
	long epoch_steps;      /* steps done in that epoch */
	double images;         /* images seen in all steps */
	double epoch_images;   /* images seen in that epoch: where the data resumes */
	double lr;             /* lr of the last step */
	unsigned long long seed; /* the run's data seed, recorded for resuming the data side */
	char config[128];      /* config name */
	record *ranges;        /* QAT: the activation ranges (owned), else NULL */
} train_state;

/* The params record with meta step and epoch set to the state's (keys added at the
 * end of the meta when missing, so the meta reads the same after a resume). */
record *train_state_params(train_state *t);

/* Writes records (NULL entries skipped) to path atomically: a temp file in its
 * directory, fsync, rename, fsync of the directory. */
int records_save(const char *path, record *const *recs, int n);
/* Writes the checkpoint as dir/name atomically. */
int checkpoint_save(train_state *t, const char *dir, const char *name);
/* Reads a checkpoint file into *t (t->opt is new; the caller frees it). */
int checkpoint_load(train_state *t, const char *path);

/* Removes temp files a killed run left in dir (".tmp-*"); returns how many. */
int checkpoint_clean(const char *dir);
/* Like mkdir -p. */
int make_dirs(const char *path);

#endif
