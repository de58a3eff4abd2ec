#!/usr/bin/python3
"""PyTorch reference of the models forward builds (lib/nn/model.h), and their fixtures.

The model is built here from the same JSON config as the C engine, by an independent
builder written from the descriptions in docs/models.md and /work/spec/arch10.md (the
MobileNetV2 backbone is torchvision's own, so its parameter names are torchvision's by
construction; the others are written here with mmdetection 2.x's module names):

  backbone   MobileNetV2: torchvision mobilenet_v2(width_mult).features[0..17], outputs
               after out_indices
             ResNet (mmdet, style pytorch, Bottleneck): conv1 7x7 s2 + bn1 + relu +
               maxpool 3x3 s2 p1, layer1..4 of Bottlenecks (1x1, 3x3 strided, 1x1 with
               expansion 4, downsample 1x1 + BN on each stage's first block), base_channels
             RegNet (mmdet): the widths of generate_regnet / get_stages_from_blocks /
               adjust_width_group, conv1 3x3 s2 + bn1 + relu, layer1..4 of ResNeXt
               Bottlenecks with expansion 1 and grouped 3x3 (group width g)
             SSDVGG (mmdet): VGG16 features (conv 3x3 with bias + relu, ceil-mode 2x2
               pools after stages 1..4), pool 3x3 s1, dilated fc6, fc7; outputs after
               features 22 and 34; base_channels
  neck       FPN (mmdet): start_level, num_outs, add_extra_convs on_input / on_lateral /
               on_output, relu_before_extra_convs, upsampling nearest to the lateral's
               size or bilinear scale_factor 2; laterals 1x1 conv + BN; 3x3 convs either
               TI "lite" (use_depthwise: grouped 3x3 with channels / group_size_dw
               groups + BN + ReLU + pointwise 1x1 + BN) or plain (3x3 conv + BN); no
               other activation
             SSDNeck (mmdet 2.x): L2Norm on the first input, extra levels 1x1 conv
               (bias) + relu, kxk strided conv (bias) + relu
  bbox_head  mmdet SSDHead, use_depthwise: per level grouped 3x3 (channels /
               group_size_dw groups) + BN + ReLU + pointwise 1x1 with bias; plain: one
               3x3 conv with bias per level. Outputs permuted to NHWC and flattened

Run with Debian's python (torch 1.13):
  /usr/bin/python3 tests/ref_model.py [--check] [--sanity] [WHAT ...]
WHAT selects what is (re)written, default all: counts, tiny, bats, tiny_resnet,
tiny_regnet, tiny_vgg (each fixture is seeded; rewriting one leaves the others' bytes
alone, and an unchanged generator rewrites identical bytes). It writes tests/fixtures/model/:
  tiny.tns          for tiny.json (reduced-width ssd_mobilenet_fpn_lite, 80x80, batch 4):
                    params (torch default init, seeded; BN affine and running stats
                    perturbed so eval mode is not the identity), the batch, train-mode
                    pred, a random dLoss/dpred (grad), the expected gradients (every
                    parameter, the image, BN batch mean / unbiased var), eval-mode pred
  tiny_resnet.tns   the same records for tiny_resnet.json (ResNet50 at base_channels 4,
                    plain FPN with bilinear top-down and on_output extras, plain head,
                    64x64, batch 4)
  tiny_regnet.tns   for tiny_regnet.json (a 4-stage grouped RegNetX, lite FPN and head
                    with group_size_dw > 1, bilinear, on_input extras, 64x64, batch 4)
  tiny_vgg.tns      for tiny_vgg.json (SSDVGG at base_channels 4, SSDNeck with L2Norm and
                    last_kernel_size 4, 100x100 so the ceil-mode pools matter, batch 2)
                    Beyond tiny.tns's init: the L2Norm scale is perturbed like a BN
                    weight, each Bottleneck's bn3 weight is scaled by BN3_SCALE, and the
                    BN-free VGG / SSDNeck convs get He-normal weights (see there: both
                    keep the float32 fixture far from test_model's tolerances)
  counts.json       parameters and MACs per part, layers and anchors of the full configs
                    (configs/ssd_mobilenet_fpn.json, ssd_regnet_fpn.json,
                    ssd_resnet_fpn.json, ssd512_vgg16.json at 512 and 320; the tiny
                    configs at their sizes)
  grad_128*.tns, bad_batch.tns   records for tests/bats/forward.bats
--check prints the counts without writing; --sanity compares the builders' names and
shapes with torchvision's resnet50 / vgg16 / regnet_x_800mf, prints the RegNet widths and
the parameter names, and recomputes each fixture in float64 (f64_check).
CI does not run this script.
"""
import json
import math
import os
import re
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


