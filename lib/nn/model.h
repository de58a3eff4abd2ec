/* model: the network engine. A config's "model" section (mmdet's level of description:
 * backbone, neck and head types with their parameters) is expanded into a graph of
 * primitive nodes (conv, bn, relu, relu6, add, concat, upsample, maxpool, l2norm,
 * flatten) with named parameters, which then runs forward and backward on the kernels
 * of layers.h. Schema and names: docs/models.md.
 *
 * Lifecycle: model_new() builds the graph and one allocation of parameters (and one of
 * their gradients); model_plan() sizes every activation, gradient and workspace buffer
 * for one input shape and mode, reusing memory between tensors whose lifetimes do not
 * overlap, and allocates it once; model_forward() / model_backward() then run without
 * allocating. Planning again for another shape frees the previous plan.
 *
 * Parameter names are the torch reference model's state_dict keys (tests/ref_model.py):
 * "backbone.features.N..." as torchvision's mobilenet_v2, "neck.lateral_convs.i.conv",
 * "neck.fpn_convs.i.0.0" (depthwise) ... and "bbox_head.cls_convs.i.1" (pointwise with
 * bias). Nothing here prints or exits; failures are -1 / NULL with err_set(). */
#ifndef MODEL_H
#define MODEL_H

#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "core/rng.h"
#include "core/stream.h"

enum model_part { PART_BACKBONE, PART_NECK, PART_HEAD, PART_COUNT };

enum param_kind { PK_WEIGHT, PK_BIAS, PK_RUNNING_MEAN, PK_RUNNING_VAR };

typedef struct model_param {
	char name[TENSOR_NAMELEN];
	enum param_kind kind;
	int ndim;
	int64_t shape[4];
	size_t offset, count;   /* in floats, into model.params (and model.grads) */
	int fan_in, fan_out;    /* for the init of conv weights and biases (torch's fan-out
				 * convention: out channels times kernel area, groups aside) */
	float init;             /* constant init of non-conv weights (BN 1, L2Norm scale) */
	int conv;               /* belongs to a conv (kaiming / fan-in uniform init) */
	enum model_part part;
} model_param;

typedef struct model model;

/* Builds the model of a parsed "model" section; where names it in messages
 * ("configs/x.json: model"). Unknown keys and bad values are errors naming the key. */
model *model_new(const cJSON *model_section, const char *where);
/* config_read() + model_new() of its "model" member (which must exist). */
model *model_load(const char *path);
void model_free(model *m);

/* The config's "name" (or the file name) carried in params records. */
void model_set_name(model *m, const char *name);
const char *model_name(const model *m);

/* ---- parameters ---- */
int model_nparams(const model *m);
const model_param *model_param_at(const model *m, int i);
float *model_param_data(model *m, int i);
/* Parameters, all of them (trainable and BN running statistics). */
size_t model_param_floats(const model *m);
/* Trainable parameters (weights and biases) only. */
int64_t model_trainable_count(const model *m);

/* The model's initialisation with our own seeded rng. model.init "torch" (the default):
 * PyTorch's, conv weights kaiming_uniform(a = sqrt(5)) = U(+-1/sqrt(fan_in)), conv biases
 * U(+-1/sqrt(fan_in)). "mmdet": mmdet's init_cfg of these modules, backbone convs
 * Kaiming normal (fan_out, ReLU gain: std sqrt(2/fan_out)), neck and head convs Xavier
 * uniform (U(+-sqrt(6/(fan_in+fan_out)))), conv biases 0. Either way BN weight 1, bias
 * 0, running mean 0, var 1, L2Norm its scale. Each tensor draws from its own stream
 * (seed, tensor index), so adding a layer does not change the others. */
void model_init_params(model *m, uint64_t seed);
/* Loads a "params" record: every parameter by name, f32, exact shape. A missing, extra,
 * mistyped or mis-shaped tensor is an error naming it (num_batches_tracked is ignored). */
int model_load_params(model *m, const record *r);
/* A "params" record of the current parameters; meta {"step": step, "config": name}. */
record *model_params_record(const model *m, long step);

/* ---- shapes, counts ---- */

typedef struct model_counts {
	int64_t params[PART_COUNT], params_total;
	int64_t macs[PART_COUNT], macs_total; /* conv output elements x kh*kw*cin/groups, per image */
	int nodes, convs;
	int64_t anchors;                        /* rows of the outputs */
} model_counts;

/* Output shapes and counts for one image of h x w; -1 (err) if the geometry fails. */
int model_count(model *m, int h, int w, model_counts *c);
int model_noutputs(const model *m);
int model_num_classes(const model *m);
const char *model_output_name(const model *m, int i);
/* Per-node description for --summary: name, op, output shape "[c,h,w]", params, MACs
 * per image; valid after model_count() or model_plan(). 0, or -1 past the last node. */
