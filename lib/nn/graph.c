/* graph: nodes, the memory plan, forward and backward (see graph.h, model.h). */
#include "nn/graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/err.h"
#include "kernels/layers.h"
#include "core/tensor.h"

static const char *const op_names[OP_COUNT] = {
	"input", "conv", "bn", "relu", "relu6", "add", "concat", "upsample", "maxpool", "l2norm", "flatten", "fq",
};

/* Profile classes: the ops, with convs split into 1x1, depthwise and other. */
enum { PROF_CONV1X1 = OP_COUNT, PROF_CONVDW };

int g_prof_class(const gnode *nd)
{
	if (nd->op != OP_CONV)
		return nd->op;
	if (nd->groups > 1 && nd->groups == nd->c)
		return PROF_CONVDW;
	return nd->k == 1 ? PROF_CONV1X1 : OP_CONV;
}

static const char *prof_name(int cls)
{
	return cls == PROF_CONV1X1 ? "conv1x1" : cls == PROF_CONVDW ? "conv_dw" : op_names[cls];
}

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
	nd->pw = nd->pb = nd->prm = nd->prv = nd->ref = -1;
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
	if ((nd->pw = add_param(m, name, "weight", PK_WEIGHT, 4, ws, nd->part)) < 0)
		return -1;
	m->params_info[nd->pw].conv = 1;
	m->params_info[nd->pw].fan_in = fan_in;
	m->params_info[nd->pw].fan_out = fan_out;
	if (bias) {
		int64_t bs[1] = {cout};
		if ((nd->pb = add_param(m, name, "bias", PK_BIAS, 1, bs, nd->part)) < 0)
			return -1;
		m->params_info[nd->pb].conv = 1;
		m->params_info[nd->pb].fan_in = fan_in;
		m->params_info[nd->pb].fan_out = fan_out;
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
	if ((nd->pw = add_param(m, name, "weight", PK_WEIGHT, 1, s, nd->part)) < 0 ||
	    (nd->pb = add_param(m, name, "bias", PK_BIAS, 1, s, nd->part)) < 0 ||
	    (nd->prm = add_param(m, name, "running_mean", PK_RUNNING_MEAN, 1, s, nd->part)) < 0 ||
	    (nd->prv = add_param(m, name, "running_var", PK_RUNNING_VAR, 1, s, nd->part)) < 0)
		return -1;
	m->params_info[nd->pw].init = 1;
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
	if ((nd->pw = add_param(m, name, "weight", PK_WEIGHT, 1, s, nd->part)) < 0)
		return -1;
	m->params_info[nd->pw].init = scale;
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

static int is_output(const model *m, int id)
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
		off += (m->params_info[i].count + 15) & ~(size_t)15;
	}
	m->nfloats = off;
	for (int i = 0; i < m->nnodes; i++)
		if (m->nodes[i].op == OP_BN)
			nstat += 3 * (size_t)m->nodes[i].c;
	g_count_consumers(m);
	for (int i = 1; i < m->nnodes; i++)
		if (!m->nodes[i].nconsumers && !is_output(m, i))
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

/* ---------------------------------------------------------------- plan */

static size_t node_floats(const gnode *nd)
{
	return (size_t)nd->n * nd->c * nd->h * nd->w;
}

static int new_store(model *m, size_t floats, int birth, int death)
{
	if (m->nstores == m->scap) {
		int cap = m->scap ? 2 * m->scap : 512;
		storage *ns = realloc(m->stores, (size_t)cap * sizeof *ns);
		if (!ns)
			return err_set("out of memory");
		m->stores = ns;
		m->scap = cap;
	}
	storage *s = &m->stores[m->nstores];
	s->bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
	s->birth = birth;
	s->death = death;
	s->buf = -1;
	s->ptr = NULL;
	return m->nstores++;
}

static void extend(model *m, int st, int step)
{
	if (st < 0)
		return;
	storage *s = &m->stores[st];
	if (step < s->birth)
		s->birth = step;
	if (step > s->death)
		s->death = step;
}

static void free_plan(model *m)
{
	for (int i = 0; i < m->nbufs; i++)
		free(m->bufs[i]);
	free(m->bufs);
	free(m->bufsize);
	m->bufs = NULL;
	m->bufsize = NULL;
	m->nbufs = 0;
	free(m->stores);
	m->stores = NULL;
	m->nstores = m->scap = 0;
	free(m->ws);
	m->ws = NULL;
	m->ws_bytes = 0;
	for (int i = 0; i < m->nnodes; i++) {
		free(m->nodes[i].argmax);
		m->nodes[i].argmax = NULL;
	}
	free(m->folded);
	m->folded = NULL;
	m->nfolded = 0;
	free(m->fgrad);
	m->fgrad = NULL;
	m->fgrad_floats = 0;
	m->planned = 0;
}

/* Does op's backward read its own output (so nothing may overwrite it in place)? */
static int needs_output(enum op op)
{
	return op == OP_RELU || op == OP_RELU6;
}

/* Does op's backward read its input? */
static int needs_input(enum op op)
{
	return op == OP_CONV || op == OP_BN || op == OP_L2NORM || op == OP_FQ;
}

