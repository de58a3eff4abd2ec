#include "tool/decode.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/stream.h"
#include "tool/tool.h"

void decode_opts_init(decode_opts *o)
{
	*o = (decode_opts){.plan = {.epochs = 1, .limit = -1, .shard_n = 1, .threads = default_threads(), .images = 1}};
}

void decode_option(decode_opts *o, int c, char *const *argv)
{
	voc_plan *p = &o->plan;
	switch (c) {
	case DECODE_O_CLASSES: o->classes_file = optarg; break;
	case DECODE_O_SHUFFLE: p->shuffle = 1; break;
	case DECODE_O_SEED: p->seed = arg_u64("--seed", optarg); break;
	case DECODE_O_EPOCHS: p->epochs = (int)arg_long("--epochs", optarg, 1, 1000000); break;
	case DECODE_O_LIMIT: p->limit = arg_long("--limit", optarg, 0, LONG_MAX); break;
	case DECODE_O_SHARD: arg_shard("--shard", optarg, &p->shard_k, &p->shard_n); break;
	case DECODE_O_THREADS: p->threads = (int)arg_long("--threads", optarg, 1, 256); break;
	case DECODE_O_SKIP: o->skip_bad = 1; break;
	case DECODE_O_EVEN: p->even_shards = 1; break;
	case DECODE_O_RESUME: {
		char *colon = strchr(optarg, ':');
		if (!colon)
			usage_error("--resume: '%s' is not EPOCH:POSITION", optarg);
		*colon = 0;
		p->start_epoch = (int)arg_long("--resume", optarg, 0, 1000000);
		p->skip_to = arg_long("--resume", colon + 1, 0, LONG_MAX);
		break;
	}
	case DECODE_O_LIST: o->list = 1; break;
	case 'v': o->verbose = 1; break;
	case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
	default: usage_error("unknown option '%s'", argv[optind - 1]);
	}
}

void decode_opts_check(decode_opts *o)
{
	if (o->plan.start_epoch >= o->plan.epochs)
		usage_error("--resume: epoch %d is not before --epochs %d", o->plan.start_epoch, o->plan.epochs);
	if (!o->list)
		refuse_terminal_stdout();
	o->plan.images = !o->list;
}

void decode_usage_options(const char *order)
{
	printf("  --shuffle        shuffle every epoch (seeded, the same order on any machine)\n"
	       "  --seed S         shuffle seed (default 0)\n"
	       "  --epochs N       emit N passes over the selection (default 1): epochs 0..N-1\n"
	       "  --resume E:P     start at epoch E, position P of its order (resuming a training run\n"
	       "                   that has seen positions < P of epoch E)\n"
	       "  --limit N        use only the first N images of the %s\n"
	       "  --shard k/N      keep positions p (after ordering) with p %% N == k\n"
	       "  --even-shards    with --shard: leave out the last (images mod N) positions of\n"
	       "                   every epoch, so all N shards get as many images (data-parallel\n"
	       "                   training needs the same steps on every rank)\n"
	       "  --threads N      decoding threads (default: online CPUs or $TNS_THREADS);\n"
	       "                   the output is identical for any N\n"
	       "  --skip-bad       warn about and skip bad images instead of failing\n"
	       "  --list           print \"id<TAB>boxes\" lines instead of records (no decoding)\n"
	       "  --verbose        print a summary (images, boxes, per class) on stderr\n"
	       "  --help           this text\n",
	       order);
}

struct summary {
	long images, boxes, ignored, bad;
	long *per_class;
};

static void tally(struct summary *s, const record *r)
{
	const tensor *labels = record_find(r, "labels"), *ignore = record_find(r, "difficult");
	int64_t n = tensor_numel(labels);
	s->images++;
	s->boxes += n;
	for (int64_t i = 0; i < n; i++) {
		s->per_class[((const int32_t *)labels->data)[i]]++;
		s->ignored += ((const uint8_t *)ignore->data)[i] != 0;
	}
}

static void print_summary(const struct summary *s, const voc_classes *c, const char *ignore_word)
{
	fprintf(stderr, "%s: %ld images, %ld boxes (%ld %s)\n", tool_name, s->images, s->boxes, s->ignored,
		ignore_word);
	for (int i = 0; i < c->n; i++)
		fprintf(stderr, "%s:   %-16s %ld\n", tool_name, c->names[i], s->per_class[i]);
}

void decode_run(voc_dataset *d, const voc_classes *classes, decode_opts *o, const char *ignore_word)
{
	o->plan.classes = classes;
	o->plan.encode = !o->list;
	o->plan.level = stream_resolve_level(STREAM_LEVEL_DEFAULT);
	voc_reader *rd = voc_reader_new(d, &o->plan);
	if (!rd)
		die_err();
	stream_writer *w = o->list ? NULL : stream_writer_new(stdout, "stdout", o->plan.level);
	if (!o->list && !w)
		die_err();

	struct summary sum = {.per_class = calloc((size_t)classes->n, sizeof *sum.per_class)};
	if (!sum.per_class)
		die("out of memory");
	record *r;
	int rc;
	while ((rc = voc_reader_next(rd, &r)) != VOC_END) {
		if (rc == VOC_BAD && o->skip_bad) {
			fprintf(stderr, "%s: %s (skipped)\n", tool_name, err_msg());
			sum.bad++;
			continue;
		}
		if (rc != VOC_RECORD)
			break;
		tally(&sum, r);
		if (o->list)
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
		die("%s", why);
	}
	if (o->verbose)
		print_summary(&sum, classes, ignore_word);
	if (sum.bad)
		fprintf(stderr, "%s: skipped %ld bad image%s\n", tool_name, sum.bad, sum.bad == 1 ? "" : "s");
	free(sum.per_class);
}
