/* test_optim: SGD, BN running statistics and the LR schedules against
 * tests/ref_optim.py (torch.optim.SGD and mmcv's formulas; tests/fixtures/optim/);
 * checks of grads records; the "train" config section; the exact resume of those steps
 * through a checkpoint. Prints the largest difference in ulps per set. (The checkpoint
 * file itself: test_checkpoint; afile: test_afile; run bookkeeping: test_run.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture.h"
#include "train/checkpoint.h"
#include "core/config.h"
#include "core/err.h"
#include "train/optim.h"
#include "core/stream.h"

#define FIX "tests/fixtures/optim/"

static int load_train(optim_config *c, const char *path)
{
	cJSON *j = config_read(path);
	optim_config_default(c);
	int rc = j ? optim_config_apply(c, cJSON_GetObjectItem(j, "train"), path) : -1;
	cJSON_Delete(j);
	CHECK_MSG(rc == 0, "%s: %s", path, err_msg());
	return rc;
}

/* Largest distance in ulps between the f32 tensors of a and the same-named ones of
 * want (other dtypes must be byte-equal); -1 if a tensor is missing or mis-shaped. */
static long max_ulps(const record *a, const record *want)
{
	long worst = 0;
	if (a->ntensors != want->ntensors)
		return -1;
	for (int i = 0; i < want->ntensors; i++) {
		const tensor *w = &want->tensors[i], *t = record_find(a, w->name);
		if (!t || t->dtype != w->dtype || tensor_numel(t) != tensor_numel(w))
			return -1;
		if (w->dtype != DT_F32) {
			if (memcmp(t->data, w->data, tensor_nbytes(w)))
				return -1;
			continue;
		}
		const int32_t *x = t->data, *y = w->data;
		for (int64_t k = 0; k < tensor_numel(w); k++) {
			long d = labs((long)x[k] - (long)y[k]);
			if ((x[k] < 0) != (y[k] < 0))
				d = labs((long)(x[k] & 0x7fffffff) + (long)(y[k] & 0x7fffffff));
			worst = d > worst ? d : worst;
		}
	}
	return worst;
}

static void test_lr_cases(void)
{
	FILE *f = fopen(FIX "lr_cases.json", "rb");
	CHECK(f);
	if (!f)
		return;
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	cJSON *cases = cJSON_Parse(buf), *c;
	int k = 0;
	double worst = 0;
	cJSON_ArrayForEach(c, cases) {
		optim_config oc;
		optim_config_default(&oc);
		long max_iters = (long)cJSON_GetObjectItem(c, "max_iters")->valuedouble;
		CHECK_MSG(optim_config_apply(&oc, cJSON_GetObjectItem(c, "train"), "case") == 0, "case %d: %s", k, err_msg());
		CHECK_MSG(optim_config_check(&oc, max_iters) == 0, "case %d: %s", k, err_msg());
		cJSON *p;
		cJSON_ArrayForEach(p, cJSON_GetObjectItem(c, "lr")) {
			long it = (long)cJSON_GetArrayItem(p, 0)->valuedouble, ep = (long)cJSON_GetArrayItem(p, 1)->valuedouble;
			double want = cJSON_GetArrayItem(p, 2)->valuedouble, got = lr_at(&oc, it, ep, max_iters);
			CHECK_MSG(fabs(got - want) <= 1e-12, "case %d iter %ld epoch %ld: lr %.17g, mmcv %.17g", k, it, ep, got, want);
			worst = fabs(got - want) > worst ? fabs(got - want) : worst;
		}
		k++;
	}
	printf("lr schedules: %d cases, largest difference %.3g\n", k, worst);
	cJSON_Delete(cases);
}

/* Runs a fixture set through sgd_step; with ckpt_at >= 0 it also saves a checkpoint
 * there, reloads it and goes on from the reloaded state. */
