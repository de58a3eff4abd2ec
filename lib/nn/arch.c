/* arch: a config's "model" section -> the graph's nodes (graph.h): the backbones
 * (MobileNetV2, ResNet, RegNet, SSD VGG), the necks (FPN, SSDNeck) and the SSD head,
 * with torch's parameter names. Adding a backbone is one builder function and a line
 * in `backbones` below. */
#include "nn/graph.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "ssd/detect.h"
#include "core/err.h"

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

/* printf into a name buffer of TENSOR_NAMELEN; returns it */
static const char *nm(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *nm(char *buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, TENSOR_NAMELEN, fmt, ap);
	va_end(ap);
	return buf;
}

/* mmdet's Bottleneck (style "pytorch": the stride on the 3x3), as ResNet and RegNet use it:
 * p.conv1/bn1 1x1 -> mid + ReLU, p.conv2/bn2 3x3 (stride, groups) + ReLU, p.conv3/bn3 1x1 ->
 * out; the shortcut p.downsample.0/.1 (1x1 conv with the stride + BN) when the shape
 * changes, else identity; ReLU after the add. */
static int bottleneck(model *m, const char *p, int in, int mid, int out, int stride, int groups)
{
	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN], c[TENSOR_NAMELEN];
	int x = conv_bn_act(m, nm(a, "%s.conv1", p), nm(b, "%s.bn1", p), nm(c, "%s.relu1", p), in, mid, 1, 1, 1,
			    OP_RELU);
	if (x >= 0)
		x = conv_bn_act(m, nm(a, "%s.conv2", p), nm(b, "%s.bn2", p), nm(c, "%s.relu2", p), x, mid, 3, stride,
				groups, OP_RELU);
	if (x >= 0)
		x = conv_bn_act(m, nm(a, "%s.conv3", p), nm(b, "%s.bn3", p), NULL, x, out, 1, 1, 1, OP_INPUT);
	int sc = in;
	if (x >= 0 && (stride != 1 || m->nodes[in].c != out))
		sc = conv_bn_act(m, nm(a, "%s.downsample.0", p), nm(b, "%s.downsample.1", p), NULL, in, out, 1, stride,
				 1, OP_INPUT);
	if (x >= 0 && sc >= 0)
		x = g_add(m, nm(a, "%s.add", p), x, sc);
	return x < 0 || sc < 0 ? -1 : g_act(m, OP_RELU, nm(a, "%s.relu", p), x);
}

/* The stages backbone.layer1..4 of bottlenecks after a stem, outputs after the stages
 * out_indices names (ascending). */
typedef struct res_stage {
	int width, mid, blocks, groups, stride;
} res_stage;

static int res_stages(model *m, const char *where, int x, const res_stage *st, int nst, const cJSON *cfg,
		      feats *out)
{
	int idx[MAX_FEATS] = {0, 1, 2, 3}, nidx = nst < 4 ? nst : 4;
	if (cfg_ints(cfg, "out_indices", where, 1, MAX_FEATS, 0, nst - 1, idx, &nidx) < 0)
		return -1;
	for (int i = 1; i < nidx; i++)
		if (idx[i] <= idx[i - 1])
			return err_set("%s.out_indices: expected ascending indices", where);
	char p[TENSOR_NAMELEN];
	out->n = 0;
	for (int s = 0; s <= idx[nidx - 1] && x >= 0; s++) {
		for (int j = 0; j < st[s].blocks && x >= 0; j++)
			x = bottleneck(m, nm(p, "backbone.layer%d.%d", s + 1, j), x, st[s].mid, st[s].width,
				       j ? 1 : st[s].stride, st[s].groups);
		if (x >= 0 && out->n < nidx && idx[out->n] == s)
			out->node[out->n++] = x;
	}
	return x < 0 ? -1 : 0;
}

/* mmdet ResNet (Bottleneck depths; style pytorch): conv1 7x7/2 + bn1 + ReLU + max pool
 * 3x3/2, then stages of planes base * 2^i (out 4x), strides 1, 2, 2, 2. torchvision's
 * resnet50 has the same names. */
