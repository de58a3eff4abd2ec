#!/usr/bin/python3
"""Reference for lib/train/optim.c and sgd-step: torch.optim.SGD and mmcv's LR hooks.

Writes tests/fixtures/optim/:
  <set>_init.tns    one "params" record: a few named tensors as a model's state dict
                    (conv, BN with running statistics and num_batches_tracked, linear,
                    an odd-length vector), f32.
  <set>_steps_a.tns, <set>_steps_b.tns  (the first steps, the rest) per step a "loss" record (meta as the loss tool writes it) and a
                    "grads" record (one tensor per trainable parameter, and the BN
                    layer's batch_mean / batch_var).
  <set>_expect.tns  per step a record "expect": every parameter after the step, meta
                    {"step", "epoch", "lr"}.
  <set>.json        the config whose "train" section made the set.
  lr_cases.json     mmcv schedules: per case a train section, max_iters, and
                    [iter, epoch, lr] triples.

Sets: "cosine" (momentum 0.9, wd 4e-5, cosine by epoch, linear warm-up, 3 epochs of 4
steps) and "step" (momentum 0, wd 0, step policy by iteration, constant warm-up).
The update is torch.optim.SGD(foreach=False) itself on torch tensors; the lr of each
step comes from mmcv's formulas (written out below, mmcv is not needed); the BN
running statistics follow torch's CPU update (momentum * batch + (1 - momentum) *
running in float32), which check_bn_formula() checks against F.batch_norm.

Run: /usr/bin/python3 tests/ref_optim.py
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import tnsfile  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "fixtures", "optim")


# ---- mmcv's LrUpdaterHook, as formulas (mmcv/runner/hooks/lr_updater.py)

def regular_lr(tr, it, epoch, max_iters):
    lc = tr["lr_config"]
    base = tr["optimizer"]["lr"]
    by_epoch = lc.get("by_epoch", True)
    progress, max_progress = (epoch, tr["epochs"]) if by_epoch else (it, max_iters)
    policy = lc["policy"]
    if policy == "fixed":
        return base
    if policy == "step":
        step = lc["step"]
        if isinstance(step, int):
            exp = progress // step
        else:
            exp = len(step)
            for i, s in enumerate(step):
                if progress < s:
                    exp = i
                    break
        lr = base * lc.get("gamma", 0.1) ** exp
        if lc.get("min_lr") is not None:
            lr = max(lr, lc["min_lr"])
        return lr
    # CosineAnnealing: annealing_cos(base, target, progress / max_progress)
    target = base * lc["min_lr_ratio"] if "min_lr_ratio" in lc else lc["min_lr"]
    cos_out = math.cos(math.pi * (progress / max_progress)) + 1
    return target + 0.5 * (base - target) * cos_out


def lr_at(tr, it, epoch, max_iters=0):
    lc = tr["lr_config"]
    lr = regular_lr(tr, it, epoch, max_iters)
    warmup = lc.get("warmup")
    if warmup is None or it >= lc["warmup_iters"]:
        return lr
    if warmup == "constant":
        return lr * lc["warmup_ratio"]
    if warmup == "linear":
        k = (1 - it / lc["warmup_iters"]) * (1 - lc["warmup_ratio"])
        return lr * (1 - k)
    k = lc["warmup_ratio"] ** (1 - it / lc["warmup_iters"])  # exp
    return lr * k


def bn_update(running, batch, momentum):
    """torch's CPU running-statistics update as F.batch_norm does it (torch 1.13), in
    float32 with two rounded products: momentum * batch + (1 - momentum) * running."""
    m, om = np.float32(momentum), np.float32(1 - momentum)
    return (m * batch.astype(np.float32)) + (om * running.astype(np.float32))


def check_bn_formula():
    """The update against F.batch_norm's own. Given torch's batch mean rounded to
    float32 it is exact; torch's batch variance comes out of its own reduction, which
    the float32 statistic from forward cannot reproduce bit for bit (1-2 ulp)."""
    worst_var = 0
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(3, 7, 5, 3, generator=g) * 3 + 1
        rm, rv = torch.randn(7, generator=g), torch.rand(7, generator=g) + 0.5
        rm0, rv0 = rm.clone().numpy(), rv.clone().numpy()
        F.batch_norm(x, rm, rv, training=True, momentum=0.1)
        xd = x.double()
        mean = xd.mean((0, 2, 3)).numpy().astype(np.float32)
        var = xd.var((0, 2, 3), unbiased=True).numpy().astype(np.float32)
        assert np.array_equal(bn_update(rm0, mean, 0.1), rm.numpy())
        ulp = np.abs(bn_update(rv0, var, 0.1).view(np.int32) - rv.numpy().view(np.int32)).max()
        worst_var = max(worst_var, int(ulp))
    print("BN update vs F.batch_norm: running_mean exact, running_var within %d ulp" % worst_var)


def make_params(g):
    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).float()
    p = {}
    p["backbone.conv.weight"] = rn(4, 3, 3, 3, scale=0.3)
    p["backbone.bn.weight"] = 1 + rn(4, scale=0.1)
    p["backbone.bn.bias"] = rn(4, scale=0.1)
    p["backbone.bn.running_mean"] = rn(4)
    p["backbone.bn.running_var"] = torch.rand(4, generator=g) + 0.5
    p["backbone.bn.num_batches_tracked"] = torch.tensor([7], dtype=torch.int32)
    p["head.fc.weight"] = rn(10, 7, scale=0.2)
    p["head.fc.bias"] = rn(10, scale=0.01)
    # odd length (vector tails) and a spread of magnitudes
    p["head.scale"] = rn(131) * torch.logspace(-6, 3, 131)
    return p


def trainable(name):
    return not name.endswith((".running_mean", ".running_var", ".num_batches_tracked"))


def make_set(name, train, steps, iters_per_epoch, seed, split):
    g = torch.Generator().manual_seed(seed)
    init = make_params(g)
    params = {k: v.clone() for k, v in init.items()}
    names = [k for k in params if trainable(k)]
    tparams = [torch.nn.Parameter(params[k]) for k in names]
    opt = torch.optim.SGD(tparams, lr=train["optimizer"]["lr"], momentum=train["optimizer"]["momentum"],
                          weight_decay=train["optimizer"]["weight_decay"], dampening=0, nesterov=False,
                          foreach=False)
    max_iters = steps
    recs, expect = [], []
    for it in range(steps):
        epoch = it // iters_per_epoch
        lr = lr_at(train, it, epoch, max_iters)
        grads = {}
        for k, p in zip(names, tparams):
            gr = torch.randn(p.shape, generator=g) * (1 + 10 * torch.rand(p.shape, generator=g))
            if k == "head.scale":
                gr = gr * torch.logspace(3, -6, p.numel())
            grads[k] = gr.float()
            p.grad = grads[k].clone()
        bm = torch.randn(4, generator=g).float()
        bv = (torch.rand(4, generator=g) + 0.1).float()
        grads["backbone.bn.batch_mean"] = bm
        grads["backbone.bn.batch_var"] = bv
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        mom = train.get("bn_momentum", 0.1)
        rm = params["backbone.bn.running_mean"]
        rv = params["backbone.bn.running_var"]
        params["backbone.bn.running_mean"] = torch.from_numpy(bn_update(rm.numpy(), bm.numpy(), mom))
        params["backbone.bn.running_var"] = torch.from_numpy(bn_update(rv.numpy(), bv.numpy(), mom))
        for k, p in zip(names, tparams):
            params[k] = p.detach()
        ids = ["img%03d" % (2 * it), "img%03d" % (2 * it + 1)]
        lcls, lbox = 3.0 - 0.1 * it, 1.0 - 0.02 * it
        recs.append(("loss", {}, {"loss_cls": lcls, "loss_bbox": lbox, "loss": lcls + lbox, "num_pos": 12 + it,
                                  "images": 2, "epoch": epoch, "ids": ids,
                                  "indices": [2 * (it % iters_per_epoch), 2 * (it % iters_per_epoch) + 1],
                                  "step": it}))
        recs.append(("grads", {k: v.numpy() for k, v in grads.items()}, {"step": it, "ids": ids}))
        expect.append(("expect", {k: v.detach().numpy().copy() for k, v in params.items()},
                       {"step": it + 1, "epoch": epoch, "lr": lr}))
    tnsfile.write(os.path.join(OUT, name + "_init.tns"),
                  [("params", {k: v.numpy() for k, v in init.items()}, {"step": 0, "config": name})])
    # in two parts (steps before and after `split`), so the bats tests can stop and resume
    tnsfile.write(os.path.join(OUT, name + "_steps_a.tns"), recs[:2 * split])
    tnsfile.write(os.path.join(OUT, name + "_steps_b.tns"), recs[2 * split:])
    tnsfile.write(os.path.join(OUT, name + "_expect.tns"), expect)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump({"name": name, "train": train}, f, indent=1)
        f.write("\n")


LR_CASES = [
    ({"optimizer": {"lr": 0.04}, "epochs": 24,
      "lr_config": {"policy": "cosine", "warmup": "linear", "warmup_iters": 1000, "warmup_ratio": 0.001,
                    "min_lr_ratio": 1e-4, "by_epoch": True}}, 0, 292),
    ({"optimizer": {"lr": 0.02}, "epochs": 24,
      "lr_config": {"policy": "step", "step": [16, 22], "gamma": 0.1, "warmup": "linear", "warmup_iters": 500,
                    "warmup_ratio": 0.001, "by_epoch": True}}, 0, 100),
    ({"optimizer": {"lr": 0.1}, "epochs": 5,
      "lr_config": {"policy": "CosineAnnealing", "min_lr": 1e-5, "warmup": "exp", "warmup_iters": 50,
                    "warmup_ratio": 0.1, "by_epoch": False}}, 600, 120),
    ({"optimizer": {"lr": 0.01}, "epochs": 10,
      "lr_config": {"policy": "step", "step": 40, "gamma": 0.5, "min_lr": 0.002, "warmup": "constant",
                    "warmup_iters": 30, "warmup_ratio": 0.25, "by_epoch": False}}, 0, 25),
    ({"optimizer": {"lr": 0.005}, "epochs": 3, "lr_config": {"policy": "fixed", "warmup": None}}, 0, 10),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    check_bn_formula()
    cosine = {"optimizer": {"lr": 0.04, "momentum": 0.9, "weight_decay": 4e-5},
              "lr_config": {"policy": "cosine", "warmup": "linear", "warmup_iters": 5, "warmup_ratio": 0.001,
                            "min_lr_ratio": 1e-4, "by_epoch": True},
              "epochs": 3, "batch": 2, "checkpoint_every": 5, "bn_momentum": 0.1}
    make_set("cosine", cosine, 12, 4, 11, 5)
    step = {"optimizer": {"lr": 0.5, "momentum": 0, "weight_decay": 0},
            "lr_config": {"policy": "step", "step": [2, 4], "gamma": 0.3, "warmup": "constant", "warmup_iters": 1,
                          "warmup_ratio": 0.5, "by_epoch": False},
            "epochs": 2, "batch": 2, "checkpoint_every": 0, "bn_momentum": 0.03}
    make_set("step", step, 6, 3, 12, 2)
    cases = []
    for train, max_iters, per_epoch in LR_CASES:
        total = max_iters or train["epochs"] * per_epoch
        pts = sorted(set(list(range(0, min(total, 60))) + list(range(0, total, max(1, total // 97))) + [total - 1]))
        cases.append({"train": train, "max_iters": max_iters,
                      "lr": [[it, it // per_epoch, lr_at(train, it, it // per_epoch, max_iters)] for it in pts]})
    with open(os.path.join(OUT, "lr_cases.json"), "w") as f:
        json.dump(cases, f)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