static void test_set(const char *set, int ckpt_at, const char *dir)
{
	char path[256];
	optim_config c;
	record **init, **steps, **expect;
	snprintf(path, sizeof path, FIX "%s.json", set);
	if (load_train(&c, path) < 0)
		return;
	snprintf(path, sizeof path, FIX "%s_init.tns", set);
	int ni = read_all(path, &init);
	record **b;
	snprintf(path, sizeof path, FIX "%s_steps_a.tns", set);
	int ns = read_all(path, &steps);
	snprintf(path, sizeof path, FIX "%s_steps_b.tns", set);
	int nb = read_all(path, &b);
	CHECK(ns > 0 && nb > 0);
	steps = realloc(steps, (size_t)(ns + nb) * sizeof *steps);
	memcpy(steps + ns, b, (size_t)nb * sizeof *b);
	ns += nb;
	free(b);
	snprintf(path, sizeof path, FIX "%s_expect.tns", set);
	int ne = read_all(path, &expect);
	CHECK(ni == 1 && ns == 2 * ne && ne > 0);
	if (ni != 1 || ns != 2 * ne || ne <= 0)
		return;
	train_state t = {.opt = sgd_new(init[0])};
	snprintf(t.config, sizeof t.config, "%s", set);
	CHECK_MSG(t.opt, "%s", err_msg());
	long worst = 0;
	double lr_worst = 0;
	for (int k = 0; k < ne && t.opt; k++) {
		const record *loss = steps[2 * k], *grads = steps[2 * k + 1];
		CHECK(!strcmp(loss->kind, "loss") && !strcmp(grads->kind, "grads"));
		long epoch = (long)meta_num(loss, "epoch", 0);
		double lr = lr_at(&c, t.step, epoch, ne);
		lr_worst = fmax(lr_worst, fabs(lr - meta_num(expect[k], "lr", -1)));
		CHECK_MSG(sgd_step(t.opt, grads, lr, &c) == 0, "%s step %d: %s", set, k, err_msg());
		t.step++;
		t.epoch = epoch;
		t.lr = lr;
		long u = max_ulps(sgd_params(t.opt), expect[k]);
		CHECK_MSG(u == 0, "%s step %d: %ld ulp from torch", set, k, u);
		worst = u < 0 || u > worst ? u : worst;
		if (k == ckpt_at) {
			CHECK_MSG(checkpoint_save(&t, dir, "latest.tns") == 0, "%s", err_msg());
			train_state r = {0};
			snprintf(path, sizeof path, "%s/latest.tns", dir);
			CHECK_MSG(checkpoint_load(&r, path) == 0, "%s", err_msg());
			/* the lr is a record of the schedule (recomputed from step and epoch), and cJSON
			 * prints doubles to 15 digits when they read back within DBL_EPSILON */
			CHECK_MSG(r.step == t.step && r.epoch == t.epoch && fabs(r.lr - t.lr) <= 1e-15 * t.lr && !strcmp(r.config, set),
				  "loaded step %ld epoch %ld lr %.17g config %s", r.step, r.epoch, r.lr, r.config);
			if (r.opt) {
				CHECK(max_ulps(sgd_params(r.opt), expect[k]) == 0);
				sgd_free(t.opt);
				t.opt = r.opt;
			}
		}
	}
	printf("%s: %d steps, params within %ld ulp of torch.optim.SGD%s, lr within %.3g\n", set, ne, worst,
	       ckpt_at >= 0 ? " (through a checkpoint)" : "", lr_worst);
	CHECK(lr_worst <= 1e-12);
	sgd_free(t.opt);
	free_all(init, ni);
	free_all(steps, ns);
	free_all(expect, ne);
}

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

static record *small_grads(void)
{
	record *g = record_new("grads");
	int64_t s4[1] = {4}, s23[2] = {2, 3};
	float *w = record_add(g, "conv.weight", DT_F32, 2, s23)->data;
	for (int i = 0; i < 6; i++)
		w[i] = 1;
	record_add(g, "bn.weight", DT_F32, 1, s4);
	record_add(g, "bn.batch_mean", DT_F32, 1, s4);
	record_add(g, "bn.batch_var", DT_F32, 1, s4);
	return g;
}

