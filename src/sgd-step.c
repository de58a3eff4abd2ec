/* sgd-step: the training loop's optimizer and the single owner of its state. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train/checkpoint.h"
#include "train/loop.h"
#include "train/run.h"
#include "core/config.h"
#include "nn/model.h"
#include "quant/qmodel.h"
#include "train/optim.h"
#include "nn/pth.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: sgd-step --init PARAMS [--pretrained FILE.pth] [options] < loss+grads\n"
	       "       sgd-step --resume [options] < loss+grads\n"
	       "       sgd-step --print-config [--config FILE]\n"
	       "\n"
	       "Owns the weights, the BN running statistics and the optimizer state of a training run.\n"
	       "Sends the initial params, then reads \"loss\" and \"grads\" records (loss passes forward's\n"
	       "grads through) and for every grads record does one step of torch.optim.SGD with the LR\n"
	       "of mmcv's schedule and sends the new params. Checkpoints go to the run directory.\n"
	       "Records of any other kind are ignored.\n"
	       "\n"
	       "  --config FILE         its \"name\" and \"train\" section (optimizer, lr_config, epochs,\n"
	       "                        batch, checkpoint_every, bn_momentum); default TI's recipe\n"
	       "  --init FILE           initial params: the first params record of FILE (forward --init,\n"
	       "                        a checkpoint, any params stream)\n"
	       "  --pretrained F.pth    a torch.save file (zip or legacy; torchvision MobileNetV2,\n"
	       "                        ResNet50, VGG16, RegNetX; mmcv/mmdet/mmcls checkpoints) loaded\n"
	       "                        over --init as mmcv's load_checkpoint(strict=False): key K\n"
	       "                        sets PREFIX+K (a state_dict wrapper, 'module.' and a present\n"
	       "                        'backbone.' removed; torchvision RegNet's keys mapped to\n"
	       "                        mmdet's); keys the model lacks (classifier.*, fc.*, ...) are\n"
	       "                        skipped, and a summary line lists them and the backbone\n"
	       "                        tensors the file did not set (docs/training.md)\n"
	       "  --pretrained-prefix P  (default \"backbone.\")\n"
	       "  --resume              continue from RUN/latest.tns (same state, same later steps)\n"
	       "  --params PATH         write params records here (file or FIFO), flushed each\n"
	       "  --run DIR             run directory (default runs/<config name>)\n"
	       "  --checkpoint-every N  steps between checkpoints (default train.checkpoint_every, 500;\n"
	       "                        0: only at epoch ends and the end)\n"
	       "  --log-every N         progress line on stderr every N steps (default 20; 0: none)\n"
	       "  --lr X                base learning rate (overrides train.optimizer.lr; not rescaled)\n"
	       "  --epochs N            epochs of the run (cosine by epoch, ETA)\n"
	       "  --iters-per-epoch N   steps per epoch (progress, ETA, by-iteration schedules)\n"
	       "  --max-steps N         stop after step N (a clean end: last checkpoint, params closed)\n"
	       "  --seed N              the data seed, recorded in checkpoints for resuming the data\n"
	       "  --quant               quantisation-aware training: owns the activation ranges too,\n"
	       "                        sends a ranges record after every params record and keeps\n"
	       "                        it in the checkpoints; each \"stats\" record (forward --train\n"
	       "                        --stats) updates them (calib-ranges' average) until the\n"
	       "                        0-based epoch --freeze-ranges (default epochs/2 + 1, as TI)\n"
	       "  --ranges FILE         the starting ranges (calib-ranges) of --quant, unless resuming\n"
	       "  --freeze-ranges E     see --quant\n"
	       "  --replica             another rank's copy of a data-parallel run (forward --mpi):\n"
	       "                        the same steps on the same gradients, but nothing written\n"
	       "                        (checkpoints, metrics and progress are rank 0's); with\n"
	       "                        --resume it reads RUN/latest.tns as rank 0 does\n"
	       "  --print-config        print the config as the pipelines read it and exit: JSON, its\n"
	       "                        \"base\" chain merged, \"train\" with every key (the defaults\n"
	       "                        above for those it leaves out, checked as for training) and\n"
	       "                        \"qat\" with TI's defaults for those it leaves out (epochs a\n"
	       "                        quarter of train's, at least 1; lr a tenth of train's)\n"
	       "  -h, --help            this help\n"
	       "\n"
	       "In: \"loss\" records (meta loss, loss_cls, loss_bbox, num_pos, images, epoch, ...), each\n"
	       "followed by a \"grads\" record: one f32 tensor per trainable parameter, named as it, and\n"
	       "<bn>.batch_mean, <bn>.batch_var (unbiased) per BN layer. A grads record alone is a step\n"
	       "too. A grads record's meta \"replicas\" (forward --mpi: the global batch's loss and\n"
	       "images) takes the place of the loss record's numbers in metrics and progress.\n"
	       "Out (--params): kind \"params\", every parameter, meta step and epoch (and final:\n"
	       "true on the last one of --max-steps).\n"
	       "Run directory: iter_<step>.tns every N steps, epoch_<e>.tns after epoch e (1-based) ends\n"
	       "(the epoch in the meta changes, or the input ends after a full epoch), latest.tns, all\n"
	       "written to a temp file and renamed; metrics.jsonl, one JSON line per step.\n"
	       "Environment: TNS_LEVEL (zstd level).\n");
}

typedef struct opts {
	const char *config, *init, *pretrained, *prefix, *params, *run, *ranges;
	int resume, quant, replica, print_config;
	long checkpoint_every, log_every, epochs, iters_per_epoch, max_steps, freeze_ranges;
	double lr;
	unsigned long long seed;
} opts;

static void parse(int argc, char **argv, opts *o)
{
	enum { O_CONFIG = 256, O_INIT, O_PRE, O_PREFIX, O_RESUME, O_PARAMS, O_RUN, O_CKPT, O_LOG, O_LR, O_EPOCHS, O_IPE,
	       O_MAX, O_SEED, O_QUANT, O_RANGES, O_FREEZE, O_REPLICA, O_PRINT };
	static const struct option longopts[] = {
		{"config", required_argument, 0, O_CONFIG},      {"init", required_argument, 0, O_INIT},
		{"pretrained", required_argument, 0, O_PRE},     {"pretrained-prefix", required_argument, 0, O_PREFIX},
		{"resume", no_argument, 0, O_RESUME},            {"params", required_argument, 0, O_PARAMS},
		{"run", required_argument, 0, O_RUN},            {"checkpoint-every", required_argument, 0, O_CKPT},
		{"log-every", required_argument, 0, O_LOG},      {"lr", required_argument, 0, O_LR},
		{"epochs", required_argument, 0, O_EPOCHS},      {"iters-per-epoch", required_argument, 0, O_IPE},
		{"max-steps", required_argument, 0, O_MAX},      {"seed", required_argument, 0, O_SEED},
		{"quant", no_argument, 0, O_QUANT},              {"ranges", required_argument, 0, O_RANGES},
		{"freeze-ranges", required_argument, 0, O_FREEZE}, {"replica", no_argument, 0, O_REPLICA},
		{"print-config", no_argument, 0, O_PRINT},       {"help", no_argument, 0, 'h'},
		{0}};
	int c, given = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		given++;
		switch (c) {
		case O_CONFIG: o->config = optarg; break;
		case O_INIT: o->init = optarg; break;
		case O_PRE: o->pretrained = optarg; break;
		case O_PREFIX: o->prefix = optarg; break;
		case O_RESUME: o->resume = 1; break;
		case O_PARAMS: o->params = optarg; break;
		case O_RUN: o->run = optarg; break;
		case O_CKPT: o->checkpoint_every = arg_long("--checkpoint-every", optarg, 0, 1L << 40); break;
		case O_LOG: o->log_every = arg_long("--log-every", optarg, 0, 1L << 40); break;
		case O_LR: o->lr = arg_double("--lr", optarg, 0, 1e3); break;
		case O_EPOCHS: o->epochs = arg_long("--epochs", optarg, 1, 1L << 30); break;
		case O_IPE: o->iters_per_epoch = arg_long("--iters-per-epoch", optarg, 1, 1L << 40); break;
		case O_MAX: o->max_steps = arg_long("--max-steps", optarg, 1, 1L << 40); break;
		case O_SEED: o->seed = arg_u64("--seed", optarg); break;
		case O_QUANT: o->quant = 1; break;
		case O_RANGES: o->ranges = optarg; break;
		case O_FREEZE: o->freeze_ranges = arg_long("--freeze-ranges", optarg, 0, 1L << 30); break;
		case O_REPLICA: o->replica = 1; break;
		case O_PRINT: o->print_config = 1; break;
		case 'h': usage(); exit(0);
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (o->params)
		tool_fifo_watch(o->params, 1); /* released however this ends before its open */
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (o->print_config) {
		if (given != 1 + !!o->config)
			usage_error("--print-config takes --config FILE and nothing else");
		return;
	}
	if (o->resume && (o->init || o->pretrained))
		usage_error("--resume continues a run: it takes no --init or --pretrained");
	if (!o->resume && !o->init)
		usage_error("--init PARAMS (the model's params, e.g. from forward --init) or --resume is needed");
	if (o->quant && !o->resume && !o->ranges)
		usage_error("--quant needs --ranges (calib-ranges' output) unless resuming");
	if ((o->ranges || o->freeze_ranges >= 0) && !o->quant)
		usage_error("--ranges and --freeze-ranges go with --quant");
}