int model_node_info(const model *m, int i, const char **name, const char **op, char *shape, size_t len,
		    int64_t *params, int64_t *macs, enum model_part *part);
const char *model_part_name(enum model_part p);

/* ---- running ---- */

typedef struct model_plan_info {
	size_t activation_bytes; /* the arena of activations and gradients */
	size_t workspace_bytes;
	int buffers;             /* values and gradients placed in it */
} model_plan_info;

/* Plans and allocates for input [n,3,h,w]. train: BN uses batch statistics and
 * everything backward needs is kept; input_grad: backward also writes dLoss/dimage.
 * Call after the thread count is set (conv workspaces are sized for it). */
int model_plan(model *m, int n, int h, int w, int train, int input_grad);
void model_plan_get_info(const model *m, model_plan_info *info);
/* Fills the plan's activations, gradients and workspace with NaNs. The plan leaves
 * them as mapped (zero pages, no memset): tests poison them to check that every value
 * is written before it is read. */
void model_plan_poison(model *m);
/* Keeps the value of node name (a module name as forward --summary lists them:
 * "backbone.layer2.3.relu", "backbone.features.6.conv.2") whole after each forward, for
 * tests that compare a part of the network (tests/unit/test_pretrained.c): nothing
 * overwrites it in place and a conv keeps its own output (no BN folded into it, no
 * activation fused). Call before model_plan(). -1 (err) without such a node. */
int model_keep(model *m, const char *name);
/* The kept value of the last forward, [n, c, h, w] in shape; NULL (err) if not kept. */
const float *model_value(const model *m, const char *name, int64_t shape[4]);
/* Output i's shape [n, anchors, k]. */
void model_output_shape(const model *m, int i, int64_t shape[3]);

/* Forward of input [n,3,h,w] into outputs[i] (caller's buffers, shapes as
 * model_output_shape). The input must stay valid until model_backward() returns. */
int model_forward(model *m, const float *input, float *const *outputs);
/* Backward of the last forward (train plan) from dLoss/doutput[i]: parameter gradients
 * are zeroed then written to model_grads(); dinput (input_grad plans) may be NULL. */
int model_backward(model *m, const float *const *doutputs, float *dinput);
/* Gradients, laid out as the parameters (BN running-stat slots stay 0); NULL until
 * the first training plan allocates them. */
const float *model_grads(const model *m);
/* Data-parallel training (lib/train/dist.c over MPI): replicas of the model, each on its own
 * part of a batch, train as one model on the whole batch. In training forwards BN takes
 * its statistics over every part (sync BN), its backward sums over every part, and
 * model_backward() leaves the gradients summed over the replicas (so the caller scales
 * dLoss/doutput to the whole batch's loss first). sum: x = the sum over replicas, in
 * place; moments: nmm [c][3] holds this replica's (count, mean, m2) per channel of a
 * BN and becomes the whole batch's (batchnorm2d_merge_moments over the replicas).
 * All must leave the same bits on every replica: the BN running statistics and so
 * the weights depend on them. With quantisation statistics on (QAT), the batch ranges
 * of the quantisation points are the whole batch's too. */
typedef struct model_sync {
	int replicas;
	int (*sum)(double *x, size_t n);
	int (*sum_f32)(float *x, size_t n);
	int (*moments)(double *nmm, int c);
	int (*max)(double *x, size_t n); /* x = the elementwise max over replicas */
} model_sync;
/* s NULL: this process alone (the default). s must outlive its use. */
int model_set_sync(model *m, const model_sync *s);
/* A "grads" record: one tensor per trainable parameter (named as it) and per BN layer
 * "<bn>.batch_mean" and "<bn>.batch_var" (unbiased) of the last training forward. */
record *model_grads_record(const model *m);

/* ---- the forward tool's records ---- */

/* The batch's "image" f32[N,3,H,W]; -1 (err) otherwise. */
int model_batch_image(const record *batch, const tensor **image);
/* A "pred" record for a batch (after model_plan for its shape): the outputs ("cls",
 * "reg") allocated, their data pointers in outputs[] for model_forward; every other
 * tensor of the batch but "image" copied; the batch's meta plus "size" (H). */
record *model_pred_record(const model *m, const record *batch, float **outputs);
/* The dLoss/doutput tensors of a "grad" record, checked against the plan's output
 * shapes; -1 (err) naming a missing or mis-shaped tensor. */
int model_grad_tensors(const model *m, const record *grad, const float **doutputs);

/* Per-op-type time of forward and backward since the last reset (profile on). */
#define MODEL_PROF_MAX 16
typedef struct model_profile {
	int n;
	const char *op[MODEL_PROF_MAX];
	double fwd[MODEL_PROF_MAX], bwd[MODEL_PROF_MAX]; /* seconds */
	long calls;
} model_profile;

void model_set_profile(model *m, int on);
void model_get_profile(const model *m, model_profile *p);

#endif
