/* model: the "model" section of a config -> a graph (graph.h); parameter records.
 * Adding a backbone is one builder function and a line in `backbones` below. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "detect.h"
#include "err.h"
#include "graph.h"

/* ---------------------------------------------------------------- config helpers */

/* The "type" string, required. */
static const char *get_type(const cJSON *o, const char *where)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "type");
	if (!cJSON_IsString(v)) {
		err_set("%s.type: %s", where, v ? "expected a string" : "missing");
		return NULL;
	}
	return v->valuestring;
}

/* ---------------------------------------------------------------- builders */

#define MAX_FEATS 8

/* What a backbone hands the neck: its output nodes (ascending stride). */
typedef struct feats {
	int n;
	int node[MAX_FEATS];
} feats;

/* conv (no bias) + bn [+ act]; names prefix.<ci>, prefix.<bi>; returns the last node */
static int conv_bn_act(model *m, const char *conv, const char *bn, const char *actname, int in, int cout, int k,
		       int stride, int groups, enum op act)
{
	int x = g_conv(m, conv, in, cout, k, stride, groups, 0);
	if (x >= 0)
		x = g_bn(m, bn, x);
	if (x >= 0 && act != OP_INPUT)
		x = g_act(m, act, actname, x);
	return x;
}

/* torchvision's _make_divisible(v, 8): the nearest multiple of 8, not below 90% of v. */
static int make_divisible(double v)
{
	int d = 8, nv = (int)(v + d / 2.0) / d * d;
	if (nv < d)
		nv = d;
	if (nv < 0.9 * v)
		nv += d;
	return nv;
}

/* torchvision mobilenet_v2(width_mult).features[0 .. max(out_indices)]; names
 * backbone.features.N.* as its state_dict. */
static int build_mobilenet_v2(model *m, const cJSON *cfg, const char *where, int input, feats *out)
{
	static const char *const keys[] = {"type", "width_mult", "out_indices", NULL};
	static const int setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
					  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
	double wm = 1.0;
	int idx[MAX_FEATS] = {3, 6, 13, 17}, nidx = 4;
	if (cfg_check_keys(cfg, where, keys) < 0 || cfg_num(cfg, "width_mult", where, 0.05, 4, &wm) < 0 ||
	    cfg_ints(cfg, "out_indices", where, 1, MAX_FEATS, 0, 17, idx, &nidx) < 0)
		return -1;
	for (int i = 1; i < nidx; i++)
		if (idx[i] <= idx[i - 1])
			return err_set("%s.out_indices: expected ascending indices", where);
	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN], c[TENSOR_NAMELEN];
	int cin = make_divisible(32 * wm), x;
	x = conv_bn_act(m, "backbone.features.0.0", "backbone.features.0.1", "backbone.features.0.2", input, cin, 3, 2,
			1, OP_RELU6);
	int f = 1, next = 0;
	out->n = 0;
	if (x >= 0 && idx[0] == 0)
		out->node[out->n++] = x, next++;
	for (int s = 0; s < 7 && x >= 0 && next < nidx; s++) {
		int t = setting[s][0];
		int cout = make_divisible(setting[s][1] * wm);
		for (int r = 0; r < setting[s][2] && x >= 0 && next < nidx; r++, f++) {
			int stride = r == 0 ? setting[s][3] : 1, hidden = cin * t, blk = x, j = 0;
			char p[48];
			snprintf(p, sizeof p, "backbone.features.%d.conv", f);
			if (t != 1) {
				snprintf(a, sizeof a, "%s.0.0", p);
				snprintf(b, sizeof b, "%s.0.1", p);
				snprintf(c, sizeof c, "%s.0.2", p);
				x = conv_bn_act(m, a, b, c, x, hidden, 1, 1, 1, OP_RELU6);
				j = 1;
			}
			snprintf(a, sizeof a, "%s.%d.0", p, j);
			snprintf(b, sizeof b, "%s.%d.1", p, j);
			snprintf(c, sizeof c, "%s.%d.2", p, j);
			if (x >= 0)
				x = conv_bn_act(m, a, b, c, x, hidden, 3, stride, hidden, OP_RELU6);
			snprintf(a, sizeof a, "%s.%d", p, j + 1);
			snprintf(b, sizeof b, "%s.%d", p, j + 2);
			if (x >= 0)
				x = conv_bn_act(m, a, b, NULL, x, cout, 1, 1, 1, OP_INPUT);
			if (x >= 0 && stride == 1 && cin == cout) {
				snprintf(a, sizeof a, "backbone.features.%d.add", f);
				x = g_add(m, a, blk, x);
			}
			cin = cout;
			if (x >= 0 && f == idx[next])
				out->node[out->n++] = x, next++;
		}
	}
	return x < 0 ? -1 : 0;
}

