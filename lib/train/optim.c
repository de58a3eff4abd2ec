#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/err.h"
#include "core/str.h"

/* ---------------------------------------------------------------- config */

void optim_config_default(optim_config *c)
{
	memset(c, 0, sizeof *c);
	c->lr = 0.04;
	c->momentum = 0.9;
	c->weight_decay = 4e-5;
	c->policy = LR_COSINE;
	c->warmup = WARMUP_LINEAR;
	c->warmup_iters = 1000;
	c->warmup_ratio = 0.001;
	c->min_lr_ratio = 1e-4;
	c->min_lr = -1;
	c->gamma = 0.1;
	c->by_epoch = 1;
	c->epochs = 24;
	c->batch = 8;
	c->checkpoint_every = 500;
	c->bn_momentum = 0.1;
}

static int get_long(const cJSON *o, const char *key, const char *where, long lo, long hi, long *out)
{
	double v = (double)*out;
	if (cfg_num(o, key, where, (double)lo, (double)hi, &v) < 0)
		return -1;
	if (v != floor(v))
		return err_set("%s.%s: expected an integer", where, key);
	*out = (long)v;
	return 0;
}

/* A string member that must be one of names (NULL-terminated); JSON null gives
 * null_value when it is >= 0. */
static int get_choice(const cJSON *o, const char *key, const char *where, const char *const *names,
		      const int *values, int null_value, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0;
	if (cJSON_IsNull(v) && null_value >= 0) {
		*out = null_value;
		return 0;
	}
	char list[256] = "";
	for (int i = 0; names[i]; i++) {
		if (cJSON_IsString(v) && !strcmp(v->valuestring, names[i])) {
			*out = values[i];
			return 0;
		}
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
	}
	return err_set("%s.%s: expected one of %s%s", where, key, list, null_value >= 0 ? " or null" : "");
}

static int apply_optimizer(optim_config *c, const cJSON *o, const char *where)
{
	static const char *const keys[] = {"type", "lr", "momentum", "weight_decay", NULL};
	static const char *const types[] = {"SGD", NULL};
	static const int tvals[] = {0};
	int type = 0;
	return cfg_check_keys(o, where, keys) < 0 || get_choice(o, "type", where, types, tvals, -1, &type) < 0 ||
			       cfg_num(o, "lr", where, 0, 1e3, &c->lr) < 0 ||
			       cfg_num(o, "momentum", where, 0, 1, &c->momentum) < 0 ||
			       cfg_num(o, "weight_decay", where, 0, 1, &c->weight_decay) < 0
		       ? -1
		       : 0;
}

static int apply_lr_config(optim_config *c, const cJSON *o, const char *where)
{
	static const char *const keys[] = {"policy", "warmup", "warmup_iters", "warmup_ratio", "min_lr_ratio",
					   "min_lr", "step", "gamma", "by_epoch", NULL};
	static const char *const policies[] = {"cosine", "CosineAnnealing", "step", "fixed", NULL};
	static const int pvals[] = {LR_COSINE, LR_COSINE, LR_STEP, LR_FIXED};
	static const char *const warmups[] = {"linear", "constant", "exp", NULL};
	static const int wvals[] = {WARMUP_LINEAR, WARMUP_CONSTANT, WARMUP_EXP};
	int policy = (int)c->policy, warmup = (int)c->warmup;
	if (cfg_check_keys(o, where, keys) < 0 || get_choice(o, "policy", where, policies, pvals, -1, &policy) < 0 ||
	    get_choice(o, "warmup", where, warmups, wvals, WARMUP_NONE, &warmup) < 0 ||
	    get_long(o, "warmup_iters", where, 0, 1L << 40, &c->warmup_iters) < 0 ||
	    cfg_num(o, "warmup_ratio", where, 0, 1, &c->warmup_ratio) < 0 ||
	    cfg_num(o, "gamma", where, 0, 1e3, &c->gamma) < 0 || cfg_bool(o, "by_epoch", where, &c->by_epoch) < 0)
		return -1;
	c->policy = (enum lr_policy)policy;
	c->warmup = (enum lr_warmup)warmup;
	/* mmcv's cosine takes exactly one of min_lr and min_lr_ratio */
	const cJSON *mr = cJSON_GetObjectItemCaseSensitive(o, "min_lr_ratio");
	const cJSON *ml = cJSON_GetObjectItemCaseSensitive(o, "min_lr");
	if (mr && ml && c->policy == LR_COSINE)
		return err_set("%s: give min_lr or min_lr_ratio, not both", where);
	if (cfg_num(o, "min_lr_ratio", where, 0, 1, &c->min_lr_ratio) < 0 || cfg_num(o, "min_lr", where, 0, 1e3, &c->min_lr) < 0)
		return -1;
	if (mr)
		c->min_lr = -1;
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "step");
	if (st && cJSON_IsNumber(st)) {
		if (get_long(o, "step", where, 1, 1L << 40, &c->step_every) < 0)
			return -1;
		c->nmilestones = 0;
	} else if (st) {
		int n = cJSON_IsArray(st) ? cJSON_GetArraySize(st) : -1;
		if (n < 1 || n > OPTIM_MAX_MILESTONES)
			return err_set("%s.step: expected an integer or an array of 1 to %d increasing integers", where,
				       OPTIM_MAX_MILESTONES);
		int i = 0;
		const cJSON *it;
		cJSON_ArrayForEach(it, st) {
			double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
			if (v < 0 || v != floor(v) || v > (double)(1L << 40) || (i && v <= (double)c->milestones[i - 1]))
				return err_set("%s.step[%d]: expected increasing integers >= 0", where, i);
			c->milestones[i++] = (long)v;
		}
		c->nmilestones = n;
	}
	if (c->policy == LR_STEP && !st && !c->nmilestones && !c->step_every)
		return err_set("%s: policy \"step\" needs \"step\" (milestones)", where);
	return 0;
}

