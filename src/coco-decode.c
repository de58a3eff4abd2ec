/* coco-decode: a COCO instance dataset (JSON + image folder) as a stream of image records. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/stream.h"
#include "tool/tool.h"
#include "data/coco.h"
#include "data/voc_reader.h"

static void usage(void)
{
	printf("usage: coco-decode [OPTION...] ANN_FILE IMG_PREFIX > STREAM\n"
	       "\n"
	       "Decodes a COCO instance dataset (ANN_FILE: instances_*.json; IMG_PREFIX: the folder its\n"
	       "images' file_names are relative to) into the same \"image\" records as voc-decode:\n"
	       "tensors image u8[3,H,W] (RGB), boxes f32[n,4] (x1,y1,x2,y2 = x,y,x+w,y+h, pixels),\n"
	       "labels i32[n], difficult u8[n] (here: iscrowd, ignored as VOC's difficult are); meta\n"
	       "id (the image id), root, file, width, height, index, epoch, difficult_is.\n"
	       "\n"
	       "As mmdetection 2.x's CocoDataset: labels are the categories in id order, or with\n"
	       "--classes the index of the category's name in that list (other categories' boxes\n"
	       "are left out); boxes with w < 1, h < 1 or area <= 0 are dropped; images without\n"
	       "boxes are kept unless --filter-empty-gt. Images come in the file's order.\n"
	       "\n"
	       "  --classes FILE      class names, one per line (default: every category, id order)\n"
	       "  --filter-empty-gt   leave out images without an annotation of the classes (mmdet's\n"
	       "                      training default)\n"
	       "  --shuffle           shuffle every epoch (seeded, the same order on any machine)\n"
	       "  --seed S            shuffle seed (default 0)\n"
	       "  --epochs N          emit N passes over the selection (default 1): epochs 0..N-1\n"
	       "  --resume E:P        start at epoch E, position P of its order\n"
	       "  --limit N           use only the first N images\n"
	       "  --shard k/N         keep positions p (after ordering) with p %% N == k\n"
	       "  --even-shards       with --shard: every shard gets as many images\n"
	       "  --threads N         decoding threads (default: online CPUs or $TNS_THREADS);\n"
	       "                      the output is identical for any N\n"
	       "  --skip-bad          warn about and skip bad images instead of failing\n"
	       "  --list              print \"id<TAB>boxes\" lines instead of records (no decoding)\n"
	       "  --verbose           print a summary (images, boxes, per class) on stderr\n"
	       "  --help              this text\n"
	       "\n"
	       "Bad input: malformed JSON (line and column), a missing or mistyped field, duplicate\n"
	       "ids, an annotation of an unknown image or category, a class no category has: the\n"
	       "whole file fails. A box outside its image, a missing or corrupt image file, or an\n"
	       "image whose size disagrees with its entry: that image (fails, or --skip-bad).\n"
	       "Environment: TNS_LEVEL (zstd level), TNS_THREADS.\n");
}

struct summary {
	long images, boxes, difficult, bad;
	long *per_class;
};

static void tally(struct summary *s, const record *r)
{
	const tensor *labels = record_find(r, "labels"), *diff = record_find(r, "difficult");
	int64_t n = tensor_numel(labels);
	s->images++;
	s->boxes += n;
	for (int64_t i = 0; i < n; i++) {
		s->per_class[((const int32_t *)labels->data)[i]]++;
		s->difficult += ((const uint8_t *)diff->data)[i] != 0;
	}
}

static void print_summary(const struct summary *s, const voc_classes *c)
{
	fprintf(stderr, "%s: %ld images, %ld boxes (%ld crowd)\n", tool_name, s->images, s->boxes, s->difficult);
	for (int i = 0; i < c->n; i++)
		fprintf(stderr, "%s:   %-16s %ld\n", tool_name, c->names[i], s->per_class[i]);
}

int main(int argc, char **argv)
{
	tool_init("coco-decode");
	enum { O_CLASSES = 256, O_SHUFFLE, O_SEED, O_EPOCHS, O_LIMIT, O_SHARD, O_THREADS, O_SKIP, O_LIST, O_RESUME, O_EVEN, O_FILTER };
	static const struct option opts[] = {
		{"classes", required_argument, 0, O_CLASSES},
		{"shuffle", no_argument, 0, O_SHUFFLE},     {"seed", required_argument, 0, O_SEED},
		{"epochs", required_argument, 0, O_EPOCHS}, {"limit", required_argument, 0, O_LIMIT},
		{"shard", required_argument, 0, O_SHARD},   {"threads", required_argument, 0, O_THREADS},
		{"skip-bad", no_argument, 0, O_SKIP},       {"list", no_argument, 0, O_LIST},
		{"resume", required_argument, 0, O_RESUME}, {"even-shards", no_argument, 0, O_EVEN},
		{"filter-empty-gt", no_argument, 0, O_FILTER},
		{"verbose", no_argument, 0, 'v'},           {"help", no_argument, 0, 'h'},
		{0}};
	const char *classes_file = NULL;
	voc_plan plan = {.epochs = 1, .limit = -1, .shard_n = 1, .threads = default_threads(), .images = 1};
	int skip_bad = 0, list = 0, verbose = 0, filter_empty = 0, c;
	opterr = 0; /* our own messages, in the "coco-decode: ..." form */
	while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
		switch (c) {
		case O_CLASSES: classes_file = optarg; break;
		case O_SHUFFLE: plan.shuffle = 1; break;
		case O_SEED: plan.seed = arg_u64("--seed", optarg); break;
		case O_EPOCHS: plan.epochs = (int)arg_long("--epochs", optarg, 1, 1000000); break;
		case O_LIMIT: plan.limit = arg_long("--limit", optarg, 0, LONG_MAX); break;
		case O_SHARD: arg_shard("--shard", optarg, &plan.shard_k, &plan.shard_n); break;
		case O_THREADS: plan.threads = (int)arg_long("--threads", optarg, 1, 256); break;
		case O_SKIP: skip_bad = 1; break;
		case O_EVEN: plan.even_shards = 1; break;
		case O_FILTER: filter_empty = 1; break;
		case O_RESUME: {
			char *colon = strchr(optarg, ':');
			if (!colon)
				usage_error("--resume: '%s' is not EPOCH:POSITION", optarg);
			*colon = 0;
			plan.start_epoch = (int)arg_long("--resume", optarg, 0, 1000000);
			plan.skip_to = arg_long("--resume", colon + 1, 0, LONG_MAX);
			break;
		}
		case O_LIST: list = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind != 2)
		usage_error("expected ANN_FILE and IMG_PREFIX");
	if (plan.start_epoch >= plan.epochs)
		usage_error("--resume: epoch %d is not before --epochs %d", plan.start_epoch, plan.epochs);
	if (!list)
		refuse_terminal_stdout();
	plan.images = !list;

	coco_set *set = coco_load(argv[optind]);
	if (!set)
		die_err();
	voc_classes *classes = classes_file ? voc_classes_load(classes_file) : coco_classes(set);
	if (!classes)
		die_err();
	int *label = coco_labels(set, classes);
	if (!label)
		die("%s: %s", classes_file ? classes_file : argv[optind], err_msg());
	plan.classes = classes;
	plan.encode = !list;
	plan.level = stream_resolve_level(STREAM_LEVEL_DEFAULT);
	voc_dataset *d = coco_dataset(set, label, argv[optind + 1], filter_empty);
	free(label);
	coco_free(set);
	if (!d)
		die_err();
	voc_reader *rd = voc_reader_new(d, &plan);
	if (!rd)
		die_err();
	stream_writer *w = list ? NULL : stream_writer_new(stdout, "stdout", plan.level);
	if (!list && !w)
		die_err();

	struct summary sum = {.per_class = calloc((size_t)classes->n, sizeof *sum.per_class)};
	if (!sum.per_class)
		die("out of memory");
	record *r;
	int rc;
	while ((rc = voc_reader_next(rd, &r)) != VOC_END) {
		if (rc == VOC_BAD && skip_bad) {
			fprintf(stderr, "%s: %s (skipped)\n", tool_name, err_msg());
			sum.bad++;
			continue;
		}
		if (rc != VOC_RECORD)
			break;
		tally(&sum, r);
		if (list)
			printf("%s\t%lld\n", meta_str(r, "id", "?"), (long long)record_find(r, "labels")->shape[0]);
		else if (stream_pass(w, r) < 0)
			rc = -1;
		record_free(r);
		if (rc < 0)
			break;
	}
	/* keep the first error: cleaning up must not replace it */
	char why[1024] = "";
	if (rc != VOC_END)
		snprintf(why, sizeof why, "%s", err_msg());
	if (w && stream_close_write(w) < 0 && !why[0])
		snprintf(why, sizeof why, "%s", err_msg());
	voc_reader_free(rd);
	voc_close(d);
	if (why[0]) {
		free(sum.per_class);
		voc_classes_free(classes);
		die("%s", why);
	}
	if (verbose)
		print_summary(&sum, classes);
	if (sum.bad)
		fprintf(stderr, "%s: skipped %ld bad image%s\n", tool_name, sum.bad, sum.bad == 1 ? "" : "s");
	free(sum.per_class);
	voc_classes_free(classes);
	close_stdout();
	return 0;
}