static int build_resnet(model *m, const cJSON *cfg, const char *where, int input, feats *out)
{
	static const char *const keys[] = {"type", "depth", "base_channels", "out_indices", NULL};
	static const struct { int depth, blocks[4]; } depths[] = {
		{50, {3, 4, 6, 3}}, {101, {3, 4, 23, 3}}, {152, {3, 8, 36, 3}}};
	int depth = 50, base = 64, d = -1;
	if (cfg_check_keys(cfg, where, keys) < 0 || cfg_int(cfg, "depth", where, 1, 1000, &depth) < 0 ||
	    cfg_int(cfg, "base_channels", where, 1, 4096, &base) < 0)
		return -1;
	for (int i = 0; i < 3; i++)
		if (depths[i].depth == depth)
			d = i;
	if (d < 0)
		return err_set("%s.depth: %d (Bottleneck ResNets only: 50, 101, 152)", where, depth);
	res_stage st[4];
	for (int s = 0; s < 4; s++)
		st[s] = (res_stage){.width = 4 * base << s, .mid = base << s, .blocks = depths[d].blocks[s], .groups = 1,
				    .stride = s ? 2 : 1};
	int x = conv_bn_act(m, "backbone.conv1", "backbone.bn1", "backbone.relu", input, base, 7, 2, 1, OP_RELU);
	if (x >= 0)
		x = g_maxpool(m, "backbone.maxpool", x, 3, 2, 1, 0);
	return x < 0 ? -1 : res_stages(m, where, x, st, 4, cfg, out);
}

/* mmdet RegNet: per-block widths from (w0, wa, wm, depth) quantised to multiples of 8
 * (generate_regnet; numpy rounds half to even, as nearbyint), runs of equal widths are
 * stages, widths and group widths made compatible (adjust_width_group); each stage is
 * ResNeXt bottlenecks with expansion 1 and groups = width / group width, stride 2 on
 * every stage's first block. Stem: conv1 3x3/2 + bn1 + ReLU, no pool. */