int optim_config_apply(optim_config *c, const cJSON *train, const char *where)
{
	static const char *const keys[] = {"optimizer", "lr_config", "epochs", "batch", "checkpoint_every",
					   "bn_momentum", NULL};
	if (!cJSON_IsObject(train))
		return err_set("%s: expected an object", where);
	optim_config n = *c;
	char sub[512];
	if (cfg_check_keys(train, where, keys) < 0 || get_long(train, "epochs", where, 1, 1L << 30, &n.epochs) < 0 ||
	    get_long(train, "batch", where, 1, 1L << 20, &n.batch) < 0 ||
	    get_long(train, "checkpoint_every", where, 0, 1L << 40, &n.checkpoint_every) < 0 ||
	    cfg_num(train, "bn_momentum", where, 0, 1, &n.bn_momentum) < 0)
		return -1;
	const cJSON *o;
	snprintf(sub, sizeof sub, "%s.optimizer", where);
	if (cfg_object(train, "optimizer", where, NULL, &o) < 0 || (o && apply_optimizer(&n, o, sub) < 0))
		return -1;
	snprintf(sub, sizeof sub, "%s.lr_config", where);
	if (cfg_object(train, "lr_config", where, NULL, &o) < 0 || (o && apply_lr_config(&n, o, sub) < 0))
		return -1;
	*c = n;
	return 0;
}

/* Adds a member to o; 0, or -1 (err) out of memory (o or v NULL too; v is freed). */
static int add(cJSON *o, const char *key, cJSON *v)
{
	if (!o || !v || !cJSON_AddItemToObject(o, key, v)) {
		cJSON_Delete(v);
		return err_set("out of memory");
	}
	return 0;
}

/* lr_config.step: the milestones, or the period. */
static cJSON *step_json(const optim_config *c)
{
	if (!c->nmilestones)
		return cJSON_CreateNumber((double)c->step_every);
	double v[OPTIM_MAX_MILESTONES];
	for (int i = 0; i < c->nmilestones; i++)
		v[i] = (double)c->milestones[i];
	return cJSON_CreateDoubleArray(v, c->nmilestones);
}

