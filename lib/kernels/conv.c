/* conv2d: geometry and algorithm choice, the naive reference every fast path is tested
 * against, and the dispatch to conv_gemm.c (im2col + GEMM) and conv_dw.c (depthwise). */
#include "kernels/conv_impl.h"

#include <omp.h>

#include "core/err.h"

static int conv_out(int in, int k, int s, int p, int dil)
{
	int span = dil * (k - 1) + 1;
	if (in + 2 * p < span)
		return 0;
	return (in + 2 * p - span) / s + 1;
}

static int is_depthwise(const conv2d_desc *d)
{
	return d->groups == d->c && d->k == d->c;
}

static int is_dw3x3(const conv2d_desc *d)
{
	return is_depthwise(d) && d->kh == 3 && d->kw == 3 && d->sh == d->sw &&
	       (d->sh == 1 || d->sh == 2) && d->ph == 1 && d->pw == 1 && d->dh == 1 && d->dw == 1;
}

/* conv_group.c's geometry: 3x3, stride 1 or 2, pad 1, groups of at most 64 channels. */
static int is_group3x3(const conv2d_desc *d)
{
	return HAVE_GEMM512 && d->kh == 3 && d->kw == 3 && d->sh == d->sw && (d->sh == 1 || d->sh == 2) &&
	       d->ph == 1 && d->pw == 1 && d->dh == 1 && d->dw == 1 && d->c / d->groups <= 64 &&
	       d->k / d->groups <= 64;
}

int conv2d_init(conv2d_desc *d)
{
	if (d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1 || d->k < 1 || d->kh < 1 || d->kw < 1 ||
	    d->sh < 1 || d->sw < 1 || d->ph < 0 || d->pw < 0 || d->dh < 1 || d->dw < 1 || d->groups < 1)
		return err_set("conv2d: bad geometry (n %d c %d h %d w %d k %d kernel %dx%d stride %d,%d pad %d,%d dilation %d,%d groups %d)",
			       d->n, d->c, d->h, d->w, d->k, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw,
			       d->dh, d->dw, d->groups);
	if (d->act < CONV_ACT_NONE || d->act > CONV_ACT_RELU6)
		return err_set("conv2d: unknown activation %d", (int)d->act);
	if (d->c % d->groups || d->k % d->groups)
		return err_set("conv2d: channels %d -> %d not divisible by groups %d", d->c, d->k, d->groups);
	d->nthreads = omp_get_max_threads();
	d->oh = conv_out(d->h, d->kh, d->sh, d->ph, d->dh);
	d->ow = conv_out(d->w, d->kw, d->sw, d->pw, d->dw);
	if (d->oh < 1 || d->ow < 1)
		return err_set("conv2d: kernel %dx%d (dilation %d,%d) larger than padded input %dx%d",
			       d->kh, d->kw, d->dh, d->dw, d->h + 2 * d->ph, d->w + 2 * d->pw);
	switch (d->algo) {
	case CONV_AUTO:
		if (is_dw3x3(d))
			d->algo = CONV_DW3X3;
		else if (is_depthwise(d))
			d->algo = CONV_DW_DIRECT;
		else if (is_group3x3(d) && d->groups > 1 && d->c / d->groups <= 32 && d->k / d->groups <= 32)
			d->algo = CONV_GROUP3X3;
		else
			d->algo = HAVE_GEMM512 ? CONV_GEMM512 : CONV_GEMM;
		break;
	case CONV_GEMM:
		break;
	case CONV_GEMM512:
		if (!HAVE_GEMM512)
			return err_set("conv2d: the gemm512 kernel needs an AVX-512 build");
		break;
	case CONV_DW3X3:
		if (!is_dw3x3(d))
			return err_set("conv2d: the dw3x3 kernel needs depthwise 3x3, stride 1 or 2, pad 1");
		break;
	case CONV_DW_DIRECT:
		if (!is_depthwise(d))
			return err_set("conv2d: the direct depthwise kernel needs groups == c == k");
		break;
	case CONV_GROUP3X3:
		if (!is_group3x3(d))
			return err_set("conv2d: the group3x3 kernel needs an AVX-512 build, 3x3, stride 1 or 2, pad 1, groups of <= 64 channels");
		break;
	default:
		return err_set("conv2d: unknown algo %d", (int)d->algo);
	}
	return 0;
}

static int check_init(const conv2d_desc *d)
{
	conv2d_desc t = *d;
	t.algo = d->algo == CONV_AUTO ? CONV_GEMM : d->algo;
	if (conv2d_init(&t))
		return -1;
	if (t.oh != d->oh || t.ow != d->ow || d->algo == CONV_AUTO || d->nthreads < 1)
		return err_set("conv2d: descriptor not initialised (call conv2d_init)");
	return 0;
}

/* ---------------------------------------------------------------- reference */


int conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
		       const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	int C = d->c, H = d->h, W = d->w, K = d->k, OH = d->oh, OW = d->ow;
	int cg = C / d->groups, kg = K / d->groups;
	for (int n = 0; n < d->n; n++)
		for (int k = 0; k < K; k++) {
			int g = k / kg;
			for (int oy = 0; oy < OH; oy++)
				for (int ox = 0; ox < OW; ox++) {
					double acc = bias ? bias[k] : 0.0;
					for (int ci = 0; ci < cg; ci++) {
						const float *x = inp + ((size_t)n * C + g * cg + ci) * H * W;
						const float *wk = weight + ((size_t)k * cg + ci) * d->kh * d->kw;
						for (int ky = 0; ky < d->kh; ky++) {
							int iy = oy * d->sh - d->ph + ky * d->dh;
							if (iy < 0 || iy >= H)
								continue;
							for (int kx = 0; kx < d->kw; kx++) {
								int ix = ox * d->sw - d->pw + kx * d->dw;
								if (ix < 0 || ix >= W)
									continue;
								acc += (double)wk[ky * d->kw + kx] * x[iy * W + ix];
							}
						}
					}
					out[(((size_t)n * K + k) * OH + oy) * OW + ox] = conv_act_scalar((float)acc, d->act);
				}
		}
	return 0;
}

int conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
			const float *inp, const float *weight, const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	int C = d->c, H = d->h, W = d->w, K = d->k, OH = d->oh, OW = d->ow;
	int cg = C / d->groups, kg = K / d->groups;
	if (dbias)
		for (int k = 0; k < K; k++) {
			double acc = 0;
			for (int n = 0; n < d->n; n++)
				for (int i = 0; i < OH * OW; i++)
					acc += dout[((size_t)n * K + k) * OH * OW + i];
			dbias[k] += (float)acc;
		}
	if (dweight)
		for (int k = 0; k < K; k++)
			for (int ci = 0; ci < cg; ci++)
				for (int ky = 0; ky < d->kh; ky++)
					for (int kx = 0; kx < d->kw; kx++) {
						int c = k / kg * cg + ci;
						double acc = 0;
						for (int n = 0; n < d->n; n++)
							for (int oy = 0; oy < OH; oy++) {
								int iy = oy * d->sh - d->ph + ky * d->dh;
								if (iy < 0 || iy >= H)
									continue;
								for (int ox = 0; ox < OW; ox++) {
									int ix = ox * d->sw - d->pw + kx * d->dw;
									if (ix < 0 || ix >= W)
										continue;
									acc += (double)dout[(((size_t)n * K + k) * OH + oy) * OW + ox] *
									       inp[(((size_t)n * C + c) * H + iy) * W + ix];
								}
							}
						dweight[((k * cg + ci) * d->kh + ky) * d->kw + kx] += (float)acc;
					}
	if (dinp)
		for (int n = 0; n < d->n; n++)
			for (int c = 0; c < C; c++) {
				int g = c / cg, ci = c % cg;
				for (int iy = 0; iy < H; iy++)
					for (int ix = 0; ix < W; ix++) {
						double acc = 0;
						for (int ky = 0; ky < d->kh; ky++) {
							int ty = iy + d->ph - ky * d->dh;
							if (ty < 0 || ty % d->sh || ty / d->sh >= OH)
								continue;
							for (int kx = 0; kx < d->kw; kx++) {
								int tx = ix + d->pw - kx * d->dw;
								if (tx < 0 || tx % d->sw || tx / d->sw >= OW)
									continue;
								int oy = ty / d->sh, ox = tx / d->sw;
								for (int k = g * kg; k < (g + 1) * kg; k++)
									acc += (double)weight[((k * cg + ci) * d->kh + ky) * d->kw + kx] *
									       dout[(((size_t)n * K + k) * OH + oy) * OW + ox];
							}
						}
						dinp[(((size_t)n * C + c) * H + iy) * W + ix] = (float)acc;
					}
			}
	return 0;
}

/* ---------------------------------------------------------------- GEMM kernel, AVX-512 */

/* ---------------------------------------------------------------- dispatch */

int conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
		   float *ws, const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	if (conv2d_workspace_size(d) && !ws)
		return err_set("conv2d: workspace missing");
	switch (d->algo) {
	case CONV_DW3X3:
	case CONV_DW_DIRECT:
		conv_dw_forward(out, inp, weight, bias, d);
		break;
	case CONV_GROUP3X3:
		conv_group_forward(out, inp, weight, bias, ws, d);
		break;
	default:
		conv_gemm_forward(out, inp, weight, bias, ws, d);
	}
	return 0;
}

int conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
		    const float *inp, const float *weight, float *ws, const conv2d_desc *d)
{
	if (check_init(d))
		return -1;
	if (d->forward_only)
		return err_set("conv2d: backward of a forward-only conv (its workspace is the forward's)");
	if (conv2d_workspace_size(d) && !ws)
		return err_set("conv2d: workspace missing");
	switch (d->algo) {
	case CONV_DW3X3:
	case CONV_DW_DIRECT:
		conv_dw_backward(dinp, dweight, dbias, dout, inp, weight, d);
		break;
	case CONV_GROUP3X3:
		conv_group_backward(dinp, dweight, dbias, dout, inp, weight, ws, d);
		break;
	default:
		conv_gemm_backward(dinp, dweight, dbias, dout, inp, weight, ws, d);
	}
	return 0;
}
