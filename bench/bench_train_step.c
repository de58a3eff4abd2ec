/* bench_train_step: the training loop's work per batch in one process, the baseline
 * that pipelines/bench-loop.sh holds the tool loop (forward --train | loss | sgd-step
 * with its two FIFOs) against. For every batch record of FILE it makes the calls the
 * three tools make, minus the streams between them: forward (model_pred_record,
 * model_forward), loss and its gradient (ssd_loss_record), backward and the grads
 * record (model_backward, model_grads_record), the SGD step with the BN running
 * statistics (sgd_step at lr_at's rate) and the new params into the model
 * (model_load_params, what forward does with each params record).
 * Threads as forward (TNS_THREADS or the online CPUs), loss on one thread as loss.
 * Prints one line per step on stderr (seconds, loss) and on stdout
 *   in-process: S steps after W warm-up, batch N, size H: X images/s (median step T s)
 * Usage: bench_train_step CONFIG PARAMS FILE [WARMUP] (WARMUP default 2). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <omp.h>

#include "checkpoint.h"
#include "config.h"
#include "model.h"
#include "optim.h"
#include "ssd_loss.h"
#include "stream.h"
#include "tool.h"

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

int main(int argc, char **argv)
{
	tool_init("bench_train_step");
	if (argc < 4 || argc > 5)
		usage_error("usage: bench_train_step CONFIG PARAMS FILE [WARMUP]");
	const char *config = argv[1], *path = argv[3];
	long warmup = argc > 4 ? arg_long("WARMUP", argv[4], 0, 1000) : 2;
	long steps = count_batches(path);
	if (steps <= warmup)
		die("%s: %ld batch records, need more than the %ld warm-up steps", path, steps, warmup);

	int threads = default_threads();
	omp_set_num_threads(threads);
	openblas_set_num_threads(threads);
	model *m = model_load(config);
	record *init = params_read(argv[2]);
	if (!m || !init || model_load_params(m, init) < 0)
		die_err();
	sgd *opt = sgd_new(init);
	if (!opt)
		die_err();
	record_free(init);
	optim_config oc;
	load_optim(&oc, config, steps);
	model_config mc;
	loss_params lp;
	model_config_default(&mc);
	loss_params_default(&lp);
	ssd_loss *l = NULL;
	if (loss_config_load(&mc, &lp, config) < 0 || !(l = ssd_loss_new(&mc, &lp, 1)))
		die_err();

	stream_reader *in = stream_open_read(path);
	if (!in)
		die_err();
	double *dt = calloc((size_t)steps, sizeof *dt), images = 0;
	if (!dt)
		die("out of memory");
	int pn = 0, ph = 0, pw = 0;
	long step = 0;
	record *r;
	int rc;
	double t0 = now();
	while ((rc = stream_read(in, &r)) > 0) {
		if (strcmp(r->kind, "batch")) {
			record_free(r);
			continue;
		}
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
		record *pred = model_pred_record(m, r, outs), *grad, *loss, *grads;
		if (!pred || model_forward(m, img->data, outs) < 0 || ssd_loss_record(l, pred, &grad, &loss) < 0 ||
		    model_grad_tensors(m, grad, douts) < 0 || model_backward(m, douts, NULL) < 0 ||
		    !(grads = model_grads_record(m)))
			die("step %ld: %s", step + 1, err_msg());
		if (sgd_step(opt, grads, lr_at(&oc, step, 0, steps), &oc) < 0 || model_load_params(m, sgd_params(opt)) < 0)
			die("step %ld: %s", step + 1, err_msg());
		double t = now();
		dt[step] = t - t0;
		t0 = t;
		fprintf(stderr, "step %ld: %.3f s, loss %.9g\n", step + 1, dt[step], meta_num(loss, "loss", 0));
		if (step++ >= warmup)
			images += n;
		record_free(grads);
		record_free(loss);
		record_free(grad);
		record_free(pred);
		record_free(r);
	}
	if (rc < 0)
		die_err();
	double total = 0;
	for (long i = warmup; i < step; i++)
		total += dt[i];
	qsort(dt + warmup, (size_t)(step - warmup), sizeof *dt, cmp_double);
	printf("in-process: %ld steps after %ld warm-up, batch %d, size %d: %.3f images/s (median step %.3f s)\n",
	       step - warmup, warmup, pn, ph, images / total, dt[warmup + (step - warmup) / 2]);
	free(dt);
	stream_close_read(in);
	ssd_loss_free(l);
	sgd_free(opt);
	model_free(m);
	close_stdout();
	return 0;
}
