#!/usr/bin/python3
"""Writes the .pth fixtures of tests/unit/test_pth.c and tests/bats/sgd-step.bats.

No pretrained weights can be downloaded here, so the import is tested on state dicts
made with torch and saved as torch.save saves them:

  mbv2_w025.pth   torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10),
                  seeded random init, BN statistics moved by two training-mode
                  forwards (num_batches_tracked = 2): torchvision's keys and layout.
  mbv2_w025.json  per key: dtype, shape and the FNV-1a 64 hash of the tensor's bytes
                  as tns stores them (int64 narrowed to int32), so the C test checks
                  every tensor bit for bit without a second copy of the weights.
  mbv2_w025_head.tns  the first 24 tensors in full (tests/tnsfile.py), to show values.
  mbv2_w025_init*.tns  zero params of a model with this backbone ("backbone." + key,
                  and two neck tensors); _missing lacks one key, _shape has one
                  mis-shaped (for sgd-step --pretrained).
  regnet_tiny.pth torchvision's RegNet class at toy widths (BlockParams depth 6, w0 8,
                  wa 8, wm 2, group width 8: stages 8/16/32/64, stem 8), seeded, BN
                  statistics moved: torchvision's RegNet names (trunk_output...).
  regnet_tiny.json  per key: the mmdet name it maps to, dtype, shape, FNV-1a 64. The
                  mapping is checked here: torchvision's model and tests/ref_model.py's
                  mmdet RegNet loaded with the mapped dict give the same features.
  regnet_tiny_ssd.json  a model config with that backbone (forward --init makes its params).
  torchvision_shapes.json  the keys and shapes of torchvision's resnet50, vgg16,
                  regnet_x_800mf and mobilenet_v2 state dicts (no weights: those are
                  100+ MB), for test_pth to load onto configs/ssd_resnet_fpn,
                  ssd512_vgg16, ssd_regnet_fpn and ssd_mobilenet_fpn.
  odd.pth         what else torch.save emits: a transposed (strided) view, two views
                  of one storage, a slice at an offset, f16, bf16, int64, 0-d and empty
                  tensors, inside an mmcv-style {"meta": ..., "state_dict": ...}.
  odd_p4.pth      the same with pickle protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE).
  odd.tns         odd.pth's state dict, contiguous (f16 and bf16 as f32; ints as i32).

Run: /usr/bin/python3 tests/make_pth_fixture.py  (Debian's python3-torch, torchvision)
"""
import collections
import json
import os
import sys

import numpy as np
import torch
import torchvision
from torchvision.models.regnet import BlockParams, RegNet

sys.path.insert(0, os.path.dirname(__file__))
import ref_model  # noqa: E402
import tnsfile  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "fixtures", "pth")


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def as_tns(t):
    """The numpy array the C reader should produce for tensor t."""
    t = t.detach().contiguous()
    if t.dtype == torch.int64:
        a = t.numpy()
        assert np.all(np.abs(a) < 2**31)
        return a.astype(np.int32)
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)  # raw bits
    return t.numpy()


DTYPE = {torch.float32: "f32", torch.int64: "i32"}