def dw_groups(channels, group_size_dw, what):
    """TI's ConvDWSep grouping: channels / group_size_dw groups (1 = depthwise)."""
    if group_size_dw < 1 or channels % group_size_dw:
        raise ValueError(f"{what}: group_size_dw {group_size_dw} does not divide {channels} channels")
    return channels // group_size_dw


class DWSep(nn.Sequential):
    """TI's lite 3x3 conv: Sequential(Sequential(grouped 3x3 conv, bn, relu), Sequential(pw conv, bn)),
    channels / group_size_dw groups in the 3x3 (group_size_dw 1 = depthwise)."""

    def __init__(self, cin, cout, stride, eps, group_size_dw=1):
        super().__init__(conv_bn(cin, cin, 3, stride, groups=dw_groups(cin, group_size_dw, "lite FPN conv"), eps=eps),
                         conv_bn(cin, cout, 1, eps=eps, act=False))


class ConvModule(nn.Module):
    """mmcv ConvModule(k, stride, padding (k-1)/2, norm BN, no act): names .conv and .bn."""

    def __init__(self, cin, cout, eps, k=1, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):
        return self.bn(self.conv(x))


class FPN(nn.Module):
    """mmdet FPN. lite: 3x3 convs are TI's DWSep (names .i.0.0, .i.0.1, .i.1.0, .i.1.1);
    plain: ConvModule 3x3 + BN (.i.conv, .i.bn). Extra levels: 3x3 stride 2, the first on
    the backbone's last output (on_input), the last lateral (on_lateral) or the last FPN
    output (on_output), the next ones on the previous output (relu'd first if
    relu_before_extra_convs, as mmdet: not before the first one)."""

    def __init__(self, in_channels, out_channels, start_level, num_outs, eps, extra="on_input",
                 relu_before_extra=False, upsample=None, lite=True, group_size_dw=1):
        super().__init__()
        if extra is True:
            extra = "on_input"
        if extra not in ("on_input", "on_lateral", "on_output"):
            raise ValueError(f"add_extra_convs {extra!r} is not supported")
        self.start = start_level
        self.used = len(in_channels) - start_level
        self.num_outs = num_outs
        assert num_outs >= self.used
        self.extra = extra
        self.relu_before_extra = relu_before_extra
        self.upsample = dict(upsample or {"mode": "nearest"})
        assert self.upsample.get("mode", "nearest") in ("nearest", "bilinear")

        def conv3x3(cin, stride):
            if lite:
                return DWSep(cin, out_channels, stride, eps, group_size_dw)
            return ConvModule(cin, out_channels, eps, 3, stride)

        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, eps) for c in in_channels[start_level:])
        fpn = [conv3x3(out_channels, 1) for _ in range(self.used)]
        for i in range(num_outs - self.used):
            cin = in_channels[-1] if i == 0 and extra == "on_input" else out_channels
            fpn.append(conv3x3(cin, 2))
        self.fpn_convs = nn.ModuleList(fpn)

    def up(self, x, like):
        mode = self.upsample.get("mode", "nearest")
        kw = {"align_corners": False} if mode == "bilinear" else {}
        if "scale_factor" in self.upsample:
            y = F.interpolate(x, scale_factor=self.upsample["scale_factor"], mode=mode, **kw)
            if y.shape[2:] != like.shape[2:]:
                raise ValueError(f"FPN upsample: {tuple(x.shape[2:])} x {self.upsample['scale_factor']} "
                                 f"gives {tuple(y.shape[2:])}, the lateral is {tuple(like.shape[2:])}")
            return y
        return F.interpolate(x, size=like.shape[2:], mode=mode, **kw)

    def forward(self, inputs):
        lat = [lc(inputs[i + self.start]) for i, lc in enumerate(self.lateral_convs)]
        for i in range(self.used - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + self.up(lat[i], lat[i - 1])
        outs = [self.fpn_convs[i](lat[i]) for i in range(self.used)]
        if self.num_outs > self.used:
            src = {"on_input": inputs[-1], "on_lateral": lat[-1], "on_output": outs[-1]}[self.extra]
            outs.append(self.fpn_convs[self.used](src))
            for i in range(self.used + 1, self.num_outs):
                outs.append(self.fpn_convs[i](F.relu(outs[-1]) if self.relu_before_extra else outs[-1]))
        return outs


class L2Norm(nn.Module):
    """mmdet 2.x L2Norm: weight[c] * x / (sqrt(sum_c x^2) + 1e-10), weight initialised to scale."""

    def __init__(self, channels, scale):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.full((channels,), self.scale))

    def forward(self, x):
        return self.weight[None, :, None, None] * x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


