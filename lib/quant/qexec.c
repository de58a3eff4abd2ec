/* qexec: the quantised model on integers (model_forward_integer; kernels in qlayers.c).
 *
 * Every quantisation point of the graph (the fq nodes model_quantize inserted) holds
 * integers with the point's frac, bytes in an 8-bit model and 16-bit words in a wider
 * one (qlayers.h); an upsample holds its input's. A point is computed from
 * what produced it: a conv (with its folded BN and its ReLU/ReLU6, which the point's
 * unsigned clip carries out), an add, a concat, a maxpool, a ReLU of a point (ResNet's
 * after the residual add), an L2Norm (SSD VGG's, on integer sums of squares) or the
 * input image. A nearest upsample holds its input's bytes
 * again; a bilinear one is computed inside the add that reads it (FPN's top-down sum),
 * where its dyadic weights keep it an integer. The flattened outputs are dequantised to
 * f32. Conv weights and biases are the simulation's own (graph.c's folded and quantised
 * ones, times 2^frac: exact integers), so both paths run the same model. A batch runs
 * image by image: the arena and the conv descriptors hold one image. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/err.h"
#include "nn/graph.h"
#include "quant/qmodel.h"
#include "kernels/qlayers.h"

enum qkind {
	QK_NONE, QK_INPUT, QK_CONV, QK_ADD, QK_CONCAT, QK_MAXPOOL, QK_RELU, QK_L2NORM, QK_UPSAMPLE, QK_BILINEAR,
	QK_FLATTEN
};

/* bits of a bilinear tap's weight: 2 for FPN's x2; 8 leaves room for any power-of-2 ratio up to 256 */
#define BILINEAR_BITS 8

typedef struct qnode {
	enum qkind kind;
	int src;                 /* QK_CONV: the conv node; others: the producer */
	size_t off;              /* into qexec.act: this node's bytes (points, upsamples) */
	int frac, sgn;
	int32_t lo, hi;
	qconv conv;
	void *weight;            /* QK_CONV: [k][rp] int8, int16 in a 16-bit model */
	double *wide_weight;     /* [k][r], a 16-bit model's */
	int32_t *tap_weight;     /* k * rp bytes: the grouped path's (qconv) */
	int64_t *bias, *gemm_bias;
	int *shifts;             /* [k] each output channel's (per-channel depthwise convs) */
	qtaps rows, cols;        /* QK_BILINEAR: no bytes of its own, the add interpolates */
} qnode;

struct qexec {
	int n, h, w;             /* the plan it was made for */
	int wide;                /* QF_WIDE for a model of more than 8 bits, else 0 */
	size_t esz;              /* bytes an integer */
	long fold_gen;           /* the folded weights its integers come from */
	qnode *q;                /* [nnodes] */
	uint8_t *act;
	uint8_t *ws;
	size_t ws_bytes;
};

void qexec_free(model *m)
{
	struct qexec *x = m->q.exec;
	int nnodes = m->nnodes;
	if (!x)
		return;
	for (int i = 0; x->q && i < nnodes; i++) {
		free(x->q[i].weight);
		free(x->q[i].wide_weight);
		free(x->q[i].tap_weight);
		free(x->q[i].shifts);
		free(x->q[i].bias);
		free(x->q[i].gemm_bias);
		free(x->q[i].rows.i0);
		free(x->q[i].rows.w0);
		free(x->q[i].cols.i0);
		free(x->q[i].cols.w0);
	}
	free(x->q);
	free(x->act);
	free(x->ws);
	free(x);
	m->q.exec = NULL;
}

/* The conv behind point i (through its folded BN and activation), or -1. */
static int conv_of(const model *m, int p, int *act)
{
	const gnode *nd = &m->nodes[p];
	*act = nd->op == OP_RELU || nd->op == OP_RELU6;
	if (*act)
		nd = &m->nodes[p = nd->in[0]];
	if (nd->op == OP_BN && nd->skip)
		nd = &m->nodes[p = nd->in[0]];
	return nd->op == OP_CONV && nd->fold ? p : -1;
}

