#!/usr/bin/python3
"""PyTorch reference of the QUANTISED model (model_quantize, lib/nn/model.h; lib/quant/qmodel.c,
lib/nn/graph.c): TI's power-of-2 fake quantisation, forward and QAT backward, and its fixtures.

The float model is tests/ref_model.py's Detector (built from the same JSON config); this
script runs it through its own explicit forward, which applies the quantisation written
from the semantics in lib/nn/model.h and lib/kernels/quant.h (not from lib/nn/graph.c), using
tests/ref_quant.py's functions for every quantiser:

  points     the input; every conv's value after its BN and activation when they follow it
             (conv+bn+relu6: after the relu6; lateral conv+bn: after the bn; a head conv
             with bias and no BN: after the conv); every add (backbone residuals, FPN
             top-down). Upsample keeps its input's quantisation; the flattened outputs are
             the head convs' quantised values. Named as the graph node they follow. (The
             engine's concat, maxpool and l2norm points do not occur in this model.)
  signed     unsigned where the value is >= 0 by construction (relu/relu6, and an add or
             upsample of only such values), else signed.
  calibrate  (no ranges) each point records ref_quant.batch_range of its value (the float
             model, convs on BN-folded f32 weights, ReLU6 as is); ranges are the running
             average of those (ref_quant.range_update from zeros, batch count n = 0, 1, ..)
  quantised  (ranges) every conv runs on its BN-folded weights (ref_quant.fold_bn's f32
             arithmetic, running statistics), quantised per tensor (weight_frac, quant_round
             at bits), its bias at frac = min(weight frac + the frac of the conv's input
             point, the weight rule's frac of the bias at 2 * bits) (TIDL's bias split when
             it does not fit), rounded and saturated at 2 * bits; every point fake-quantises
             (act_params(range, bits, signed), act_forward); a ReLU6 before a point is a ReLU
  QAT        backward through the same graph: parameter quantisation passes gradients
             straight through, each point passes dy where lo <= x <= hi (act_backward's
             mask), the BN fold is differentiated as the expression it is (frozen running
             statistics: gradients reach conv weight, conv bias, BN weight and BN bias only)

Arithmetic: every value is held in float64 but rounded to f32 after each layer (convs in
float64 then rounded once: "the exact result in f32", independent of torch's kernels and
thread count); elementwise steps of the fold are f64 operations rounded to f32 after each,
which equals f32 arithmetic (53 >= 2 * 24 + 2), checked against ref_quant.fold_bn. The
backward runs in float64 (the rounding steps pass gradients unchanged).

Run with Debian's python (torch 1.13): /usr/bin/python3 tests/ref_qmodel.py [--tools BIN]
[--mutants] [--bits N] (the test uses the default 8 bits). It writes tests/fixtures/qmodel/tiny_q8.tns (config tests/fixtures/model/tiny.json, 8 bits):

  params      torch init (seed 11), BN affine and running statistics perturbed, the first
              BN's weight x4 and features.6's expansion BN's x3 (values beyond 6 after their
              ReLU6, where ReLU6 and the quantised model's ReLU differ); every value rounded
              to 8 significant bits (the file compresses; the fold still gives full f32
              mantissas)
  batch x3    calibration batches (2 images, 80x80, normalised u8 noise of low contrast,
              u8 in [96, 160)), meta calib k
  stats x3    the reference's stats of each calibration batch (float forward)
  ranges      running ranges after the 3 batches (meta batches 3, config tiny)
  qparams     per conv <conv>.weight_q i8, <conv>.bias_q i16, <conv>.frac i32[3] (weight,
              input, bias fraction bits); per point <point>.act i32[3] (frac, qmin, qmax),
              <point>.clip f32[2] (lo, hi): the subset of model_qparams_record that
              determines it (its f32 weight and bias are q * 2^-frac)
  batch       the test batch (4 images, full contrast, x1.5: values clip at 16 points)
  pred        quantised outputs cls f32[4,A,4], reg f32[4,A,4], and cls_frac, reg_frac
              i32[A]: the fraction bits of the point each row comes from (one step of a
              row is 2^-frac)
  stats       the stats of the quantised forward of the test batch (values entering
              each point, as forward --train --quant --stats records them)
  grad        a fixed dLoss/dpred (cls, reg)
  grads       QAT gradients: every trainable parameter (named as in params) and "image"

--tools BIN also runs BIN/forward --stats | BIN/calib-ranges on the calibration batches and
BIN/forward --quant --ranges on the test batch, and prints how they compare (nothing is
asserted there: tests/unit/test_qmodel.c is the test). --mutants reruns the QAT with
deliberate errors (no clip mask in the backward, ReLU6 kept, BN weight gradient not taken
through the fold) and prints how far they move the gradients against the test's tolerance.
CI does not run this script.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_quant as rq  # noqa: E402
import tnsfile  # noqa: E402
from ref_model import Detector, npf, state_tensors  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "qmodel")
CONFIG = os.path.join(HERE, "fixtures", "model", "tiny.json")
F32, I32 = np.float32, np.int32
D = torch.float64
CLIPS = []  # (values outside the clip range, values) of each fake quantisation


# ---------------------------------------------------------------- autograd pieces

class _R32(torch.autograd.Function):
    """Round to f32 (kept as f64); the gradient passes unchanged."""

    @staticmethod
    def forward(ctx, x):
        return x.float().double()

    @staticmethod
    def backward(ctx, g):
        return g


def r32(x):
    return _R32.apply(x)


class _Param(torch.autograd.Function):
    """Parameter quantisation: the dequantised values forward, straight-through backward."""

    @staticmethod
    def forward(ctx, x, dq):
        return dq

    @staticmethod
    def backward(ctx, g):
        return g, None


class _ActFQ(torch.autograd.Function):
    """A point's fake quantisation (ref_quant.act_forward), its mask backward (act_backward)."""

    @staticmethod
    def forward(ctx, x, a, mask=True):
        xf = x.detach().float().numpy()
        _, y = rq.act_forward(xf, a)
        with np.errstate(invalid="ignore"):
            keep = (xf >= a["lo"]) & (xf <= a["hi"]) if mask else np.ones(xf.shape, bool)
        ctx.save_for_backward(torch.from_numpy(keep))
        CLIPS.append((keep.size - int(np.count_nonzero(keep)), keep.size))
        return torch.from_numpy(y).double()

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, g, torch.zeros_like(g)), None, None