static int can_inplace(const model *m, const gnode *nd, int in)
{
	const gnode *src = &m->nodes[in];
	if (in == 0 || src->keep || src->nconsumers != 1 || src->store < 0 || node_floats(src) != node_floats(nd))
		return 0;
	switch (nd->op) {
	case OP_RELU:
	case OP_RELU6:
	case OP_ADD:
		return !m->train || !needs_output(src->op);
	case OP_BN:
	case OP_FQ:
		return !m->train;
	default:
		return 0;
	}
}

static size_t r16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* Inference: a conv whose only consumer is the next node, a BN, takes the BN into its
 * weights (quant_fold_bn); the BN is skipped. A quantised model runs every conv on its
 * folded, quantised weights, in training too (QAT: BN folded with its running
 * statistics, which stay frozen). */
static void plan_folds(model *m)
{
	size_t nf = 0, fg = 0;
	for (int i = 0; i < m->nnodes; i++)
		m->nodes[i].fold = m->nodes[i].fold_bn = m->nodes[i].skip = 0;
	for (int i = 0; i < m->nnodes; i++) {
		gnode *nd = &m->nodes[i];
		if (nd->op != OP_CONV)
			continue;
		int bn = nd->nconsumers == 1 && !nd->keep && i + 1 < m->nnodes && m->nodes[i + 1].op == OP_BN &&
			 m->nodes[i + 1].in[0] == i;
		/* training folds only to quantise (QAT): stats alone keep BN training */
		int quant = m->nqp && (!m->train || m->qapply);
		if (!quant && (m->train || !bn))
			continue;
		nd->fold = 1;
		nd->fold_bn = bn;
		nd->foff = nf;
		m->nodes[i + 1].skip = bn;
		size_t f = r16(m->params_info[nd->pw].count) + r16((size_t)nd->c);
		nf += f;
		if (f > fg)
			fg = f;
	}
	m->nfolded = nf;
	m->fgrad_floats = m->train ? fg : 0;
}

/* Assigns buffers to storages: in birth order, each takes the free buffer that fits it
 * best (or grows the largest free one, or a new one). Buffers are sized, then allocated. */
static int assign_buffers(model *m)
{
	int ns = m->nstores, *order = malloc((size_t)(ns ? ns : 1) * sizeof *order);
	int *owner = malloc((size_t)(ns ? ns : 1) * sizeof *owner); /* buffer -> storage using it, -1 free */
	m->bufsize = calloc((size_t)(ns ? ns : 1), sizeof *m->bufsize);
	if (!order || !owner || !m->bufsize) {
		free(order);
		free(owner);
		return err_set("out of memory");
	}
	for (int i = 0; i < ns; i++)
		order[i] = i;
	/* insertion sort by birth, then larger first */
	for (int i = 1; i < ns; i++) {
		int v = order[i], j = i - 1;
		while (j >= 0 && (m->stores[order[j]].birth > m->stores[v].birth ||
				  (m->stores[order[j]].birth == m->stores[v].birth &&
				   m->stores[order[j]].bytes < m->stores[v].bytes))) {
			order[j + 1] = order[j];
			j--;
		}
		order[j + 1] = v;
	}
	int nb = 0;
	for (int k = 0; k < ns; k++) {
		storage *s = &m->stores[order[k]];
		int best = -1, largest = -1;
		for (int b = 0; b < nb; b++) {
			if (owner[b] >= 0 && m->stores[owner[b]].death >= s->birth)
				continue;
			if (m->bufsize[b] >= s->bytes && (best < 0 || m->bufsize[b] < m->bufsize[best]))
				best = b;
			if (largest < 0 || m->bufsize[b] > m->bufsize[largest])
				largest = b;
		}
		if (best < 0)
			best = largest;
		if (best < 0)
			best = nb++;
		if (m->bufsize[best] < s->bytes)
			m->bufsize[best] = s->bytes;
		owner[best] = order[k];
		s->buf = best;
	}
	free(order);
	free(owner);
	m->nbufs = nb;
	if (!(m->bufs = calloc((size_t)(nb ? nb : 1), sizeof *m->bufs)))
		return err_set("out of memory");
	for (int b = 0; b < nb; b++)
		if (!(m->bufs[b] = aligned_zalloc(m->bufsize[b])))
			return -1;
	for (int i = 0; i < ns; i++)
		m->stores[i].ptr = m->bufs[m->stores[i].buf];
	return 0;
}

/* Inference: a ReLU or ReLU6 running in place on the output of a conv (through its
 * folded BN) that nothing else reads is done by the conv's epilogue instead of a
 * separate pass over memory. Both nodes remember it; fused_now() decides per batch,
 * since quantisation, its statistics and bias calibration read the pre-activation. */
static void plan_fused_acts(model *m)
{
	for (int i = 1; i < m->nnodes; i++) {
		gnode *a = &m->nodes[i];
		a->fuse_act = 0;
		if (m->train || (a->op != OP_RELU && a->op != OP_RELU6))
			continue;
		int c = a->in[0];
		if (m->nodes[c].op == OP_BN && m->nodes[c].skip && m->nodes[c].nconsumers == 1)
			c = m->nodes[c].in[0];
		gnode *conv = &m->nodes[c];
		if (conv->op != OP_CONV || conv->nconsumers != 1 || conv->keep || a->store != conv->store || is_output(m, c))
			continue;
		conv->fuse_act = a->op == OP_RELU ? CONV_ACT_RELU : CONV_ACT_RELU6;
		a->fuse_act = 1;
	}
}

