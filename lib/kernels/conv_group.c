/* conv_group: grouped 3x3 convs with narrow groups (RegNet's group width 16), stride 1
 * or 2, pad 1, dilation 1 (CONV_GROUP3X3), direct in AVX-512, no im2col.
 *
 * A task (image, group, block of output rows) copies its input rows once into a
 * zero-padded plane (stride 2: four phase planes, even/odd rows x even/odd columns)
 * whose rows are gw floats apart. An output pixel (oy, ox) is then grid position
 * q = oy*gw + ox, and tap (ky, kx) reads the copy at q plus a constant: one tap of 16
 * consecutive grid positions is one unaligned load, whatever the row width (RegNet's
 * planes are 10-80 wide), and the grid's few junk columns (ox >= ow) are computed and
 * dropped. An 8 x 48 tile (8 output channels, 3 vectors of positions) stays in 24
 * registers while the reduction runs over (input channel, tap) in the GEMM path's
 * order, the weights broadcast from a packed copy: the forward's floats are
 * CONV_GEMM512's. The input gradient is the same kernel on the padded dout (stride 1:
 * the kernel turned by 180 degrees; stride 2: one grid per phase of dinp, with 1, 2
 * or 4 taps, the two column phases interleaved into dinp's rows).
 * The weight gradient has its lanes over the group's output channels: dout is
 * transposed to [pixel][k], and 24 sums (8 input channels x the 3 taps of a kernel
 * row) stay in registers while the input is broadcast, over output pixels only. Its
 * tasks are whole groups, images and blocks in order, so no result here depends on
 * the thread count or on timing. */
#include "kernels/conv_impl.h"

#include <string.h>

#include <omp.h>

#define GT_M 8               /* output channels of a tile */
#define GT_V 3               /* 16-position vectors of a tile */
#define GT_Q (16 * GT_V)     /* grid positions of a tile */
#define DW_PIX 128           /* output pixels per pass of the weight gradient (dout in L1) */

static size_t up(size_t n, size_t m)
{
	return (n + m - 1) / m * m;
}

/* The layout of one task's copies, for a block of rows output rows (the input
 * gradient's: rows of dinp, or of its stride-2 phases). A source copy is nc channels
 * cs floats apart; the grid (rows gh, gw floats apart) is gp positions, rounded up to
 * whole tiles (gpr), and each source plane keeps room for the reads of the last
 * tile's farthest tap. */
typedef struct gc_geom {
	int gw, gh;
	size_t gp, gpr;
	size_t pp;   /* one (phase) plane */
	size_t cs;   /* one channel: pp, or 4 pp for the stride-2 forward's phases */
} gc_geom;

/* rows of gw plus the farthest tap (off) past the grid; + 16: the copies write whole
 * vectors past a row's end */
static gc_geom geom(int gw, int rows, int src_rows, size_t off)
{
	gc_geom g;
	g.gw = gw;
	g.gh = rows;
	g.gp = (size_t)rows * gw;
	g.gpr = up(g.gp, GT_Q);
	size_t need = g.gpr + off, have = (size_t)src_rows * gw + 16;
	g.pp = up(need > have ? need : have, 16);
	g.cs = g.pp;
	return g;
}

/* The forward's (and the weight gradient's) copy of the input: stride 1 padded by 1;
 * stride 2 the four phases (py, px) [r][b] = padded input [2r+py][2b+px]. */
static gc_geom geom_fwd(const conv2d_desc *d, int rows)
{
	if (d->sh == 1)
		return geom(d->w + 2, rows, rows + 2, 2 * (size_t)(d->w + 2) + 2);
	gc_geom g = geom(d->ow + 1, rows, rows + 1, (size_t)d->ow + 2);
	g.cs = 4 * g.pp;
	return g;
}

/* The input gradient's copy of dout: stride 1 padded by 1 on every side; stride 2
 * one zero row and column after the end (a phase's taps read rows a and a+1). */