/* The values step i reads (into ins); returns how many. */
static int reads(const model *m, const struct qexec *x, int i, int *ins)
{
	const qnode *q = &x->q[i];
	const gnode *nd = &m->nodes[i], *p = q->src >= 0 ? &m->nodes[q->src] : NULL;
	switch (q->kind) {
	case QK_CONV:
		ins[0] = p->in[0];
		return 1;
	case QK_ADD: /* a bilinear input reads its source */
		for (int j = 0; j < p->nin; j++)
			ins[j] = x->q[p->in[j]].kind == QK_BILINEAR ? x->q[p->in[j]].src : p->in[j];
		return p->nin;
	case QK_CONCAT:
	case QK_MAXPOOL:
		memcpy(ins, p->in, (size_t)p->nin * sizeof *ins);
		return p->nin;
	case QK_RELU:
	case QK_L2NORM:
		ins[0] = p->in[0];
		return 1;
	case QK_UPSAMPLE:
		ins[0] = q->src;
		return 1;
	case QK_FLATTEN:
		memcpy(ins, nd->in, (size_t)nd->nin * sizeof *ins);
		return nd->nin;
	default:
		return 0;
	}
}

/* A node's values for one image: the integer path runs a batch image by image */
static size_t image_floats(const gnode *nd)
{
	return g_node_floats(nd) / (size_t)nd->n;
}

/* Offsets of the values in one arena: a value lives from the step that writes it to the
 * last that reads it, and takes the lowest gap between the live ones that fits it. */
static int place(const model *m, struct qexec *x, size_t *bytes)
{
	int F = m->nnodes, nlive = 0, ins[GRAPH_MAXIN];
	int *death = malloc((size_t)F * sizeof *death), *live = malloc((size_t)F * sizeof *live);
	if (!death || !live) {
		free(death);
		free(live);
		return err_set("out of memory");
	}
	for (int i = 0; i < F; i++)
		death[i] = i;
	for (int i = 0; i < F; i++)
		for (int j = 0, k = reads(m, x, i, ins); j < k; j++)
			death[ins[j]] = i;
	size_t top = 0;
	for (int i = 0; i < F; i++) {
		qnode *q = &x->q[i];
		if (q->kind == QK_NONE || q->kind == QK_FLATTEN || q->kind == QK_BILINEAR)
			continue;
		int k = 0; /* drop the values dead before this step; keep the rest sorted by offset */
		for (int j = 0; j < nlive; j++)
			if (death[live[j]] >= i)
				live[k++] = live[j];
		nlive = k;
		size_t need = (image_floats(&m->nodes[i]) * x->esz + 63) & ~(size_t)63, at = 0;
		int pos = 0;
		for (; pos < nlive; pos++) {
			const qnode *o = &x->q[live[pos]];
			if (o->off >= at + need)
				break;
			size_t end = o->off + ((image_floats(&m->nodes[live[pos]]) * x->esz + 63) & ~(size_t)63);
			at = end > at ? end : at;
		}
		q->off = at;
		memmove(live + pos + 1, live + pos, (size_t)(nlive - pos) * sizeof *live);
		live[pos] = i;
		nlive++;
		top = at + need > top ? at + need : top;
	}
	free(death);
	free(live);
	*bytes = top;
	return 0;
}

/* The format of value q's integers */
static int fmt(const struct qexec *x, const qnode *q)
{
	return (q->sgn ? QF_SIGNED : 0) | x->wide;
}

/* Does value i have bytes of its own in the arena? */
static int has_bytes(const struct qexec *x, int i)
{
	enum qkind k = x->q[i].kind;
	return k != QK_NONE && k != QK_BILINEAR && k != QK_FLATTEN;
}

