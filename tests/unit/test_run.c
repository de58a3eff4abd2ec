/* test_run: a run directory's books (lib/train/run.c): checkpoint names at steps, epoch
 * ends and the end of the loop; a replica writes nothing; metrics.jsonl written, read
 * back and trimmed for a resume. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/err.h"
#include "train/run.h"

static record *small_params(void)
{
	record *p = record_new("params");
	int64_t s4[1] = {4};
	record_add(p, "bn.weight", DT_F32, 1, s4);
	record_add(p, "bn.running_mean", DT_F32, 1, s4);
	record_add(p, "bn.running_var", DT_F32, 1, s4);
	return p;
}

static int exists(const char *dir, const char *name)
{
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

/* The step recorded in dir/name (-1 if unreadable). */
static long step_of(const char *dir, const char *name)
{
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	train_state t = {0};
	if (checkpoint_load(&t, path) < 0)
		return -1;
	sgd_free(t.opt);
	return t.step;
}

static void test_names(const char *top)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/run/a", top);
	record *p = small_params();
	train_state t = {.opt = sgd_new(p)};
	run_dir r;
	CHECK_MSG(run_open(&r, dir, 0) == 0, "%s", err_msg()); /* made like mkdir -p */
	CHECK(r.saved_step == -1 && !strcmp(r.dir, dir));
	/* epoch 0: three steps, a checkpoint at step 2 */
	CHECK(run_next_epoch(&r, &t, 0) == 0);
	for (int i = 0; i < 3; i++) {
		t.step++, t.epoch_steps++, t.epoch_images += 4;
		if (t.step == 2)
			CHECK(run_save_step(&r, &t) == 0);
	}
	CHECK(exists(dir, "iter_2.tns") && step_of(dir, "latest.tns") == 2 && r.saved_step == 2);
	/* the first step of epoch 1 ends epoch 0: epoch_1.tns, and the new epoch starts empty */
	CHECK(run_next_epoch(&r, &t, 0) == 0 && !exists(dir, "epoch_1.tns"));
	CHECK(run_next_epoch(&r, &t, 1) == 3);
	CHECK(step_of(dir, "epoch_1.tns") == 3 && step_of(dir, "latest.tns") == 3 && r.saved_step == 3);
	CHECK(t.epoch == 1 && t.epoch_steps == 0 && t.epoch_images == 0);
	/* the end mid-epoch: iter_<step>; after a complete epoch: epoch_<e> */
	t.step++, t.epoch_steps++;
	CHECK(run_end(&r, &t, 3) == 0 && step_of(dir, "iter_4.tns") == 4 && !exists(dir, "epoch_2.tns"));
	t.step += 2, t.epoch_steps += 2;
	CHECK(run_end(&r, &t, 3) == 0 && step_of(dir, "epoch_2.tns") == 6 && !exists(dir, "iter_6.tns"));
	CHECK(step_of(dir, "latest.tns") == 6);
	/* saved already: nothing more */
	char latest[600];
	snprintf(latest, sizeof latest, "%s/latest.tns", dir);
	unlink(latest);
	CHECK(run_end(&r, &t, 3) == 0 && !exists(dir, "latest.tns"));
	CHECK(run_close(&r) == 0);
	/* an epoch that ends with no steps in it is not saved */
	t.epoch_steps = 0;
	CHECK(run_next_epoch(&r, &t, 5) == 0 && !exists(dir, "epoch_3.tns") && t.epoch == 5);

	/* a replica keeps the books and writes nothing */
	snprintf(dir, sizeof dir, "%s/replica", top);
	CHECK(run_open(&r, dir, 1) == 0 && access(dir, F_OK) != 0);
	CHECK(run_metrics_open(&r, 0) == 0);
	CHECK(run_save_step(&r, &t) == 0 && r.saved_step == t.step && access(dir, F_OK) != 0);
	run_metrics m = {.step = 1};
	CHECK(run_log(&r, &m) == 0 && run_close(&r) == 0 && access(dir, F_OK) != 0);
	/* a directory that cannot be made */
	CHECK(run_open(&r, "/proc/no/run", 0) < 0 && strstr(err_msg(), "/proc/no"));
	sgd_free(t.opt);
	record_free(p);
}