static gc_geom geom_dx(const conv2d_desc *d, int rows)
{
	if (d->sh == 1)
		return geom(d->ow + 2, rows, rows + 2, 2 * (size_t)(d->ow + 2) + 2);
	return geom(d->ow + 1, rows, rows + 1, (size_t)d->ow + 2);
}

/* Output rows per task: a block's source copy about 128 KiB, so that it is still in
 * the cache when the tiles read it (a whole 160x160 stride-2 input of 16 channels,
 * 1.6 MB, was not, and its copy cost more than the arithmetic). */
#define GC_BLOCK_FLOATS 32768
static int block_rows(const conv2d_desc *d)
{
	int cg = d->c / d->groups, kg = d->k / d->groups;
	size_t f = (size_t)cg * (d->sh == 1 ? d->w + 2 : 4 * (d->ow + 1)), x = (size_t)kg * (d->ow + 2);
	size_t per = f > x ? f : x, r = GC_BLOCK_FLOATS / per;
	return r < 1 ? 1 : r > (size_t)d->oh ? d->oh : (int)r;
}

/* Per-thread workspace, in floats: src (a source copy), grid (a tile grid of up to
 * mp rows), and for the weight gradient dg (dout transposed, [pixel][kvec]) and acc
 * (its sums, [c][t][kvec]). */
typedef struct gc_scratch {
	float *src, *grid, *dg, *acc;
} gc_scratch;

static size_t pad8(int n)
{
	return up((size_t)n, GT_M);
}

/* The weight gradient's lanes: the group's output channels in whole vectors. */
static size_t kvec(int kg)
{
	return kg <= 16 ? 16 : kg <= 32 ? 32 : 64;
}

static size_t wpack_floats(const conv2d_desc *d)
{
	int cg = d->c / d->groups, kg = d->k / d->groups;
	size_t f = (size_t)d->groups * cg * 9 * pad8(kg), x = (size_t)d->groups * kg * 9 * pad8(cg);
	return up(f > x ? f : x, 16);
}

static size_t thread_floats(const conv2d_desc *d, gc_scratch *s, float *base)
{
	int cg = d->c / d->groups, kg = d->k / d->groups;
	int rb = block_rows(d);
	gc_geom f = geom_fwd(d, rb), x = geom_dx(d, rb);
	size_t src = (size_t)cg * f.cs, grid = pad8(kg) * f.gpr, dg = 0, acc = 0;
	if (!d->forward_only) {
		size_t sx = (size_t)kg * x.cs, gx = (d->sh == 1 ? 1 : 2) * pad8(cg) * x.gpr;
		src = src > sx ? src : sx;
		grid = grid > gx ? grid : gx;
		dg = (size_t)rb * d->ow * kvec(kg);
		acc = (size_t)cg * 9 * kvec(kg);
	}
	src = up(src, 16);
	grid += 16; /* the row copies read whole vectors past a grid row */
	if (s) {
		s->src = base;
		s->grid = s->src + src;
		s->dg = s->grid + grid;
		s->acc = s->dg + dg;
	}
	return src + grid + dg + acc;
}

size_t conv_group_workspace_floats(const conv2d_desc *d)
{
	return wpack_floats(d) + (size_t)d->nthreads * thread_floats(d, NULL, NULL);
}

#if defined(__AVX512F__)
static gc_scratch thread_scratch(float *ws, const conv2d_desc *d, int tid)
{
	gc_scratch s;
	size_t per = thread_floats(d, NULL, NULL);
	thread_floats(d, &s, ws + wpack_floats(d) + (size_t)tid * per);
	return s;
}

/* ---------------------------------------------------------------- copies */

/* dst [nc][cs]: plane row i [gw] = src [nc][h][w]'s row y0 + i (zero outside the
 * input) at column left, zero around it, for i < rows, then zero up to pp. */
