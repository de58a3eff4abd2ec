/* coco-decode: a COCO instance dataset (JSON + image folder) as a stream of image records. */
#include <stdlib.h>
#include <string.h>

#include "data/coco.h"
#include "data/voc.h"
#include "tool/decode.h"
#include "tool/tool.h"

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
	       "As mmdetection 2.x's CocoDataset: labels number the categories in the file's order;\n"
	       "with --classes only the categories the list names (other categories' boxes are left\n"
	       "out), still in the file's order (mmdet's cat2label: a list ordered otherwise gets a\n"
	       "warning naming each label); boxes with w < 1, h < 1 or area <= 0 are dropped; every\n"
	       "image is kept unless --filter-empty-gt or --min-size. Images come in the file's order.\n"
	       "\n"
	       "  --classes FILE   class names, one per line (default: every category, id order)\n"
	       "  --filter-empty-gt\n"
	       "                   leave out images without an annotation of the classes (mmdet's\n"
	       "                   training default)\n"
	       "  --min-size N     leave out images whose width or height (the file's) is under N\n"
	       "                   pixels (mmdet's training sets: 32; default 0)\n");
	decode_usage_options("file's order");
	printf("\n"
	       "Bad input: malformed JSON (line and column), a missing or mistyped field, duplicate\n"
	       "ids, an annotation of an unknown image or category, a class no category has: the\n"
	       "whole file fails. A box outside its image, a missing or corrupt image file, or an\n"
	       "image whose size disagrees with its entry: that image (fails, or --skip-bad).\n"
	       "Environment: TNS_LEVEL (zstd level), TNS_THREADS.\n");
}

/* Labels follow the file's category order, as mmdet's: a list in another order names
 * them wrongly everywhere the list is used (augment, map-eval, draw-dets). */
static void warn_order(const char *file, const voc_classes *list, const voc_classes *names)
{
	int same = 1;
	for (int i = 0; i < names->n; i++)
		same &= !strcmp(list->names[i], names->names[i]);
	if (same)
		return;
	fprintf(stderr, "%s: %s: warning: the class list is not in the file's category order; labels follow the file's, "
		"as mmdet's cat2label:", tool_name, file);
	for (int i = 0; i < names->n; i++)
		fprintf(stderr, " %d %s%s", i, names->names[i], i + 1 < names->n ? "," : "\n");
}

int main(int argc, char **argv)
{
	tool_init("coco-decode");
	enum { O_FILTER = DECODE_O_END, O_MIN_SIZE };
	static const struct option opts[] = {{"filter-empty-gt", no_argument, 0, O_FILTER},
					     {"min-size", required_argument, 0, O_MIN_SIZE}, DECODE_LONG_OPTIONS, {0}};
	decode_opts o;
	decode_opts_init(&o);
	int filter_empty = 0, min_size = 0, c;
	opterr = 0; /* our own messages, in the "coco-decode: ..." form */
	while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
		switch (c) {
		case O_FILTER: filter_empty = 1; break;
		case O_MIN_SIZE: min_size = (int)arg_long("--min-size", optarg, 0, 1 << 20); break;
		case 'h': usage(); return 0;
		default: decode_option(&o, c, argv);
		}
	}
	if (argc - optind != 2)
		usage_error("expected ANN_FILE and IMG_PREFIX");
	decode_opts_check(&o);

	coco_set *set = coco_load(argv[optind]);
	if (!set)
		die_err();
	voc_classes *classes = o.classes_file ? voc_classes_load(o.classes_file) : NULL;
	if (o.classes_file && !classes)
		die_err();
	int *label = coco_labels(set, classes);
	if (!label)
		die("%s: %s", o.classes_file ? o.classes_file : argv[optind], err_msg());
	voc_classes *names = coco_label_names(set, label);
	if (!names)
		die_err();
	if (o.classes_file)
		warn_order(o.classes_file, classes, names);
	voc_classes_free(classes);
	voc_dataset *d = coco_dataset(set, label, argv[optind + 1], filter_empty, min_size);
	free(label);
	coco_free(set);
	if (!d)
		die_err();
	decode_run(d, names, &o, "crowd");
	voc_classes_free(names);
	close_stdout();
	return 0;
}
