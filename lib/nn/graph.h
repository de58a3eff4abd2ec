/* graph: the engine's inside (as sqlite's sqliteInt.h is its own): struct model and its
 * nodes, private to the files that build and run them. Tools use model.h.
 *
 *   nn/arch.c   config "model" section -> nodes (backbones, necks, the SSD head)
 *   nn/graph.c  building nodes, shapes, consumers; graph_free
 *   nn/plan.c   one input shape -> buffers (model_plan); nn/fold.c: BN folding
 *   nn/exec.c   forward and backward;  nn/model.c: lifecycle, parameters, records
 *   quant/      owns model.q (qmodel.c: points and ranges; qexec.c: the integer plan);
 *               export/onnx_export.c reads the graph to write it out
 *
 * A graph is a list of nodes in execution order; node i produces value i. */
#ifndef GRAPH_H
#define GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/layers.h"
#include "nn/model.h"
#include "kernels/quant.h"

enum op {
	OP_INPUT,    /* the image, node 0 */
	OP_CONV,     /* conv2d, optional bias */
	OP_BN,       /* batchnorm2d */
	OP_RELU,
	OP_RELU6,
	OP_ADD,      /* in[0] + in[1] */
	OP_CONCAT,   /* along channels */
	OP_UPSAMPLE, /* nearest to the spatial size of node ref, or nearest / bilinear by a scale */
	OP_MAXPOOL,
	OP_L2NORM,
	OP_FLATTEN,  /* NCHW inputs with A*K channels -> [n, sum(h*w*A), K], concatenated */
	OP_FQ,       /* fake quantisation of a quantisation point (model_quantize inserts them) */
	OP_COUNT
};

#define GRAPH_MAXIN 8

typedef struct gnode {
	enum op op;
	char name[TENSOR_NAMELEN]; /* module name, e.g. "backbone.features.0.0" */
	enum model_part part;
	int nin, in[GRAPH_MAXIN];
	int c;                     /* output channels (flatten: K) */
	int n, h, w;               /* output shape at the planned size (flatten: h = rows, w = 1) */
	/* conv */
	int k, stride, pad, dil, groups;
	int wparam, bparam;        /* weight and bias parameter indices, -1 none (conv, bn, l2norm) */
	conv2d_desc cd;
	/* bn */
	int prm, prv;              /* running mean / var parameters */
	float eps;
	float *mean, *rstd, *varu; /* [c] batch statistics of the last training forward */
	double count;              /* BN with replicas: values per channel behind them, all parts' */
	/* upsample */
	int ref;                   /* to this node's size; -1: by scale */
	int scale, bilinear;
	/* maxpool */
	pool2d_desc pd;
	int32_t *argmax;
	/* plan */
	int nconsumers, last_consumer;
	int store, gstore, tmp;    /* storage ids, -1 none */
	int first_writer[GRAPH_MAXIN]; /* this node's backward writes in[i]'s gradient first */
	int galias[GRAPH_MAXIN];   /* in[i]'s gradient is this node's output gradient */
	int fold;                  /* conv running on its folded (and quantised) weights and bias */
	int fold_bn;               /* ... with the BN of the next node folded in */
	size_t foff;               /* its folded weights and bias, into model.folded */
	int skip;                  /* a folded BN, nothing to do */
	int keep;                  /* model_keep: the value lives to the end of the pass, as is */
	int fuse_act;              /* inference: conv: CONV_ACT_* of the act node after it;
				    * act: done by that conv (in place on its output) */
	/* quantisation */
	int qp;                    /* fq: the point's index */
	int nonneg;                /* the value is >= 0 by construction (after relu, ...) */
	int as_relu;               /* relu6 feeding a point: the point's range clips instead */
	int wfrac, xfrac, bfrac;   /* conv: fraction bits of its weights, its input, its bias */
	int *cfrac;                /* conv: [c][2] weight and bias fraction bits per output
				    * channel (per channel for a depthwise conv under
				    * model_set_per_channel_dw, else wfrac, bfrac repeated) */
	int per_channel;           /* conv: cfrac differs per channel */
	float *cmean;              /* conv: per channel mean of its (folded) output, last forward */
} gnode;

typedef struct storage {
	size_t bytes;
	int birth, death;          /* steps: forward of node i is i, its backward 2F-1-i */
	size_t off;                /* bytes into model.arena */
	float *ptr;
} storage;

/* A model's quantisation state. quant/qmodel.c allocates and fills it (model_quantize,
 * ranges, calibration) and installs teardown, which model_free calls before freeing the
 * graph (top down: the upper layer's state first); quant/qexec.c keeps its integer plan
 * in exec. The engine only reads it: fake-quant nodes, the quantised folded weights. */
struct model_quant {
	int bits, wbits, npoints;  /* bits of the activations, of the weights (<= bits); points
				    * are the fq nodes */
	int apply;                 /* ranges loaded: fq nodes quantise, convs use quantised weights */
	int stats;                 /* fq nodes record the batch range of their input */
	int means;                 /* convs record their channel means (bias calibration) */
	float *cmeans;             /* the convs' cmean storage */
	int *cfracs;               /* the convs' cfrac storage */
	int per_channel_dw;        /* depthwise convs' weights quantised per output channel */
	float *float_params;       /* bias calibration: the float model's params, kept */
	int *node;                 /* [npoints] the fq node of each point */
	float *range, *stat;       /* [npoints][2] running ranges; the last forward's batch ranges */
	qact *act;                 /* [npoints] quantisers of the loaded ranges */
	long batches;              /* batches behind range */
	struct qexec *exec;        /* forward --int8's integer plan (qexec.c) */
	int integer_only;          /* plans without float activations: model_forward_integer alone */
	void (*teardown)(model *m); /* frees all of the above; NULL before model_quantize */
};

