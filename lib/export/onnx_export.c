/* onnx_export: the graph (graph.h) as ONNX through protobuf-c (see onnx_export.h). */
#include "export/onnx_export.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/afile.h"
#include "core/err.h"
#include "nn/graph.h"
#include "onnx.pb-c.h"

/* Every message, name and small array of one export lives in one arena, freed at the
 * end; weights point into the model's memory (no copies). */
typedef struct block {
	struct block *next;
	max_align_t data[];
} block;

typedef struct exporter {
	block *blocks;
	int opset, round;
	model *m;
	Onnx__NodeProto **node;
	size_t nnode, node_cap;
	Onnx__TensorProto **init;
	size_t ninit, init_cap;
	int nclips;
	int64_t weights;
} exporter;

static void *alloc(exporter *e, size_t bytes)
{
	block *b = calloc(1, sizeof *b + bytes);
	if (!b)
		return NULL;
	b->next = e->blocks;
	e->blocks = b;
	return b->data;
}

static char *str(exporter *e, const char *fmt, ...) ERR_PRINTF(2, 3);
static char *str(exporter *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = alloc(e, (size_t)n + 1);
	if (!s)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static void free_blocks(exporter *e)
{
	while (e->blocks) {
		block *n = e->blocks->next;
		free(e->blocks);
		e->blocks = n;
	}
}

/* An f32 or i64 initializer of shape dims; data is copied only when small (copy set),
 * else referenced. */
static int initializer(exporter *e, const char *name, int is_i64, int ndim, const int64_t *dims, const void *data,
		       int64_t count, int copy)
{
	if (e->ninit == e->init_cap)
		return err_set("onnx: too many initializers");
	Onnx__TensorProto *t = alloc(e, sizeof *t);
	int64_t *d = alloc(e, (size_t)(ndim ? ndim : 1) * sizeof *d);
	size_t bytes = (size_t)count * (is_i64 ? 8 : 4);
	void *buf = copy ? alloc(e, bytes ? bytes : 1) : (void *)data;
	char *nm = str(e, "%s", name);
	if (!t || !d || !buf || !nm)
		return err_set("out of memory");
	onnx__tensor_proto__init(t);
	if (ndim)
		memcpy(d, dims, (size_t)ndim * sizeof *d);
	if (copy && bytes)
		memcpy(buf, data, bytes);
	t->name = nm;
	t->n_dims = (size_t)ndim;
	t->dims = d;
	t->has_data_type = 1;
	t->data_type = is_i64 ? ONNX__TENSOR_PROTO__DATA_TYPE__INT64 : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	t->has_raw_data = 1; /* little-endian, as the format says: this machine's order */
	t->raw_data.len = bytes;
	t->raw_data.data = buf;
	e->init[e->ninit++] = t;
	if (!is_i64)
		e->weights += count;
	return 0;
}

typedef struct attr {
	const char *name;
	enum { A_INT, A_INTS, A_FLOAT, A_STRING } type;
	int64_t i;
	int n;
	int64_t ints[4];
	float f;
	const char *s;
} attr;

/* A node op_type(inputs) -> outputs with its attributes. */
static int node_n(exporter *e, const char *op, const char *name, const char *const *in, int nin,
		  const char *const *out, int nout, const attr *attrs, int nattr)
{
	if (e->nnode == e->node_cap)
		return err_set("onnx: too many nodes");
	Onnx__NodeProto *n = alloc(e, sizeof *n);
	char **ins = alloc(e, (size_t)(nin ? nin : 1) * sizeof *ins), **outs = alloc(e, (size_t)nout * sizeof *outs);
	Onnx__AttributeProto **as = alloc(e, (size_t)(nattr ? nattr : 1) * sizeof *as);
	if (!n || !ins || !outs || !as)
		return err_set("out of memory");
	onnx__node_proto__init(n);
	for (int i = 0; i < nin; i++)
		if (!(ins[i] = str(e, "%s", in[i])))
			return err_set("out of memory");
	for (int i = 0; i < nout; i++)
		if (!(outs[i] = str(e, "%s", out[i])))
			return err_set("out of memory");
	if (!(n->op_type = str(e, "%s", op)) || !(n->name = str(e, "%s", name)))
		return err_set("out of memory");
	n->n_input = (size_t)nin;
	n->input = ins;
	n->n_output = (size_t)nout;
	n->output = outs;
	for (int k = 0; k < nattr; k++) {
		const attr *a = &attrs[k];
		Onnx__AttributeProto *p = alloc(e, sizeof *p);
		if (!p)
			return err_set("out of memory");
		onnx__attribute_proto__init(p);
		if (!(p->name = str(e, "%s", a->name)))
			return err_set("out of memory");
		p->has_type = 1;
		switch (a->type) {
		case A_INT:
			p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
			p->has_i = 1;
			p->i = a->i;
			break;
		case A_INTS:
			p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
			if (!(p->ints = alloc(e, (size_t)a->n * sizeof *p->ints)))
				return err_set("out of memory");
			memcpy(p->ints, a->ints, (size_t)a->n * sizeof *p->ints);
			p->n_ints = (size_t)a->n;
			break;
		case A_FLOAT:
			p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
			p->has_f = 1;
			p->f = a->f;
			break;
		case A_STRING:
			p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
			p->has_s = 1;
			p->s.data = (uint8_t *)str(e, "%s", a->s);
			p->s.len = strlen(a->s);
			break;
		}
		as[k] = p;
	}
	n->n_attribute = (size_t)nattr;
	n->attribute = as;
	e->node[e->nnode++] = n;
	return 0;
}

static int node(exporter *e, const char *op, const char *name, const char *const *in, int nin, const char *out,
		const attr *attrs, int nattr)
{
	return node_n(e, op, name, in, nin, &out, 1, attrs, nattr);
}

/* Clip(x, lo, hi): min and max are inputs from opset 11 on, attributes before. */
static int clip(exporter *e, const char *name, const char *in, const char *out, float lo, float hi)
{
	if (e->opset < 11) {
		attr a[2] = {{.name = "min", .type = A_FLOAT, .f = lo}, {.name = "max", .type = A_FLOAT, .f = hi}};
		return node(e, "Clip", name, &in, 1, out, a, 2);
	}
	char *mn = str(e, "%s.min", out), *mx = str(e, "%s.max", out);
	if (!mn || !mx || initializer(e, mn, 0, 0, NULL, &lo, 1, 1) < 0 || initializer(e, mx, 0, 0, NULL, &hi, 1, 1) < 0)
		return -1;
	const char *ins[3] = {in, mn, mx};
	return node(e, "Clip", name, ins, 3, out, NULL, 0);
}

/* forward --quant's quantiser in ONNX ops: Clip(Floor(x s + 0.5), qmin, qmax) / s. */
static int round_to_grid(exporter *e, const qact *a, const char *in, const char *out)
{
	float s = ldexpf(1, a->frac), inv = ldexpf(1, -a->frac), half = 0.5f;
	char *sn = str(e, "%s.scale", out), *hn = str(e, "%s.half", out), *in_n = str(e, "%s.inv", out);
	char *t1 = str(e, "%s.scaled", out), *t2 = str(e, "%s.shifted", out), *t3 = str(e, "%s.floor", out),
	     *t4 = str(e, "%s.int", out);
	if (!sn || !hn || !in_n || !t1 || !t2 || !t3 || !t4 || initializer(e, sn, 0, 0, NULL, &s, 1, 1) < 0 ||
	    initializer(e, hn, 0, 0, NULL, &half, 1, 1) < 0 || initializer(e, in_n, 0, 0, NULL, &inv, 1, 1) < 0)
		return -1;
	const char *mul[2] = {in, sn}, *add[2] = {t1, hn}, *back[2] = {t4, in_n};
	if (node(e, "Mul", t1, mul, 2, t1, NULL, 0) < 0 || node(e, "Add", t2, add, 2, t2, NULL, 0) < 0 ||
	    node(e, "Floor", t3, (const char *const *)&t2, 1, t3, NULL, 0) < 0 ||
	    clip(e, t4, t3, t4, (float)a->qmin, (float)a->qmax) < 0)
		return -1;
	return node(e, "Mul", out, back, 2, out, NULL, 0);
}

static int conv(exporter *e, const gnode *nd, const char *in, const char *out)
{
	const model *m = e->m;
	const model_param *pw = &m->params_info[nd->wparam];
	const float *w = g_param(m, nd->wparam), *b = g_param(m, nd->bparam);
	if (nd->fold) {
		/* folded (and quantised) weights and bias */
		w = g_folded_weights(m, nd);
		b = g_folded_bias(m, nd);
	}
	char *wn = str(e, "%s.weight", nd->name), *bn = str(e, "%s.bias", nd->name);
	int64_t bd[1] = {nd->c};
	if (!wn || !bn || initializer(e, wn, 0, pw->ndim, pw->shape, w, (int64_t)pw->count, 0) < 0 ||
	    (b && initializer(e, bn, 0, 1, bd, b, nd->c, 0) < 0))
		return -1;
	attr a[5] = {
		{.name = "kernel_shape", .type = A_INTS, .n = 2, .ints = {nd->cd.kh, nd->cd.kw}},
		{.name = "strides", .type = A_INTS, .n = 2, .ints = {nd->cd.sh, nd->cd.sw}},
		{.name = "pads", .type = A_INTS, .n = 4, .ints = {nd->cd.ph, nd->cd.pw, nd->cd.ph, nd->cd.pw}},
		{.name = "dilations", .type = A_INTS, .n = 2, .ints = {nd->cd.dh, nd->cd.dw}},
		{.name = "group", .type = A_INT, .i = nd->cd.groups},
	};
	const char *ins[3] = {in, wn, bn};
	return node(e, "Conv", nd->name, ins, b ? 3 : 2, out, a, 5);
}

/* A BN that is not folded (no conv before it): BatchNormalization with its statistics. */
static int batchnorm(exporter *e, const gnode *nd, const char *in, const char *out)
{
	const model *m = e->m;
	int p[4] = {nd->wparam, nd->bparam, nd->prm, nd->prv};
	static const char *const suf[4] = {"weight", "bias", "running_mean", "running_var"};
	const char *ins[5] = {in};
	int64_t d[1] = {nd->c};
	for (int k = 0; k < 4; k++) {
		char *nm = str(e, "%s.%s", nd->name, suf[k]);
		if (!nm || initializer(e, nm, 0, 1, d, g_param(m, p[k]), nd->c, 0) < 0)
			return -1;
		ins[k + 1] = nm;
	}
	attr a[1] = {{.name = "epsilon", .type = A_FLOAT, .f = nd->eps}};
	return node(e, "BatchNormalization", nd->name, ins, 5, out, a, 1);
}

/* Nearest upsampling as torch's F.interpolate(size=...): source floor(dst * in / out).
 * Integer factors give scales (what TIDL knows best); other sizes need opset 11's
 * sizes input. */
static int upsample(exporter *e, const gnode *nd, const gnode *src, const char *in, const char *out)
{
	if (nd->bilinear && e->opset < 11)
		return err_set("%s: opset %d: its Upsample \"linear\" samples asymmetrically, not as torch's bilinear "
			       "(half-pixel): use opset 11", nd->name, e->opset);
	int integral = nd->h % src->h == 0 && nd->w % src->w == 0;
	float scales[4] = {1, 1, (float)nd->h / (float)src->h, (float)nd->w / (float)src->w};
	int64_t four[1] = {4}, zero[1] = {0};
	char *sn = str(e, "%s.scales", nd->name);
	if (!sn)
		return err_set("out of memory");
	if (e->opset < 11) {
		if (!integral)
			return err_set("%s: opset %d: upsampling %dx%d to %dx%d is no integer factor (use opset 11)",
				       nd->name, e->opset, src->h, src->w, nd->h, nd->w);
		if (initializer(e, sn, 0, 1, four, scales, 4, 1) < 0)
			return -1;
		attr a[1] = {{.name = "mode", .type = A_STRING, .s = "nearest"}};
		const char *ins[2] = {in, sn};
		return node(e, "Upsample", nd->name, ins, 2, out, a, 1);
	}
	char *rn = str(e, "%s.roi", nd->name), *zn = str(e, "%s.sizes", nd->name);
	int64_t sizes[4] = {nd->n, nd->c, nd->h, nd->w};
	if (!rn || !zn || initializer(e, rn, 0, 1, zero, NULL, 0, 1) < 0 ||
	    initializer(e, sn, 0, 1, integral ? four : zero, scales, integral ? 4 : 0, 1) < 0 ||
	    (!integral && initializer(e, zn, 1, 1, four, sizes, 4, 1) < 0))
		return -1;
	attr a[3] = {{.name = "mode", .type = A_STRING, .s = "nearest"},
		     {.name = "coordinate_transformation_mode", .type = A_STRING, .s = "asymmetric"},
		     {.name = "nearest_mode", .type = A_STRING, .s = "floor"}};
	if (nd->bilinear) {
		/* torch's align_corners=False: half-pixel centres, sources clamped at the edges */
		a[0].s = "linear";
		a[1].s = "half_pixel";
	}
	const char *ins[4] = {in, rn, sn, zn};
	return node(e, "Resize", nd->name, ins, integral ? 3 : 4, out, a, nd->bilinear ? 2 : 3);
}

/* mmdet's L2Norm, w[c] x / (sqrt(sum_c x^2) + eps): ReduceL2 over channels, Add eps, Div, Mul. */
static int l2norm(exporter *e, const gnode *nd, const char *in, const char *out)
{
	const model *m = e->m;
	char *wn = str(e, "%s.weight", nd->name), *en = str(e, "%s.eps", nd->name), *t1 = str(e, "%s.norm", nd->name),
	     *t2 = str(e, "%s.norm_eps", nd->name), *t3 = str(e, "%s.unit", nd->name);
	int64_t wd[4] = {1, nd->c, 1, 1};
	if (!wn || !en || !t1 || !t2 || !t3 || initializer(e, wn, 0, 4, wd, g_param(m, nd->wparam), nd->c, 0) < 0 ||
	    initializer(e, en, 0, 0, NULL, &nd->eps, 1, 1) < 0)
		return -1;
	attr a[2] = {{.name = "axes", .type = A_INTS, .n = 1, .ints = {1}}, {.name = "keepdims", .type = A_INT, .i = 1}};
	const char *add[2] = {t1, en}, *div[2] = {in, t2}, *mul[2] = {t3, wn};
	if (node(e, "ReduceL2", t1, &in, 1, t1, a, 2) < 0 || node(e, "Add", t2, add, 2, t2, NULL, 0) < 0 ||
	    node(e, "Div", t3, div, 2, t3, NULL, 0) < 0)
		return -1;
	return node(e, "Mul", nd->name, mul, 2, out, NULL, 0);
}

static int maxpool(exporter *e, const gnode *nd, const char *in, const char *out)
{
	const pool2d_desc *p = &nd->pd;
	if (p->ceil_mode && e->opset < 10)
		return err_set("%s: opset %d has no ceil_mode for MaxPool (use opset 11)", nd->name, e->opset);
	attr a[4] = {
		{.name = "kernel_shape", .type = A_INTS, .n = 2, .ints = {p->kh, p->kw}},
		{.name = "strides", .type = A_INTS, .n = 2, .ints = {p->sh, p->sw}},
		{.name = "pads", .type = A_INTS, .n = 4, .ints = {p->ph, p->pw, p->ph, p->pw}},
		{.name = "ceil_mode", .type = A_INT, .i = p->ceil_mode},
	};
	return node(e, "MaxPool", nd->name, &in, 1, out, a, p->ceil_mode ? 4 : 3);
}

/* A graph input or output: elem_type (ONNX__TENSOR_PROTO__DATA_TYPE__*) of shape[ndim];
 * a dimension < 0 is the symbolic "K" (the number of detections). */
static Onnx__ValueInfoProto *value_info_typed(exporter *e, const char *name, int elem_type, int ndim,
					      const int64_t *shape)
{
	Onnx__ValueInfoProto *v = alloc(e, sizeof *v);
	Onnx__TypeProto *t = alloc(e, sizeof *t);
	Onnx__TypeProto__Tensor *tt = alloc(e, sizeof *tt);
	Onnx__TensorShapeProto *s = alloc(e, sizeof *s);
	Onnx__TensorShapeProto__Dimension **d = alloc(e, (size_t)ndim * sizeof *d);
	if (!v || !t || !tt || !s || !d)
		return NULL;
	onnx__value_info_proto__init(v);
	onnx__type_proto__init(t);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(s);
	for (int k = 0; k < ndim; k++) {
		if (!(d[k] = alloc(e, sizeof *d[k])))
			return NULL;
		onnx__tensor_shape_proto__dimension__init(d[k]);
		if (shape[k] < 0) {
			d[k]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
			d[k]->dim_param = "K";
		} else {
			d[k]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
			d[k]->dim_value = shape[k];
		}
	}
	s->n_dim = (size_t)ndim;
	s->dim = d;
	tt->has_elem_type = 1;
	tt->elem_type = elem_type;
	tt->shape = s;
	t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	t->tensor_type = tt;
	v->name = str(e, "%s", name);
	v->type = t;
	return v->name ? v : NULL;
}

static Onnx__ValueInfoProto *value_info(exporter *e, const char *name, const int64_t shape[4])
{
	return value_info_typed(e, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, shape);
}

/* Nodes and initializers of the whole graph; names[i] is node i's value. */
static int build(exporter *e, char **names, const char **outname)
{
	model *m = e->m;
	for (int i = 0; i < m->nnodes; i++) {
		const gnode *nd = &m->nodes[i];
		const char *in = i ? names[nd->in[0]] : NULL;
		char *out = outname[i] ? str(e, "%s", outname[i]) : nd->op == OP_FQ ? str(e, "%s.q", nd->name)
										     : str(e, "%s", nd->name);
		if (!out)
			return err_set("out of memory");
		names[i] = out;
		int rc = 0;
		switch (nd->op) {
		case OP_INPUT:
			names[i] = str(e, "input");
			break;
		case OP_CONV:
			rc = conv(e, nd, in, out);
			break;
		case OP_BN:
			if (nd->skip) {
				if (outname[i])
					return err_set("onnx: %s: a folded BN cannot be an output", nd->name);
				names[i] = names[nd->in[0]];
			} else {
				rc = batchnorm(e, nd, in, out);
			}
			break;
		case OP_RELU:
			rc = node(e, "Relu", nd->name, &in, 1, out, NULL, 0);
			break;
		case OP_RELU6:
			/* quantised: the point after it clips to its power-of-2 range instead of 6 */
			rc = nd->as_relu && m->q.apply ? node(e, "Relu", nd->name, &in, 1, out, NULL, 0)
						      : clip(e, nd->name, in, out, 0, 6);
			break;
		case OP_ADD: {
			const char *ins[2] = {in, names[nd->in[1]]};
			rc = node(e, "Add", nd->name, ins, 2, out, NULL, 0);
			break;
		}
		case OP_CONCAT: {
			const char *ins[GRAPH_MAXIN];
			for (int j = 0; j < nd->nin; j++)
				ins[j] = names[nd->in[j]];
			attr a[1] = {{.name = "axis", .type = A_INT, .i = 1}};
			rc = node(e, "Concat", nd->name, ins, nd->nin, out, a, 1);
			break;
		}
		case OP_UPSAMPLE:
			rc = upsample(e, nd, &m->nodes[nd->in[0]], in, out);
			break;
		case OP_MAXPOOL:
			rc = maxpool(e, nd, in, out);
			break;
		case OP_L2NORM:
			rc = l2norm(e, nd, in, out);
			break;
		case OP_FQ:
			if (m->q.apply) {
				const qact *a = &m->q.act[nd->qp];
				rc = e->round ? round_to_grid(e, a, in, out) : clip(e, out, in, out, a->lo, a->hi);
				e->nclips++;
			} else {
				names[i] = names[nd->in[0]];
			}
			break;
		case OP_FLATTEN:
			break; /* its inputs are the graph's outputs */
		default:
			return err_set("onnx: %s: %s is not exportable yet", nd->name, graph_op_name(nd->op));
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ detection tail
 * detect.h's post-processing in ONNX ops after the head outputs (onnx_export.h). Every
 * value is named "det.<what>"; the helpers return the name of what they made, NULL (err)
 * on failure, and take NULL inputs as a failure already reported, so a chain of them
 * needs one check at its end. */

typedef struct tail {
	exporter *e;
	int failed;
} tail;

static const char *t_fail(tail *t)
{
	t->failed = 1;
	return NULL;
}

/* A constant: f32 or i64 [dims] (ndim 0: a scalar), copied into the arena. */
static const char *t_const(tail *t, const char *what, int is_i64, int ndim, const int64_t *dims, const void *v,
			   int64_t n)
{
	char *nm = str(t->e, "det.%s", what);
	if (t->failed || !nm || initializer(t->e, nm, is_i64, ndim, dims, v, n, 1) < 0)
		return t_fail(t);
	return nm;
}

static const char *t_f32(tail *t, const char *what, float v)
{
	int64_t one[1] = {1};
	return t_const(t, what, 0, 1, one, &v, 1);
}

static const char *t_i64s(tail *t, const char *what, int n, const int64_t *v)
{
	int64_t dims[1] = {n};
	return t_const(t, what, 1, 1, dims, v, n);
}

/* out = op(in[0..nin)) with attributes; out named det.<what>. */
static const char *t_op(tail *t, const char *op, const char *what, const char *const *in, int nin, const attr *a,
			int na)
{
	char *out = str(t->e, "det.%s", what);
	for (int i = 0; i < nin; i++)
		if (!in[i])
			return t_fail(t);
	if (t->failed || !out || node(t->e, op, out, in, nin, out, a, na) < 0)
		return t_fail(t);
	return out;
}

static const char *t_un(tail *t, const char *op, const char *what, const char *x)
{
	return t_op(t, op, what, &x, 1, NULL, 0);
}

static const char *t_bin(tail *t, const char *op, const char *what, const char *x, const char *y)
{
	const char *in[2] = {x, y};
	return t_op(t, op, what, in, 2, NULL, 0);
}

static const char *t_axes(tail *t, const char *op, const char *what, const char *x, int64_t axis)
{
	attr a[1] = {{.name = "axes", .type = A_INTS, .n = 1, .ints = {axis}}};
	return t_op(t, op, what, &x, 1, a, 1);
}

static const char *t_axis(tail *t, const char *op, const char *what, const char *const *in, int nin, int64_t axis)
{
	attr a[1] = {{.name = "axis", .type = A_INT, .i = axis}};
	return t_op(t, op, what, in, nin, a, 1);
}

/* x[..., start:end, ...] on one axis: inputs from opset 10 on, attributes before. */
static const char *t_slice(tail *t, const char *what, const char *x, int64_t axis, int64_t start, int64_t end)
{
	if (t->e->opset < 10) {
		attr a[3] = {{.name = "starts", .type = A_INTS, .n = 1, .ints = {start}},
			     {.name = "ends", .type = A_INTS, .n = 1, .ints = {end}},
			     {.name = "axes", .type = A_INTS, .n = 1, .ints = {axis}}};
		return t_op(t, "Slice", what, &x, 1, a, 3);
	}
	char nm[96];
	snprintf(nm, sizeof nm, "%s.starts", what);
	const char *st = t_i64s(t, nm, 1, &start);
	snprintf(nm, sizeof nm, "%s.ends", what);
	const char *en = t_i64s(t, nm, 1, &end);
	snprintf(nm, sizeof nm, "%s.axes", what);
	const char *ax = t_i64s(t, nm, 1, &axis);
	const char *in[4] = {x, st, en, ax};
	return t_op(t, "Slice", what, in, 4, NULL, 0);
}

static const char *t_transpose(tail *t, const char *what, const char *x, int n, const int64_t *perm)
{
	attr a[1] = {{.name = "perm", .type = A_INTS, .n = n}};
	memcpy(a[0].ints, perm, (size_t)n * sizeof *perm);
	return t_op(t, "Transpose", what, &x, 1, a, 1);
}

/* The k largest of x along its last axis, sorted: values and indices (k an input from
 * opset 10 on; kname an i64[1] value there, k the attribute before). */
static int t_topk(tail *t, const char *what, const char *x, const char *kname, int64_t k, const char **values,
		  const char **indices)
{
	char *v = str(t->e, "det.%s.values", what), *ix = str(t->e, "det.%s.indices", what),
	     *nm = str(t->e, "det.%s", what);
	if (t->failed || !x || !v || !ix || !nm)
		return t_fail(t), -1;
	const char *outs[2] = {v, ix};
	int rc;
	if (t->e->opset < 10) {
		attr a[2] = {{.name = "k", .type = A_INT, .i = k}, {.name = "axis", .type = A_INT, .i = -1}};
		rc = node_n(t->e, "TopK", nm, &x, 1, outs, 2, a, 2);
	} else {
		if (!kname)
			return t_fail(t), -1;
		attr a[3] = {{.name = "axis", .type = A_INT, .i = -1},
			     {.name = "largest", .type = A_INT, .i = 1},
			     {.name = "sorted", .type = A_INT, .i = 1}};
		const char *in[2] = {x, kname};
		rc = node_n(t->e, "TopK", nm, in, 2, outs, 2, a, 3);
	}
	if (rc < 0)
		return t_fail(t), -1;
	*values = v;
	*indices = ix;
	return 0;
}

/* Level k's candidates: probabilities [1, n, C+1], deltas [1, n, 4] and anchors as centre
 * and size [1, n, 4], n the level's anchors or, past nms_pre, its nms_pre best by highest
 * foreground probability (ascending anchor order at opset 11, as ssd-decode keeps them;
 * top-k order at opset 9, whose TopK takes floats only). */
static int t_level(tail *t, const onnx_detect *dt, int k, const char *cls, const char *reg, int C,
		   const char **prob, const char **deltas, const char **anchors, int64_t *ncand)
{
	exporter *e = t->e;
	const anchor_level *lv = &dt->anchors->level[k];
	int64_t n = lv->count, K = C + 1, pre = dt->test.nms_pre;
	static const int64_t nhwc[4] = {0, 2, 3, 1};
	char w[64];
	/* the head's rows (y, x, a), as forward flattens them */
	snprintf(w, sizeof w, "cls_%d.shape", k);
	const char *cshape = t_i64s(t, w, 3, (int64_t[]){1, -1, K});
	snprintf(w, sizeof w, "reg_%d.shape", k);
	const char *rshape = t_i64s(t, w, 3, (int64_t[]){1, -1, 4});
	snprintf(w, sizeof w, "cls_%d.nhwc", k);
	const char *c1 = t_transpose(t, w, cls, 4, nhwc);
	snprintf(w, sizeof w, "cls_%d.rows", k);
	const char *crow = t_bin(t, "Reshape", w, c1, cshape);
	snprintf(w, sizeof w, "reg_%d.nhwc", k);
	const char *r1 = t_transpose(t, w, reg, 4, nhwc);
	snprintf(w, sizeof w, "reg_%d.rows", k);
	const char *rrow = t_bin(t, "Reshape", w, r1, rshape);
	snprintf(w, sizeof w, "prob_%d", k);
	const char *p = t_axis(t, "Softmax", w, &crow, 1, 2);
	float *cs = alloc(e, (size_t)n * 4 * sizeof *cs);
	if (!cs)
		return err_set("out of memory"), t_fail(t), -1;
	box_centre_size(cs, dt->anchors->boxes + 4 * lv->first, n);
	snprintf(w, sizeof w, "anchors_%d", k);
	const char *an = t_const(t, w, 0, 3, (int64_t[]){1, n, 4}, cs, 4 * n);
	if (pre <= 0 || n <= pre) {
		*prob = p, *deltas = rrow, *anchors = an, *ncand = n;
		return t->failed ? -1 : 0;
	}
	snprintf(w, sizeof w, "fg_%d", k);
	const char *fg = t_slice(t, w, p, 2, 0, C);
	attr keep0[2] = {{.name = "axes", .type = A_INTS, .n = 1, .ints = {2}}, {.name = "keepdims", .type = A_INT, .i = 0}};
	snprintf(w, sizeof w, "fg_max_%d", k);
	const char *mx = t_op(t, "ReduceMax", w, &fg, 1, keep0, 2);
	snprintf(w, sizeof w, "nms_pre_%d.k", k);
	const char *kk = e->opset >= 10 ? t_i64s(t, w, 1, &pre) : NULL;
	const char *vals, *idx;
	snprintf(w, sizeof w, "nms_pre_%d", k);
	if (t_topk(t, w, mx, kk, pre, &vals, &idx) < 0)
		return -1;
	if (e->opset >= 11) {
		/* back to anchor order: the pre smallest indices, ascending */
		char *v = str(e, "det.nms_pre_%d.sorted", k), *ix = str(e, "det.nms_pre_%d.order", k),
		     *nm = str(e, "det.nms_pre_%d.sort", k);
		if (!v || !ix || !nm)
			return t_fail(t), -1;
		attr a[3] = {{.name = "axis", .type = A_INT, .i = -1},
			     {.name = "largest", .type = A_INT, .i = 0},
			     {.name = "sorted", .type = A_INT, .i = 1}};
		const char *in[2] = {idx, kk}, *outs[2] = {v, ix};
		if (node_n(e, "TopK", nm, in, 2, outs, 2, a, 3) < 0)
			return t_fail(t), -1;
		idx = v;
	}
	snprintf(w, sizeof w, "nms_pre_%d.rows", k);
	const char *rows = t_axes(t, "Squeeze", w, idx, 0);
	const char *in[2];
	snprintf(w, sizeof w, "prob_%d.cand", k);
	in[0] = p, in[1] = rows;
	*prob = t_axis(t, "Gather", w, in, 2, 1);
	snprintf(w, sizeof w, "reg_%d.cand", k);
	in[0] = rrow;
	*deltas = t_axis(t, "Gather", w, in, 2, 1);
	snprintf(w, sizeof w, "anchors_%d.cand", k);
	in[0] = an;
	*anchors = t_axis(t, "Gather", w, in, 2, 1);
	*ncand = pre;
	return t->failed ? -1 : 0;
}

/* DeltaXYWH decode of deltas [1, n, 4] against anchors (cx, cy, w, h) [1, n, 4], as
 * box_decode: d std + mean, |dw|, |dh| clipped, centre + size d, corners, clipped to
 * the input [0, W] x [0, H]. */
static const char *t_decode(tail *t, const box_coder *c, const char *deltas, const char *anchors, int W, int H)
{
	float std[4], mean[4], max_ratio = box_coder_max_ratio(c);
	int means = 0;
	for (int i = 0; i < 4; i++) {
		std[i] = (float)c->stds[i];
		mean[i] = (float)c->means[i];
		means |= mean[i] != 0;
	}
	int64_t four[1] = {4};
	const char *d = t_bin(t, "Mul", "delta", deltas, t_const(t, "stds", 0, 1, four, std, 4));
	if (means)
		d = t_bin(t, "Add", "delta.mean", d, t_const(t, "means", 0, 1, four, mean, 4));
	const char *dxy = t_slice(t, "delta.xy", d, 2, 0, 2), *dwh = t_slice(t, "delta.wh", d, 2, 2, 4);
	const char *axy = t_slice(t, "anchor.xy", anchors, 2, 0, 2), *awh = t_slice(t, "anchor.wh", anchors, 2, 2, 4);
	char *dwc = str(t->e, "det.delta.wh.clip");
	if (t->failed || !dwc || !dwh || clip(t->e, dwc, dwh, dwc, -max_ratio, max_ratio) < 0)
		return t_fail(t);
	const char *wh = t_bin(t, "Mul", "box.wh", awh, t_un(t, "Exp", "delta.wh.exp", dwc));
	const char *xy = t_bin(t, "Add", "box.xy", axy, t_bin(t, "Mul", "box.shift", awh, dxy));
	const char *half = t_bin(t, "Mul", "box.half", wh, t_f32(t, "half", 0.5f));
	const char *corners[2] = {t_bin(t, "Sub", "box.x1y1", xy, half), t_bin(t, "Add", "box.x2y2", xy, half)};
	const char *b = t_axis(t, "Concat", "box.corners", corners, 2, 2);
	float hi[4] = {(float)W, (float)H, (float)W, (float)H};
	return t_bin(t, "Min", "boxes", t_bin(t, "Max", "box.low", b, t_f32(t, "zero", 0.0f)),
		     t_const(t, "size", 0, 1, four, hi, 4));
}

/* The selected (box, class, score) triples as the graph outputs: dets [1, K, 5] and
 * labels i64 [1, K], or one detections [1, K, 6] (the label as a float last). */
static int t_outputs(tail *t, const onnx_detect *dt, const char *boxes, const char *scores, const char *labels,
		     onnx_info *inf)
{
	exporter *e = t->e;
	const char *sc = t_axes(t, "Unsqueeze", "score.col", scores, 1);
	const char *parts[3] = {boxes, sc, NULL};
	if (dt->single_output) {
		attr to_f32[1] = {{.name = "to", .type = A_INT, .i = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT}};
		const char *lf = t_op(t, "Cast", "label.f32", &labels, 1, to_f32, 1);
		parts[2] = t_axes(t, "Unsqueeze", "label.col", lf, 1);
		const char *rows = t_axis(t, "Concat", "detections.rows", parts, 3, 1);
		if (t->failed || !rows || node(e, "Unsqueeze", "detections", &rows, 1, "detections",
					       (attr[]){{.name = "axes", .type = A_INTS, .n = 1, .ints = {0}}}, 1) < 0)
			return t_fail(t), -1;
		inf->ndetect = 1;
		inf->detect_cols = 6;
		snprintf(inf->detect_name[0], sizeof inf->detect_name[0], "detections");
		return 0;
	}
	const char *rows = t_axis(t, "Concat", "dets.rows", parts, 2, 1);
	attr ax0[1] = {{.name = "axes", .type = A_INTS, .n = 1, .ints = {0}}};
	if (t->failed || !rows || !labels || node(e, "Unsqueeze", "dets", &rows, 1, "dets", ax0, 1) < 0 ||
	    node(e, "Unsqueeze", "labels", &labels, 1, "labels", ax0, 1) < 0)
		return t_fail(t), -1;
	inf->ndetect = 2;
	inf->detect_cols = 5;
	snprintf(inf->detect_name[0], sizeof inf->detect_name[0], "dets");
	snprintf(inf->detect_name[1], sizeof inf->detect_name[1], "labels");
	return 0;
}

/* Finds head output "<prefix>_<k>" among the ones written. */
static int head_output(const onnx_info *inf, const char *prefix, int k)
{
	char want[16];
	snprintf(want, sizeof want, "%s_%d", prefix, k);
	for (int i = 0; i < inf->noutputs; i++)
		if (!strcmp(inf->output_name[i], want))
			return i;
	return -1;
}

/* The whole tail after the head outputs of inf; fills inf's detection outputs. */
static int detect_tail(exporter *e, const onnx_detect *dt, int C, onnx_info *inf)
{
	const anchor_set *an = dt->anchors;
	tail t = {.e = e};
	if (inf->input_shape[0] != 1)
		return err_set("onnx: the detection tail needs batch 1 (got %lld)", (long long)inf->input_shape[0]);
	if (2 * an->nlevels != inf->noutputs)
		return err_set("onnx: %d anchor levels for %d head outputs", an->nlevels, inf->noutputs);
	const char *prob[ANCHOR_MAX_LEVELS], *deltas[ANCHOR_MAX_LEVELS], *anchors[ANCHOR_MAX_LEVELS];
	int64_t ncand = 0;
	for (int k = 0; k < an->nlevels; k++) {
		const anchor_level *lv = &an->level[k];
		int ci = head_output(inf, "cls", k), ri = head_output(inf, "reg", k);
		if (ci < 0 || ri < 0)
			return err_set("onnx: no head outputs cls_%d, reg_%d", k, k);
		const int64_t *cs = inf->output_shape[ci], *rs = inf->output_shape[ri];
		if (cs[1] != (int64_t)lv->nbase * (C + 1) || rs[1] != (int64_t)lv->nbase * 4 || cs[2] != lv->feat_h ||
		    cs[3] != lv->feat_w || rs[2] != lv->feat_h || rs[3] != lv->feat_w)
			return err_set("onnx: head outputs cls_%d [%lld, %lld, %lld], reg_%d [%lld, %lld, %lld] do not fit "
				       "the anchors (%d per location, %dx%d, %d classes)",
				       k, (long long)cs[1], (long long)cs[2], (long long)cs[3], k, (long long)rs[1],
				       (long long)rs[2], (long long)rs[3], lv->nbase, lv->feat_h, lv->feat_w, C);
		int64_t n;
		if (t_level(&t, dt, k, inf->output_name[ci], inf->output_name[ri], C, &prob[k], &deltas[k], &anchors[k],
			    &n) < 0)
			return -1;
		ncand += n;
	}
	inf->candidates = ncand;
	int L = an->nlevels;
	const char *p = t_axis(&t, "Concat", "prob", prob, L, 1);
	const char *d = t_axis(&t, "Concat", "deltas", deltas, L, 1);
	const char *a = t_axis(&t, "Concat", "anchors", anchors, L, 1);
	const char *boxes = t_decode(&t, &dt->coder, d, a, (int)inf->input_shape[3], (int)inf->input_shape[2]);
	/* foreground scores per class: [1, C, n] */
	static const int64_t swap12[3] = {0, 2, 1};
	const char *scores = t_transpose(&t, "scores", t_slice(&t, "fg", p, 2, 0, C), 3, swap12);
	const char *box_rows = t_axes(&t, "Squeeze", "box.rows", boxes, 0);
	if (t.failed)
		return -1;
	const char *sel_scores, *sel_labels, *sel_boxes;
	if (e->opset >= 11) {
		/* per-class greedy NMS (IoU > nms_iou suppresses, scores > score_thr, at most
		 * max_per_img a class): rows (0, class, candidate), class by class */
		int64_t maxk = dt->test.max_per_img;
		const char *in[5] = {boxes, scores, t_i64s(&t, "max_per_class", 1, &maxk),
				     t_f32(&t, "iou_threshold", (float)dt->test.nms_iou),
				     t_f32(&t, "score_threshold", (float)dt->test.score_thr)};
		const char *sel = t_op(&t, "NonMaxSuppression", "selected", in, 5, NULL, 0);
		int64_t one = 1, two = 2;
		const char *cls_col = t_const(&t, "col.class", 1, 0, NULL, &one, 1);
		const char *box_col = t_const(&t, "col.box", 1, 0, NULL, &two, 1);
		const char *g[2] = {sel, cls_col};
		const char *sel_cls = t_axis(&t, "Gather", "selected.class", g, 2, 1);
		g[1] = box_col;
		const char *sel_box = t_axis(&t, "Gather", "selected.box", g, 2, 1);
		const char *cb[2] = {t_axes(&t, "Squeeze", "scores.cn", scores, 0),
				     t_slice(&t, "selected.class_box", sel, 1, 1, 3)};
		const char *all_scores = t_op(&t, "GatherND", "selected.score", cb, 2, NULL, 0);
		/* the best max_per_img over all classes, by score (ties: lower row first, i.e.
		 * lower class, then NMS order); k = min(selected, max_per_img) */
		attr to_f32[1] = {{.name = "to", .type = A_INT, .i = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT}};
		attr to_i64[1] = {{.name = "to", .type = A_INT, .i = ONNX__TENSOR_PROTO__DATA_TYPE__INT64}};
		const char *count = t_un(&t, "Shape", "selected.count", all_scores);
		const char *countf = t_op(&t, "Cast", "selected.count.f32", &count, 1, to_f32, 1);
		const char *kf = t_bin(&t, "Min", "top.k.f32", countf, t_f32(&t, "max_per_img", (float)maxk));
		const char *kk = t_op(&t, "Cast", "top.k", &kf, 1, to_i64, 1);
		const char *order;
		if (t_topk(&t, "top", all_scores, kk, 0, &sel_scores, &order) < 0)
			return -1;
		g[1] = order;
		g[0] = sel_cls;
		sel_labels = t_axis(&t, "Gather", "label", g, 2, 0);
		g[0] = sel_box;
		const char *box_idx = t_axis(&t, "Gather", "box.index", g, 2, 0);
		g[0] = box_rows, g[1] = box_idx;
		sel_boxes = t_axis(&t, "Gather", "box", g, 2, 0);
	} else {
		/* opset 9 has no NonMaxSuppression: every (class, candidate) with score >
		 * score_thr, class by class, NMS left to the consumer (TIDL's meta-arch) */
		int64_t flat[1] = {-1}, nc = ncand;
		const char *all = t_bin(&t, "Reshape", "scores.flat", scores, t_i64s(&t, "flat", 1, flat));
		const char *above = t_bin(&t, "Greater", "above", all, t_f32(&t, "score_threshold", (float)dt->test.score_thr));
		const char *nz = t_axes(&t, "Squeeze", "above.index", t_un(&t, "NonZero", "above.nonzero", above), 0);
		const char *g[2] = {all, nz};
		sel_scores = t_axis(&t, "Gather", "score", g, 2, 0);
		const char *ncn = t_const(&t, "candidates", 1, 0, NULL, &nc, 1);
		sel_labels = t_bin(&t, "Div", "label", nz, ncn);
		const char *box_idx = t_bin(&t, "Sub", "box.index", nz, t_bin(&t, "Mul", "label.offset", sel_labels, ncn));
		g[0] = box_rows, g[1] = box_idx;
		sel_boxes = t_axis(&t, "Gather", "box", g, 2, 0);
	}
	if (t.failed)
		return -1;
	return t_outputs(&t, dt, sel_boxes, sel_scores, sel_labels, inf);
}

int onnx_export(model *m, const onnx_options *o, const char *path, onnx_info *info)
{
	if (o->opset != 9 && o->opset != 11)
		return err_set("onnx: opset %d (9 or 11)", o->opset);
	if (!m->planned)
		return err_set("onnx: the model is not planned");
	if (m->q.npoints && !m->q.apply)
		return err_set("onnx: a quantised model needs its ranges");
	g_refresh_folds(m);
	exporter e = {.opset = o->opset, .round = o->round, .m = m};
	int rc = -1, batch = o->batch > 0 ? o->batch : 1;
	e.node_cap = e.init_cap = 8 * (size_t)m->nnodes + 16 + (o->detect ? 256 : 0);
	char **names = alloc(&e, (size_t)m->nnodes * sizeof *names);
	const char **outname = alloc(&e, (size_t)m->nnodes * sizeof *outname);
	Onnx__ValueInfoProto **outs = alloc(&e, (ONNX_MAX_OUTPUTS + 2) * sizeof *outs);
	e.node = alloc(&e, e.node_cap * sizeof *e.node);
	e.init = alloc(&e, e.init_cap * sizeof *e.init);
	uint8_t *buf = NULL;
	afile f;
	if (!names || !outname || !outs || !e.node || !e.init) {
		err_set("out of memory");
		goto done;
	}
	/* the flatten nodes' inputs are the outputs: "<output>_<level>" */
	int nout = 0;
	onnx_info inf = {.opset = o->opset, .ir_version = o->opset >= 11 ? 6 : 4,
			 .input_shape = {batch, 3, m->plan_h, m->plan_w}};
	for (int k = 0; k < m->noutputs; k++) {
		const gnode *fl = &m->nodes[m->outputs[k]];
		if (fl->op != OP_FLATTEN) {
			err_set("onnx: output %s is not a head flatten", model_output_name(m, k));
			goto done;
		}
		for (int j = 0; j < fl->nin; j++, nout++) {
			const gnode *src = &m->nodes[fl->in[j]];
			if (nout == ONNX_MAX_OUTPUTS) {
				err_set("onnx: more than %d outputs", ONNX_MAX_OUTPUTS);
				goto done;
			}
			snprintf(inf.output_name[nout], sizeof inf.output_name[nout], "%s_%d", model_output_name(m, k), j);
			int64_t s[4] = {batch, src->c, src->h, src->w};
			memcpy(inf.output_shape[nout], s, sizeof s);
			outname[fl->in[j]] = inf.output_name[nout];
		}
	}
	inf.noutputs = nout;
	if (build(&e, names, outname) < 0)
		goto done;
	for (int k = 0; k < nout; k++)
		if (!(outs[k] = value_info(&e, inf.output_name[k], inf.output_shape[k]))) {
			err_set("out of memory");
			goto done;
		}
	if (o->detect) {
		if (detect_tail(&e, o->detect, model_num_classes(m), &inf) < 0)
			goto done;
		int64_t dets[3] = {1, -1, inf.detect_cols}, labels[2] = {1, -1};
		outs[nout] = value_info_typed(&e, inf.detect_name[0], ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 3, dets);
		if (inf.ndetect == 2)
			outs[nout + 1] =
				value_info_typed(&e, inf.detect_name[1], ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 2, labels);
		for (int k = 0; k < inf.ndetect; k++)
			if (!outs[nout + k]) {
				err_set("out of memory");
				goto done;
			}
	}
	Onnx__ValueInfoProto *input = value_info(&e, "input", inf.input_shape);
	Onnx__GraphProto g;
	Onnx__ModelProto mp;
	Onnx__OperatorSetIdProto ops, *opsp = &ops;
	onnx__graph_proto__init(&g);
	onnx__model_proto__init(&mp);
	onnx__operator_set_id_proto__init(&ops);
	if (!input) {
		err_set("out of memory");
		goto done;
	}
	g.name = (char *)model_name(m);
	g.n_node = e.nnode;
	g.node = e.node;
	g.n_initializer = e.ninit;
	g.initializer = e.init;
	g.n_input = 1;
	g.input = &input;
	g.n_output = (size_t)(nout + inf.ndetect);
	g.output = outs;
	ops.domain = "";
	ops.has_version = 1;
	ops.version = o->opset;
	mp.has_ir_version = 1;
	mp.ir_version = inf.ir_version;
	mp.n_opset_import = 1;
	mp.opset_import = &opsp;
	mp.producer_name = "ssd-tools tidl-pack";
	mp.graph = &g;

	size_t len = onnx__model_proto__get_packed_size(&mp);
	if (!(buf = malloc(len ? len : 1))) {
		err_set("out of memory");
		goto done;
	}
	onnx__model_proto__pack(&mp, buf);
	if (afile_open(&f, path, "wb") < 0)
		goto done;
	if (fwrite(buf, 1, len, f.f) != len) {
		err_set("%s: %s", f.path, strerror(errno));
		afile_abort(&f);
		goto done;
	}
	if (afile_commit(&f) < 0)
		goto done;
	inf.nnodes = (int)e.nnode;
	inf.ninitializers = (int)e.ninit;
	inf.nclips = e.nclips;
	inf.weights = e.weights;
	inf.bytes = len;
	if (info)
		*info = inf;
	rc = 0;
done:
	free(buf);
	free_blocks(&e);
	return rc;
}

int onnx_point_clip(const model *m, int p, float *lo, float *hi, int *frac)
{
	if (!m->q.apply || p < 0 || p >= m->q.npoints)
		return err_set("onnx: no range for point %d", p);
	*lo = m->q.act[p].lo;
	*hi = m->q.act[p].hi;
	*frac = m->q.act[p].frac;
	return 0;
}
