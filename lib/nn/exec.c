/* exec: the planned graph forward and backward, node by node on the kernels (fake
 * quantisation, BN over replicas, the per-op profile; graph.h, model.h). */
#include "nn/graph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/err.h"
#include "kernels/layers.h"

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
	return cls == PROF_CONV1X1 ? "conv1x1" : cls == PROF_CONVDW ? "conv_dw" : graph_op_name(cls);
}

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

static int fused_now(const model *m)
{
	return !m->train && !m->q.apply && !m->q.stats && !m->q.means;
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
	size_t n = g_node_floats(nd);
	if (m->q.stats && m->sync && m->train) {
		if (batch_range_synced(m, x, n, m->q.stat + 2 * nd->qp) < 0)
			return -1;
	} else if (m->q.stats) {
		quant_batch_range(x, n, m->q.stat + 2 * nd->qp);
	}
	if (!m->q.apply) {
		if (y != x)
			memcpy(y, x, n * sizeof(float));
		return 0;
	}
	const qact *a = &m->q.act[nd->qp];
	const size_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > chunk)
	for (size_t o = 0; o < n; o += chunk)
		quant_act(x + o, n - o < chunk ? n - o : chunk, a, y + o, NULL);
	return 0;
}

static void fq_backward(model *m, const gnode *nd, const float *x, const float *dy, float *dx)
{
	size_t n = g_node_floats(nd);
	if (!m->q.apply) {
		memcpy(dx, dy, n * sizeof(float));
		return;
	}
	const qact *a = &m->q.act[nd->qp];
	const size_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > chunk)
	for (size_t o = 0; o < n; o += chunk)
		quant_act_backward(x + o, dy + o, n - o < chunk ? n - o : chunk, a, dx + o);
}

/* out [n, rows, K] rows from (y, x, a) of each input [n, A*K, h, w] (NHWC order): per
 * image and input a transpose of [C][hw] into [hw][C], in tiles of pixels by channels
 * so that reads and writes both stay within a few cache lines. */
static void flatten_forward(model *m, const gnode *nd, float *out)
{
	enum { TILE = 16 };
	int K = nd->c, rows = nd->h;
	for (int j = 0, r0 = 0; j < nd->nin; j++) {
		const gnode *s = &m->nodes[nd->in[j]];
		const float *x = act(m, nd->in[j]);
		int C = s->c, hw = s->h * s->w, tiles = (hw + TILE - 1) / TILE;
#pragma omp parallel for collapse(2) schedule(static)
		for (int b = 0; b < nd->n; b++)
			for (int t = 0; t < tiles; t++) {
				const float *xb = x + (size_t)b * C * hw;
				float *ob = out + ((size_t)b * rows + r0) * K; /* [hw][C] from here */
				int p0 = t * TILE, p1 = p0 + TILE < hw ? p0 + TILE : hw;
				for (int c0 = 0; c0 < C; c0 += TILE) {
					int c1 = c0 + TILE < C ? c0 + TILE : C;
					for (int p = p0; p < p1; p++)
						for (int c = c0; c < c1; c++)
							ob[(size_t)p * C + c] = xb[(size_t)c * hw + p];
				}
			}
		r0 += hw * (C / K);
	}
}

