/* map-eval: dets records in, mmdetection's VOC mAP table out (and JSON). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
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
	       "  --mpi                     sharded evaluation under mpirun: every rank reads its\n"
	       "                            shard's dets, rank 0 gathers them all and alone writes\n"
	       "                            the table and --json (the same as one process)\n"
	       "  -h, --help                this help\n"
	       "\n"
	       "Difficult ground truth is neither a hit nor a miss. Errors: no dets records, an image\n"
	       "twice, dets of an image not in --gt, labels beyond the class list.\n");
}

/* Reads one stream into m: dets records, or with gt set "image" records as ground
 * truth. With fwd set (a rank of --mpi other than 0), dets records go there instead. */
static void read_from(stream_reader *in, map_eval *m, stream_writer *fwd, int gt, int with_gt, long *count,
		      long *dets)
{
	if (!in)
		die_err();
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (!strcmp(r->kind, gt ? "image" : "dets")) {
			rc = fwd ? stream_pass(fwd, r)
			   : gt	 ? map_add_gt_record(m, r, count)
				 : map_add_dets_record(m, r, with_gt, count);
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

static void read_stream(map_eval *m, stream_writer *fwd, const char *path, int gt, int with_gt, long *count,
			long *dets)
{
	read_from(stream_open_read(path), m, fwd, gt, with_gt, count, dets);
}

/* --mpi: rank 0 reads the dets of the other ranks (their records, re-framed in memory
 * and gathered); the others send theirs (buf, len) and are done. */
static void gather_ranks(map_eval *m, int rank, int ranks, const char *buf, size_t len, int with_gt, long *count,
			 long *dets)
{
	void *all;
	size_t total, *counts = calloc((size_t)ranks, sizeof *counts);
	if (!counts)
		die("out of memory");
	if (dist_gather_bytes(buf, len, &all, &total, counts) < 0)
		die_err();
	size_t at = counts[0];
	for (int r = 1; rank == 0 && r < ranks; r++) {
		if (counts[r]) {
			char name[32];
			snprintf(name, sizeof name, "rank %d", r);
			FILE *f = fmemopen((char *)all + at, counts[r], "r");
			if (!f)
				die("%s: fmemopen: %s", name, strerror(errno));
			read_from(stream_reader_new(f, name), m, NULL, 0, with_gt, count, dets);
			fclose(f);
		}
		at += counts[r];
	}
	free(all);
	free(counts);
}

int main(int argc, char **argv)
{
	tool_init("map-eval");
	enum { O_CLASSES = 256, O_GT, O_MODE, O_IOU, O_NOLEGACY, O_JSON, O_MPI };
	static const struct option opts[] = {
		{"classes", required_argument, 0, O_CLASSES}, {"gt", required_argument, 0, O_GT},
		{"mode", required_argument, 0, O_MODE},       {"iou-thr", required_argument, 0, O_IOU},
		{"no-legacy-coordinate", no_argument, 0, O_NOLEGACY},
		{"json", required_argument, 0, O_JSON},       {"mpi", no_argument, 0, O_MPI},
		{"help", no_argument, 0, 'h'},                {0}};
	const char *classes_file = NULL, *gt_file = NULL, *json_file = NULL;
	enum map_mode mode = MAP_11POINTS;
	double iou = 0.5;
	int legacy = 1, mpi = 0, c;
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
		case O_MPI: mpi = 1; break;
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
	int rank = 0, ranks = 1;
	if (mpi && dist_init(&argc, &argv, &rank, &ranks) < 0)
		die_err();
	/* ranks other than 0 frame their dets records into memory for rank 0 */
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = rank ? open_memstream(&buf, &len) : NULL;
	stream_writer *fwd = mem ? stream_writer_new(mem, "memory", 1) : NULL;
	if (rank && !fwd)
		die_err();
	long count = 0, ndets = 0;
	if (gt_file && !rank)
		read_stream(m, NULL, gt_file, 1, 0, &count, &ndets);
	if (optind == argc)
		read_stream(m, fwd, "-", 0, !gt_file, &count, &ndets);
	for (int i = optind; i < argc; i++)
		read_stream(m, fwd, argv[i], 0, !gt_file, &count, &ndets);
	if (fwd && (stream_close_write(fwd) < 0 || fclose(mem) != 0))
		die("memory: %s", err_msg());
	if (mpi)
		gather_ranks(m, rank, ranks, buf, len, !gt_file, &count, &ndets);
	free(buf);
	if (rank) {
		map_free(m);
		voc_classes_free(classes);
		dist_finalize();
		return 0;
	}
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
		if (fprintf(f, "%s\n", text) < 0 || fflush(f) != 0 || fclose(f) != 0)
			die("%s: write error: %s", json_file, strerror(errno));
		free(text);
		cJSON_Delete(j);
	}
	free(res);
	map_free(m);
	voc_classes_free(classes);
	close_stdout();
	dist_finalize();
	return 0;
}