class ConvReLU(nn.Module):
    """mmcv ConvModule without norm (so the conv has a bias) + ReLU: name .conv."""

    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding)

    def forward(self, x):
        return F.relu(self.conv(x))


class SSDNeck(nn.Module):
    """mmdet 2.x SSDNeck: L2Norm on the first input, then per extra level
    Sequential(1x1 conv -> oc/2 + relu, kxk strided conv -> oc + relu) on the previous output."""

    def __init__(self, in_channels, out_channels, level_strides, level_paddings, l2_norm_scale=20.0,
                 last_kernel_size=3):
        super().__init__()
        n_in, E = len(in_channels), len(out_channels) - len(in_channels)
        assert E >= 1 and list(out_channels[:n_in]) == list(in_channels)
        assert len(level_strides) == E and len(level_paddings) == E
        if l2_norm_scale:
            self.l2_norm = L2Norm(in_channels[0], l2_norm_scale)
        self.extra_layers = nn.ModuleList()
        for e in range(E):
            cin, oc = out_channels[n_in - 1 + e], out_channels[n_in + e]
            k = last_kernel_size if e == E - 1 else 3
            self.extra_layers.append(nn.Sequential(
                ConvReLU(cin, oc // 2, 1),
                ConvReLU(oc // 2, oc, k, level_strides[e], level_paddings[e])))

    def forward(self, inputs):
        outs = list(inputs)
        if hasattr(self, "l2_norm"):
            outs[0] = self.l2_norm(outs[0])
        feat = outs[-1]
        for layer in self.extra_layers:
            feat = layer(feat)
            outs.append(feat)
        return outs


class SSDLiteHead(nn.Module):
    """mmdet 2.x SSDHead(use_depthwise=True): convs.i = Sequential(ConvModule dw, Conv2d 1x1);
    the 3x3 has channels / group_size_dw groups."""

    def __init__(self, in_channels, anchors, num_classes, eps, group_size_dw=1):
        super().__init__()
        self.C1 = num_classes + 1
        self.anchors = anchors

        def branch(c, out):
            dw = nn.Module()
            dw.conv = nn.Conv2d(c, c, 3, 1, 1, groups=dw_groups(c, group_size_dw, "lite head"), bias=False)
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


class SSDHead(nn.Module):
    """mmdet 2.x SSDHead(use_depthwise=False): convs.i = Sequential(Conv2d 3x3 p1 with bias)."""

    def __init__(self, in_channels, anchors, num_classes):
        super().__init__()
        self.C1 = num_classes + 1
        self.cls_convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, a * self.C1, 3, 1, 1))
                                       for c, a in zip(in_channels, anchors))
        self.reg_convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, a * 4, 3, 1, 1))
                                       for c, a in zip(in_channels, anchors))

    def forward(self, feats):
        N = feats[0].shape[0]
        cls = [b(x).permute(0, 2, 3, 1).reshape(N, -1, self.C1) for b, x in zip(self.cls_convs, feats)]
        reg = [b(x).permute(0, 2, 3, 1).reshape(N, -1, 4) for b, x in zip(self.reg_convs, feats)]
        return torch.cat(cls, 1), torch.cat(reg, 1)


def tapped(layers, x, indices):
    """x through the Sequential layers, keeping the outputs of the layers at indices."""
    outs = []
    for i, f in enumerate(layers):
        x = f(x)
        if i in indices:
            outs.append(x)
    return outs


class MobileNetV2(nn.Module):
    def __init__(self, width_mult, out_indices, eps):
        super().__init__()
        mv2 = torchvision.models.mobilenet_v2(width_mult=width_mult)
        self.features = nn.Sequential(*list(mv2.features.children())[:max(out_indices) + 1])
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = eps
        self.out_indices = out_indices
        self.out_channels = [self.features[i].out_channels if hasattr(self.features[i], "out_channels")
                             else self.features[i][0].out_channels for i in out_indices]

    def forward(self, x):
        return tapped(self.features, x, self.out_indices)


