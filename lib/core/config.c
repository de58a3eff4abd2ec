#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/input_limits.h"

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
	if (limit_json_depth(buf, len) < 0) {
		err_wrap("%s", path);
		free(buf);
		return NULL;
	}
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
	/* A relative base is next to the file that names it; a config read from a pipe
	 * (--config <(jq ... x.json)) has no such place: its base is taken from the
	 * current directory. */
	char bpath[4096];
	const char *slash = strrchr(path, '/');
	struct stat st;
	int piped = stat(path, &st) == 0 && !S_ISREG(st.st_mode);
	int dir = b->valuestring[0] == '/' || !slash || piped ? 0 : (int)(slash - path + 1);
	if ((size_t)snprintf(bpath, sizeof bpath, "%.*s%s", dir, path, b->valuestring) >= sizeof bpath) {
		cJSON_Delete(j);
		err_set("%s: base: path too long", path);
		return NULL;
	}
	cJSON *base = read_with_bases(bpath, depth + 1);
	if (!base) {
		cJSON_Delete(j);
		err_wrap(piped ? "%s: base (of a piped config: from the current directory)" : "%s: base", path);
		return NULL;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(j, "base");
	merge_into(base, j);
	return base;
}

/* A config from a pipe can be read once, but a tool reads its config for each part
 * (model, data, detection head, loss): the last piped config read is kept, merged, for
 * the next reads of the same path. Tools read their configs before starting threads. */
static struct {
	char *path;
	cJSON *json;
} piped_config;

cJSON *config_read(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0 || S_ISREG(st.st_mode))
		return read_with_bases(path, 0);
	if (piped_config.path && !strcmp(piped_config.path, path))
		return cJSON_Duplicate(piped_config.json, 1);
	cJSON *j = read_with_bases(path, 0);
	char *p = j ? strdup(path) : NULL;
	cJSON *keep = p ? cJSON_Duplicate(j, 1) : NULL;
	if (!keep) {
		free(p);
		return j; /* out of memory for the copy: this read still stands */
	}
	free(piped_config.path);
	cJSON_Delete(piped_config.json);
	piped_config.path = p;
	piped_config.json = keep;
	return j;
}

/* ------------------------------------------------------------------ JSON helpers */

int cfg_check_keys(const cJSON *o, const char *where, const char *const *known)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, o) {
		int ok = 0;
		for (int i = 0; known[i] && !ok; i++)
			ok = it->string && !strcmp(it->string, known[i]);
		if (!ok) {
			char list[512] = "";
			for (int i = 0; known[i]; i++)
				snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", known[i]);
			return err_set("%s.%s: unknown key (known: %s)", where, it->string ? it->string : "?", list);
		}
	}
	return 0;
}

static int in_range(const cJSON *v, double lo, double hi, int integer)
{
	return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= lo && v->valuedouble <= hi &&
	       (!integer || v->valuedouble == floor(v->valuedouble));
}

/* "where.key[index]: expected a number in [lo, hi]"; index < 0: no index, key NULL: no key. */
static int range_error(const char *where, const char *key, int index, double lo, double hi, int integer)
{
	char at[16] = "";
	if (index >= 0)
		snprintf(at, sizeof at, "[%d]", index);
	const char *dot = key ? "." : "", *name = key ? key : "";
	if (integer) /* bounds in full: 1073741824, not 1.07374e+09 */
		return err_set("%s%s%s%s: expected an integer in [%.0f, %.0f]", where, dot, name, at, lo, hi);
	return err_set("%s%s%s%s: expected a number in [%g, %g]", where, dot, name, at, lo, hi);
}

/* cfg_num, or cfg_int when integer. */
static int get_number(const cJSON *o, const char *key, const char *where, double lo, double hi, int integer,
		      double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0;
	if (!in_range(v, lo, hi, integer))
		return range_error(where, key, -1, lo, hi, integer);
	*out = v->valuedouble;
	return 0;
}

int cfg_num(const cJSON *o, const char *key, const char *where, double lo, double hi, double *out)
{
	return get_number(o, key, where, lo, hi, 0, out);
}

