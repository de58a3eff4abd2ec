/* image-decode: plain JPEG/PNG images (files, directories, archives, lists of paths)
 * as a stream of image records without annotations. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/imgsrc.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: image-decode [OPTION...] [PATH...] > STREAM\n"
	       "\n"
	       "Decodes plain images (no annotations) into one \"image\" record each, as voc-decode\n"
	       "does for a VOC tree: tensor image u8[3,H,W] (RGB); meta id, root, file, width, height,\n"
	       "index, epoch. No boxes: augment --eval, forward and ssd-decode run on them, and their\n"
	       "detections have no ground truth.\n"
	       "\n"
	       "PATH is an image file (JPEG or PNG, whatever its name), a directory (its *.jpg, *.jpeg,\n"
	       "*.png, sorted by name), a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .tar.zst or .zip\n"
	       "archive (its images in stored order, never unpacked), or - for a list of image paths,\n"
	       "one a line, on stdin (also what no PATH means). Several are read in turn.\n"
	       "\n"
	       "  -r, --recursive  directories: their subdirectories' images too (sorted by path)\n"
	       "  --files-from F   the image paths listed in file F (one a line), after the PATHs\n"
	       "  --limit N        only the first N images\n"
	       "  --shard k/N      keep positions p with p %% N == k (index stays the position)\n"
	       "  --skip-bad       warn about and skip bad images instead of failing\n"
	       "  --list           print \"id<TAB>file\" lines instead of records (nothing decoded)\n"
	       "  -h, --help       this text\n"
	       "\n"
	       "id is the path under the directory or archive without its extension (a file's: its\n"
	       "name without extension); two images with one id are an error (outputs are named by\n"
	       "it). file is a path that opens the image (an archive's: ARCHIVE:entry).\n"
	       "Pixels are decoded as mmcv's imread(flag='color') with OpenCV 4 decodes them: grey,\n"
	       "CMYK, 16-bit, palette and alpha images become 8-bit RGB (alpha dropped, 16-bit\n"
	       "truncated to the high byte) and a JPEG's EXIF orientation is applied.\n"
	       "A missing, unreadable or corrupt image fails with a message naming it.\n"
	       "Environment: TNS_LEVEL (zstd level).\n");
}

int main(int argc, char **argv)
{
	tool_init("image-decode");
	enum { O_LIMIT = 256, O_SHARD, O_SKIP, O_LIST, O_FROM };
	static const struct option opts[] = {
		{"recursive", no_argument, 0, 'r'}, {"limit", required_argument, 0, O_LIMIT},
		{"shard", required_argument, 0, O_SHARD}, {"skip-bad", no_argument, 0, O_SKIP},
		{"list", no_argument, 0, O_LIST},   {"help", no_argument, 0, 'h'},
		{"files-from", required_argument, 0, O_FROM},
		{0}};
	imgsrc_opts o = {.list = stdin, .list_name = "stdin"};
	imgsrc_plan plan = {.shard_n = 1, .limit = -1};
	int skip_bad = 0, list = 0, c;
	const char *files_from = NULL;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":rh", opts, NULL)) != -1) {
		switch (c) {
		case 'r': o.recursive = 1; break;
		case O_LIMIT: plan.limit = arg_long("--limit", optarg, 0, LONG_MAX); break;
		case O_SHARD: arg_shard("--shard", optarg, &plan.shard_k, &plan.shard_n); break;
		case O_SKIP: skip_bad = 1; break;
		case O_LIST: list = 1; break;
		case O_FROM: files_from = optarg; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	int npaths = argc - optind;
	char **paths = calloc((size_t)npaths + 1, sizeof *paths);
	if (!paths)
		die("out of memory");
	for (int i = 0; i < npaths; i++) {
		paths[i] = argv[optind + i];
		if (files_from && !strcmp(paths[i], "-"))
			usage_error("- and --files-from both name a list: give one");
	}
	if (files_from) {
		if (!(o.list = fopen(files_from, "r")))
			die("%s: %s", files_from, strerror(errno));
		o.list_name = files_from;
	}
	if (!npaths || files_from)
		paths[npaths++] = "-";
	if (!argv[optind] && !files_from && isatty(STDIN_FILENO))
		usage_error("missing PATH (or a list of image paths on stdin)");
	if (!list)
		refuse_terminal_stdout();

	imgsrc *s = imgsrc_open(npaths, paths, &o);
	if (o.list != stdin)
		fclose(o.list);
	free(paths);
	if (!s)
		die_err();
	if (list) {
		for (long i = 0; i < imgsrc_size(s); i++)
			if (imgsrc_planned(&plan, i))
				printf("%s\t%s\n", imgsrc_id(s, i), imgsrc_file(s, i));
		imgsrc_close(s);
		close_stdout();
		return 0;
	}
	stream_writer *w = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	if (!w)
		die_err();
	record *r;
	int rc;
	long bad = 0;
	while ((rc = imgsrc_next(s, &plan, &r)) != IMGSRC_END) {
		if (rc == IMGSRC_BAD && skip_bad) {
			fprintf(stderr, "%s: %s (skipped)\n", tool_name, err_msg());
			bad++;
			continue;
		}
		if (rc != IMGSRC_RECORD)
			break;
		rc = stream_write(w, r);
		record_free(r);
		if (rc < 0)
			break;
	}
	/* keep the first error: cleaning up must not replace it */
	char why[1024] = "";
	if (rc != IMGSRC_END)
		snprintf(why, sizeof why, "%s", err_msg());
	if (stream_close_write(w) < 0 && !why[0])
		snprintf(why, sizeof why, "%s", err_msg());
	imgsrc_close(s);
	if (why[0])
		die("%s", why);
	if (bad)
		fprintf(stderr, "%s: skipped %ld bad image%s\n", tool_name, bad, bad == 1 ? "" : "s");
	close_stdout();
	return 0;
}
