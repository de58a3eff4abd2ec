/* layers: the network's layer kernels, forward and backward, fp32 NCHW.
 *
 * Conventions (llm.c style): plain functions, outputs first, dimensions last; the
 * shapes are in the comment above each function. Backward mirrors forward:
 *   - the input gradient is written (=), never accumulated; pass NULL to skip it
 *     (e.g. for the first layer);
 *   - parameter gradients accumulate (+=), so zeroing them is the caller's job;
 *     NULL skips one.
 * Kernels never allocate, print or exit. The ones that can fail (bad shapes) return
 * -1 with err_set(); the others cannot fail and return nothing.
 * Each conv has a naive direct-loop twin (_ref) that is the oracle of the tests.
 * Threads: OpenMP over batch, channels and rows; conv's GEMMs run single-threaded
 * inside those tasks (the conv code sets OpenBLAS to one thread around them), so
 * OpenBLAS's own thread pool is never used. */
#ifndef LAYERS_H
#define LAYERS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* OpenBLAS at one thread until blas_single_end(the returned count), for GEMMs called
 * inside our own OpenMP tasks (conv.c, qlayers.c's 16-bit conv). */
int blas_single_begin(void);
void blas_single_end(int save);

/* ---- conv2d ---- */

enum conv_algo {
	CONV_AUTO = 0,        /* conv2d_init picks one of the others */
	CONV_GEMM,            /* im2col (none for 1x1 stride 1) + OpenBLAS sgemm */
	CONV_GEMM512,         /* the same with our AVX-512 GEMM kernel (AVX-512 builds only) */
	CONV_DW3X3,           /* depthwise 3x3, stride 1 or 2, pad 1, dilation 1: vectorised */
	CONV_DW_DIRECT,       /* depthwise (groups == C == K), any geometry: direct loops */
	CONV_GROUP3X3,        /* 3x3, stride 1 or 2, pad 1, dilation 1, groups of <= 64 channels:
			       * direct, AVX-512 builds only (RegNet's group width 16) */
};

/* Activation fused into conv2d_forward's output (after the bias). The backward does
 * not apply it: its dout is the gradient of the output before the activation. */
enum conv_act {
	CONV_ACT_NONE = 0,
	CONV_ACT_RELU,        /* max(0, x), NaN passes (as torch) */
	CONV_ACT_RELU6,       /* min(max(0, x), 6), NaN passes */
};

typedef struct conv2d_desc {
	int n, c, h, w;       /* input  [n, c, h, w] */
	int k;                /* output channels: output [n, k, oh, ow] */
	int kh, kw;           /* kernel; weight [k, c/groups, kh, kw], bias [k] */
	int sh, sw;           /* stride */
	int ph, pw;           /* zero padding, both sides of each axis */
	int dh, dw;           /* dilation */
	int groups;
	enum conv_act act;    /* 0 (none) unless set */
	/* filled by conv2d_init */
	int oh, ow;
	enum conv_algo algo;  /* set before conv2d_init to force one (tests, benchmarks) */
	int forward_only;     /* set before conv2d_init for an inference plan: no backward,
			       * so the forward's im2col may come in row blocks and the
			       * workspace stays small (VGG at 512: 1.2 GB -> 32 MB) */
	int nthreads;         /* omp_get_max_threads() at init: the workspace is sized for it */
} conv2d_desc;

/* Checks the geometry (c and k divisible by groups, positive sizes, output >= 1, a
 * forced algo applicable) and fills oh, ow and algo. 0, or -1 (err). */
int conv2d_init(conv2d_desc *d);
/* Bytes of scratch the fast kernels need for d (forward and backward share it, unless
 * forward_only). May be 0. */
size_t conv2d_workspace_size(const conv2d_desc *d);
/* out [n,k,oh,ow] = conv(inp [n,c,h,w], weight [k,c/g,kh,kw]) + bias [k] (bias may be NULL).
 * ws: conv2d_workspace_size(d) bytes, 64-byte aligned (NULL if that is 0). */
int conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
		   float *ws, const conv2d_desc *d);
/* dinp [n,c,h,w] = (written), dweight [k,c/g,kh,kw] +=, dbias [k] +=, from dout [n,k,oh,ow].
 * Any of dinp, dweight, dbias may be NULL. inp is needed for dweight, weight for dinp. */
int conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
		    const float *inp, const float *weight, float *ws, const conv2d_desc *d);
/* Naive direct loops, same contract (no workspace, single thread, double accumulation). */
int conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
		       const conv2d_desc *d);
int conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
			const float *inp, const float *weight, const conv2d_desc *d);

/* ---- batchnorm2d (per channel over n and h*w; hw = h*w) ---- */

/* Training mode: normalise with the batch mean and biased variance.
 * out, inp [n,c,hw]; weight, bias [c] (NULL: 1 and 0). Writes mean [c] and rstd [c]
 * (1/sqrt(biased var + eps), kept for backward) and, if var_unbiased is not NULL,
 * the unbiased batch variance [c] that torch folds into running_var (momentum 0.1).
 * -1 (err) if n*hw < 2, as torch refuses it. */
int batchnorm2d_forward_train(float *out, float *mean, float *rstd, float *var_unbiased,
			      const float *inp, const float *weight, const float *bias,
			      float eps, int n, int c, int hw);
/* dinp [n,c,hw] (written), dweight [c] +=, dbias [c] += through the batch statistics.
 * mean, rstd: as written by the forward. */
void batchnorm2d_backward_train(float *dinp, float *dweight, float *dbias, const float *dout,
				const float *inp, const float *mean, const float *rstd,
				const float *weight, int n, int c, int hw);
/* The same over a batch split across replicas (data-parallel training): each replica
 * takes its part's per-channel mean and centred sum of squares m2 (doubles), the
 * replicas combine them (batchnorm2d_merge_moments), then each normalises its part with the
 * combined mean and rstd. Backward likewise: its part's sums sg = sum dy and
 * sgc = sum dy * (x - mean), summed over the replicas, then dinp from the sums and the
 * whole batch's value count per channel. The one-replica functions above compute the
 * same with the same arithmetic. */
void batchnorm2d_moments(double *mean, double *m2, const float *inp, int n, int c, int hw);
/* Two parts' statistics into one (Chan et al.'s pairwise update): a, b [c][3] of
 * (count, mean, m2) per channel; a becomes both parts'. */
void batchnorm2d_merge_moments(double *a, const double *b, int c);
void batchnorm2d_normalise(float *out, const float *inp, const double *mean, const float *rstd,
			   const float *weight, const float *bias, int n, int c, int hw);
void batchnorm2d_grad_sums(double *sg, double *sgc, const float *dout, const float *inp, const float *mean,
			   int n, int c, int hw);
void batchnorm2d_grad_input(float *dinp, const float *dout, const float *inp, const float *mean,
			    const float *rstd, const float *weight, const double *sg, const double *sgc,
			    double count, int n, int c, int hw);
/* Eval mode: running_mean, running_var [c]. */
void batchnorm2d_forward_eval(float *out, const float *inp, const float *weight, const float *bias,
			      const float *running_mean, const float *running_var, float eps,
			      int n, int c, int hw);
void batchnorm2d_backward_eval(float *dinp, float *dweight, float *dbias, const float *dout,
			       const float *inp, const float *weight, const float *running_mean,
			       const float *running_var, float eps, int n, int c, int hw);

/* ---- elementwise (count = number of elements; in place allowed: out == inp) ---- */

void relu_forward(float *out, const float *inp, size_t count);
/* x: the forward's input or its output (same mask): dinp = dout where x > 0. */
void relu_backward(float *dinp, const float *dout, const float *x, size_t count);
void relu6_forward(float *out, const float *inp, size_t count);
/* dinp = dout where 0 < x < 6, else 0 (torch's hardtanh backward: 0 at exactly 0 and 6);
 * x: the forward's input or its output. */
void relu6_backward(float *dinp, const float *dout, const float *x, size_t count);
/* out = a + b */
void add_forward(float *out, const float *a, const float *b, size_t count);
/* da = dout, db = dout (either may be NULL or equal to dout) */
void add_backward(float *da, float *db, const float *dout, size_t count);

/* ---- concat along channels ---- */

/* out [n, sum(chans), hw] = cat(inps[i] [n, chans[i], hw]) */
void concat_forward(float *out, const float *const *inps, const int *chans, int ninp,
		    int n, int hw);
