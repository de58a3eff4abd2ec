/* fakequant: params + ranges in; the quantised model (BN folded, power-of-2 integers
 * and their fraction bits, dequantised f32) out. */
#include <getopt.h>
#include <string.h>

#include "core/config.h"
#include "nn/model.h"
#include "quant/qmodel.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: fakequant --config FILE --weights PARAMS --ranges RANGES [--bits N] [--weight-bits N]\n"
	       "                 [--per-channel-dw] > qparams\n"
	       "\n"
	       "Quantises a model as TI's tools do for TIDL (docs/quantisation.md): every BN folded\n"
	       "into its conv, weights to power-of-2 scaled integers per tensor (round half away from\n"
	       "zero, saturated), biases at the accumulator's scale (saturated to 2N bits), and each\n"
	       "activation point's power-of-2 clip from its calibrated range (unsigned after ReLU).\n"
	       "forward --quant computes the same values on the fly; this writes them down for\n"
	       "inspection (tns cat), export and integer inference.\n"
	       "\n"
	       "  --config FILE   pipeline config with a \"model\" section\n"
	       "  --weights P     the float params (first params record of the file: a checkpoint)\n"
	       "  --ranges R      activation ranges (calib-ranges, or a QAT checkpoint's ranges)\n"
	       "  --bits N        8 (default) or 16\n"
	       "  --weight-bits N the conv weights at N bits (default --bits'), e.g. 4 with 8\n"
	       "  --per-channel-dw  depthwise convs' weights at a scale per output channel\n"
	       "                  (<conv>.weight_frac, .bias_frac i32[c])\n"
	       "  -h, --help      this help\n"
	       "\n"
	       "Out (kind \"qparams\", meta bits, config): per conv <conv>.weight, <conv>.bias f32\n"
	       "(folded, dequantised), <conv>.weight_q i8 (i16 at 16 bits), <conv>.bias_q i16 (i32),\n"
	       "<conv>.frac i32[3] = fraction bits of weight, input, bias (value = q * 2^-frac; the\n"
	       "bias has fewer than weight + input only where it does not fit: TIDL's bias split); per\n"
	       "quantisation point <point>.act i32[3] = (frac, qmin, qmax), <point>.clip f32[2].\n");
}

int main(int argc, char **argv)
{
	tool_init("fakequant");
	enum { O_CONFIG = 256, O_WEIGHTS, O_RANGES, O_BITS, O_WBITS, O_PCDW };
	static const struct option lopts[] = {
		{"config", required_argument, 0, O_CONFIG}, {"weights", required_argument, 0, O_WEIGHTS},
		{"ranges", required_argument, 0, O_RANGES}, {"bits", required_argument, 0, O_BITS},
		{"weight-bits", required_argument, 0, O_WBITS}, {"per-channel-dw", no_argument, 0, O_PCDW},
		{"help", no_argument, 0, 'h'},              {0}};
	const char *config = NULL, *weights = NULL, *ranges = NULL;
	long bits = 8, wbits = 0;
	int per_channel_dw = 0;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lopts, NULL)) != -1) {
		switch (c) {
		case O_CONFIG: config = optarg; break;
		case O_WEIGHTS: weights = optarg; break;
		case O_RANGES: ranges = optarg; break;
		case O_BITS: bits = arg_long("--bits", optarg, 2, 16); break;
		case O_WBITS: wbits = arg_long("--weight-bits", optarg, 2, 16); break;
		case O_PCDW: per_channel_dw = 1; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!config || !weights || !ranges)
		usage_error("--config, --weights and --ranges are required");
	refuse_terminal_stdout();

	model *m = model_load(config);
	if (!m || model_quantize_as(m, (int)bits, (int)wbits, per_channel_dw) < 0)
		die_err();
	record *p = stream_read_first(weights, "params"), *rg = p ? stream_read_first(ranges, "ranges") : NULL;
	if (!p || !rg) {
		err_wrap("%s", p ? "--ranges" : "--weights");
		die_err();
	}
	if (model_load_params(m, p) < 0) {
		err_wrap("--weights %s", weights);
		die_err();
	}
	if (model_load_ranges(m, rg) < 0) {
		err_wrap("--ranges %s", ranges);
		die_err();
	}
	data_config dc;
	data_config_default(&dc);
	if (data_config_load(&dc, config) < 0 || model_plan(m, 1, dc.size, dc.size, 0, 0) < 0)
		die_err();
	record *q = model_qparams_record(m);
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	if (!q || !out || stream_write(out, q) < 0 || stream_close_write(out) < 0)
		die_err();
	record_free(q);
	record_free(p);
	record_free(rg);
	model_free(m);
	close_stdout();
	return 0;
}