def np32(t):
    return t.detach().float().numpy()


def bias_frac(b, acc_frac, bias_bits):
    """quant.h's bias rule: the accumulator's frac, unless the largest |b| does not fit
    bias_bits there (TIDL's bias split: the weight rule's frac of the bias)."""
    return min(rq.weight_frac(b, bias_bits), acc_frac)


# ---------------------------------------------------------------- the quantised forward

class V:
    """A value: f32-valued f64 tensor, the frac of the point it carries (None unquantised),
    non-negative by construction."""

    def __init__(self, t, frac, nonneg):
        self.t, self.frac, self.nonneg = t, frac, nonneg


class QRef:
    """One configuration of the quantised model. ranges None: calibration (float forward,
    stats); else {point: f32[2]}: the fake-quantised forward. mutant: a deliberate error
    (MUTANTS), to measure what the test's tolerances catch."""

    def __init__(self, model, bits, ranges=None, mutant=None):
        self.m, self.bits, self.ranges, self.mutant = model, bits, ranges, mutant
        self.eps = float(F32(model.backbone.features[0][1].eps))

    # -- building blocks

    def point(self, name, t, nonneg):
        self.points.append(name)
        self.signed[name] = not nonneg
        self.stats[name] = rq.batch_range(np32(t))
        if self.ranges is None:
            return V(t, None, nonneg)
        a = rq.act_params(self.ranges[name], self.bits, not nonneg)
        self.acts[name] = a
        return V(_ActFQ.apply(t, a, self.mutant != "no_clip_mask"), a["frac"], nonneg)

    def conv(self, name, conv, bn, x):
        """The conv (BN folded in, quantised with ranges) on value x; its output, f32."""
        W, b = conv.weight, conv.bias
        if bn is not None:
            sigma = r32(torch.sqrt(r32(bn.running_var + self.eps)))
            s = r32((bn.weight.detach() if self.mutant == "bn_weight_outside_fold" else bn.weight) / sigma)
            Wf = r32(W * s.view(-1, 1, 1, 1))
            b0 = -bn.running_mean if b is None else r32(b - bn.running_mean)
            bf = r32(r32(b0 * s) + bn.bias)
            ew, eb = rq.fold_bn(np32(W).reshape(W.shape[0], -1), None if b is None else np32(b), np32(bn.weight),
                                np32(bn.bias), np32(bn.running_mean), np32(bn.running_var), self.eps)
            assert np.array_equal(np32(Wf).reshape(W.shape[0], -1), ew) and np.array_equal(np32(bf), eb), name
        else:
            Wf = W
            bf = b if b is not None else torch.zeros(W.shape[0], dtype=D)
        if self.ranges is not None:
            wfrac = rq.weight_frac(np32(Wf), self.bits)
            wq, wdq, _ = rq.quant_round(np32(Wf), wfrac, self.bits)
            bfrac = bias_frac(np32(bf), wfrac + x.frac, 2 * self.bits)
            bq, bdq, _ = rq.quant_round(np32(bf), bfrac, 2 * self.bits)
            self.qconv[name] = (wq.reshape(W.shape), bq, [wfrac, x.frac, bfrac])
            Wf = _Param.apply(Wf, torch.from_numpy(wdq).double())
            bf = _Param.apply(bf, torch.from_numpy(bdq).double())
        return r32(F.conv2d(x.t, Wf, bf, conv.stride, conv.padding, conv.dilation, conv.groups))

    def act(self, t, six):
        """ReLU6 (a ReLU when quantised: the point clips), or ReLU."""
        relu = not six or (self.ranges is not None and self.mutant != "relu6_kept")
        return F.relu(t) if relu else torch.clamp(t, 0, 6)

    def cba(self, prefix, conv, bn, x, six, names=None):
        """conv + bn + relu(6), the point after the activation; names (conv, point), by
        default prefix.0 and prefix.2 (torchvision's and TI's Sequential)."""
        cname, pname = names or (prefix + ".0", prefix + ".2")
        return self.point(pname, self.act(self.conv(cname, conv, bn, x), six), True)

    def cb(self, conv_name, point_name, conv, bn, x):
        """conv + bn (no activation): the point after the bn (signed)."""
        return self.point(point_name, self.conv(conv_name, conv, bn, x), False)

    def add(self, name, a, b):
        return self.point(name, r32(a.t + b.t), a.nonneg and b.nonneg)

    # -- the model

    def backbone(self, x):
        bb = self.m.backbone
        outs = []
        for i, f in enumerate(bb.features):
            p = f"backbone.features.{i}"
            if i == 0:
                x = self.cba(p, f[0], f[1], x, True)
            else:
                blk, mods = x, list(f.conv)
                for j, cna in enumerate(mods[:-2]):
                    x = self.cba(f"{p}.conv.{j}", cna[0], cna[1], x, True)
                k = len(mods) - 2
                x = self.cb(f"{p}.conv.{k}", f"{p}.conv.{k + 1}", mods[k], mods[k + 1], x)
                if f.use_res_connect:
                    x = self.add(f"{p}.add", blk, x)
            if i in bb.out_indices:
                outs.append(x)
        return outs

    def dwsep(self, prefix, mod, x):
        x = self.cba(prefix + ".0", mod[0][0], mod[0][1], x, False)
        return self.cb(prefix + ".1.0", prefix + ".1.1", mod[1][0], mod[1][1], x)

    def neck(self, inputs):
        n = self.m.neck
        lat = [self.cb(f"neck.lateral_convs.{i}.conv", f"neck.lateral_convs.{i}.bn", lc.conv, lc.bn,
                       inputs[i + n.start]) for i, lc in enumerate(n.lateral_convs)]
        for i in range(n.used - 1, 0, -1):
            up = F.interpolate(lat[i].t, size=lat[i - 1].t.shape[2:], mode="nearest")
            lat[i - 1] = self.add(f"neck.top_down.{i}.add", lat[i - 1], V(up, lat[i].frac, lat[i].nonneg))
        outs = [self.dwsep(f"neck.fpn_convs.{i}", n.fpn_convs[i], lat[i]) for i in range(n.used)]
        outs.append(self.dwsep(f"neck.fpn_convs.{n.used}", n.fpn_convs[n.used], inputs[-1]))
        for i in range(n.used + 1, n.num_outs):
            outs.append(self.dwsep(f"neck.fpn_convs.{i}", n.fpn_convs[i], outs[-1]))
        return outs

    def head(self, feats):
        h = self.m.bbox_head
        N = feats[0].t.shape[0]
        res = []
        for br, per in (("cls", h.C1), ("reg", 4)):
            flat, fracs = [], []
            for i, (b, x) in enumerate(zip(getattr(h, br + "_convs"), feats)):
                p = f"bbox_head.{br}_convs.{i}"
                x = self.cba(p, b[0].conv, b[0].bn, x, False, names=(p + ".0.conv", p + ".0.relu"))
                y = self.point(p + ".1", self.conv(p + ".1", b[1], None, x), False)
                rows = y.t.shape[2] * y.t.shape[3] * y.t.shape[1] // per
                flat.append(y.t.permute(0, 2, 3, 1).reshape(N, -1, per))
                fracs.append(np.full(rows, -1000 if y.frac is None else y.frac, I32))
            res.append((torch.cat(flat, 1), np.concatenate(fracs)))
        return res

    def forward(self, image, image_grad=False):
        """image f32 numpy -> (cls, reg) f64 tensors; fills points, stats, acts, qconv."""
        self.points, self.signed, self.stats, self.acts, self.qconv = [], {}, {}, {}, {}
        x = torch.from_numpy(np.asarray(image, F32)).double()
        if image_grad:
            x.requires_grad_(True)
        self.image = x
        v = self.point("input", x, False)
        (cls, self.cls_frac), (reg, self.reg_frac) = self.head(self.neck(self.backbone(v)))
        return cls, reg


