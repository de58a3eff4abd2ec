#!/usr/bin/python3
"""Reference fixtures for the layer kernels (lib/kernels/layers.h), from PyTorch.

For each case torch builds the layer (seeded), runs forward and backward with a
random output gradient, and one .tns file in tests/fixtures/layers/ holds one record
(kind "layer") with the input(s), parameters, output, output gradient and the
gradients of input(s) and parameters; meta carries the op and its parameters.
Tensor names: x (input), w, b (weight, bias), y (output), dy, dx, dw, db; ops with
more inputs or extra state name them (x0.., a/b, running_mean...).

Run with Debian's python (torch 1.13): /usr/bin/python3 tests/gen_layer_fixtures.py
CI does not run this; it runs tests/unit/test_layers.c on the committed files.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "layers")
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def npf(t):
    return t.detach().cpu().numpy().astype(np.float32)


def save(name, tensors, meta):
    meta = dict(meta, case=name)
    tnsfile.write(os.path.join(OUT, name + ".tns"),
                  [("layer", {k: npf(v) if torch.is_tensor(v) else v for k, v in tensors.items()}, meta)],
                  level=19)


def conv(name, n, c, h, w, k, kernel, stride=1, pad=0, dil=1, groups=1, bias=True, seed=0):
    torch.manual_seed(seed)
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    kernel, stride, pad, dil = pair(kernel), pair(stride), pair(pad), pair(dil)
    m = torch.nn.Conv2d(c, k, kernel, stride, pad, dil, groups, bias=bias)
    x = torch.randn(n, c, h, w, requires_grad=True)
    y = m(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    t = {"x": x, "w": m.weight, "y": y, "dy": dy, "dx": x.grad, "dw": m.weight.grad}
    if bias:
        t["b"], t["db"] = m.bias, m.bias.grad
    save(name, t, {"op": "conv2d", "kh": kernel[0], "kw": kernel[1], "sh": stride[0], "sw": stride[1],
                   "ph": pad[0], "pw": pad[1], "dh": dil[0], "dw": dil[1], "groups": groups,
                   "bias": int(bias)})


def batchnorm(name, n, c, h, w, train, eps=1e-5, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.BatchNorm2d(c, eps=eps, momentum=0.1)
    with torch.no_grad():
        m.weight.copy_(torch.rand(c) + 0.5)
        m.bias.copy_(torch.randn(c))
        m.running_mean.copy_(torch.randn(c) * 0.5)
        m.running_var.copy_(torch.rand(c) + 0.5)
    rm0, rv0 = m.running_mean.clone(), m.running_var.clone()
    m.train(train)
    x = (torch.randn(n, c, h, w) * 2 + 1).requires_grad_(True)
    y = m(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    t = {"x": x, "w": m.weight, "b": m.bias, "running_mean": rm0, "running_var": rv0,
         "y": y, "dy": dy, "dx": x.grad, "dw": m.weight.grad, "db": m.bias.grad}
    if train:
        mean = x.detach().mean((0, 2, 3))
        var = x.detach().var((0, 2, 3), unbiased=True)
        # what the optimiser owner will do with them, as torch just did
        assert torch.allclose(m.running_mean, 0.9 * rm0 + 0.1 * mean, atol=1e-6)
        assert torch.allclose(m.running_var, 0.9 * rv0 + 0.1 * var, atol=1e-5)
        t["batch_mean"], t["batch_var"] = mean, var
    save(name, t, {"op": "batchnorm2d", "train": int(train), "eps": eps})


def act(name, op, x, seed=0):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    y = F.relu(x) if op == "relu" else F.relu6(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    save(name, {"x": x, "y": y, "dy": dy, "dx": x.grad}, {"op": op})


def add(name, seed=0):
    torch.manual_seed(seed)
    a = torch.randn(2, 3, 5, 7, requires_grad=True)
    b = torch.randn(2, 3, 5, 7, requires_grad=True)
    y = a + b
    dy = torch.randn_like(y)
    y.backward(dy)
    save(name, {"a": a, "b": b, "y": y, "dy": dy, "da": a.grad, "db": b.grad}, {"op": "add"})


def concat(name, chans, n=2, h=4, w=5, seed=0):
    torch.manual_seed(seed)
    xs = [torch.randn(n, c, h, w, requires_grad=True) for c in chans]
    y = torch.cat(xs, 1)
    dy = torch.randn_like(y)
    y.backward(dy)
    t = {}
    for i, x in enumerate(xs):
        t[f"x{i}"], t[f"dx{i}"] = x, x.grad
    t["y"], t["dy"] = y, dy
    save(name, t, {"op": "concat", "ninp": len(xs)})


def upsample(name, n, c, h, w, size=None, scale=None, mode="nearest", seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, c, h, w, requires_grad=True)
    corners = {"align_corners": False} if mode == "bilinear" else {}
    if size is not None:
        y = F.interpolate(x, size=size, mode=mode, **corners)
    else:
        y = F.interpolate(x, scale_factor=scale, mode=mode, **corners)
    dy = torch.randn_like(y)
    y.backward(dy)
    save(name, {"x": x, "y": y, "dy": dy, "dx": x.grad},
         {"op": "upsample_" + mode, "oh": y.shape[2], "ow": y.shape[3]})


def maxpool(name, n, c, h, w, kernel, stride, pad=0, ceil=False, ties=False, seed=0):
    torch.manual_seed(seed)
    if ties:  # few distinct values: the first maximum in window order must win
        x = torch.randint(-2, 3, (n, c, h, w)).float()
    else:
        x = torch.randn(n, c, h, w)
    x.requires_grad_(True)
    y = F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)
    dy = torch.randn_like(y)
    y.backward(dy)
    save(name, {"x": x, "y": y, "dy": dy, "dx": x.grad},
         {"op": "maxpool2d", "kh": kernel, "kw": kernel, "sh": stride, "sw": stride,
          "ph": pad, "pw": pad, "ceil_mode": int(ceil)})


def l2norm(name, n, c, h, w, eps=1e-10, seed=0):
    """mmdet's L2Norm (necks/ssd_neck.py): weight * x / (x.pow(2).sum(1).sqrt() + eps)."""
    torch.manual_seed(seed)
    weight = (20 + torch.randn(c)).requires_grad_(True)
    x = torch.randn(n, c, h, w, requires_grad=True)
    norm = x.pow(2).sum(1, keepdim=True).sqrt() + eps
    y = weight[None, :, None, None].expand_as(x) * x / norm
    dy = torch.randn_like(y)
    y.backward(dy)
    save(name, {"x": x, "w": weight, "y": y, "dy": dy, "dx": x.grad, "dw": weight.grad},
         {"op": "l2norm", "eps": eps})


