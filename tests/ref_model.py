#!/usr/bin/python3
"""PyTorch reference of the models forward builds (lib/model.h), and their fixtures.

The model is built here from the same JSON config as the C engine, by an independent
builder written from the description in docs/models.md (the backbone is torchvision's
own MobileNetV2, so the parameter names are torchvision's by construction):

  backbone   torchvision mobilenet_v2(width_mult).features[0..17], outputs after out_indices
  neck       mmdet FPN (start_level, num_outs, add_extra_convs "on_input", nearest
             upsampling to the lateral's size), TI "lite": every 3x3 conv is
             depthwise 3x3 + BN + ReLU + pointwise 1x1 + BN; laterals 1x1 conv + BN
  bbox_head  mmdet SSDHead(use_depthwise): per level depthwise 3x3 + BN + ReLU +
             pointwise 1x1 with bias; outputs permuted to NHWC and flattened

Run with Debian's python (torch 1.13): /usr/bin/python3 tests/ref_model.py [--check]
It writes tests/fixtures/model/:
  tiny.tns        params (torch default init, seeded; BN affine and running stats
                  perturbed so eval mode is not the identity), the batch, train-mode
                  pred, a random dLoss/dpred (grad), the expected gradients (every
                  parameter, the image, BN batch mean / unbiased var), eval-mode pred
  counts.json     parameters and MACs per part, layers and anchors of the full configs
                  (configs/ssd_mobilenet_fpn.json at 512 and 320, tiny.json at its size)
--check prints the numbers without writing. CI does not run this script.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tnsfile  # noqa: E402

ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "fixtures", "model")


# ---------------------------------------------------------------- model

def conv_bn(cin, cout, k, stride=1, groups=1, act=True, eps=1e-5):
    """mmcv ConvModule-like Sequential(conv, bn[, relu]) without conv bias."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps)]
    if act:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class DWSep(nn.Sequential):
    """TI's lite 3x3 conv: Sequential(Sequential(dw conv, bn, relu), Sequential(pw conv, bn))."""

    def __init__(self, cin, cout, stride, eps):
        super().__init__(conv_bn(cin, cin, 3, stride, groups=cin, eps=eps),
                         conv_bn(cin, cout, 1, eps=eps, act=False))


class ConvModule1x1(nn.Module):
    """mmcv ConvModule(k=1, norm BN, no act): names .conv and .bn."""

    def __init__(self, cin, cout, eps):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):
        return self.bn(self.conv(x))