/* Its transpose back, [hw][C] into [C][hw], in the same tiles. */
static void flatten_backward(model *m, const gnode *nd, const float *dout, float *const *dinps)
{
	enum { TILE = 16 };
	int K = nd->c, rows = nd->h;
	for (int j = 0, r0 = 0; j < nd->nin; j++) {
		const gnode *s = &m->nodes[nd->in[j]];
		float *dx = dinps[j];
		int C = s->c, hw = s->h * s->w, tiles = (C + TILE - 1) / TILE;
		if (dx) {
#pragma omp parallel for collapse(2) schedule(static)
			for (int b = 0; b < nd->n; b++)
				for (int t = 0; t < tiles; t++) {
					float *db = dx + (size_t)b * C * hw;
					const float *gb = dout + ((size_t)b * rows + r0) * K; /* [hw][C] */
					int c0 = t * TILE, c1 = c0 + TILE < C ? c0 + TILE : C;
					for (int p0 = 0; p0 < hw; p0 += TILE) {
						int p1 = p0 + TILE < hw ? p0 + TILE : hw;
						for (int c = c0; c < c1; c++)
							for (int p = p0; p < p1; p++)
								db[(size_t)c * hw + p] = gb[(size_t)p * C + c];
					}
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
	batchnorm2d_normalise(y, x, mean, nd->rstd, g_param(m, nd->wparam), g_param(m, nd->bparam), nd->n, c, hw);
	return 0;
}

/* Its backward: the weight and bias gradients from this part (model_backward sums
 * them with the rest), the input gradient through the statistics of the whole batch. */
static int bn_backward_synced(model *m, gnode *nd, float *dx, const float *dy, const float *x, int hw)
{
	int c = nd->c;
	double *sg = m->sync_buf, *sgc = sg + c;
	batchnorm2d_grad_sums(sg, sgc, dy, x, nd->mean, nd->n, c, hw);
	float *dw = g_grad(m, nd->wparam), *db = g_grad(m, nd->bparam);
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
	batchnorm2d_grad_input(dx, dy, x, nd->mean, nd->rstd, g_param(m, nd->wparam), sg, sgc, nd->count, nd->n, c, hw);
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
			const float *fw = g_folded_weights(m, nd), *fb = g_folded_bias(m, nd);
			rc = conv2d_forward(y, x, fw, fb, m->ws, &nd->cd);
		} else {
			rc = conv2d_forward(y, x, g_param(m, nd->wparam), g_param(m, nd->bparam), m->ws, &nd->cd);
		}
		if (rc == 0 && m->q.means)
			channel_means(nd->cmean, y, nd->n, nd->c, hw);
		return rc;
	}
	case OP_BN:
		if (nd->skip)
			return 0;
		if (m->train && m->sync)
			return bn_forward_synced(m, nd, y, x, hw);
		if (m->train)
			return batchnorm2d_forward_train(y, nd->mean, nd->rstd, nd->varu, x, g_param(m, nd->wparam), g_param(m, nd->bparam),
							 nd->eps, nd->n, nd->c, hw);
		batchnorm2d_forward_eval(y, x, g_param(m, nd->wparam), g_param(m, nd->bparam), g_param(m, nd->prm), g_param(m, nd->prv), nd->eps, nd->n,
					 nd->c, hw);
		return 0;
	case OP_RELU:
		if (!(nd->fuse_act && fused_now(m)))
			relu_forward(y, x, g_node_floats(nd));
		return 0;
	case OP_RELU6:
		if (nd->fuse_act && fused_now(m))
			return 0; /* its conv did it, in place */
		if (nd->as_relu && m->q.apply)
			relu_forward(y, x, g_node_floats(nd));
		else
			relu6_forward(y, x, g_node_floats(nd));
		return 0;
	case OP_ADD:
		add_forward(y, x, act(m, nd->in[1]), g_node_floats(nd));
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
		l2norm_forward(y, x, g_param(m, nd->wparam), nd->eps, nd->n, nd->c, hw);
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
	if (!m->planned || m->q.integer_only)
		return err_set("model: not planned%s", m->q.integer_only ? " for the float forward (--int8 only)" : "");
	g_refresh_folds(m);
	/* pass_n images at a time (model_plan): each pass's input and outputs at its offset */
	size_t image_floats = (size_t)3 * m->plan_h * m->plan_w;
	float *outs[4];
	for (int b = 0; b < m->plan_n; b += m->pass_n) {
		for (int j = 0; j < m->noutputs; j++)
			outs[j] = outputs[j] + (size_t)b * m->nodes[m->outputs[j]].h * m->nodes[m->outputs[j]].c;
		m->ext_input = input + b * image_floats;
		m->ext_out = outs;
		for (int i = 1; i < m->nnodes; i++) {
			double t0 = m->profile ? omp_get_wtime() : 0;
			if (forward_node(m, i) < 0)
				return err_wrap("%s", m->nodes[i].name);
			if (m->profile)
				m->prof_fwd[g_prof_class(&m->nodes[i])] += omp_get_wtime() - t0;
		}
	}
	m->ext_out = outputs; /* not outs: backward may read them after this returns */
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
		accumulate(g, m->stores[nd->tmp].ptr, g_node_floats(&m->nodes[nd->in[j]]));
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
			const float *fw = g_folded_weights(m, nd);
			/* the gradient in the folded layout */
			float *gw = m->fgrad, *gb = gw + (g_folded_bias(m, nd) - fw);
			memset(gw, 0, g_folded_floats(m, nd) * sizeof(float));
			if (conv2d_backward(dx, gw, gb, dy, x, fw, m->ws, &nd->cd) < 0)
				return -1;
			g_unfold_grads(m, nd, gw, gb);
		} else if (conv2d_backward(dx, g_grad(m, nd->wparam), g_grad(m, nd->bparam), dy, x, g_param(m, nd->wparam), m->ws, &nd->cd) < 0) {
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
			batchnorm2d_backward_train(dx, g_grad(m, nd->wparam), g_grad(m, nd->bparam), dy, x, nd->mean, nd->rstd, g_param(m, nd->wparam),
						   nd->n, nd->c, hw);
		}
		break;
	case OP_RELU:
	case OP_RELU6:
		dx = dst_of(m, nd, 0);
		if (dx) {
			if (nd->op == OP_RELU || (nd->as_relu && m->q.apply))
				relu_backward(dx, dy, act(m, i), g_node_floats(nd));
			else
				relu6_backward(dx, dy, act(m, i), g_node_floats(nd));
		}
		break;
	case OP_ADD:
		for (int j = 0; j < 2; j++) {
			float *g = nd->in[j] == 0 && !m->input_grad ? NULL : grad_of(m, nd->in[j]);
			if (!g || nd->galias[j])
				continue;
			if (nd->first_writer[j])
				memcpy(g, dy, g_node_floats(nd) * sizeof(float));
			else
				accumulate(g, dy, g_node_floats(nd));
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
		l2norm_backward(dx, g_grad(m, nd->wparam), dy, x, g_param(m, nd->wparam), nd->eps, nd->n, nd->c, hw);
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
