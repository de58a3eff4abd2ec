/* draw-dets: image and dets records in, one picture per image out (boxes, labels),
 * written atomically into a directory; the stream goes on to stdout. */
#include <errno.h>
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/afile.h"
#include "eval/dets_out.h"
#include "eval/draw.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: draw-dets --out DIR [options] < stream [> stream]\n"
	       "\n"
	       "Draws each image's detections on the original image and writes DIR/<id>.jpg (or .png):\n"
	       "box outlines, a label \"class score\" per box, one colour per class. The stream must\n"
	       "hold each image record before its dets record (ssd-decode's), as augment --eval\n"
	       "--pass-images arranges:\n"
	       "\n"
	       "  image-decode photos/ | augment --eval --pass-images ... | forward ... | ssd-decode ...\n"
	       "    | draw-dets --out pictures/ --classes configs/bccd.classes\n"
	       "\n"
	       "  --out DIR        where the pictures go (made if missing); an id with '/' makes\n"
	       "                   subdirectories\n"
	       "  --classes FILE   class names, one a line (default: the 20 VOC classes)\n"
	       "  --score-thr X    draw detections with score > X (default 0.3)\n"
	       "  --gt             draw the ground truth boxes too (VOC input), dashed\n"
	       "  --format F       jpg (default) or png\n"
	       "  --quality Q      JPEG quality 1..100 (default 90)\n"
	       "  --thickness N    box outline width in pixels (default 2)\n"
	       "  --font-size PX   label text size (default: the image's shorter side / 40, >= 11)\n"
	       "  -h, --help       this help\n"
	       "\n"
	       "Boxes are drawn as mmcv's imshow_det_bboxes: coordinates truncated to integers, the\n"
	       "outline on pixel columns x1..x2 and rows y1..y2, inwards. Each picture is written to a\n"
	       "temporary file and renamed, so DIR never holds a half-written one. Every record read\n"
	       "is written on to stdout unchanged when stdout is not a terminal (dets-json can follow).\n");
}

/* "a/b" under dir, never outside it. */
static void check_id(const char *id)
{
	if (!id[0] || id[0] == '/' || strstr(id, "//"))
		die("image id '%s': not a relative path to write a picture at", id);
	for (const char *p = id; p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			die("image id '%s': '.' and '..' would leave the output directory", id);
		p = slash ? slash + 1 : NULL;
	}
}

/* mkdir -p of path's directory part. */
static void make_parents(char *path)
{
	for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = 0;
		if (mkdir(path, 0777) < 0 && errno != EEXIST)
			die("%s: %s", path, strerror(errno));
		*p = '/';
	}
}

int main(int argc, char **argv)
{
	tool_init("draw-dets");
	enum { O_OUT = 256, O_CLASSES, O_SCORE, O_GT, O_FORMAT, O_QUALITY, O_THICK, O_FONT };
	static const struct option opts[] = {
		{"out", required_argument, 0, O_OUT},           {"classes", required_argument, 0, O_CLASSES},
		{"score-thr", required_argument, 0, O_SCORE},   {"gt", no_argument, 0, O_GT},
		{"format", required_argument, 0, O_FORMAT},     {"quality", required_argument, 0, O_QUALITY},
		{"thickness", required_argument, 0, O_THICK},   {"font-size", required_argument, 0, O_FONT},
		{"help", no_argument, 0, 'h'},                  {0}};
	const char *out_dir = NULL, *classes_file = NULL;
	draw_style st = {.score_thr = 0.3, .thickness = 2, .format = DRAW_JPEG, .quality = 90};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_OUT: out_dir = optarg; break;
		case O_CLASSES: classes_file = optarg; break;
		case O_SCORE: st.score_thr = arg_double("--score-thr", optarg, 0, 1); break;
		case O_GT: st.gt = 1; break;
		case O_FORMAT:
			if (!strcmp(optarg, "jpg") || !strcmp(optarg, "jpeg"))
				st.format = DRAW_JPEG;
			else if (!strcmp(optarg, "png"))
				st.format = DRAW_PNG;
			else
				usage_error("--format: '%s' is not jpg or png", optarg);
			break;
		case O_QUALITY: st.quality = (int)arg_long("--quality", optarg, 1, 100); break;
		case O_THICK: st.thickness = (int)arg_long("--thickness", optarg, 1, 100); break;
		case O_FONT: st.font_size = arg_double("--font-size", optarg, 1, 1000); break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!out_dir)
		usage_error("missing --out DIR");

	voc_classes *names = classes_file ? voc_classes_load(classes_file) : voc_classes_default();
	if (!names)
		die_err();
	if (mkdir(out_dir, 0777) < 0 && errno != EEXIST)
		die("%s: %s", out_dir, strerror(errno));
	stream_reader *in = stream_open_read("-");
	stream_writer *pass = isatty(STDOUT_FILENO) ? NULL : stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	dets_pairs *pairs = dets_pairs_new();
	if (!in || (!pass && !isatty(STDOUT_FILENO)) || !pairs)
		die_err();
	const char *ext = st.format == DRAW_PNG ? "png" : "jpg";
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (pass && stream_pass(pass, r) < 0)
			die_err();
		if (!strcmp(r->kind, "image")) {
			if (dets_pairs_add(pairs, r) < 0)
				die_err();
			continue;
		}
		if (strcmp(r->kind, "dets")) {
			record_free(r);
			continue;
		}
		dets_view v;
		record *im;
		const tensor *px;
		if (dets_view_of(&v, r) < 0 || dets_check_classes(names, v.num_classes) < 0 || !(im = dets_pairs_take(pairs, &v)))
			die("%s: record %ld: %s", stream_name(in), stream_count(in), err_msg());
		if (!(px = record_expect_shape(im, "image", DT_U8, 3, (int64_t[]){3, v.height, v.width})))
			die("image %s: %s (the dets say %dx%d)", v.id, err_msg(), v.width, v.height);
		check_id(v.id);
		char path[4096];
		if (snprintf(path, sizeof path, "%s/%s.%s", out_dir, v.id, ext) >= (int)sizeof path)
			die("image id '%s': path too long", v.id);
		make_parents(path);
		afile a;
		if (afile_open(&a, path, "wb") < 0)
			die("%s: %s", path, err_msg());
		if (draw_dets(a.f, px->data, &v, names, &st) < 0) {
			afile_abort(&a);
			die("%s: %s", path, err_msg());
		}
		if (afile_commit(&a) < 0)
			die("%s: %s", path, err_msg());
		record_free(im);
		record_free(r);
	}
	if (rc < 0)
		die_err();
	if (dets_pairs_waiting(pairs))
		die("%ld image record%s at the end got no dets", dets_pairs_waiting(pairs),
		    dets_pairs_waiting(pairs) == 1 ? "" : "s");
	if (pass && stream_close_write(pass) < 0)
		die_err();
	stream_close_read(in);
	dets_pairs_free(pairs);
	voc_classes_free(names);
	draw_cleanup();
	close_stdout();
	return 0;
}
