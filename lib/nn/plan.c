/* plan: one input shape and mode -> every activation, gradient and workspace buffer,
 * memory shared between values whose lifetimes do not overlap (model_plan, graph.h). */
#include "nn/graph.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/err.h"
#include "core/tensor.h"
#include "kernels/layers.h"

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
	s->off = 0;
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

void g_free_plan(model *m)
{
	if (m->arena)
		munmap(m->arena, m->arena_bytes);
	m->arena = NULL;
	m->arena_bytes = 0;
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
	if (in == 0 || src->keep || src->nconsumers != 1 || src->store < 0 || g_node_floats(src) != g_node_floats(nd))
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
		int quant = m->q.npoints && (!m->train || m->q.apply);
		if (!quant && (m->train || !bn))
			continue;
		nd->fold = 1;
		nd->fold_bn = bn;
		nd->foff = nf;
		m->nodes[i + 1].skip = bn;
		size_t f = g_folded_floats(m, nd);
		nf += f;
		if (f > fg)
			fg = f;
	}
	m->nfolded = nf;
	m->fgrad_floats = m->train ? fg : 0;
}

static int live_together(const storage *a, const storage *b)
{
	return a->birth <= b->death && b->birth <= a->death;
}

static const storage *sort_stores;

/* larger first, then earlier born: the greedy order */
static int by_size(const void *pa, const void *pb)
{
	const storage *a = &sort_stores[*(const int *)pa], *b = &sort_stores[*(const int *)pb];
	if (a->bytes != b->bytes)
		return a->bytes < b->bytes ? 1 : -1;
	return (a->birth > b->birth) - (a->birth < b->birth);
}

static int by_offset(const void *pa, const void *pb)
{
	const storage *a = &sort_stores[*(const int *)pa], *b = &sort_stores[*(const int *)pb];
	return (a->off > b->off) - (a->off < b->off);
}

/* Places every storage at an offset of one arena, largest first, each in the smallest
 * gap left between the placed storages whose lifetimes overlap its own (or after
 * them): the arena comes out near the peak of the live bytes. The arena is mapped
 * fresh: its pages are zero and first touched by the layer that writes them (every
 * value is written before it is read), not by a memset here. */
static int place_storages(model *m)
{
	int ns = m->nstores, *order = malloc((size_t)(ns ? ns : 1) * sizeof *order);
	int *placed = malloc((size_t)(ns ? ns : 1) * sizeof *placed);
	if (!order || !placed) {
		free(order);
		free(placed);
		return err_set("out of memory");
	}
	for (int i = 0; i < ns; i++)
		order[i] = i;
	sort_stores = m->stores;
	qsort(order, (size_t)ns, sizeof *order, by_size);
	size_t total = 0;
	for (int k = 0; k < ns; k++) {
		storage *s = &m->stores[order[k]];
		/* the placed ones alive with s, by offset */
		int np = 0;
		for (int j = 0; j < k; j++)
			if (live_together(&m->stores[order[j]], s))
				placed[np++] = order[j];
		qsort(placed, (size_t)np, sizeof *placed, by_offset);
		size_t end = 0, best = SIZE_MAX, best_gap = SIZE_MAX;
		for (int j = 0; j < np; j++) {
			const storage *p = &m->stores[placed[j]];
			if (p->off > end && p->off - end >= s->bytes && p->off - end < best_gap) {
				best = end;
				best_gap = p->off - end;
			}
			if (p->off + p->bytes > end)
				end = p->off + p->bytes;
		}
		s->off = best != SIZE_MAX ? best : end;
		if (s->off + s->bytes > total)
			total = s->off + s->bytes;
	}
	free(order);
	free(placed);
	m->arena_bytes = total ? total : 64;
	void *a = mmap(NULL, m->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return err_set("out of memory mapping %zu bytes of activations", m->arena_bytes);
	huge_pages_hint(a, m->arena_bytes);
	m->arena = a;
	for (int i = 0; i < ns; i++)
		m->stores[i].ptr = (float *)((char *)a + m->stores[i].off);
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
		if (conv->op != OP_CONV || conv->nconsumers != 1 || conv->keep || a->store != conv->store || g_is_output(m, c))
			continue;
		conv->fuse_act = a->op == OP_RELU ? CONV_ACT_RELU : CONV_ACT_RELU6;
		a->fuse_act = 1;
	}
}


/* Inference of a float model runs an n-image batch as n passes of one image over a plan
 * for one: every image's values are computed as in the batch (no op mixes images
 * outside training), buffers are n times smaller, stay in cache between layers and are
 * planned (first touched) in the time of one image's. Kept values are the whole
 * batch's, and the integer path (quant/qexec.c) plans whole batches: those keep n. */
static int pass_images(const model *m, int n, int train)
{
	if (train || m->q.npoints)
		return n;
	for (int i = 1; i < m->nnodes; i++)
		if (m->nodes[i].keep)
			return n;
	return 1;
}

int model_plan(model *m, int n, int h, int w, int train, int input_grad)
{
	g_free_plan(m);
	m->train = train;
	m->input_grad = train && input_grad;
	if (n < 1 || h < 1 || w < 1)
		return err_set("model: bad input shape [%d,3,%d,%d]", n, h, w);
	if (train && !m->grads && !(m->grads = aligned_zalloc((m->nfloats ? m->nfloats : 1) * sizeof(float))))
		return -1;
	int pass_n = pass_images(m, n, train);
	if (g_shapes(m, pass_n, h, w) < 0)
		return -1;
	int F = m->nnodes;
	plan_folds(m);
	/* activations: a storage per value, shared by in-place chains */
	for (int i = 1; i < F; i++) {
		gnode *nd = &m->nodes[i];
		nd->gstore = nd->tmp = -1;
		memset(nd->first_writer, 0, sizeof nd->first_writer);
		memset(nd->galias, 0, sizeof nd->galias);
		if (nd->op == OP_FLATTEN && g_is_output(m, i)) {
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
		else if ((nd->store = new_store(m, g_node_floats(nd), i, i)) < 0)
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
			nd->argmax = malloc(g_node_floats(nd) * sizeof(int32_t));
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
			if (nd->op == OP_FLATTEN && g_is_output(m, i))
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
						   (src->gstore = new_store(m, g_node_floats(src), step, step)) < 0) {
						return -1;
					}
				} else if (nd->op != OP_ADD && g_node_floats(src) > tmp) {
					tmp = g_node_floats(src);
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
	if (!m->q.integer_only && place_storages(m) < 0)
		return -1;
	size_t ws = 0;
	for (int i = 1; i < F && !m->q.integer_only; i++)
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
	m->plan_n = n;
	m->pass_n = pass_n;
	m->plan_h = h;
	m->plan_w = w;
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
	if (!nd->keep || !m->planned || nd->store < 0 || m->q.integer_only) {
		err_set("model: '%s' was not kept (model_keep before model_plan)", name);
		return NULL;
	}
	shape[0] = nd->n;
	shape[1] = nd->c;
	shape[2] = nd->h;
	shape[3] = nd->w;
	return m->stores[nd->store].ptr;
}

void model_plan_poison(model *m)
{
	if (m->arena)
		memset(m->arena, 0xff, m->arena_bytes); /* all ones: a NaN in every float */
	if (m->ws)
		memset(m->ws, 0xff, m->ws_bytes);
}

void model_plan_get_info(const model *m, model_plan_info *info)
{
	memset(info, 0, sizeof *info);
	info->activation_bytes = m->arena ? m->arena_bytes : 0;
	info->workspace_bytes = m->ws_bytes + m->nfolded * sizeof(float);
	info->buffers = m->nstores;
}