static void test_bad_grads(void)
{
	optim_config c;
	optim_config_default(&c);
	record *p = small_params();
	sgd *s = sgd_new(p);
	CHECK(s && sgd_ntrainable(s) == 2 && sgd_nbn(s) == 1);
	record *g = small_grads();
	CHECK_MSG(sgd_step(s, g, 0.1, &c) == 0, "%s", err_msg());
	record_free(g);
	float before = ((float *)sgd_params(s)->tensors[0].data)[0];
	struct {
		const char *drop, *add;
		int64_t dim;
		const char *msg;
	} cases[] = {
		{"bn.weight", NULL, 0, "grads: no gradient for 'bn.weight'"},
		{NULL, "head.weight", 4, "grads: 'head.weight' is not a trainable parameter"},
		{"bn.weight", "bn.weight", 5, "grads: 'bn.weight' is f32[5], the parameter is f32[4]"},
		{"bn.batch_var", NULL, 0, "grads: 'bn.running_mean' needs both batch_mean and batch_var"},
		{"bn.batch_mean", "bn.batch_mean", 3, "grads: 'bn.batch_mean' is f32[3], its running statistics are f32[4]"},
		{NULL, "fc.batch_mean", 4, "grads: 'fc.batch_mean' names no BN layer with running statistics"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		record *full = small_grads(), *bad = record_new("grads");
		for (int k = 0; k < full->ntensors; k++) {
			tensor *t = &full->tensors[k];
			if (cases[i].drop && !strcmp(t->name, cases[i].drop))
				continue;
			memcpy(record_add(bad, t->name, t->dtype, t->ndim, t->shape)->data, t->data, tensor_nbytes(t));
		}
		if (cases[i].add)
			record_add(bad, cases[i].add, DT_F32, 1, &cases[i].dim);
		CHECK(sgd_step(s, bad, 0.1, &c) < 0);
		CHECK_MSG(!strcmp(err_msg(), cases[i].msg), "got '%s', expected '%s'", err_msg(), cases[i].msg);
		CHECK(((float *)sgd_params(s)->tensors[0].data)[0] == before); /* nothing changed */
		record_free(full);
		record_free(bad);
	}
	/* a BN layer without batch statistics keeps its running statistics (frozen BN) */
	record *nobn = record_new("grads");
	int64_t s4[1] = {4}, s23[2] = {2, 3};
	record_add(nobn, "conv.weight", DT_F32, 2, s23);
	record_add(nobn, "bn.weight", DT_F32, 1, s4);
	float rm = ((float *)record_find(sgd_params(s), "bn.running_mean")->data)[0];
	CHECK(sgd_step(s, nobn, 0.1, &c) == 0);
	CHECK(((float *)record_find(sgd_params(s), "bn.running_mean")->data)[0] == rm);
	record_free(nobn);
	sgd_free(s);
	/* running_mean without running_var */
	record *half = record_new("params");
	record_add(half, "bn.running_mean", DT_F32, 1, s4);
	CHECK(!sgd_new(half) && strstr(err_msg(), "'bn.running_mean' needs an f32 'bn.running_var'"));
	record_free(half);
	record_free(p);
}

/* optim_config_json over the defaults gives the config back; apply(json(c)) == c. */
static void check_round_trip(const optim_config *c, const char *what)
{
	cJSON *j = optim_config_json(c);
	optim_config back;
	optim_config_default(&back);
	CHECK_MSG(j && optim_config_apply(&back, j, "printed") == 0, "%s: %s", what, err_msg());
	CHECK_MSG(!memcmp(&back, c, sizeof back), "%s: the printed train section reads back otherwise", what);
	cJSON_Delete(j);
}

static void test_config_json(void)
{
	optim_config c;
	optim_config_default(&c);
	check_round_trip(&c, "defaults");
	/* every schedule of the LR cases */
	FILE *f = fopen(FIX "lr_cases.json", "rb");
	static char buf[1 << 20];
	size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	cJSON *cases = cJSON_Parse(buf), *it;
	int k = 0;
	cJSON_ArrayForEach(it, cases) {
		char what[32];
		snprintf(what, sizeof what, "lr case %d", k++);
		optim_config_default(&c);
		if (optim_config_apply(&c, cJSON_GetObjectItem(it, "train"), what) == 0)
			check_round_trip(&c, what);
	}
	CHECK(k == 5);
	cJSON_Delete(cases);
	static const char *const more[] = {
		"{\"lr_config\": {\"policy\": \"step\", \"step\": [8, 11], \"min_lr\": 0.001, \"warmup\": \"exp\"}}",
		"{\"lr_config\": {\"policy\": \"cosine\", \"min_lr\": 0.0005, \"warmup\": null}, \"epochs\": 3}",
		"{\"lr_config\": {\"policy\": \"fixed\", \"step\": 4, \"min_lr_ratio\": 0.5}, \"bn_momentum\": 0.03}",
	};
	for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
		cJSON *j = cJSON_Parse(more[i]);
		optim_config_default(&c);
		CHECK_MSG(optim_config_apply(&c, j, "t") == 0, "%s", err_msg());
		check_round_trip(&c, more[i]);
		cJSON_Delete(j);
	}
	/* the resolved config: train complete, qat's defaults where it has none */
	cJSON *r = config_resolved(NULL);
	const cJSON *q = cJSON_GetObjectItem(r, "qat"), *t = cJSON_GetObjectItem(r, "train");
	CHECK(r && cJSON_GetObjectItem(q, "epochs")->valuedouble == 6 && cJSON_GetObjectItem(q, "lr")->valuedouble == 0.04 / 10);
	CHECK(cJSON_GetObjectItem(t, "batch")->valuedouble == 8 && cJSON_GetObjectItem(t, "checkpoint_every")->valuedouble == 500);
	cJSON_Delete(r);
	r = config_resolved(FIX "cosine.json");
	CHECK_MSG(r, "%s", err_msg());
	optim_config from_file;
	CHECK(load_train(&from_file, FIX "cosine.json") == 0);
	optim_config_default(&c);
	CHECK(r && optim_config_apply(&c, cJSON_GetObjectItem(r, "train"), "resolved") == 0 && !memcmp(&c, &from_file, sizeof c));
	cJSON_Delete(r);
	CHECK(!config_resolved("/nonexistent.json") && strstr(err_msg(), "/nonexistent.json"));
}

