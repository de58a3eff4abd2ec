/* forward: batch records in, pred records out (the network of a config); backward when training. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cblas.h>
#include <omp.h>

#include "core/config.h"
#include "train/dist.h"
#include "train/loop.h"
#include "nn/model.h"
#include "quant/qmodel.h"
#include "ssd/ssd_loss.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: forward --config FILE --weights PARAMS [--train --grad FIFO] [options] < batches > preds\n"
	       "       forward --config FILE --summary [--size N]\n"
	       "       forward --config FILE --init [--seed S] > params\n"
	       "\n"
	       "Runs the network of a config's \"model\" section (docs/models.md) on batch records\n"
	       "(augment). Records of any other kind pass through unchanged, in order.\n"
	       "\n"
	       "  --config FILE   pipeline config with a \"model\" section\n"
	       "  --weights P     params records (file or FIFO): one before the first batch; with\n"
	       "                  --train one before every batch (the optimizer's latest)\n"
	       "  --train         BN uses batch statistics; after each pred record, read one grad\n"
	       "                  record from --grad, run backward and write a grads record\n"
	       "  --grad FIFO     grad records (loss): cls f32[N,A,C+1], reg f32[N,A,4] = dLoss/dpred\n"
	       "  --quant         fake-quantised forward (and backward: QAT), TI's power-of-2 fixed\n"
	       "                  point (docs/quantisation.md); ranges from --ranges, else a ranges\n"
	       "                  record must follow each params record of --weights\n"
	       "  --ranges FILE   activation ranges (a ranges record, from calib-ranges)\n"
	       "  --bits N        quantisation bits, 8 (default) or 16\n"
	       "  --weight-bits N the conv weights at N bits (default --bits'), e.g. 4 with 8\n"
	       "  --per-channel-dw  depthwise convs' weights at a scale per output channel\n"
	       "  --int8          the quantised model (as --quant) on integers only: int8\n"
	       "                  activations and weights, int32 sums, power-of-2 shifts; outputs\n"
	       "                  equal to --quant's (docs/quantisation.md). With --bits 16: int16\n"
	       "                  values, exact int64 sums (--quant's f32 rounds those: a few steps)\n"
	       "  --stats         record every quantisation point's range in each batch: without\n"
	       "                  --train a stats record replaces each pred record (for\n"
	       "                  calib-ranges); with --train one precedes each grads record\n"
	       "  --bias-calib    PTQ bias calibration (with --stats --quant, no --ranges): each\n"
	       "                  batch runs float then quantised, and its stats record adds the\n"
	       "                  channel means of every conv's output in both; params and\n"
	       "                  ranges are read before every batch (calib-ranges --params)\n"
	       "  --mpi           data-parallel training (with --train, under mpirun): this process\n"
	       "                  is one rank, its batches part of a global batch; BN statistics\n"
	       "                  and gradients are combined over the ranks (sync BN, allreduce),\n"
	       "                  dLoss/dpred rescaled to the global normaliser, the params checked\n"
	       "                  equal on every rank each step, with --stats the quantisation\n"
	       "                  ranges those of the global batch (QAT); the ranks go in lock\n"
	       "                  step (one running out of batches before the others is an\n"
	       "                  error); any failure stops every rank (docs/distributed.md)\n"
	       "  --threads N     threads for the kernels and OpenBLAS (default: online CPUs or\n"
	       "                  $TNS_THREADS)\n"
	       "  --profile       time per layer type, and peak memory, on stderr at the end\n"
	       "  --summary       print layers, parameters and GMACs per part at --size (default the\n"
	       "                  config's data.size) and exit\n"
	       "  --init          write a params record with the model's initialisation (model.init:\n"
	       "                  PyTorch's default, or mmdet's init_cfg with \"mmdet\")\n"
	       "  --seed S        seed of --init (default 0)\n"
	       "  -h, --help      this help\n"
	       "\n"
	       "In (kind \"batch\"): image f32[N,3,S,S] and any other tensors (ground truth).\n"
	       "Out (kind \"pred\"): cls f32[N,A,C+1] class logits (background last), reg f32[N,A,4]\n"
	       "box deltas, in mmdet's anchor order; every batch tensor but image copied; meta of the\n"
	       "batch plus size. With --train, after each pred: kind \"grads\", one tensor per\n"
	       "trainable parameter (named as in params) and <bn>.batch_mean, <bn>.batch_var\n"
	       "(unbiased) per BN layer; meta step (of the params used) and ids; with --mpi also\n"
	       "replicas: the global batch's ranks, loss, loss_cls, loss_bbox, num_pos, num_neg,\n"
	       "images.\n");
}

typedef struct opts {
	const char *config, *weights, *grad, *ranges;
	int train, summary, init, profile, quant, stats, bias_calib, int8, mpi, per_channel_dw;
	long threads, size, bits, wbits;
	unsigned long long seed;
} opts;

static void summary(model *m, const char *config, int size)
{
	if (!size) {
		data_config dc;
		data_config_default(&dc);
		if (data_config_load(&dc, config) < 0)
			die_err();
		size = dc.size;
	}
	model_counts c;
	if (model_count(m, size, size, &c) < 0)
		die_err();
	printf("%s at %dx%d: %d layers (%d convs)\n\n", model_name(m), size, size, c.nodes, c.convs);
	printf("%-40s %-8s %-16s %10s %10s\n", "layer", "op", "output", "params", "MMACs");
	for (int i = 0;; i++) {
		const char *name, *op;
		char shape[64];
		int64_t p, mac;
		enum model_part part;
		if (model_node_info(m, i, &name, &op, shape, sizeof shape, &p, &mac, &part) < 0)
			break;
		printf("%-40s %-8s %-16s %10lld %10.2f\n", name, op, shape, (long long)p, mac / 1e6);
	}
	printf("\n%-10s %12s %10s\n", "part", "params", "GMACs");
	for (int k = 0; k < PART_COUNT; k++)
		printf("%-10s %12lld %10.4f\n", model_part_name(k), (long long)c.params[k], c.macs[k] / 1e9);
	printf("%-10s %12lld %10.4f\n", "total", (long long)c.params_total, c.macs_total / 1e9);
	printf("\nanchors %lld: cls [N,%lld,%d], reg [N,%lld,4]\n", (long long)c.anchors, (long long)c.anchors,
	       model_num_classes(m) + 1, (long long)c.anchors);
}

/* --profile's costs outside the layers: seconds since main, in the params stream and
 * planning, and of the rest in reading batches and grad records, in making the pred and
 * grads records and in writing records (stream encode included) */