/* dinps[i] [n, chans[i], hw] = slices of dout; NULL entries are skipped. */
void concat_backward(float *const *dinps, const float *dout, const int *chans, int ninp,
		     int n, int hw);

/* ---- nearest upsample, as F.interpolate(size=(oh, ow), mode='nearest') ---- */

/* out [n,c,oh,ow], inp [n,c,h,w]; source index floor(dst * (float)in / out), as torch. */
/* torch's nearest source index of dst (out values from in). */
int upsample_nearest_src(int dst, int in, int out);
void upsample_nearest_forward(float *out, const float *inp, int n, int c, int h, int w,
			      int oh, int ow);
/* dinp [n,c,h,w] (written) = sum of dout over each source pixel's copies. */
void upsample_nearest_backward(float *dinp, const float *dout, int n, int c, int h, int w,
			       int oh, int ow);

/* ---- bilinear upsample, as F.interpolate(mode='bilinear', align_corners=False) ---- */

/* out [n,c,oh,ow] from inp [n,c,h,w]; source coordinate (dst + 0.5) * (in / out) - 0.5, clamped at 0,
 * rounded as torch 1.13's CPU kernel (scale in float, coordinate in double, weights in float,
 * fused multiply-adds): bit for bit its results with size=, and with scale_factor=2 (its
 * 1 / 2 is in / out then). Any sizes, down as well as up. */
void upsample_bilinear_forward(float *out, const float *inp, int n, int c, int h, int w, int oh, int ow);
/* dinp [n,c,h,w] (written) = the transpose: each dout pixel spread to its 4 sources with the same weights. */
void upsample_bilinear_backward(float *dinp, const float *dout, int n, int c, int h, int w, int oh, int ow);

/* The taps of one axis (in -> out) as integers: source indices i0, i1 [out] and weights
 * w0, w1 [out] in units of 2^-bits, exactly the float weights of the kernel above (the
 * integer path, qexec.c, interpolates with them). -1 if a weight is not a multiple of
 * 2^-bits (sizes whose ratio is not a power of 2). */
int upsample_bilinear_int_taps(int in, int out, int bits, int *i0, int *i1, int32_t *w0, int32_t *w1);

/* ---- max pool 2d, as nn.MaxPool2d (padding counts as -inf, dilation 1) ---- */

typedef struct pool2d_desc {
	int n, c, h, w;
	int kh, kw, sh, sw, ph, pw;
	int ceil_mode;
	int oh, ow;           /* filled by maxpool2d_init */
} pool2d_desc;

/* Checks (pad <= kernel/2 as torch requires) and fills oh, ow. 0 or -1 (err). */
int maxpool2d_init(pool2d_desc *d);
/* out [n,c,oh,ow]; argmax [n,c,oh,ow] (may be NULL when no backward follows): index
 * y*w + x of the window's first maximum (or its last NaN, as torch) within its input plane. */
void maxpool2d_forward(float *out, int32_t *argmax, const float *inp, const pool2d_desc *d);
/* dinp [n,c,h,w] (written) = dout routed to the argmax of each window. */
void maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax,
			const pool2d_desc *d);

/* ---- L2Norm over channels (mmdet SSD VGG): out = weight[c] * x / (sqrt(sum_c x^2) + eps) */

/* 1 / (sqrt(sum_c x^2) + eps) of one pixel from its sum of squares. The sum is taken in
 * f64: exact for any 8-bit point's values (integers times 2^-2frac, fewer than 2^53
 * units), so the integer path's kernel (qlayers.c), which sums the integers, gets the
 * very same factor from this function. */
static inline float l2norm_factor(double sumsq, float eps)
{
	return 1.0f / (sqrtf((float)sumsq) + eps);
}
/* out, inp [n,c,hw]; weight [c]; eps: mmdet uses 1e-10. */
void l2norm_forward(float *out, const float *inp, const float *weight, float eps,
		    int n, int c, int hw);
/* dinp (written), dweight [c] +=. */
void l2norm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
		     const float *weight, float eps, int n, int c, int hw);

/* ---- global average pool ---- */

/* out [n,c] = mean over hw of inp [n,c,hw] */
void avgpool_global_forward(float *out, const float *inp, int n, int c, int hw);
/* dinp [n,c,hw] (written) = dout [n,c] / hw */
void avgpool_global_backward(float *dinp, const float *dout, int n, int c, int hw);

#endif