# ---------------------------------------------------------------- fixtures

def round_bits(a, bits=8):
    """f32 values rounded to `bits` significant bits (smaller fixtures)."""
    m, e = np.frexp(np.asarray(a, np.float64))
    return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e).astype(F32)


def make_params(cfg, seed):
    torch.manual_seed(seed)
    model = Detector(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(1 + 0.5 * (torch.rand(c, generator=g) - 0.5))
                mod.bias.copy_(0.2 * (torch.rand(c, generator=g) - 0.5))
                mod.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.3 + torch.rand(c, generator=g))
        # large values after the first ReLU6 (features.0) and one expansion (features.6):
        # beyond 6, where the quantised model's ReLU (the point clips) differs from ReLU6
        model.backbone.features[0][1].weight.mul_(4)
        model.backbone.features[6].conv[0][1].weight.mul_(3)
        for k, v in model.state_dict().items():
            if v.dtype == torch.float32:
                v.copy_(torch.from_numpy(round_bits(v.numpy())))
    return model, {k: npf(v) for k, v in state_tensors(model).items()}


MEAN = np.array([123.675, 116.28, 103.53], F32).reshape(1, 3, 1, 1)
STD = np.array([58.395, 57.12, 57.375], F32).reshape(1, 3, 1, 1)


def make_images(rs, n, size, lo=0, hi=256):
    """Normalised u8 noise (as augment normalises), f32."""
    u8 = rs.integers(lo, hi, (n, 3, size, size)).astype(F32)
    return ((u8 - MEAN) / STD).astype(F32)