static double t_main, t_params, t_plan, t_read, t_grad, t_make, t_write;

/* Adds the seconds since t0 to *acc; the time now. */
static double lap(double *acc, double t0)
{
	double t = omp_get_wtime();
	*acc += t - t0;
	return t;
}

static void write_record(stream_writer *out, const record *r)
{
	double t0 = omp_get_wtime();
	if (stream_write(out, r) < 0)
		die_err();
	lap(&t_write, t0);
}

static void profile_report(const model *m)
{
	model_profile p;
	model_get_profile(m, &p);
	double tf = 0, tb = 0;
	for (int i = 0; i < p.n; i++) {
		tf += p.fwd[i];
		tb += p.bwd[i];
	}
	fprintf(stderr, "forward: profile over %ld batches (seconds, share of forward+backward)\n", p.calls);
	fprintf(stderr, "  %-10s %9s %9s %7s\n", "op", "forward", "backward", "share");
	for (int i = 0; i < p.n; i++)
		fprintf(stderr, "  %-10s %9.3f %9.3f %6.1f%%\n", p.op[i], p.fwd[i], p.bwd[i],
			100 * (p.fwd[i] + p.bwd[i]) / (tf + tb > 0 ? tf + tb : 1));
	fprintf(stderr, "  %-10s %9.3f %9.3f\n", "total", tf, tb);
	double wall = omp_get_wtime() - t_main;
	fprintf(stderr, "  outside the layers: params stream %.3f s, planning %.3f s, the rest %.3f s (start, config, "
		"streams); %.3f s in all\n", t_params, t_plan, wall - tf - tb - t_params - t_plan, wall);
	fprintf(stderr, "  of the rest: reading batches %.3f s, grad records %.3f s, making records %.3f s, writing "
		"records %.3f s (reads wait for their writer, writes for a full pipe)\n", t_read, t_grad, t_make, t_write);
	struct rusage ru;
	if (!getrusage(RUSAGE_SELF, &ru))
		fprintf(stderr, "  peak RSS %.1f MiB, %ld page faults\n", ru.ru_maxrss / 1024.0, ru.ru_minflt + ru.ru_majflt);
}