/* The run: state, settings and the outputs of the loop. */
typedef struct run {
	train_state t;
	optim_config c;
	opts o;
	run_dir books;                 /* checkpoints and metrics.jsonl */
	long max_iters, iters_per_epoch;
	stream_writer *params;
	double start, last, step_time; /* step_time: smoothed seconds per step */
	cJSON *loss;                   /* the meta of the loss record before the next grads */
	record *stats;                 /* QAT: the stats record before the next grads */
	long freeze_ranges;            /* QAT: 0-based epoch from which the ranges stay */
} run;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The state to forward (lib/train/loop.h), marked final at the last step of --max-steps. */
static void send_params(run *r)
{
	record *p = train_state_params(&r->t);
	if (!p)
		die_err();
	int final = r->o.max_steps && r->t.step >= r->o.max_steps;
	if (r->params && loop_send(r->params, p, r->t.ranges, final) < 0)
		die_err();
}

/* A number of the step's loss numbers: the global batch's (grads meta "replicas",
 * forward --mpi), else the loss record's; NAN if neither has it. */
static double loss_num(const run *r, const record *grads, const char *key)
{
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(grads->meta, "replicas"), *v;
	const cJSON *from = cJSON_IsObject(g) ? g : r->loss;
	return from && cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(from, key)) ? v->valuedouble : NAN;
}

