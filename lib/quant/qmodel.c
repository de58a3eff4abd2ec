/* qmodel: the graph's quantisation points, ranges, stats and quantised parameters
 * (qmodel.h, kernels/quant.h; docs/quantisation.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "nn/graph.h"
#include "quant/qmodel.h"
#include "kernels/quant.h"
#include "core/stream.h"

/* Is node i's value quantised? Every value a layer computes, except a conv or BN whose
 * only consumer is the BN or activation fused with it (the point follows that), an
 * upsample (it keeps its input's) and the flattened outputs (made of head convs). */
static int is_point(const model *m, int i)
{
	const gnode *nd = &m->nodes[i];
	switch (nd->op) {
	case OP_CONV:
	case OP_BN: {
		if (nd->nconsumers != 1 || i + 1 >= m->nnodes || m->nodes[i + 1].in[0] != i)
			return 1;
		enum op next = m->nodes[i + 1].op;
		return !((next == OP_BN && nd->op == OP_CONV) || next == OP_RELU || next == OP_RELU6);
	}
	case OP_INPUT:
	case OP_RELU:
	case OP_RELU6:
	case OP_ADD:
	case OP_CONCAT:
	case OP_MAXPOOL:
	case OP_L2NORM:
		return 1;
	default:
		return 0;
	}
}

/* Non-negative by construction: after relu, and what only moves such values. */
static int nonneg(const model *m, const gnode *nd)
{
	switch (nd->op) {
	case OP_RELU:
	case OP_RELU6:
		return 1;
	case OP_MAXPOOL:
	case OP_UPSAMPLE:
	case OP_ADD:
	case OP_CONCAT:
		for (int j = 0; j < nd->nin; j++)
			if (!m->nodes[nd->in[j]].nonneg)
				return 0;
		return 1;
	default:
		return 0;
	}
}

/* model_free's first step (struct model_quant): what model_quantize and the integer
 * plan allocated. */
static void quant_teardown(model *m)
{
	qexec_free(m);
	free(m->q.node);
	free(m->q.range);
	free(m->q.stat);
	free(m->q.act);
	free(m->q.cmeans);
	free(m->q.cfracs);
	free(m->q.float_params);
}