static void copy_padded(float *dst, size_t cs, size_t pp, int gw, const float *src, int nc, int h, int w,
			int y0, int rows, int left)
{
	for (int c = 0; c < nc; c++, dst += cs, src += (size_t)h * w) {
		for (int i = 0; i < rows; i++) {
			float *r = dst + (size_t)i * gw;
			int y = y0 + i;
			if (y < 0 || y >= h) {
				memset(r, 0, gw * sizeof(float));
				continue;
			}
			memset(r, 0, left * sizeof(float));
			memcpy(r + left, src + (size_t)y * w, w * sizeof(float));
			memset(r + left + w, 0, (gw - left - w) * sizeof(float));
		}
		size_t used = (size_t)rows * gw;
		memset(dst + used, 0, (pp - used) * sizeof(float));
	}
}

/* The stride-2 phases of src [nc][h][w] padded by 1, rows r0.. r0 + gh: dst
 * [c][py*2+px][r - r0][b] = padded [2r+py][2b+px], zero outside the input and up to pp. A row's even input
 * columns go to px = 1, its odd ones to px = 0 one place on, in whole vectors: each
 * may write zeros past the row's end, which the next row (or the tail) overwrites. */
static void copy_phases(float *dst, const gc_geom *g, const float *src, int nc, int h, int w, int r0)
{
	const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
	const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
	int gw = g->gw, rows = g->gh + 1, nv = (gw + 15) / 16;
	for (int c = 0; c < nc; c++, src += (size_t)h * w)
		for (int py = 0; py < 2; py++) {
			float *p0 = dst + c * g->cs + (2 * py) * g->pp, *p1 = p0 + g->pp;
			for (int r = 0; r < rows; r++) {
				int iy = 2 * (r0 + r) + py - 1;
				float *o0 = p0 + (size_t)r * gw, *o1 = p1 + (size_t)r * gw;
				if (iy < 0 || iy >= h) {
					memset(o0, 0, gw * sizeof(float));
					memset(o1, 0, gw * sizeof(float));
					continue;
				}
				const float *s = src + (size_t)iy * w;
				o0[0] = 0.0f;
				for (int j = 0; j < nv; j++) {
					int left = w - 32 * j;
					__mmask16 ma = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
					__mmask16 mb = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
					/* masked loads only where needed: slow on Zen 5 even with all lanes set */
					__m512 a = ma == 0xffff ? _mm512_loadu_ps(s + 32 * j) : _mm512_maskz_loadu_ps(ma, s + 32 * j);
					__m512 b = mb == 0xffff ? _mm512_loadu_ps(s + 32 * j + 16)
								: _mm512_maskz_loadu_ps(mb, s + 32 * j + 16);
					_mm512_storeu_ps(o1 + 16 * j, _mm512_permutex2var_ps(a, even, b));
					_mm512_storeu_ps(o0 + 16 * j + 1, _mm512_permutex2var_ps(a, odd, b));
				}
			}
			for (float *p = p0; p <= p1; p += g->pp)
				memset(p + (size_t)rows * gw, 0, (g->pp - (size_t)rows * gw) * sizeof(float));
		}
}

/* The source copy of the forward for output rows oy0.. oy0 + gh and its taps: tap
 * t = ky*3 + kx of channel c at tap[t] + c*cs (+ q). */
static void fwd_source(float *src, const float **tap, const gc_geom *g, const float *inp, const conv2d_desc *d,
		       int cg, int oy0)
{
	if (d->sh == 1) {
		copy_padded(src, g->cs, g->pp, g->gw, inp, cg, d->h, d->w, oy0 - 1, g->gh + 2, 1);
		for (int t = 0; t < 9; t++)
			tap[t] = src + (t / 3) * g->gw + t % 3;
	} else {
		copy_phases(src, g, inp, cg, d->h, d->w, oy0);
		for (int t = 0; t < 9; t++) {
			int ky = t / 3, kx = t % 3;
			tap[t] = src + ((ky & 1) * 2 + (kx & 1)) * g->pp + (ky >> 1) * g->gw + (kx >> 1);
		}
	}
}

/* ---------------------------------------------------------------- the tile kernel */

/* grid [mp][gpr] = sum over c < nc, t < nt of wp [c][t][mp] x tap[t] [c*cs + q] for
 * every grid position q < gpr (mp a multiple of GT_M, gpr of GT_Q). */
