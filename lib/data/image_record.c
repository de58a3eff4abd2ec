#include "data/image_record.h"

#include "core/err.h"
#include "data/image.h"

record *image_record_new(const void *bytes, size_t len, int decode, const char *where, int *width, int *height)
{
	int w, h;
	if (image_size(bytes, len, &w, &h) < 0) {
		err_wrap("%s", where);
		return NULL;
	}
	record *r = record_new("image");
	if (!r)
		return NULL;
	if (decode) {
		tensor *t = record_add(r, "image", DT_U8, 3, (int64_t[]){3, h, w});
		if (!t || image_decode_chw(bytes, len, t->data, w, h) < 0) {
			if (t)
				err_wrap("%s", where);
			record_free(r);
			return NULL;
		}
	}
	*width = w;
	*height = h;
	return r;
}

int image_record_meta(record *r, const char *id, const char *root, const char *file, int width, int height, long index,
		      int epoch)
{
	cJSON *m = r->meta;
	if (!cJSON_AddStringToObject(m, "id", id) || !cJSON_AddStringToObject(m, "root", root) ||
	    !cJSON_AddStringToObject(m, "file", file) || !cJSON_AddNumberToObject(m, "width", width) ||
	    !cJSON_AddNumberToObject(m, "height", height) || !cJSON_AddNumberToObject(m, "index", (double)index) ||
	    !cJSON_AddNumberToObject(m, "epoch", epoch))
		return err_set("out of memory");
	return 0;
}
