#!/usr/bin/python3
"""Reference for lib/kernels/quant.h: TI's power-of-2 quantisation (jacinto-ai QuantCalibrateModule /
QuantTrainModule / QuantTestModule for TIDL, issue #7), in numpy, written from the
definitions in the header's comments and the issue, not from lib/kernels/quant.c. Writes the
fixtures in tests/fixtures/quant/ that tests/unit/test_quant.c checks bit-exactly (CI has
no torch; this script needs only numpy, zstandard and tests/tnsfile.py).

Precision, as the header says: weight and activation rounding in f32 (np.float32
arithmetic; w * 2^frac is exact so it is formed in f64 when 2^frac is not an f32);
histogram ranges and range updates in f64, then rounded to f32; BN folding in f32 in the
order s = gamma / sqrt(var + eps), W * s, (b - mean) * s + beta.

Every record has meta {"case": name, "note": why the case is there}. Scalars are 1-d
tensors of one element. Files, record kinds and tensors:

  pow2_exp.tns      kind "pow2_exp": x f32[n] -> e i32[n] = quant_pow2_exp(x[i])
  weight.tns        kind "weight": w f32[n], bits i32[1] -> frac i32[1] =
                    quant_weight_frac(w, n, bits); q i32[n], dq f32[n], nsat i32[1] =
                    quant_round(w, n, frac, bits, q, dq)
  round.tns         kind "round": w f32[n], frac i32[1], qbits i32[1] -> q i32[n], dq f32[n],
                    nsat i32[1] = quant_round(w, n, frac, qbits, q, dq). The bias cases
                    (meta "bias": 1) have frac = frac_w + frac_in (both in meta) and
                    qbits = 2 * bits.
  act.tns           kind "act": range f32[2], bits i32[1], signed i32[1] -> frac i32[1],
                    qmin i32[1], qmax i32[1], scale f32[1], lo f32[1], hi f32[1] =
                    quant_act_params(range, bits, signed); x f32[n] -> q i32[n], y f32[n] =
                    quant_act(x, n, &a, y, q); dy f32[n] -> dx f32[n] =
                    quant_act_backward(x, dy, n, &a, dx)
  batch_range.tns   kind "batch_range": x f32[n] -> out f32[2] = quant_batch_range(x, n, out)
  range_update.tns  kind "range_update": r f32[2], n i32[1], batch f32[2] -> out f32[2] =
                    r after quant_range_update(r, n, batch);
                    kind "range_sequence": r0 f32[2], batches f32[m,2] -> ranges f32[m,2]:
                    r = r0, then for n = 0..m-1 quant_range_update(r, n, batches[n]) and
                    ranges[n] = r
  fold_bn.tns       kind "fold_bn": w f32[cout,k], cb f32[cout] (absent: no conv bias, pass
                    NULL), gamma, beta, mean, var f32[cout], eps f32[1] -> w_out f32[cout,k],
                    bias f32[cout] = quant_fold_bn(...)
  bias_calib.tns    kind "bias_calib": bias, mean_float, mean_quant f32[n], epoch i32[1] ->
                    out f32[n] = bias after quant_bias_calibrate(bias, n, ..., epoch)

Decisions where the header leaves room (each tagged in the cases' notes):
  - quant_batch_range's t counts the values histogrammed (NaNs skipped), not the n passed
    in: case "nan_trim_count" tells the two apart.
  - quant_bias_calibrate is f32 throughout (as torch does it on f32 tensors): d = mf - mq,
    d * 0.05f, * 2^-epoch (exact), bias + that, each rounded to f32; a double
    (mf - mq) * 0.05 * 0.5^epoch added in double gives other bits in about half the cases.
  - A value that rounds to 0 dequantises to +0 or -0: the test compares floats with ==
    (NaN equal to NaN), so the sign of zero is not checked.
  - "w * 2^frac is exact" also when 2^frac is not an f32 (frac > 127: subnormal weights,
    case "subnormal_max"); activations keep scale = 2^frac as an f32, so their fixtures keep
    frac <= 127.

Run: /usr/bin/python3 tests/ref_quant.py  (from anywhere; writes tests/fixtures/quant/)
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "quant")
F32, F64, I32 = np.float32, np.float64, np.int32

QUANT_BINS = 2048
QUANT_TRIM_DIV = 10000
QUANT_EMA_MIN = 0.001


# ---------------------------------------------------------------- the reference

def pow2_exp(x):
    """Smallest integer e with 2^e >= x (x > 0, exact); 0 for x == 0."""
    x = float(F32(x))
    if x == 0:
        return 0
    assert x > 0 and math.isfinite(x)
    m, e = math.frexp(x)  # x = m * 2^e, 0.5 <= m < 1
    return e - 1 if m == 0.5 else e


def weight_frac(w, bits):
    w = np.asarray(w, F32)
    m = np.abs(w).max() if w.size else F32(0)
    return bits - 1 - pow2_exp(m)


def round_half_away(v):
    """v: f64 holding exact values; |v| + 0.5 is exact below 2^52 and v is an integer above."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def ldexp_f32(v, k):
    """f32(v * 2^k) for f32 values v, formed exactly in f64 and rounded once."""
    return np.ldexp(np.asarray(v, F32).astype(F64), k).astype(F32)