int model_quantize(model *m, int bits)
{
	if (bits < 2 || bits > 16)
		return err_set("quantise: %d bits (2 to 16)", bits);
	if (m->q.npoints)
		return err_set("quantise: the model is quantised already");
	if (m->planned)
		return err_set("quantise: before planning");
	int F = m->nnodes, np = 0;
	int *map = malloc((size_t)F * sizeof *map), *point = calloc((size_t)F, sizeof *point);
	gnode *nn = malloc((size_t)2 * F * sizeof *nn);
	if (!map || !point || !nn) {
		free(map);
		free(point);
		free(nn);
		return err_set("out of memory");
	}
	for (int i = 0; i < F; i++) {
		m->nodes[i].nonneg = nonneg(m, &m->nodes[i]);
		np += point[i] = is_point(m, i);
	}
	int k = 0;
	for (int i = 0; i < F; i++) {
		gnode *nd = &nn[k];
		*nd = m->nodes[i];
		for (int j = 0; j < nd->nin; j++)
			nd->in[j] = map[nd->in[j]];
		if (nd->ref >= 0)
			nd->ref = map[nd->ref];
		nd->qp = -1;
		map[i] = k++;
		if (!point[i])
			continue;
		nd->as_relu = nd->op == OP_RELU6;
		gnode *q = &nn[k];
		memset(q, 0, sizeof *q);
		q->op = OP_FQ;
		strcpy(q->name, nd->name);
		q->part = nd->part;
		q->nin = 1;
		q->in[0] = map[i];
		q->c = nd->c;
		q->nonneg = nd->nonneg;
		q->wparam = q->bparam = q->prm = q->prv = q->ref = -1;
		q->store = q->gstore = q->tmp = -1;
		map[i] = k++;
	}
	for (int i = 0; i < m->noutputs; i++)
		m->outputs[i] = map[m->outputs[i]];
	free(m->nodes);
	m->nodes = nn;
	m->nnodes = m->cap = k;
	free(map);
	free(point);
	g_count_consumers(m);

	m->q.bits = m->q.wbits = bits;
	m->q.npoints = np;
	m->q.teardown = quant_teardown;
	m->q.node = malloc((size_t)np * sizeof *m->q.node);
	m->q.range = calloc((size_t)np * 2, sizeof *m->q.range);
	m->q.stat = calloc((size_t)np * 2, sizeof *m->q.stat);
	m->q.act = calloc((size_t)np, sizeof *m->q.act);
	if (!m->q.node || !m->q.range || !m->q.stat || !m->q.act)
		return err_set("out of memory");
	for (int i = 0, p = 0; i < m->nnodes; i++)
		if (m->nodes[i].op == OP_FQ) {
			m->nodes[i].qp = p;
			m->q.node[p++] = i;
		}
	size_t nmean = 0;
	for (int i = 0; i < m->nnodes; i++)
		if (m->nodes[i].op == OP_CONV)
			nmean += (size_t)m->nodes[i].c;
	if (!(m->q.cmeans = calloc(nmean ? nmean : 1, sizeof *m->q.cmeans)) ||
	    !(m->q.cfracs = calloc(2 * nmean + 1, sizeof *m->q.cfracs)))
		return err_set("out of memory");
	/* each conv's input point (through upsamples), for its bias scale */
	for (int i = 0, off = 0; i < m->nnodes; i++) {
		gnode *nd = &m->nodes[i];
		if (nd->op != OP_CONV)
			continue;
		nd->cmean = m->q.cmeans + off;
		nd->cfrac = m->q.cfracs + 2 * off;
		off += nd->c;
		int s = nd->in[0];
		while (m->nodes[s].op == OP_UPSAMPLE)
			s = m->nodes[s].in[0];
		if (m->nodes[s].op != OP_FQ)
			return err_set("quantise: %s: input %s is not quantised", nd->name, m->nodes[s].name);
		nd->qp = m->nodes[s].qp;
	}
	return 0;
}

int model_set_per_channel_dw(model *m, int on)
{
	if (!m->q.bits)
		return err_set("per-channel weights: the model is not quantised");
	m->q.per_channel_dw = on;
	m->folded_dirty = 1;
	return 0;
}

int model_set_weight_bits(model *m, int bits)
{
	if (!m->q.bits)
		return err_set("weight bits: the model is not quantised");
	if (bits < 2 || bits > m->q.bits)
		return err_set("weight bits: %d (2 to the activations' %d)", bits, m->q.bits);
	m->q.wbits = bits;
	m->folded_dirty = 1;
	return 0;
}

int model_quantize_as(model *m, int bits, int weight_bits, int per_channel_dw)
{
	if (model_quantize(m, bits) < 0 || (weight_bits && model_set_weight_bits(m, weight_bits) < 0))
		return -1;
	return model_set_per_channel_dw(m, per_channel_dw);
}

int model_quant_points(const model *m)
{
	return m->q.npoints;
}

const char *model_quant_point_name(const model *m, int i)
{
	return i >= 0 && i < m->q.npoints ? m->nodes[m->q.node[i]].name : NULL;
}

void model_set_stats(model *m, int on)
{
	m->q.stats = on;
}