static int build_regnet(model *m, const cJSON *cfg, const char *where, int input, feats *out)
{
	static const char *const keys[] = {"type", "arch", "stem_channels", "out_indices", NULL};
	static const char *const akeys[] = {"w0", "wa", "wm", "group_w", "depth", "bot_mul", NULL};
	static const struct { const char *name; double a[6]; } archs[] = {
		{"regnetx_400mf", {24, 24.48, 2.54, 16, 22, 1.0}}, {"regnetx_800mf", {56, 35.73, 2.28, 16, 16, 1.0}},
		{"regnetx_1.6gf", {80, 34.01, 2.25, 24, 18, 1.0}}, {"regnetx_3.2gf", {88, 26.31, 2.25, 48, 25, 1.0}}};
	int stem = 32;
	if (cfg_check_keys(cfg, where, keys) < 0 || cfg_int(cfg, "stem_channels", where, 1, 4096, &stem) < 0)
		return -1;
	double a[6] = {0, 0, 0, 0, 0, 1.0};
	const cJSON *ar = cJSON_GetObjectItemCaseSensitive(cfg, "arch");
	char sub[256];
	snprintf(sub, sizeof sub, "%s.arch", where);
	if (cJSON_IsString(ar)) {
		size_t k = 0;
		while (k < sizeof archs / sizeof archs[0] && strcmp(archs[k].name, ar->valuestring))
			k++;
		if (k == sizeof archs / sizeof archs[0])
			return err_set("%s: unknown '%s' (regnetx_400mf, regnetx_800mf, regnetx_1.6gf, regnetx_3.2gf, "
				       "or an object {w0, wa, wm, group_w, depth, bot_mul})", sub, ar->valuestring);
		memcpy(a, archs[k].a, sizeof a);
	} else if (cJSON_IsObject(ar)) {
		int gw = 0, depth = 0;
		if (cfg_check_keys(ar, sub, akeys) < 0 || cfg_num(ar, "w0", sub, 8, 1e5, &a[0]) < 0 ||
		    cfg_num(ar, "wa", sub, 0, 1e5, &a[1]) < 0 || cfg_num(ar, "wm", sub, 1.0001, 100, &a[2]) < 0 ||
		    cfg_int(ar, "group_w", sub, 1, 4096, &gw) < 0 || cfg_int(ar, "depth", sub, 1, 64, &depth) < 0 ||
		    cfg_num(ar, "bot_mul", sub, 0.01, 16, &a[5]) < 0)
			return -1;
		if (!a[0] || !gw || !depth)
			return err_set("%s: w0, wa, wm, group_w and depth are required", sub);
		if ((int)a[0] % 8 || a[0] != (int)a[0])
			return err_set("%s.w0: %g, expected a multiple of 8", sub, a[0]);
		a[3] = gw;
		a[4] = depth;
	} else
		return err_set("%s: %s", sub, ar ? "expected a name or an object" : "missing");

	int depth = (int)a[4], w[64], ns = 0;
	res_stage st[8];
	for (int i = 0; i < depth; i++) {
		double cont = i * a[1] + a[0];
		double ks = nearbyint(log(cont / a[0]) / log(a[2]));
		w[i] = (int)(nearbyint(a[0] * pow(a[2], ks) / 8) * 8);
		if (i && w[i] == w[i - 1]) {
			st[ns - 1].blocks++;
			continue;
		}
		if (ns == 4)
			return err_set("%s: gives more than 4 stages", sub);
		st[ns++] = (res_stage){.width = w[i], .blocks = 1, .stride = 2};
	}
	for (int s = 0; s < ns; s++) {
		int bw = (int)(st[s].width * a[5]);
		int g = (int)a[3] < bw ? (int)a[3] : bw;
		bw = (int)(nearbyint((double)bw / g) * g);
		st[s].width = (int)(bw / a[5]);
		st[s].mid = (int)nearbyint(st[s].width * a[5]);
		st[s].groups = st[s].mid / g;
		st[s].mid = st[s].groups * g;
	}
	int x = conv_bn_act(m, "backbone.conv1", "backbone.bn1", "backbone.relu", input, stem, 3, 2, 1, OP_RELU);
	return x < 0 ? -1 : res_stages(m, where, x, st, ns, cfg, out);
}

typedef struct vgg_layer {
	enum op op;
	int ch, k, stride, pad, dil, ceil;
} vgg_layer;

/* mmdet SSDVGG (VGG16, no BN): backbone.features.N as torchvision's vgg16.features (3x3
 * convs with bias + ReLU, 2x2/2 max pools, ceil_mode) without the last pool, then
 * 30 max pool 3x3/1 pad 1, 31 conv 3x3 pad 6 dilation 6 (fc6), 33 conv 1x1 (fc7), each +
 * ReLU; outputs after the layers out_feature_indices names (22: conv4_3's ReLU, 34:
 * fc7's). base_channels scales the widths (64: VGG16's). */