def quant_round(w, frac, qbits):
    """-> q i32, dq f32, nsat."""
    w = np.asarray(w, F32)
    qmin, qmax = -(2 ** (qbits - 1)), 2 ** (qbits - 1) - 1
    v = np.ldexp(w.astype(F64), frac)  # = w * 2^frac exactly (the f32 product, or inf)
    r = round_half_away(v)
    nsat = int(np.count_nonzero((r < qmin) | (r > qmax)))
    q = np.clip(r, qmin, qmax).astype(np.int64).astype(I32)
    dq = ldexp_f32(q.astype(F32), -frac)  # (float)q * 2^-frac
    return q, dq, nsat


def act_params(rng, bits, signed):
    lo_r, hi_r = (F32(v) for v in rng)
    e = pow2_exp(max(abs(lo_r), abs(hi_r)))
    if signed:
        frac, qmin, qmax = bits - 1 - e, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        frac, qmin, qmax = bits - e, 0, 2 ** bits - 1
    assert -126 <= frac <= 127, "scale = 2^frac must be a normal f32"
    scale = F32(2.0 ** frac)
    return dict(frac=frac, qmin=qmin, qmax=qmax, scale=scale,
                lo=F32(qmin) / scale, hi=F32(qmax) / scale)


def act_forward(x, a):
    """q = clamp(floorf(x * s + 0.5f)), y = q * 2^-frac -> q i32, y f32."""
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.floor(x * a["scale"] + F32(0.5))  # all f32
    assert t.dtype == F32 and not np.isnan(t).any()
    q = np.clip(t, F32(a["qmin"]), F32(a["qmax"])).astype(np.int64).astype(I32)
    return q, ldexp_f32(q.astype(F32), -a["frac"])


def act_backward(x, dy, a):
    x, dy = np.asarray(x, F32), np.asarray(dy, F32)
    with np.errstate(invalid="ignore"):
        keep = (x >= a["lo"]) & (x <= a["hi"])
    return np.where(keep, dy, F32(0)).astype(F32)


def batch_range(x, count_nans=False):
    """The trimmed histogram range, f64 then f32. count_nans: t from the n passed in (the
    other reading of the header), for telling the two apart only."""
    x = np.asarray(x, F32)
    v = x[~np.isnan(x)].astype(F64)
    if v.size == 0:
        return np.zeros(2, F32)
    mn, mx = float(v.min()), float(v.max())
    if mn == mx:
        return np.array([mn, mx], F32)
    w = (mx - mn) / QUANT_BINS
    b = np.minimum(QUANT_BINS - 1, ((v - mn) / w).astype(np.int64))  # (v - mn) / w >= 0: trunc = floor
    h = np.bincount(b, minlength=QUANT_BINS)
    t = (x.size if count_nans else v.size) // QUANT_TRIM_DIV
    klo = int(np.argmax(np.cumsum(h) > t))
    khi = QUANT_BINS - 1 - int(np.argmax(np.cumsum(h[::-1]) > t))
    return np.array([mn + klo * w, mn + (khi + 1) * w], F32)


def range_update(r, n, batch):
    f = max(1.0 / (n + 1), QUANT_EMA_MIN)
    return np.array([float(r[i]) * (1.0 - f) + float(batch[i]) * f for i in range(2)], F32)


def fold_bn(w, cb, gamma, beta, mean, var, eps):
    w = np.asarray(w, F32)
    s = gamma / np.sqrt(var + F32(eps))
    b = cb if cb is not None else np.zeros_like(mean)
    wo, bo = w * s[:, None], (b - mean) * s + beta
    assert s.dtype == wo.dtype == bo.dtype == F32
    return wo, bo


def bias_calibrate(bias, mf, mq, epoch):
    d = ((mf - mq) * F32(0.05)) * F32(0.5 ** epoch)
    out = bias + d
    assert out.dtype == F32
    return out


# ---------------------------------------------------------------- hand-checked anchors
# Results worked out by hand from the definitions: they pin the reference itself.

