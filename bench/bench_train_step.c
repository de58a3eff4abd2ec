/* bench_train_step: the training loop's work per batch in one process, the baseline
 * that pipelines/bench-loop.sh holds the tool loop (forward --train | loss | sgd-step
 * with its two FIFOs) against. For every batch record of FILE it makes the calls the
 * three tools make, minus the streams between them: forward (model_pred_record,
 * model_forward), loss and its gradient (ssd_loss_record), backward and the grads
 * record (model_backward, model_grads_record), the SGD step with the BN running
 * statistics (sgd_step at lr_at's rate) and the new params into the model
 * (model_load_params, what forward does with each params record).
 * Threads as forward (TNS_THREADS or the online CPUs), loss on one thread as loss. A
 * step's time leaves the batch's read out, as the loop does (forward reads the next
 * batch while sgd-step works).
 *
 * With FROM and TO it also paces a tool loop running on the same batches, one step of
 * each in turn, so that both see the same load from other jobs: the loop's params FIFO
 * is split in two, sgd-step writing FROM and forward reading TO, and this program
 * relays each params record (undecoded) from one to the other. The loop's step k is
 * the time from passing params k-1 on to receiving params k; meanwhile this program
 * waits, and while it runs its own step k the loop waits for params k. The relay adds
 * one pipe hop of the params record (~1 ms at 320) to each loop step.
 *
 * Then the stream work the tool loop adds to each step, on its critical path: the last
 * step's pred, grad, grads and params records each encoded and decoded once (loss
 * passes grads on undecoded), in memory, at zstd level 1 and at TNS_LEVEL's; no pipes.
 * Prints one line per step on stderr ("step K: S s, loss L", "loop step K: S s") and
 * on stdout
 *   in-process: S steps after W warm-up, batch N, size H: X images/s (median step T s)
 *   tool loop: ... (with FROM and TO)
 *   stream work per step: A ms at level 1, B ms at level L (pred, grad, grads, params)
 * Usage: bench_train_step CONFIG PARAMS FILE [WARMUP [FROM TO]] (WARMUP default 2). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <omp.h>

#include "train/checkpoint.h"
#include "core/config.h"
#include "nn/model.h"
#include "train/optim.h"
#include "ssd/ssd_loss.h"
#include "core/stream.h"
#include "tool/tool.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The batch records of path (others skipped), counted, so the schedule knows its length. */
static long count_batches(const char *path)
{
	stream_reader *s = stream_open_read(path);
	if (!s)
		die_err();
	record *r;
	long n = 0;
	int rc;
	while ((rc = stream_read(s, &r)) > 0) {
		n += !strcmp(r->kind, "batch");
		record_free(r);
	}
	if (rc < 0)
		die_err();
	stream_close_read(s);
	return n;
}

/* The optimizer's settings as sgd-step reads them (--epochs 1 --iters-per-epoch steps). */
static void load_optim(optim_config *c, const char *config, long steps)
{
	optim_config_default(c);
	cJSON *j = config_read(config);
	if (!j)
		die_err();
	char where[4200];
	snprintf(where, sizeof where, "%s: train", config);
	const cJSON *tr = cJSON_GetObjectItem(j, "train");
	if (tr && optim_config_apply(c, tr, where) < 0)
		die_err();
	cJSON_Delete(j);
	c->epochs = 1;
	c->checkpoint_every = 0;
	if (optim_config_check(c, steps) < 0)
		die_err();
}

/* Seconds to encode r at level and decode it back, in memory: the best of 5. */
static double codec_time(record *r, int level)
{
	double best = 1e30;
	for (int k = 0; k < 5; k++) {
		double t0 = now();
		if (record_encode(r, level) < 0)
			die_err();
		FILE *f = fmemopen(r->frame, r->frame_len, "rb");
		stream_reader *s = f ? stream_reader_new(f, "memory") : NULL;
		record *back;
		if (!s || stream_read(s, &back) <= 0)
			die("%s record: %s", r->kind, f ? err_msg() : "fmemopen failed");
		double t = now() - t0;
		best = t < best ? t : best;
		record_free(back);
		stream_close_read(s);
		fclose(f);
	}
	return best;
}

/* The relay between sgd-step (from) and forward (to): the params record in hand. */
typedef struct relay {
	stream_reader *from;
	stream_writer *to;
	record *params;
} relay;

static const char *const no_kinds[] = {NULL};

/* Takes the next params record from sgd-step; 0 when its stream has ended. */
static int relay_take(relay *y)
{
	int rc = stream_read(y->from, &y->params);
	if (rc < 0)
		die_err();
	return rc;
}

/* One step of the tool loop: params on to forward, the next ones back; seconds. */
static double relay_step(relay *y, long step)
{
	double t0 = now();
	if (stream_pass(y->to, y->params) < 0)
		die_err();
	record_free(y->params);
	if (!relay_take(y))
		die("the tool loop ended before step %ld", step + 1);
	return now() - t0;
}

/* "NAME: S steps after W warm-up ...: X images/s (median step T s)" of dt[warmup..steps). */
static void report(const char *name, double *dt, long steps, long warmup, int n, int size)
{
	double total = 0;
	for (long i = warmup; i < steps; i++)
		total += dt[i];
	qsort(dt + warmup, (size_t)(steps - warmup), sizeof *dt, cmp_double);
	printf("%s: %ld steps after %ld warm-up, batch %d, size %d: %.3f images/s (median step %.3f s)\n", name,
	       steps - warmup, warmup, n, size, (double)n * (double)(steps - warmup) / total,
	       dt[warmup + (steps - warmup) / 2]);
}