cJSON *optim_config_json(const optim_config *c)
{
	static const char *const policies[] = {[LR_FIXED] = "fixed", [LR_STEP] = "step", [LR_COSINE] = "cosine"};
	static const char *const warmups[] = {[WARMUP_LINEAR] = "linear", [WARMUP_CONSTANT] = "constant",
					      [WARMUP_EXP] = "exp"};
	cJSON *t = cJSON_CreateObject(), *o = NULL, *l = NULL;
	/* each add() stops the chain at the first failure; t owns o and l once added */
	int ok = add(t, "optimizer", o = cJSON_CreateObject()) == 0 && add(t, "lr_config", l = cJSON_CreateObject()) == 0 &&
		 add(t, "epochs", cJSON_CreateNumber((double)c->epochs)) == 0 &&
		 add(t, "batch", cJSON_CreateNumber((double)c->batch)) == 0 &&
		 add(t, "checkpoint_every", cJSON_CreateNumber((double)c->checkpoint_every)) == 0 &&
		 add(t, "bn_momentum", cJSON_CreateNumber(c->bn_momentum)) == 0 &&
		 add(o, "type", cJSON_CreateString("SGD")) == 0 && add(o, "lr", cJSON_CreateNumber(c->lr)) == 0 &&
		 add(o, "momentum", cJSON_CreateNumber(c->momentum)) == 0 &&
		 add(o, "weight_decay", cJSON_CreateNumber(c->weight_decay)) == 0 &&
		 add(l, "policy", cJSON_CreateString(policies[c->policy])) == 0 &&
		 add(l, "warmup", c->warmup == WARMUP_NONE ? cJSON_CreateNull() : cJSON_CreateString(warmups[c->warmup])) == 0 &&
		 add(l, "warmup_iters", cJSON_CreateNumber((double)c->warmup_iters)) == 0 &&
		 add(l, "warmup_ratio", cJSON_CreateNumber(c->warmup_ratio)) == 0 &&
		 /* a given min_lr_ratio unsets min_lr: only one of them stands */
		 add(l, c->min_lr >= 0 ? "min_lr" : "min_lr_ratio",
		     cJSON_CreateNumber(c->min_lr >= 0 ? c->min_lr : c->min_lr_ratio)) == 0 &&
		 (!c->nmilestones && !c->step_every ? 1 : add(l, "step", step_json(c)) == 0) &&
		 add(l, "gamma", cJSON_CreateNumber(c->gamma)) == 0 && add(l, "by_epoch", cJSON_CreateBool(c->by_epoch)) == 0;
	if (!ok) {
		cJSON_Delete(t);
		return NULL;
	}
	return t;
}

cJSON *config_resolved(const char *path)
{
	cJSON *j = path ? config_read(path) : cJSON_CreateObject();
	if (!j) {
		if (!path)
			err_set("out of memory");
		return NULL;
	}
	optim_config c;
	optim_config_default(&c);
	char where[4200];
	snprintf(where, sizeof where, "%s: train", path ? path : "defaults");
	const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "train");
	cJSON *train = tr && optim_config_apply(&c, tr, where) < 0 ? NULL : optim_config_json(&c);
	if (!train) {
		cJSON_Delete(j);
		return NULL;
	}
	if (tr)
		cJSON_ReplaceItemInObjectCaseSensitive(j, "train", train);
	else if (add(j, "train", train) < 0) {
		cJSON_Delete(j);
		return NULL;
	}
	/* TI's QAT: a quarter of the epochs at a tenth of the LR, for what "qat" leaves out */
	cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "qat");
	if (!q && add(j, "qat", q = cJSON_CreateObject()) < 0) {
		cJSON_Delete(j);
		return NULL;
	}
	if (cJSON_IsObject(q) &&
	    ((!cJSON_GetObjectItemCaseSensitive(q, "epochs") &&
	      add(q, "epochs", cJSON_CreateNumber((double)(c.epochs / 4 > 0 ? c.epochs / 4 : 1))) < 0) ||
	     (!cJSON_GetObjectItemCaseSensitive(q, "lr") && add(q, "lr", cJSON_CreateNumber(c.lr / 10)) < 0))) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

int optim_config_check(const optim_config *c, long max_iters)
{
	if (!c->by_epoch && c->policy == LR_COSINE && max_iters <= 0)
		return err_set("lr_config: cosine by iteration (by_epoch false) needs the run's length: "
			       "--max-steps, or --iters-per-epoch with epochs");
	return 0;
}

/* ---------------------------------------------------------------- schedule */