static void tap_conv(float *grid, size_t gpr, const float *const *tap, int nt, size_t cs, const float *wp,
		     int nc, int mp)
{
	for (size_t q = 0; q < gpr; q += GT_Q)
		for (int m0 = 0; m0 < mp; m0 += GT_M) {
			__m512 a[GT_M][GT_V];
#pragma GCC unroll 8
			for (int i = 0; i < GT_M; i++)
#pragma GCC unroll 3
				for (int v = 0; v < GT_V; v++)
					a[i][v] = _mm512_setzero_ps();
			const float *w = wp + m0;
			for (int c = 0; c < nc; c++) {
				size_t co = (size_t)c * cs + q;
				for (int t = 0; t < nt; t++, w += mp) {
					const float *p = tap[t] + co;
					__m512 x0 = _mm512_loadu_ps(p), x1 = _mm512_loadu_ps(p + 16),
					       x2 = _mm512_loadu_ps(p + 32);
#pragma GCC unroll 8
					for (int i = 0; i < GT_M; i++) {
						__m512 b = _mm512_set1_ps(w[i]);
						a[i][0] = _mm512_fmadd_ps(b, x0, a[i][0]);
						a[i][1] = _mm512_fmadd_ps(b, x1, a[i][1]);
						a[i][2] = _mm512_fmadd_ps(b, x2, a[i][2]);
					}
				}
			}
#pragma GCC unroll 8
			for (int i = 0; i < GT_M; i++) {
				float *o = grid + (size_t)(m0 + i) * gpr + q;
#pragma GCC unroll 3
				for (int v = 0; v < GT_V; v++)
					_mm512_storeu_ps(o + 16 * v, a[i][v]);
			}
		}
}

/* The weight gradient of output rows oy0..oy1 of one image and group, lanes over its
 * output channels: acc [c][t][kv*16] += sum over the pixels p of dt [p][kv*16] x
 * the input at tap t of p, for the channels c0.. c0+8/kv (fewer at the end) and the
 * three taps of row ky: 24 vector sums in registers (a[c*kv + v][kx]), the input
 * broadcast. Only output pixels are visited: no junk column enters the sums. */
static ALWAYS_INLINE void dw_rows_impl(float *acc, const float *dt, const float *const *tap, size_t cs, int cg, int c0,
				       int ky, int oy0, int oy1, int ow, int gw, int kv)
{
	enum { CB = 8 };
	int cb = CB / kv, nc = cg - c0 < cb ? cg - c0 : cb;
	const float *pc[CB];
	for (int c = 0; c < cb; c++)
		pc[c] = tap[ky * 3] + (size_t)(c0 + (c < nc ? c : nc - 1)) * cs;
	ptrdiff_t d1 = tap[ky * 3 + 1] - tap[ky * 3], d2 = tap[ky * 3 + 2] - tap[ky * 3];
	__m512 a[CB][3];
#pragma GCC unroll 8
	for (int c = 0; c < CB; c++)
		a[c][0] = a[c][1] = a[c][2] = _mm512_setzero_ps();
	const float *g = dt + (size_t)oy0 * ow * kv * 16;
	for (int oy = oy0; oy < oy1; oy++) {
		size_t q = (size_t)oy * gw;
		for (int ox = 0; ox < ow; ox++, g += kv * 16) {
			__m512 gv[4];
#pragma GCC unroll 4
			for (int v = 0; v < kv; v++)
				gv[v] = _mm512_loadu_ps(g + 16 * v);
#pragma GCC unroll 8
			for (int c = 0; c < cb; c++) {
				const float *p = pc[c] + q + ox;
				__m512 b0 = _mm512_set1_ps(p[0]), b1 = _mm512_set1_ps(p[d1]), b2 = _mm512_set1_ps(p[d2]);
#pragma GCC unroll 4
				for (int v = 0; v < kv; v++) {
					__m512 *r = a[c * kv + v];
					r[0] = _mm512_fmadd_ps(b0, gv[v], r[0]);
					r[1] = _mm512_fmadd_ps(b1, gv[v], r[1]);
					r[2] = _mm512_fmadd_ps(b2, gv[v], r[2]);
				}
			}
		}
	}
	size_t kvs = (size_t)kv * 16;
	for (int c = 0; c < nc; c++)
		for (int kx = 0; kx < 3; kx++)
			for (int v = 0; v < kv; v++) {
				float *o = acc + ((size_t)(c0 + c) * 9 + ky * 3 + kx) * kvs + 16 * v;
				_mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a[c * kv + v][kx]));
			}
}