typedef int (*backbone_fn)(model *m, const cJSON *cfg, const char *where, int input, feats *out);

static const struct {
	const char *type;
	backbone_fn build;
} backbones[] = {
	{"MobileNetV2", build_mobilenet_v2},
};

/* TI's lite 3x3 conv: prefix.0.0 depthwise 3x3 (stride), .0.1 BN, ReLU, .1.0 pointwise 1x1, .1.1 BN. */
static int dwsep(model *m, const char *prefix, int in, int cout, int stride)
{
	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN], c[TENSOR_NAMELEN];
	snprintf(a, sizeof a, "%s.0.0", prefix);
	snprintf(b, sizeof b, "%s.0.1", prefix);
	snprintf(c, sizeof c, "%s.0.2", prefix);
	int x = conv_bn_act(m, a, b, c, in, m->nodes[in].c, 3, stride, m->nodes[in].c, OP_RELU);
	snprintf(a, sizeof a, "%s.1.0", prefix);
	snprintf(b, sizeof b, "%s.1.1", prefix);
	return x < 0 ? -1 : conv_bn_act(m, a, b, NULL, x, cout, 1, 1, 1, OP_INPUT);
}

/* mmdet FPN (lite): laterals 1x1 conv + BN, top-down nearest upsampling to the
 * lateral's size and add, dw-separable output convs, extra levels by stride-2
 * dw-separable convs on the input / lateral / output. */
static int build_fpn(model *m, const cJSON *cfg, const char *where, const feats *in, feats *out)
{
	static const char *const keys[] = {"type", "in_channels", "out_channels", "start_level", "num_outs",
					   "add_extra_convs", "relu_before_extra_convs", "use_depthwise", NULL};
	int inch[MAX_FEATS], nin = 0, oc = 0, start = 0, nouts = 0, relu_extra = 0, dw = 1;
	if (cfg_check_keys(cfg, where, keys) < 0 ||
	    cfg_ints(cfg, "in_channels", where, 1, MAX_FEATS, 1, 65536, inch, &nin) < 0 ||
	    cfg_int(cfg, "out_channels", where, 1, 65536, &oc) < 0 ||
	    cfg_int(cfg, "start_level", where, 0, MAX_FEATS - 1, &start) < 0 ||
	    cfg_int(cfg, "num_outs", where, 1, MAX_FEATS, &nouts) < 0 ||
	    cfg_bool(cfg, "relu_before_extra_convs", where, &relu_extra) < 0 ||
	    cfg_bool(cfg, "use_depthwise", where, &dw) < 0)
		return -1;
	if (!nin || !oc || !nouts)
		return err_set("%s: in_channels, out_channels and num_outs are required", where);
	if (nin != in->n)
		return err_set("%s.in_channels: %d levels, the backbone gives %d", where, nin, in->n);
	for (int i = 0; i < nin; i++)
		if (inch[i] != m->nodes[in->node[i]].c)
			return err_set("%s.in_channels[%d]: %d, the backbone gives %d channels", where, i, inch[i],
				       m->nodes[in->node[i]].c);
	if (start >= nin)
		return err_set("%s.start_level: %d, only %d inputs", where, start, nin);
	int used = nin - start;
	if (nouts < used)
		return err_set("%s.num_outs: %d, fewer than the %d levels used", where, nouts, used);
	const cJSON *ex = cJSON_GetObjectItemCaseSensitive(cfg, "add_extra_convs");
	const char *extra = "on_input";
	if (ex && cJSON_IsString(ex))
		extra = ex->valuestring;
	else if (ex && cJSON_IsTrue(ex))
		extra = "on_input";
	else if (ex && cJSON_IsFalse(ex))
		extra = NULL;
	else if (ex)
		return err_set("%s.add_extra_convs: expected on_input, on_lateral, on_output or a boolean", where);
	if (extra && strcmp(extra, "on_input") && strcmp(extra, "on_lateral") && strcmp(extra, "on_output"))
		return err_set("%s.add_extra_convs: unknown '%s' (on_input, on_lateral, on_output)", where, extra);
	if (!extra && nouts > used)
		return err_set("%s: extra levels by max pooling (add_extra_convs false) are not supported", where);
	if (!dw)
		return err_set("%s.use_depthwise: only the lite (depthwise) FPN is supported so far", where);

	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN];
	int lat[MAX_FEATS];
	for (int i = 0; i < used; i++) {
		snprintf(a, sizeof a, "neck.lateral_convs.%d.conv", i);
		snprintf(b, sizeof b, "neck.lateral_convs.%d.bn", i);
		if ((lat[i] = conv_bn_act(m, a, b, NULL, in->node[start + i], oc, 1, 1, 1, OP_INPUT)) < 0)
			return -1;
	}
	for (int i = used - 1; i > 0; i--) {
		snprintf(a, sizeof a, "neck.top_down.%d.upsample", i);
		int up = g_upsample_to(m, a, lat[i], lat[i - 1]);
		snprintf(a, sizeof a, "neck.top_down.%d.add", i);
		if (up < 0 || (lat[i - 1] = g_add(m, a, lat[i - 1], up)) < 0)
			return -1;
	}
	out->n = 0;
	for (int i = 0; i < used; i++) {
		snprintf(a, sizeof a, "neck.fpn_convs.%d", i);
		if ((out->node[out->n++] = dwsep(m, a, lat[i], oc, 1)) < 0)
			return -1;
	}
	for (int i = used; i < nouts; i++) {
		int src;
		if (i == used)
			src = !strcmp(extra, "on_input")	   ? in->node[nin - 1]
			      : !strcmp(extra, "on_lateral") ? lat[used - 1]
							     : out->node[used - 1];
		else {
			src = out->node[i - 1];
			if (relu_extra) {
				snprintf(a, sizeof a, "neck.fpn_convs.%d.relu_in", i);
				if ((src = g_act(m, OP_RELU, a, src)) < 0)
					return -1;
			}
		}
		snprintf(a, sizeof a, "neck.fpn_convs.%d", i);
		if ((out->node[out->n++] = dwsep(m, a, src, oc, 2)) < 0)
			return -1;
	}
	return 0;
}

