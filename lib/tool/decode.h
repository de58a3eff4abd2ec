/* decode: what the dataset decoders (voc-decode, coco-decode) share: the options that
 * plan the reading (order, epochs, shards, threads, listing), their help lines, and
 * the loop that turns a dataset into records on stdout with its summary. Each tool
 * keeps its own arguments (a VOC split, a COCO annotation file) and opens its own
 * dataset. Like tool.c, this exits: 2 for usage errors, 1 for failures. */
#ifndef DECODE_H
#define DECODE_H

#include <getopt.h>

#include "data/voc.h"
#include "data/voc_reader.h"

typedef struct decode_opts {
	voc_plan plan;
	const char *classes_file; /* --classes, or NULL */
	int skip_bad, list, verbose;
} decode_opts;

/* getopt_long values of the shared options; a tool numbers its own from DECODE_O_END. */
enum {
	DECODE_O_CLASSES = 256, DECODE_O_SHUFFLE, DECODE_O_SEED, DECODE_O_EPOCHS, DECODE_O_LIMIT, DECODE_O_SHARD,
	DECODE_O_THREADS, DECODE_O_SKIP, DECODE_O_LIST, DECODE_O_RESUME, DECODE_O_EVEN, DECODE_O_END
};

/* The shared entries of a tool's getopt_long table (short forms: "v" and "h"). */
#define DECODE_LONG_OPTIONS \
	{"classes", required_argument, 0, DECODE_O_CLASSES}, {"shuffle", no_argument, 0, DECODE_O_SHUFFLE}, \
	{"seed", required_argument, 0, DECODE_O_SEED},       {"epochs", required_argument, 0, DECODE_O_EPOCHS}, \
	{"limit", required_argument, 0, DECODE_O_LIMIT},     {"shard", required_argument, 0, DECODE_O_SHARD}, \
	{"threads", required_argument, 0, DECODE_O_THREADS}, {"skip-bad", no_argument, 0, DECODE_O_SKIP}, \
	{"list", no_argument, 0, DECODE_O_LIST},             {"resume", required_argument, 0, DECODE_O_RESUME}, \
	{"even-shards", no_argument, 0, DECODE_O_EVEN},      {"verbose", no_argument, 0, 'v'}, \
	{"help", no_argument, 0, 'h'}

/* The defaults: one epoch in order, no limit, one shard, default_threads(). */
void decode_opts_init(decode_opts *o);
/* Takes one getopt_long result that is not the tool's own (c, with optarg and optind
 * as getopt left them): a shared option, or a usage error for an unknown option or a
 * missing argument ('?', ':'). 'h' is the tool's (its usage text). */
void decode_option(decode_opts *o, int c, char *const *argv);
/* After the tool's own argument checks: the cross-option checks, and stdout must not
 * be a terminal unless listing. */
void decode_opts_check(decode_opts *o);

/* The help lines of the shared options from --shuffle to --help; order names what
 * --limit counts in ("split order"). */
void decode_usage_options(const char *order);

/* Reads d (closed here) with the plan and writes records to stdout (--list: "id<TAB>boxes"
 * lines), skipping bad images with --skip-bad; the summary with --verbose, ignored
 * boxes counted as ignore_word ("difficult", "crowd"). Exits 1 on a failure. */
void decode_run(voc_dataset *d, const voc_classes *classes, decode_opts *o, const char *ignore_word);

#endif
