#include "data/classes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/err.h"
#include "core/files.h"

const char *const voc_class_names[VOC_NCLASSES] = {
	"aeroplane", "bicycle", "bird",  "boat",        "bottle", "bus",   "car",  "cat",   "chair", "cow",
	"diningtable", "dog",   "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
};

void voc_classes_free(voc_classes *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		free(c->names[i]);
	free(c->names);
	free(c);
}

static int classes_add(voc_classes *c, long *cap, const char *name, size_t len)
{
	if (array_grow(&c->names, cap, c->n + 1, sizeof *c->names) < 0)
		return -1;
	char *s = strndup(name, len);
	if (!s)
		return err_set("out of memory");
	if (voc_class_index(c, s) >= 0) {
		err_set("duplicate class '%s'", s);
		free(s);
		return -1;
	}
	c->names[c->n++] = s;
	return 0;
}

voc_classes *voc_classes_default(void)
{
	voc_classes *c = calloc(1, sizeof *c);
	long cap = 0;
	if (!c) {
		err_set("out of memory");
		return NULL;
	}
	for (int i = 0; i < VOC_NCLASSES; i++) {
		if (classes_add(c, &cap, voc_class_names[i], strlen(voc_class_names[i])) < 0) {
			voc_classes_free(c);
			return NULL;
		}
	}
	return c;
}

voc_classes *voc_classes_load(const char *path)
{
	char *text;
	size_t len;
	int rc = files_read(path, &text, &len);
	if (rc < 0) {
		if (rc == -2)
			err_set("%s", strerror(ENOENT));
		err_wrap("%s", path);
		return NULL;
	}
	voc_classes *c = calloc(1, sizeof *c);
	long cap = 0;
	if (!c) {
		free(text);
		err_set("out of memory");
		return NULL;
	}
	int line = 0;
	for (char *p = text; *p;) {
		char *end = strchr(p, '\n');
		char *next = end ? end + 1 : p + strlen(p);
		if (!end)
			end = next;
		line++;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			end--;
		if (end > p && classes_add(c, &cap, p, (size_t)(end - p)) < 0) {
			err_wrap("%s: line %d", path, line);
			goto fail;
		}
		p = next;
	}
	if (c->n == 0) {
		err_set("%s: no class names", path);
		goto fail;
	}
	free(text);
	return c;
fail:
	free(text);
	voc_classes_free(c);
	return NULL;
}

int voc_class_index(const voc_classes *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->names[i], name))
			return i;
	return -1;
}