/* Node i, a bilinear upsample of a point, as the integer taps of both axes. */
static int bilinear_taps(model *m, struct qexec *x, int i)
{
	const gnode *nd = &m->nodes[i], *src = &m->nodes[nd->in[0]];
	qnode *q = &x->q[i];
	qtaps *t[2] = {&q->rows, &q->cols};
	int in[2] = {src->h, src->w}, out[2] = {nd->h, nd->w};
	for (int a = 0; a < 2; a++) {
		int *idx = malloc((size_t)out[a] * 2 * sizeof *idx);
		int32_t *wt = malloc((size_t)out[a] * 2 * sizeof *wt);
		if (!idx || !wt) {
			free(idx);
			free(wt);
			return err_set("out of memory");
		}
		/* one allocation per array pair: i0 and w0 own them (qexec_free) */
		free(t[a]->i0);
		free(t[a]->w0);
		t[a]->i0 = idx, t[a]->i1 = idx + out[a], t[a]->w0 = wt, t[a]->w1 = wt + out[a];
		if (upsample_bilinear_int_taps(in[a], out[a], BILINEAR_BITS, t[a]->i0, t[a]->i1, t[a]->w0, t[a]->w1) < 0)
			return err_set("%s: bilinear %dx%d -> %dx%d: weights not multiples of 2^-%d, no exact integer path",
				       nd->name, src->h, src->w, nd->h, nd->w, BILINEAR_BITS);
	}
	return 0;
}

/* What each node does; the bytes of every value. */
static int classify(model *m, struct qexec *x, size_t *act_bytes)
{
	for (int i = 0; i < m->nnodes; i++) {
		gnode *nd = &m->nodes[i];
		qnode *q = &x->q[i];
		q->kind = QK_NONE;
		q->src = nd->nin ? nd->in[0] : -1;
		if (nd->op == OP_UPSAMPLE) {
			if (!has_bytes(x, q->src))
				return err_set("%s: upsample of an unquantised value", nd->name);
			q->kind = nd->bilinear ? QK_BILINEAR : QK_UPSAMPLE;
			if (nd->bilinear && bilinear_taps(m, x, i) < 0)
				return -1;
			q->frac = x->q[q->src].frac;
			q->sgn = x->q[q->src].sgn;
		} else if (nd->op == OP_FLATTEN) {
			q->kind = QK_FLATTEN;
			for (int j = 0; j < nd->nin; j++)
				if (!has_bytes(x, nd->in[j]))
					return err_set("%s: output of an unquantised value", nd->name);
			continue;
		} else if (nd->op == OP_FQ) {
			const qact *a = &m->q.act[nd->qp];
			const gnode *p = &m->nodes[q->src];
			int act, conv = conv_of(m, q->src, &act);
			q->frac = a->frac;
			q->sgn = a->qmin < 0;
			q->lo = a->qmin;
			q->hi = a->qmax;
			if (conv >= 0) {
				if (act && q->sgn)
					return err_set("%s: an activation into a signed point", nd->name);
				q->kind = QK_CONV;
				q->src = conv;
			} else if (p->op == OP_INPUT) {
				q->kind = QK_INPUT;
			} else if (p->op == OP_ADD) {
				q->kind = QK_ADD;
			} else if (p->op == OP_CONCAT) {
				q->kind = QK_CONCAT;
			} else if (p->op == OP_MAXPOOL) {
				q->kind = QK_MAXPOOL;
			} else if ((p->op == OP_RELU || p->op == OP_RELU6) && !q->sgn) {
				/* a ReLU(6) of a point clips at the unsigned point's range, as after a conv */
				q->kind = QK_RELU;
			} else if (p->op == OP_L2NORM) {
				q->kind = QK_L2NORM;
			} else {
				return err_set("%s: no integer kernel for %s", p->name, graph_op_name(p->op));
			}
			int bilinear = 0;
			for (int j = 0; j < p->nin && q->kind != QK_INPUT && q->kind != QK_CONV; j++) {
				if (x->q[p->in[j]].kind == QK_BILINEAR && q->kind == QK_ADD && !bilinear++)
					continue;
				if (!has_bytes(x, p->in[j]))
					return err_set("%s: input %s is not quantised%s", p->name, m->nodes[p->in[j]].name,
						       x->q[p->in[j]].kind == QK_BILINEAR
							       ? " (a bilinear upsample runs on integers only as one input of an add)"
							       : "");
			}
			if (q->kind == QK_ADD) { /* the integer add's bound (qlayers.h) */
				int lo = INT32_MAX, hi = INT32_MIN;
				for (int j = 0; j < p->nin; j++) {
					const qnode *in = &x->q[p->in[j]];
					int f = in->frac + (in->kind == QK_BILINEAR ? 2 * BILINEAR_BITS : 0);
					lo = f < lo ? f : lo;
					hi = f > hi ? f : hi;
				}
				if (hi - lo > QMAX_FRAC_GAP)
					return err_set("%s: inputs %d fraction bits apart (the integer add takes %d)", p->name,
						       hi - lo, QMAX_FRAC_GAP);
			}
		} else {
			continue;
		}
	}
	return place(m, x, act_bytes);
}

