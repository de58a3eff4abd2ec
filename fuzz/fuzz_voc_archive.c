/* Fuzzes VOC datasets in archives (lib/data/voc_archive.c, voc.c and voc_reader.c over
 * libarchive): the input is a .tar, .tar.gz or .zip (libarchive finds which from the
 * bytes), opened as voc-decode opens one, split "train", and read to the end with
 * images decoded: split lists, annotations and images together. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/voc_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static voc_classes *classes;
	if (!classes && !(classes = voc_classes_default()))
		abort();
	int fd = memfd_create("fuzz-archive", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if (write(fd, data, size) != (ssize_t)size)
		abort();
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	char *paths[1] = {path};
	voc_dataset *d = voc_open(1, paths, "train");
	if (d) {
		voc_plan p = {.classes = classes, .epochs = 1, .limit = -1, .threads = 1, .images = 1, .shard_n = 1};
		voc_reader *r = voc_reader_new(d, &p);
		record *rec;
		int st;
		while (r && (st = voc_reader_next(r, &rec)) != VOC_END && st >= 0)
			if (st == VOC_RECORD)
				record_free(rec);
		voc_reader_free(r);
		voc_close(d);
	}
	close(fd);
	return 0;
}