static int fused_now(const model *m)
{
	return !m->train && !m->qapply && !m->qstats && !m->qmeans;
}

int model_plan(model *m, int n, int h, int w, int train, int input_grad)
{
	free_plan(m);
	m->train = train;
	m->input_grad = train && input_grad;
	if (n < 1 || h < 1 || w < 1)
		return err_set("model: bad input shape [%d,3,%d,%d]", n, h, w);
	if (train && !m->grads && !(m->grads = aligned_zalloc((m->nfloats ? m->nfloats : 1) * sizeof(float))))
		return -1;
	if (g_shapes(m, n, h, w) < 0)
		return -1;
	int F = m->nnodes;
	plan_folds(m);
	/* activations: a storage per value, shared by in-place chains */
	for (int i = 1; i < F; i++) {
		gnode *nd = &m->nodes[i];
		nd->gstore = nd->tmp = -1;
		memset(nd->first_writer, 0, sizeof nd->first_writer);
		memset(nd->galias, 0, sizeof nd->galias);
		if (nd->op == OP_FLATTEN && is_output(m, i)) {
			nd->store = -1; /* the caller's buffer */
			continue;
		}
		if (nd->skip) {
			nd->store = m->nodes[nd->in[0]].store;
			continue;
		}
		int ip = -1;
		for (int j = 0; j < nd->nin && ip < 0; j++)
			if (can_inplace(m, nd, nd->in[j]))
				ip = nd->in[j];
		if (ip >= 0)
			nd->store = m->nodes[ip].store;
		else if ((nd->store = new_store(m, node_floats(nd), i, i)) < 0)
			return -1;
	}
	for (int i = 1; i < F; i++) {
		gnode *nd = &m->nodes[i];
		extend(m, nd->store, i);
		for (int j = 0; j < nd->nin; j++) {
			gnode *src = &m->nodes[nd->in[j]];
			extend(m, src->store, i);
			if (train && needs_input(nd->op))
				extend(m, src->store, 2 * F - 1 - i);
		}
		if (nd->op == OP_UPSAMPLE && nd->ref >= 0)
			extend(m, m->nodes[nd->ref].store, i);
		if (train && needs_output(nd->op))
			extend(m, nd->store, 2 * F - 1 - i);
		if (nd->keep)
			extend(m, nd->store, 2 * F);
		if (nd->op == OP_MAXPOOL && train) {
			nd->argmax = malloc(node_floats(nd) * sizeof(int32_t));
			if (!nd->argmax)
				return err_set("out of memory");
		}
	}
	/* gradients, in backward order: the first consumer to run backward writes a
	 * value's gradient; later ones add to it (through tmp unless they can add directly) */
	if (train) {
		for (int i = F - 1; i >= 1; i--) {
			gnode *nd = &m->nodes[i];
			int step = 2 * F - 1 - i;
			if (nd->op == OP_FLATTEN && is_output(m, i))
				nd->gstore = -1; /* the caller's */
			else
				extend(m, nd->gstore, step);
			size_t tmp = 0;
			for (int j = 0; j < nd->nin; j++) {
				gnode *src = &m->nodes[nd->in[j]];
				if (nd->in[j] == 0 && !m->input_grad)
					continue;
				if (src->last_consumer == i) {
					nd->first_writer[j] = 1;
					int alias = src->nconsumers == 1 && nd->gstore >= 0 &&
						    (nd->op == OP_ADD || nd->op == OP_RELU || nd->op == OP_RELU6 ||
						     nd->skip);
					if (nd->in[j] == 0)
						alias = 0; /* the caller's buffer */
					if (alias) {
						nd->galias[j] = 1;
						src->gstore = nd->gstore;
					} else if (nd->in[j] != 0 &&
						   (src->gstore = new_store(m, node_floats(src), step, step)) < 0) {
						return -1;
					}
				} else if (nd->op != OP_ADD && node_floats(src) > tmp) {
					tmp = node_floats(src);
				}
				if (nd->in[j] != 0)
					extend(m, src->gstore, step);
			}
			if (tmp && (nd->tmp = new_store(m, tmp, step, step)) < 0)
				return -1;
			/* the producer reads the gradient in its backward */
		}
		for (int i = 1; i < F; i++)
			extend(m, m->nodes[i].gstore, 2 * F - 1 - i);
	}
	/* forward --int8 keeps its own bytes (qexec.c): no float activations or workspace */
	if (!m->int8_only && assign_buffers(m) < 0)
		return -1;
	size_t ws = 0;
	for (int i = 1; i < F && !m->int8_only; i++)
		if (m->nodes[i].op == OP_CONV) {
			size_t b = conv2d_workspace_size(&m->nodes[i].cd);
			if (b > ws)
				ws = b;
		}
	m->ws_bytes = ws;
	if (ws && !(m->ws = aligned_zalloc(ws)))
		return -1;
	if (m->nfolded && !(m->folded = aligned_zalloc(m->nfolded * sizeof(float))))
		return -1;
	if (m->fgrad_floats && !(m->fgrad = aligned_zalloc(m->fgrad_floats * sizeof(float))))
		return -1;
	m->folded_dirty = 1;
	m->pn = n;
	m->ph = h;
	m->pw = w;
	plan_fused_acts(m);
	m->planned = 1;
	return 0;
}