def gap(name, n, c, h, w, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, c, h, w, requires_grad=True)
    y = F.adaptive_avg_pool2d(x, 1).flatten(1)
    dy = torch.randn_like(y)
    y.backward(dy)
    save(name, {"x": x, "y": y, "dy": dy, "dx": x.grad}, {"op": "avgpool_global"})


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".tns"):
            os.remove(os.path.join(OUT, f))
    conv("conv3x3_s1_p1", 2, 4, 7, 9, 6, 3, 1, 1)
    conv("conv3x3_s2_p1", 2, 4, 7, 9, 6, 3, 2, 1)
    conv("conv1x1", 2, 8, 5, 6, 12, 1)
    conv("conv1x1_s2", 2, 8, 7, 9, 6, 1, 2)
    conv("conv5x5_d2", 1, 3, 11, 12, 4, 5, 1, 4, 2)
    conv("conv_groups2", 2, 6, 7, 8, 4, 3, 1, 1, groups=2)
    conv("conv_dw_s1", 2, 5, 7, 9, 5, 3, 1, 1, groups=5)
    conv("conv_dw_s2", 2, 5, 7, 9, 5, 3, 2, 1, groups=5)
    conv("conv_dw_s1_wide", 1, 3, 6, 37, 3, 3, 1, 1, groups=3)
    conv("conv_dw_s2_wide", 1, 3, 9, 36, 3, 3, 2, 1, groups=3)
    conv("conv_dw_s2_nobias", 2, 4, 8, 35, 4, 3, 2, 1, groups=4, bias=False)
    conv("conv_dw5x5_s2_p2", 1, 4, 9, 11, 4, 5, 2, 2, groups=4)
    conv("conv_regnet_g2_s1", 2, 32, 6, 7, 32, 3, 1, 1, groups=2)
    conv("conv_regnet_g2_s2", 2, 32, 9, 9, 32, 3, 2, 1, groups=2, bias=False)
    conv("conv_nobias", 2, 4, 7, 9, 6, 3, 1, 1, bias=False)
    conv("conv_nonsquare", 2, 3, 5, 11, 4, 3, 1, 1)
    conv("conv_asym", 2, 3, 7, 8, 5, (1, 3), (2, 1), (0, 1))
    conv("conv_batch3", 3, 4, 6, 6, 5, 3, 1, 1)
    conv("conv_stem_s2", 2, 3, 17, 19, 8, 3, 2, 1)
    conv("conv_1px", 2, 3, 1, 1, 4, 3, 1, 1)
    batchnorm("bn_train", 2, 5, 6, 7, True)
    batchnorm("bn_train_eps1e-3", 3, 4, 5, 5, True, eps=1e-3)
    batchnorm("bn_eval", 2, 5, 6, 7, False)
    xr = torch.tensor([-2.0, -0.0, 0.0, 1e-7, 0.5, 3.0, 5.999, 6.0, 6.0001, 7.5, -1e-7, 2.0])
    act("relu", "relu", torch.cat([xr, torch.randn(2 * 3 * 4 * 5 - xr.numel()) * 3]).reshape(2, 3, 4, 5))
    act("relu6", "relu6", torch.cat([xr, torch.randn(2 * 3 * 4 * 5 - xr.numel()) * 4 + 3]).reshape(2, 3, 4, 5))
    add("add")
    concat("concat", [2, 3, 4])
    upsample("upsample_x2", 2, 3, 4, 5, scale=2)
    upsample("upsample_size_odd", 2, 3, 5, 6, size=(9, 11))
    upsample("upsample_size_3to7x5", 1, 2, 3, 3, size=(7, 5))
    upsample("bilinear_x2", 2, 3, 4, 5, scale=2, mode="bilinear")
    upsample("bilinear_3x5to7x4", 2, 3, 3, 5, size=(7, 4), mode="bilinear")
    upsample("bilinear_down_6x6to4x3", 2, 3, 6, 6, size=(4, 3), mode="bilinear")
    upsample("bilinear_1x1to2x2", 2, 3, 1, 1, size=(2, 2), mode="bilinear")
    upsample("bilinear_x2_16x16", 1, 16, 16, 16, size=(32, 32), mode="bilinear")
    maxpool("maxpool_2x2_s2", 2, 3, 8, 10, 2, 2)
    maxpool("maxpool_2x2_s2_odd", 2, 3, 7, 9, 2, 2)
    maxpool("maxpool_3x3_s1_p1", 2, 3, 7, 9, 3, 1, 1)
    maxpool("maxpool_2x2_s2_ceil", 2, 3, 7, 9, 2, 2, ceil=True)
    maxpool("maxpool_3x3_s2_p1_ceil", 2, 3, 8, 10, 3, 2, 1, ceil=True)
    maxpool("maxpool_3x3_s2_ties", 2, 3, 9, 9, 3, 2, 1, ties=True)
    l2norm("l2norm", 2, 8, 5, 6)
    gap("avgpool_global", 2, 5, 7, 9)


if __name__ == "__main__":
    main()