int main(int argc, char **argv)
{
	tool_init("bench_train_step");
	if (argc != 4 && argc != 5 && argc != 7)
		usage_error("usage: bench_train_step CONFIG PARAMS FILE [WARMUP [FROM TO]]");
	const char *config = argv[1], *path = argv[3];
	long warmup = argc > 4 ? arg_long("WARMUP", argv[4], 0, 1000) : 2;
	long steps = count_batches(path);
	if (steps <= warmup)
		die("%s: %ld batch records, need more than the %ld warm-up steps", path, steps, warmup);

	int threads = default_threads();
	omp_set_num_threads(threads);
	openblas_set_num_threads(threads);
	model *m = model_load(config);
	record *init = stream_read_first(argv[2], "params");
	if (!m || !init || model_load_params(m, init) < 0)
		die_err();
	sgd *opt = sgd_new(init);
	if (!opt)
		die_err();
	record_free(init);
	optim_config oc;
	load_optim(&oc, config, steps);
	head_config mc;
	loss_params lp;
	head_config_default(&mc);
	loss_params_default(&lp);
	ssd_loss *l = NULL;
	if (loss_config_load(&mc, &lp, config) < 0 || !(l = ssd_loss_new(&mc, &lp, 1)))
		die_err();
	/* sgd-step opens its end first and sends params 0; forward opens its end at its first batch */
	relay y = {0};
	if (argc == 7) {
		if (!(y.from = stream_open_read(argv[5])) || !(y.to = stream_open_write(argv[6], STREAM_LEVEL_DEFAULT)))
			die_err();
		stream_decode_only(y.from, no_kinds);
		if (!relay_take(&y))
			die("%s: no params from sgd-step", argv[5]);
	}

	stream_reader *in = stream_open_read(path);
	double *dt = calloc((size_t)steps, sizeof *dt), *loop_dt = calloc((size_t)steps, sizeof *loop_dt);
	if (!in)
		die_err();
	if (!dt || !loop_dt)
		die("out of memory");
	int pn = 0, ph = 0, pw = 0;
	long step = 0;
	record *r, *pred = NULL, *grad = NULL, *grads = NULL;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (strcmp(r->kind, "batch")) {
			record_free(r);
			continue;
		}
		if (y.from) {
			loop_dt[step] = relay_step(&y, step);
			fprintf(stderr, "loop step %ld: %.3f s\n", step + 1, loop_dt[step]);
		}
		/* the batch's read is left out, as in the loop: forward reads the next batch
		 * while sgd-step works */
		double t0 = now();
		const tensor *img;
		if (model_batch_image(r, &img) < 0)
			die_err();
		int n = (int)img->shape[0], h = (int)img->shape[2], w = (int)img->shape[3];
		if (n != pn || h != ph || w != pw) {
			if (model_plan(m, n, h, w, 1, 0) < 0)
				die_err();
			pn = n, ph = h, pw = w;
		}
		float *outs[4];
		const float *douts[4];
		record *loss;
		record_free(grads); /* the last step's records stay for the stream work below */
		record_free(grad);
		record_free(pred);
		pred = model_pred_record(m, r, outs);
		if (!pred || model_forward(m, img->data, outs) < 0 || ssd_loss_record(l, pred, &grad, &loss) < 0 ||
		    model_grad_tensors(m, grad, douts) < 0 || model_backward(m, douts, NULL) < 0 ||
		    !(grads = model_grads_record(m)))
			die("step %ld: %s", step + 1, err_msg());
		if (sgd_step(opt, grads, lr_at(&oc, step, 0, steps), &oc) < 0 || model_load_params(m, sgd_params(opt)) < 0)
			die("step %ld: %s", step + 1, err_msg());
		dt[step] = now() - t0;
		fprintf(stderr, "step %ld: %.3f s, loss %.9g\n", step + 1, dt[step], meta_num(loss, "loss", 0));
		step++;
		record_free(loss);
		record_free(r);
	}
	if (rc < 0)
		die_err();
	if (y.from) {
		/* forward takes the optimizer's answer to the last grads, then sgd-step ends */
		if (stream_pass(y.to, y.params) < 0 || stream_close_write(y.to) < 0)
			die_err();
		record_free(y.params);
		while (relay_take(&y))
			record_free(y.params);
		stream_close_read(y.from);
	}
	report("in-process", dt, step, warmup, pn, ph);
	if (y.from)
		report("tool loop", loop_dt, step, warmup, pn, ph);
	record *loop[4] = {pred, grad, grads, sgd_params(opt)};
	int level = stream_resolve_level(STREAM_LEVEL_DEFAULT);
	double w1 = 0, wl = 0;
	for (int i = 0; i < 4; i++) {
		w1 += codec_time(loop[i], 1);
		wl += codec_time(loop[i], level);
	}
	printf("stream work per step: %.1f ms at level 1, %.1f ms at level %d (pred, grad, grads, params)\n", 1e3 * w1,
	       1e3 * wl, level);
	record_free(grads);
	record_free(grad);
	record_free(pred);
	free(dt);
	free(loop_dt);
	stream_close_read(in);
	ssd_loss_free(l);
	sgd_free(opt);
	model_free(m);
	close_stdout();
	return 0;
}
