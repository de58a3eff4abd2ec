/* dets-json: dets records in, one JSON object per image out (JSON lines). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "eval/dets_out.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: dets-json [options] < stream > detections.json\n"
	       "\n"
	       "Writes each dets record (ssd-decode's) as one JSON object on a line, for scripts and jq:\n"
	       "\n"
	       "  {\"id\": \"BloodImage_00001\", \"file\": \"photos/BloodImage_00001.jpg\", \"index\": 0,\n"
	       "   \"width\": 640, \"height\": 480, \"detections\": [{\"label\": 0, \"class\": \"RBC\",\n"
	       "   \"score\": 0.93, \"box\": [x1, y1, x2, y2]}, ...]}\n"
	       "\n"
	       "Boxes are in the original image's pixels, detections best first, every number the\n"
	       "dets record's f32 value exactly. file is the meta.file of the image record before the\n"
	       "dets in the stream (augment --eval --pass-images), or null when the stream has none.\n"
	       "Other records are ignored.\n"
	       "\n"
	       "  --classes FILE   class names, one a line (default: the 20 VOC classes)\n"
	       "  --score-thr X    only detections with score > X (default 0: all the dets hold)\n"
	       "  -h, --help       this help\n");
}

int main(int argc, char **argv)
{
	tool_init("dets-json");
	enum { O_CLASSES = 256, O_SCORE };
	static const struct option opts[] = {{"classes", required_argument, 0, O_CLASSES},
					     {"score-thr", required_argument, 0, O_SCORE},
					     {"help", no_argument, 0, 'h'},
					     {0}};
	const char *classes_file = NULL;
	double thr = 0;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_CLASSES: classes_file = optarg; break;
		case O_SCORE: thr = arg_double("--score-thr", optarg, 0, 1); break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	voc_classes *names = classes_file ? voc_classes_load(classes_file) : voc_classes_default();
	if (!names)
		die_err();
	stream_reader *in = stream_open_read("-");
	dets_pairs *pairs = dets_pairs_new();
	if (!in || !pairs)
		die_err();
	/* only the image records' meta is wanted: their pixels stay compressed */
	static const char *const decode[] = {"dets", NULL};
	stream_decode_only(in, decode);
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
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
		record *im = NULL;
		if (dets_view_of(&v, r) < 0 || dets_check_classes(names, v.num_classes) < 0 ||
		    (dets_pairs_seen(pairs) && !(im = dets_pairs_take(pairs, &v))))
			die("%s: record %ld: %s", stream_name(in), stream_count(in), err_msg());
		cJSON *o = dets_json(&v, im ? meta_str(im, "file", NULL) : NULL, names, thr);
		char *text = o ? cJSON_PrintUnformatted(o) : NULL;
		if (!text)
			die("out of memory");
		if (fputs(text, stdout) == EOF || putchar('\n') == EOF)
			die("stdout: write error");
		free(text);
		cJSON_Delete(o);
		record_free(im);
		record_free(r);
	}
	if (rc < 0)
		die_err();
	if (dets_pairs_waiting(pairs))
		die("%ld image record%s at the end got no dets", dets_pairs_waiting(pairs),
		    dets_pairs_waiting(pairs) == 1 ? "" : "s");
	stream_close_read(in);
	dets_pairs_free(pairs);
	voc_classes_free(names);
	close_stdout();
	return 0;
}
