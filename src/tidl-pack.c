/* tidl-pack: a trained model (float or quantised) as ONNX + TIDL's SSD meta-architecture
 * prototxt, with a short summary on stdout. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/afile.h"
#include "train/checkpoint.h"
#include "core/config.h"
#include "ssd/detect.h"
#include "nn/model.h"
#include "quant/qmodel.h"
#include "export/onnx_export.h"
#include "core/stream.h"
#include "export/tidl_prototxt.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: tidl-pack --config FILE --weights CKPT [--quant [--ranges R] [--bits N]]\n"
	       "                 [--onnx FILE] [--prototxt FILE] [options] > summary.txt\n"
	       "\n"
	       "Exports a model for TI's TIDL (docs/export.md): the network as ONNX (BN folded;\n"
	       "quantised: power-of-2 weights and a Clip to each activation's power-of-2 range, as\n"
	       "TI's QAT export) with one output per head conv and level (cls_k, reg_k), then\n"
	       "ssd-decode's post-processing with the config's model.test settings, to outputs\n"
	       "dets [1,K,5] and labels [1,K] (opset 9: no NMS; --old-tidl: one detections), and the\n"
	       "TIDLMetaArch \"ssd\" prototxt whose prior boxes are the training anchors (checked\n"
	       "numerically). A summary of what was written, with TIDL's compile options for the\n"
	       "model, goes to stdout.\n"
	       "\n"
	       "  --config FILE      pipeline config (\"model\", \"data\" sections)\n"
	       "  --weights CKPT     params (the first params record: a checkpoint is fine)\n"
	       "  --quant            export the quantised model; ranges from --ranges, else the\n"
	       "                     ranges record of CKPT (a QAT checkpoint)\n"
	       "  --ranges R         activation ranges (calib-ranges' output, make calibrate)\n"
	       "  --bits N           8 (default) or 16\n"
	       "  --weight-bits N    the conv weights at N bits (default --bits'), e.g. 4 with 8\n"
	       "  --per-channel-dw   depthwise convs' weights at a scale per output channel\n"
	       "  --onnx FILE        ONNX output (default model.onnx)\n"
	       "  --prototxt FILE    meta-architecture output (default model.prototxt)\n"
	       "  --opset N          11 (default) or 9 for older TIDL\n"
	       "  --old-tidl         one prototxt `output` and one graph output, detections [1,K,6]\n"
	       "                     (older TIDL rejects the repeated field)\n"
	       "  --size S           input size (default: the config's data.size)\n"
	       "  --confidence X     detection_output_param.confidence_threshold (default 0.3)\n"
	       "  --top-k N          nms_param.top_k (default 200)\n"
	       "  --keep-top-k N     keep_top_k (default the config's model.test.max_per_img, 200)\n"
	       "  --heads-only       the graph ends at the heads (cls_k, reg_k), without the\n"
	       "                     post-processing: for a runtime that decodes boxes itself, and\n"
	       "                     to time the network alone (ONNX Runtime runs every node of a\n"
	       "                     graph, fetched or not)\n"
	       "  --round            validation only, not for TIDL: quantised points also round to\n"
	       "                     their grids in the graph, so ONNX Runtime computes forward --quant\n"
	       "  -h, --help         this help\n");
}

static void print_summary(const model *m, const char *config, const char *weights, const char *ranges, int bits,
			  int wbits, const char *onnx, const onnx_info *oi, const char *prototxt, const tidl_ssd *s,
			  double prior_diff, const data_config *dc, const head_config *mc)
{
	printf("model: %s (%s), weights %s, ", model_name(m), config, weights);
	if (ranges) {
		if (wbits && wbits != bits)
			printf("quantised to %d bits, weights %d, ranges %s\n", bits, wbits, ranges);
		else
			printf("quantised to %d bits, ranges %s\n", bits, ranges);
	} else {
		printf("float\n");
	}
	printf("onnx: %s, opset %d (IR %lld), %d nodes, %d initializers, %lld weights, %d range Clips, %zu bytes\n",
	       onnx, oi->opset, (long long)oi->ir_version, oi->nnodes, oi->ninitializers, (long long)oi->weights,
	       oi->nclips, oi->bytes);
	printf("input: input f32[%lld,%lld,%lld,%lld], %s, (pixel - mean) / std: mean %g %g %g, std %g %g %g\n",
	       (long long)oi->input_shape[0], (long long)oi->input_shape[1], (long long)oi->input_shape[2],
	       (long long)oi->input_shape[3], dc->to_rgb ? "RGB" : "BGR", dc->mean[0], dc->mean[1], dc->mean[2],
	       dc->std[0], dc->std[1], dc->std[2]);
	printf("outputs (NCHW; channel a*K+j is anchor a's value j):\n");
	for (int k = 0; k < oi->noutputs; k++)
		printf("  %-6s f32[%lld,%lld,%lld,%lld]\n", oi->output_name[k], (long long)oi->output_shape[k][0],
		       (long long)oi->output_shape[k][1], (long long)oi->output_shape[k][2],
		       (long long)oi->output_shape[k][3]);
	const detect_params *t = &mc->test;
	if (!oi->ndetect) {
		printf("detection outputs: none (--heads-only)\n");
	} else {
		printf("detection outputs (after the heads: softmax, nms_pre %d, decode, clip to the input, ", t->nms_pre);
		if (oi->opset >= 11)
			printf("NonMaxSuppression iou %g, score > %g, max_per_img %d; %lld candidates):\n", t->nms_iou,
			       t->score_thr, t->max_per_img, (long long)oi->candidates);
		else
			printf("score > %g, no NMS at opset %d: every (class, candidate) above it; %lld candidates):\n",
			       t->score_thr, oi->opset, (long long)oi->candidates);
		if (oi->ndetect == 1) {
			printf("  %-10s f32[1,K,6] x1 y1 x2 y2 score label (input pixels)\n", oi->detect_name[0]);
		} else {
			printf("  %-10s f32[1,K,5] x1 y1 x2 y2 score (input pixels)\n", oi->detect_name[0]);
			printf("  %-10s i64[1,K] 0..C-1\n", oi->detect_name[1]);
		}
	}
	printf("prototxt: %s, %d levels, num_classes %d (background %d), %s; prior boxes equal the anchors to "
	       "%.3g px\n",
	       prototxt, s->nlevels, s->num_classes, s->background_label_id,
	       s->single_output ? "one output (old TIDL)" : "outputs dets, labels", prior_diff);
	for (int k = 0; k < s->nlevels; k++) {
		const tidl_prior *p = &s->prior[k];
		printf("  level %d: %s %s, %dx%d, min_size %g max_size %g step %g ratios", k, s->class_input[k],
		       s->box_input[k], p->feat_h, p->feat_w, p->min_size, p->max_size, p->step);
		for (int i = 0; i < p->nratios; i++)
			printf(" %g", p->ratio[i]);
		printf("\n");
	}
	/* what a user gives TIDL's compiler beside the two files (TI's edgeai-tidl-tools:
	 * ONNX Runtime's TIDL provider options and its model configs' preprocessing) */
	printf("tidl compile options:\n");
	printf("  object_detection:meta_arch_type: 3 (ONNX SSD)\n");
	printf("  object_detection:meta_layers_names_list: %s\n", prototxt);
	if (ranges) {
		printf("  tensor_bits: %d\n", bits);
		printf("  advanced_options:quantization_scale_type: 1 (power-of-2 scales, as exported)\n");
		printf("  accuracy_level: 0 (the ranges are the graph's Clips: no calibration)\n");
	} else {
		printf("  tensor_bits: 8 or 16; accuracy_level: 1 (TIDL calibrates: advanced_options:calibration_frames)\n");
	}
	printf("  input_mean: %g %g %g (the config's mean)\n", dc->mean[0], dc->mean[1], dc->mean[2]);
	printf("  input_scale: %.9g %.9g %.9g (1 / std; TIDL computes (pixel - mean) * scale)\n", 1 / dc->std[0],
	       1 / dc->std[1], 1 / dc->std[2]);
	printf("  channels: %s (reverse_channels: %s), resize %lldx%lld, data_layout NCHW\n", dc->to_rgb ? "RGB" : "BGR",
	       dc->to_rgb ? "False" : "True", (long long)oi->input_shape[3], (long long)oi->input_shape[2]);
	if (!ranges)
		return;
	printf("ranges (%d points: clip lo hi, fraction bits):\n", model_quant_points(m));
	for (int p = 0; p < model_quant_points(m); p++) {
		float lo, hi;
		int frac;
		if (onnx_point_clip(m, p, &lo, &hi, &frac) == 0)
			printf("  %-40s %12.6g %12.6g %3d\n", model_quant_point_name(m, p), lo, hi, frac);
	}
}

