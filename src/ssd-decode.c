/* ssd-decode: pred records (SSD head outputs) in, one dets record per image out. */
#include <getopt.h>
#include <limits.h>
#include <string.h>

#include "ssd/detect.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: ssd-decode [--config FILE] [options] < preds > dets\n"
	       "\n"
	       "Turns SSD head outputs into detections as mmdetection 2.x's SSDHead does at test time:\n"
	       "softmax, per-level top nms_pre, DeltaXYWH decode clipped to the input, rescale to the\n"
	       "original image, per-class score threshold and NMS, best max_per_img over all classes.\n"
	       "Records of any other kind pass through unchanged, in order.\n"
	       "\n"
	       "  --config FILE      read the \"model\" section (anchors, bbox_coder, test); without it\n"
	       "                     TI's ssd_mobilenet_fpn settings (mmdet SSD512 anchors)\n"
	       "  --score-thr X      keep scores > X (default 0.02 or model.test.score_thr)\n"
	       "  --nms-iou X        NMS suppresses IoU > X (default 0.45 or model.test.nms_iou)\n"
	       "  --max-per-img N    at most N detections per image (default 200)\n"
	       "  --nms-pre N        per level, the N best anchors only (default 1000; 0: all)\n"
	       "  --progress TOTAL   images done (of TOTAL; 0: unknown) on stderr every 2 s\n"
	       "  -h, --help         this help\n"
	       "\n"
	       "In (kind \"pred\"): cls f32[N,A,C+1] (background last), reg f32[N,A,4], scale_factor\n"
	       "f32[N,4], orig_size i32[N,2], ground truth boxes f32[N,M,4], labels i32[N,M], nbox\n"
	       "i32[N], difficult u8[N,M] (as augment --eval makes them); meta size, ids, indices.\n"
	       "A must be the anchor count of the config at meta.size (24560 at 512, 9620 at 320).\n"
	       "Out (kind \"dets\", one per image): boxes f32[D,4] in original pixels, scores f32[D],\n"
	       "labels i32[D] (0..C-1), gt_boxes f32[G,4], gt_labels i32[G], gt_difficult u8[G];\n"
	       "meta id, index, width, height, num_classes.\n"
	       "Environment: TNS_LEVEL (zstd level).\n");
}

struct emit_ctx {
	stream_writer *w;
};

static int emit(void *ctx, record *dets)
{
	int rc = stream_write(((struct emit_ctx *)ctx)->w, dets);
	record_free(dets);
	return rc;
}

int main(int argc, char **argv)
{
	tool_init("ssd-decode");
	enum { O_CONFIG = 256, O_SCORE, O_IOU, O_MAX, O_PRE, O_PROGRESS };
	static const struct option opts[] = {
		{"config", required_argument, 0, O_CONFIG},    {"score-thr", required_argument, 0, O_SCORE},
		{"nms-iou", required_argument, 0, O_IOU},      {"max-per-img", required_argument, 0, O_MAX},
		{"nms-pre", required_argument, 0, O_PRE},      {"help", no_argument, 0, 'h'},
		{"progress", required_argument, 0, O_PROGRESS},
		{0}};
	const char *config = NULL;
	double score = -1, iou = -1;
	long max = 0, pre = -2, total = 0;
	int show = 0;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_CONFIG: config = optarg; break;
		case O_SCORE: score = arg_double("--score-thr", optarg, 0, 1); break;
		case O_IOU: iou = arg_double("--nms-iou", optarg, 0, 1); break;
		case O_MAX: max = arg_long("--max-per-img", optarg, 1, 1 << 30); break;
		case O_PRE: pre = arg_long("--nms-pre", optarg, 0, 1 << 30); break;
		case O_PROGRESS: total = arg_long("--progress", optarg, 0, LONG_MAX); show = 1; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);

	head_config m;
	head_config_default(&m);
	if (config && head_config_load(&m, config) < 0)
		die_err();
	if (score >= 0)
		m.test.score_thr = score;
	if (iou >= 0)
		m.test.nms_iou = iou;
	if (max)
		m.test.max_per_img = (int)max;
	if (pre >= 0)
		m.test.nms_pre = (int)pre;

	refuse_terminal_stdout();
	stream_reader *in = stream_open_read("-");
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	detector *d = detector_new(&m);
	if (!in || !out || !d)
		die_err();
	struct emit_ctx ctx = {out};
	long images = 0;
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (strcmp(r->kind, "pred") != 0)
			rc = stream_pass(out, r);
		else if ((rc = detect_pred_record(d, r, &images, emit, &ctx)) < 0)
			err_wrap("%s: record %ld", stream_name(in), stream_count(in));
		record_free(r);
		if (rc < 0)
			die_err();
		if (show)
			progress(images, total, "images", 0);
	}
	if (rc < 0 || stream_close_write(out) < 0)
		die_err();
	if (show)
		progress(images, total, "images", 1);
	stream_close_read(in);
	detector_free(d);
	close_stdout();
	return 0;
}
