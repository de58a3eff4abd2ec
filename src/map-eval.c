/* map-eval: dets records in, mmdetection's VOC mAP table or COCO's 12 numbers out (and JSON). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "core/afile.h"
#include "data/coco.h"
#include "eval/coco_eval.h"
#include "train/dist.h"
#include "core/stream.h"
#include "tool/tool.h"
#include "data/classes.h"
#include "eval/voc_ap.h"

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
	       "  --metric voc|coco         VOC's mAP (default) or COCO's 12 bbox numbers as\n"
	       "                            pycocotools' COCOeval computes them, with mmdet's\n"
	       "                            classwise AP table (COCO AP of each class)\n"
	       "  --ann FILE                coco: the ground truth from this COCO annotation file (its\n"
	       "                            areas, crowds, every image); the dets' ids are its image\n"
	       "                            ids (coco-decode's records). Without it the gts come from\n"
	       "                            the records: areas w*h, difficult counted as iscrowd\n"
	       "  --results FILE            coco: also write the dets as a COCO results JSON\n"
	       "                            (image_id, category_id, bbox [x,y,w,h], score)\n"
	       "  --mpi                     sharded evaluation under mpirun: every rank reads its\n"
	       "                            shard's dets, rank 0 gathers them all and alone writes\n"
	       "                            the table and --json (the same as one process)\n"
	       "  -h, --help                this help\n"
	       "\n"
	       "Difficult ground truth is neither a hit nor a miss. Errors: no dets records, an image\n"
	       "twice, dets of an image not in --gt, labels beyond the class list.\n");
}

/* What the records go into: VOC's map_eval, or with ce set COCO's evaluation. */
struct sink {
	map_eval *m;
	coco_eval *ce;
	coco_source *src;
};

static int add_record(struct sink *k, const record *r, int gt, int with_gt, long *count)
{
	if (k->ce)
		return gt ? coco_eval_add_gt_record(k->ce, r) : coco_eval_add_dets_record(k->ce, k->src, r, with_gt);
	return gt ? map_add_gt_record(k->m, r, count) : map_add_dets_record(k->m, r, with_gt, count);
}

/* Reads one stream into k: dets records, or with gt set "image" records as ground
 * truth. With fwd set (a rank of --mpi other than 0), dets records go there instead. */