static void dw_rows(float *acc, const float *dt, const float *const *tap, size_t cs, int cg, int c0, int ky,
		    int oy0, int oy1, int ow, int gw, int kv)
{
	if (kv == 1)
		dw_rows_impl(acc, dt, tap, cs, cg, c0, ky, oy0, oy1, ow, gw, 1);
	else if (kv == 2)
		dw_rows_impl(acc, dt, tap, cs, cg, c0, ky, oy0, oy1, ow, gw, 2);
	else
		dw_rows_impl(acc, dt, tap, cs, cg, c0, ky, oy0, oy1, ow, gw, 4);
}

/* ---------------------------------------------------------------- forward */

/* wp [g][c][t][pad8(kg)] = weight [g*kg + k][c][t], zero for k >= kg. */
static void pack_fwd(float *wp, const float *weight, int groups, int cg, int kg)
{
	size_t mp = pad8(kg);
	for (int g = 0; g < groups; g++)
		for (int c = 0; c < cg; c++)
			for (int t = 0; t < 9; t++) {
				float *o = wp + (((size_t)g * cg + c) * 9 + t) * mp;
				for (size_t k = 0; k < mp; k++)
					o[k] = (int)k < kg ? weight[(((size_t)g * kg + k) * cg + c) * 9 + t] : 0.0f;
			}
}

/* Below this many MACs a conv runs on one thread: the fork costs more than it saves. */
#define GC_PAR_MIN_MACS (1L << 17)

static int par_worth(const conv2d_desc *d)
{
	long macs = (long)d->n * d->k * (d->c / d->groups) * 9 * d->oh * d->ow;
	return d->nthreads > 1 && macs >= GC_PAR_MIN_MACS;
}

void conv_group_forward(float *out, const float *inp, const float *weight, const float *bias, float *ws,
			const conv2d_desc *d)
{
	int G = d->groups, cg = d->c / G, kg = d->k / G, mp = (int)pad8(kg);
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow;
	int rb = block_rows(d), nb = (d->oh + rb - 1) / rb;
	float *wp = ws;
	pack_fwd(wp, weight, G, cg, kg);
#pragma omp parallel num_threads(d->nthreads) if (par_worth(d))
	{
		gc_scratch s = thread_scratch(ws, d, omp_get_thread_num());
#pragma omp for schedule(dynamic)
		for (int task = 0; task < d->n * G * nb; task++) {
			int n = task / (G * nb), gi = task / nb % G, oy0 = task % nb * rb;
			gc_geom g = geom_fwd(d, d->oh - oy0 < rb ? d->oh - oy0 : rb);
			const float *tap[9];
			fwd_source(s.src, tap, &g, inp + ((size_t)n * d->c + (size_t)gi * cg) * hw, d, cg, oy0);
			tap_conv(s.grid, g.gpr, tap, 9, g.cs, wp + (size_t)gi * cg * 9 * mp, cg, mp);
			/* the grid's output columns, + bias, act: each row in whole vectors (a
			 * grid row is followed by more grid or its slack) */
			const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
			for (int k = 0; k < kg; k++) {
				__m512 b = _mm512_set1_ps(bias ? bias[gi * kg + k] : 0.0f);
				const float *gr = s.grid + (size_t)k * g.gpr;
				float *o = out + ((size_t)n * d->k + (size_t)gi * kg + k) * ohw + (size_t)oy0 * d->ow;
				for (int oy = 0; oy < g.gh; oy++)
					for (int x = 0; x < d->ow; x += 16) {
						__m512 v = _mm512_add_ps(_mm512_loadu_ps(gr + (size_t)oy * g.gw + x), b);
						if (d->act != CONV_ACT_NONE)
							v = _mm512_max_ps(zero, v); /* NaN passes, as torch */
						if (d->act == CONV_ACT_RELU6)
							v = _mm512_min_ps(six, v);
						int left = d->ow - x;
						store_lanes(o + (size_t)oy * d->ow + x,
							    left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1), v);
					}
			}
		}
	}
}