def self_check():
    assert [pow2_exp(v) for v in (0, 1, 2, 3, 0.5, 0.75, 4, 5, 6, 1e-45)] == [0, 0, 1, 2, -1, 0, 2, 3, 3, -149]
    assert pow2_exp(np.nextafter(F32(1), F32(2))) == 1 and pow2_exp(np.nextafter(F32(1), F32(0))) == 0
    assert weight_frac([0, 0], 8) == 7 and weight_frac([-1.0, 0.5], 8) == 7 and weight_frac([-3.0], 8) == 5
    q, dq, ns = quant_round(F32([2.5, -2.5, 0.5, -0.5, 1.5, -1.5]) / 128, 7, 8)
    assert list(q) == [3, -3, 1, -1, 2, -2] and ns == 0
    q, dq, ns = quant_round([1.0, -1.0], 7, 8)
    assert list(q) == [127, -128] and ns == 1 and list(dq) == [127 / 128, -1.0]
    q, _, ns = quant_round([2.0 ** 31, -(2.0 ** 31), 2147483520.0], 0, 32)
    assert list(q) == [2 ** 31 - 1, -(2 ** 31), 2147483520] and ns == 1
    a = act_params([0, 6], 8, False)
    assert (a["frac"], a["qmin"], a["qmax"], a["hi"]) == (5, 0, 255, F32(255 / 32))
    a = act_params([-2, 1], 8, True)
    assert (a["frac"], a["qmin"], a["qmax"], a["lo"]) == (6, -128, 127, F32(-2))
    q, y = act_forward(F32([2.5, -2.5, 0.5, -0.5, -1.5, 3.0, -3.0]) / 64, a)
    assert list(q) == [3, -2, 1, 0, -1, 3, -3]
    q, _ = act_forward([F32(0.5 - 2 ** -26) / 64, F32(0.5 - 2 ** -24) / 64], a)
    assert list(q) == [1, 0]  # f32: 0.5 - 2^-26 + 0.5f rounds to 1
    assert list(act_backward([-2, 127 / 64, 2, -2.0000002], [1, 2, 3, 4], a)) == [1, 2, 0, 0]
    assert list(batch_range([3.0, 3.0])) == [3, 3] and list(batch_range([np.nan])) == [0, 0]
    assert list(batch_range([0.0, 2048.0])) == [0, 2048]
    x = np.concatenate([[-100.0], np.arange(9998) % 7, [100.0]]).astype(F32)  # n = 10000: t = 1
    w = 200 / 2048
    assert list(batch_range(x)) == [F32(-100 + 1024 * w), F32(-100 + (1024 + 62) * w)]
    assert list(range_update([1, 2], 0, [5, 6])) == [5, 6]
    assert list(range_update([1, 2], 1, [5, 6])) == [3, 4]
    assert list(range_update([1, 2], 999, [1001, 2])) == [F32(1 * 0.999 + 1001 * 0.001), 2]
    assert 1.0 / 1000 == QUANT_EMA_MIN and 1.0 / 1001 < QUANT_EMA_MIN
    wo, bo = fold_bn(F32([[1, 2]]), None, F32([2]), F32([1]), F32([3]), F32([3]), 1.0)
    assert list(wo[0]) == [1, 2] and list(bo) == [-2]
    assert list(bias_calibrate(F32([1]), F32([3]), F32([1]), 1)) == [F32(F32(1) + F32(F32(2) * F32(0.05)) * F32(0.5))]


# ---------------------------------------------------------------- the fixtures

def rec(kind, case, note, **t):
    tensors = {}
    for k, v in t.items():
        if v is None:
            continue
        a = np.asarray(v)
        if a.ndim == 0:
            a = a.reshape(1)
        tensors[k] = a
    return (kind, tensors, {"case": case, "note": note})


def i1(v):
    return np.array([v], I32)


def grid(rs, n, lo, hi, step):
    """n f32 values on a grid (they compress well)."""
    return (rs.integers(int(lo / step), int(hi / step), n) * step).astype(F32)


def f32s(*v):
    return np.array(v, F32)


def nxt(v, toward):
    return np.nextafter(F32(v), F32(toward))


def pow2_cases(rs):
    x = [0.0, 1.0, 2.0, 0.5, 0.25, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1024.0, 2.0 ** 100, 2.0 ** -100,
         nxt(1, 2), nxt(1, 0), nxt(2, 3), nxt(2, 0), nxt(0.5, 1), nxt(0.5, 0), nxt(8, 9), nxt(8, 0),
         1e-30, 1e-38, 2.0 ** -126, nxt(2.0 ** -126, 1), nxt(2.0 ** -126, 0),
         1e-45, 2.0 ** -148, 3e-45, 2.0 ** -140, 3 * 2.0 ** -140,
         1e30, 3.4028235e38, 2.0 ** 127, nxt(2.0 ** 127, 0), 0.1, 0.3, 6.0001, 255.0, 256.0, 257.0]
    x = np.concatenate([np.array(x, F32), (rs.random(40) * 10.0 ** rs.integers(-20, 20, 40)).astype(F32)])
    yield rec("pow2_exp", "edges", "0; powers of 2 and their neighbours; subnormals; FLT_MAX; random magnitudes",
              x=x, e=np.array([pow2_exp(v) for v in x], I32))