int model_load_ranges(model *m, const record *r)
{
	if (!m->q.npoints)
		return err_set("ranges: the model is not quantised");
	if (strcmp(r->kind, "ranges"))
		return err_set("expected a ranges record, got '%s'", r->kind);
	if (r->ntensors != m->q.npoints)
		return err_set("ranges: %d tensors for the %d quantisation points of %s", r->ntensors, m->q.npoints,
			       model_name(m));
	static const int64_t two[1] = {2};
	for (int p = 0; p < m->q.npoints; p++) {
		const tensor *t = record_expect_shape(r, model_quant_point_name(m, p), DT_F32, 1, two);
		if (!t)
			return err_wrap("ranges");
		const float *v = t->data;
		if (!(v[0] <= v[1]))
			return err_set("ranges: %s: min %g above max %g", t->name, v[0], v[1]);
		memcpy(m->q.range + 2 * p, v, 2 * sizeof(float));
	}
	m->q.batches = (long)meta_num(r, "batches", 0);
	for (int p = 0; p < m->q.npoints; p++)
		m->q.act[p] = quant_act_params(m->q.range + 2 * p, m->q.bits, !m->nodes[m->q.node[p]].nonneg);
	for (int i = 0; i < m->nnodes; i++)
		if (m->nodes[i].op == OP_CONV)
			m->nodes[i].xfrac = m->q.act[m->nodes[i].qp].frac;
	m->q.apply = 1;
	m->folded_dirty = 1;
	return 0;
}

static record *points_record(const model *m, const char *kind, const float *v)
{
	record *r = record_new(kind);
	if (!r)
		return NULL;
	static const int64_t two[1] = {2};
	for (int p = 0; p < m->q.npoints; p++) {
		tensor *t = record_add(r, model_quant_point_name(m, p), DT_F32, 1, two);
		if (!t) {
			record_free(r);
			return NULL;
		}
		memcpy(t->data, v + 2 * p, 2 * sizeof(float));
	}
	cJSON_AddStringToObject(r->meta, "config", model_name(m));
	return r;
}

record *model_ranges_record(const model *m)
{
	record *r = points_record(m, "ranges", m->q.range);
	if (r)
		cJSON_AddNumberToObject(r->meta, "batches", (double)m->q.batches);
	return r;
}

record *model_stats_record(const model *m)
{
	return points_record(m, "stats", m->q.stat);
}

/* A tensor "<name>.<suffix>" (too long a name is record_add's error). */
static tensor *add(record *r, const char *name, const char *suffix, enum dtype dt, int ndim, const int64_t *shape)
{
	char nm[TENSOR_NAMELEN + 16];
	snprintf(nm, sizeof nm, "%s.%s", name, suffix);
	return record_add(r, nm, dt, ndim, shape);
}

static tensor *add_i32(record *r, const char *name, const char *suffix, int n, const int32_t *v)
{
	int64_t s[1] = {n};
	tensor *t = add(r, name, suffix, DT_I32, 1, s);
	if (t)
		memcpy(t->data, v, (size_t)n * sizeof(int32_t));
	return t;
}

/* t[i0 .. i0+n) = the integers of dequantised values dq = q * 2^-frac */
static void set_ints(tensor *t, const float *dq, size_t i0, size_t n, int frac)
{
	for (size_t i = i0; i < i0 + n; i++) {
		int32_t q = (int32_t)ldexpf(dq[i], frac);
		if (t->dtype == DT_I8)
			((int8_t *)t->data)[i] = (int8_t)q;
		else if (t->dtype == DT_I16)
			((int16_t *)t->data)[i] = (int16_t)q;
		else
			((int32_t *)t->data)[i] = q;
	}
}

/* A tensor of the narrowest integer dtype that holds qbits (set_ints fills it). */
static tensor *add_ints(record *r, const char *name, const char *suffix, int ndim, const int64_t *shape, int qbits)
{
	return add(r, name, suffix, qbits <= 8 ? DT_I8 : qbits <= 16 ? DT_I16 : DT_I32, ndim, shape);
}

