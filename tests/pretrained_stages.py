#!/usr/bin/python3
"""Proof that pretrained weights land where they belong: for each of the four
backbones, torchvision's own network with a state dict, and ours (tests/unit/
test_pretrained.c: the .pth read by lib/nn/pth.c, mapped onto the model by
pth_load_into, run by lib/nn/graph.c) with the same file, give the same stage outputs on
one real BCCD image.

  tests/pretrained_stages.py            writes tests/fixtures/pretrained/ (committed:
                                        CI has no torch): reduced-width networks at
                                        64x64, the configs of tests/fixtures/model/
                                        (tiny*.json) or like them, in the legacy
                                        format only (small files); and odd_legacy.pth,
                                        tests/fixtures/pth/odd.pth's checkpoint saved
                                        the old way.
  tests/pretrained_stages.py --full DIR full size: torchvision's mobilenet_v2, resnet50,
                                        regnet_x_800mf and vgg16 onto the _bccd
                                        configs at 320x320, written to DIR (about 1.5
                                        GB), then build/tests/test_pretrained DIR runs
                                        and prints the agreement per stage (make units
                                        first). Needs Debian's python3-torch and
                                        python3-torchvision; about 3 minutes on 2 cores.

Each network is torchvision's with its default random init (no downloads here), the
BN layers' weights and biases drawn at random and their running statistics gathered
from four other BCCD images in train mode (cumulative average), so that every tensor
of the file is something in particular. Its state dict is saved as torch.save writes
it since 1.6 (zip) and before (_use_new_zipfile_serialization=False). The
stage outputs are torchvision's forward in eval mode, piece by piece:
model.features[:k+1] (MobileNetV2, each of the 18 blocks; VGG16, the last ReLU of each
of the 5 stages), the stem and layer1..4 (ResNet50), stem and trunk_output.block1..4
(RegNetX), named by the module of our graph whose last node gives the same value.

The stages record's meta "torch_f32_vs_f64" holds, per stage, torch's own float
error: max |its float32 forward - its float64 forward|, the scale of what float
arithmetic in another order gives (test_pretrained prints it beside ours).

DIR/cases.json lists per network: the config, the .pth files, the stages file (a
"stages" record: "input" f32[1,3,S,S] then one f32[1,C,H,W] per stage) and what the
loader must report (tensors loaded, the unused and missing keys it lists).
"""
import argparse
import copy
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.resnet import Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD = os.path.join(ROOT, "..", "shared", "data", "bccd", "JPEGImages")
IMAGE = "BloodImage_00000.jpg"                      # the image of the stage outputs
STATS_IMAGES = ["BloodImage_00001.jpg", "BloodImage_00002.jpg", "BloodImage_00003.jpg", "BloodImage_00004.jpg"]
MEAN = np.array([123.675, 116.28, 103.53], np.float32)  # torchvision's ImageNet statistics, RGB
STD = np.array([58.395, 57.12, 57.375], np.float32)