int cfg_int(const cJSON *o, const char *key, const char *where, int lo, int hi, int *out)
{
	double v = *out;
	if (get_number(o, key, where, lo, hi, 1, &v) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

int cfg_bool(const cJSON *o, const char *key, const char *where, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0;
	if (!cJSON_IsBool(v))
		return err_set("%s.%s: expected true or false", where, key);
	*out = cJSON_IsTrue(v);
	return 0;
}

/* cfg_nums (dout) or cfg_ints (iout): checks every element before writing any. */
static int get_array(const cJSON *o, const char *key, const char *where, int min, int max, double lo, double hi,
		     double *dout, int *iout, int *count)
{
	const cJSON *v = key ? cJSON_GetObjectItemCaseSensitive(o, key) : o;
	if (!v)
		return 0;
	const char *dot = key ? "." : "", *name = key ? key : "", *what = iout ? "integers" : "numbers";
	int len = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
	if (len < min || len > max) {
		if (min == max)
			return err_set("%s%s%s: expected an array of %d %s", where, dot, name, min, what);
		return err_set("%s%s%s: expected an array of %d to %d %s", where, dot, name, min, max, what);
	}
	int i = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, v) {
		if (!in_range(it, lo, hi, iout != NULL))
			return range_error(where, key, i, lo, hi, iout != NULL);
		i++;
	}
	i = 0;
	cJSON_ArrayForEach(it, v) {
		if (iout)
			iout[i++] = (int)it->valuedouble;
		else
			dout[i++] = it->valuedouble;
	}
	if (count)
		*count = len;
	return 0;
}

int cfg_nums(const cJSON *o, const char *key, const char *where, int min, int max, double lo, double hi,
	     double *out, int *count)
{
	return get_array(o, key, where, min, max, lo, hi, out, NULL, count);
}

int cfg_ints(const cJSON *o, const char *key, const char *where, int min, int max, int lo, int hi, int *out,
	     int *count)
{
	return get_array(o, key, where, min, max, lo, hi, NULL, out, count);
}

int cfg_object(const cJSON *o, const char *key, const char *where, int *on, const cJSON **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	*out = NULL;
	if (!v)
		return 0;
	if (on && cJSON_IsFalse(v)) {
		*on = 0;
		return 0;
	}
	if (!cJSON_IsObject(v))
		return err_set("%s.%s: expected an object%s", where, key, on ? ", or false to turn it off" : "");
	if (on)
		*on = 1;
	*out = v;
	return 0;
}

/* ------------------------------------------------------------------ data section */

/* A [lo, hi] pair with lo <= hi. */
static int get_range(const cJSON *o, const char *key, const char *where, double lo, double hi, double *out)
{
	double r[2] = {out[0], out[1]};
	if (cfg_nums(o, key, where, 2, 2, lo, hi, r, NULL) < 0)
		return -1;
	if (r[0] > r[1])
		return err_set("%s.%s: expected [low, high] with low <= high", where, key);
	out[0] = r[0];
	out[1] = r[1];
	return 0;
}

static int apply_train(data_config *c, const cJSON *t, const char *where)
{
	static const char *const keys[] = {"photometric", "expand", "min_iou_crop", "flip_ratio", NULL};
	static const char *const pkeys[] = {"brightness_delta", "contrast_range", "saturation_range", "hue_delta", NULL};
	static const char *const ekeys[] = {"ratio_range", "prob", NULL};
	static const char *const ckeys[] = {"min_ious", "min_crop_size", NULL};
	char sub[640];
	const cJSON *p, *e, *m;
	if (cfg_check_keys(t, where, keys) < 0 || cfg_num(t, "flip_ratio", where, 0, 1, &c->flip_ratio) < 0)
		return -1;

	snprintf(sub, sizeof sub, "%s.photometric", where);
	if (cfg_object(t, "photometric", where, &c->photometric, &p) < 0 ||
	    (p && (cfg_check_keys(p, sub, pkeys) < 0 ||
		   cfg_num(p, "brightness_delta", sub, 0, 255, &c->brightness_delta) < 0 ||
		   get_range(p, "contrast_range", sub, 0, 100, c->contrast_range) < 0 ||
		   get_range(p, "saturation_range", sub, 0, 100, c->saturation_range) < 0 ||
		   cfg_num(p, "hue_delta", sub, 0, 180, &c->hue_delta) < 0)))
		return -1;

	snprintf(sub, sizeof sub, "%s.expand", where);
	if (cfg_object(t, "expand", where, &c->expand, &e) < 0 ||
	    (e && (cfg_check_keys(e, sub, ekeys) < 0 || get_range(e, "ratio_range", sub, 1, 16, c->expand_ratio) < 0 ||
		   cfg_num(e, "prob", sub, 0, 1, &c->expand_prob) < 0)))
		return -1;

	snprintf(sub, sizeof sub, "%s.min_iou_crop", where);
	if (cfg_object(t, "min_iou_crop", where, &c->min_iou_crop, &m) < 0 ||
	    (m && (cfg_check_keys(m, sub, ckeys) < 0 ||
		   cfg_nums(m, "min_ious", sub, 1, CONFIG_MAX_IOUS, 0, 1, c->min_ious, &c->n_min_ious) < 0 ||
		   cfg_num(m, "min_crop_size", sub, 0.01, 1, &c->min_crop_size) < 0)))
		return -1;
	return 0;
}

int data_config_apply(data_config *c, const cJSON *data, const char *where)
{
	static const char *const keys[] = {"size", "mean", "std", "to_rgb", "train", NULL};
	if (!cJSON_IsObject(data))
		return err_set("%s: expected an object", where);
	if (cfg_check_keys(data, where, keys) < 0)
		return -1;
	data_config n = *c;
	double size = n.size;
	if (cfg_num(data, "size", where, 1, 8192, &size) < 0)
		return -1;
	if (size != floor(size))
		return err_set("%s.size: expected an integer", where);
	n.size = (int)size;
	const cJSON *train;
	if (cfg_nums(data, "mean", where, 3, 3, -1e6, 1e6, n.mean, NULL) < 0 ||
	    cfg_nums(data, "std", where, 3, 3, 1e-6, 1e6, n.std, NULL) < 0 ||
	    cfg_bool(data, "to_rgb", where, &n.to_rgb) < 0 || cfg_object(data, "train", where, NULL, &train) < 0)
		return -1;
	if (train) {
		char sub[512];
		snprintf(sub, sizeof sub, "%s.train", where);
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