/* mmcv's get_regular_lr: the policy's lr at progress (epochs or iterations). */
static double regular_lr(const optim_config *c, double progress, double max_progress)
{
	switch (c->policy) {
	case LR_STEP: {
		long e = 0;
		if (c->nmilestones) {
			e = c->nmilestones;
			for (int i = 0; i < c->nmilestones; i++)
				if (progress < (double)c->milestones[i]) {
					e = i;
					break;
				}
		} else {
			e = (long)(progress / (double)c->step_every);
		}
		double lr = c->lr * pow(c->gamma, (double)e);
		return c->min_lr >= 0 && lr < c->min_lr ? c->min_lr : lr;
	}
	case LR_COSINE: {
		double target = c->min_lr >= 0 ? c->min_lr : c->lr * c->min_lr_ratio;
		double cos_out = cos(M_PI * (progress / max_progress)) + 1;
		return target + 0.5 * (c->lr - target) * cos_out;
	}
	case LR_FIXED:
	default:
		return c->lr;
	}
}

double lr_at(const optim_config *c, long iter, long epoch, long max_iters)
{
	double lr = c->by_epoch ? regular_lr(c, (double)epoch, (double)c->epochs)
				: regular_lr(c, (double)iter, (double)max_iters);
	if (c->warmup == WARMUP_NONE || iter >= c->warmup_iters)
		return lr;
	double t = (double)iter / (double)c->warmup_iters;
	switch (c->warmup) {
	case WARMUP_CONSTANT:
		return lr * c->warmup_ratio;
	case WARMUP_EXP:
		return lr * pow(c->warmup_ratio, 1 - t);
	case WARMUP_LINEAR:
	default:
		return lr * (1 - (1 - t) * (1 - c->warmup_ratio));
	}
}

/* ---------------------------------------------------------------- sgd */

struct sgd {
	record *params;   /* owned tensors */
	record *momentum; /* kind "optim": one tensor per trainable, in order, after the first step */
	int ntrain, nbn;
	int *train;       /* params tensor index of each trainable */
	struct bn_slot {
		int mean, var; /* params tensor indices of running_mean / running_var */
	} *bn;
	int *grad_of;     /* per step: grads tensor index of each trainable */
	int *bmean, *bvar; /* per step: grads tensor index of each BN's batch stats, or -1 */
};

int param_is_running_stat(const char *name)
{
	return ends_with(name, ".running_mean") || ends_with(name, ".running_var") ||
	       ends_with(name, ".num_batches_tracked");
}

static int is_trainable(const tensor *t)
{
	return t->dtype == DT_F32 && !param_is_running_stat(t->name);
}

static int find_index(const record *r, const char *name)
{
	for (int i = 0; i < r->ntensors; i++)
		if (!strcmp(r->tensors[i].name, name))
			return i;
	return -1;
}

/* A deep copy of r's tensors and meta under another kind. */
static record *copy_record(const record *r, const char *kind)
{
	record *c = record_new(kind);
	if (!c)
		return NULL;
	cJSON_Delete(c->meta);
	if (!(c->meta = cJSON_Duplicate(r->meta, 1))) {
		c->meta = cJSON_CreateObject();
		record_free(c);
		err_set("out of memory");
		return NULL;
	}
	for (int i = 0; i < r->ntensors; i++) {
		const tensor *t = &r->tensors[i];
		tensor *n = record_add(c, t->name, t->dtype, t->ndim, t->shape);
		if (!n) {
			record_free(c);
			return NULL;
		}
		memcpy(n->data, t->data, tensor_nbytes(t));
	}
	return c;
}

void sgd_free(sgd *s)
{
	if (!s)
		return;
	record_free(s->params);
	record_free(s->momentum);
	free(s->train);
	free(s->bn);
	free(s->grad_of);
	free(s->bmean);
	free(s->bvar);
	free(s);
}