static int build_ssd_vgg(model *m, const cJSON *cfg, const char *where, int input, feats *out)
{
	static const char *const keys[] = {"type",	 "depth",	"base_channels",       "with_last_pool",
					   "ceil_mode", "out_indices", "out_feature_indices", NULL};
	static const int convs[5] = {2, 2, 3, 3, 3}, mult[5] = {1, 2, 4, 8, 8};
	int depth = 16, base = 64, last_pool = 0, ceil_mode = 1, oi[MAX_FEATS] = {3, 4}, noi = 2,
	    ofi[MAX_FEATS] = {22, 34}, nofi = 2;
	if (cfg_check_keys(cfg, where, keys) < 0 || cfg_int(cfg, "depth", where, 1, 100, &depth) < 0 ||
	    cfg_int(cfg, "base_channels", where, 1, 4096, &base) < 0 ||
	    cfg_bool(cfg, "with_last_pool", where, &last_pool) < 0 || cfg_bool(cfg, "ceil_mode", where, &ceil_mode) < 0 ||
	    cfg_ints(cfg, "out_indices", where, 1, MAX_FEATS, 0, 10, oi, &noi) < 0 ||
	    cfg_ints(cfg, "out_feature_indices", where, 1, MAX_FEATS, 0, 34, ofi, &nofi) < 0)
		return -1;
	if (depth != 16)
		return err_set("%s.depth: %d (only VGG16)", where, depth);
	if (last_pool)
		return err_set("%s.with_last_pool: only false (SSD's VGG)", where);
	if (noi != 2 || oi[0] != 3 || oi[1] != 4)
		return err_set("%s.out_indices: only [3, 4] (conv4_3 and fc7)", where);
	for (int i = 1; i < nofi; i++)
		if (ofi[i] <= ofi[i - 1])
			return err_set("%s.out_feature_indices: expected ascending indices", where);
	/* the layer list, then one loop builds it */
	vgg_layer L[40];
	int nl = 0;
	for (int s = 0; s < 5; s++) {
		for (int j = 0; j < convs[s]; j++) {
			L[nl++] = (vgg_layer){.op = OP_CONV, .ch = base * mult[s], .k = 3, .stride = 1, .pad = 1, .dil = 1};
			L[nl++] = (vgg_layer){.op = OP_RELU};
		}
		if (s < 4)
			L[nl++] = (vgg_layer){.op = OP_MAXPOOL, .k = 2, .stride = 2, .ceil = ceil_mode};
	}
	L[nl++] = (vgg_layer){.op = OP_MAXPOOL, .k = 3, .stride = 1, .pad = 1};
	L[nl++] = (vgg_layer){.op = OP_CONV, .ch = 16 * base, .k = 3, .stride = 1, .pad = 6, .dil = 6};
	L[nl++] = (vgg_layer){.op = OP_RELU};
	L[nl++] = (vgg_layer){.op = OP_CONV, .ch = 16 * base, .k = 1, .stride = 1, .dil = 1};
	L[nl++] = (vgg_layer){.op = OP_RELU};
	char a[TENSOR_NAMELEN];
	int x = input;
	out->n = 0;
	for (int f = 0; f < nl && x >= 0; f++) {
		nm(a, "backbone.features.%d", f);
		x = L[f].op == OP_CONV	  ? g_conv_pad(m, a, x, L[f].ch, L[f].k, L[f].stride, L[f].pad, L[f].dil, 1, 1)
		    : L[f].op == OP_RELU ? g_act(m, OP_RELU, a, x)
					 : g_maxpool(m, a, x, L[f].k, L[f].stride, L[f].pad, L[f].ceil);
		if (x >= 0 && out->n < nofi && ofi[out->n] == f)
			out->node[out->n++] = x;
	}
	if (x < 0)
		return -1;
	if (out->n != nofi)
		return err_set("%s.out_feature_indices: %d is past the last layer (34)", where, ofi[nofi - 1]);
	return 0;
}

typedef int (*backbone_fn)(model *m, const cJSON *cfg, const char *where, int input, feats *out);

static const struct {
	const char *type;
	backbone_fn build;
} backbones[] = {
	{"MobileNetV2", build_mobilenet_v2},
	{"ResNet", build_resnet},
	{"RegNet", build_regnet},
	{"SSDVGG", build_ssd_vgg},
};

/* TI's lite 3x3 conv (ConvDWSep): prefix.0.0 3x3 conv (stride) with groups of gsize
 * channels (1: depthwise), .0.1 BN, ReLU, .1.0 pointwise 1x1, .1.1 BN. */
static int dwsep(model *m, const char *prefix, int in, int cout, int stride, int gsize)
{
	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN], c[TENSOR_NAMELEN];
	int cin = m->nodes[in].c;
	if (cin % gsize)
		return err_set("%s: %d channels are not groups of %d (group_size_dw)", prefix, cin, gsize);
	int x = conv_bn_act(m, nm(a, "%s.0.0", prefix), nm(b, "%s.0.1", prefix), nm(c, "%s.0.2", prefix), in, cin, 3,
			    stride, cin / gsize, OP_RELU);
	return x < 0 ? -1 : conv_bn_act(m, nm(a, "%s.1.0", prefix), nm(b, "%s.1.1", prefix), NULL, x, cout, 1, 1, 1,
				       OP_INPUT);
}