def weight_cases(rs):
    def case(name, note, w, bits=8):
        w = np.asarray(w, F32)
        frac = weight_frac(w, bits)
        q, dq, nsat = quant_round(w, frac, bits)
        return rec("weight", name, note, w=w, bits=i1(bits), frac=i1(frac), q=q, dq=dq, nsat=i1(nsat))

    yield case("zeros", "all-zero tensor: e = 0, frac = bits - 1, everything 0", np.zeros(17))
    yield case("zeros_16", "all-zero tensor, 16-bit", np.zeros(5), 16)
    yield case("random", "random normal weights", rs.normal(0, 0.1, 300))
    yield case("random_16", "random normal weights, 16-bit", rs.normal(0, 0.05, 300), 16)
    yield case("max_pow2_pos", "max|w| = 1 exactly, positive: 1 * 2^7 = 128 saturates to 127",
               np.concatenate([[1.0], rs.uniform(-0.9, 0.9, 30)]))
    yield case("max_pow2_neg", "max|w| = 1 exactly, negative: -128, no saturation",
               np.concatenate([[-1.0], rs.uniform(-0.9, 0.9, 30)]))
    yield case("max_pow2_both", "+0.5 and -0.5 both present: one saturates", [0.5, -0.5, 0.25, -0.125, 0.0])
    yield case("max_pow2_pos_16", "max|w| = 4, 16-bit: 32768 saturates to 32767",
               np.concatenate([[4.0, -4.0], rs.uniform(-4, 4, 30)]), 16)
    yield case("random_4", "random normal weights, 4-bit (TI's not-yet-done weight width): [-8, 7]",
               rs.normal(0, 0.1, 200), 4)
    yield case("ties_4", "4-bit ties, max|w| = 2, scale 2^2: 0.375 -> 1.5 -> 2, 1.875 -> 7.5 -> 8 -> 7, "
               "-1.875 -> -8, -2 -> -8", np.array([1.0, 0.375, -0.375, 0.125, -0.125, 1.875, -1.875, -2.0, 0.0], F32), 4)
    yield case("max_just_above_pow2", "max|w| = nextafter(1, 2): e = 1, frac = 6",
               [nxt(1, 2), 0.3, -0.7, 1.0, -1.0, 0.99999994])
    yield case("max_just_below_pow2", "max|w| = nextafter(1, 0): e = 0, 127.99999 rounds to 128, saturates",
               [nxt(1, 0), -nxt(1, 0), 0.5, -0.3])
    ties = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 63.5, -63.5, 126.5, -126.5, 127.5, -127.5, 127.0,
                     -128.0, 0.0, 3.0], F32) / 128
    yield case("ties", "w * 128 at .5: half away from zero (2.5 -> 3, -2.5 -> -3; 127.5 -> 128 -> 127)", ties)
    near = np.array([0.5 - 2 ** -25, -(0.5 - 2 ** -25), 0.5 - 2 ** -26, 1.5 - 2 ** -23, -(1.5 - 2 ** -23),
                     nxt(2.5, 3), nxt(2.5, 2), -nxt(2.5, 3), -nxt(2.5, 2), -128.0], F32) / 128
    yield case("near_ties", "just off .5 (0.5 - 2^-26 rounds to 0: round_half_away is exact, not floorf(|v| + 0.5f))",
               near)
    yield case("ties_16", "16-bit ties, scale 2^13", np.array([0.5, -0.5, 2.5, -2.5, 32767.5, -32767.5, -32768.0,
                                                                1001.5, -1001.5], F32) / 8192, 16)
    yield case("negative_only", "all negative: the range is set by the most negative value",
               -np.abs(rs.normal(0, 2, 50)) - 0.01)
    yield case("negative_only_pow2", "all negative, min = -2: -128 without saturation", [-2.0, -1.0, -0.015625, -1.99])
    yield case("tiny", "max|w| ~ 2e-31: frac = 108", rs.normal(0, 1e-31, 40))
    yield case("tiny_16", "max|w| ~ 1e-33, 16-bit: frac = 124", rs.normal(0, 1e-34, 40), 16)
    yield case("subnormal_max", "max|w| = 2^-130 (subnormal): frac = 137 > 127, w * 2^frac still exact",
               np.array([2.0 ** -130, -(2.0 ** -131), 3 * 2.0 ** -137, -(2.0 ** -138), 2.0 ** -149, 0], F32))
    yield case("subnormal_16", "16-bit, max|w| = 2^-146: frac = 161, 2^15 saturates and 32767 * 2^-161 rounds to "
               "2^-146 in f32", np.array([2.0 ** -146, 3 * 2.0 ** -149, -5 * 2.0 ** -149, 2.0 ** -149, 0], F32), 16)
    yield case("huge", "max|w| = FLT_MAX: frac = -121, rounds to 128, saturates",
               [3.4028235e38, -1e38, 1e37, 1e30, -3e38, 1.0])
    yield case("single", "one value", [0.3])
    yield case("constant", "constant tensor 0.75: e = 0, 96", np.full(9, 0.75))
    yield case("odd_sizes", "sizes 1, 2, 3, 5, 7 across records: 7 values", rs.normal(0, 1, 7))


