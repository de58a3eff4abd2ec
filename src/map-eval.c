/* map-eval: dets records in, mmdetection's VOC mAP table out (and JSON). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "tool.h"
#include "voc.h"
#include "voc_ap.h"

static void usage(void)
{
	printf("usage: map-eval [options] [STREAM...] > table\n"
	       "\n"
	       "Scores detections as mmdetection 2.x's eval_map does for VOC and prints its table\n"
	       "(class | gts | dets | recall | ap, then mAP). Reads \"dets\" records (ssd-decode) from\n"
	       "the STREAMs in turn (default: stdin); shards may come in any order and give the same\n"
	       "result. Records of other kinds are ignored.\n"
	       "\n"
	       "  --classes FILE            class names, one per line (default: the 20 VOC classes)\n"
	       "  --gt FILE                 ground truth from voc-decode \"image\" records instead of the\n"
	       "                            dets' gt_* tensors; its images without dets count as images\n"
	       "                            with no detections\n"
	       "  --mode 11points|area      VOC07 11-point interpolation (default) or VOC12 area\n"
	       "  --iou-thr X               IoU for a match (default 0.5)\n"
	       "  --no-legacy-coordinate    widths x2 - x1 (default: VOC's x2 - x1 + 1, as mmdet's VOC)\n"
	       "  --json FILE               also write the results as JSON\n"
	       "  -h, --help                this help\n"
	       "\n"
	       "Difficult ground truth is neither a hit nor a miss. Errors: no dets records, an image\n"
	       "twice, dets of an image not in --gt, labels beyond the class list.\n");
}

/* Reads one stream into m: dets records, or with gt set "image" records as ground truth. */
static void read_stream(map_eval *m, const char *path, int gt, int with_gt, long *count, long *dets)
{
	stream_reader *in = stream_open_read(path);
	if (!in)
		die_err();
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (!strcmp(r->kind, gt ? "image" : "dets")) {
			rc = gt ? map_add_gt_record(m, r, count) : map_add_dets_record(m, r, with_gt, count);
			if (rc < 0)
				err_wrap("%s: record %ld", stream_name(in), stream_count(in));
			*dets += !gt;
		}
		record_free(r);
		if (rc < 0)
			die_err();
	}
	if (rc < 0)
		die_err();
	stream_close_read(in);
}

int main(int argc, char **argv)
{
	tool_init("map-eval");
	enum { O_CLASSES = 256, O_GT, O_MODE, O_IOU, O_NOLEGACY, O_JSON };
	static const struct option opts[] = {
		{"classes", required_argument, 0, O_CLASSES}, {"gt", required_argument, 0, O_GT},
		{"mode", required_argument, 0, O_MODE},       {"iou-thr", required_argument, 0, O_IOU},
		{"no-legacy-coordinate", no_argument, 0, O_NOLEGACY},
		{"json", required_argument, 0, O_JSON},       {"help", no_argument, 0, 'h'},
		{0}};
	const char *classes_file = NULL, *gt_file = NULL, *json_file = NULL;
	enum map_mode mode = MAP_11POINTS;
	double iou = 0.5;
	int legacy = 1, c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_CLASSES: classes_file = optarg; break;
		case O_GT: gt_file = optarg; break;
		case O_MODE:
			if (!strcmp(optarg, "11points"))
				mode = MAP_11POINTS;
			else if (!strcmp(optarg, "area"))
				mode = MAP_AREA;
			else
				usage_error("--mode: '%s' is not 11points or area", optarg);
			break;
		case O_IOU: iou = arg_double("--iou-thr", optarg, 0, 1); break;
		case O_NOLEGACY: legacy = 0; break;
		case O_JSON: json_file = optarg; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}

	voc_classes *classes = classes_file ? voc_classes_load(classes_file) : voc_classes_default();
	if (!classes)
		die_err();
	map_eval *m = map_new(classes->n, legacy, iou);
	if (!m)
		die_err();
	long count = 0, ndets = 0;
	if (gt_file)
		read_stream(m, gt_file, 1, 0, &count, &ndets);
	if (optind == argc)
		read_stream(m, "-", 0, !gt_file, &count, &ndets);
	for (int i = optind; i < argc; i++)
		read_stream(m, argv[i], 0, !gt_file, &count, &ndets);
	if (!ndets)
		die("no dets records in the input");

	map_class *res = calloc((size_t)classes->n, sizeof *res);
	double mean_ap;
	if (!res)
		die("out of memory");
	if (map_compute(m, mode, res, &mean_ap) < 0)
		die_err();
	const char *const *names = (const char *const *)classes->names;
	char *table = map_table(res, names, classes->n, mean_ap);
	if (!table)
		die_err();
	fputs(table, stdout);
	free(table);
	if (json_file) {
		cJSON *j = map_json(m, res, names, mode, mean_ap);
		char *text = j ? cJSON_Print(j) : NULL;
		if (!j || !text)
			die("out of memory");
		FILE *f = fopen(json_file, "w");
		if (!f)
			die("%s: %s", json_file, strerror(errno));
		int bad = fprintf(f, "%s\n", text) < 0;
		if (fclose(f) != 0 || bad)
			die("%s: write error", json_file);
		free(text);
		cJSON_Delete(j);
	}
	free(res);
	map_free(m);
	voc_classes_free(classes);
	close_stdout();
	return 0;
}
