#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void data_config_default(data_config *c)
{
	static const double mean[3] = {123.675, 116.28, 103.53}, std[3] = {58.395, 57.12, 57.375};
	static const double ious[5] = {0.1, 0.3, 0.5, 0.7, 0.9};
	memset(c, 0, sizeof *c);
	c->size = 512;
	memcpy(c->mean, mean, sizeof mean);
	memcpy(c->std, std, sizeof std);
	c->to_rgb = 1;
	c->photometric = 1;
	c->brightness_delta = 32;
	c->contrast_range[0] = c->saturation_range[0] = 0.5;
	c->contrast_range[1] = c->saturation_range[1] = 1.5;
	c->hue_delta = 18;
	c->expand = 1;
	c->expand_ratio[0] = 1;
	c->expand_ratio[1] = 4;
	c->expand_prob = 0.5;
	c->min_iou_crop = 1;
	c->n_min_ious = 5;
	memcpy(c->min_ious, ious, sizeof ious);
	c->min_crop_size = 0.3;
	c->flip_ratio = 0.5;
}

/* One JSON file, not following "base". */
static cJSON *read_json(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		err_set("%s: %s", path, strerror(errno));
		return NULL;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? 2 * cap : 65536;
			if (cap > (64u << 20)) {
				free(buf);
				fclose(f);
				err_set("%s: larger than 64 MiB, not a config", path);
				return NULL;
			}
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				err_set("out of memory");
				return NULL;
			}
			buf = nb;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		err_set("%s: read error", path);
		return NULL;
	}
	buf[len] = 0;
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithOpts(buf, &end, 1);
	if (!j) {
		long line = 1;
		for (const char *p = buf; end && p < end; p++)
			line += *p == '\n';
		err_set("%s: line %ld: invalid JSON", path, line);
		free(buf);
		return NULL;
	}
	free(buf);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		err_set("%s: expected a JSON object at the top", path);
		return NULL;
	}
	return j;
}

/* Merges over into base: objects member by member, anything else replaces. Takes over. */
static void merge_into(cJSON *base, cJSON *over)
{
	cJSON *item;
	while ((item = over->child)) {
		cJSON_DetachItemViaPointer(over, item);
		cJSON *old = cJSON_GetObjectItemCaseSensitive(base, item->string);
		if (old && cJSON_IsObject(old) && cJSON_IsObject(item)) {
			merge_into(old, item);
		} else if (old) {
			cJSON_ReplaceItemViaPointer(base, old, item);
		} else {
			cJSON_AddItemToObject(base, item->string, item);
		}
	}
	cJSON_Delete(over);
}

static cJSON *read_with_bases(const char *path, int depth)
{
	cJSON *j = read_json(path);
	if (!j)
		return NULL;
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "base");
	if (!b)
		return j;
	if (!cJSON_IsString(b) || !b->valuestring[0]) {
		cJSON_Delete(j);
		err_set("%s: base: expected a file name", path);
		return NULL;
	}
	if (depth >= 8) {
		cJSON_Delete(j);
		err_set("%s: base: more than 8 levels (a loop?)", path);
		return NULL;
	}
	/* a relative base is next to the file that names it */
	char bpath[4096];
	const char *slash = strrchr(path, '/');
	int dir = b->valuestring[0] == '/' || !slash ? 0 : (int)(slash - path + 1);
	if ((size_t)snprintf(bpath, sizeof bpath, "%.*s%s", dir, path, b->valuestring) >= sizeof bpath) {
		cJSON_Delete(j);
		err_set("%s: base: path too long", path);
		return NULL;
	}
	cJSON *base = read_with_bases(bpath, depth + 1);
	if (!base) {
		cJSON_Delete(j);
		err_wrap("%s: base", path);
		return NULL;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(j, "base");
	merge_into(base, j);
	return base;
}

cJSON *config_read(const char *path)
{
	return read_with_bases(path, 0);
}

/* Every member of o must be one of known (NULL-terminated). */
static int check_keys(const cJSON *o, const char *where, const char *const *known)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, o) {
		int ok = 0;
		for (int i = 0; known[i] && !ok; i++)
			ok = it->string && !strcmp(it->string, known[i]);
		if (!ok) {
			char list[256] = "";
			for (int i = 0; known[i]; i++)
				snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", known[i]);
			return err_set("%s.%s: unknown key (known: %s)", where, it->string ? it->string : "?", list);
		}
	}
	return 0;
}

/* An optional number in [lo, hi]: a missing key leaves *out alone. */
static int get_num(const cJSON *o, const char *key, const char *where, double lo, double hi, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
		return err_set("%s.%s: expected a number in [%g, %g]", where, key, lo, hi);
	*out = v->valuedouble;
	return 0;
}

/* An optional array of n numbers in [lo, hi] (n < 0: 1..-n of them, count in *count). */
static int get_nums(const cJSON *o, const char *key, const char *where, int n, double lo, double hi, double *out,
		    int *count)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0;
	int len = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
	if (n >= 0 ? len != n : (len < 1 || len > -n)) {
		if (n >= 0)
			return err_set("%s.%s: expected an array of %d numbers", where, key, n);
		return err_set("%s.%s: expected an array of 1 to %d numbers", where, key, -n);
	}
	double tmp[CONFIG_MAX_IOUS];
	int i = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, v) {
		if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < lo || it->valuedouble > hi)
			return err_set("%s.%s[%d]: expected a number in [%g, %g]", where, key, i, lo, hi);
		tmp[i++] = it->valuedouble;
	}
	memcpy(out, tmp, (size_t)len * sizeof *out);
	if (count)
		*count = len;
	return 0;
}