/* ---------------------------------------------------------------- backward */

/* Stride-2 input gradient, phase ph = py*2 + px of dinp (pixels (2a+py, 2b+px)): per
 * axis an even pixel takes tap 1 of output a, an odd one tap 0 of a+1 and tap 2 of a.
 * Fills its taps (ky*3 + kx) and their offsets (dy, dx) into dout; returns how many. */
static int phase_taps(int ph, int *tsel, int *dy, int *dx)
{
	int py = ph >> 1, px = ph & 1, nt = 0;
	int ky[2] = {py ? 0 : 1, 2}, oy[2] = {py, 0}, kx[2] = {px ? 0 : 1, 2}, ox[2] = {px, 0};
	for (int i = 0; i < 1 + py; i++)
		for (int j = 0; j < 1 + px; j++, nt++) {
			tsel[nt] = ky[i] * 3 + kx[j];
			dy[nt] = oy[i];
			dx[nt] = ox[j];
		}
	return nt;
}

/* The input gradient's weights, per group [9][kg][pad8(cg)] in the order tap_conv reads
 * them: stride 1 [k][t][c] with tap 8 - t (the kernel turned by 180 degrees); stride 2
 * per phase [k][its taps][c], the phases one after another. Zero for c >= cg. */
static void pack_dx(float *wp, const float *weight, int groups, int cg, int kg, int stride)
{
	size_t mp = pad8(cg);
	for (int g = 0; g < groups; g++) {
		float *o = wp + (size_t)g * 9 * kg * mp;
		for (int ph = 0; ph < (stride == 1 ? 1 : 4); ph++) {
			int tsel[9], dy[4], dx[4], nt = 9;
			if (stride == 1)
				for (int t = 0; t < 9; t++)
					tsel[t] = 8 - t;
			else
				nt = phase_taps(ph, tsel, dy, dx);
			for (int k = 0; k < kg; k++)
				for (int t = 0; t < nt; t++, o += mp)
					for (size_t c = 0; c < mp; c++)
						o[c] = (int)c < cg ? weight[(((size_t)g * kg + k) * cg + c) * 9 + tsel[t]] : 0.0f;
		}
	}
}

/* dinp of one image and group [cg][h][w] from its dout [kg][oh][ow], rows a0.. a0 + gh
 * of the grid (stride 1: of dinp; stride 2: of its phases, dinp rows 2a and 2a+1);
 * wp: the group's pack_dx weights. */