/* An FPN output or extra level: lite (dw-separable) or mmdet's plain ConvModule
 * (prefix.conv 3x3 + prefix.bn, no activation). */
static int fpn_conv(model *m, const char *prefix, int in, int cout, int stride, int gsize)
{
	char a[TENSOR_NAMELEN], b[TENSOR_NAMELEN];
	if (gsize)
		return dwsep(m, prefix, in, cout, stride, gsize);
	return conv_bn_act(m, nm(a, "%s.conv", prefix), nm(b, "%s.bn", prefix), NULL, in, cout, 3, stride, 1,
			   OP_INPUT);
}

/* mmdet FPN: laterals 1x1 conv + BN, top-down upsampling (nearest to the lateral's size,
 * or by "upsample": {"mode", "scale_factor"}) and add, 3x3 output convs, extra levels by
 * stride-2 3x3 convs on the input / lateral / output; the 3x3 convs TI's lite
 * dw-separable ones (use_depthwise, group_size_dw) or conv + BN. */
static int build_fpn(model *m, const cJSON *cfg, const char *where, const feats *in, feats *out)
{
	static const char *const keys[] = {"type", "in_channels", "out_channels", "start_level", "num_outs",
					   "add_extra_convs", "relu_before_extra_convs", "use_depthwise", "group_size_dw",
					   "upsample", NULL};
	static const char *const ukeys[] = {"mode", "scale_factor", NULL};
	int inch[MAX_FEATS], nin = 0, oc = 0, start = 0, nouts = 0, relu_extra = 0, dw = 1, gsize = 1, scale = 0,
	    bilinear = 0;
	const cJSON *up = NULL;
	if (cfg_check_keys(cfg, where, keys) < 0 ||
	    cfg_ints(cfg, "in_channels", where, 1, MAX_FEATS, 1, 65536, inch, &nin) < 0 ||
	    cfg_int(cfg, "out_channels", where, 1, 65536, &oc) < 0 ||
	    cfg_int(cfg, "start_level", where, 0, MAX_FEATS - 1, &start) < 0 ||
	    cfg_int(cfg, "num_outs", where, 1, MAX_FEATS, &nouts) < 0 ||
	    cfg_bool(cfg, "relu_before_extra_convs", where, &relu_extra) < 0 ||
	    cfg_bool(cfg, "use_depthwise", where, &dw) < 0 ||
	    cfg_int(cfg, "group_size_dw", where, 1, 65536, &gsize) < 0 ||
	    cfg_object(cfg, "upsample", where, NULL, &up) < 0)
		return -1;
	if (!nin || !oc || !nouts)
		return err_set("%s: in_channels, out_channels and num_outs are required", where);
	if (up) {
		char sub[256];
		snprintf(sub, sizeof sub, "%s.upsample", where);
		const cJSON *mode = cJSON_GetObjectItemCaseSensitive(up, "mode");
		if (cfg_check_keys(up, sub, ukeys) < 0 || cfg_int(up, "scale_factor", sub, 1, 64, &scale) < 0)
			return -1;
		if (mode && (!cJSON_IsString(mode) ||
			     (strcmp(mode->valuestring, "nearest") && strcmp(mode->valuestring, "bilinear"))))
			return err_set("%s.mode: expected \"nearest\" or \"bilinear\"", sub);
		bilinear = mode && !strcmp(mode->valuestring, "bilinear");
		if (bilinear && !scale)
			return err_set("%s: bilinear needs scale_factor", sub);
	}
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
		gsize = 0;

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
		int u = scale ? g_upsample_scale(m, a, lat[i], scale, bilinear) : g_upsample_to(m, a, lat[i], lat[i - 1]);
		snprintf(a, sizeof a, "neck.top_down.%d.add", i);
		if (u < 0 || (lat[i - 1] = g_add(m, a, lat[i - 1], u)) < 0)
			return -1;
	}
	out->n = 0;
	for (int i = 0; i < used; i++) {
		snprintf(a, sizeof a, "neck.fpn_convs.%d", i);
		if ((out->node[out->n++] = fpn_conv(m, a, lat[i], oc, 1, gsize)) < 0)
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
		if ((out->node[out->n++] = fpn_conv(m, a, src, oc, 2, gsize)) < 0)
			return -1;
	}
	return 0;
}