sgd *sgd_new(const record *params)
{
	sgd *s = calloc(1, sizeof *s);
	int n = params->ntensors;
	if (!s || !(s->train = calloc((size_t)n + 1, sizeof *s->train)) || !(s->bn = calloc((size_t)n + 1, sizeof *s->bn)) ||
	    !(s->grad_of = calloc((size_t)n + 1, sizeof *s->grad_of)) ||
	    !(s->bmean = calloc((size_t)n + 1, sizeof *s->bmean)) || !(s->bvar = calloc((size_t)n + 1, sizeof *s->bvar))) {
		sgd_free(s);
		err_set("out of memory");
		return NULL;
	}
	if (!(s->params = copy_record(params, "params")) || !(s->momentum = record_new("optim"))) {
		sgd_free(s);
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		const tensor *t = &params->tensors[i];
		if (is_trainable(t)) {
			s->train[s->ntrain++] = i;
			continue;
		}
		if (!ends_with(t->name, ".running_mean"))
			continue;
		/* BN statistics come in pairs of f32 vectors of one length */
		char var[TENSOR_NAMELEN + 16];
		snprintf(var, sizeof var, "%.*s.running_var", (int)(strlen(t->name) - strlen(".running_mean")), t->name);
		int v = find_index(params, var);
		if (t->dtype != DT_F32 || v < 0 || params->tensors[v].dtype != DT_F32 || !tensor_same_shape(t, &params->tensors[v])) {
			err_set("params: '%s' needs an f32 '%s' of its shape", t->name, var);
			sgd_free(s);
			return NULL;
		}
		s->bn[s->nbn].mean = i;
		s->bn[s->nbn++].var = v;
	}
	for (int i = 0; i < n; i++) {
		const tensor *t = &params->tensors[i];
		if (ends_with(t->name, ".running_var")) {
			char mean[TENSOR_NAMELEN + 16];
			snprintf(mean, sizeof mean, "%.*s.running_mean", (int)(strlen(t->name) - strlen(".running_var")),
				 t->name);
			if (find_index(params, mean) < 0) {
				err_set("params: '%s' has no '%s'", t->name, mean);
				sgd_free(s);
				return NULL;
			}
		}
	}
	return s;
}

/* Adds a zeroed momentum buffer per trainable tensor, in order. */
static int start_momentum(sgd *s)
{
	for (int k = 0; k < s->ntrain; k++) {
		const tensor *p = &s->params->tensors[s->train[k]];
		if (!record_add(s->momentum, p->name, DT_F32, p->ndim, p->shape))
			return -1;
	}
	return 0;
}

sgd *sgd_from_checkpoint(const record *params, const record *optim)
{
	sgd *s = sgd_new(params);
	if (!s)
		return NULL;
	if (optim->ntensors == 0)
		return s;
	if (optim->ntensors != s->ntrain) {
		err_set("checkpoint: %d momentum buffers for %d trainable tensors", optim->ntensors, s->ntrain);
		sgd_free(s);
		return NULL;
	}
	if (start_momentum(s) < 0) {
		sgd_free(s);
		return NULL;
	}
	for (int k = 0; k < s->ntrain; k++) {
		tensor *m = &s->momentum->tensors[k];
		const tensor *b = record_find(optim, m->name);
		if (!b || b->dtype != DT_F32 || !tensor_same_shape(b, m)) {
			err_set("checkpoint: no f32 momentum buffer '%s' of its parameter's shape", m->name);
			sgd_free(s);
			return NULL;
		}
		memcpy(m->data, b->data, tensor_nbytes(m));
	}
	return s;
}

record *sgd_params(sgd *s)
{
	return s->params;
}

record *sgd_momentum(sgd *s)
{
	return s->momentum;
}

int sgd_ntrainable(const sgd *s)
{
	return s->ntrain;
}

int sgd_nbn(const sgd *s)
{
	return s->nbn;
}

