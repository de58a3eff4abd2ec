/* model: the model's lifecycle (model.h): building through arch.c, parameters and
 * their init, the params / grads / pred records, counts and shapes. */
#include "nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/err.h"
#include "core/str.h"
#include "nn/graph.h"

model *model_new(const cJSON *sec, const char *where)
{
	model *m = calloc(1, sizeof *m);
	if (!m) {
		err_set("out of memory");
		return NULL;
	}
	if (arch_build(m, sec, where) < 0) {
		model_free(m);
		return NULL;
	}
	snprintf(m->name, sizeof m->name, "model");
	return m;
}

model *model_load(const char *path)
{
	cJSON *j = config_read(path);
	if (!j)
		return NULL;
	char where[512];
	snprintf(where, sizeof where, "%s: model", path);
	const cJSON *sec = cJSON_GetObjectItemCaseSensitive(j, "model");
	model *m = NULL;
	if (!sec)
		err_set("%s: no \"model\" section", path);
	else
		m = model_new(sec, where);
	if (m) {
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(j, "name");
		if (cJSON_IsString(nm))
			model_set_name(m, nm->valuestring);
		else {
			const char *base = strrchr(path, '/');
			model_set_name(m, base ? base + 1 : path);
		}
	}
	cJSON_Delete(j);
	return m;
}

void model_free(model *m)
{
	if (!m)
		return;
	if (m->q.teardown)
		m->q.teardown(m); /* the quantisation layer's state first */
	graph_free(m);
	free(m);
}

void model_set_name(model *m, const char *name)
{
	snprintf(m->name, sizeof m->name, "%s", name);
}

const char *model_name(const model *m)
{
	return m->name;
}

/* ---------------------------------------------------------------- parameters */

int model_nparams(const model *m)
{
	return m->nparams;
}

const model_param *model_param_at(const model *m, int i)
{
	return &m->params_info[i];
}

float *model_param_data(model *m, int i)
{
	return m->params + m->params_info[i].offset;
}

size_t model_param_floats(const model *m)
{
	size_t n = 0;
	for (int i = 0; i < m->nparams; i++)
		n += m->params_info[i].count;
	return n;
}

int64_t model_trainable_count(const model *m)
{
	int64_t n = 0;
	for (int i = 0; i < m->nparams; i++)
		if (m->params_info[i].kind <= PK_BIAS)
			n += (int64_t)m->params_info[i].count;
	return n;
}