/* mmdet 2.x SSDNeck: the backbone's outputs, the first L2-normalised (neck.l2_norm,
 * weights l2_norm_scale; 0: none), then extra levels e, each on the previous output:
 * neck.extra_layers.e.0.conv 1x1 -> oc/2 + ReLU, .1.conv k x k (3; last_kernel_size for
 * the last) with level_strides[e] and level_paddings[e] -> oc + ReLU; convs with bias. */
static int build_ssd_neck(model *m, const cJSON *cfg, const char *where, const feats *in, feats *out)
{
	static const char *const keys[] = {"type",	     "in_channels",   "out_channels",     "level_strides",
					   "level_paddings", "l2_norm_scale", "last_kernel_size", NULL};
	int inch[MAX_FEATS], nin = 0, oc[MAX_FEATS], noc = 0, st[MAX_FEATS], nst = 0, pd[MAX_FEATS], npd = 0,
	    lastk = 3;
	double l2 = 20;
	if (cfg_check_keys(cfg, where, keys) < 0 ||
	    cfg_ints(cfg, "in_channels", where, 1, MAX_FEATS, 1, 65536, inch, &nin) < 0 ||
	    cfg_ints(cfg, "out_channels", where, 1, MAX_FEATS, 2, 65536, oc, &noc) < 0 ||
	    cfg_ints(cfg, "level_strides", where, 0, MAX_FEATS, 1, 64, st, &nst) < 0 ||
	    cfg_ints(cfg, "level_paddings", where, 0, MAX_FEATS, 0, 64, pd, &npd) < 0 ||
	    cfg_num(cfg, "l2_norm_scale", where, 0, 1e6, &l2) < 0 ||
	    cfg_int(cfg, "last_kernel_size", where, 1, 15, &lastk) < 0)
		return -1;
	if (!nin || !noc)
		return err_set("%s: in_channels and out_channels are required", where);
	if (nin != in->n)
		return err_set("%s.in_channels: %d levels, the backbone gives %d", where, nin, in->n);
	int extra = noc - nin;
	if (extra < 0 || nst != extra || npd != extra)
		return err_set("%s: %d out_channels after the %d inputs, %d level_strides, %d level_paddings: expected "
			       "one of each per extra level", where, extra, nin, nst, npd);
	for (int i = 0; i < nin; i++)
		if (inch[i] != m->nodes[in->node[i]].c || oc[i] != inch[i])
			return err_set("%s: level %d: in_channels %d, out_channels %d, the backbone gives %d", where, i,
				       inch[i], oc[i], m->nodes[in->node[i]].c);
	char a[TENSOR_NAMELEN];
	*out = *in;
	if (l2 > 0 && (out->node[0] = g_l2norm(m, "neck.l2_norm", in->node[0], (float)l2)) < 0)
		return -1;
	int x = out->node[nin - 1];
	for (int e = 0; e < extra; e++) {
		int k = e == extra - 1 ? lastk : 3, o = oc[nin + e];
		x = g_conv(m, nm(a, "neck.extra_layers.%d.0.conv", e), x, o / 2, 1, 1, 1, 1);
		if (x >= 0)
			x = g_act(m, OP_RELU, nm(a, "neck.extra_layers.%d.0.activate", e), x);
		if (x >= 0)
			x = g_conv_pad(m, nm(a, "neck.extra_layers.%d.1.conv", e), x, o, k, st[e], pd[e], 1, 1, 1);
		if (x >= 0)
			x = g_act(m, OP_RELU, nm(a, "neck.extra_layers.%d.1.activate", e), x);
		if (x < 0)
			return -1;
		out->node[out->n++] = x;
	}
	return 0;
}

/* mmdet 2.x SSDHead: per level and branch either .i.0 3x3 conv with bias (plain), or
 * (use_depthwise) .i.0.conv 3x3 with groups of group_size_dw channels (1: depthwise),
 * .i.0.bn, ReLU, .i.1 pointwise with bias; outputs flattened NHWC and concatenated. */