/* The integer weights and bias of point i's conv, from the simulation's folded ones. */
static int make_conv(model *m, struct qexec *x, int i)
{
	qnode *q = &x->q[i];
	const gnode *nd = &m->nodes[q->src], *in = &m->nodes[nd->in[0]];
	const qnode *qin = &x->q[nd->in[0]];
	const conv2d_desc *cd = &nd->cd;
	qconv *d = &q->conv;
	memset(d, 0, sizeof *d);
	d->n = 1, d->c = cd->c, d->h = cd->h, d->w = cd->w, d->k = cd->k;
	d->kh = cd->kh, d->kw = cd->kw, d->sh = cd->sh, d->sw = cd->sw, d->ph = cd->ph, d->pw = cd->pw;
	d->dh = cd->dh, d->dw = cd->dw, d->groups = cd->groups;
	d->in_fmt = fmt(x, qin);
	d->r = d->c / d->groups * d->kh * d->kw;
	d->rp = (d->r + 3) & ~3;
	if (qin->frac != nd->xfrac)
		return err_set("%s: input %s at frac %d, the conv expects %d", nd->name, in->name, qin->frac, nd->xfrac);
	d->shift = nd->wfrac + qin->frac - q->frac;
	d->lo = q->lo;
	d->hi = q->hi;
	size_t k = (size_t)d->k;
	if (!q->weight) {
		q->weight = calloc(k * d->rp, x->esz);
		q->bias = malloc(k * sizeof *q->bias);
		q->gemm_bias = malloc(k * sizeof *q->gemm_bias);
		/* only grouped convs take the grouped path (qconv_init) */
		q->tap_weight = d->groups > 1 && !x->wide ? malloc(k * d->rp) : NULL;
		q->shifts = malloc(k * sizeof *q->shifts);
		if (x->wide)
			q->wide_weight = malloc(k * d->r * sizeof *q->wide_weight);
		if (!q->weight || !q->bias || !q->gemm_bias || (d->groups > 1 && !x->wide && !q->tap_weight) ||
		    !q->shifts || (x->wide && !q->wide_weight))
			return err_set("out of memory");
	}
	int32_t wmax = x->wide ? 32767 : 127;
	const float *fw = g_folded_weights(m, nd), *fb = g_folded_bias(m, nd);
	for (size_t o = 0; o < k; o++) {
		/* each output channel at its own weight and bias scale (the same for all but
		 * per-channel depthwise convs) */
		int wf = nd->cfrac[2 * o], bf = nd->cfrac[2 * o + 1], accfrac = wf + qin->frac;
		if (bf > accfrac)
			return err_set("%s: channel %zu: bias frac %d above the accumulator's %d", nd->name, o, bf, accfrac);
		q->shifts[o] = accfrac - q->frac;
		/* times 2^wf, a normal f32 (exact, as ldexpf, which is a call a weight) */
		float unit = wf >= -126 && wf <= 127 ? ldexpf(1.0f, wf) : 0.0f;
		for (int j = 0; j < d->r; j++) {
			float v = unit != 0.0f ? fw[o * d->r + j] * unit : ldexpf(fw[o * d->r + j], wf), r = rintf(v);
			if (v != r || r < -wmax - 1 || r > wmax)
				return err_set("%s: weight %g is not a %d-bit integer at frac %d", nd->name,
					       (double)fw[o * d->r + j], x->wide ? 16 : 8, wf);
			if (x->wide)
				((int16_t *)q->weight)[o * d->rp + j] = (int16_t)r;
			else
				((int8_t *)q->weight)[o * d->rp + j] = (int8_t)r;
		}
		double b = ldexp(fb[o], bf), r = rint(b);
		if (b != r || fabs(r) > 2147483647.0)
			return err_set("%s: bias %g is not an integer at frac %d", nd->name, (double)fb[o], bf);
		/* a 32-bit bias moved by at most 2 * 16 bits: within int64 */
		int up = accfrac - bf;
		q->bias[o] = (int64_t)r * ((int64_t)1 << (up < 40 ? up : 40));
	}
	d->shifts = nd->per_channel ? q->shifts : NULL;
	d->weight = q->weight;
	d->wide_weight = q->wide_weight;
	d->tap_weight = q->tap_weight;
	d->bias = q->bias;
	if (qconv_init(d, q->gemm_bias) < 0)
		return err_wrap("%s", nd->name);
	return 0;
}