static int node_named(const model *m, const char *name)
{
	for (int i = 1; i < m->nnodes; i++)
		if (!strcmp(m->nodes[i].name, name))
			return i;
	return err_set("model: no node '%s'", name);
}

int model_keep(model *m, const char *name)
{
	int i = node_named(m, name);
	if (i < 0)
		return -1;
	if (m->nodes[i].op == OP_FLATTEN)
		return err_set("model: '%s' is an output", name);
	m->nodes[i].keep = 1;
	m->planned = 0; /* plan again */
	return 0;
}

const float *model_value(const model *m, const char *name, int64_t shape[4])
{
	int i = node_named(m, name);
	if (i < 0)
		return NULL;
	const gnode *nd = &m->nodes[i];
	if (!nd->keep || !m->planned || nd->store < 0 || m->int8_only) {
		err_set("model: '%s' was not kept (model_keep before model_plan)", name);
		return NULL;
	}
	shape[0] = nd->n;
	shape[1] = nd->c;
	shape[2] = nd->h;
	shape[3] = nd->w;
	return m->stores[nd->store].ptr;
}

void model_plan_get_info(const model *m, model_plan_info *info)
{
	memset(info, 0, sizeof *info);
	for (int b = 0; b < m->nbufs; b++)
		info->activation_bytes += m->bufsize[b];
	info->workspace_bytes = m->ws_bytes + m->nfolded * sizeof(float);
	info->buffers = m->nbufs;
}

/* ---------------------------------------------------------------- running */

static const float *act(const model *m, int id)
{
	if (id == 0)
		return m->ext_input;
	const gnode *nd = &m->nodes[id];
	if (nd->store < 0) {
		for (int i = 0; i < m->noutputs; i++)
			if (m->outputs[i] == id)
				return m->ext_out[i];
	}
	return m->stores[nd->store].ptr;
}

static float *act_w(const model *m, int id)
{
	return (float *)act(m, id);
}

static float *grad_of(const model *m, int id)
{
	if (id == 0)
		return m->ext_dinput;
	const gnode *nd = &m->nodes[id];
	if (nd->gstore < 0) {
		for (int i = 0; i < m->noutputs; i++)
			if (m->outputs[i] == id)
				return (float *)m->ext_dout[i];
		return NULL;
	}
	return m->stores[nd->gstore].ptr;
}

static size_t cnt(const gnode *nd)
{
	return node_floats(nd);
}

static const float *P(const model *m, int p)
{
	return p < 0 ? NULL : m->params + m->params_info[p].offset;
}

static float *G(const model *m, int p)
{
	return p < 0 ? NULL : m->grads + m->params_info[p].offset;
}

void g_refold(model *m)
{
	for (int i = 0; i < m->nnodes; i++) {
		gnode *nd = &m->nodes[i];
		if (!nd->fold)
			continue;
		const float *w = P(m, nd->pw), *b = P(m, nd->pb);
		size_t wc = m->params_info[nd->pw].count, c = (size_t)nd->c;
		float *fw = m->folded + nd->foff, *fb = fw + r16(wc);
		memcpy(fw, w, wc * sizeof(float));
		if (nd->fold_bn) {
			const gnode *bn = &m->nodes[i + 1];
			quant_fold_bn(fw, c, wc / c, b, P(m, bn->pw), P(m, bn->pb), P(m, bn->prm), P(m, bn->prv), bn->eps,
				      fb);
		} else if (b) {
			memcpy(fb, b, c * sizeof(float));
		} else {
			memset(fb, 0, c * sizeof(float));
		}
		if (m->qapply) {
			/* per tensor; per output channel for a depthwise conv if asked (TI's option):
			 * the same rules on each channel's weights and bias alone */
			size_t per = wc / c;
			nd->per_channel = m->per_channel_dw && nd->groups == nd->c && per == (size_t)nd->k * nd->k;
			nd->wfrac = quant_weight_frac(fw, wc, m->wbits);
			nd->bfrac = quant_bias_frac(fb, c, nd->wfrac + nd->xfrac, 2 * m->qbits);
			for (size_t k = 0; k < c; k++) {
				int *cf = nd->cfrac + 2 * k;
				cf[0] = nd->per_channel ? quant_weight_frac(fw + k * per, per, m->wbits) : nd->wfrac;
				cf[1] = nd->per_channel ? quant_bias_frac(fb + k, 1, cf[0] + nd->xfrac, 2 * m->qbits) : nd->bfrac;
				quant_round(fw + k * per, per, cf[0], m->wbits, NULL, fw + k * per);
				quant_round(fb + k, 1, cf[1], 2 * m->qbits, NULL, fb + k);
			}
		}
	}
	m->folded_dirty = 0;
	m->fold_gen++;
}