static void log_step(run *r, const record *grads, double images, double dt)
{
	if (r->o.replica)
		return;
	double loss = loss_num(r, grads, "loss"), cls = loss_num(r, grads, "loss_cls");
	double reg = loss_num(r, grads, "loss_bbox"), pos = loss_num(r, grads, "num_pos");
	r->step_time = r->step_time > 0 ? 0.9 * r->step_time + 0.1 * dt : dt;
	double ips = dt > 0 ? images / dt : NAN;
	double eta = r->max_iters > 0 ? (double)(r->max_iters - r->t.step) * r->step_time : NAN;
	run_metrics m = {r->t.step, r->t.epoch, r->t.lr, loss, cls, reg, pos, images, ips, eta};
	if (run_log(&r->books, &m) < 0)
		die_err();
	if (!r->o.log_every || r->t.step % r->o.log_every)
		return;
	char total[32] = "?", eta_s[32] = "-";
	if (r->iters_per_epoch > 0)
		snprintf(total, sizeof total, "%ld", r->iters_per_epoch);
	if (isfinite(eta))
		snprintf(eta_s, sizeof eta_s, "%ld:%02ld:%02ld", (long)eta / 3600, (long)eta / 60 % 60, (long)eta % 60);
	fprintf(stderr, "epoch %ld iter %ld/%s loss %.3g (cls %.3g reg %.3g) lr %.4f %.1f img/s ETA %s\n", r->t.epoch + 1,
		r->t.epoch_steps, total, loss, cls, reg, r->t.lr, images / r->step_time, eta_s);
}

