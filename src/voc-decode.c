/* voc-decode: a Pascal VOC dataset (trees or archives) as a stream of image records. */
#include "data/voc.h"
#include "tool/decode.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: voc-decode [OPTION...] ROOT|DIR|ARCHIVE... > STREAM\n"
	       "\n"
	       "Decodes a Pascal VOC dataset into one \"image\" record per image: tensors image u8[3,H,W]\n"
	       "(RGB), boxes f32[n,4] (xmin,ymin,xmax,ymax, pixels), labels i32[n], difficult u8[n];\n"
	       "meta id, root, file, width, height, index, epoch.\n"
	       "\n"
	       "ROOT holds Annotations/, ImageSets/Main/ and JPEGImages/; DIR holds such roots (VOCdevkit:\n"
	       "VOC2007 and VOC2012 together); ARCHIVE is a .tar, .tar.gz, .tgz or .zip of either, read\n"
	       "without unpacking. Several arguments are read in turn.\n"
	       "\n"
	       "  --split NAME     ImageSets/Main/NAME.txt of every root (default trainval)\n"
	       "  --classes FILE   class names, one per line (default: the 20 VOC classes)\n");
	decode_usage_options("split order");
	printf("\n"
	       "Order: roots in argument order (subdirectories sorted), images in split-file order.\n"
	       "Bad input (missing or corrupt image, malformed XML, unknown class, box outside the\n"
	       "image, <size> disagreeing with the image) fails with a message naming the file.\n"
	       "Environment: TNS_LEVEL (zstd level), TNS_THREADS.\n");
}

int main(int argc, char **argv)
{
	tool_init("voc-decode");
	enum { O_SPLIT = DECODE_O_END };
	static const struct option opts[] = {{"split", required_argument, 0, O_SPLIT}, DECODE_LONG_OPTIONS, {0}};
	const char *split = "trainval";
	decode_opts o;
	decode_opts_init(&o);
	int c;
	opterr = 0; /* our own messages, in the "voc-decode: ..." form */
	while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
		switch (c) {
		case O_SPLIT: split = optarg; break;
		case 'h': usage(); return 0;
		default: decode_option(&o, c, argv);
		}
	}
	if (optind >= argc)
		usage_error("missing VOC root, directory or archive");
	decode_opts_check(&o);

	voc_classes *classes = o.classes_file ? voc_classes_load(o.classes_file) : voc_classes_default();
	if (!classes)
		die_err();
	voc_dataset *d = voc_open(argc - optind, argv + optind, split);
	if (!d)
		die_err();
	decode_run(d, classes, &o, "difficult");
	voc_classes_free(classes);
	close_stdout();
	return 0;
}