static cJSON *read_lines(const char *path, int *n)
{
	FILE *f = fopen(path, "r");
	cJSON *all = cJSON_CreateArray();
	char line[1024];
	*n = 0;
	while (f && fgets(line, sizeof line, f)) {
		cJSON *j = cJSON_Parse(line);
		CHECK_MSG(j, "not JSON: %s", line);
		if (j)
			cJSON_AddItemToArray(all, j);
		(*n)++;
	}
	if (f)
		fclose(f);
	return all;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsNull(v) ? -999 : NAN;
}

static void test_metrics(const char *top)
{
	char dir[512], path[600];
	snprintf(dir, sizeof dir, "%s/metrics", top);
	snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
	run_dir r;
	CHECK(run_open(&r, dir, 0) == 0 && run_metrics_open(&r, 0) == 0);
	for (long s = 1; s <= 4; s++) {
		run_metrics m = {s, s / 3, 0.04 / (double)s, 3.5 - (double)s, 2, 1.5, 17, 8, s == 1 ? INFINITY : 12.25, NAN};
		CHECK(run_log(&r, &m) == 0);
	}
	CHECK(run_close(&r) == 0);
	/* read back: every key, in order; what JSON cannot hold is null */
	int n;
	cJSON *lines = read_lines(path, &n);
	CHECK(n == 4);
	const cJSON *l = cJSON_GetArrayItem(lines, 1);
	static const char *const keys[] = {"step", "epoch", "lr", "loss", "loss_cls", "loss_bbox", "num_pos",
					   "images", "images_per_s", "eta_s"};
	int k = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, l)
		CHECK_MSG(k < 10 && !strcmp(it->string, keys[k++]), "key %d: %s", k, it->string);
	CHECK(k == 10);
	CHECK(num(l, "step") == 2 && num(l, "epoch") == 0 && num(l, "lr") == 0.02 && num(l, "loss") == 1.5);
	CHECK(num(l, "images_per_s") == 12.25 && num(l, "eta_s") == -999);
	CHECK(num(cJSON_GetArrayItem(lines, 0), "images_per_s") == -999);
	CHECK(num(cJSON_GetArrayItem(lines, 3), "epoch") == 1);
	cJSON_Delete(lines);

	/* a resume at step 2 keeps steps 1 and 2, and the log goes on after them */
	CHECK(run_open(&r, dir, 0) == 0 && run_metrics_open(&r, 2) == 0);
	run_metrics m = {.step = 3, .lr = 0.5};
	CHECK(run_log(&r, &m) == 0 && run_close(&r) == 0);
	lines = read_lines(path, &n);
	CHECK(n == 3 && num(cJSON_GetArrayItem(lines, 1), "step") == 2 && num(cJSON_GetArrayItem(lines, 2), "lr") == 0.5);
	cJSON_Delete(lines);
	/* a fresh run (keep 0) starts a fresh log */
	CHECK(run_metrics_open(&r, 0) == 0 && run_close(&r) == 0);
	lines = read_lines(path, &n);
	CHECK(n == 0);
	cJSON_Delete(lines);

	/* metrics_trim keeps the steps <= N and drops a torn last line */
	FILE *f = fopen(path, "w");
	fputs("{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n{\"step\":3,\"loss\":1}\n{\"step\":4,\"lo", f);
	fclose(f);
	CHECK(metrics_trim(path, 2) == 0);
	char buf[256] = "";
	f = fopen(path, "r");
	size_t len = fread(buf, 1, sizeof buf - 1, f);
	buf[len] = 0;
	fclose(f);
	CHECK_MSG(!strcmp(buf, "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n"), "%s", buf);
	snprintf(path, sizeof path, "%s/none.jsonl", dir);
	CHECK(metrics_trim(path, 2) == 0 && access(path, F_OK) != 0);
}

int main(void)
{
	char dir[] = "/tmp/test_run.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	test_names(dir);
	test_metrics(dir);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return check_done("test_run");
}
