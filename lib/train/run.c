#include "train/run.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/afile.h"
#include "core/err.h"

int run_open(run_dir *r, const char *dir, int replica)
{
	*r = (run_dir){.replica = replica, .saved_step = -1};
	snprintf(r->dir, sizeof r->dir, "%s", dir);
	if (!replica && (make_dirs(r->dir) < 0 || checkpoint_clean(r->dir) < 0))
		return -1;
	return 0;
}

int run_metrics_open(run_dir *r, long keep_step)
{
	if (r->replica)
		return 0;
	char path[4200];
	snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
	if (metrics_trim(path, keep_step) < 0)
		return -1;
	if (!(r->metrics = fopen(path, "a")))
		return err_set("%s: cannot append", path);
	return 0;
}

int run_close(run_dir *r)
{
	FILE *f = r->metrics;
	r->metrics = NULL;
	if (f && fclose(f) != 0)
		return err_set("%s/metrics.jsonl: write error: %s", r->dir, strerror(errno));
	return 0;
}

static int save(run_dir *r, train_state *t, const char *name)
{
	r->saved_step = t->step;
	if (r->replica)
		return 0;
	return checkpoint_save(t, r->dir, name) < 0 || checkpoint_save(t, r->dir, "latest.tns") < 0 ? -1 : 0;
}

int run_save_step(run_dir *r, train_state *t)
{
	char name[64];
	snprintf(name, sizeof name, "iter_%ld.tns", t->step);
	return save(r, t, name);
}

int run_save_epoch(run_dir *r, train_state *t)
{
	char name[64];
	snprintf(name, sizeof name, "epoch_%ld.tns", t->epoch + 1);
	return save(r, t, name);
}

long run_next_epoch(run_dir *r, train_state *t, long epoch)
{
	if (epoch == t->epoch)
		return 0;
	long steps = t->epoch_steps;
	if (steps > 0 && run_save_epoch(r, t) < 0)
		return -1;
	t->epoch = epoch;
	t->epoch_steps = 0;
	t->epoch_images = 0;
	return steps;
}

int run_end(run_dir *r, train_state *t, long iters_per_epoch)
{
	if (t->step == r->saved_step)
		return 0;
	if (iters_per_epoch > 0 && t->epoch_steps == iters_per_epoch)
		return run_save_epoch(r, t);
	return run_save_step(r, t);
}

/* A number for metrics.jsonl: JSON has no NaN or infinity. */
static void json_num(FILE *f, const char *key, double v)
{
	if (isfinite(v))
		fprintf(f, ",\"%s\":%.9g", key, v);
	else
		fprintf(f, ",\"%s\":null", key);
}

int run_log(run_dir *r, const run_metrics *m)
{
	FILE *f = r->metrics;
	if (!f)
		return 0;
	fprintf(f, "{\"step\":%ld,\"epoch\":%ld", m->step, m->epoch);
	json_num(f, "lr", m->lr);
	json_num(f, "loss", m->loss);
	json_num(f, "loss_cls", m->loss_cls);
	json_num(f, "loss_bbox", m->loss_bbox);
	json_num(f, "num_pos", m->num_pos);
	json_num(f, "images", m->images);
	json_num(f, "images_per_s", m->images_per_s);
	json_num(f, "eta_s", m->eta_s);
	fputs("}\n", f);
	if (fflush(f) != 0)
		return err_set("%s/metrics.jsonl: write error: %s", r->dir, strerror(errno));
	return 0;
}

int metrics_trim(const char *path, long step)
{
	FILE *in = fopen(path, "r");
	if (!in)
		return errno == ENOENT ? 0 : err_set("%s: %s", path, strerror(errno));
	afile out;
	if (afile_open(&out, path, "w") < 0) {
		fclose(in);
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = 0;
	while ((len = getline(&line, &cap, in)) > 0) {
		/* a line cut short by a kill does not parse and goes too */
		cJSON *j = line[len - 1] == '\n' ? cJSON_Parse(line) : NULL;
		const cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
		if (cJSON_IsNumber(s) && s->valuedouble <= (double)step && fputs(line, out.f) == EOF)
			rc = err_set("%s: write error: %s", out.path, strerror(errno));
		cJSON_Delete(j);
	}
	free(line);
	if (ferror(in))
		rc = err_set("%s: read error", path);
	fclose(in);
	if (rc < 0) {
		afile_abort(&out);
		return -1;
	}
	return afile_commit(&out);
}
