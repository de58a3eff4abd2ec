/* voc: a Pascal VOC dataset, the images a split lists in one or more roots.
 *
 * A root holds Annotations/<id>.xml, ImageSets/Main/<split>.txt and
 * JPEGImages/<id>.jpg (or .png, .jpeg). voc_open() takes roots, directories whose
 * subdirectories are roots (VOCdevkit: VOC2007 + VOC2012, sorted), and .tar, .tar.gz,
 * .tgz or .zip archives (libarchive, never unpacked), where entries are grouped into
 * roots by the path before /Annotations/, /ImageSets/ or /JPEGImages/. Archives are
 * read twice: at open for the split lists and annotation XMLs, and when a reader is
 * made for the compressed bytes of the selected images only.
 *
 * A missing root or split file fails voc_open(); a bad image (missing file, malformed
 * XML ...) is found when it is read (data/voc_reader.h), which reads these datasets
 * as records. The annotation XML: data/voc_xml.h; class lists: data/classes.h. */
#ifndef VOC_H
#define VOC_H

#include <stddef.h>
#include <stdint.h>

typedef struct voc_dataset voc_dataset;

/* -1/NULL (err) for a missing path, a directory holding no root, an unreadable archive
 * or a root without ImageSets/Main/<split>.txt. */
voc_dataset *voc_open(int npaths, char *const *paths, const char *split);
void voc_close(voc_dataset *d);
/* Images listed by the split files of all roots. */
long voc_size(const voc_dataset *d);
int voc_nroots(const voc_dataset *d);
const char *voc_root_name(const voc_dataset *d, int i);

/* ---- datasets whose ground truth is known at open (COCO: lib/data/coco.h) ----
 * One image: its file under the image folder, the size its annotation gives (checked
 * against the image when decoded), its boxes as records carry them, or why it is bad
 * (reported when it is read, as a malformed XML is). */
typedef struct voc_listed_image {
	const char *id, *file;
	int width, height;
	int n;
	const float *boxes;    /* [n,4] x1 y1 x2 y2, already checked */
	const int32_t *labels;
	const uint8_t *ignore; /* the records' "difficult" mask */
	const char *bad;
} voc_listed_image;

/* A dataset of the images (copied) in image_dir, read with the same plans and records
 * as VOC's (meta root root_name, file "<root_name>/<file>", and difficult_is). image_dir
 * may be an archive (.tar, .tar.gz, .zip, ...) of the images instead: the files are
 * found under the one folder inside that holds the first of them (file "<that folder>/
 * <file>", as from the folder unpacked). NULL (err) when image_dir is neither. */
voc_dataset *voc_open_listed(const char *image_dir, const char *root_name, long n, const voc_listed_image *images);

#endif