class Bottleneck(nn.Module):
    """mmdet Bottleneck, style pytorch (ResNet: groups 1, expansion 4; RegNet: ResNeXt's with
    expansion 1): conv1 1x1 + bn1 + relu, conv2 3x3 (stride, groups) + bn2 + relu, conv3 1x1 +
    bn3, + shortcut (downsample = Sequential(1x1 conv stride, BN) or identity), relu."""

    def __init__(self, cin, width, cout, stride, groups, downsample, eps):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=eps)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=eps))
                           if downsample else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """mmdet ResNet (Bottleneck depths only), style pytorch; every stage is built (as mmdet),
    the outputs are the stages of out_indices."""
    BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}

    def __init__(self, depth, base, out_indices, eps):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base, eps=eps)
        cin = base
        self.out_channels = []
        for i, n in enumerate(self.BLOCKS[depth]):
            planes, s = base * 2 ** i, 1 if i == 0 else 2
            out = 4 * planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*[
                Bottleneck(cin if j == 0 else out, planes, out, s if j == 0 else 1, 1, j == 0, eps)
                for j in range(n)]))
            cin = out
            self.out_channels.append(out)
        self.out_indices = out_indices
        self.out_channels = [self.out_channels[i] for i in out_indices]

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


REGNET_ARCHS = {  # mmdet RegNet.arch_settings
    "regnetx_400mf": dict(w0=24, wa=24.48, wm=2.54, group_w=16, depth=22, bot_mul=1.0),
    "regnetx_800mf": dict(w0=56, wa=35.73, wm=2.28, group_w=16, depth=16, bot_mul=1.0),
    "regnetx_1.6gf": dict(w0=80, wa=34.01, wm=2.25, group_w=24, depth=18, bot_mul=1.0),
    "regnetx_3.2gf": dict(w0=88, wa=26.31, wm=2.25, group_w=48, depth=25, bot_mul=1.0),
}


def regnet_stages(arch):
    """mmdet RegNet's widths: generate_regnet (divisor 8), get_stages_from_blocks,
    adjust_width_group. Returns per stage (width w, blocks, bottleneck width bw, groups, group width g)."""
    if isinstance(arch, str):
        arch = REGNET_ARCHS[arch]
    w0, wa, wm, depth, group_w, bot_mul = (arch[k] for k in ("w0", "wa", "wm", "depth", "group_w", "bot_mul"))
    assert wa >= 0 and w0 > 0 and wm > 1 and w0 % 8 == 0
    cont = np.arange(depth) * wa + w0
    ks = np.round(np.log(cont / w0) / np.log(wm))
    widths = (np.round(np.divide(w0 * np.power(wm, ks), 8)) * 8).astype(int).tolist()
    sw, blocks = [], []  # runs of equal consecutive widths
    for w in widths:
        if sw and sw[-1] == w:
            blocks[-1] += 1
        else:
            sw.append(w)
            blocks.append(1)
    stages = []
    for w, n in zip(sw, blocks):
        bw = int(w * bot_mul)
        g = min(group_w, bw)
        bw = int(round(bw / g) * g)
        w = int(bw / bot_mul)
        # mmdet builds the stage as: width = int(round(w * bot_mul)), groups = width // g, and
        # the ResNeXt Bottleneck's conv width floor(w * (g / w)) * groups (w when groups == 1)
        groups = int(round(w * bot_mul)) // g
        mm_width = w if groups == 1 else math.floor(w * (g / w)) * groups
        if mm_width != bw or bw % g:
            raise ValueError(f"RegNet stage width {w}: bottleneck width {bw} (spec) but mmdet builds {mm_width}")
        stages.append((w, n, bw, groups, g))
    return stages