/* One grads record: epoch bookkeeping, the step, params out, metrics, checkpoints. */
static void step(run *r, const record *grads, const char *where)
{
	double epoch = r->loss && cJSON_IsNumber(cJSON_GetObjectItem(r->loss, "epoch"))
			       ? cJSON_GetObjectItem(r->loss, "epoch")->valuedouble
			       : meta_num(grads, "epoch", (double)r->t.epoch);
	if (epoch < 0 || epoch != floor(epoch) || epoch > 1e9)
		die("%s: bad epoch %g in the meta", where, epoch);
	long ended = run_next_epoch(&r->books, &r->t, (long)epoch);
	if (ended < 0)
		die_err();
	if (ended > 0 && !r->o.iters_per_epoch)
		r->iters_per_epoch = ended; /* the length of an epoch, once one has ended */
	double lr = lr_at(&r->c, r->t.step, r->t.epoch, r->max_iters);
	if (sgd_step(r->t.opt, grads, lr, &r->c) < 0)
		die("%s: %s", where, err_msg());
	double images = loss_num(r, grads, "images");
	if (isnan(images))
		images = meta_num(grads, "images", (double)r->c.batch);
	r->t.step++;
	r->t.epoch_steps++;
	r->t.images += images;
	r->t.epoch_images += images;
	r->t.lr = lr;
	if (r->o.quant) {
		if (!r->stats)
			die("%s: no stats record before these grads (forward --train --stats makes them)", where);
		if (r->t.epoch < r->freeze_ranges && ranges_update(r->t.ranges, r->stats) < 0)
			die("%s: %s", where, err_msg());
		record_free(r->stats);
		r->stats = NULL;
	}
	send_params(r);
	double t = now();
	log_step(r, grads, images, t - r->last);
	r->last = t;
	if (r->c.checkpoint_every && r->t.step % r->c.checkpoint_every == 0 && run_save_step(&r->books, &r->t) < 0)
		die_err();
	cJSON_Delete(r->loss);
	r->loss = NULL;
}

static void start(run *r)
{
	const opts *o = &r->o;
	char name[128] = "";
	optim_config_default(&r->c);
	if (o->config) {
		cJSON *j = config_read(o->config);
		if (!j)
			die_err();
		const cJSON *n = cJSON_GetObjectItem(j, "name"), *tr = cJSON_GetObjectItem(j, "train");
		if (cJSON_IsString(n))
			snprintf(name, sizeof name, "%s", n->valuestring);
		char where[4200];
		snprintf(where, sizeof where, "%s: train", o->config);
		if (tr && optim_config_apply(&r->c, tr, where) < 0)
			die_err();
		cJSON_Delete(j);
	}
	if (o->lr > 0)
		r->c.lr = o->lr;
	if (o->epochs)
		r->c.epochs = o->epochs;
	if (o->checkpoint_every >= 0)
		r->c.checkpoint_every = o->checkpoint_every;
	r->iters_per_epoch = o->iters_per_epoch;
	r->max_iters = o->max_steps ? o->max_steps : r->iters_per_epoch * r->c.epochs;
	if (optim_config_check(&r->c, r->max_iters) < 0)
		die_err();

	record *init = NULL;
	if (!o->resume) {
		if (!(init = stream_read_first(o->init, "params")))
			die_err();
		if (!name[0])
			snprintf(name, sizeof name, "%s", meta_str(init, "config", "default"));
	}
	char dir[4096];
	if (o->run)
		snprintf(dir, sizeof dir, "%s", o->run);
	else
		snprintf(dir, sizeof dir, "runs/%s", name[0] ? name : "default");
	if (run_open(&r->books, dir, o->replica) < 0)
		die_err();
	if (o->resume) {
		char latest[4200];
		snprintf(latest, sizeof latest, "%s/latest.tns", r->books.dir);
		if (checkpoint_load(&r->t, latest) < 0)
			die("cannot resume: %s", err_msg());
		if (!o->replica)
			fprintf(stderr, "%s: resuming %s at step %ld, epoch %ld (%.0f images into it)\n", tool_name, latest, r->t.step,
			r->t.epoch, r->t.epoch_images);
		if (o->quant != !!r->t.ranges)
			die("cannot resume: %s %s activation ranges; %s", latest, r->t.ranges ? "has" : "has no",
			    o->quant ? "--quant needs them" : "add --quant to continue quantisation-aware training");
	} else {
		if (o->pretrained) {
			record *sd = pth_read(o->pretrained);
			pth_summary s;
			const char *prefix = o->prefix ? o->prefix : "backbone.";
			/* free before dying: LeakSanitizer runs the tests and sees a record only
			 * a register still pointed to as lost */
			if (!sd || pth_load_into(init, sd, prefix, &s) < 0) {
				if (sd)
					err_wrap("%s", o->pretrained);
				record_free(sd);
				record_free(init);
				die_err();
			}
			record_free(sd);
			char line[1400];
			pth_summary_line(&s, line, sizeof line);
			fprintf(stderr, "%s: %s: %s\n", tool_name, o->pretrained, line);
			/* a torchvision RegNet was trained on RGB; a BGR config (TI's and mmdet's
			 * RegNet recipes, whose own weights are BGR) takes it with its first conv's
			 * input channels reversed, which is exact when the mean and std are
			 * ImageNet's in BGR order, as theirs are */
			data_config dc;
			data_config_default(&dc);
			if (s.rgb && o->config && data_config_load(&dc, o->config) < 0) {
				record_free(init);
				die_err();
			}
			const char *conv;
			if (s.rgb && !dc.to_rgb) {
				if (pth_reverse_input_channels(init, prefix, &conv) < 0) {
					record_free(init);
					die_err();
				}
				fprintf(stderr, "%s: %s: its weights take RGB, %s feeds BGR: %s's input channels reversed\n",
					tool_name, o->pretrained, o->config, conv);
			}
		}
		if (!(r->t.opt = sgd_new(init)))
			die("%s: %s", o->init, err_msg());
		if (o->quant) {
			if (!(r->t.ranges = stream_read_first(o->ranges, "ranges"))) {
				err_wrap("--ranges");
				die_err();
			}
		}
		record_free(init);
		r->t.seed = o->seed;
		snprintf(r->t.config, sizeof r->t.config, "%s", name);
	}
	r->freeze_ranges = o->freeze_ranges >= 0 ? o->freeze_ranges : r->c.epochs / 2 + 1;
	r->books.saved_step = o->resume ? r->t.step : -1;
	/* a resumed run drops the metrics of steps it has to do again; a fresh run starts
	 * a fresh log */
	if (run_metrics_open(&r->books, o->resume ? r->t.step : 0) < 0)
		die_err();
	if (o->params && !(r->params = stream_open_write(o->params, STREAM_LEVEL_DEFAULT)))
		die_err();
	if (o->params)
		tool_fifo_opened(o->params);
	send_params(r); /* version 0, or the resumed state */
}