static int build_ssd_head(model *m, const cJSON *cfg, const char *where, const feats *in, const int *anchors,
			  int nanchor_levels)
{
	static const char *const keys[] = {"type", "in_channels", "use_depthwise", "group_size_dw", NULL};
	int inch[MAX_FEATS], nin = 0, dw = 1, gsize = 1;
	if (cfg_check_keys(cfg, where, keys) < 0 ||
	    cfg_ints(cfg, "in_channels", where, 1, MAX_FEATS, 1, 65536, inch, &nin) < 0 ||
	    cfg_bool(cfg, "use_depthwise", where, &dw) < 0 || cfg_int(cfg, "group_size_dw", where, 1, 65536, &gsize) < 0)
		return -1;
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
			int ch = m->nodes[in->node[i]].c, x;
			if (!dw)
				x = g_conv(m, nm(a, "bbox_head.%s.%d.0", bn, i), in->node[i], anchors[i] * per, 3, 1, 1, 1);
			else if (ch % gsize)
				return err_set("%s.group_size_dw: %d does not divide level %d's %d channels", where, gsize, i,
					       ch);
			else {
				x = conv_bn_act(m, nm(a, "bbox_head.%s.%d.0.conv", bn, i), nm(b, "bbox_head.%s.%d.0.bn", bn, i),
						nm(c, "bbox_head.%s.%d.0.relu", bn, i), in->node[i], ch, 3, 1, ch / gsize,
						OP_RELU);
				if (x >= 0)
					x = g_conv(m, nm(a, "bbox_head.%s.%d.1", bn, i), x, anchors[i] * per, 1, 1, 1, 1);
			}
			if (x < 0)
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

/* ---------------------------------------------------------------- the whole model */

int arch_build(model *m, const cJSON *sec, const char *where)
{
	/* anchors, bbox_coder and test belong to detect.h, train to ssd_loss.h: they check them */
	static const char *const keys[] = {"num_classes", "bn_eps", "init", "backbone", "neck", "head",
					   "anchors",     "bbox_coder", "test", "train", NULL};
	char sub[256];
	double eps = 1e-5;
	m->num_classes = 0;
	head_config det;
	head_config_default(&det);
	if (!cJSON_IsObject(sec)) {
		err_set("%s: expected an object", where);
		goto fail;
	}
	if (cfg_check_keys(sec, where, keys) < 0 ||
	    cfg_int(sec, "num_classes", where, 1, 100000, &m->num_classes) < 0 ||
	    cfg_num(sec, "bn_eps", where, 0, 1, &eps) < 0 || head_config_apply(&det, sec, where) < 0)
		goto fail;
	if (!m->num_classes) {
		err_set("%s.num_classes: missing", where);
		goto fail;
	}
	m->bn_eps = (float)eps;
	const cJSON *init = cJSON_GetObjectItemCaseSensitive(sec, "init");
	if (init && (!cJSON_IsString(init) || (strcmp(init->valuestring, "torch") && strcmp(init->valuestring, "mmdet")))) {
		err_set("%s.init: \"torch\" or \"mmdet\"", where);
		goto fail;
	}
	m->init_mmdet = init && !strcmp(init->valuestring, "mmdet");
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
		err_set("%s.type: unknown backbone '%s' (known: MobileNetV2, ResNet, RegNet, SSDVGG)", sub, type);
		goto fail;
	}
	if (backbones[k].build(m, bb, sub, input, &bf) < 0)
		goto fail;
	snprintf(sub, sizeof sub, "%s.neck", where);
	if (!(type = get_type(nk, sub)))
		goto fail;
	if (strcmp(type, "FPN") && strcmp(type, "SSDNeck")) {
		err_set("%s.type: unknown neck '%s' (known: FPN, SSDNeck)", sub, type);
		goto fail;
	}
	if ((!strcmp(type, "FPN") ? build_fpn : build_ssd_neck)(m, nk, sub, &bf, &nf) < 0)
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
	return 0;
fail:
	return -1;
}

