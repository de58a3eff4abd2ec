/* fold: BN folded into the conv before it, and with ranges loaded the folded weights
 * and bias quantised: the one place that writes model.folded (graph.h). */
#include "nn/graph.h"

#include <math.h>
#include <string.h>

#include "kernels/quant.h"

void g_refold(model *m)
{
	for (int i = 0; i < m->nnodes; i++) {
		gnode *nd = &m->nodes[i];
		if (!nd->fold)
			continue;
		const float *w = g_param(m, nd->wparam), *b = g_param(m, nd->bparam);
		size_t wc = m->params_info[nd->wparam].count, c = (size_t)nd->c;
		float *fw = g_folded_weights(m, nd), *fb = g_folded_bias(m, nd);
		memcpy(fw, w, wc * sizeof(float));
		if (nd->fold_bn) {
			const gnode *bn = &m->nodes[i + 1];
			quant_fold_bn(fw, c, wc / c, b, g_param(m, bn->wparam), g_param(m, bn->bparam), g_param(m, bn->prm), g_param(m, bn->prv), bn->eps,
				      fb);
		} else if (b) {
			memcpy(fb, b, c * sizeof(float));
		} else {
			memset(fb, 0, c * sizeof(float));
		}
		if (m->q.apply) {
			/* per tensor; per output channel for a depthwise conv if asked (TI's option):
			 * the same rules on each channel's weights and bias alone */
			size_t per = wc / c;
			nd->per_channel = m->q.per_channel_dw && nd->groups == nd->c && per == (size_t)nd->k * nd->k;
			nd->wfrac = quant_weight_frac(fw, wc, m->q.wbits);
			nd->bfrac = quant_bias_frac(fb, c, nd->wfrac + nd->xfrac, 2 * m->q.bits);
			for (size_t k = 0; k < c; k++) {
				int *cf = nd->cfrac + 2 * k;
				cf[0] = nd->per_channel ? quant_weight_frac(fw + k * per, per, m->q.wbits) : nd->wfrac;
				cf[1] = nd->per_channel ? quant_bias_frac(fb + k, 1, cf[0] + nd->xfrac, 2 * m->q.bits) : nd->bfrac;
				quant_round(fw + k * per, per, cf[0], m->q.wbits, NULL, fw + k * per);
				quant_round(fb + k, 1, cf[1], 2 * m->q.bits, NULL, fb + k);
			}
		}
	}
	m->folded_dirty = 0;
	m->fold_gen++;
}

/* The gradient of a folded conv's weights and bias (gw, gb) taken back to the conv's
 * and its BN's parameters through W' = W s, b' = (b - mean) s + beta, s = gamma / sigma;
 * quantisation passes the gradient straight through. */
void g_unfold_grads(model *m, const gnode *nd, const float *gw, const float *gb)
{
	size_t wc = m->params_info[nd->wparam].count, c = (size_t)nd->c, per = wc / c;
	float *dw = g_grad(m, nd->wparam), *db = g_grad(m, nd->bparam);
	if (!nd->fold_bn) {
		memcpy(dw, gw, wc * sizeof(float));
		if (db)
			memcpy(db, gb, c * sizeof(float));
		return;
	}
	const gnode *bn = nd + 1;
	const float *w = g_param(m, nd->wparam), *b = g_param(m, nd->bparam), *g = g_param(m, bn->wparam), *rm = g_param(m, bn->prm), *rv = g_param(m, bn->prv);
	float *dg = g_grad(m, bn->wparam), *dbeta = g_grad(m, bn->bparam);
#pragma omp parallel for schedule(static) if (wc >= 65536)
	for (size_t k = 0; k < c; k++) {
		float sigma = sqrtf(rv[k] + bn->eps), s = g[k] / sigma, b0 = (b ? b[k] : 0.0f) - rm[k];
		double dot = 0;
		for (size_t j = 0; j < per; j++) {
			dot += (double)gw[k * per + j] * w[k * per + j];
			dw[k * per + j] = gw[k * per + j] * s;
		}
		if (db)
			db[k] = gb[k] * s;
		dbeta[k] = gb[k];
		dg[k] = (float)((dot + (double)gb[k] * b0) / sigma);
	}
}

void g_refresh_folds(model *m)
{
	if (m->folded_dirty && m->nfolded)
		g_refold(m);
}