static void test_config(void)
{
	static const struct {
		const char *json, *msg;
	} bad[] = {
		{"{\"optimiser\": {}}", "t.optimiser: unknown key"},
		{"{\"optimizer\": {\"lr\": -1}}", "t.optimizer.lr: expected a number in [0, 1000]"},
		{"{\"optimizer\": {\"type\": \"Adam\"}}", "t.optimizer.type: expected one of \"SGD\""},
		{"{\"lr_config\": {\"policy\": \"poly\"}}", "t.lr_config.policy: expected one of"},
		{"{\"lr_config\": {\"min_lr\": 0, \"min_lr_ratio\": 0.1}}", "give min_lr or min_lr_ratio, not both"},
		{"{\"lr_config\": {\"step\": [3, 2]}}", "t.lr_config.step[1]: expected increasing integers"},
		{"{\"lr_config\": {\"warmup\": \"cubic\"}}", "t.lr_config.warmup: expected one of"},
		{"{\"epochs\": 2.5}", "t.epochs: expected an integer"},
		{"{\"bn_momentum\": 2}", "t.bn_momentum: expected a number in [0, 1]"},
		{"[]", "t: expected an object"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		optim_config c;
		optim_config_default(&c);
		optim_config before = c;
		cJSON *j = cJSON_Parse(bad[i].json);
		CHECK(optim_config_apply(&c, j, "t") < 0);
		CHECK_MSG(strstr(err_msg(), bad[i].msg), "%s: got '%s'", bad[i].json, err_msg());
		CHECK(!memcmp(&c, &before, sizeof c));
		cJSON_Delete(j);
	}
	optim_config c;
	optim_config_default(&c);
	CHECK(c.lr == 0.04 && c.momentum == 0.9 && c.weight_decay == 4e-5 && c.policy == LR_COSINE && c.epochs == 24);
	/* TI's recipe: warm-up starts at lr * warmup_ratio and ends at the regular lr */
	CHECK_NEAR(lr_at(&c, 0, 0, 0), 0.04 * 0.001, 1e-15);
	CHECK_NEAR(lr_at(&c, 1000, 0, 0), 0.04, 1e-15);
	CHECK_NEAR(lr_at(&c, 99999, 23, 0), 0.04 * 1e-4 + 0.5 * (0.04 - 0.04 * 1e-4) * (1 + cos(M_PI * 23 / 24)), 1e-15);
	cJSON *j = cJSON_Parse("{\"lr_config\": {\"by_epoch\": false}}");
	CHECK(optim_config_apply(&c, j, "t") == 0);
	CHECK(optim_config_check(&c, 0) < 0 && strstr(err_msg(), "needs the run's length"));
	CHECK(optim_config_check(&c, 100) == 0);
	cJSON_Delete(j);
	j = cJSON_Parse("{\"lr_config\": {\"warmup\": null, \"policy\": \"step\", \"step\": 3, \"by_epoch\": false}}");
	CHECK(optim_config_apply(&c, j, "t") == 0 && c.warmup == WARMUP_NONE && c.step_every == 3);
	CHECK_NEAR(lr_at(&c, 7, 0, 0), 0.04 * 0.01, 1e-15);
	cJSON_Delete(j);
}

int main(void)
{
	char dir[] = "/tmp/test_optim.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	test_lr_cases();
	test_set("cosine", -1, dir);
	test_set("step", -1, dir);
	test_set("cosine", 0, dir);
	test_set("cosine", 6, dir);
	test_bad_grads();
	test_config();
	test_config_json();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return check_done("test_optim");
}