void model_init_params(model *m, uint64_t seed)
{
	for (int i = 0; i < m->nparams; i++) {
		const model_param *p = &m->params_info[i];
		float *d = m->params + p->offset;
		rng r;
		rng_seed3(&r, seed, (uint64_t)i, 0x9a7a);
		if (p->conv && m->init_mmdet) {
			if (p->kind == PK_BIAS) {
				memset(d, 0, p->count * sizeof *d);
			} else if (p->part == PART_BACKBONE) {
				/* Kaiming normal, fan_out, gain sqrt(2); Box-Muller on (0, 1] x [0, 1) */
				double sd = sqrt(2.0 / p->fan_out);
				for (size_t j = 0; j < p->count; j++) {
					double u = 1.0 - rng_double(&r), v = rng_double(&r);
					d[j] = (float)(sd * sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
				}
			} else {
				double bound = sqrt(6.0 / (p->fan_in + p->fan_out)); /* Xavier uniform, gain 1 */
				for (size_t j = 0; j < p->count; j++)
					d[j] = (float)rng_uniform(&r, -bound, bound);
			}
		} else if (p->conv) {
			/* kaiming_uniform(a = sqrt(5)): gain sqrt(2 / 6), bound gain * sqrt(3 / fan_in)
			 * = 1 / sqrt(fan_in); the bias has the same bound */
			double bound = 1.0 / sqrt((double)p->fan_in);
			for (size_t j = 0; j < p->count; j++)
				d[j] = (float)rng_uniform(&r, -bound, bound);
		} else {
			for (size_t j = 0; j < p->count; j++)
				d[j] = p->init;
		}
	}
	m->folded_dirty = 1;
}

static void describe(char *buf, size_t len, int ndim, const int64_t *shape)
{
	size_t o = (size_t)snprintf(buf, len, "f32[");
	for (int i = 0; i < ndim && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)shape[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
}

/* Parameter i's tensor in r: records written from a model (model_params_record, the
 * optimizer) hold them in parameter order, so position i is tried first. */
static tensor *param_tensor(const model *m, const record *r, int i)
{
	const char *name = m->params_info[i].name;
	if (i < r->ntensors && !strcmp(r->tensors[i].name, name))
		return &r->tensors[i];
	return record_find(r, name);
}

int model_load_params(model *m, const record *r)
{
	char want[96], got[96];
	if (strcmp(r->kind, "params"))
		return err_set("expected a params record, got '%s'", r->kind);
	int in_order = 1;
	for (int i = 0; i < m->nparams; i++) {
		const model_param *p = &m->params_info[i];
		tensor *t = param_tensor(m, r, i);
		in_order &= i < r->ntensors && t == &r->tensors[i];
		describe(want, sizeof want, p->ndim, p->shape);
		if (!t)
			return err_set("params: missing tensor '%s' (%s)", p->name, want);
		int ok = t->dtype == DT_F32 && t->ndim == p->ndim;
		for (int j = 0; ok && j < p->ndim; j++)
			ok = t->shape[j] == p->shape[j];
		if (!ok)
			return err_set("params: tensor '%s' is %s, expected %s", p->name, tensor_describe(t, got, sizeof got),
				       want);
	}
	/* every parameter found at its own position: any other tensor lies beyond them */
	for (int k = in_order ? m->nparams : 0; k < r->ntensors; k++) {
		const char *nm = r->tensors[k].name;
		if (ends_with(nm, ".num_batches_tracked"))
			continue;
		int found = 0;
		for (int i = 0; i < m->nparams && !found; i++)
			found = !strcmp(m->params_info[i].name, nm);
		if (!found)
			return err_set("params: unexpected tensor '%s' (not a parameter of this model)", nm);
	}
	for (int i = 0; i < m->nparams; i++) {
		const model_param *p = &m->params_info[i];
		memcpy(m->params + p->offset, param_tensor(m, r, i)->data, p->count * sizeof(float));
	}
	m->folded_dirty = 1;
	return 0;
}

record *model_params_record(const model *m, long step)
{
	record *r = record_new("params");
	if (!r)
		return NULL;
	for (int i = 0; i < m->nparams; i++) {
		const model_param *p = &m->params_info[i];
		tensor *t = record_add(r, p->name, DT_F32, p->ndim, p->shape);
		if (!t) {
			record_free(r);
			return NULL;
		}
		memcpy(t->data, m->params + p->offset, p->count * sizeof(float));
	}
	cJSON_AddNumberToObject(r->meta, "step", (double)step);
	cJSON_AddStringToObject(r->meta, "config", m->name);
	return r;
}

record *model_grads_record(const model *m)
{
	if (!m->grads) {
		err_set("model: no gradients before a training plan");
		return NULL;
	}
	record *r = record_new("grads");
	if (!r)
		return NULL;
	for (int i = 0; i < m->nparams; i++) {
		const model_param *p = &m->params_info[i];
		if (p->kind > PK_BIAS)
			continue;
		tensor *t = record_add(r, p->name, DT_F32, p->ndim, p->shape);
		if (!t)
			goto fail;
		memcpy(t->data, m->grads + p->offset, p->count * sizeof(float));
	}
	for (int i = 0; i < m->nnodes; i++) {
		const gnode *nd = &m->nodes[i];
		if (nd->op != OP_BN || nd->skip)
			continue; /* a BN folded for quantisation keeps its running statistics */
		char name[TENSOR_NAMELEN + 16];
		int64_t s[1] = {nd->c};
		snprintf(name, sizeof name, "%s.batch_mean", nd->name);
		tensor *t = record_add(r, name, DT_F32, 1, s);
		if (!t)
			goto fail;
		memcpy(t->data, nd->mean, (size_t)nd->c * sizeof(float));
		snprintf(name, sizeof name, "%s.batch_var", nd->name);
		if (!(t = record_add(r, name, DT_F32, 1, s)))
			goto fail;
		memcpy(t->data, nd->varu, (size_t)nd->c * sizeof(float));
	}
	return r;
fail:
	record_free(r);
	return NULL;
}

/* ---------------------------------------------------------------- counts */

const char *model_part_name(enum model_part p)
{
	static const char *const names[PART_COUNT] = {"backbone", "neck", "bbox_head"};
	return p < PART_COUNT ? names[p] : "?";
}

static int64_t node_macs(const gnode *nd)
{
	if (nd->op != OP_CONV)
		return 0;
	return (int64_t)nd->c * nd->h * nd->w * nd->k * nd->k * (nd->cd.c / nd->groups);
}

static int64_t node_params(const model *m, const gnode *nd)
{
	int64_t n = 0;
	if (nd->wparam >= 0)
		n += (int64_t)m->params_info[nd->wparam].count;
	if (nd->bparam >= 0)
		n += (int64_t)m->params_info[nd->bparam].count;
	return n;
}

int model_count(model *m, int h, int w, model_counts *c)
{
	memset(c, 0, sizeof *c);
	int train = m->train;
	m->train = 0;
	int rc = g_shapes(m, 1, h, w);
	m->train = train;
	if (rc < 0)
		return -1;
	for (int i = 1; i < m->nnodes; i++) {
		const gnode *nd = &m->nodes[i];
		int64_t p = node_params(m, nd), mac = node_macs(nd);
		c->params[nd->part] += p;
		c->params_total += p;
		c->macs[nd->part] += mac;
		c->macs_total += mac;
		c->convs += nd->op == OP_CONV;
	}
	c->nodes = m->nnodes - 1;
	c->anchors = m->nodes[m->outputs[0]].h;
	/* a plan for another shape stays valid only if it is re-made */
	if (m->planned)
		g_shapes(m, m->pass_n, m->plan_h, m->plan_w);
	return 0;
}

int model_num_classes(const model *m)
{
	return m->num_classes;
}

int model_noutputs(const model *m)
{
	return m->noutputs;
}

const char *model_output_name(const model *m, int i)
{
	return m->output_names[i];
}

void model_output_shape(const model *m, int i, int64_t shape[3])
{
	const gnode *nd = &m->nodes[m->outputs[i]];
	shape[0] = m->planned ? m->plan_n : nd->n; /* the batch's, also when run image by image */
	shape[1] = nd->h;
	shape[2] = nd->c;
}

int model_node_info(const model *m, int i, const char **name, const char **op, char *shape, size_t len,
		    int64_t *params, int64_t *macs, enum model_part *part)
{
	if (i < 0 || i + 1 >= m->nnodes)
		return -1;
	const gnode *nd = &m->nodes[i + 1];
	*name = nd->name;
	*op = graph_op_name(nd->op);
	if (nd->op == OP_FLATTEN)
		snprintf(shape, len, "[%d,%d]", nd->h, nd->c);
	else
		snprintf(shape, len, "[%d,%d,%d]", nd->c, nd->h, nd->w);
	*params = node_params(m, nd);
	*macs = node_macs(nd);
	*part = nd->part;
	return 0;
}

/* ---------------------------------------------------------------- records of the tool */

int model_batch_image(const record *batch, const tensor **image)
{
	const tensor *t = record_expect(batch, "image", DT_F32, 4);
	if (!t)
		return -1;
	if (t->shape[1] != 3 || t->shape[0] < 1 || t->shape[2] < 1 || t->shape[3] < 1)
		return err_set("image: expected f32[N,3,H,W], got [%lld,%lld,%lld,%lld]", (long long)t->shape[0],
			       (long long)t->shape[1], (long long)t->shape[2], (long long)t->shape[3]);
	*image = t;
	return 0;
}

record *model_pred_record(const model *m, const record *batch, float **outputs)
{
	const tensor *img;
	if (model_batch_image(batch, &img) < 0)
		return NULL;
	record *p = record_new("pred");
	if (!p)
		return NULL;
	for (int i = 0; i < m->noutputs; i++) {
		int64_t sh[3];
		model_output_shape(m, i, sh);
		tensor *t = record_add(p, m->output_names[i], DT_F32, 3, sh);
		if (!t)
			goto fail;
		outputs[i] = t->data;
	}
	for (int k = 0; k < batch->ntensors; k++) {
		const tensor *s = &batch->tensors[k];
		if (!strcmp(s->name, "image"))
			continue;
		if (record_find(p, s->name)) {
			err_set("batch tensor '%s' clashes with a model output", s->name);
			goto fail;
		}
		tensor *t = record_add(p, s->name, s->dtype, s->ndim, s->shape);
		if (!t)
			goto fail;
		memcpy(t->data, s->data, tensor_nbytes(s));
	}
	cJSON *meta = cJSON_Duplicate(batch->meta, 1);
	if (!meta) {
		err_set("out of memory");
		goto fail;
	}
	cJSON_Delete(p->meta);
	p->meta = meta;
	cJSON *size = cJSON_GetObjectItemCaseSensitive(meta, "size");
	if (cJSON_IsNumber(size)) {
		cJSON_SetNumberValue(size, (double)img->shape[2]);
	} else {
		cJSON_DeleteItemFromObjectCaseSensitive(meta, "size");
		if (!cJSON_AddNumberToObject(meta, "size", (double)img->shape[2])) {
			err_set("out of memory");
			goto fail;
		}
	}
	return p;
fail:
	record_free(p);
	return NULL;
}

int model_grad_tensors(const model *m, const record *grad, const float **doutputs)
{
	if (strcmp(grad->kind, "grad"))
		return err_set("expected a grad record, got '%s'", grad->kind);
	char a[96], b[96];
	for (int i = 0; i < m->noutputs; i++) {
		int64_t sh[3];
		model_output_shape(m, i, sh);
		const tensor *t = record_find(grad, m->output_names[i]);
		tensor want = {.dtype = DT_F32, .ndim = 3, .shape = {sh[0], sh[1], sh[2]}};
		if (!t)
			return err_set("no tensor '%s' (expected %s)", m->output_names[i], tensor_describe(&want, a, sizeof a));
		if (t->dtype != DT_F32 || t->ndim != 3 || t->shape[0] != sh[0] || t->shape[1] != sh[1] ||
		    t->shape[2] != sh[2])
			return err_set("tensor '%s' is %s, expected %s", m->output_names[i], tensor_describe(t, a, sizeof a),
				       tensor_describe(&want, b, sizeof b));
		doutputs[i] = t->data;
	}
	return 0;
}