static int prepare(model *m)
{
	struct qexec *x = m->q.exec;
	if (!x || x->n != m->plan_n || x->h != m->plan_h || x->w != m->plan_w) {
		qexec_free(m);
		if (!(x = m->q.exec = calloc(1, sizeof *x)) || !(x->q = calloc((size_t)m->nnodes, sizeof *x->q)))
			return err_set("out of memory");
		size_t bytes = 0;
		x->wide = m->q.bits > 8 ? QF_WIDE : 0;
		x->esz = x->wide ? 2 : 1;
		if (classify(m, x, &bytes) < 0)
			return -1;
		if (!(x->act = malloc(bytes ? bytes : 1)))
			return err_set("int8: out of memory for %zu bytes of activations", bytes);
		x->n = m->plan_n, x->h = m->plan_h, x->w = m->plan_w;
		x->fold_gen = -1;
	}
	g_refresh_folds(m);
	if (x->fold_gen == m->fold_gen)
		return 0;
	size_t ws = 0;
	for (int i = 0; i < m->nnodes; i++) {
		if (x->q[i].kind != QK_CONV)
			continue;
		if (make_conv(m, x, i) < 0)
			return -1;
		size_t b = qconv_workspace_size(&x->q[i].conv);
		ws = b > ws ? b : ws;
	}
	if (ws > x->ws_bytes) {
		free(x->ws);
		if (!(x->ws = malloc(ws)))
			return err_set("int8: out of memory for %zu bytes of workspace", ws);
		x->ws_bytes = ws;
	}
	x->fold_gen = m->fold_gen;
	return 0;
}

/* image b of out [n, rows, K] from each input [A*K, h, w] (that image's) dequantised
 * (graph.c's flatten order) */
static void flatten(float *out, const model *m, const gnode *nd, int b)
{
	const struct qexec *x = m->q.exec;
	int K = nd->c, rows = nd->h;
	for (int j = 0, r0 = 0; j < nd->nin; j++) {
		const gnode *s = &m->nodes[nd->in[j]];
		const qnode *q = &x->q[nd->in[j]];
		const uint8_t *v = x->act + q->off;
		int C = s->c, hw = s->h * s->w, f = fmt(x, q);
		qdequant_planes(out + ((size_t)b * rows + r0) * K, v, f, C, hw, q->frac);
		r0 += hw * (C / K);
	}
}

