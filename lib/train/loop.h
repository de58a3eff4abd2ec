/* loop: the weights stream of the training loop, both of its ends.
 *
 * In the loop (pipelines/train.sh; calibrate.sh's bias calibration) one process owns
 * the weights and forward runs the batches with them:
 *
 *   forward --train --weights FIFO   <-   sgd-step --params FIFO        (training)
 *   forward --bias-calib --weights FIFO <- calib-ranges --params FIFO   (PTQ)
 *
 * The FIFO carries versions of the weights, each one record or two:
 *   1. "params": every parameter, meta "step" (optimizer steps done) and "epoch";
 *   2. "ranges": the activation ranges, only when the owner owns them too (sgd-step
 *      --quant, calib-ranges), right after its params record.
 * The owner sends version 0 before forward's first batch, then one version for each
 * "grads" (sgd-step) or "stats" (calib-ranges) record it takes: forward runs batch k+1
 * with the answer to batch k. A params record with meta "final": true is the owner's
 * last (sgd-step --max-steps): forward stops there without running the batch it was
 * read for, since nobody would take its gradient. The mark is on the wire only; the
 * checkpoints never carry it. When forward's input ends instead, the owner has already
 * answered the last batch with a version nobody uses: loop_drain() takes it, so that
 * the owner's write completes instead of meeting a closed FIFO.
 *
 * The rest of the loop goes on stdout/stdin and one more FIFO: forward's "pred" records
 * to loss, loss's "grad" records (dLoss/dpred) back to forward --grad, and forward's
 * "grads" records (after a "stats" record with --stats) through loss to the owner
 * (docs/stream-format.md, "The training loop"). Nothing here prints or exits. */
#ifndef LOOP_H
#define LOOP_H

#include "core/stream.h"
#include "nn/model.h"

/* forward's end: the versions, read into the model. */
typedef struct loop_in {
	const char *path, *opt; /* the stream, and the option naming it (for messages) */
	int ranges;             /* a ranges record follows each params record */
	void (*opened)(const char *path); /* told once the stream is open (tool_fifo_opened) */
	/* private */
	stream_reader *s;       /* opened by the first loop_next(): a FIFO's open waits for the owner */
	int final;              /* the owner's last version was read */
} loop_in;

void loop_in_init(loop_in *in, const char *path, const char *opt, int ranges, void (*opened)(const char *path));
/* Loads the next version into m (params, then ranges with in->ranges) and sets *step
 * (NULL: not wanted) to its params' meta step; batch_no (1-based) names the batch it
 * is for in messages. 1: a batch is to run with it; 0: it was the owner's final
 * version; -1 (err): the stream failed or ended, or a record does not fit the model. */
int loop_next(loop_in *in, model *m, long batch_no, double *step);
/* After the last batch: reads and drops the version the owner sent in answer to it,
 * unless the stream was never opened or its final version was read. For owners that
 * answer every batch (forward --train, --bias-calib), not for plain weights. */
int loop_drain(loop_in *in);
void loop_in_close(loop_in *in);

/* The owner's end: writes one version to w, params with meta "final": true when final
 * (the mark is removed again: params stays as the checkpoints save it) and ranges
 * unless NULL. */
int loop_send(stream_writer *w, record *params, const record *ranges, int final);

#endif
