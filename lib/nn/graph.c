/* graph: building the nodes, their shapes and consumers; freeing the graph (graph.h). */
#include "nn/graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "kernels/layers.h"
#include "core/tensor.h"

static const char *const op_names[OP_COUNT] = {
	"input", "conv", "bn", "relu", "relu6", "add", "concat", "upsample", "maxpool", "l2norm", "flatten", "fq",
};




/* ---------------------------------------------------------------- building */

static int add_node(model *m, enum op op, const char *name)
{
	if (m->nnodes == m->cap) {
		int cap = m->cap ? 2 * m->cap : 256;
		gnode *nn = realloc(m->nodes, (size_t)cap * sizeof *nn);
		if (!nn)
			return err_set("out of memory");
		m->nodes = nn;
		m->cap = cap;
	}
	gnode *nd = &m->nodes[m->nnodes];
	memset(nd, 0, sizeof *nd);
	nd->op = op;
	if (strlen(name) >= sizeof nd->name)
		return err_set("layer name too long: %s", name);
	strcpy(nd->name, name);
	nd->part = !strncmp(name, "neck", 4) ? PART_NECK : !strncmp(name, "bbox_head", 9) ? PART_HEAD : PART_BACKBONE;
	nd->wparam = nd->bparam = nd->prm = nd->prv = nd->ref = -1;
	nd->store = nd->gstore = nd->tmp = -1;
	return m->nnodes++;
}

static int add_param(model *m, const char *module, const char *suffix, enum param_kind kind, int ndim,
		     const int64_t *shape, enum model_part part)
{
	if (m->nparams == m->pcap) {
		int cap = m->pcap ? 2 * m->pcap : 256;
		model_param *np = realloc(m->params_info, (size_t)cap * sizeof *np);
		if (!np)
			return err_set("out of memory");
		m->params_info = np;
		m->pcap = cap;
	}
	model_param *p = &m->params_info[m->nparams];
	memset(p, 0, sizeof *p);
	if (snprintf(p->name, sizeof p->name, "%s.%s", module, suffix) >= (int)sizeof p->name)
		return err_set("parameter name too long: %s.%s", module, suffix);
	p->kind = kind;
	p->ndim = ndim;
	p->count = 1;
	for (int i = 0; i < ndim; i++) {
		p->shape[i] = shape[i];
		p->count *= (size_t)shape[i];
	}
	p->part = part;
	return m->nparams++;
}

static int check_in(const model *m, int in)
{
	if (in < 0 || in >= m->nnodes)
		return err_set("graph: bad input node %d", in);
	if (m->nodes[in].op == OP_FLATTEN)
		return err_set("graph: %s: a flattened output cannot feed a layer", m->nodes[in].name);
	return 0;
}

int g_input(model *m, int c)
{
	int id = add_node(m, OP_INPUT, "input");
	if (id >= 0)
		m->nodes[id].c = c;
	return id;
}

int g_conv(model *m, const char *name, int in, int cout, int k, int stride, int groups, int bias)
{
	return g_conv_pad(m, name, in, cout, k, stride, (k - 1) / 2, 1, groups, bias);
}

int g_conv_pad(model *m, const char *name, int in, int cout, int k, int stride, int pad, int dil, int groups,
	       int bias)
{
	if (check_in(m, in) < 0)
		return -1;
	int cin = m->nodes[in].c;
	if (cout < 1 || k < 1 || stride < 1 || pad < 0 || dil < 1 || groups < 1 || cin % groups || cout % groups)
		return err_set("%s: bad conv (%d -> %d channels, kernel %d, stride %d, padding %d, dilation %d, "
			       "groups %d)", name, cin, cout, k, stride, pad, dil, groups);
	int id = add_node(m, OP_CONV, name);
	if (id < 0)
		return -1;
	gnode *nd = &m->nodes[id];
	nd->nin = 1;
	nd->in[0] = in;
	nd->c = cout;
	nd->k = k;
	nd->stride = stride;
	nd->pad = pad;
	nd->dil = dil;
	nd->groups = groups;
	int64_t ws[4] = {cout, cin / groups, k, k};
	int fan_in = cin / groups * k * k, fan_out = cout * k * k;
	if ((nd->wparam = add_param(m, name, "weight", PK_WEIGHT, 4, ws, nd->part)) < 0)
		return -1;
	m->params_info[nd->wparam].conv = 1;
	m->params_info[nd->wparam].fan_in = fan_in;
	m->params_info[nd->wparam].fan_out = fan_out;
	if (bias) {
		int64_t bs[1] = {cout};
		if ((nd->bparam = add_param(m, name, "bias", PK_BIAS, 1, bs, nd->part)) < 0)
			return -1;
		m->params_info[nd->bparam].conv = 1;
		m->params_info[nd->bparam].fan_in = fan_in;
		m->params_info[nd->bparam].fan_out = fan_out;
	}
	return id;
}