/* Node i of image b */
static int run_node(model *m, int i, int b, const float *input, float *const *outputs)
{
	struct qexec *x = m->q.exec;
	const gnode *nd = &m->nodes[i];
	qnode *q = &x->q[i];
	uint8_t *out = x->act + q->off;
	const gnode *p = q->src >= 0 ? &m->nodes[q->src] : NULL;
	switch (q->kind) {
	case QK_NONE:
		return 0;
	case QK_INPUT:
		qquantise(out, input + (size_t)b * image_floats(nd), image_floats(nd), &m->q.act[nd->qp], fmt(x, q));
		return 0;
	case QK_CONV:
		qconv_forward(out, x->act + x->q[p->in[0]].off, x->ws, &q->conv);
		return 0;
	case QK_ADD: {
		int ia = p->in[0], ib = p->in[1];
		if (x->q[ia].kind == QK_BILINEAR) { /* the sum is the same either way round */
			ia = p->in[1];
			ib = p->in[0];
		}
		const qnode *qa = &x->q[ia], *qb = &x->q[ib];
		if (qb->kind == QK_BILINEAR) {
			const gnode *up = &m->nodes[ib], *src = &m->nodes[qb->src];
			const qnode *qs = &x->q[qb->src];
			qadd_bilinear(out, x->act + qa->off, fmt(x, qa), qa->frac, x->act + qs->off, fmt(x, qs), qs->frac, up->c,
				      src->h, src->w, up->h, up->w, &qb->rows, &qb->cols, BILINEAR_BITS,
				      q->frac, q->lo, q->hi);
			return 0;
		}
		qadd(out, x->act + qa->off, fmt(x, qa), qa->frac, x->act + qb->off, fmt(x, qb), qb->frac, image_floats(nd),
		     q->frac, q->lo, q->hi);
		return 0;
	}
	case QK_RELU: {
		const qnode *qs = &x->q[p->in[0]];
		qrescale(out, x->act + qs->off, fmt(x, qs), image_floats(nd), qs->frac - q->frac, q->lo, q->hi);
		return 0;
	}
	case QK_L2NORM: {
		const qnode *qs = &x->q[p->in[0]];
		ql2norm(out, x->act + qs->off, fmt(x, qs), qs->frac, model_param_data(m, p->wparam), p->eps, 1, p->c,
			p->h * p->w, &m->q.act[nd->qp]);
		return 0;
	}
	case QK_BILINEAR:
		return 0;
	case QK_CONCAT: {
		size_t hw = (size_t)nd->h * nd->w;
		for (int j = 0, c0 = 0; j < p->nin; j++) {
			const gnode *s = &m->nodes[p->in[j]];
			const qnode *qs = &x->q[p->in[j]];
			qrescale(out + (size_t)c0 * hw * x->esz, x->act + qs->off, fmt(x, qs), (size_t)s->c * hw,
				 qs->frac - q->frac, q->lo, q->hi);
			c0 += s->c;
		}
		return 0;
	}
	case QK_MAXPOOL: {
		const pool2d_desc *d = &p->pd;
		const qnode *qs = &x->q[p->in[0]];
		qmaxpool(out, x->act + qs->off, fmt(x, qs), 1, d->c, d->h, d->w, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw,
			 d->oh, d->ow, qs->frac - q->frac, q->lo, q->hi);
		return 0;
	}
	case QK_UPSAMPLE:
		qupsample_nearest(out, x->act + x->q[q->src].off, fmt(x, q), nd->c, p->h, p->w, nd->h, nd->w);
		return 0;
	case QK_FLATTEN:
		for (int o = 0; o < m->noutputs; o++)
			if (m->outputs[o] == i)
				flatten(outputs[o], m, nd, b);
		return 0;
	}
	return err_set("%s: unknown integer step", nd->name);
}

void model_set_integer_only(model *m, int on)
{
	m->q.integer_only = on;
}

int model_forward_integer(model *m, const float *input, float *const *outputs)
{
	if (!m->planned || m->train)
		return err_set("int8: the model needs an inference plan");
	if (!m->q.apply)
		return err_set("int8: the model is not quantised (ranges loaded)");
	if (m->q.bits > 16)
		return err_set("int8: %d-bit model: the integer path runs 16 bits or fewer", m->q.bits);
	if (prepare(m) < 0)
		return err_wrap("int8");
	/* image by image: one image's values stay in the caches from layer to layer, where
	 * a batch's were 8 times as large (MobileNetV2's first expansions: 6 MB an image) */
	for (int b = 0; b < m->plan_n; b++)
		for (int i = 0; i < m->nnodes; i++) {
			const qnode *q = &m->q.exec->q[i];
			double t0 = m->profile ? omp_get_wtime() : 0;
			if (run_node(m, i, b, input, outputs) < 0)
				return err_wrap("int8");
			/* a point's time goes to what produced it */
			if (m->profile && q->kind != QK_NONE)
				m->prof_fwd[g_prof_class(&m->nodes[q->kind == QK_UPSAMPLE || q->kind == QK_FLATTEN ? i : q->src])] +=
					omp_get_wtime() - t0;
		}
	if (m->profile)
		m->prof_calls++;
	return 0;
}