class FPN(nn.Module):
    def __init__(self, in_channels, out_channels, start_level, num_outs, eps):
        super().__init__()
        self.start = start_level
        self.used = len(in_channels) - start_level
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList(ConvModule1x1(c, out_channels, eps) for c in in_channels[start_level:])
        fpn = [DWSep(out_channels, out_channels, 1, eps) for _ in range(self.used)]
        for i in range(num_outs - self.used):
            cin = in_channels[-1] if i == 0 else out_channels
            fpn.append(DWSep(cin, out_channels, 2, eps))
        self.fpn_convs = nn.ModuleList(fpn)

    def forward(self, inputs):
        lat = [lc(inputs[i + self.start]) for i, lc in enumerate(self.lateral_convs)]
        for i in range(self.used - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
        outs = [self.fpn_convs[i](lat[i]) for i in range(self.used)]
        outs.append(self.fpn_convs[self.used](inputs[-1]))
        for i in range(self.used + 1, self.num_outs):
            outs.append(self.fpn_convs[i](outs[-1]))
        return outs


class SSDLiteHead(nn.Module):
    """mmdet 2.x SSDHead(use_depthwise=True): convs.i = Sequential(ConvModule dw, Conv2d 1x1)."""

    def __init__(self, in_channels, anchors, num_classes, eps):
        super().__init__()
        self.C1 = num_classes + 1
        self.anchors = anchors

        def branch(c, out):
            dw = nn.Module()
            dw.conv = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
            dw.bn = nn.BatchNorm2d(c, eps=eps)
            return nn.Sequential(dw, nn.Conv2d(c, out, 1))

        self.cls_convs = nn.ModuleList(branch(c, a * self.C1) for c, a in zip(in_channels, anchors))
        self.reg_convs = nn.ModuleList(branch(c, a * 4) for c, a in zip(in_channels, anchors))

    @staticmethod
    def run(branch, x):
        dw, pw = branch[0], branch[1]
        return pw(F.relu(dw.bn(dw.conv(x))))

    def forward(self, feats):
        N = feats[0].shape[0]
        cls = [self.run(b, x).permute(0, 2, 3, 1).reshape(N, -1, self.C1) for b, x in zip(self.cls_convs, feats)]
        reg = [self.run(b, x).permute(0, 2, 3, 1).reshape(N, -1, 4) for b, x in zip(self.reg_convs, feats)]
        return torch.cat(cls, 1), torch.cat(reg, 1)


class Backbone(nn.Module):
    def __init__(self, width_mult, out_indices, eps):
        super().__init__()
        mv2 = torchvision.models.mobilenet_v2(width_mult=width_mult)
        self.features = nn.Sequential(*list(mv2.features.children())[:max(out_indices) + 1])
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = eps
        self.out_indices = out_indices

    def forward(self, x):
        outs = []
        for i, f in enumerate(self.features):
            x = f(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class Detector(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg["model"]
        eps = m.get("bn_eps", 1e-5)
        b, n, h = m["backbone"], m["neck"], m["head"]
        assert b["type"] == "MobileNetV2" and n["type"] == "FPN" and h["type"] == "SSDHead"
        assert n.get("add_extra_convs", "on_input") == "on_input" and not n.get("relu_before_extra_convs", False)
        assert n.get("use_depthwise", True) and h.get("use_depthwise", True)
        ratios = m.get("anchors", {}).get("ratios", [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2]])
        anchors = [2 + 2 * len(r) for r in ratios]
        self.backbone = Backbone(b.get("width_mult", 1.0), b.get("out_indices", [3, 6, 13, 17]), eps)
        self.neck = FPN(n["in_channels"], n["out_channels"], n.get("start_level", 0), n["num_outs"], eps)
        hin = h.get("in_channels", [n["out_channels"]] * n["num_outs"])
        self.bbox_head = SSDLiteHead(hin, anchors, m["num_classes"], eps)

    def forward(self, x):
        return self.bbox_head(self.neck(self.backbone(x)))


# ---------------------------------------------------------------- counting

def counts(model, size):
    """Parameters and conv MACs (output elements x kh*kw*cin/groups) per part, at size x size."""
    macs = {"backbone": 0, "neck": 0, "bbox_head": 0}
    convs = {"backbone": 0, "neck": 0, "bbox_head": 0}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            part = name.split(".")[0]

            def hook(mod, inp, out, part=part):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs[part] += out[0].numel() * k
                convs[part] += 1
            hooks.append(mod.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        cls, reg = model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    params = {p: sum(t.numel() for t in getattr(model, p).parameters()) for p in macs}
    return {"size": size, "params": params, "params_total": sum(params.values()),
            "macs": macs, "macs_total": sum(macs.values()), "convs": convs,
            "anchors": cls.shape[1], "cls": list(cls.shape), "reg": list(reg.shape),
            "tensors": len(state_tensors(model))}


def state_tensors(model):
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def npf(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


# ---------------------------------------------------------------- fixtures

def tiny_fixture(cfg_path, name, size, batch, seed=1):
    cfg = json.load(open(cfg_path))
    torch.manual_seed(seed)
    model = Detector(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(1 + 0.2 * (torch.rand(c, generator=g) - 0.5))
                mod.bias.copy_(0.1 * (torch.rand(c, generator=g) - 0.5))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
    params = {k: npf(v) for k, v in state_tensors(model).items()}
    image = torch.randn(batch, 3, size, size, generator=g)

    # eval mode first: a train-mode forward updates the running statistics
    model.eval()
    with torch.no_grad():
        ecls, ereg = model(image)

    # train mode: forward, backward of sum(pred * dpred), BN batch statistics
    model.train()
    stats = {}
    hooks = []
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            def hook(mod, inp, out, mname=mname):
                x = inp[0].detach().double()
                stats[mname + ".batch_mean"] = npf(x.mean((0, 2, 3)))
                stats[mname + ".batch_var"] = npf(x.var((0, 2, 3), unbiased=True))
            hooks.append(mod.register_forward_hook(hook))
    x = image.clone().requires_grad_(True)
    cls, reg = model(x)
    for h in hooks:
        h.remove()
    dcls = torch.randn(cls.shape, generator=g)
    dreg = torch.randn(reg.shape, generator=g)
    (cls * dcls).sum().add_((reg * dreg).sum()).backward()
    grads = {k: npf(p.grad) for k, p in model.named_parameters()}
    grads.update(stats)
    grads["image"] = npf(x.grad)

    meta = {"config": os.path.relpath(cfg_path, ROOT), "size": size}
    tnsfile.write(os.path.join(OUT, name + ".tns"), [
        ("params", params, {"step": 0, "config": cfg.get("name", name)}),
        ("batch", {"image": npf(image)}, {"size": size, "ids": [f"img{i}" for i in range(batch)]}),
        ("pred", {"cls": npf(cls), "reg": npf(reg)}, dict(meta, mode="train")),
        ("grad", {"cls": npf(dcls), "reg": npf(dreg)}, {"step": 0}),
        ("grads", grads, {"step": 0}),
        ("pred", {"cls": npf(ecls), "reg": npf(ereg)}, dict(meta, mode="eval")),
    ], level=19)
    return model


def bats_fixtures():
    """Records for tests/bats/forward.bats. grad_128: grads for the full config at 128x128
    (1538 anchors), a batch of 2 (constant values keep the file tiny); grad_128_bad: reg
    with 3 columns; bad_batch: a batch whose image is u8."""
    A, C1 = 1538, 21
    good = ("grad", {"cls": np.full((2, A, C1), 1e-3, np.float32),
                     "reg": np.full((2, A, 4), -1e-3, np.float32)}, {"step": 0})
    bad = ("grad", {"cls": np.full((2, A, C1), 1e-3, np.float32),
                    "reg": np.zeros((2, A, 3), np.float32)}, {"step": 0})
    tnsfile.write(os.path.join(OUT, "grad_128.tns"), [good, good], level=19)
    tnsfile.write(os.path.join(OUT, "grad_128_bad.tns"), [bad], level=19)
    tnsfile.write(os.path.join(OUT, "bad_batch.tns"),
                  [("batch", {"image": np.zeros((1, 3, 8, 8), np.uint8)}, {"size": 8})], level=19)


def main():
    check = "--check" in sys.argv
    torch.set_num_threads(2)
    full = os.path.join(ROOT, "configs", "ssd_mobilenet_fpn.json")
    tiny = os.path.join(OUT, "tiny.json")
    out = {}
    for label, path, size in (("ssd_mobilenet_fpn_512", full, 512), ("ssd_mobilenet_fpn_320", full, 320),
                              ("tiny_80", tiny, 80)):
        torch.manual_seed(0)
        c = counts(Detector(json.load(open(path))), size)
        c["config"] = os.path.relpath(path, ROOT)
        out[label] = c
        print(label, json.dumps(c))
        print(f"  params {c['params_total']:,}  GMACs " +
              "  ".join(f"{k} {v / 1e9:.4f}" for k, v in c["macs"].items()) + f"  total {c['macs_total'] / 1e9:.4f}")
    if check:
        return
    json.dump(out, open(os.path.join(OUT, "counts.json"), "w"), indent=1)
    tiny_fixture(tiny, "tiny", 80, 4)
    bats_fixtures()
    print("wrote", OUT)


if __name__ == "__main__":
    main()
