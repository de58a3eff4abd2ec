/* dist: data-parallel runs over MPI (Open MPI). The only module that calls MPI; only
 * forward (training: BN statistics, gradients, params checks) and map-eval (gathering
 * dets) link it. A tool started by mpirun, or by a script mpirun started, is one rank;
 * every other stage of that rank's pipeline stays an ordinary process.
 * Calls return 0 or -1 (err) as the rest of lib/, except dist_init's rank. */
#ifndef DIST_H
#define DIST_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

/* Joins the job: MPI_Init, and from then on an exit() before dist_finalize() (die(),
 * a failed check) aborts every rank (MPI_Abort), so no rank waits for ever in a
 * collective a dead one will never reach. Sets *rank and *size. */
int dist_init(int *argc, char ***argv, int *rank, int *size);
/* Leaves the job cleanly (every rank must call it). */
void dist_finalize(void);

/* x[i] = the sum of x[i] over the ranks, in place, the same on every rank. */
int dist_sum_f64(double *x, size_t n);
int dist_sum_f32(float *x, size_t n);
/* x[i] = the largest x[i] of the ranks, in place. */
int dist_max_f64(double *x, size_t n);
/* A BN layer's statistics of every rank's part merged (model_sync.moments): nmm
 * [c][3] of (count, mean, m2), the same bits on every rank. */
int dist_bn_moments(double *nmm, int c);

/* Lock step: every rank says whether it has another batch. 1: all do, 0: none does
 * (the end, together); -1 (err) when some do and some do not (uneven shards, or a
 * stage of some rank stopped), naming the first rank that differs from this one. */
int dist_all_have(int have);
/* The ranks hold the same bytes (a 64-bit hash of them compared): 0, or -1 (err)
 * naming a rank whose copy differs. what names the bytes in the message. */
int dist_check_same(const void *bytes, size_t n, const char *what);

/* Rank 0 gets every rank's bytes, in rank order: *all (malloc'd, free it) of *total
 * bytes, counts[r] from rank r (counts: size entries). Other ranks get *all NULL. */
int dist_gather_bytes(const void *mine, size_t n, void **all, size_t *total, size_t *counts);

/* Seconds this rank spent in the sums, gathers and lock-step checks so far: waiting
 * for the slowest rank included (forward --profile). */
double dist_seconds(void);

/* The model's hooks for training on the ranks' batches as one batch (model_set_sync). */
const model_sync *dist_model_sync(void);

#endif