static void read_from(stream_reader *in, struct sink *m, stream_writer *fwd, int gt, int with_gt, long *count,
		      long *dets)
{
	if (!in)
		die_err();
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (!strcmp(r->kind, gt ? "image" : "dets")) {
			rc = fwd ? stream_pass(fwd, r) : add_record(m, r, gt, with_gt, count);
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

static void read_stream(struct sink *m, stream_writer *fwd, const char *path, int gt, int with_gt, long *count,
			long *dets)
{
	read_from(stream_open_read(path), m, fwd, gt, with_gt, count, dets);
}

/* --mpi: rank 0 reads the dets of the other ranks (their records, re-framed in memory
 * and gathered); the others send theirs (buf, len) and are done. */
static void gather_ranks(struct sink *m, int rank, int ranks, const char *buf, size_t len, int with_gt, long *count,
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

/* Writes j (taken) to path, atomically. */
static void write_json(const char *path, cJSON *j)
{
	char *text = j ? cJSON_Print(j) : NULL;
	if (!j || !text)
		die("out of memory");
	afile f;
	if (afile_open(&f, path, "w") < 0)
		die("%s: %s", path, err_msg());
	if (fprintf(f.f, "%s\n", text) < 0) {
		int e = errno;
		afile_abort(&f);
		die("%s: write error: %s", path, strerror(e));
	}
	if (afile_commit(&f) < 0)
		die("%s: %s", path, err_msg());
	free(text);
	cJSON_Delete(j);
}

/* COCO's numbers: pycocotools' summary and mmdet's classwise table on stdout, JSON. */
static void evaluate_coco(coco_eval *ce, const voc_classes *classes, const char *json_file)
{
	double stats[COCO_NSTATS], *class_ap = calloc((size_t)classes->n, sizeof *class_ap);
	if (!class_ap)
		die("out of memory");
	if (coco_eval_compute(ce, stats, class_ap) < 0)
		die_err();
	const char *const *names = (const char *const *)classes->names;
	char *report = coco_eval_report(stats, class_ap, names, classes->n);
	if (!report)
		die_err();
	fputs(report, stdout);
	free(report);
	if (json_file)
		write_json(json_file, coco_eval_json(ce, stats, class_ap, names, classes->n));
	free(class_ap);
}

int main(int argc, char **argv)
{
	tool_init("map-eval");
	enum { O_CLASSES = 256, O_GT, O_MODE, O_IOU, O_NOLEGACY, O_JSON, O_MPI, O_METRIC, O_ANN, O_RESULTS };
	static const struct option opts[] = {
		{"classes", required_argument, 0, O_CLASSES}, {"gt", required_argument, 0, O_GT},
		{"mode", required_argument, 0, O_MODE},       {"iou-thr", required_argument, 0, O_IOU},
		{"no-legacy-coordinate", no_argument, 0, O_NOLEGACY},
		{"json", required_argument, 0, O_JSON},       {"mpi", no_argument, 0, O_MPI},
		{"metric", required_argument, 0, O_METRIC},   {"ann", required_argument, 0, O_ANN},
		{"results", required_argument, 0, O_RESULTS},
		{"help", no_argument, 0, 'h'},                {0}};
	const char *classes_file = NULL, *gt_file = NULL, *json_file = NULL, *ann_file = NULL, *results_file = NULL;
	int coco = 0;
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
		case O_METRIC:
			if (strcmp(optarg, "voc") && strcmp(optarg, "coco"))
				usage_error("--metric: '%s' is not voc or coco", optarg);
			coco = !strcmp(optarg, "coco");
			break;
		case O_ANN: ann_file = optarg; break;
		case O_RESULTS: results_file = optarg; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}

	if (!coco && (ann_file || results_file))
		usage_error("--ann and --results go with --metric coco");
	if (ann_file && gt_file)
		usage_error("--ann and --gt both give the ground truth: one of them");
	int rank = 0, ranks = 1;
	if (mpi && dist_init(&argc, &argv, &rank, &ranks) < 0)
		die_err();
	coco_set *set = ann_file && !rank ? coco_load(ann_file) : NULL;
	if (ann_file && !rank && !set)
		die_err();
	voc_classes *classes = classes_file ? voc_classes_load(classes_file)
			     : set	    ? coco_classes(set)
					    : voc_classes_default();
	if (!classes)
		die_err();
	map_eval *m = map_new(classes->n, legacy, iou);
	if (!m)
		die_err();
	struct sink sink = {.m = m};
	coco_source src = {.set = set};
	afile results = {0};
	int *label = NULL, *category = NULL;
	if (coco && !rank) {
		if (!(sink.ce = coco_eval_new(classes->n)))
			die_err();
		sink.src = &src;
		if (set) {
			if (!(label = coco_labels(set, classes)) || !(category = calloc((size_t)classes->n, sizeof *category)))
				die("%s: %s", classes_file ? classes_file : ann_file, err_msg());
			/* labels follow the file's category order (mmdet's cat2label): name them so */
			voc_classes *named = coco_label_names(set, label);
			if (!named)
				die_err();
			voc_classes_free(classes);
			classes = named;
			for (int i = set->ncategories - 1; i >= 0; i--)
				if (label[i] >= 0)
					category[label[i]] = i;
			src.category = category;
			if (coco_eval_add_set(sink.ce, &src, label) < 0)
				die("%s: %s", ann_file, err_msg());
		}
		if (results_file) {
			if (afile_open(&results, results_file, "w") < 0)
				die("%s: %s", results_file, err_msg());
			src.results = results.f;
		}
	}
	/* ranks other than 0 frame their dets records into memory for rank 0 */
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = rank ? open_memstream(&buf, &len) : NULL;
	stream_writer *fwd = mem ? stream_writer_new(mem, "memory", 1) : NULL;
	if (rank && !fwd)
		die_err();
	long count = 0, ndets = 0;
	if (gt_file && !rank)
		read_stream(&sink, NULL, gt_file, 1, 0, &count, &ndets);
	if (optind == argc)
		read_stream(&sink, fwd, "-", 0, !gt_file, &count, &ndets);
	for (int i = optind; i < argc; i++)
		read_stream(&sink, fwd, argv[i], 0, !gt_file, &count, &ndets);
	if (fwd && (stream_close_write(fwd) < 0 || fclose(mem) != 0))
		die("memory: %s", err_msg());
	if (mpi)
		gather_ranks(&sink, rank, ranks, buf, len, !gt_file, &count, &ndets);
	free(buf);
	if (rank) {
		map_free(m);
		voc_classes_free(classes);
		dist_finalize();
		return 0;
	}
	if (!ndets)
		die("no dets records in the input");
	if (coco) {
		if (results_file && (coco_results_finish(&src) < 0 || afile_commit(&results) < 0))
			die("%s: %s", results_file, err_msg());
		evaluate_coco(sink.ce, classes, json_file);
		coco_eval_free(sink.ce);
		coco_free(set);
		free(label);
		free(category);
		map_free(m);
		voc_classes_free(classes);
		close_stdout();
		dist_finalize();
		return 0;
	}

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
	if (json_file)
		write_json(json_file, map_json(m, res, names, mode, mean_ap));
	free(res);
	map_free(m);
	voc_classes_free(classes);
	close_stdout();
	dist_finalize();
	return 0;
}