record *model_qparams_record(model *m)
{
	if (!m->q.apply || !m->planned)
		return err_set("qparams: needs ranges and a plan"), NULL;
	g_refold(m);
	record *r = record_new("qparams");
	if (!r)
		return NULL;
	for (int i = 0; i < m->nnodes; i++) {
		const gnode *nd = &m->nodes[i];
		if (nd->op != OP_CONV)
			continue;
		const model_param *pw = &m->params_info[nd->wparam];
		const float *fw = g_folded_weights(m, nd), *fb = g_folded_bias(m, nd);
		int64_t cs[1] = {nd->c};
		tensor *t = add(r, nd->name, "weight", DT_F32, pw->ndim, pw->shape);
		if (!t)
			goto fail;
		memcpy(t->data, fw, pw->count * sizeof(float));
		if (!(t = add(r, nd->name, "bias", DT_F32, 1, cs)))
			goto fail;
		memcpy(t->data, fb, (size_t)nd->c * sizeof(float));
		/* (each tensor filled before the next is added: adding may move the others) */
		int32_t frac[3] = {nd->wfrac, nd->xfrac, nd->bfrac};
		size_t per = pw->count / (size_t)nd->c;
		for (int b = 0; b < 2; b++) { /* the integers at each channel's scale */
			tensor *q = b ? add_ints(r, nd->name, "bias_q", 1, cs, 2 * m->q.bits)
				      : add_ints(r, nd->name, "weight_q", pw->ndim, pw->shape, m->q.bits);
			if (!q)
				goto fail;
			for (int k = 0; k < nd->c; k++)
				set_ints(q, b ? fb : fw, b ? (size_t)k : k * per, b ? 1 : per, nd->cfrac[2 * k + b]);
		}
		for (int b = 0; nd->per_channel && b < 2; b++) {
			/* each channel's own fraction bits; .frac holds the smallest of each */
			tensor *f = add(r, nd->name, b ? "bias_frac" : "weight_frac", DT_I32, 1, cs);
			if (!f)
				goto fail;
			for (int k = 0; k < nd->c; k++) {
				int v = nd->cfrac[2 * k + b];
				((int32_t *)f->data)[k] = v;
				frac[2 * b] = k && frac[2 * b] < v ? frac[2 * b] : v;
			}
		}
		if (!add_i32(r, nd->name, "frac", 3, frac))
			goto fail;
	}
	for (int p = 0; p < m->q.npoints; p++) {
		const qact *a = &m->q.act[p];
		int32_t v[3] = {a->frac, a->qmin, a->qmax};
		const char *name = model_quant_point_name(m, p);
		int64_t two[1] = {2};
		tensor *t = add_i32(r, name, "act", 3, v);
		if (!t || !(t = add(r, name, "clip", DT_F32, 1, two)))
			goto fail;
		((float *)t->data)[0] = a->lo;
		((float *)t->data)[1] = a->hi;
	}
	cJSON_AddNumberToObject(r->meta, "bits", m->q.bits);
	cJSON_AddNumberToObject(r->meta, "weight_bits", m->q.wbits);
	cJSON_AddBoolToObject(r->meta, "per_channel_dw", m->q.per_channel_dw);
	cJSON_AddStringToObject(r->meta, "config", model_name(m));
	return r;
fail:
	record_free(r);
	return NULL;
}

/* A bias calibration tensor of a stats record (model_bias_calib_forward), not a range. */
static int is_mean(const char *name)
{
	size_t n = strlen(name);
	return n > 11 && (!strcmp(name + n - 11, ".mean_float") || !strcmp(name + n - 11, ".mean_quant"));
}

int ranges_update(record *ranges, const record *stats)
{
	if (strcmp(stats->kind, "stats"))
		return err_set("expected a stats record, got '%s'", stats->kind);
	long n = (long)meta_num(ranges, "batches", 0);
	int points = 0;
	for (int k = 0; k < stats->ntensors; k++)
		points += !is_mean(stats->tensors[k].name);
	if (n > 0 && ranges->ntensors != points)
		return err_set("stats: %d points, the ranges have %d", points, ranges->ntensors);
	static const int64_t two[1] = {2};
	for (int k = 0; k < stats->ntensors; k++) {
		const tensor *s = &stats->tensors[k];
		if (is_mean(s->name))
			continue;
		if (!record_expect_shape(stats, s->name, DT_F32, 1, two))
			return err_wrap("stats");
		tensor *t = record_find(ranges, s->name);
		if (!t && n > 0)
			return err_set("stats: point '%s' is not in the ranges", s->name);
		if (!t && !(t = record_add(ranges, s->name, DT_F32, 1, two)))
			return -1;
		quant_range_update(t->data, n, s->data);
	}
	cJSON_DeleteItemFromObjectCaseSensitive(ranges->meta, "batches");
	cJSON_AddNumberToObject(ranges->meta, "batches", (double)(n + 1));
	return 0;
}

