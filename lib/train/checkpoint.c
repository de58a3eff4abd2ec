#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/afile.h"
#include "core/err.h"

/* Sets a number in an object, in place when the key exists (its position stays). */
static int set_num(cJSON *o, const char *key, double v)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	if (cJSON_IsNumber(it)) {
		cJSON_SetNumberValue(it, v);
		return 0;
	}
	cJSON *n = cJSON_CreateNumber(v);
	if (!n)
		return err_set("out of memory");
	if (it ? !cJSON_ReplaceItemInObjectCaseSensitive(o, key, n) : !cJSON_AddItemToObject(o, key, n)) {
		cJSON_Delete(n);
		return err_set("out of memory");
	}
	return 0;
}

static int set_str(cJSON *o, const char *key, const char *v)
{
	cJSON *n = cJSON_CreateString(v);
	if (!n)
		return err_set("out of memory");
	int ok = cJSON_GetObjectItemCaseSensitive(o, key) ? cJSON_ReplaceItemInObjectCaseSensitive(o, key, n)
							   : cJSON_AddItemToObject(o, key, n);
	if (!ok) {
		cJSON_Delete(n);
		return err_set("out of memory");
	}
	return 0;
}

record *train_state_params(train_state *t)
{
	record *p = sgd_params(t->opt);
	if (set_num(p->meta, "step", (double)t->step) < 0 || set_num(p->meta, "epoch", (double)t->epoch) < 0)
		return NULL;
	return p;
}

/* The "optim" record's meta: the run's position. */
static int stamp_optim(train_state *t, record *o)
{
	char seed[32];
	snprintf(seed, sizeof seed, "%llu", t->seed);
	if (set_num(o->meta, "step", (double)t->step) < 0 || set_num(o->meta, "epoch", (double)t->epoch) < 0 ||
	    set_num(o->meta, "epoch_steps", (double)t->epoch_steps) < 0 || set_num(o->meta, "images", t->images) < 0 ||
	    set_num(o->meta, "epoch_images", t->epoch_images) < 0 || set_num(o->meta, "lr", t->lr) < 0 ||
	    set_str(o->meta, "seed", seed) < 0 || set_str(o->meta, "config", t->config) < 0)
		return -1;
	return 0;
}

int records_save(const char *path, record *const *recs, int n)
{
	afile a;
	if (afile_open(&a, path, "wb") < 0)
		return -1;
	stream_writer *w = stream_writer_new(a.f, a.path, STREAM_LEVEL_DEFAULT); /* errors name the checkpoint */
	int rc = w ? 0 : -1;
	for (int i = 0; rc == 0 && i < n; i++)
		if (recs[i] && stream_write(w, recs[i]) < 0)
			rc = -1;
	if (stream_close_write(w) < 0)
		rc = -1;
	if (rc < 0) {
		afile_abort(&a);
		return -1;
	}
	return afile_commit(&a);
}

int checkpoint_save(train_state *t, const char *dir, const char *name)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
		return err_set("%s: path too long", dir);
	record *params = train_state_params(t), *optim = sgd_momentum(t->opt);
	if (!params || stamp_optim(t, optim) < 0)
		return -1;
	record *recs[3] = {params, t->ranges, optim};
	return records_save(path, recs, 3);
}

int checkpoint_load(train_state *t, const char *path)
{
	stream_reader *s = stream_open_read(path);
	record *params = NULL, *optim = NULL, *ranges = NULL;
	int rc = -1;
	if (!s)
		return -1;
	int a = stream_read(s, &params), b = a > 0 ? stream_read(s, &optim) : a;
	if (b > 0 && !strcmp(optim->kind, "ranges")) {
		ranges = optim;
		optim = NULL;
		b = stream_read(s, &optim);
	}
	if (a < 0 || b < 0) /* the stream's message names the file and the record */
		goto out;
	if (a == 0 || b == 0) {
		err_set("%s: not a checkpoint (expected a params and an optim record)", path);
		goto out;
	}
	if (strcmp(params->kind, "params") != 0 || strcmp(optim->kind, "optim") != 0) {
		err_set("%s: not a checkpoint (records are %s, %s; expected params, optim)", path, params->kind, optim->kind);
		goto out;
	}
	const cJSON *seed = cJSON_GetObjectItemCaseSensitive(optim->meta, "seed");
	double step = meta_num(optim, "step", -1), epoch = meta_num(optim, "epoch", -1);
	if (step < 0 || epoch < 0 || !cJSON_IsString(seed)) {
		err_set("%s: the optim record lacks step, epoch or seed", path);
		goto out;
	}
	sgd *opt = sgd_from_checkpoint(params, optim);
	if (!opt) {
		err_wrap("%s", path);
		goto out;
	}
	t->opt = opt;
	t->step = (long)step;
	t->epoch = (long)epoch;
	t->epoch_steps = (long)meta_num(optim, "epoch_steps", 0);
	t->images = meta_num(optim, "images", 0);
	t->epoch_images = meta_num(optim, "epoch_images", 0);
	t->lr = meta_num(optim, "lr", 0);
	t->seed = strtoull(seed->valuestring, NULL, 10);
	snprintf(t->config, sizeof t->config, "%s", meta_str(optim, "config", ""));
	t->ranges = ranges;
	ranges = NULL;
	rc = 0;
out:
	record_free(ranges);
	record_free(params);
	record_free(optim);
	stream_close_read(s);
	return rc;
}


int checkpoint_clean(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return err_set("%s: %s", dir, strerror(errno));
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d))) {
		char path[4096];
		if (strncmp(e->d_name, ".tmp-", 5) != 0 || (size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path)
			continue;
		n += unlink(path) == 0;
	}
	closedir(d);
	return n;
}

int make_dirs(const char *path)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof buf)
		return err_set("bad directory name '%.80s'", path);
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != 0)
			continue;
		char c = buf[i];
		buf[i] = 0;
		struct stat st;
		if (mkdir(buf, 0777) < 0 && errno != EEXIST)
			return err_set("%s: %s", buf, strerror(errno));
		if (stat(buf, &st) < 0 || !S_ISDIR(st.st_mode))
			return err_set("%s: not a directory", buf);
		buf[i] = c;
	}
	return 0;
}