def round_cases(rs):
    def case(name, note, w, frac, qbits, **meta):
        w = np.asarray(w, F32)
        q, dq, nsat = quant_round(w, frac, qbits)
        r = rec("round", name, note, w=w, frac=i1(frac), qbits=i1(qbits), q=q, dq=dq, nsat=i1(nsat))
        r[2].update(meta)
        return r

    def bias(name, note, b, frac_w, frac_in, bits=8):
        return case(name, note, b, frac_w + frac_in, 2 * bits, bias=1, frac_w=frac_w, frac_in=frac_in)

    yield bias("bias_random", "bias at frac_w + frac_in = 7 + 4, 16 bits", rs.normal(0, 2, 64), 7, 4)
    yield bias("bias_saturate", "bias beyond 16 bits: saturates at 32767 / -32768",
               [15.99, 16.0, 16.5, -16.0, -16.0005, 100.0, -100.0, 1e30, -1e30, 0.0], 7, 4)
    yield bias("bias_edges_16", "q exactly at qmax / qmin and one step beyond",
               np.array([32767, -32768, 32768, -32769, 32767.5, -32768.5, 32766.5, -32767.5], F32) / 2048, 7, 4)
    yield bias("bias_ties", "bias ties: half away from zero",
               np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 100.5, -100.5], F32) / 2 ** 13, 8, 5)
    yield bias("bias_zero", "all-zero bias", np.zeros(6), 7, 7)
    yield bias("bias_neg_frac", "negative frac (big weights, big inputs): frac = -3 + -2",
               [100.0, -100.0, 16.0, -16.0, 48.0, -48.0, 1e6, -1e6, 3.99e4, 31.99, -32.0], -3, -2)
    yield bias("bias_32_random", "16-bit model: 32-bit bias at frac 15 + 10", rs.normal(0, 10, 64), 15, 10, 16)
    yield bias("bias_32_edges", "32-bit saturation: 2^31 (not an int32) saturates, 2^31 - 128 does not",
               np.array([2.0 ** 31, -(2.0 ** 31), 2147483520.0, -2147483520.0, nxt(-(2.0 ** 31), -3e9),
                         3e9, -3e9, 1e30, -1e30, 2.0 ** 30 + 0.5], F32) / 2 ** 20, 15, 5, 16)
    yield case("frac_zero", "frac 0: plain rounding, 8 bits", [0.5, -0.5, 1.49, 127.4, 127.5, -128.4, -128.6, 300, -300],
               0, 8)
    yield case("frac_large", "frac 126 on tiny values", rs.normal(0, 2.0 ** -120, 20), 126, 8)
    yield case("frac_negative", "frac -10: values are multiples of 1024", [512.0, -512.0, 1536.0, 1e5, -1.3e5, 511.9],
               -10, 8)