/* The gradient of a folded conv's weights and bias (gw, gb) taken back to the conv's
 * and its BN's parameters through W' = W s, b' = (b - mean) s + beta, s = gamma / sigma;
 * quantisation passes the gradient straight through. */
static void unfold_grads(model *m, const gnode *nd, const float *gw, const float *gb)
{
	size_t wc = m->params_info[nd->pw].count, c = (size_t)nd->c, per = wc / c;
	float *dw = G(m, nd->pw), *db = G(m, nd->pb);
	if (!nd->fold_bn) {
		memcpy(dw, gw, wc * sizeof(float));
		if (db)
			memcpy(db, gb, c * sizeof(float));
		return;
	}
	const gnode *bn = nd + 1;
	const float *w = P(m, nd->pw), *b = P(m, nd->pb), *g = P(m, bn->pw), *rm = P(m, bn->prm), *rv = P(m, bn->prv);
	float *dg = G(m, bn->pw), *dbeta = G(m, bn->pb);
#pragma omp parallel for schedule(static) if (wc >= 65536)
	for (size_t k = 0; k < c; k++) {
		float sigma = sqrtf(rv[k] + bn->eps), s = g[k] / sigma, b0 = (b ? b[k] : 0.0f) - rm[k];
		double dot = 0;
		for (size_t j = 0; j < per; j++) {
			dot += (double)gw[k * per + j] * w[k * per + j];
			dw[k * per + j] = gw[k * per + j] * s;
		}
		if (db)
			db[k] = gb[k] * s;
		dbeta[k] = gb[k];
		dg[k] = (float)((dot + (double)gb[k] * b0) / sigma);
	}
}

/* The batch range of a point's input over every replica's part: extrema, then the
 * histogram over them, combined exactly (quant.h). */
static int batch_range_synced(model *m, const float *x, size_t n, float out[2])
{
	double ext[3], hist[QUANT_BINS], valid;
	quant_extrema(x, n, ext);
	valid = ext[2];
	if (m->sync->max(ext, 2) < 0 || m->sync->sum(&valid, 1) < 0)
		return err_wrap("quantisation ranges over the replicas");
	ext[2] = valid;
	if (ext[2] > 0 && -ext[0] != ext[1]) {
		quant_histogram(x, n, ext, hist);
		if (m->sync->sum(hist, QUANT_BINS) < 0)
			return err_wrap("quantisation histograms over the replicas");
	}
	quant_trimmed_range(ext, hist, out);
	return 0;
}

/* Fake quantisation of a point: records the batch range of its input, then quantises
 * (ranges loaded) or passes it on. */
static int fq_forward(model *m, const gnode *nd, const float *x, float *y)
{
	size_t n = cnt(nd);
	if (m->qstats && m->sync && m->train) {
		if (batch_range_synced(m, x, n, m->qstat + 2 * nd->qp) < 0)
			return -1;
	} else if (m->qstats) {
		quant_batch_range(x, n, m->qstat + 2 * nd->qp);
	}
	if (!m->qapply) {
		if (y != x)
			memcpy(y, x, n * sizeof(float));
		return 0;
	}
	const qact *a = &m->qa[nd->qp];
	const size_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > chunk)
	for (size_t o = 0; o < n; o += chunk)
		quant_act(x + o, n - o < chunk ? n - o : chunk, a, y + o, NULL);
	return 0;
}

static void fq_backward(model *m, const gnode *nd, const float *x, const float *dy, float *dx)
{
	size_t n = cnt(nd);
	if (!m->qapply) {
		memcpy(dx, dy, n * sizeof(float));
		return;
	}
	const qact *a = &m->qa[nd->qp];
	const size_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > chunk)
	for (size_t o = 0; o < n; o += chunk)
		quant_act_backward(x + o, dy + o, n - o < chunk ? n - o : chunk, a, dx + o);
}

/* out [n, rows, K] rows from (y, x, a) of each input [n, A*K, h, w] (NHWC order). */
static void flatten_forward(model *m, const gnode *nd, float *out)
{
	int K = nd->c, rows = nd->h;
	for (int j = 0, r0 = 0; j < nd->nin; j++) {
		const gnode *s = &m->nodes[nd->in[j]];
		const float *x = act(m, nd->in[j]);
		int C = s->c, hw = s->h * s->w;
#pragma omp parallel for collapse(2) schedule(static)
		for (int b = 0; b < nd->n; b++)
			for (int p = 0; p < hw; p++) {
				const float *xi = x + (size_t)b * C * hw + p;
				float *o = out + ((size_t)b * rows + r0 + (size_t)p * (C / K)) * K;
				for (int c = 0; c < C; c++)
					o[c] = xi[(size_t)c * hw];
			}
		r0 += hw * (C / K);
	}
}

static void flatten_backward(model *m, const gnode *nd, const float *dout, float *const *dinps)
{
	int K = nd->c, rows = nd->h;
	for (int j = 0, r0 = 0; j < nd->nin; j++) {
		const gnode *s = &m->nodes[nd->in[j]];
		float *dx = dinps[j];
		int C = s->c, hw = s->h * s->w;
		if (dx) {
#pragma omp parallel for collapse(2) schedule(static)
			for (int b = 0; b < nd->n; b++)
				for (int c = 0; c < C; c++) {
					float *d = dx + ((size_t)b * C + c) * hw;
					const float *g = dout + ((size_t)b * rows + r0) * K + c;
					for (int p = 0; p < hw; p++)
						d[p] = g[(size_t)p * C];
				}
		}
		r0 += hw * (C / K);
	}
}