class RegNet(nn.Module):
    """mmdet RegNet: conv1 3x3 s2 + bn1 + relu (no pool), layer1..4 of Bottlenecks with
    expansion 1, grouped 3x3 (bw / g groups), stride 2 and a downsample on every stage's first block."""

    def __init__(self, arch, stem_channels, out_indices, eps):
        super().__init__()
        self.stages = regnet_stages(arch)
        assert len(self.stages) == 4, f"RegNet: {len(self.stages)} stages, mmdet's strides need 4"
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, eps=eps)
        cin = stem_channels
        for i, (w, n, bw, groups, g) in enumerate(self.stages):
            self.add_module(f"layer{i + 1}", nn.Sequential(*[
                Bottleneck(cin if j == 0 else w, bw, w, 2 if j == 0 else 1, groups, j == 0, eps)
                for j in range(n)]))
            cin = w
        self.out_indices = out_indices
        self.out_channels = [self.stages[i][0] for i in out_indices]

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for i in range(len(self.stages)):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class SSDVGG(nn.Module):
    """mmdet SSDVGG(depth 16, with_last_pool False): features.N as torchvision's vgg16.features
    (conv 3x3 p1 with bias + relu, MaxPool2d(2, 2, ceil_mode) after stages 1..4), then
    30 MaxPool2d(3, 1, 1), 31 conv 3x3 p6 d6 (fc6), 32 relu, 33 conv 1x1 (fc7), 34 relu."""
    OUT = (22, 34)

    def __init__(self, base, ceil_mode):
        super().__init__()
        layers, cin = [], 3
        for i, (n, m) in enumerate(zip([2, 2, 3, 3, 3], [1, 2, 4, 8, 8])):
            for _ in range(n):
                layers += [nn.Conv2d(cin, m * base, 3, padding=1), nn.ReLU()]
                cin = m * base
            if i < 4:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(8 * base, 16 * base, 3, padding=6, dilation=6), nn.ReLU(),
                   nn.Conv2d(16 * base, 16 * base, 1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        assert len(self.features) == 35
        self.out_channels = [8 * base, 16 * base]

    def forward(self, x):
        return tapped(self.features, x, self.OUT)


def build_backbone(b, eps):
    t = b["type"]
    if t == "MobileNetV2":
        return MobileNetV2(b.get("width_mult", 1.0), b.get("out_indices", [3, 6, 13, 17]), eps)
    if t == "ResNet":
        return ResNet(b["depth"], b.get("base_channels", 64), b.get("out_indices", [0, 1, 2, 3]), eps)
    if t == "RegNet":
        return RegNet(b["arch"], b.get("stem_channels", 32), b.get("out_indices", [0, 1, 2, 3]), eps)
    if t == "SSDVGG":
        assert b.get("depth", 16) == 16 and not b.get("with_last_pool", False)
        assert list(b.get("out_indices", [3, 4])) == [3, 4]
        assert list(b.get("out_feature_indices", [22, 34])) == [22, 34]
        return SSDVGG(b.get("base_channels", 64), b.get("ceil_mode", True))
    raise ValueError(f"backbone type {t!r}")


class Detector(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg["model"]
        eps = m.get("bn_eps", 1e-5)
        b, n, h = m["backbone"], m["neck"], m["head"]
        assert h["type"] == "SSDHead"
        ratios = m.get("anchors", {}).get("ratios", [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2]])
        anchors = [2 + 2 * len(r) for r in ratios]
        self.backbone = build_backbone(b, eps)
        if list(n["in_channels"]) != list(self.backbone.out_channels):
            raise ValueError(f"neck.in_channels {n['in_channels']}, the backbone gives {self.backbone.out_channels}")
        if n["type"] == "FPN":
            self.neck = FPN(n["in_channels"], n["out_channels"], n.get("start_level", 0), n["num_outs"], eps,
                            n.get("add_extra_convs", "on_input"), n.get("relu_before_extra_convs", False),
                            n.get("upsample"), n.get("use_depthwise", True), n.get("group_size_dw", 1))
            neck_out = [n["out_channels"]] * n["num_outs"]
        elif n["type"] == "SSDNeck":
            self.neck = SSDNeck(n["in_channels"], n["out_channels"], n["level_strides"], n["level_paddings"],
                                n.get("l2_norm_scale", 20.0), n.get("last_kernel_size", 3))
            neck_out = list(n["out_channels"])
        else:
            raise ValueError(f"neck type {n['type']!r}")
        hin = h.get("in_channels", neck_out)
        assert list(hin) == neck_out and len(anchors) == len(neck_out)
        if h.get("use_depthwise", True):
            self.bbox_head = SSDLiteHead(hin, anchors, m["num_classes"], eps, h.get("group_size_dw", 1))
        else:
            self.bbox_head = SSDHead(hin, anchors, m["num_classes"])

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

# A train-mode BN net at init is chaotic: float32 rounding grows with depth (Yang et al.
# 2019), and with ResNet50's 16 residual branches at full strength the fixture's own
# outputs and BN statistics were 7e-5 away from float64, at test_model's 1e-4. The last BN
# of every Bottleneck (ResNet, RegNet) is scaled down (as mmdet's zero_init_residual does
# fully), which brings the float32 error to ~1e-6 (f64_check, --sanity)
BN3_SCALE = 0.25


def tiny_fixture(cfg_path, name, size, batch, seed=1):
    cfg = json.load(open(cfg_path))
    records, model = fixture_records(cfg, os.path.relpath(cfg_path, ROOT), name, size, batch, seed)
    tnsfile.write(os.path.join(OUT, name + ".tns"), records, level=19)
    return model


def fixture_records(cfg, cfg_rel, name, size, batch, seed=1):
    """The records of a parity fixture for cfg (the model seeded by seed), and the model."""
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
            elif isinstance(mod, L2Norm):
                mod.weight.copy_(mod.scale * (1 + 0.2 * (torch.rand(mod.weight.numel(), generator=g) - 0.5)))
        for mod in model.modules():
            if isinstance(mod, Bottleneck):
                mod.bn3.weight.mul_(BN3_SCALE)
        # without BN, torch's default conv init shrinks the activations about 2x per conv+relu
        # (the VGG's fc7 would be 1e-2 of the L2-normed conv4_3 and hide in the outputs):
        # He-normal weights keep every level at scale, as mmdet's Kaiming / Xavier init does
        for part in (model.backbone, model.neck):
            if isinstance(part, (SSDVGG, SSDNeck)):
                for c in part.modules():
                    if isinstance(c, nn.Conv2d):
                        fan_in = c.weight[0].numel()
                        c.weight.copy_(torch.randn(c.weight.shape, generator=g) * math.sqrt(2 / fan_in))
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
    for k, v in list(grads.items()) + [("cls", npf(cls)), ("reg", npf(reg)), ("eval cls", npf(ecls))]:
        assert np.isfinite(v).all(), f"{name}: {k} is not finite"

    meta = {"config": cfg_rel, "size": size}
    return [
        ("params", params, {"step": 0, "config": cfg.get("name", name)}),
        ("batch", {"image": npf(image)}, {"size": size, "ids": [f"img{i}" for i in range(batch)]}),
        ("pred", {"cls": npf(cls), "reg": npf(reg)}, dict(meta, mode="train")),
        ("grad", {"cls": npf(dcls), "reg": npf(dreg)}, {"step": 0}),
        ("grads", grads, {"step": 0}),
        ("pred", {"cls": npf(ecls), "reg": npf(ereg)}, dict(meta, mode="eval")),
    ], model


def f64_check(cfg, records):
    """The fixture's float32 numbers against the same computation in float64, with
    test_model's metric (max |diff| / max |t| per tensor; a bias floored by its weight's
    gradient scale): the worst (rel, name) of the outputs, parameter gradients and BN
    batch statistics. A fixture is only useful where these are well below the C test's
    tolerances (1e-4 outputs and statistics, 1e-3 gradients)."""
    params, image = records[0][1], torch.from_numpy(records[1][1]["image"]).double()
    model = Detector(cfg).double()
    model.load_state_dict({k: torch.from_numpy(v).double() for k, v in params.items()}, strict=False)
    model.eval()
    with torch.no_grad():
        ecls, ereg = model(image)
    model.train()
    stats, hooks = {}, []
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            def hook(mod, inp, out, mname=mname):
                stats[mname + ".batch_mean"] = inp[0].detach().mean((0, 2, 3))
                stats[mname + ".batch_var"] = inp[0].detach().var((0, 2, 3), unbiased=True)
            hooks.append(mod.register_forward_hook(hook))
    x = image.clone().requires_grad_(True)
    cls, reg = model(x)
    for h in hooks:
        h.remove()
    d = records[3][1]
    (cls * torch.from_numpy(d["cls"]).double()).sum().add_((reg * torch.from_numpy(d["reg"]).double()).sum()).backward()
    g = {k: p.grad for k, p in model.named_parameters()}
    g.update(stats)
    g["image"] = x.grad

    def rel(c, t, floor=0.0):
        c = c.detach().numpy()
        return float(np.abs(c - t).max() / max(np.abs(t).max(), floor, 1e-12))
    ref = records[4][1]
    worst = {"outputs": (0, ""), "grads": (0, ""), "stats": (0, "")}

    def upd(kind, r, k):
        if r > worst[kind][0]:
            worst[kind] = (r, k)
    for k, t in ref.items():
        floor = float(np.abs(ref[k[:-5] + ".weight"]).max()) if k.endswith(".bias") and k[:-5] + ".weight" in ref else 0
        upd("stats" if ".batch_" in k else "grads", rel(g[k], t, floor), k)
    for k, c, r in (("train cls", cls, records[2][1]["cls"]), ("train reg", reg, records[2][1]["reg"]),
                    ("eval cls", ecls, records[5][1]["cls"]), ("eval reg", ereg, records[5][1]["reg"])):
        upd("outputs", rel(c, r), k)
    return worst


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


# (name, config, size, batch): the parity fixtures, each written to OUT/name.tns
FIXTURES = (("tiny", os.path.join(OUT, "tiny.json"), 80, 4),
            ("tiny_resnet", os.path.join(OUT, "tiny_resnet.json"), 64, 4),
            ("tiny_regnet", os.path.join(OUT, "tiny_regnet.json"), 64, 4),
            ("tiny_vgg", os.path.join(OUT, "tiny_vgg.json"), 100, 2))


def count_cases():
    """(label, config, size) of counts.json, in its order."""
    cases = []
    for name in ("ssd_mobilenet_fpn", "ssd_regnet_fpn", "ssd_resnet_fpn", "ssd512_vgg16"):
        path = os.path.join(ROOT, "configs", name + ".json")
        cases += [(f"{name}_512", path, 512), (f"{name}_320", path, 320)]
    # tiny_80 stays third, where it was
    cases.insert(2, ("tiny_80", FIXTURES[0][1], 80))
    cases += [(f"{n}_{s}", p, s) for n, p, s, _ in FIXTURES[1:]]
    return cases


SEED_GMACS = {"ssd_mobilenet_fpn_512": 2.21, "ssd_regnet_fpn_512": 5.64, "ssd_resnet_fpn_512": 27.1,
              "ssd512_vgg16_512": 90.39}


def all_counts():
    out = {}
    for label, path, size in count_cases():
        torch.manual_seed(0)
        cfg = json.load(open(path))
        c = counts(Detector(cfg), size)
        c["config"] = os.path.relpath(path, ROOT)
        out[label] = c
        print(label, json.dumps(c))
        seed = f"  (seed {SEED_GMACS[label]}: {100 * (c['macs_total'] / 1e9 / SEED_GMACS[label] - 1):+.2f}%)" \
            if label in SEED_GMACS else ""
        print(f"  params {c['params_total']:,} (" + ", ".join(f"{k} {v:,}" for k, v in c["params"].items()) +
              ")  GMACs " + "  ".join(f"{k} {v / 1e9:.4f}" for k, v in c["macs"].items()) +
              f"  total {c['macs_total'] / 1e9:.4f}{seed}")
        if label.startswith("ssd_regnet_fpn"):
            cfg["model"]["neck"]["group_size_dw"] = cfg["model"]["head"]["group_size_dw"] = 1
            d = counts(Detector(cfg), size)
            print(f"  with group_size_dw 1 (depthwise): params {d['params_total']:,}  GMACs " +
                  "  ".join(f"{k} {v / 1e9:.4f}" for k, v in d["macs"].items()) +
                  f"  total {d['macs_total'] / 1e9:.4f}")
    return out


# ---------------------------------------------------------------- sanity checks

def key_patterns(model):
    """state_dict keys with their indices collapsed, in order, with counts."""
    pats = {}
    for k in state_tensors(model):
        p = re.sub(r"(layer\d|_convs|extra_layers)\.\d+\.", r"\1.i.", k)
        pats[p] = pats.get(p, 0) + 1
    return pats


def sanity():
    torch.manual_seed(0)
    # ResNet50 = torchvision's resnet50 without fc, under "backbone."
    ours = {k[len("backbone."):]: v.shape for k, v in
            state_tensors(Detector(json.load(open(os.path.join(ROOT, "configs", "ssd_resnet_fpn.json"))))).items()
            if k.startswith("backbone.")}
    tv = {k: v.shape for k, v in torchvision.models.resnet50().state_dict().items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert ours == tv, set(ours) ^ set(tv)
    print(f"ResNet50: {len(ours)} backbone tensors = torchvision resnet50 (no fc), names and shapes")
    # SSDVGG: features.N (N <= 28) = torchvision's vgg16().features
    vgg = Detector(json.load(open(os.path.join(ROOT, "configs", "ssd512_vgg16.json"))))
    ours = {k[len("backbone."):]: v.shape for k, v in state_tensors(vgg).items() if k.startswith("backbone.")}
    tv = {"features." + k: v.shape for k, v in torchvision.models.vgg16().features.state_dict().items()}
    assert {k: v for k, v in ours.items() if int(k.split(".")[1]) <= 28} == tv
    print(f"SSDVGG: features 0..28 = torchvision vgg16.features ({len(tv)} tensors); then "
          + ", ".join(f"{k} {tuple(v)}" for k, v in ours.items() if int(k.split(".")[1]) > 28))
    # RegNet widths and torchvision's regnet_x_800mf trunk
    for a in REGNET_ARCHS:
        st = regnet_stages(a)
        print(f"{a}: widths {[s[0] for s in st]} blocks {[s[1] for s in st]} groups {[s[3] for s in st]} "
              f"group width {[s[4] for s in st]}")
    st = regnet_stages("regnetx_800mf")
    assert [s[0] for s in st] == [64, 128, 288, 672] and [s[1] for s in st] == [1, 3, 7, 5]
    assert all(s[4] == 16 for s in st)
    rn = Detector(json.load(open(os.path.join(ROOT, "configs", "ssd_regnet_fpn.json"))))
    ours = {k[len("backbone."):]: v.shape for k, v in state_tensors(rn).items() if k.startswith("backbone.")}
    tvm = torchvision.models.regnet_x_800mf()
    tv = {k: v.shape for k, v in tvm.state_dict().items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}

    def tv_name(k):  # torchvision's RegNet names -> mmdet's
        k = k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        m = re.match(r"trunk_output\.block(\d+)\.block\d+-(\d+)\.(.*)", k)
        if m:
            rest = {"proj.0": "downsample.0", "proj.1": "downsample.1", "f.a.0": "conv1", "f.a.1": "bn1",
                    "f.b.0": "conv2", "f.b.1": "bn2", "f.c.0": "conv3", "f.c.1": "bn3"}
            head, leaf = m.group(3).rsplit(".", 1)
            k = f"layer{m.group(1)}.{m.group(2)}.{rest[head]}.{leaf}"
        return k
    tvr = {tv_name(k): v for k, v in tv.items()}
    assert tvr == ours, set(tvr) ^ set(ours)
    n_ours = sum(p.numel() for p in rn.backbone.parameters())
    n_tv = sum(p.numel() for n, p in tvm.named_parameters() if not n.startswith("fc."))
    print(f"regnetx_800mf: backbone {n_ours:,} parameters, torchvision regnet_x_800mf without fc {n_tv:,} "
          f"(all {len(ours)} tensors map by name with equal shapes)")
    # the parameter names per config, indices collapsed
    for name in ("ssd_regnet_fpn", "ssd_resnet_fpn", "ssd512_vgg16"):
        m = Detector(json.load(open(os.path.join(ROOT, "configs", name + ".json"))))
        print(f"{name}: {len(state_tensors(m))} tensors")
        for p, c in key_patterns(m).items():
            if not p.startswith("backbone.layer") or p.endswith(".i.conv2.weight") or "downsample.0" in p:
                print(f"  {c:4d} {p}")
    for _, path, _, _ in FIXTURES[1:]:
        m = Detector(json.load(open(path)))
        print(os.path.basename(path), f"{len(state_tensors(m))} tensors")
        for p, c in key_patterns(m).items():
            if not p.startswith("backbone.layer") or p.endswith(".i.conv2.weight") or "downsample.0" in p:
                print(f"  {c:4d} {p}")
    # the fixtures as written, against float64
    for name, path, _, _ in FIXTURES:
        tns = os.path.join(OUT, name + ".tns")
        if os.path.exists(tns):
            w = f64_check(json.load(open(path)), tnsfile.read(tns))
            print(f"{name}.tns vs float64: " + "  ".join(f"{k} {r:.1e} ({n})" for k, (r, n) in w.items()))


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check, sane = "--check" in sys.argv, "--sanity" in sys.argv
    what = set(args) or {"counts", "bats"} | {n for n, _, _, _ in FIXTURES}
    unknown = what - ({"counts", "bats"} | {n for n, _, _, _ in FIXTURES})
    if unknown:
        sys.exit(f"ref_model.py: unknown {sorted(unknown)}")
    torch.set_num_threads(2)
    if sane:
        sanity()
        return
    if "counts" in what or check:
        out = all_counts()
        if check:
            return
        json.dump(out, open(os.path.join(OUT, "counts.json"), "w"), indent=1)
    for name, path, size, batch in FIXTURES:
        if name in what:
            tiny_fixture(path, name, size, batch)
            print("wrote", os.path.join(OUT, name + ".tns"), os.path.getsize(os.path.join(OUT, name + ".tns")))
    if "bats" in what:
        bats_fixtures()
    print("wrote", OUT)


if __name__ == "__main__":
    main()