def act_cases(rs):
    def case(name, note, rng, bits, signed, x, dy=None):
        x = np.asarray(x, F32)
        a = act_params(rng, bits, signed)
        q, y = act_forward(x, a)
        if dy is None:
            dy = rs.normal(0, 1, x.size)
        dy = np.asarray(dy, F32)
        return rec("act", name, note, range=np.asarray(rng, F32), bits=i1(bits), signed=i1(int(signed)),
                   frac=i1(a["frac"]), qmin=i1(a["qmin"]), qmax=i1(a["qmax"]), scale=f32s(a["scale"]),
                   lo=f32s(a["lo"]), hi=f32s(a["hi"]), x=x, q=q, y=y, dy=dy, dx=act_backward(x, dy, a))

    def edges(a_rng, bits, signed):
        """clip edges and their f32 neighbours, for the backward"""
        a = act_params(a_rng, bits, signed)
        lo, hi, s = a["lo"], a["hi"], a["scale"]
        return [lo, hi, nxt(lo, -np.inf), nxt(lo, np.inf), nxt(hi, -np.inf), nxt(hi, np.inf),
                hi + F32(0.25) / s, hi + F32(0.5) / s, lo - F32(0.5) / s, lo - F32(0.75) / s]

    r6 = [0.0, 6.0]
    yield case("relu6", "after ReLU6, range (0, 6): frac 5, q in [0, 255]", r6, 8, False,
               np.concatenate([rs.uniform(-1, 7, 200), edges(r6, 8, False)]))
    yield case("relu6_16", "16-bit unsigned: frac 13, q in [0, 65535]", r6, 16, False,
               np.concatenate([rs.uniform(-1, 9, 200), edges(r6, 16, False)]))
    yield case("signed", "signed range (-3, 2.5): frac 5", [-3.0, 2.5], 8, True,
               np.concatenate([rs.normal(0, 2, 200), edges([-3.0, 2.5], 8, True)]))
    yield case("signed_16", "16-bit signed: frac 13", [-3.0, 2.5], 16, True,
               np.concatenate([rs.normal(0, 2, 200), edges([-3.0, 2.5], 16, True)]))
    yield case("zero_range", "range (0, 0): e = 0, frac = bits, anything else clips", [0.0, 0.0], 8, False,
               [0.0, 1e-3, 0.5, 0.99, 1.0, 2.0, -0.001, -1.0, 0.001953125, 0.0019])
    yield case("zero_range_signed", "range (0, 0), signed: frac = bits - 1", [0.0, 0.0], 8, True,
               [0.0, 1e-3, 0.5, 0.99, 1.0, 2.0, -0.001, -1.0, -2.0, 0.00390625])
    yield case("pow2_range_unsigned", "range max exactly 4: frac 6, 4 * 64 = 256 clips to 255", [0.0, 4.0], 8, False,
               [4.0, 3.984375, 3.99, nxt(4, 0), nxt(4, 5), 2.0, 0.0, 8.0] + edges([0, 4.0], 8, False))
    yield case("pow2_range_signed", "range (-2, 2): frac 6; -2 -> -128, 2 -> 128 -> 127", [-2.0, 2.0], 8, True,
               [2.0, -2.0, 1.984375, -1.984375, nxt(2, 3), nxt(-2, -3)] + edges([-2.0, 2.0], 8, True))
    yield case("range_just_above_pow2", "range max nextafter(2, 3): e = 2, frac 5", [0.0, nxt(2, 3)], 8, False,
               [2.0, 4.0, 7.96875, 7.99, 8.0, 0.015625, 0.0156])
    yield case("range_just_below_pow2", "range max nextafter(2, 0): e = 1, frac 7", [0.0, nxt(2, 0)], 8, False,
               [2.0, 1.9921875, 1.99, 1.0, 0.00390625, 0.0039])
    yield case("negative_only_signed", "range (-5, -1): e = 3, frac 4", [-5.0, -1.0], 8, True,
               np.concatenate([rs.uniform(-9, 0, 60), edges([-5.0, -1.0], 8, True)]))
    yield case("negative_only_unsigned", "range (-5, -1) unsigned: everything negative clips to 0", [-5.0, -1.0], 8,
               False, rs.uniform(-9, 1, 40))
    yield case("min_dominates", "|min| > |max| sets e: (-9, 1), frac 3", [-9.0, 1.0], 8, True, rs.uniform(-20, 20, 60))
    t = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 127.5, -127.5, -128.5, -128.4, 0.0], F32)
    yield case("ties", "x * s at .5: floor(v + 0.5), so 2.5 -> 3 but -2.5 -> -2, -0.5 -> 0", [-2.0, 2.0], 8, True,
               t / 64)
    yield case("ties_unsigned", "unsigned ties, and 254.5 -> 255, 255.5 clips", [0.0, 1.0], 8, False,
               np.array([0.5, 1.5, 2.5, 254.5, 255.5, 253.5, -0.5, -0.49], F32) / 256)
    yield case("ties_16", "16-bit ties", [-4.0, 4.0], 16, True,
               np.array([0.5, -0.5, 2.5, -2.5, 32766.5, -32767.5, -32768.5, 1001.5, -1001.5], F32) / 8192)
    near = np.array([0.5 - 2 ** -26, 0.5 - 2 ** -25, 0.5 - 2 ** -24, 0.5 - 3 * 2 ** -26, -(0.5 - 2 ** -26),
                     -(0.5 + 2 ** -24), 1.5 - 2 ** -23, -(1.5 - 2 ** -23), nxt(2.5, 2), -nxt(2.5, 2),
                     nxt(-2.5, -3)], F32) / 64
    yield case("f32_add", "floorf(v + 0.5f) in f32: v = 0.5 - 2^-26 and 0.5 - 2^-25 give 1 (the sum rounds up to 1.0f)",
               [-2.0, 2.0], 8, True, near)
    yield case("clip_far", "values far outside the range, x * s overflowing f32 to +-inf included", [-1.0, 1.0], 8, True,
               [1e30, -1e30, 3.4028235e38, -3.4028235e38, 1e10, -1e10, 3e9, -3e9, 128.0, -129.0])
    yield case("clip_far_16", "16-bit, far outside", [0.0, 1.0], 16, False,
               [1e30, -1e30, 3.4028235e38, -3.4028235e38, 65536.0, 1.0, 0.99999, -1e-30])
    yield case("tiny_range", "range max 1e-30: frac 107 (unsigned)", [0.0, 1e-30], 8, False,
               np.concatenate([rs.uniform(-1e-30, 2e-30, 40), [1e-30, 7.8886e-31, 1.0, 1e-45]]))
    yield case("tiny_range_signed_16", "range ~ +-2^-100, 16-bit: frac 115", [-(2.0 ** -100), 1e-31], 16, True,
               rs.normal(0, 2.0 ** -101, 40))
    yield case("huge_range", "range 1e30: frac 7 - 100 = -93", [-1e30, 1e29], 8, True,
               np.concatenate([rs.normal(0, 1e29, 40), [1.0, -1.0, 1e-40, 3.4028235e38]]))
    yield case("constant", "a constant input tensor", [0.0, 6.0], 8, False, np.full(11, 1.3))
    yield case("backward_signed_zero", "x = -0.0 with lo = 0 passes the gradient", [0.0, 1.0], 8, False,
               [-0.0, 0.0, -1e-45, 1e-45, 0.99609375, 0.9961, nxt(0.99609375, 1)], [1, 2, 3, 4, 5, 6, 7])