/* mean[c] over n and hw of x [n, c, hw], in double */
static void channel_means(float *mean, const float *x, int n, int c, int hw)
{
#pragma omp parallel for schedule(static)
	for (int k = 0; k < c; k++) {
		double s = 0;
		for (int b = 0; b < n; b++) {
			const float *p = x + ((size_t)b * c + k) * hw;
			for (int j = 0; j < hw; j++)
				s += p[j];
		}
		mean[k] = (float)(s / ((double)n * hw));
	}
}

/* Training BN with the statistics of every replica's part of the batch: each part's
 * count, mean and centred sum of squares, merged over the replicas (model_sync). */
static int bn_forward_synced(model *m, gnode *nd, float *y, const float *x, int hw)
{
	int c = nd->c;
	double *mean = m->sync_buf, *m2 = mean + c, *nmm = m2 + c;
	batchnorm2d_moments(mean, m2, x, nd->n, c, hw);
	for (int ch = 0; ch < c; ch++) {
		nmm[3 * ch] = (double)nd->n * hw;
		nmm[3 * ch + 1] = mean[ch];
		nmm[3 * ch + 2] = m2[ch];
	}
	if (m->sync->moments(nmm, c) < 0)
		return err_wrap("batch statistics over the replicas");
	double count = nmm[0];
	if (count < 2)
		return err_set("batchnorm2d: training needs more than one value per channel (%g over the replicas)", count);
	for (int ch = 0; ch < c; ch++) {
		mean[ch] = nmm[3 * ch + 1];
		nd->mean[ch] = (float)mean[ch];
		nd->rstd[ch] = (float)(1.0 / sqrt(nmm[3 * ch + 2] / count + nd->eps));
		nd->varu[ch] = (float)(nmm[3 * ch + 2] / (count - 1));
	}
	nd->count = count;
	batchnorm2d_normalise(y, x, mean, nd->rstd, P(m, nd->pw), P(m, nd->pb), nd->n, c, hw);
	return 0;
}

/* Its backward: the weight and bias gradients from this part (model_backward sums
 * them with the rest), the input gradient through the statistics of the whole batch. */
static int bn_backward_synced(model *m, gnode *nd, float *dx, const float *dy, const float *x, int hw)
{
	int c = nd->c;
	double *sg = m->sync_buf, *sgc = sg + c;
	batchnorm2d_grad_sums(sg, sgc, dy, x, nd->mean, nd->n, c, hw);
	float *dw = G(m, nd->pw), *db = G(m, nd->pb);
	for (int ch = 0; ch < c; ch++) {
		if (dw)
			dw[ch] += (float)(sgc[ch] * nd->rstd[ch]);
		if (db)
			db[ch] += (float)sg[ch];
	}
	if (!dx)
		return 0;
	if (m->sync->sum(sg, 2 * (size_t)c) < 0)
		return err_wrap("BN gradient sums over the replicas");
	batchnorm2d_grad_input(dx, dy, x, nd->mean, nd->rstd, P(m, nd->pw), sg, sgc, nd->count, nd->n, c, hw);
	return 0;
}

static int forward_node(model *m, int i)
{
	gnode *nd = &m->nodes[i];
	const gnode *a = &m->nodes[nd->in[0]];
	const float *x = act(m, nd->in[0]);
	float *y = act_w(m, i);
	int hw = nd->h * nd->w;
	switch (nd->op) {
	case OP_CONV: {
		int rc;
		nd->cd.act = nd->fuse_act && fused_now(m) ? nd->fuse_act : CONV_ACT_NONE;
		if (nd->fold) {
			const float *fw = m->folded + nd->foff, *fb = fw + r16(m->params_info[nd->pw].count);
			rc = conv2d_forward(y, x, fw, fb, m->ws, &nd->cd);
		} else {
			rc = conv2d_forward(y, x, P(m, nd->pw), P(m, nd->pb), m->ws, &nd->cd);
		}
		if (rc == 0 && m->qmeans)
			channel_means(nd->cmean, y, nd->n, nd->c, hw);
		return rc;
	}
	case OP_BN:
		if (nd->skip)
			return 0;
		if (m->train && m->sync)
			return bn_forward_synced(m, nd, y, x, hw);
		if (m->train)
			return batchnorm2d_forward_train(y, nd->mean, nd->rstd, nd->varu, x, P(m, nd->pw), P(m, nd->pb),
							 nd->eps, nd->n, nd->c, hw);
		batchnorm2d_forward_eval(y, x, P(m, nd->pw), P(m, nd->pb), P(m, nd->prm), P(m, nd->prv), nd->eps, nd->n,
					 nd->c, hw);
		return 0;
	case OP_RELU:
		if (!(nd->fuse_act && fused_now(m)))
			relu_forward(y, x, cnt(nd));
		return 0;
	case OP_RELU6:
		if (nd->fuse_act && fused_now(m))
			return 0; /* its conv did it, in place */
		if (nd->as_relu && m->qapply)
			relu_forward(y, x, cnt(nd));
		else
			relu6_forward(y, x, cnt(nd));
		return 0;
	case OP_ADD:
		add_forward(y, x, act(m, nd->in[1]), cnt(nd));
		return 0;
	case OP_CONCAT: {
		const float *ins[GRAPH_MAXIN];
		int chans[GRAPH_MAXIN];
		for (int j = 0; j < nd->nin; j++) {
			ins[j] = act(m, nd->in[j]);
			chans[j] = m->nodes[nd->in[j]].c;
		}
		concat_forward(y, ins, chans, nd->nin, nd->n, hw);
		return 0;
	}
	case OP_UPSAMPLE:
		(nd->bilinear ? upsample_bilinear_forward : upsample_nearest_forward)(y, x, nd->n, nd->c, a->h, a->w,
										     nd->h, nd->w);
		return 0;
	case OP_MAXPOOL:
		maxpool2d_forward(y, m->train ? nd->argmax : NULL, x, &nd->pd);
		return 0;
	case OP_L2NORM:
		l2norm_forward(y, x, P(m, nd->pw), nd->eps, nd->n, nd->c, hw);
		return 0;
	case OP_FLATTEN:
		flatten_forward(m, nd, y);
		return 0;
	case OP_FQ:
		return fq_forward(m, nd, x, y);
	default:
		return err_set("%s: unknown op", nd->name);
	}
}