def ranges_of(stats_list, names):
    r = {k: np.zeros(2, F32) for k in names}
    for n, st in enumerate(stats_list):
        for k in names:
            r[k] = rq.range_update(r[k], n, st[k])
    return r


def step_counts(pred, frac, other):
    """How many values differ, and the largest difference in steps (rows' 2^-frac)."""
    step = np.ldexp(1.0, -frac.astype(np.int64))[None, :, None]
    d = np.abs(pred.astype(np.float64) - other.astype(np.float64)) / step
    return int(np.count_nonzero(d)), float(d.max()), pred.size


def run_tools(bindir, bits, cfg_path, params_rec, calib, test_batch, names, signed, ref_ranges, ref_stats, pred,
              fracs):
    """The tools on the same records, compared with the reference (printed only)."""
    with tempfile.TemporaryDirectory() as tmp:
        pfile, cfile, rfile, tfile = (os.path.join(tmp, f) for f in ("p.tns", "c.tns", "r.tns", "t.tns"))
        tnsfile.write(pfile, [params_rec])
        tnsfile.write(cfile, calib)
        tnsfile.write(tfile, [test_batch])
        fwd = [os.path.join(bindir, "forward"), "--config", cfg_path, "--weights", pfile, "--threads", "1"]
        st = subprocess.run(fwd + ["--stats"], stdin=open(cfile, "rb"), capture_output=True, check=True).stdout
        with open(os.path.join(tmp, "s.tns"), "wb") as f:
            f.write(st)
        stats = [t for k, t, _ in tnsfile.read(os.path.join(tmp, "s.tns"))]
        rg = subprocess.run([os.path.join(bindir, "calib-ranges")], input=st, capture_output=True, check=True).stdout
        with open(os.path.join(tmp, "rc.tns"), "wb") as f:
            f.write(rg)
        (_, cr, cmeta), = tnsfile.read(os.path.join(tmp, "rc.tns"))
        assert list(cr) == names, "point names or order differ"
        print("tools: forward --stats | calib-ranges vs the reference:")
        for label, cs, rs_ in [(f"stats of batch {k}", stats[k], ref_stats[k]) for k in range(len(stats))] + \
                [("ranges", cr, ref_ranges)]:
            exact = sum(np.array_equal(cs[k], rs_[k]) for k in names)
            worst = max(float(np.abs(cs[k].astype(np.float64) - rs_[k]).max() /
                              max(float(rs_[k][1] - rs_[k][0]), 1e-30)) for k in names)
            print(f"  {label}: {exact}/{len(names)} points bit-exact, max |diff| / width {worst:.2e}"
                  f" ({worst * 2048:.2f} histogram bins)")
        same = sum(rq.act_params(cr[k], bits, signed[k]) == rq.act_params(ref_ranges[k], bits, signed[k])
                   for k in names)
        print(f"  quantisers (frac, qmin, qmax, clip) from the tools' ranges: {same}/{len(names)} as the reference's")
        tnsfile.write(rfile, [("ranges", {k: ref_ranges[k] for k in names}, {"batches": len(calib)})])
        q = subprocess.run(fwd + ["--quant", "--bits", str(bits), "--ranges", rfile], stdin=open(tfile, "rb"),
                           capture_output=True, check=True).stdout
        with open(os.path.join(tmp, "q.tns"), "wb") as f:
            f.write(q)
        (_, qp, _), = tnsfile.read(os.path.join(tmp, "q.tns"))
        for o in ("cls", "reg"):
            nd, md, n = step_counts(qp[o], fracs[o], pred[o])
            print(f"  forward --quant {o}: {n - nd}/{n} equal ({100 * (n - nd) / n:.3f}%), max {md:g} steps")


