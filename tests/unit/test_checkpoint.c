/* test_checkpoint: a training state through its checkpoint file (lib/train/checkpoint.c):
 * save and load give the same state, no temp file is left, a damaged file is an error.
 * (The exact resume against torch's steps is test_optim's, through its fixtures.) */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "core/stream.h"
#include "train/checkpoint.h"

static record *small_params(void)
{
	record *p = record_new("params");
	int64_t s4[1] = {4}, s23[2] = {2, 3};
	record_add(p, "conv.weight", DT_F32, 2, s23);
	record_add(p, "bn.weight", DT_F32, 1, s4);
	record_add(p, "bn.running_mean", DT_F32, 1, s4);
	record_add(p, "bn.running_var", DT_F32, 1, s4);
	return p;
}

static void test_checkpoint_files(const char *dir)
{
	/* before the first step: no momentum buffers; load gives the same state */
	record *p = small_params();
	train_state t = {.opt = sgd_new(p), .seed = 18446744073709551615ull, .epoch = 2, .epoch_images = 48};
	snprintf(t.config, sizeof t.config, "tiny");
	CHECK(checkpoint_save(&t, dir, "iter_0.tns") == 0);
	char path[512];
	snprintf(path, sizeof path, "%s/iter_0.tns", dir);
	train_state r = {0};
	CHECK_MSG(checkpoint_load(&r, path) == 0, "%s", err_msg());
	CHECK(r.seed == 18446744073709551615ull && r.epoch == 2 && r.epoch_images == 48 && r.step == 0);
	CHECK(r.opt && sgd_momentum(r.opt)->ntensors == 0);
	sgd_free(r.opt);
	/* no temp file left behind */
	char cmd[600];
	snprintf(cmd, sizeof cmd, "ls -A %s | grep -q '^\\.tmp'", dir);
	CHECK(system(cmd) != 0);
	/* params_read takes the first params record */
	record *q = stream_read_first(path, "params");
	CHECK(q && q->ntensors == 4 && meta_num(q, "epoch", -1) == 2);
	record_free(q);
	CHECK(!stream_read_first("/nonexistent", "params") && strstr(err_msg(), "/nonexistent"));
	/* a damaged checkpoint is an error */
	snprintf(cmd, sizeof cmd, "head -c 100 %s/iter_0.tns > %s/cut.tns", dir, dir);
	CHECK(system(cmd) == 0);
	snprintf(path, sizeof path, "%s/cut.tns", dir);
	CHECK(checkpoint_load(&r, path) < 0 && strstr(err_msg(), "truncated"));
	CHECK(checkpoint_save(&t, "/nonexistent/dir", "x.tns") < 0 && strstr(err_msg(), "/nonexistent/dir"));
	sgd_free(t.opt);
	record_free(p);
	snprintf(path, sizeof path, "%s/a/b/c", dir);
	CHECK(make_dirs(path) == 0 && make_dirs(path) == 0);
}

int main(void)
{
	char dir[] = "/tmp/test_checkpoint.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	test_checkpoint_files(dir);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return check_done("test_checkpoint");
}