int model_forward(model *m, const float *input, float *const *outputs)
{
	if (!m->planned || m->int8_only)
		return err_set("model: not planned%s", m->int8_only ? " for the float forward (--int8 only)" : "");
	m->ext_input = input;
	m->ext_out = outputs;
	if (m->folded_dirty && m->nfolded)
		g_refold(m);
	for (int i = 1; i < m->nnodes; i++) {
		double t0 = m->profile ? omp_get_wtime() : 0;
		if (forward_node(m, i) < 0)
			return err_wrap("%s", m->nodes[i].name);
		if (m->profile)
			m->prof_fwd[g_prof_class(&m->nodes[i])] += omp_get_wtime() - t0;
	}
	if (m->profile)
		m->prof_calls++;
	return 0;
}

static void accumulate(float *dst, const float *src, size_t count)
{
#pragma omp parallel for simd schedule(static) if (count >= 65536)
	for (size_t i = 0; i < count; i++)
		dst[i] += src[i];
}

/* Where in[j]'s gradient goes: its buffer if this node writes first, else tmp (added
 * after); NULL if no gradient is needed. */
static float *dst_of(model *m, const gnode *nd, int j)
{
	if (nd->in[j] == 0 && !m->input_grad)
		return NULL;
	float *g = grad_of(m, nd->in[j]);
	if (!g)
		return NULL;
	return nd->first_writer[j] ? g : m->stores[nd->tmp].ptr;
}

static void finish_dst(model *m, const gnode *nd, int j)
{
	if (nd->first_writer[j] || (nd->in[j] == 0 && !m->input_grad))
		return;
	float *g = grad_of(m, nd->in[j]);
	if (g)
		accumulate(g, m->stores[nd->tmp].ptr, node_floats(&m->nodes[nd->in[j]]));
}