/* The parameter that takes a conv's bias correction: its BN's bias when folded, else
 * its own bias; -1 for neither. Valid after a plan (folds). */
static int bias_param(const model *m, const gnode *nd)
{
	return nd->fold_bn ? (nd + 1)->bparam : nd->bparam;
}

record *model_bias_calib_forward(model *m, const float *input, float *const *outputs)
{
	if (!m->q.apply)
		return err_set("bias calibration: needs ranges"), NULL;
	int *pos = malloc((size_t)m->nnodes * sizeof *pos);
	if (!pos)
		return err_set("out of memory"), NULL;
	/* the float model as it was before any correction (else both passes move together
	 * and the biases drift), then the quantised one; the stats are the float pass's */
	if (!m->q.float_params) {
		if (!(m->q.float_params = malloc(m->nfloats * sizeof(float)))) {
			free(pos);
			return err_set("out of memory"), NULL;
		}
		memcpy(m->q.float_params, m->params, m->nfloats * sizeof(float));
	}
	float *current = m->params;
	m->params = m->q.float_params;
	m->q.means = 1;
	m->q.stats = 1;
	m->q.apply = 0;
	m->folded_dirty = 1;
	int rc = model_forward(m, input, outputs);
	m->params = current;
	record *stats = rc == 0 ? model_stats_record(m) : NULL;
	if (!stats)
		rc = -1;
	int np = 0;
	for (int i = 0; rc == 0 && i < m->nnodes; i++) {
		const gnode *nd = &m->nodes[i];
		int p = nd->op == OP_CONV ? bias_param(m, nd) : -1;
		if (p < 0)
			continue;
		int64_t s[1] = {nd->c};
		tensor *t = add(stats, m->params_info[p].name, "mean_float", DT_F32, 1, s);
		if (!t) {
			rc = -1;
			break;
		}
		memcpy(t->data, nd->cmean, (size_t)nd->c * sizeof(float));
		pos[np++] = i;
	}
	m->q.stats = 0;
	m->q.apply = 1;
	m->folded_dirty = 1;
	if (rc == 0)
		rc = model_forward(m, input, outputs);
	for (int k = 0; rc == 0 && k < np; k++) {
		const gnode *nd = &m->nodes[pos[k]];
		int64_t s[1] = {nd->c};
		tensor *t = add(stats, m->params_info[bias_param(m, nd)].name, "mean_quant", DT_F32, 1, s);
		if (!t)
			rc = -1;
		else
			memcpy(t->data, nd->cmean, (size_t)nd->c * sizeof(float));
	}
	m->q.means = 0;
	free(pos);
	if (rc < 0) {
		record_free(stats);
		return NULL;
	}
	return stats;
}

int bias_calib_update(record *params, const record *stats, int epoch)
{
	static const char suffix[] = ".mean_float";
	int n = 0;
	for (int k = 0; k < stats->ntensors; k++) {
		const tensor *mf = &stats->tensors[k];
		size_t len = strlen(mf->name), sl = sizeof suffix - 1;
		if (len <= sl || strcmp(mf->name + len - sl, suffix))
			continue;
		char name[TENSOR_NAMELEN + 16];
		snprintf(name, sizeof name, "%.*s.mean_quant", (int)(len - sl), mf->name);
		const tensor *mq = record_find(stats, name);
		snprintf(name, sizeof name, "%.*s", (int)(len - sl), mf->name);
		tensor *b = record_find(params, name);
		if (!mq || !b || b->dtype != DT_F32 || mf->dtype != DT_F32 || mq->dtype != DT_F32 ||
		    tensor_numel(b) != tensor_numel(mf) || tensor_numel(mq) != tensor_numel(mf))
			return err_set("stats: %s: no matching mean_quant or bias parameter '%s'", mf->name, name);
		quant_bias_calibrate(b->data, (size_t)tensor_numel(b), mf->data, mq->data, epoch);
		n++;
	}
	return n;
}