def save_trained(model, name):
    """Moves the BN statistics by two training-mode forwards (num_batches_tracked = 2),
    saves the state dict as OUT/name and returns it."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 64, 64))
    sd = model.state_dict()
    torch.save(sd, os.path.join(OUT, name))
    return sd


def mmdet_regnet_name(key):
    """torchvision RegNet key -> mmdet RegNet's (written from the two modules' layouts)."""
    stem = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    for a, b in stem.items():
        if key.startswith(a):
            return b + key[len(a):]
    parts = {"proj.0.": "downsample.0.", "proj.1.": "downsample.1.", "f.a.0.": "conv1.", "f.a.1.": "bn1.",
             "f.b.0.": "conv2.", "f.b.1.": "bn2.", "f.c.0.": "conv3.", "f.c.1.": "bn3."}
    trunk, stage, block, rest = key.split(".", 3)
    assert trunk == "trunk_output" and block.startswith(stage + "-"), key
    prefix = next(p for p in parts if rest.startswith(p))
    return "layer%s.%s.%s%s" % (stage[len("block"):], block[len(stage) + 1:], parts[prefix], rest[len(prefix):])


def regnet_fixture():
    arch = dict(w0=8, wa=8.0, wm=2.0, group_w=8, depth=6, bot_mul=1.0)
    torch.manual_seed(11)
    bp = BlockParams.from_init_params(depth=arch["depth"], w_0=arch["w0"], w_a=arch["wa"], w_m=arch["wm"],
                                      group_width=arch["group_w"])
    tv = RegNet(bp, num_classes=10, stem_width=8)
    sd = save_trained(tv, "regnet_tiny.pth")
    # the mapping is right if mmdet's RegNet with the mapped weights computes what torchvision's does
    mm = ref_model.RegNet(arch, 8, [0, 1, 2, 3], 1e-5)
    mapped = {mmdet_regnet_name(k): v for k, v in sd.items() if not k.startswith("fc.")}
    missing, unexpected = mm.load_state_dict(mapped, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    tv.eval()
    mm.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = mm(x)[-1]
        theirs = tv.trunk_output(tv.stem(x))
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()
    meta = [{"key": k, "name": None if k.startswith("fc.") else mmdet_regnet_name(k), "dtype": DTYPE[v.dtype],
             "shape": list(v.shape), "fnv1a64": "%016x" % fnv1a64(as_tns(v).tobytes())} for k, v in sd.items()]
    with open(os.path.join(OUT, "regnet_tiny.json"), "w") as f:
        json.dump(meta, f, indent=0)
        f.write("\n")
    cfg = {
        "name": "regnet_tiny_ssd",
        "about": "a model whose backbone takes tests/fixtures/pth/regnet_tiny.pth (make_pth_fixture.py)",
        "model": {
            "num_classes": 2,
            "backbone": {"type": "RegNet", "arch": arch, "stem_channels": 8, "out_indices": [1, 2, 3]},
            "neck": {"type": "FPN", "in_channels": [16, 32, 64], "out_channels": 8, "start_level": 0,
                     "num_outs": 3, "add_extra_convs": "on_output"},
            "head": {"type": "SSDHead", "in_channels": [8, 8, 8]},
            "anchors": {"strides": [8, 16, 32], "ratios": [[2], [2], [2]], "basesize_ratio_range": [0.2, 0.9]},
        },
    }
    with open(os.path.join(OUT, "regnet_tiny_ssd.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    print("regnet_tiny.pth: %d keys, torchvision = mmdet RegNet with mapped names" % len(sd))


def torchvision_shapes():
    nets = {"resnet50": torchvision.models.resnet50, "vgg16": torchvision.models.vgg16,
            "regnet_x_800mf": torchvision.models.regnet_x_800mf, "mobilenet_v2": torchvision.models.mobilenet_v2}
    shapes = {name: [[k, list(v.shape)] for k, v in make().state_dict().items()] for name, make in nets.items()}
    with open(os.path.join(OUT, "torchvision_shapes.json"), "w") as f:
        json.dump(shapes, f, separators=(",", ":"))
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    torchvision_shapes()
    regnet_fixture()
    torch.manual_seed(5)
    sd = save_trained(torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10), "mbv2_w025.pth")
    meta = [{"name": k, "dtype": DTYPE[v.dtype], "shape": list(v.shape),
             "fnv1a64": "%016x" % fnv1a64(as_tns(v).tobytes())} for k, v in sd.items()]
    with open(os.path.join(OUT, "mbv2_w025.json"), "w") as f:
        json.dump(meta, f, indent=0)
        f.write("\n")
    # params records of a model whose backbone is this network (zeros: they compress to
    # nothing), one missing a key, one with a key of another shape
    init = {"backbone." + k: np.zeros(v.shape, np.float32) if v.dtype == torch.float32 else np.zeros_like(as_tns(v))
            for k, v in sd.items() if not k.startswith("classifier.")}
    init["neck.lateral_convs.0.conv.weight"] = np.zeros((16, 8, 1, 1), np.float32)
    init["neck.lateral_convs.0.conv.bias"] = np.zeros(16, np.float32)
    tnsfile.write(os.path.join(OUT, "mbv2_w025_init.tns"), [("params", init, {"step": 0, "config": "mbv2"})])
    missing = dict(init)
    del missing["backbone.features.4.conv.1.1.running_mean"]
    tnsfile.write(os.path.join(OUT, "mbv2_w025_init_missing.tns"), [("params", missing, {"step": 0})])
    shaped = dict(init)
    shaped["backbone.features.2.conv.2.weight"] = np.zeros((8, 24, 1, 1), np.float32)
    tnsfile.write(os.path.join(OUT, "mbv2_w025_init_shape.tns"), [("params", shaped, {"step": 0})])
    head = {k: as_tns(v) for k, v in list(sd.items())[:24]}
    tnsfile.write(os.path.join(OUT, "mbv2_w025_head.tns"), [("params", head, {"source": "mbv2_w025.pth"})])

    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 4, generator=g)
    shared = torch.arange(10, dtype=torch.float32)
    odd = collections.OrderedDict()
    odd["transposed"] = base.t()                      # stride (1, 4)
    odd["shared.a"] = shared[:4]
    odd["shared.b"] = shared[3:9].view(2, 3)          # offset 3 into the same storage
    odd["half"] = torch.randn(3, 2, generator=g).half()
    odd["bf16"] = torch.randn(5, generator=g).bfloat16()
    odd["steps"] = torch.tensor(123456789, dtype=torch.int64)
    odd["neg"] = torch.tensor([-3, 0, 2**31 - 1], dtype=torch.int64)
    odd["scalar"] = torch.tensor(2.5)
    odd["empty"] = torch.zeros(0, 3)
    odd["deep"] = torch.randn(1, 2, 1, 3, 1, 2, 1, 2, generator=g)
    ckpt = {"meta": {"epoch": 3, "lr": [0.04, 1e-5], "name": "odd", "ok": True, "none": None},
            "state_dict": odd}
    torch.save(ckpt, os.path.join(OUT, "odd.pth"))
    torch.save(ckpt, os.path.join(OUT, "odd_p4.pth"), pickle_protocol=4)
    flat = {}
    for k, v in odd.items():
        if v.dtype in (torch.float16, torch.bfloat16):
            flat[k] = v.float().numpy()
        else:
            flat[k] = as_tns(v)
    tnsfile.write(os.path.join(OUT, "odd.tns"), [("params", flat, {"source": "odd.pth"})])
    # what the bf16 bits are, for the C test (bf16 has no numpy dtype in tnsfile)
    print("wrote", OUT, "mbv2_w025.pth: %d bytes" % os.path.getsize(os.path.join(OUT, "mbv2_w025.pth")))


if __name__ == "__main__":
    main()