static int backward_node(model *m, int i)
{
	gnode *nd = &m->nodes[i];
	const gnode *a = &m->nodes[nd->in[0]];
	const float *x = act(m, nd->in[0]);
	const float *dy = grad_of(m, i);
	int hw = nd->h * nd->w;
	float *dx = NULL;
	switch (nd->op) {
	case OP_CONV:
		dx = dst_of(m, nd, 0);
		if (nd->fold) {
			const float *fw = m->folded + nd->foff;
			size_t wc = m->params_info[nd->pw].count;
			float *gw = m->fgrad, *gb = gw + r16(wc);
			memset(gw, 0, (r16(wc) + (size_t)nd->c) * sizeof(float));
			if (conv2d_backward(dx, gw, gb, dy, x, fw, m->ws, &nd->cd) < 0)
				return -1;
			unfold_grads(m, nd, gw, gb);
		} else if (conv2d_backward(dx, G(m, nd->pw), G(m, nd->pb), dy, x, P(m, nd->pw), m->ws, &nd->cd) < 0) {
			return -1;
		}
		break;
	case OP_BN:
		if (nd->skip)
			return 0; /* folded: its gradient is its conv's (aliased) */
		dx = dst_of(m, nd, 0);
		if (m->sync) {
			if (bn_backward_synced(m, nd, dx, dy, x, hw) < 0)
				return -1;
		} else {
			batchnorm2d_backward_train(dx, G(m, nd->pw), G(m, nd->pb), dy, x, nd->mean, nd->rstd, P(m, nd->pw),
						   nd->n, nd->c, hw);
		}
		break;
	case OP_RELU:
	case OP_RELU6:
		dx = dst_of(m, nd, 0);
		if (dx) {
			if (nd->op == OP_RELU || (nd->as_relu && m->qapply))
				relu_backward(dx, dy, act(m, i), cnt(nd));
			else
				relu6_backward(dx, dy, act(m, i), cnt(nd));
		}
		break;
	case OP_ADD:
		for (int j = 0; j < 2; j++) {
			float *g = nd->in[j] == 0 && !m->input_grad ? NULL : grad_of(m, nd->in[j]);
			if (!g || nd->galias[j])
				continue;
			if (nd->first_writer[j])
				memcpy(g, dy, cnt(nd) * sizeof(float));
			else
				accumulate(g, dy, cnt(nd));
		}
		return 0;
	case OP_CONCAT: {
		int chans[GRAPH_MAXIN];
		for (int j = 0; j < nd->nin; j++) {
			float *dinps[GRAPH_MAXIN] = {0};
			dinps[j] = dst_of(m, nd, j);
			for (int k = 0; k < nd->nin; k++)
				chans[k] = m->nodes[nd->in[k]].c;
			concat_backward(dinps, dy, chans, nd->nin, nd->n, hw);
			finish_dst(m, nd, j);
		}
		return 0;
	}
	case OP_UPSAMPLE:
		dx = dst_of(m, nd, 0);
		if (dx)
			(nd->bilinear ? upsample_bilinear_backward : upsample_nearest_backward)(dx, dy, nd->n, nd->c,
												a->h, a->w, nd->h, nd->w);
		break;
	case OP_MAXPOOL:
		dx = dst_of(m, nd, 0);
		if (dx)
			maxpool2d_backward(dx, dy, nd->argmax, &nd->pd);
		break;
	case OP_L2NORM:
		dx = dst_of(m, nd, 0);
		l2norm_backward(dx, G(m, nd->pw), dy, x, P(m, nd->pw), nd->eps, nd->n, nd->c, hw);
		break;
	case OP_FLATTEN:
		for (int j = 0; j < nd->nin; j++) {
			float *dinps[GRAPH_MAXIN] = {0};
			dinps[j] = dst_of(m, nd, j);
			flatten_backward(m, nd, dy, dinps);
			finish_dst(m, nd, j);
		}
		return 0;
	case OP_FQ:
		dx = dst_of(m, nd, 0);
		if (dx)
			fq_backward(m, nd, x, dy, dx);
		break;
	default:
		return err_set("%s: unknown op", nd->name);
	}
	finish_dst(m, nd, 0);
	return 0;
}

int model_backward(model *m, const float *const *doutputs, float *dinput)
{
	if (!m->planned || !m->train)
		return err_set("model: backward needs a training plan");
	m->ext_dout = doutputs;
	m->ext_dinput = m->input_grad ? dinput : NULL;
	memset(m->grads, 0, m->nfloats * sizeof(float));
	int rc = 0;
	for (int i = m->nnodes - 1; i >= 1 && !rc; i--) {
		double t0 = m->profile ? omp_get_wtime() : 0;
		if (backward_node(m, i) < 0)
			rc = err_wrap("%s: backward", m->nodes[i].name);
		if (m->profile)
			m->prof_bwd[g_prof_class(&m->nodes[i])] += omp_get_wtime() - t0;
	}
	if (!rc && m->sync && m->sync->sum_f32(m->grads, m->nfloats) < 0)
		rc = err_wrap("gradients: summing over the replicas");
	return rc;
}

int model_set_sync(model *m, const model_sync *s)
{
	free(m->sync_buf);
	m->sync_buf = NULL;
	m->sync = NULL;
	if (!s || s->replicas <= 1)
		return 0;
	int cmax = 1;
	for (int i = 0; i < m->nnodes; i++)
		if (m->nodes[i].op == OP_BN && m->nodes[i].c > cmax)
			cmax = m->nodes[i].c;
	/* forward: means, m2 and the (count, mean, m2) triples; backward: the gradient sums */
	if (!(m->sync_buf = malloc(5 * (size_t)cmax * sizeof(double))))
		return err_set("out of memory");
	m->sync = s;
	return 0;
}

/* NULL before the first training plan */
const float *model_grads(const model *m)
{
	return m->grads;
}

void model_set_profile(model *m, int on)
{
	m->profile = on;
	memset(m->prof_fwd, 0, sizeof m->prof_fwd);
	memset(m->prof_bwd, 0, sizeof m->prof_bwd);
	m->prof_calls = 0;
}

void model_get_profile(const model *m, model_profile *p)
{
	memset(p, 0, sizeof *p);
	for (int c = 1; c < OP_COUNT + 2 && p->n < MODEL_PROF_MAX; c++) {
		if (m->prof_fwd[c] == 0 && m->prof_bwd[c] == 0)
			continue;
		p->op[p->n] = prof_name(c);
		p->fwd[p->n] = m->prof_fwd[c];
		p->bwd[p->n] = m->prof_bwd[c];
		p->n++;
	}
	p->calls = m->prof_calls;
}

const char *graph_op_name(enum op op)
{
	return op_names[op];
}

void graph_free(model *m)
{
	qexec_free(m->qx, m->nnodes);
	free_plan(m);
	free(m->nodes);
	free(m->params_info);
	free(m->params);
	free(m->grads);
	free(m->sync_buf);
	free(m->bnstats);
	free(m->qnode);
	free(m->qrange);
	free(m->qstat);
	free(m->qa);
	free(m->cmeans);
	free(m->cfracs);
	free(m->fparams);
}