/* Which parameter each gradient tensor belongs to; every check before any change. */
static int match_grads(sgd *s, const record *g)
{
	char d1[128], d2[128];
	for (int k = 0; k < s->ntrain; k++)
		s->grad_of[k] = -1;
	for (int b = 0; b < s->nbn; b++)
		s->bmean[b] = s->bvar[b] = -1;
	for (int i = 0; i < g->ntensors; i++) {
		const tensor *t = &g->tensors[i];
		int is_mean = ends_with(t->name, ".batch_mean"), is_var = ends_with(t->name, ".batch_var");
		if (is_mean || is_var) {
			size_t plen = strlen(t->name) - strlen(is_mean ? ".batch_mean" : ".batch_var");
			int b = 0;
			for (; b < s->nbn; b++) {
				const char *rm = s->params->tensors[s->bn[b].mean].name;
				if (strlen(rm) == plen + strlen(".running_mean") && !strncmp(rm, t->name, plen))
					break;
			}
			if (b == s->nbn)
				return err_set("grads: '%s' names no BN layer with running statistics", t->name);
			const tensor *rm = &s->params->tensors[s->bn[b].mean];
			if (t->dtype != DT_F32 || !tensor_same_shape(t, rm))
				return err_set("grads: '%s' is %s, its running statistics are %s", t->name,
					       tensor_describe(t, d1, sizeof d1), tensor_describe(rm, d2, sizeof d2));
			*(is_mean ? &s->bmean[b] : &s->bvar[b]) = i;
			continue;
		}
		int k = 0;
		for (; k < s->ntrain; k++)
			if (!strcmp(s->params->tensors[s->train[k]].name, t->name))
				break;
		if (k == s->ntrain)
			return err_set("grads: '%s' is not a trainable parameter", t->name);
		const tensor *p = &s->params->tensors[s->train[k]];
		if (t->dtype != DT_F32 || !tensor_same_shape(t, p))
			return err_set("grads: '%s' is %s, the parameter is %s", t->name, tensor_describe(t, d1, sizeof d1),
				       tensor_describe(p, d2, sizeof d2));
		s->grad_of[k] = i;
	}
	for (int k = 0; k < s->ntrain; k++)
		if (s->grad_of[k] < 0)
			return err_set("grads: no gradient for '%s'", s->params->tensors[s->train[k]].name);
	for (int b = 0; b < s->nbn; b++)
		if ((s->bmean[b] < 0) != (s->bvar[b] < 0))
			return err_set("grads: '%s' needs both batch_mean and batch_var", s->params->tensors[s->bn[b].mean].name);
	return 0;
}

/* torch.optim.SGD on one tensor, float32 in torch's order: the weight decay add is
 * torch's add(alpha) (a fused multiply-add in its vectorised CPU kernel), the momentum
 * update is mul_ then add_ (two roundings), the step add_(alpha=-lr) fused again.
 * The build must not contract buf * momentum + d into an fma (-std=c11 does not). */
static void sgd_update(float *p, float *buf, const float *g, int64_t n, float lr, float momentum, float wd, int first)
{
	float neg_lr = -lr;
	for (int64_t i = 0; i < n; i++) {
		float d = wd != 0 ? fmaf(p[i], wd, g[i]) : g[i];
		if (buf) {
			if (first) {
				buf[i] = d;
			} else {
				float decayed = buf[i] * momentum;
				buf[i] = decayed + d;
			}
			d = buf[i];
		}
		p[i] = fmaf(d, neg_lr, p[i]);
	}
}

/* torch's running-statistics update as F.batch_norm does it on the CPU (torch 1.13):
 * float32, each product rounded, then the sum (checked by tests/ref_optim.py). */
static void bn_update(float *running, const float *batch, int64_t n, double momentum)
{
	float m = (float)momentum, keep = (float)(1 - momentum);
	for (int64_t i = 0; i < n; i++) {
		float fresh = m * batch[i], old = keep * running[i];
		running[i] = fresh + old;
	}
}

int sgd_step(sgd *s, const record *grads, double lr, const optim_config *c)
{
	if (match_grads(s, grads) < 0)
		return -1;
	int use_momentum = c->momentum != 0, first = 0;
	if (use_momentum && s->momentum->ntensors == 0) {
		if (start_momentum(s) < 0)
			return -1;
		first = 1;
	}
	for (int k = 0; k < s->ntrain; k++) {
		tensor *p = &s->params->tensors[s->train[k]];
		const tensor *g = &grads->tensors[s->grad_of[k]];
		float *buf = use_momentum ? s->momentum->tensors[k].data : NULL;
		sgd_update(p->data, buf, g->data, tensor_numel(p), (float)lr, (float)c->momentum, (float)c->weight_decay,
			   first);
	}
	for (int b = 0; b < s->nbn; b++) {
		if (s->bmean[b] < 0)
			continue;
		tensor *rm = &s->params->tensors[s->bn[b].mean], *rv = &s->params->tensors[s->bn[b].var];
		bn_update(rm->data, grads->tensors[s->bmean[b]].data, tensor_numel(rm), c->bn_momentum);
		bn_update(rv->data, grads->tensors[s->bvar[b]].data, tensor_numel(rv), c->bn_momentum);
	}
	return 0;
}
