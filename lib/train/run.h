/* run: a training run's directory, what sgd-step writes there and reads back.
 *
 *   DIR/iter_<step>.tns  every train.checkpoint_every steps
 *   DIR/epoch_<e>.tns    when 1-based epoch e is complete: the next step is of a later
 *                        epoch, or the run ends after the epoch's last step
 *   DIR/latest.tns       the newest of those, a second copy
 *   DIR/metrics.jsonl    one JSON object per step (run_log), appended and flushed
 * Checkpoints are written atomically (checkpoint.h). A resumed run first drops the
 * metrics of the steps its checkpoint had not reached. A replica (another rank of a
 * data-parallel run) keeps the same books and writes nothing. Nothing here prints or
 * exits. */
#ifndef RUN_H
#define RUN_H

#include <stdio.h>

#include "train/checkpoint.h"

typedef struct run_dir {
	char dir[4096];
	int replica;          /* nothing is written */
	long saved_step;      /* the step of the newest checkpoint; -1: none yet */
	/* private */
	FILE *metrics;        /* metrics.jsonl, NULL for a replica */
} run_dir;

/* Sets up r for dir (made like mkdir -p; temp files a killed run left removed). */
int run_open(run_dir *r, const char *dir, int replica);
/* Keeps the metrics of steps <= keep_step (0: a fresh log) and opens the file for
 * appending. */
int run_metrics_open(run_dir *r, long keep_step);
/* Flushes and closes metrics.jsonl: -1 (err) if a write failed. */
int run_close(run_dir *r);

/* iter_<step>.tns and latest.tns. */
int run_save_step(run_dir *r, train_state *t);
/* epoch_<epoch + 1>.tns and latest.tns. */
int run_save_epoch(run_dir *r, train_state *t);
/* Before a step of 0-based epoch: when that is not t's epoch, t's epoch ends (saved as
 * epoch_<e> if it had steps) and the new one starts with no steps or images. Returns
 * the steps of the epoch that ended (0: none ended, or it had none), or -1 (err). */
long run_next_epoch(run_dir *r, train_state *t, long epoch);
/* The end of the loop: saves the last state unless it is saved, as epoch_<e> when its
 * epoch is complete (iters_per_epoch steps, if known), else as iter_<step>. */
int run_end(run_dir *r, train_state *t, long iters_per_epoch);

/* A line of metrics.jsonl; numbers that are not finite are written as null. */
typedef struct run_metrics {
	long step, epoch;
	double lr, loss, loss_cls, loss_bbox, num_pos, images, images_per_s, eta_s;
} run_metrics;

int run_log(run_dir *r, const run_metrics *m);
/* The reader: keeps only the lines of a metrics.jsonl whose "step" is <= step (a line
 * cut short by a kill goes too), rewriting it atomically; a missing file is fine. */
int metrics_trim(const char *path, long step);

#endif