int g_bn(model *m, const char *name, int in)
{
	if (check_in(m, in) < 0)
		return -1;
	int id = add_node(m, OP_BN, name);
	if (id < 0)
		return -1;
	gnode *nd = &m->nodes[id];
	nd->nin = 1;
	nd->in[0] = in;
	nd->c = m->nodes[in].c;
	nd->eps = m->bn_eps;
	int64_t s[1] = {nd->c};
	if ((nd->wparam = add_param(m, name, "weight", PK_WEIGHT, 1, s, nd->part)) < 0 ||
	    (nd->bparam = add_param(m, name, "bias", PK_BIAS, 1, s, nd->part)) < 0 ||
	    (nd->prm = add_param(m, name, "running_mean", PK_RUNNING_MEAN, 1, s, nd->part)) < 0 ||
	    (nd->prv = add_param(m, name, "running_var", PK_RUNNING_VAR, 1, s, nd->part)) < 0)
		return -1;
	m->params_info[nd->wparam].init = 1;
	m->params_info[nd->prv].init = 1;
	return id;
}

static int simple(model *m, enum op op, const char *name, const int *ins, int nin)
{
	if (nin < 1 || nin > GRAPH_MAXIN)
		return err_set("%s: %d inputs", name, nin);
	for (int i = 0; i < nin; i++)
		if (check_in(m, ins[i]) < 0)
			return -1;
	int id = add_node(m, op, name);
	if (id < 0)
		return -1;
	gnode *nd = &m->nodes[id];
	nd->nin = nin;
	memcpy(nd->in, ins, (size_t)nin * sizeof *ins);
	nd->c = m->nodes[ins[0]].c;
	return id;
}

int g_act(model *m, enum op op, const char *name, int in)
{
	return simple(m, op, name, &in, 1);
}

int g_add(model *m, const char *name, int a, int b)
{
	int ins[2] = {a, b};
	int id = simple(m, OP_ADD, name, ins, 2);
	if (id >= 0 && m->nodes[a].c != m->nodes[b].c)
		return err_set("%s: adding %d and %d channels", name, m->nodes[a].c, m->nodes[b].c);
	return id;
}

int g_concat(model *m, const char *name, const int *ins, int nin)
{
	int id = simple(m, OP_CONCAT, name, ins, nin);
	if (id < 0)
		return -1;
	int c = 0;
	for (int i = 0; i < nin; i++)
		c += m->nodes[ins[i]].c;
	m->nodes[id].c = c;
	return id;
}

int g_upsample_to(model *m, const char *name, int in, int ref)
{
	if (check_in(m, ref) < 0)
		return -1;
	int id = simple(m, OP_UPSAMPLE, name, &in, 1);
	if (id >= 0)
		m->nodes[id].ref = ref;
	return id;
}

int g_upsample_scale(model *m, const char *name, int in, int scale, int bilinear)
{
	if (scale < 1)
		return err_set("%s: upsampling by %d", name, scale);
	int id = simple(m, OP_UPSAMPLE, name, &in, 1);
	if (id >= 0) {
		m->nodes[id].scale = scale;
		m->nodes[id].bilinear = bilinear;
	}
	return id;
}

int g_maxpool(model *m, const char *name, int in, int k, int stride, int pad, int ceil_mode)
{
	int id = simple(m, OP_MAXPOOL, name, &in, 1);
	if (id < 0)
		return -1;
	gnode *nd = &m->nodes[id];
	nd->pd.kh = nd->pd.kw = k;
	nd->pd.sh = nd->pd.sw = stride;
	nd->pd.ph = nd->pd.pw = pad;
	nd->pd.ceil_mode = ceil_mode;
	return id;
}

int g_l2norm(model *m, const char *name, int in, float scale)
{
	int id = simple(m, OP_L2NORM, name, &in, 1);
	if (id < 0)
		return -1;
	gnode *nd = &m->nodes[id];
	nd->eps = 1e-10f;
	int64_t s[1] = {nd->c};
	if ((nd->wparam = add_param(m, name, "weight", PK_WEIGHT, 1, s, nd->part)) < 0)
		return -1;
	m->params_info[nd->wparam].init = scale;
	return id;
}

int g_flatten(model *m, const char *name, const int *ins, int nin, int cols)
{
	int id = simple(m, OP_FLATTEN, name, ins, nin);
	if (id < 0)
		return -1;
	for (int i = 0; i < nin; i++)
		if (m->nodes[ins[i]].c % cols)
			return err_set("%s: input %s has %d channels, not a multiple of %d", name,
				       m->nodes[ins[i]].name, m->nodes[ins[i]].c, cols);
	m->nodes[id].c = cols;
	return id;
}

int g_output(model *m, const char *name, int node)
{
	if (m->noutputs == 4 || node < 0 || node >= m->nnodes || m->nodes[node].op != OP_FLATTEN)
		return err_set("graph: bad output %s", name);
	m->outputs[m->noutputs] = node;
	snprintf(m->output_names[m->noutputs], sizeof m->output_names[0], "%s", name);
	m->noutputs++;
	return 0;
}

int g_is_output(const model *m, int id)
{
	for (int i = 0; i < m->noutputs; i++)
		if (m->outputs[i] == id)
			return 1;
	return 0;
}