static void load_ranges(model *m, const char *path)
{
	record *rec = stream_read_first(path, "ranges");
	if (!rec) {
		err_wrap("--ranges");
		die_err();
	}
	if (model_load_ranges(m, rec) < 0) {
		err_wrap("--ranges %s", path);
		die_err();
	}
	record_free(rec);
}

/* The batch's meta (index, ids, epoch ...) on a record made for it. */
static void copy_batch_meta(record *to, const record *batch)
{
	cJSON *it;
	cJSON_ArrayForEach(it, batch->meta)
		if (!cJSON_GetObjectItemCaseSensitive(to->meta, it->string))
			cJSON_AddItemToObject(to->meta, it->string, cJSON_Duplicate(it, 1));
}

int main(int argc, char **argv)
{
	t_main = omp_get_wtime();
	tool_init("forward");
	enum { O_CONFIG = 256, O_WEIGHTS, O_TRAIN, O_GRAD, O_THREADS, O_SUMMARY, O_PROFILE, O_INIT, O_SEED, O_SIZE,
	       O_QUANT, O_RANGES, O_BITS, O_WBITS, O_PCDW, O_STATS, O_BIAS, O_INT8, O_MPI };
	static const struct option lopts[] = {
		{"config", required_argument, 0, O_CONFIG},   {"weights", required_argument, 0, O_WEIGHTS},
		{"train", no_argument, 0, O_TRAIN},           {"grad", required_argument, 0, O_GRAD},
		{"threads", required_argument, 0, O_THREADS}, {"summary", no_argument, 0, O_SUMMARY},
		{"profile", no_argument, 0, O_PROFILE},       {"init", no_argument, 0, O_INIT},
		{"seed", required_argument, 0, O_SEED},       {"size", required_argument, 0, O_SIZE},
		{"quant", no_argument, 0, O_QUANT},           {"ranges", required_argument, 0, O_RANGES},
		{"bits", required_argument, 0, O_BITS},       {"stats", no_argument, 0, O_STATS},
		{"bias-calib", no_argument, 0, O_BIAS},       {"int8", no_argument, 0, O_INT8},
		{"mpi", no_argument, 0, O_MPI},               {"weight-bits", required_argument, 0, O_WBITS},
		{"per-channel-dw", no_argument, 0, O_PCDW},   {"help", no_argument, 0, 'h'},
		{0}};
	opts o = {.bits = 8};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lopts, NULL)) != -1) {
		switch (c) {
		case O_CONFIG: o.config = optarg; break;
		case O_WEIGHTS: o.weights = optarg; break;
		case O_TRAIN: o.train = 1; break;
		case O_GRAD: o.grad = optarg; break;
		case O_THREADS: o.threads = arg_long("--threads", optarg, 1, 256); break;
		case O_SUMMARY: o.summary = 1; break;
		case O_PROFILE: o.profile = 1; break;
		case O_INIT: o.init = 1; break;
		case O_SEED: o.seed = arg_u64("--seed", optarg); break;
		case O_SIZE: o.size = arg_long("--size", optarg, 1, 8192); break;
		case O_QUANT: o.quant = 1; break;
		case O_RANGES: o.ranges = optarg; break;
		case O_BITS: o.bits = arg_long("--bits", optarg, 2, 16); break;
		case O_WBITS: o.wbits = arg_long("--weight-bits", optarg, 2, 16); break;
		case O_PCDW: o.per_channel_dw = 1; break;
		case O_STATS: o.stats = 1; break;
		case O_BIAS: o.bias_calib = 1; break;
		case O_INT8: o.int8 = o.quant = 1; break;
		case O_MPI: o.mpi = 1; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	/* the loop's FIFOs are released however this ends, before or after their open */
	if (o.weights)
		tool_fifo_watch(o.weights, 0);
	if (o.grad)
		tool_fifo_watch(o.grad, 0);
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!o.config)
		usage_error("--config is required");
	if (o.summary + o.init > 1)
		usage_error("--summary and --init exclude each other");
	if (!o.summary && !o.init && !o.weights)
		usage_error("--weights is required");
	if (o.train != !!o.grad)
		usage_error("--train and --grad go together");
	if (o.weights && !strcmp(o.weights, "-"))
		usage_error("--weights cannot be stdin (batches come there)");
	if (o.int8 && (o.train || o.stats))
		usage_error("--int8 is inference: no --train or --stats");
	if (o.ranges && !o.quant)
		usage_error("--ranges goes with --quant");
	if ((o.summary || o.init) && (o.quant || o.stats))
		usage_error("--quant and --stats are for running the network");
	if (o.bias_calib && (!o.stats || !o.quant || o.ranges || o.train))
		usage_error("--bias-calib goes with --stats --quant (ranges from --weights), without --train");

	if (o.mpi && !o.train)
		usage_error("--mpi is data-parallel training: it goes with --train");

	model *m = model_load(o.config);
	if (!m)
		die_err();
	if (o.summary) {
		summary(m, o.config, (int)o.size);
		model_free(m);
		close_stdout();
		return 0;
	}
	refuse_terminal_stdout();
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	if (!out)
		die_err();
	if (o.init) {
		model_init_params(m, o.seed);
		record *p = model_params_record(m, 0);
		if (!p || stream_write(out, p) < 0 || stream_close_write(out) < 0)
			die_err();
		record_free(p);
		model_free(m);
		close_stdout();
		return 0;
	}

	int threads = o.threads ? (int)o.threads : default_threads();
	omp_set_num_threads(threads);
	openblas_set_num_threads(threads);
	model_set_profile(m, o.profile);
	if ((o.quant || o.stats) && model_quantize_as(m, (int)o.bits, (int)o.wbits, o.per_channel_dw) < 0)
		die_err();
	model_set_stats(m, o.stats);
	model_set_integer_only(m, o.int8);
	if (o.ranges)
		load_ranges(m, o.ranges);
	int rank = 0, ranks = 1;
	if (o.mpi && (dist_init(&argc, &argv, &rank, &ranks) < 0 || model_set_sync(m, dist_model_sync()) < 0))
		die_err();
	/* the weights (docs: lib/train/loop.h); with --quant and no --ranges a ranges
	 * record follows each params record */
	loop_in w;
	loop_in_init(&w, o.weights, "--weights", o.quant && !o.ranges, tool_fifo_opened);

	stream_reader *in = stream_open_read("-"), *g = NULL;
	if (!in)
		die_err();
	long batches = 0;
	int pn = 0, ph = 0, pw = 0, optimizer_ended = 0;
	double step = 0;
	record *r;
	int rc;
	for (double t_asked = omp_get_wtime(); (rc = stream_read(in, &r)) > 0; t_asked = omp_get_wtime()) {
		lap(&t_read, t_asked);
		if (strcmp(r->kind, "batch")) {
			if (stream_pass(out, r) < 0)
				die_err();
			record_free(r);
			continue;
		}
		batches++;
		if (o.mpi && dist_all_have(1) != 1) {
			err_wrap("batch %ld", batches);
			die_err();
		}
		const tensor *img;
		if (model_batch_image(r, &img) < 0) {
			err_wrap("stdin: record %ld", stream_count(in));
			die_err();
		}
		int per_batch = o.train || o.bias_calib; /* the owner answers every batch */
		if (per_batch || batches == 1) {
			double t0 = omp_get_wtime();
			int more = loop_next(&w, m, batches, &step);
			if (more < 0)
				die_err();
			t_params += omp_get_wtime() - t0;
			/* the optimizer has finished (--max-steps): end here, cleanly, and on
			 * every rank together */
			if (o.mpi && (more = dist_all_have(more)) < 0) {
				err_wrap("batch %ld: the params stream", batches);
				die_err();
			}
			if (!more) {
				optimizer_ended = 1;
				record_free(r);
				break;
			}
			if (o.mpi) {
				char what[64];
				snprintf(what, sizeof what, "the params of step %.0f", step);
				if (dist_check_same(model_param_data(m, 0), model_param_floats(m) * sizeof(float), what) < 0)
					die_err();
			}
		}
		int n = (int)img->shape[0], h = (int)img->shape[2], wd = (int)img->shape[3];
		if (n != pn || h != ph || wd != pw) {
			double t0 = omp_get_wtime();
			if (model_plan(m, n, h, wd, o.train, 0) < 0) {
				err_wrap("stdin: record %ld: input [%d,3,%d,%d]", stream_count(in), n, h, wd);
				die_err();
			}
			t_plan += omp_get_wtime() - t0;
			pn = n, ph = h, pw = wd;
		}
		float *outs[4];
		double t0 = omp_get_wtime();
		record *pred = model_pred_record(m, r, outs);
		lap(&t_make, t0);
		record *bstats = NULL;
		if (!pred || (o.bias_calib ? !(bstats = model_bias_calib_forward(m, img->data, outs))
					   : (o.int8 ? model_forward_integer : model_forward)(m, img->data, outs) < 0)) {
			err_wrap("stdin: record %ld", stream_count(in));
			die_err();
		}
		if (bstats) {
			record_free(pred);
			pred = bstats;
			copy_batch_meta(pred, r);
		} else if (o.stats && !o.train) {
			/* calibration: the stats replace the pred */
			record_free(pred);
			if (!(pred = model_stats_record(m)))
				die_err();
			copy_batch_meta(pred, r);
		}
		write_record(out, pred);
		record_free(pred);
		if (o.train) {
			if (!g) {
				if (!(g = stream_open_read(o.grad))) {
					err_wrap("--grad");
					die_err();
				}
				tool_fifo_opened(o.grad);
			}
			record *gr;
			t0 = omp_get_wtime();
			int grc = stream_read(g, &gr);
			lap(&t_grad, t0);
			if (grc < 0) {
				err_wrap("--grad");
				die_err();
			}
			if (grc == 0)
				die("--grad: record %ld: missing (the stream ended; expected the grad of batch %ld)",
				    stream_count(g) + 1, batches);
			const float *douts[4];
			cJSON *global = NULL;
			if (o.mpi) {
				/* each rank's loss divides by its own positives: rescale to the sum */
				double mine[SSD_GRAD_SUMS], all[SSD_GRAD_SUMS];
				int ok = ssd_grad_sums(gr, mine) == 0;
				if (ok) {
					memcpy(all, mine, sizeof all);
					ok = dist_sum_f64(all, SSD_GRAD_SUMS) == 0 && (global = ssd_grad_global(gr, mine, all, ranks));
				}
				if (!ok) {
					err_wrap("--grad: record %ld", stream_count(g));
					die_err();
				}
			}
			if (model_grad_tensors(m, gr, douts) < 0 || model_backward(m, douts, NULL) < 0) {
				err_wrap("--grad: record %ld", stream_count(g));
				die_err();
			}
			if (o.stats) {
				/* before the grads: the optimizer updates the ranges as it steps */
				record *st = model_stats_record(m);
				if (!st)
					die_err();
				cJSON_AddNumberToObject(st->meta, "step", step);
				write_record(out, st);
				record_free(st);
			}
			t0 = omp_get_wtime();
			record *gs = model_grads_record(m);
			if (!gs)
				die_err();
			lap(&t_make, t0);
			cJSON_AddNumberToObject(gs->meta, "step", step);
			if (global)
				cJSON_AddItemToObject(gs->meta, "replicas", global);
			const cJSON *ids = cJSON_GetObjectItemCaseSensitive(r->meta, "ids");
			if (ids)
				cJSON_AddItemToObject(gs->meta, "ids", cJSON_Duplicate(ids, 1));
			write_record(out, gs);
			record_free(gs);
			record_free(gr);
		}
		record_free(r);
	}
	if (rc < 0)
		die_err();
	if (o.mpi && !optimizer_ended && dist_all_have(0) != 0) {
		err_wrap("after batch %ld, the input ended", batches);
		die_err();
	}
	if (stream_close_write(out) < 0)
		die_err();
	/* the owner answered the last batch with weights nobody will use: take them */
	if ((o.train || o.bias_calib) && loop_drain(&w) < 0)
		die_err();
	if (o.profile) {
		profile_report(m);
		if (o.mpi)
			fprintf(stderr, "  rank %d of %d: %.3f s in MPI collectives (waits for the other ranks included)\n", rank,
				ranks, dist_seconds());
	}
	stream_close_read(in);
	loop_in_close(&w);
	if (g)
		stream_close_read(g);
	model_free(m);
	close_stdout();
	dist_finalize();
	return 0;
}