static void dx_task(float *dinp, const float *dout, const float *wp, gc_scratch s, const gc_geom *g, int a0,
		    int cg, int kg, const conv2d_desc *d)
{
	int mp = (int)pad8(cg), H = d->h, W = d->w;
	size_t hw = (size_t)H * W;
	if (d->sh == 1) {
		/* dinp = the correlation of dout (padded by 1) with the turned kernel */
		const float *tap[9];
		copy_padded(s.src, g->cs, g->pp, g->gw, dout, kg, d->oh, d->ow, a0 - 1, g->gh + 2, 1);
		for (int t = 0; t < 9; t++)
			tap[t] = s.src + (t / 3) * g->gw + t % 3;
		tap_conv(s.grid, g->gpr, tap, 9, g->cs, wp, kg, mp);
		for (int c = 0; c < cg; c++)
			for (int y = 0; y < g->gh; y++)
				memcpy(dinp + c * hw + (size_t)(a0 + y) * W, s.grid + (size_t)c * g->gpr + (size_t)y * g->gw,
				       W * sizeof(float));
		return;
	}
	/* stride 2: dout with a zero row and column after it; each phase of dinp is a grid
	 * over (a, b) that reads dout at (a + dy, b + dx). The two column phases of a row
	 * parity are made side by side, then interleaved into whole rows of dinp. */
	const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
	const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
	copy_padded(s.src, g->cs, g->pp, g->gw, dout, kg, d->oh, d->ow, a0, g->gh + 1, 0);
	float *grid[2] = {s.grid, s.grid + (size_t)mp * g->gpr};
	for (int py = 0; py < 2; py++) {
		for (int px = 0; px < 2; px++) {
			int tsel[4], dy[4], dx[4], nt = phase_taps(py * 2 + px, tsel, dy, dx);
			const float *tap[4];
			for (int t = 0; t < nt; t++)
				tap[t] = s.src + dy[t] * g->gw + dx[t];
			tap_conv(grid[px], g->gpr, tap, nt, g->cs, wp, kg, mp);
			wp += (size_t)kg * nt * mp;
		}
		int nv = (W + 31) / 32;
		for (int c = 0; c < cg; c++)
			for (int y = 2 * a0 + py; y < H && y >> 1 < a0 + g->gh; y += 2) {
				const float *e = grid[0] + (size_t)c * g->gpr + (size_t)((y >> 1) - a0) * g->gw;
				const float *o = grid[1] + (size_t)c * g->gpr + (size_t)((y >> 1) - a0) * g->gw;
				float *dst = dinp + c * hw + (size_t)y * W;
				for (int j = 0; j < nv; j++) {
					/* the grids' rows are gw = ow + 1 >= W / 2 + 1 wide and end in slack */
					__m512 ev = _mm512_loadu_ps(e + 16 * j), ov = _mm512_loadu_ps(o + 16 * j);
					__m512 lo = _mm512_permutex2var_ps(ev, lo_idx, ov), hi = _mm512_permutex2var_ps(ev, hi_idx, ov);
					int left = W - 32 * j;
					store_lanes(dst + 32 * j, left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1), lo);
					if (left > 16)
						store_lanes(dst + 32 * j + 16,
							    left >= 32 ? 0xffff : (__mmask16)((1u << (left - 16)) - 1), hi);
				}
			}
	}
}

/* dt [p][kvs] = go [kg][ohw]'s pixels p < np transposed, 0 for k >= kg, in 16 x 16
 * blocks. */
static void transpose_dout(float *dt, const float *go, size_t ohw, size_t npix, int kg, size_t kvs)
{
	for (size_t p0 = 0; p0 < npix; p0 += 16) {
		int np = npix - p0 < 16 ? (int)(npix - p0) : 16;
		__mmask16 m = np == 16 ? 0xffff : (__mmask16)((1u << np) - 1);
		for (size_t k0 = 0; k0 < kvs; k0 += 16) {
			__m512 r[16];
			for (int i = 0; i < 16; i++) {
				const float *row = go + (k0 + i) * ohw + p0;
				r[i] = (int)(k0 + i) >= kg ? _mm512_setzero_ps()
				       : m == 0xffff	     ? _mm512_loadu_ps(row)
							     : _mm512_maskz_loadu_ps(m, row);
			}
			transpose16(r);
			for (int i = 0; i < np; i++)
				_mm512_storeu_ps(dt + (p0 + i) * kvs + k0, r[i]);
		}
	}
}