def batch_range_cases(rs):
    def case(name, note, x, **extra):
        x = np.asarray(x, F32)
        return rec("batch_range", name, note, x=x, out=batch_range(x))

    yield case("zeros", "all-zero tensor: (0, 0)", np.zeros(50))
    yield case("constant", "constant: (mn, mx) with mn == mx", np.full(1000, 3.25))
    yield case("constant_neg_n12000", "constant, n >= 10000", np.full(12000, -0.75))
    yield case("single", "one value", [-2.5])
    yield case("two", "two values: t = 0, (mn, mn + 2048 * w)", [1.0, 1.1])
    yield case("all_nan", "only NaNs: (0, 0)", np.full(7, np.nan))
    x = grid(rs, 300, -2, 3, 1 / 64)
    x[[0, 17, 99, 150, 299]] = np.nan
    yield case("nan_skip", "NaNs skipped, first and last included", x)
    yield case("nan_one_value", "NaNs and one value: (v, v)", [np.nan, 4.0, np.nan])
    yield case("random_small", "n < 10000: t = 0, the range is (min, ~max)", rs.normal(0.3, 1, 500))
    yield case("negative_only", "all negative", -np.abs(grid(rs, 700, 0, 5, 1 / 128)) - 1)

    def with_tails(n, low, high, bulk_lo=0.0, bulk_hi=1.0):
        """n values: bulk on a grid plus the given tail values at the front and back"""
        bulk = grid(rs, n - len(low) - len(high), bulk_lo, bulk_hi, 1 / 64)
        return np.concatenate([np.array(low, F32), bulk, np.array(high, F32)])

    yield case("n9999_outliers", "n = 9999: t = 0, outliers kept", with_tails(9999, [-50.0], [50.0]))
    yield case("n10000_outliers", "n = 10000: t = 1, one outlier in each end bin trimmed",
               with_tails(10000, [-50.0], [50.0]))
    yield case("n10000_two_low", "n = 10000: two values in the lowest bin (2 > t) stay, one at the top goes",
               with_tails(10000, [-50.0, -49.99], [50.0]))
    yield case("n19999_spread", "n = 19999: t = 1, tails of 1 + 1 + 1 values in separate bins",
               with_tails(19999, [-50.0, -45.0, -40.0], [40.0, 45.0, 50.0]))
    yield case("n20000_spread", "n = 20000: t = 2, tails of 1 + 1 + 1 values in separate bins",
               with_tails(20000, [-50.0, -45.0, -40.0], [40.0, 45.0, 50.0]))
    yield case("n12000_relu", "after ReLU: 40% zeros, n = 12000", np.maximum(grid(rs, 12000, -4, 6, 1 / 32), 0))
    yield case("n15000_normal", "normal values on a fine grid, n = 15000",
               (np.round(rs.normal(0, 1, 15000) * 64) / 64).astype(F32))
    bins = np.arange(2049, dtype=F32)
    yield case("bin_edges", "values on bin edges: mn 0, mx 2048, w = 1", np.concatenate([bins, bins[::7] + 0.5]))
    yield case("tiny", "values ~ 1e-30", rs.normal(0, 1e-30, 200))
    yield case("huge", "values ~ 1e37, spread across exponents", np.concatenate([rs.normal(0, 1e37, 100), [1e-20]]))
    yield case("wide_exponents", "1e-20 .. 1e20: mx - mn rounds in f64", [1e-20, 1e20, 3e-10])
    yield case("n10000_bin_boundary", "n = 10000, t = 1, awkward w: the second value from each end sits on a bin "
               "boundary where f64 and f32 bin arithmetic disagree", boundary_case(rs))
    x = with_tails(10010, [-50.0], [50.0])
    x[[5, 500, 5000, 9000, 10005]] = np.nan
    yield case("nan_trim_agree", "10010 values of which 5 NaN: t = 1 whether NaNs count or not", x)
    x = with_tails(10005, [-50.0], [50.0])
    x[[3, 300, 3000, 6000, 7000, 8000, 9000, 9500, 9900, 10000]] = np.nan
    r = case("nan_trim_count", "DECISION: 10005 values of which 10 NaN: t = 9995 // 10000 = 0 "
             "(NaNs do not count), so the outliers stay (t = 1 would trim them)", x)
    assert not np.array_equal(r[1]["out"], batch_range(x, count_nans=True))
    yield r


def boundary_case(rs):
    """10000 values in [-1.1, 2.3] whose second lowest and second highest lie at bins whose
    index f32 arithmetic would get wrong (the f64 bin is the one that counts)."""
    mn, mx = F32(-1.1), F32(2.3)
    w = (float(mx) - float(mn)) / QUANT_BINS

    def tricky(ks):
        for k in ks:
            c0 = F32(float(mn) + k * w)
            for c in [c0 + np.spacing(c0) * j for j in (0, -1, 1, -2, 2, -3, 3)]:
                b64 = int((float(c) - float(mn)) / w)
                b32 = int(F32(c - mn) / F32(w))
                if b64 != b32:
                    return c
        raise AssertionError("no boundary value found")

    lo2, hi2 = tricky(range(900, 20, -1)), tricky(range(1800, 2047))
    bulk = grid(rs, 10000 - 4, 0.6, 1.8, 1 / 1024)  # bins 1007 .. 1730
    return np.concatenate([[mn, lo2], bulk, [hi2, mx]]).astype(F32)


def range_update_cases(rs):
    def case(name, note, r, n, b):
        r, b = np.asarray(r, F32), np.asarray(b, F32)
        return rec("range_update", name, note, r=r, n=i1(n), batch=b, out=range_update(r, n, b))

    r0, b0 = f32s(-1.3, 2.7), f32s(-0.9, 3.1)
    yield case("first", "n = 0: f = 1, r = batch", f32s(0, 0), 0, b0)
    yield case("first_nonzero_r", "n = 0 with r set: still r = batch", r0, 0, b0)
    yield case("second", "n = 1: the mean of two", r0, 1, b0)
    for n in (2, 7, 998, 999, 1000, 1001, 123456):
        yield case(f"n{n}", "f = max(1 / (n + 1), 0.001): cumulative up to n = 999 (f = 0.001 exactly), "
                   "EMA after", r0, n, b0)
    for i in range(6):
        n = int(rs.integers(0, 3000))
        yield case(f"random{i}", "random r and batch, f64 arithmetic",
                   rs.normal(0, 3, 2).astype(F32), n, rs.normal(0, 3, 2).astype(F32))
    yield case("zeros", "all-zero ranges", f32s(0, 0), 5, f32s(0, 0))
    yield case("negative_only", "negative-only ranges", f32s(-8, -2), 3, f32s(-9, -0.5))

    m = 1003
    batches = np.stack([rs.normal(-2, 0.3, m), rs.normal(3, 0.4, m)], 1).astype(F32)
    r = f32s(0, 0)
    out = np.empty((m, 2), F32)
    for n in range(m):
        r = range_update(r, n, batches[n])
        out[n] = r
    yield rec("range_sequence", "seq1003", "1003 batches from n = 0: cumulative mean, then the EMA from n = 1000 on",
              r0=f32s(0, 0), batches=batches, ranges=out)


