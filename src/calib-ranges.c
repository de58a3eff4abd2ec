/* calib-ranges: stats records (forward --stats) in; the running activation ranges out. */
#include <getopt.h>
#include <string.h>

#include "train/checkpoint.h"
#include "train/loop.h"
#include "nn/model.h"
#include "quant/qmodel.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: calib-ranges [--init RANGES] [--every N] [--batches N] < stats > ranges\n"
	       "       calib-ranges --init RANGES --weights CKPT --params FIFO --save FILE [--batches N]\n"
	       "\n"
	       "Activation ranges as TI's quantisation calibrates them: each stats record (forward\n"
	       "--stats: per quantisation point the range of one batch, 0.01%% of each tail trimmed\n"
	       "by a histogram) is averaged into the running range of its point, cumulatively for\n"
	       "the first 1000 batches, then as an exponential moving average with factor 0.001.\n"
	       "Writes one ranges record at the end (forward --quant --ranges and fakequant read it;\n"
	       "the power-of-2 clip is taken there). Records of other kinds pass through, in order.\n"
	       "\n"
	       "  --init RANGES   continue from these ranges (and their batch count)\n"
	       "  --every N       also write the ranges after every N stats records\n"
	       "  --batches N     stop after N stats records (the stages before it then end too)\n"
	       "\n"
	       "PTQ bias calibration (TI's), with forward --stats --quant --bias-calib in a loop:\n"
	       "calib-ranges owns the params and sends them, then the ranges, to --params before\n"
	       "the first batch and after each stats record; each stats record's channel means\n"
	       "correct the biases: bias += (mean_float - mean_quant) * 0.05 * 0.5^epoch (epoch\n"
	       "of the batch's meta). At the end --save gets params and ranges (a checkpoint that\n"
	       "forward --quant --weights reads), written atomically.\n"
	       "  --weights CKPT  the float params (first params record)\n"
	       "  --params FIFO   where params and ranges go\n"
	       "  --save FILE     the calibrated params and ranges\n"
	       "  -h, --help      this help\n"
	       "\n"
	       "In (kind \"stats\"): one f32[2] (min, max) per point, named by the point. Out (kind\n"
	       "\"ranges\"): the same tensors, meta batches (stats averaged) and config.\n");
}

int main(int argc, char **argv)
{
	tool_init("calib-ranges");
	enum { O_INIT = 256, O_EVERY, O_BATCHES, O_WEIGHTS, O_PARAMS, O_SAVE };
	static const struct option lopts[] = {{"init", required_argument, 0, O_INIT},
					      {"every", required_argument, 0, O_EVERY},
					      {"batches", required_argument, 0, O_BATCHES},
					      {"weights", required_argument, 0, O_WEIGHTS},
					      {"params", required_argument, 0, O_PARAMS},
					      {"save", required_argument, 0, O_SAVE},
					      {"help", no_argument, 0, 'h'},
					      {0}};
	const char *init = NULL, *weights = NULL, *params_path = NULL, *save = NULL;
	long every = 0, max_batches = 0;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lopts, NULL)) != -1) {
		switch (c) {
		case O_INIT: init = optarg; break;
		case O_EVERY: every = arg_long("--every", optarg, 1, 1L << 40); break;
		case O_BATCHES: max_batches = arg_long("--batches", optarg, 1, 1L << 40); break;
		case O_WEIGHTS: weights = optarg; break;
		case O_PARAMS: params_path = optarg; break;
		case O_SAVE: save = optarg; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (params_path)
		tool_fifo_watch(params_path, 1); /* released however this ends before its open */
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if ((weights || params_path || save) && !(weights && params_path && save && init))
		usage_error("bias calibration needs --init, --weights, --params and --save together");
	refuse_terminal_stdout();

	record *ranges = init ? stream_read_first(init, "ranges") : record_new("ranges");
	if (!ranges) {
		if (init)
			err_wrap("--init");
		die_err();
	}
	record *params = NULL;
	stream_writer *pw = NULL;
	if (weights) {
		if (!(params = stream_read_first(weights, "params")) || !(pw = stream_open_write(params_path, STREAM_LEVEL_DEFAULT)))
			die_err();
		tool_fifo_opened(params_path);
		if (loop_send(pw, params, ranges, 0) < 0)
			die_err();
	}
	stream_reader *in = stream_open_read("-");
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	if (!in || !out)
		die_err();
	long seen = 0;
	record *r;
	int rc = 0;
	while ((!max_batches || seen < max_batches) && (rc = stream_read(in, &r)) > 0) {
		if (strcmp(r->kind, "stats")) {
			if (stream_pass(out, r) < 0)
				die_err();
			record_free(r);
			continue;
		}
		int corrected = params ? bias_calib_update(params, r, (int)meta_num(r, "epoch", 0)) : 0;
		if (ranges_update(ranges, r) < 0 || corrected < 0) {
			err_wrap("stdin: record %ld", stream_count(in));
			die_err();
		}
		if (params && corrected == 0)
			die("stdin: record %ld: stats without channel means (forward --bias-calib makes them)",
			    stream_count(in));
		if (pw && loop_send(pw, params, ranges, 0) < 0)
			die_err();
		const char *cfg = meta_str(r, "config", NULL);
		if (cfg && !meta_str(ranges, "config", NULL))
			cJSON_AddStringToObject(ranges->meta, "config", cfg);
		record_free(r);
		seen++;
		if (every && seen % every == 0 && stream_write(out, ranges) < 0)
			die_err();
	}
	if (rc < 0)
		die_err();
	if (meta_num(ranges, "batches", 0) == 0)
		die("stdin: no stats records (forward --stats makes them)");
	if ((!every || seen % every) && stream_write(out, ranges) < 0)
		die_err();
	if (stream_close_write(out) < 0)
		die_err();
	if (params) {
		record *both[2] = {params, ranges};
		if (records_save(save, both, 2) < 0 || stream_close_write(pw) < 0)
			die_err();
		record_free(params);
	}
	stream_close_read(in);
	record_free(ranges);
	close_stdout();
	return 0;
}