# calibration on low-contrast images (u8 in [96, 160)), the test batch at full contrast
# and 1.5 times brighter: values beyond the calibrated ranges clip at 16 points
CAL_LO = 96
TEST_GAIN = 1.5


GRAD_TOL = 1e-4  # tests/unit/test_qmodel.c's
MUTANTS = ("no_clip_mask", "relu6_kept", "bn_weight_outside_fold")


def qat(model, bits, ranges, image, dcls, dreg, mutant=None):
    """The quantised forward of image and the backward of sum(cls * dcls + reg * dreg):
    (QRef, cls, reg, {parameter or "image": f32 gradient})."""
    q = QRef(model, bits, ranges, mutant)
    model.zero_grad()
    cls, reg = q.forward(image, image_grad=True)
    ((cls * dcls.double()).sum() + (reg * dreg.double()).sum()).backward()
    grads = {k: npf(p.grad) for k, p in model.named_parameters()}
    grads["image"] = npf(q.image.grad)
    return q, cls, reg, grads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", metavar="BIN", help="also compare bin/forward and bin/calib-ranges (printed)")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--mutants", action="store_true", help="rerun QAT with deliberate errors (MUTANTS): how far the "
                    "gradients move")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bits = args.bits
    cfg = json.load(open(CONFIG))
    model, params = make_params(cfg, 11)
    model.double().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    rs = np.random.default_rng(20240)
    S, ncal, nb = 80, 3, 2
    calib = [make_images(rs, nb, S, CAL_LO, 256 - CAL_LO) for _ in range(ncal)]
    test = make_images(rs, 4, S, 0, 256)
    test = (test * F32(TEST_GAIN)).astype(F32)

    # calibration: float forward, stats, running ranges
    ref = QRef(model, bits)
    cal_stats = []
    with torch.no_grad():
        for img in calib:
            anchors = ref.forward(img)[0].shape[1]
            cal_stats.append(dict(ref.stats))
    names = list(ref.points)
    ranges = ranges_of(cal_stats, names)

    # quantised forward and QAT backward
    g = torch.Generator().manual_seed(5)
    shape = (test.shape[0], anchors, cfg["model"]["num_classes"] + 1)
    dcls = torch.from_numpy(round_bits(torch.randn(shape, generator=g).numpy(), 8))
    dreg = torch.from_numpy(round_bits(torch.randn(shape[:2] + (4,), generator=g).numpy(), 8))
    CLIPS.clear()
    q, cls, reg, grads = qat(model, bits, ranges, test, dcls, dreg)
    assert q.points == names

    # what the fixture exercises
    above6 = [k for k in names if not q.signed[k] and k.startswith("backbone") and q.stats[k][1] > 6]
    clipped = [k for k in names if q.stats[k][0] < q.acts[k]["lo"] or q.stats[k][1] > q.acts[k]["hi"]]
    nsplit = sum(f[2] < f[0] + f[1] for _, _, f in q.qconv.values())
    print(f"{len(names)} points ({sum(not q.signed[k] for k in names)} unsigned), {len(q.qconv)} convs "
          f"({nsplit} with a split bias); test batch: {len(clipped)} points clip "
          f"({sum(c for c, _ in CLIPS)} of {sum(n for _, n in CLIPS)} values), "
          f"{len(above6)} ReLU6 points see values above 6")

    pred = {"cls": npf(cls), "reg": npf(reg)}
    fracs = {"cls": q.cls_frac, "reg": q.reg_frac}
    qparams = {}
    for name, (wq, bq, fr) in q.qconv.items():
        qparams[name + ".weight_q"] = wq.astype(np.int8 if bits <= 8 else np.int16)
        qparams[name + ".bias_q"] = bq.astype(np.int16 if bits <= 8 else np.int32)
        qparams[name + ".frac"] = np.array(fr, I32)
        assert np.array_equal(qparams[name + ".weight_q"], wq) and np.array_equal(qparams[name + ".bias_q"], bq)
    for k in names:
        a = q.acts[k]
        qparams[k + ".act"] = np.array([a["frac"], a["qmin"], a["qmax"]], I32)
        qparams[k + ".clip"] = np.array([a["lo"], a["hi"]], F32)

    cname = cfg.get("name", "tiny")
    params_rec = ("params", params, {"step": 0, "config": cname})
    calib_recs = [("batch", {"image": img}, {"size": S, "calib": k, "ids": [f"cal{k}_{i}" for i in range(nb)]})
                  for k, img in enumerate(calib)]
    test_rec = ("batch", {"image": test}, {"size": S, "ids": [f"img{i}" for i in range(test.shape[0])]})
    records = [params_rec] + calib_recs
    records += [("stats", {k: st[k] for k in names}, {"config": cname, "calib": n}) for n, st in enumerate(cal_stats)]
    records.append(("ranges", {k: ranges[k] for k in names}, {"batches": ncal, "config": cname}))
    records.append(("qparams", qparams, {"bits": bits, "config": cname}))
    records.append(test_rec)
    records.append(("pred", {"cls": pred["cls"], "reg": pred["reg"], "cls_frac": fracs["cls"],
                             "reg_frac": fracs["reg"]}, {"size": S, "bits": bits}))
    records.append(("stats", {k: q.stats[k] for k in names}, {"config": cname, "quantised": 1}))
    records.append(("grad", {"cls": npf(dcls), "reg": npf(dreg)}, {"step": 0}))
    records.append(("grads", grads, {"step": 0}))
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"tiny_q{bits}.tns")
    tnsfile.write(path, records, level=19)
    print(f"wrote {path}: {len(records)} records, {os.path.getsize(path)} bytes")
    if args.mutants:
        print(f"mutants (max |g - ref| / max |ref| per tensor; the test allows {GRAD_TOL:g}):")
        for mut in MUTANTS:
            _, mc, mr, mg = qat(model, bits, ranges, test, dcls, dreg, mut)
            rel = {k: float(np.abs(mg[k].astype(np.float64) - grads[k]).max() / np.abs(grads[k]).max())
                   for k in grads}
            worst = max(rel, key=rel.get)
            nout = int(np.count_nonzero(npf(mc) != pred["cls"]) + np.count_nonzero(npf(mr) != pred["reg"]))
            print(f"  {mut}: {sum(v > GRAD_TOL for v in rel.values())}/{len(rel)} gradient tensors beyond, "
                  f"worst {worst} {rel[worst]:.3g}; {nout} outputs differ")
    if args.tools:
        run_tools(args.tools, bits, CONFIG, params_rec, calib_recs, test_rec, names, q.signed, ranges, cal_stats,
                  pred, fracs)


if __name__ == "__main__":
    main()