/* dweight [kg][cg][9] += and dbias [kg] += of one group over all images, in image order. */
static void dw_task(float *dweight, float *dbias, const float *dout, const float *inp, gc_scratch s, int gi,
		    int cg, int kg, const conv2d_desc *d)
{
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow, kvs = kvec(kg);
	int kv = (int)kvs / 16, cb = 8 / kv, rows = DW_PIX / d->ow < 1 ? 1 : DW_PIX / d->ow, rb = block_rows(d);
	if (dweight)
		memset(s.acc, 0, (size_t)cg * 9 * kvs * sizeof(float));
	for (int n = 0; n < d->n; n++) {
		const float *go = dout + ((size_t)n * d->k + (size_t)gi * kg) * ohw;
		if (dbias)
			for (int k = 0; k < kg; k++) {
				float v = 0;
				const float *p = go + k * ohw;
#pragma omp simd reduction(+ : v)
				for (size_t i = 0; i < ohw; i++)
					v += p[i];
				dbias[k] += v;
			}
		if (!dweight)
			continue;
		/* by blocks of rb rows (the source copy in cache), each in passes over
		 * rows rows (the block of dout in L1) */
		for (int b0 = 0; b0 < d->oh; b0 += rb) {
			gc_geom g = geom_fwd(d, d->oh - b0 < rb ? d->oh - b0 : rb);
			const float *tap[9];
			fwd_source(s.src, tap, &g, inp + ((size_t)n * d->c + (size_t)gi * cg) * hw, d, cg, b0);
			transpose_dout(s.dg, go + (size_t)b0 * d->ow, ohw, (size_t)g.gh * d->ow, kg, kvs);
			for (int oy0 = 0; oy0 < g.gh; oy0 += rows) {
				int oy1 = oy0 + rows < g.gh ? oy0 + rows : g.gh;
				for (int c0 = 0; c0 < cg; c0 += cb)
					for (int ky = 0; ky < 3; ky++)
						dw_rows(s.acc, s.dg, tap, g.cs, cg, c0, ky, oy0, oy1, d->ow, g.gw, kv);
			}
		}
	}
	if (dweight)
		for (int k = 0; k < kg; k++)
			for (int j = 0; j < cg * 9; j++)
				dweight[(size_t)k * cg * 9 + j] += s.acc[(size_t)j * kvs + k];
}

void conv_group_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
			 const float *weight, float *ws, const conv2d_desc *d)
{
	int G = d->groups, cg = d->c / G, kg = d->k / G;
	size_t hw = (size_t)d->h * d->w, ohw = (size_t)d->oh * d->ow;
	int rb = block_rows(d), nb = (d->oh + rb - 1) / rb;
	float *wp = ws;
	if (dinp)
		pack_dx(wp, weight, G, cg, kg, d->sh);
#pragma omp parallel num_threads(d->nthreads) if (par_worth(d))
	{
		gc_scratch s = thread_scratch(ws, d, omp_get_thread_num());
		if (dweight || dbias) {
#pragma omp for schedule(dynamic) nowait
			for (int gi = 0; gi < G; gi++)
				dw_task(dweight ? dweight + (size_t)gi * kg * cg * 9 : NULL, dbias ? dbias + gi * kg : NULL,
					dout, inp, s, gi, cg, kg, d);
		}
		if (dinp) {
#pragma omp for schedule(dynamic)
			for (int task = 0; task < d->n * G * nb; task++) {
				int n = task / (G * nb), gi = task / nb % G, a0 = task % nb * rb;
				gc_geom g = geom_dx(d, d->oh - a0 < rb ? d->oh - a0 : rb);
				dx_task(dinp + ((size_t)n * d->c + (size_t)gi * cg) * hw,
					dout + ((size_t)n * d->k + (size_t)gi * kg) * ohw, wp + (size_t)gi * 9 * kg * pad8(cg),
					s, &g, a0, cg, kg, d);
			}
		}
	}
}
#else
/* Never called: conv2d_init refuses CONV_GROUP3X3 without AVX-512. */
void conv_group_forward(float *out, const float *inp, const float *weight, const float *bias, float *ws,
			const conv2d_desc *d)
{
	(void)out, (void)inp, (void)weight, (void)bias, (void)ws, (void)d;
}

void conv_group_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
			 const float *weight, float *ws, const conv2d_desc *d)
{
	(void)dinp, (void)dweight, (void)dbias, (void)dout, (void)inp, (void)weight, (void)ws, (void)d;
}
#endif