/* A [lo, hi] pair with lo <= hi. */
static int get_range(const cJSON *o, const char *key, const char *where, double lo, double hi, double *out)
{
	double r[2] = {out[0], out[1]};
	if (get_nums(o, key, where, 2, lo, hi, r, NULL) < 0)
		return -1;
	if (r[0] > r[1])
		return err_set("%s.%s: expected [low, high] with low <= high", where, key);
	out[0] = r[0];
	out[1] = r[1];
	return 0;
}

/* A sub-section that may be an object or false (turns the step off); *on says which. */
static const cJSON *get_section(const cJSON *o, const char *key, const char *where, int *on, int *bad)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	*bad = 0;
	if (!v)
		return NULL;
	if (cJSON_IsFalse(v)) {
		*on = 0;
		return NULL;
	}
	if (!cJSON_IsObject(v)) {
		*bad = err_set("%s.%s: expected an object, or false to turn it off", where, key);
		return NULL;
	}
	*on = 1;
	return v;
}

static int apply_train(data_config *c, const cJSON *t, const char *where)
{
	static const char *const keys[] = {"photometric", "expand", "min_iou_crop", "flip_ratio", NULL};
	static const char *const pkeys[] = {"brightness_delta", "contrast_range", "saturation_range", "hue_delta", NULL};
	static const char *const ekeys[] = {"ratio_range", "prob", NULL};
	static const char *const ckeys[] = {"min_ious", "min_crop_size", NULL};
	char sub[640];
	int bad;
	if (check_keys(t, where, keys) < 0 || get_num(t, "flip_ratio", where, 0, 1, &c->flip_ratio) < 0)
		return -1;

	const cJSON *p = get_section(t, "photometric", where, &c->photometric, &bad);
	snprintf(sub, sizeof sub, "%s.photometric", where);
	if (bad || (p && (check_keys(p, sub, pkeys) < 0 ||
			  get_num(p, "brightness_delta", sub, 0, 255, &c->brightness_delta) < 0 ||
			  get_range(p, "contrast_range", sub, 0, 100, c->contrast_range) < 0 ||
			  get_range(p, "saturation_range", sub, 0, 100, c->saturation_range) < 0 ||
			  get_num(p, "hue_delta", sub, 0, 180, &c->hue_delta) < 0)))
		return -1;

	const cJSON *e = get_section(t, "expand", where, &c->expand, &bad);
	snprintf(sub, sizeof sub, "%s.expand", where);
	if (bad || (e && (check_keys(e, sub, ekeys) < 0 || get_range(e, "ratio_range", sub, 1, 16, c->expand_ratio) < 0 ||
			  get_num(e, "prob", sub, 0, 1, &c->expand_prob) < 0)))
		return -1;

	const cJSON *m = get_section(t, "min_iou_crop", where, &c->min_iou_crop, &bad);
	snprintf(sub, sizeof sub, "%s.min_iou_crop", where);
	if (bad || (m && (check_keys(m, sub, ckeys) < 0 ||
			  get_nums(m, "min_ious", sub, -CONFIG_MAX_IOUS, 0, 1, c->min_ious, &c->n_min_ious) < 0 ||
			  get_num(m, "min_crop_size", sub, 0.01, 1, &c->min_crop_size) < 0)))
		return -1;
	return 0;
}

int data_config_apply(data_config *c, const cJSON *data, const char *where)
{
	static const char *const keys[] = {"size", "mean", "std", "to_rgb", "train", NULL};
	if (!cJSON_IsObject(data))
		return err_set("%s: expected an object", where);
	if (check_keys(data, where, keys) < 0)
		return -1;
	data_config n = *c;
	double size = n.size;
	if (get_num(data, "size", where, 1, 8192, &size) < 0)
		return -1;
	if (size != floor(size))
		return err_set("%s.size: expected an integer", where);
	n.size = (int)size;
	if (get_nums(data, "mean", where, 3, -1e6, 1e6, n.mean, NULL) < 0 ||
	    get_nums(data, "std", where, 3, 1e-6, 1e6, n.std, NULL) < 0)
		return -1;
	const cJSON *rgb = cJSON_GetObjectItemCaseSensitive(data, "to_rgb");
	if (rgb && !cJSON_IsBool(rgb))
		return err_set("%s.to_rgb: expected true or false", where);
	if (rgb)
		n.to_rgb = cJSON_IsTrue(rgb);
	const cJSON *train = cJSON_GetObjectItemCaseSensitive(data, "train");
	if (train) {
		char sub[512];
		snprintf(sub, sizeof sub, "%s.train", where);
		if (!cJSON_IsObject(train))
			return err_set("%s: expected an object", sub);
		if (apply_train(&n, train, sub) < 0)
			return -1;
	}
	*c = n;
	return 0;
}

int data_config_load(data_config *c, const char *path)
{
	cJSON *j = config_read(path);
	if (!j)
		return -1;
	char where[512];
	snprintf(where, sizeof where, "%s: data", path);
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
	int rc = data ? data_config_apply(c, data, where) : 0;
	cJSON_Delete(j);
	return rc;
}
