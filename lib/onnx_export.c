/* onnx_export: the graph (graph.h) as ONNX through protobuf-c (see onnx_export.h). */
#include "onnx_export.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "afile.h"
#include "err.h"
#include "graph.h"
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

/* A node op_type(inputs) -> output with its attributes. */
static int node(exporter *e, const char *op, const char *name, const char *const *in, int nin, const char *out,
		const attr *attrs, int nattr)
{
	if (e->nnode == e->node_cap)
		return err_set("onnx: too many nodes");
	Onnx__NodeProto *n = alloc(e, sizeof *n);
	char **ins = alloc(e, (size_t)nin * sizeof *ins), **outs = alloc(e, sizeof *outs);
	Onnx__AttributeProto **as = alloc(e, (size_t)(nattr ? nattr : 1) * sizeof *as);
	if (!n || !ins || !outs || !as)
		return err_set("out of memory");
	onnx__node_proto__init(n);
	for (int i = 0; i < nin; i++)
		if (!(ins[i] = str(e, "%s", in[i])))
			return err_set("out of memory");
	if (!(outs[0] = str(e, "%s", out)) || !(n->op_type = str(e, "%s", op)) || !(n->name = str(e, "%s", name)))
		return err_set("out of memory");
	n->n_input = (size_t)nin;
	n->input = ins;
	n->n_output = 1;
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

static const float *param(const model *m, int p)
{
	return p < 0 ? NULL : m->params + m->params_info[p].offset;
}

static int conv(exporter *e, const gnode *nd, const char *in, const char *out)
{
	const model *m = e->m;
	const model_param *pw = &m->params_info[nd->pw];
	const float *w = param(m, nd->pw), *b = param(m, nd->pb);
	if (nd->fold) {
		/* folded (and quantised) weights and bias, laid out as graph.c's refold does */
		w = m->folded + nd->foff;
		b = w + ((pw->count + 15) & ~(size_t)15);
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
	int p[4] = {nd->pw, nd->pb, nd->prm, nd->prv};
	static const char *const suf[4] = {"weight", "bias", "running_mean", "running_var"};
	const char *ins[5] = {in};
	int64_t d[1] = {nd->c};
	for (int k = 0; k < 4; k++) {
		char *nm = str(e, "%s.%s", nd->name, suf[k]);
		if (!nm || initializer(e, nm, 0, 1, d, param(m, p[k]), nd->c, 0) < 0)
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
	if (!wn || !en || !t1 || !t2 || !t3 || initializer(e, wn, 0, 4, wd, param(m, nd->pw), nd->c, 0) < 0 ||
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

static Onnx__ValueInfoProto *value_info(exporter *e, const char *name, const int64_t shape[4])
{
	Onnx__ValueInfoProto *v = alloc(e, sizeof *v);
	Onnx__TypeProto *t = alloc(e, sizeof *t);
	Onnx__TypeProto__Tensor *tt = alloc(e, sizeof *tt);
	Onnx__TensorShapeProto *s = alloc(e, sizeof *s);
	Onnx__TensorShapeProto__Dimension **d = alloc(e, 4 * sizeof *d);
	if (!v || !t || !tt || !s || !d)
		return NULL;
	onnx__value_info_proto__init(v);
	onnx__type_proto__init(t);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(s);
	for (int k = 0; k < 4; k++) {
		if (!(d[k] = alloc(e, sizeof *d[k])))
			return NULL;
		onnx__tensor_shape_proto__dimension__init(d[k]);
		d[k]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
		d[k]->dim_value = shape[k];
	}
	s->n_dim = 4;
	s->dim = d;
	tt->has_elem_type = 1;
	tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	tt->shape = s;
	t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	t->tensor_type = tt;
	v->name = str(e, "%s", name);
	v->type = t;
	return v->name ? v : NULL;
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
			rc = nd->as_relu && m->qapply ? node(e, "Relu", nd->name, &in, 1, out, NULL, 0)
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
			if (m->qapply) {
				const qact *a = &m->qa[nd->qp];
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

int onnx_export(model *m, const onnx_options *o, const char *path, onnx_info *info)
{
	if (o->opset != 9 && o->opset != 11)
		return err_set("onnx: opset %d (9 or 11)", o->opset);
	if (!m->planned)
		return err_set("onnx: the model is not planned");
	if (m->nqp && !m->qapply)
		return err_set("onnx: a quantised model needs its ranges");
	if (m->folded_dirty && m->nfolded)
		g_refold(m);
	exporter e = {.opset = o->opset, .round = o->round, .m = m};
	int rc = -1, batch = o->batch > 0 ? o->batch : 1;
	e.node_cap = e.init_cap = 8 * (size_t)m->nnodes + 16;
	char **names = alloc(&e, (size_t)m->nnodes * sizeof *names);
	const char **outname = alloc(&e, (size_t)m->nnodes * sizeof *outname);
	Onnx__ValueInfoProto **outs = alloc(&e, ONNX_MAX_OUTPUTS * sizeof *outs);
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
			 .input_shape = {batch, 3, m->ph, m->pw}};
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
	g.n_output = (size_t)nout;
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
		err_set("%s: %s", f.tmp, strerror(errno));
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
	if (!m->qapply || p < 0 || p >= m->nqp)
		return err_set("onnx: no range for point %d", p);
	*lo = m->qa[p].lo;
	*hi = m->qa[p].hi;
	*frac = m->qa[p].frac;
	return 0;
}