struct model {
	char name[128];
	int num_classes;
	float bn_eps;
	int init_mmdet;            /* model.init "mmdet" (model_init_params) */
	int nnodes, cap;
	gnode *nodes;
	int nparams, pcap;
	model_param *params_info;
	float *params, *grads;     /* one allocation each, model_param.offset into them */
	size_t nfloats;
	float *bnstats;            /* mean, rstd, varu of every BN */
	float *folded;             /* inference: BN-folded conv weights and biases */
	size_t nfolded;
	int folded_dirty;
	struct model_quant q;       /* quantisation: quant/ owns it (below) */
	long fold_gen;             /* g_refold() calls: forward --int8 rebuilds its integers */
	float *fgrad;              /* training a folded conv: gradient of its folded weights, bias */
	size_t fgrad_floats;
	int noutputs;
	int outputs[4];
	char output_names[4][16];
	/* plan */
	int planned, plan_n, plan_h, plan_w, train, input_grad; /* the planned input shape */
	int pass_n;                /* images per pass through the nodes: plan_n, or 1 when an
				    * inference batch runs image by image (model_plan) */
	int nstores, scap;
	storage *stores;
	float *arena;              /* every storage at its offset: one mapping, zero pages */
	size_t arena_bytes;
	float *ws;
	size_t ws_bytes;
	const float *ext_input;
	float *const *ext_out;
	const float *const *ext_dout;
	float *ext_dinput;
	/* data parallel (model_set_sync) */
	const struct model_sync *sync;
	double *sync_buf;
	/* profile */
	int profile;
	double prof_fwd[OP_COUNT + 2], prof_bwd[OP_COUNT + 2];
	long prof_calls;
};

/* ---- arch.c: a "model" section into the graph's nodes, parameters allocated (g_finish);
 * -1 (err) naming the key. ---- */
int arch_build(model *m, const cJSON *model_section, const char *where);

/* ---- building (arch.c's builders call these; each returns the node id or -1) ---- */
int g_input(model *m, int c);
/* g_conv: padding (k - 1) / 2, dilation 1; g_conv_pad: any */
int g_conv(model *m, const char *name, int in, int cout, int k, int stride, int groups, int bias);
int g_conv_pad(model *m, const char *name, int in, int cout, int k, int stride, int pad, int dil, int groups,
	       int bias);
int g_bn(model *m, const char *name, int in);
int g_act(model *m, enum op op, const char *name, int in);
int g_add(model *m, const char *name, int a, int b);
int g_concat(model *m, const char *name, const int *ins, int nin);
int g_upsample_to(model *m, const char *name, int in, int ref);
/* by an integer factor: nearest, or bilinear (align_corners false) */
int g_upsample_scale(model *m, const char *name, int in, int scale, int bilinear);
int g_maxpool(model *m, const char *name, int in, int k, int stride, int pad, int ceil_mode);
int g_l2norm(model *m, const char *name, int in, float scale);
int g_flatten(model *m, const char *name, const int *ins, int nin, int cols);
int g_output(model *m, const char *name, int node);
/* Allocates parameters, gradients and BN statistics once the graph is complete. */
int g_finish(model *m);
/* Output shapes of every node for input [n, c, h, w]; -1 (err) naming the node. */
int g_shapes(model *m, int n, int h, int w);
/* Consumer counts and last consumers of every node (after building or rewiring). */
void g_count_consumers(model *m);
const char *graph_op_name(enum op op);
/* A node's profile class (exec.c: an op, convs split into 1x1, depthwise, other). */
int g_prof_class(const gnode *nd);
int g_is_output(const model *m, int id);
/* Frees what graph.c allocated (the plan, nodes, parameters); model.q is its owner's. */
void graph_free(model *m);

/* ---- plan.c ---- */
void g_free_plan(model *m);

/* ---- fold.c: model.folded, one block per folded conv at foff: its weights, then its
 * bias [c], each rounded up to 16 floats. These accessors are the layout's one copy. ---- */
static inline size_t g_round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}
static inline size_t g_folded_floats(const model *m, const gnode *nd)
{
	return g_round16(m->params_info[nd->wparam].count) + g_round16((size_t)nd->c);
}
static inline float *g_folded_weights(const model *m, const gnode *nd)
{
	return m->folded + nd->foff;
}
static inline float *g_folded_bias(const model *m, const gnode *nd)
{
	return m->folded + nd->foff + g_round16(m->params_info[nd->wparam].count);
}
/* Folds (and with ranges loaded, quantises) every folded conv's weights and bias. */
void g_refold(model *m);
/* g_refold() if parameters or ranges changed since: before any read of model.folded. */
void g_refresh_folds(model *m);
/* A folded conv's gradient (gw, gb, in the folded layout) back to its conv's and BN's
 * parameter gradients. */
void g_unfold_grads(model *m, const gnode *nd, const float *gw, const float *gb);

/* ---- the engine's parameter and node accessors ---- */
static inline const float *g_param(const model *m, int p)
{
	return p < 0 ? NULL : m->params + m->params_info[p].offset;
}
static inline float *g_grad(const model *m, int p)
{
	return p < 0 ? NULL : m->grads + m->params_info[p].offset;
}
static inline size_t g_node_floats(const gnode *nd)
{
	return (size_t)nd->n * nd->c * nd->h * nd->w;
}

#endif