def image(name, size):
    """A BCCD image as torchvision's models take it: RGB, resized, normalised, [1,3,S,S]."""
    im = Image.open(os.path.join(BCCD, name)).convert("RGB").resize((size, size), Image.BILINEAR)
    a = (np.asarray(im, np.float32) - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


# ---- reduced-width torchvision networks (torchvision's classes and blocks, narrower)

class NarrowResNet(ResNet):
    """torchvision's ResNet50 (its Bottleneck, its forward) with base width `base`
    instead of 64: mmdet's ResNet with base_channels = base."""
    base = 4

    def __init__(self, num_classes=2):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
        b = self.base
        self.conv1 = torch.nn.Conv2d(3, b, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(b)
        self.fc = torch.nn.Linear(8 * b * Bottleneck.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:
            self.inplanes = self.base  # the first stage follows the narrow stem
        return super()._make_layer(block, planes * self.base // 64, blocks, stride, dilate)


def narrow_vgg16(base=4, num_classes=2, hidden=4):
    """torchvision's VGG16 (make_layers, its names) with conv widths base * (1, 2, 4,
    8, 8) and a small classifier of the same layout (classifier.0/.3/.6)."""
    cfg = [base, base, "M", 2 * base, 2 * base, "M", 4 * base, 4 * base, 4 * base, "M",
           8 * base, 8 * base, 8 * base, "M", 8 * base, 8 * base, 8 * base, "M"]
    m = torchvision.models.vgg.VGG(torchvision.models.vgg.make_layers(cfg), num_classes=num_classes)
    m.classifier = torch.nn.Sequential(torch.nn.Linear(8 * base * 49, hidden), torch.nn.ReLU(True), torch.nn.Dropout(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.ReLU(True), torch.nn.Dropout(),
                                       torch.nn.Linear(hidden, num_classes))
    return m


def narrow_regnet(arch):
    bp = BlockParams.from_init_params(depth=arch["depth"], w_0=arch["w0"], w_a=arch["wa"], w_m=arch["wm"],
                                      group_width=arch["group_w"], bottleneck_multiplier=arch["bot_mul"])
    return RegNet(bp, num_classes=2, stem_width=16)


# ---- stage outputs: torchvision's forward, piece by piece

def stages(kind, m, x):
    """[(our module name, torchvision's value)] for input x (eval mode, no grad)."""
    out = []
    with torch.no_grad():
        if kind == "mobilenet_v2":
            for k, block in enumerate(m.features[:18]):
                x = block(x)
                out.append(("backbone.features.%d" % k, x))
        elif kind == "vgg16":
            for k, layer in enumerate(m.features[:30]):
                x = layer(x)
                if k in (3, 8, 15, 22, 29):  # the last ReLU of each stage (conv1_2 ... conv5_3)
                    out.append(("backbone.features.%d" % k, x))
        elif kind == "resnet50":
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            out.append(("backbone.maxpool", x))
            for s in range(1, 5):
                x = getattr(m, "layer%d" % s)(x)
                out.append(("backbone.layer%d" % s, x))
        elif kind == "regnet":
            x = m.stem(x)
            out.append(("backbone.relu", x))
            for s in range(1, 5):
                x = getattr(m.trunk_output, "block%d" % s)(x)
                out.append(("backbone.layer%d" % s, x))
    return out


def prepare(m, size, seed):
    """BN weights and biases at random, running statistics from the stats images."""
    g = torch.Generator().manual_seed(seed)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for b in bns:
            b.weight.copy_(0.5 + torch.rand(b.weight.shape, generator=g))
            b.bias.copy_(0.4 * torch.rand(b.bias.shape, generator=g) - 0.2)
            b.reset_running_stats()
            b.momentum = None  # cumulative average over the batches
        if bns:
            m.train()
            for name in STATS_IMAGES:
                m(image(name, size))
    for b in bns:
        b.momentum = 0.1
    m.eval()


def write_case(out, name, kind, m, size, config, expect, formats):
    size = expect.pop("size", size)
    prepare(m, size, seed=len(name))
    sd = m.state_dict()
    files = []
    if "zip" in formats:
        files.append(name + ".pth")
        torch.save(sd, os.path.join(out, files[-1]))
    if "legacy" in formats:
        files.append(name + "_legacy.pth")
        torch.save(sd, os.path.join(out, files[-1]), _use_new_zipfile_serialization=False)
    x = image(IMAGE, size)
    tensors = {"input": x.numpy()}
    # torch's own float error, for scale: its float32 forward against float64
    exact = dict(stages(kind, copy.deepcopy(m).double(), x.double()))
    f64 = {}
    for stage, v in stages(kind, m, x):
        tensors[stage] = v.numpy()
        f64[stage] = (v.double() - exact[stage]).abs().max().item()
    tnsfile.write(os.path.join(out, name + "_stages.tns"),
                  [("stages", tensors, {"network": name, "image": IMAGE, "size": size, "torch_f32_vs_f64": f64})],
                  level=19)
    case = {"name": name, "config": config, "files": files, "stages": name + "_stages.tns"}
    case.update(expect)
    print("%s: %d tensors, %d stages, %s" % (name, len(sd), len(tensors) - 1,
                                             ", ".join("%s %d" % (f, os.path.getsize(os.path.join(out, f)))
                                                       for f in files)))
    return case


def fixture_configs(out):
    """tests/fixtures/model's tiny configs for ResNet, RegNet and VGG; MobileNetV2 at
    width 0.1 (tiny.json's 0.25 makes a 1 MB file)."""
    with open(os.path.join(ROOT, "tests", "fixtures", "model", "tiny.json")) as f:
        cfg = json.load(f)
    cfg["name"] = "mbv2_w01"
    cfg["about"] = "tests/fixtures/model/tiny.json with MobileNetV2 at width 0.1 (tests/pretrained_stages.py)"
    cfg["model"]["backbone"]["width_mult"] = 0.1
    cfg["model"]["neck"]["in_channels"] = [8, 8, 16, 32]
    path = os.path.join(out, "mbv2_w01.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    with open(os.path.join(ROOT, "tests", "fixtures", "model", "tiny_regnet.json")) as f:
        arch = json.load(f)["model"]["backbone"]["arch"]
    return arch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", metavar="DIR", help="full-size networks into DIR, then run the C test on them")
    args = ap.parse_args()
    torch.manual_seed(0)
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    if args.full:
        out, size, formats = args.full, 320, ("zip", "legacy")
        os.makedirs(out, exist_ok=True)
        cases = [
            ("mobilenet_v2", "mobilenet_v2", torchvision.models.mobilenet_v2(), "configs/ssd_mobilenet_fpn_bccd.json",
             {"loaded": 255, "skipped": "features.18.*, classifier.*", "missing": ""}),
            ("resnet50", "resnet50", torchvision.models.resnet50(), "configs/ssd_resnet_fpn_bccd.json",
             {"loaded": 265, "skipped": "fc.*", "missing": ""}),
            ("regnet_x_800mf", "regnet", torchvision.models.regnet_x_800mf(), "configs/ssd_regnet_fpn_bccd.json",
             {"loaded": 265, "skipped": "fc.*", "missing": ""}),
            ("vgg16", "vgg16", torchvision.models.vgg16(), "configs/ssd512_vgg16_bccd.json",
             {"loaded": 26, "skipped": "classifier.*", "missing": "features.31.*, features.33.*"}),
        ]
    else:
        # the legacy format only (the zip reader has its own fixtures in tests/fixtures/pth;
        # odd_legacy.pth is odd.pth's checkpoint saved the old way, for test_pth)
        out, size, formats = os.path.join(ROOT, "tests", "fixtures", "pretrained"), 64, ("legacy",)
        os.makedirs(out, exist_ok=True)
        odd = torch.load(os.path.join(ROOT, "tests", "fixtures", "pth", "odd.pth"))
        torch.save(odd, os.path.join(out, "odd_legacy.pth"), _use_new_zipfile_serialization=False)
        arch = fixture_configs(out)
        cases = [
            ("mbv2_w01", "mobilenet_v2", torchvision.models.mobilenet_v2(width_mult=0.1, num_classes=2),
             rel(os.path.join(out, "mbv2_w01.json")),
             {"loaded": 255, "skipped": "features.18.*, classifier.*", "missing": ""}),
            ("resnet50_b4", "resnet50", NarrowResNet(), "tests/fixtures/model/tiny_resnet.json",
             {"loaded": 265, "skipped": "fc.*", "missing": ""}),
            ("regnet_tiny", "regnet", narrow_regnet(arch), "tests/fixtures/model/tiny_regnet.json",
             {"loaded": 0, "skipped": "fc.*", "missing": ""}),
            # (128: tiny_vgg's last extra level needs 100 or more, and torchvision's pools
            # floor where SSD VGG's ceil: even sizes down to conv5 make them agree)
            ("vgg16_b4", "vgg16", narrow_vgg16(), "tests/fixtures/model/tiny_vgg.json",
             {"loaded": 26, "skipped": "classifier.*", "missing": "features.31.*, features.33.*", "size": 128}),
        ]
    manifest = []
    for name, kind, m, config, expect in cases:
        if expect["loaded"] == 0:  # every key but the classifier's and the BN counters
            expect["loaded"] = sum(1 for k in m.state_dict() if not k.startswith("fc.") and
                                   not k.endswith("num_batches_tracked"))
        manifest.append(write_case(out, name, kind, m, size, config, expect, formats))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if args.full:
        test = os.path.join(ROOT, "build", "tests", "test_pretrained")
        sys.exit(subprocess.call([test, out], cwd=ROOT))


if __name__ == "__main__":
    main()