/* mmdet 2.x SSDHead(use_depthwise): per level and branch .i.0.conv depthwise 3x3, .i.0.bn,
 * ReLU, .i.1 pointwise with bias; outputs flattened NHWC and concatenated. */
static int build_ssd_head(model *m, const cJSON *cfg, const char *where, const feats *in, const int *anchors,
			  int nanchor_levels)
{
	static const char *const keys[] = {"type", "in_channels", "use_depthwise", NULL};
	int inch[MAX_FEATS], nin = 0, dw = 1;
	if (cfg_check_keys(cfg, where, keys) < 0 ||
	    cfg_ints(cfg, "in_channels", where, 1, MAX_FEATS, 1, 65536, inch, &nin) < 0 ||
	    cfg_bool(cfg, "use_depthwise", where, &dw) < 0)
		return -1;
	if (!dw)
		return err_set("%s.use_depthwise: only the lite (depthwise) head is supported so far", where);
	if (nin && nin != in->n)
		return err_set("%s.in_channels: %d levels, the neck gives %d", where, nin, in->n);
	for (int i = 0; i < nin; i++)
		if (inch[i] != m->nodes[in->node[i]].c)
			return err_set("%s.in_channels[%d]: %d, the neck gives %d channels", where, i, inch[i],
				       m->nodes[in->node[i]].c);
	if (nanchor_levels != in->n)
		return err_set("%s: model.anchors has %d levels, the neck gives %d", where, nanchor_levels, in->n);
	int cls[MAX_FEATS], reg[MAX_FEATS];
	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN], c[TENSOR_NAMELEN];
	for (int br = 0; br < 2; br++) {
		const char *bn = br ? "reg_convs" : "cls_convs";
		int per = br ? 4 : m->num_classes + 1;
		for (int i = 0; i < in->n; i++) {
			int ch = m->nodes[in->node[i]].c;
			snprintf(a, sizeof a, "bbox_head.%s.%d.0.conv", bn, i);
			snprintf(b, sizeof b, "bbox_head.%s.%d.0.bn", bn, i);
			snprintf(c, sizeof c, "bbox_head.%s.%d.0.relu", bn, i);
			int x = conv_bn_act(m, a, b, c, in->node[i], ch, 3, 1, ch, OP_RELU);
			snprintf(a, sizeof a, "bbox_head.%s.%d.1", bn, i);
			if (x < 0 || (x = g_conv(m, a, x, anchors[i] * per, 1, 1, 1, 1)) < 0)
				return -1;
			(br ? reg : cls)[i] = x;
		}
	}
	int fc = g_flatten(m, "bbox_head.cls", cls, in->n, m->num_classes + 1);
	int fr = fc < 0 ? -1 : g_flatten(m, "bbox_head.reg", reg, in->n, 4);
	if (fr < 0 || g_output(m, "cls", fc) < 0 || g_output(m, "reg", fr) < 0)
		return -1;
	return 0;
}

/* ---------------------------------------------------------------- model */

