/* tns: look inside tensor streams, as jq looks inside JSON. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: tns ls [FILE...]          one line per record: number, kind, tensors, meta\n"
	       "       tns cat [--json] [FILE...] concatenate streams (checked), or print headers as JSON lines\n"
	       "       tns head [-n N] [FILE...]  the first N records (default 10) as a stream\n"
	       "       tns stats [FILE...]        min / max / mean / std of every tensor\n"
	       "\n"
	       "No FILE or '-' reads stdin. Streams are validated as they are read: a truncated or\n"
	       "corrupt record is an error naming the record number.\n"
	       "Environment: TNS_LEVEL (zstd level for output, default 1), TNS_MAX_RECORD (bytes).\n");
}

/* Calls fn on every record of every input; fn returns 0 to go on, 1 to stop. */
typedef int (*record_fn)(const char *src, long n, record *r, void *ctx);

static void each_record(int nfiles, char **files, record_fn fn, void *ctx)
{
	static char *stdin_only[] = {"-"};
	if (nfiles == 0) {
		nfiles = 1;
		files = stdin_only;
	}
	long n = 0;
	for (int i = 0; i < nfiles; i++) {
		stream_reader *s = stream_open_read(files[i]);
		if (!s)
			die_err();
		record *r;
		int rc;
		while ((rc = stream_read(s, &r)) > 0) {
			int stop = fn(stream_name(s), ++n, r, ctx);
			record_free(r);
			if (stop) {
				stream_close_read(s);
				return;
			}
		}
		if (rc < 0)
			die_err();
		stream_close_read(s);
	}
}

static int ls_one(const char *src, long n, record *r, void *ctx)
{
	printf("%4ld %-8s", n, r->kind);
	for (int i = 0; i < r->ntensors; i++) {
		char d[160];
		printf(" %s:%s", r->tensors[i].name, tensor_describe(&r->tensors[i], d, sizeof d));
	}
	char *meta = cJSON_PrintUnformatted(r->meta);
	if (meta && strcmp(meta, "{}") != 0) {
		size_t len = strlen(meta);
		if (len > 100)
			printf("  %.97s...", meta);
		else
			printf("  %s", meta);
	}
	cJSON_free(meta);
	putchar('\n');
	return 0;
}

static int json_one(const char *src, long n, record *r, void *ctx)
{
	cJSON *h = cJSON_CreateObject();
	cJSON_AddStringToObject(h, "kind", r->kind);
	cJSON_AddItemReferenceToObject(h, "meta", r->meta);
	cJSON *arr = cJSON_AddArrayToObject(h, "tensors");
	for (int i = 0; i < r->ntensors; i++) {
		const tensor *t = &r->tensors[i];
		cJSON *jt = cJSON_CreateObject();
		cJSON_AddStringToObject(jt, "name", t->name);
		cJSON_AddStringToObject(jt, "dtype", dtype_name(t->dtype));
		cJSON *shape = cJSON_AddArrayToObject(jt, "shape");
		for (int d = 0; d < t->ndim; d++)
			cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
		cJSON_AddItemToArray(arr, jt);
	}
	char *s = cJSON_PrintUnformatted(h);
	if (!s)
		die("out of memory");
	puts(s);
	cJSON_free(s);
	cJSON_Delete(h);
	return 0;
}

static int pass_one(const char *src, long n, record *r, void *ctx)
{
	long *left = ((void **)ctx)[1];
	if (left && *left <= 0)
		return 1;
	if (stream_pass(((void **)ctx)[0], r) < 0)
		die_err();
	if (left && --*left <= 0)
		return 1;
	return 0;
}

static int stats_one(const char *src, long n, record *r, void *ctx)
{
	printf("%ld %s\n", n, r->kind);
	for (int i = 0; i < r->ntensors; i++) {
		const tensor *t = &r->tensors[i];
		int64_t k = tensor_numel(t), nonfinite = 0;
		double lo = INFINITY, hi = -INFINITY, sum = 0, sq = 0;
		for (int64_t j = 0; j < k; j++) {
			double v = tensor_get(t, j);
			if (!isfinite(v)) {
				nonfinite++;
				continue;
			}
			lo = v < lo ? v : lo;
			hi = v > hi ? v : hi;
			sum += v;
			sq += v * v;
		}
		int64_t m = k - nonfinite;
		double mean = m ? sum / m : NAN, var = m ? sq / m - mean * mean : NAN;
		char d[160];
		printf("  %-16s %-22s min %-12.6g max %-12.6g mean %-12.6g std %-12.6g", t->name,
		       tensor_describe(t, d, sizeof d), m ? lo : NAN, m ? hi : NAN, mean, var > 0 ? sqrt(var) : 0.0);
		if (nonfinite)
			printf(" non-finite %lld", (long long)nonfinite);
		putchar('\n');
	}
	return 0;
}

int main(int argc, char **argv)
{
	tool_init("tns");
	if (argc < 2)
		usage_error("missing command (ls, cat, head, stats)");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage();
		return 0;
	}
	static const struct option opts[] = {
		{"json", no_argument, 0, 'j'}, {"lines", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {0}};
	int json = 0;
	long lines = 10;
	int c;
	optind = 2;
	while ((c = getopt_long(argc, argv, "jn:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'n': lines = arg_long("-n", optarg, 0, 1L << 40); break;
		case 'h': usage(); return 0;
		default: usage_error("bad option");
		}
	}
	int nfiles = argc - optind;
	char **files = argv + optind;
	if (!strcmp(cmd, "ls")) {
		each_record(nfiles, files, ls_one, NULL);
	} else if (!strcmp(cmd, "stats")) {
		each_record(nfiles, files, stats_one, NULL);
	} else if (!strcmp(cmd, "cat") && json) {
		each_record(nfiles, files, json_one, NULL);
	} else if (!strcmp(cmd, "cat") || !strcmp(cmd, "head")) {
		refuse_terminal_stdout();
		stream_writer *w = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
		if (!w)
			die_err();
		void *ctx[2] = {w, !strcmp(cmd, "head") ? &lines : NULL};
		if (!ctx[1] || lines > 0)
			each_record(nfiles, files, pass_one, ctx);
		if (stream_close_write(w) < 0)
			die_err();
	} else {
		usage_error("unknown command '%s'", cmd);
	}
	close_stdout();
	return 0;
}