int main(int argc, char **argv)
{
	tool_init("tidl-pack");
	enum { O_CONFIG = 256, O_WEIGHTS, O_QUANT, O_RANGES, O_BITS, O_ONNX, O_PROTO, O_OPSET, O_OLD, O_SIZE, O_CONF,
	       O_TOPK, O_KEEP, O_ROUND, O_WBITS, O_PCDW, O_HEADS };
	static const struct option lopts[] = {
		{"config", required_argument, 0, O_CONFIG}, {"weights", required_argument, 0, O_WEIGHTS},
		{"quant", no_argument, 0, O_QUANT},         {"ranges", required_argument, 0, O_RANGES},
		{"bits", required_argument, 0, O_BITS},     {"onnx", required_argument, 0, O_ONNX},
		{"prototxt", required_argument, 0, O_PROTO}, {"opset", required_argument, 0, O_OPSET},
		{"old-tidl", no_argument, 0, O_OLD},        {"size", required_argument, 0, O_SIZE},
		{"confidence", required_argument, 0, O_CONF}, {"top-k", required_argument, 0, O_TOPK},
		{"keep-top-k", required_argument, 0, O_KEEP}, {"round", no_argument, 0, O_ROUND},
		{"heads-only", no_argument, 0, O_HEADS},
		{"weight-bits", required_argument, 0, O_WBITS}, {"per-channel-dw", no_argument, 0, O_PCDW},
		{"help", no_argument, 0, 'h'},              {0}};
	const char *config = NULL, *weights = NULL, *ranges = NULL, *onnx = "model.onnx", *prototxt = "model.prototxt";
	int quant = 0, old = 0, round_act = 0, per_channel_dw = 0, heads_only = 0;
	long bits = 8, wbits = 0, opset = 11, size = 0, topk = 200, keep = 0;
	double conf = 0.3;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lopts, NULL)) != -1) {
		switch (c) {
		case O_CONFIG: config = optarg; break;
		case O_WEIGHTS: weights = optarg; break;
		case O_QUANT: quant = 1; break;
		case O_RANGES: ranges = optarg; break;
		case O_BITS: bits = arg_long("--bits", optarg, 2, 16); break;
		case O_WBITS: wbits = arg_long("--weight-bits", optarg, 2, 16); break;
		case O_PCDW: per_channel_dw = 1; break;
		case O_ONNX: onnx = optarg; break;
		case O_PROTO: prototxt = optarg; break;
		case O_OPSET:
			opset = arg_long("--opset", optarg, 9, 11);
			if (opset == 10)
				usage_error("--opset: 9 or 11");
			break;
		case O_OLD: old = 1; break;
		case O_SIZE: size = arg_long("--size", optarg, 1, 8192); break;
		case O_CONF: conf = arg_double("--confidence", optarg, 0, 1); break;
		case O_TOPK: topk = arg_long("--top-k", optarg, 1, 100000); break;
		case O_KEEP: keep = arg_long("--keep-top-k", optarg, 1, 1000000); break;
		case O_ROUND: round_act = 1; break;
		case O_HEADS: heads_only = 1; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!config || !weights)
		usage_error("--config and --weights are required");
	if (ranges && !quant)
		usage_error("--ranges goes with --quant");
	if (round_act && !quant)
		usage_error("--round goes with --quant");
	if ((wbits || per_channel_dw) && !quant)
		usage_error("--weight-bits and --per-channel-dw go with --quant");

	model *m = model_load(config);
	head_config mc;
	data_config dc;
	head_config_default(&mc);
	data_config_default(&dc);
	if (!m || head_config_load(&mc, config) < 0 || data_config_load(&dc, config) < 0)
		die_err();
	if (quant && model_quantize_as(m, (int)bits, (int)wbits, per_channel_dw) < 0)
		die_err();
	record *p = stream_read_first(weights, "params");
	if (!p || model_load_params(m, p) < 0) {
		err_wrap("--weights %s", weights);
		die_err();
	}
	record_free(p);
	const char *from = NULL;
	if (quant) {
		from = ranges ? ranges : weights;
		record *rg = stream_read_first(from, "ranges");
		if (!rg)
			die("--quant: %s (give --ranges from calib-ranges, or a QAT checkpoint)", err_msg());
		if (model_load_ranges(m, rg) < 0) {
			err_wrap("%s %s", ranges ? "--ranges" : "--weights", from);
			die_err();
		}
		record_free(rg);
	}
	for (int i = 0; i < 4; i++)
		if (mc.coder.means[i] != 0)
			die("%s: model.bbox_coder.means must be 0 for caffe's CENTER_SIZE decoding", config);
	int S = size ? (int)size : dc.size;
	if (model_plan(m, 1, S, S, 0, 0) < 0)
		die_err();

	/* the graph ends in ssd-decode's post-processing: the same anchors and settings */
	anchor_set *anchors = anchors_new(&mc.anchors, S);
	if (!anchors)
		die_err();
	onnx_detect od = {.anchors = anchors, .coder = mc.coder, .test = mc.test, .single_output = old};
	onnx_options oo = {.opset = (int)opset, .batch = 1, .round = round_act, .detect = heads_only ? NULL : &od};
	onnx_info oi;
	if (onnx_export(m, &oo, onnx, &oi) < 0)
		die_err();
	anchors_free(anchors);

	tidl_ssd s = {.in_width = S, .in_height = S, .num_classes = model_num_classes(m) + 1,
		      .background_label_id = model_num_classes(m), .nms_threshold = mc.test.nms_iou,
		      .confidence_threshold = conf, .top_k = (int)topk,
		      .keep_top_k = keep ? (int)keep : mc.test.max_per_img,
		      .single_output = old};
	double prior_diff;
	if (tidl_priors(&mc.anchors, S, s.prior, &s.nlevels, &prior_diff) < 0)
		die_err();
	if (2 * s.nlevels != oi.noutputs)
		die("%s: %d anchor levels for %d head outputs", config, s.nlevels, oi.noutputs);
	for (int k = 0; k < s.nlevels; k++) {
		s.class_input[k] = oi.output_name[k];
		s.box_input[k] = oi.output_name[s.nlevels + k];
		if (strncmp(s.class_input[k], "cls_", 4) || strncmp(s.box_input[k], "reg_", 4))
			die("%s: head outputs %s, %s: expected cls_%d, reg_%d", config, s.class_input[k], s.box_input[k], k,
			    k);
	}
	for (int i = 0; i < 4; i++)
		s.variance[i] = mc.coder.stds[i];
	afile f;
	if (afile_open(&f, prototxt, "w") < 0)
		die_err();
	if (tidl_prototxt_write(f.f, &s) < 0) {
		afile_abort(&f);
		die("%s: write failed", prototxt);
	}
	if (afile_commit(&f) < 0)
		die_err();

	print_summary(m, config, weights, from, (int)bits, (int)wbits, onnx, &oi, prototxt, &s, prior_diff, &dc, &mc);
	model_free(m);
	close_stdout();
	return 0;
}