model *model_new(const cJSON *sec, const char *where)
{
	/* anchors, bbox_coder and test belong to detect.h, train to ssd_loss.h: they check them */
	static const char *const keys[] = {"num_classes", "bn_eps", "backbone", "neck", "head",
					   "anchors",     "bbox_coder", "test", "train", NULL};
	model *m = calloc(1, sizeof *m);
	if (!m) {
		err_set("out of memory");
		return NULL;
	}
	char sub[256];
	double eps = 1e-5;
	m->num_classes = 0;
	model_config det;
	model_config_default(&det);
	if (!cJSON_IsObject(sec)) {
		err_set("%s: expected an object", where);
		goto fail;
	}
	if (cfg_check_keys(sec, where, keys) < 0 ||
	    cfg_int(sec, "num_classes", where, 1, 100000, &m->num_classes) < 0 ||
	    cfg_num(sec, "bn_eps", where, 0, 1, &eps) < 0 || model_config_apply(&det, sec, where) < 0)
		goto fail;
	if (!m->num_classes) {
		err_set("%s.num_classes: missing", where);
		goto fail;
	}
	m->bn_eps = (float)eps;
	static const char *const parts[PART_COUNT] = {"backbone", "neck", "head"};
	const cJSON *part[PART_COUNT];
	for (int i = 0; i < PART_COUNT; i++) {
		if (cfg_object(sec, parts[i], where, NULL, &part[i]) < 0)
			goto fail;
		if (!part[i]) {
			err_set("%s.%s: missing", where, parts[i]);
			goto fail;
		}
	}
	const cJSON *bb = part[PART_BACKBONE], *nk = part[PART_NECK], *hd = part[PART_HEAD];
	int input = g_input(m, 3);
	feats bf = {0}, nf = {0};
	snprintf(sub, sizeof sub, "%s.backbone", where);
	const char *type = get_type(bb, sub);
	if (!type || input < 0)
		goto fail;
	size_t k = 0;
	while (k < sizeof backbones / sizeof backbones[0] && strcmp(backbones[k].type, type))
		k++;
	if (k == sizeof backbones / sizeof backbones[0]) {
		err_set("%s.type: unknown backbone '%s' (known: MobileNetV2)", sub, type);
		goto fail;
	}
	if (backbones[k].build(m, bb, sub, input, &bf) < 0)
		goto fail;
	snprintf(sub, sizeof sub, "%s.neck", where);
	if (!(type = get_type(nk, sub)))
		goto fail;
	if (strcmp(type, "FPN")) {
		err_set("%s.type: unknown neck '%s' (known: FPN)", sub, type);
		goto fail;
	}
	if (build_fpn(m, nk, sub, &bf, &nf) < 0)
		goto fail;
	snprintf(sub, sizeof sub, "%s.head", where);
	if (!(type = get_type(hd, sub)))
		goto fail;
	if (strcmp(type, "SSDHead")) {
		err_set("%s.type: unknown head '%s' (known: SSDHead)", sub, type);
		goto fail;
	}
	int anchors[MAX_FEATS];
	for (int i = 0; i < det.anchors.nlevels && i < MAX_FEATS; i++)
		anchors[i] = 2 + 2 * det.anchors.nratios[i];
	if (build_ssd_head(m, hd, sub, &nf, anchors, det.anchors.nlevels) < 0 || g_finish(m) < 0)
		goto fail;
	snprintf(m->name, sizeof m->name, "model");
	return m;
fail:
	model_free(m);
	return NULL;
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
		if (p->conv) {
			/* kaiming_uniform(a = sqrt(5)): gain sqrt(2 / 6), bound gain * sqrt(3 / fan_in)
			 * = 1 / sqrt(fan_in); the bias has the same bound */
			double bound = 1.0 / sqrt((double)p->fan_in);
			rng r;
			rng_seed3(&r, seed, (uint64_t)i, 0x9a7a);
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

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

int model_load_params(model *m, const record *r)
{
	char want[96], got[96];
	if (strcmp(r->kind, "params"))
		return err_set("expected a params record, got '%s'", r->kind);
	for (int i = 0; i < m->nparams; i++) {
		const model_param *p = &m->params_info[i];
		tensor *t = record_find(r, p->name);
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
	for (int k = 0; k < r->ntensors; k++) {
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
		memcpy(m->params + p->offset, record_find(r, p->name)->data, p->count * sizeof(float));
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
	if (nd->pw >= 0)
		n += (int64_t)m->params_info[nd->pw].count;
	if (nd->pb >= 0)
		n += (int64_t)m->params_info[nd->pb].count;
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
		g_shapes(m, m->pn, m->ph, m->pw);
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
	shape[0] = nd->n;
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