def fold_bn_cases(rs):
    def case(name, note, cout, k, bias, eps, gamma=None, var=None):
        w = rs.normal(0, 0.2, (cout, k)).astype(F32)
        cb = rs.normal(0, 0.5, cout).astype(F32) if bias else None
        g = rs.uniform(0.2, 2, cout).astype(F32) if gamma is None else np.asarray(gamma, F32)
        beta = rs.normal(0, 0.5, cout).astype(F32)
        mean = rs.normal(0, 1, cout).astype(F32)
        v = rs.uniform(0.01, 3, cout).astype(F32) if var is None else np.asarray(var, F32)
        wo, bo = fold_bn(w, cb, g, beta, mean, v, eps)
        return rec("fold_bn", name, note, w=w, cb=cb, gamma=g, beta=beta, mean=mean, var=v, eps=f32s(eps),
                   w_out=wo, bias=bo)

    yield case("bias", "conv with bias, eps 1e-5", 64, 9, True, 1e-5)
    yield case("no_bias", "conv without bias (cb NULL), eps 1e-5", 64, 9, False, 1e-5)
    yield case("eps1e-3", "eps 1e-3 (TI's mobilenet BN)", 32, 5, True, 1e-3)
    yield case("special", "gamma 0, negative gamma, var 0, var tiny, gamma huge", 6, 3, True, 1e-5,
               gamma=[0.0, -1.5, 1.0, 2.0, 1e6, -0.01], var=[1.0, 0.5, 0.0, 1e-12, 4.0, 0.0])
    yield case("dw_1x1", "k = 1 (depthwise-like), no bias", 7, 1, False, 1e-5)


def bias_calib_cases(rs):
    for epoch in range(4):
        n = 64
        bias = rs.normal(0, 1, n).astype(F32)
        mf = rs.normal(0, 2, n).astype(F32)
        mq = (mf + rs.normal(0, 0.1, n)).astype(F32)
        yield rec("bias_calib", f"epoch{epoch}", "DECISION: f32 throughout: bias + ((mf - mq) * 0.05f) * 0.5^epoch",
                  bias=bias, mean_float=mf, mean_quant=mq, epoch=i1(epoch),
                  out=bias_calibrate(bias, mf, mq, epoch))
    mf = rs.normal(0, 1, 64).astype(F32)
    mq = rs.normal(0, 1, 64).astype(F32)
    bias = (rs.normal(0, 1, 64) * 1e-6).astype(F32)
    yield rec("bias_calib", "small_bias", "DECISION: bias ~ 1e-6 under corrections ~ 0.05: here (mf - mq) * 0.05f in "
              "f32 and (mf - mq) * 0.05 in f64 differ", bias=bias, mean_float=mf, mean_quant=mq, epoch=i1(2),
              out=bias_calibrate(bias, mf, mq, 2))
    z = np.zeros(5, F32)
    bias = f32s(1, -1, 0.5, 0, 3)
    yield rec("bias_calib", "equal_means", "mean_float == mean_quant: bias unchanged", bias=bias, mean_float=bias,
              mean_quant=bias, epoch=i1(1), out=bias_calibrate(bias, bias, bias, 1))
    yield rec("bias_calib", "zeros", "all zero", bias=z, mean_float=z, mean_quant=z, epoch=i1(0), out=z)
    mf, mq = f32s(1e6, -1e6, 1e-6, 100.0, -3.0), f32s(-1e6, 1e6, -1e-6, 99.0, 5.0)
    yield rec("bias_calib", "wide", "wide differences, epoch 10", bias=f32s(0.1, 0.2, 0.3, 0.4, 0.5), mean_float=mf,
              mean_quant=mq, epoch=i1(10), out=bias_calibrate(f32s(0.1, 0.2, 0.3, 0.4, 0.5), mf, mq, 10))


def main():
    self_check()
    os.makedirs(OUT, exist_ok=True)
    files = {"pow2_exp": pow2_cases, "weight": weight_cases, "round": round_cases, "act": act_cases,
             "batch_range": batch_range_cases, "range_update": range_update_cases, "fold_bn": fold_bn_cases,
             "bias_calib": bias_calib_cases}
    total = 0
    for i, (name, gen) in enumerate(files.items()):
        rs = np.random.default_rng(7000 + i)
        records = list(gen(rs))
        path = os.path.join(OUT, name + ".tns")
        tnsfile.write(path, records, level=19)
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {len(records)} cases, {size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