int main(int argc, char **argv)
{
	tool_init("sgd-step");
	run r = {.o = {.checkpoint_every = -1, .log_every = 20, .freeze_ranges = -1}};
	parse(argc, argv, &r.o);
	if (r.o.print_config) {
		cJSON *j = config_resolved(r.o.config);
		if (!j)
			die_err();
		char *text = cJSON_Print(j);
		if (!text)
			die("out of memory");
		puts(text);
		free(text);
		cJSON_Delete(j);
		close_stdout();
		return 0;
	}
	/* a reader of --params that goes away is an EPIPE error with a message, not a silent death */
	signal(SIGPIPE, SIG_IGN);
	start(&r);
	r.start = r.last = now();

	stream_reader *in = stream_open_read("-");
	if (!in)
		die_err();
	record *rec;
	int rc = 0;
	long others = 0;
	while ((!r.o.max_steps || r.t.step < r.o.max_steps) && (rc = stream_read(in, &rec)) > 0) {
		char where[64];
		snprintf(where, sizeof where, "stdin: record %ld", stream_count(in));
		if (!strcmp(rec->kind, "loss")) {
			cJSON_Delete(r.loss);
			if (!(r.loss = cJSON_Duplicate(rec->meta, 1)))
				die("out of memory");
		} else if (!strcmp(rec->kind, "grads")) {
			step(&r, rec, where);
		} else if (!strcmp(rec->kind, "stats") && r.o.quant) {
			record_free(r.stats);
			r.stats = rec;
			continue;
		} else {
			others++;
		}
		record_free(rec);
	}
	if (!r.o.max_steps || r.t.step < r.o.max_steps) {
		if (rc < 0)
			die("%s (last checkpoint: %s/latest.tns, step %ld)", err_msg(), r.books.dir, r.books.saved_step);
	}
	/* the end: the last state is saved, as epoch_<e> too when the epoch is complete */
	if (run_end(&r.books, &r.t, r.iters_per_epoch) < 0 || stream_close_write(r.params) < 0 || run_close(&r.books) < 0)
		die_err();
	stream_close_read(in);
	if (!r.o.replica)
		fprintf(stderr, "%s: %ld steps done (epoch %ld), %.0f images, %.1f s; %s/latest.tns%s\n", tool_name,
			r.t.step, r.t.epoch + 1, r.t.images, now() - r.start, r.books.dir, others ? " (other records ignored)" : "");
	cJSON_Delete(r.loss);
	record_free(r.stats);
	record_free(r.t.ranges);
	sgd_free(r.t.opt);
	return 0;
}