int g_finish(model *m)
{
	size_t off = 0, nstat = 0;
	for (int i = 0; i < m->nparams; i++) {
		m->params_info[i].offset = off;
		off += g_round16(m->params_info[i].count);
	}
	m->nfloats = off;
	for (int i = 0; i < m->nnodes; i++)
		if (m->nodes[i].op == OP_BN)
			nstat += 3 * (size_t)m->nodes[i].c;
	g_count_consumers(m);
	for (int i = 1; i < m->nnodes; i++)
		if (!m->nodes[i].nconsumers && !g_is_output(m, i))
			return err_set("graph: %s: output not used", m->nodes[i].name);
	if (!m->noutputs)
		return err_set("graph: no outputs");
	/* the gradients come with the first training plan (model_plan): inference never
	 * touches them, and zeroing 100 MB of pages it would not use costs a VGG tool 0.5 s */
	if (!(m->params = aligned_zalloc((off ? off : 1) * sizeof(float))) ||
	    !(m->bnstats = aligned_zalloc((nstat ? nstat : 1) * sizeof(float))))
		return -1;
	float *s = m->bnstats;
	for (int i = 0; i < m->nnodes; i++) {
		gnode *nd = &m->nodes[i];
		if (nd->op != OP_BN)
			continue;
		nd->mean = s;
		nd->rstd = s + nd->c;
		nd->varu = s + 2 * nd->c;
		s += 3 * nd->c;
	}
	return 0;
}

void g_count_consumers(model *m)
{
	for (int i = 0; i < m->nnodes; i++) {
		m->nodes[i].nconsumers = 0;
		m->nodes[i].last_consumer = -1;
	}
	for (int i = 0; i < m->nnodes; i++)
		for (int j = 0; j < m->nodes[i].nin; j++) {
			gnode *src = &m->nodes[m->nodes[i].in[j]];
			src->nconsumers++;
			src->last_consumer = i;
		}
}

/* ---------------------------------------------------------------- shapes */

int g_shapes(model *m, int n, int h, int w)
{
	gnode *nd = m->nodes;
	nd[0].n = n;
	nd[0].h = h;
	nd[0].w = w;
	for (int i = 1; i < m->nnodes; i++) {
		nd = &m->nodes[i];
		const gnode *a = &m->nodes[nd->in[0]];
		nd->n = n;
		nd->h = a->h;
		nd->w = a->w;
		switch (nd->op) {
		case OP_CONV:
			memset(&nd->cd, 0, sizeof nd->cd);
			nd->cd = (conv2d_desc){.n = n, .c = a->c, .h = a->h, .w = a->w, .k = nd->c, .kh = nd->k, .kw = nd->k,
					       .sh = nd->stride, .sw = nd->stride, .ph = nd->pad, .pw = nd->pad,
					       .dh = nd->dil, .dw = nd->dil, .groups = nd->groups,
					       .forward_only = !m->train};
			if (conv2d_init(&nd->cd) < 0)
				return err_wrap("%s", nd->name);
			nd->h = nd->cd.oh;
			nd->w = nd->cd.ow;
			break;
		case OP_ADD:
		case OP_CONCAT:
			for (int j = 1; j < nd->nin; j++) {
				const gnode *b = &m->nodes[nd->in[j]];
				if (b->h != a->h || b->w != a->w)
					return err_set("%s: inputs of %dx%d and %dx%d", nd->name, a->h, a->w, b->h, b->w);
			}
			break;
		case OP_UPSAMPLE:
			nd->h = nd->ref >= 0 ? m->nodes[nd->ref].h : a->h * nd->scale;
			nd->w = nd->ref >= 0 ? m->nodes[nd->ref].w : a->w * nd->scale;
			break;
		case OP_MAXPOOL:
			nd->pd.n = n;
			nd->pd.c = a->c;
			nd->pd.h = a->h;
			nd->pd.w = a->w;
			if (maxpool2d_init(&nd->pd) < 0)
				return err_wrap("%s", nd->name);
			nd->h = nd->pd.oh;
			nd->w = nd->pd.ow;
			break;
		case OP_FLATTEN: {
			int64_t rows = 0;
			for (int j = 0; j < nd->nin; j++) {
				const gnode *b = &m->nodes[nd->in[j]];
				rows += (int64_t)b->h * b->w * (b->c / nd->c);
			}
			if (rows > INT32_MAX)
				return err_set("%s: too many rows", nd->name);
			nd->h = (int)rows;
			nd->w = 1;
			break;
		}
		default:
			break;
		}
		/* (with replicas the whole batch counts: bn_forward_synced checks it) */
		if (nd->op == OP_BN && n * nd->h * nd->w < 2 && m->train && !m->sync)
			return err_set("%s: batch norm training needs more than one value per channel (n %d, %dx%d)",
				       nd->name, n, nd->h, nd->w);
	}
	return 0;
}

const char *graph_op_name(enum op op)
{
	return op_names[op];
}

void graph_free(model *m)
{
	g_free_plan(m);
	free(m->nodes);
	free(m->params_info);
	free(m->params);
	free(m->grads);
	free(m->sync_buf);
	free(m->bnstats);
}
