#!/usr/bin/python3
"""The training recipe of `make train` in PyTorch, for a side-by-side mAP and wall time
(docs/training.md). Only the framework differs:

  data       the same batches: this script runs our own tools
               voc-decode ROOT --split S --classes F --shuffle --seed SEED --epochs E
               | augment --train --config CONFIG --batch B --seed SEED [--size N]
             and reads their batch records from the pipe (tests/tnsfile.py)
  model      tests/ref_model.py's Detector, built from the same JSON config; its
             state_dict names are our params names, so a params .tns loads by name
  init       a params .tns (e.g. the init.tns of one of our runs: the same start)
  loss       mmdet's SSD loss from tests/ref_loss.py's pieces (max_iou_assign,
             bbox2delta, smooth_l1; anchors from tests/ref_detect.py), composed in the
             autograd graph; hard negatives by torch.topk as mmdet
  optimizer  torch.optim.SGD (lr, momentum, weight decay of the config's "train"
             section, on every parameter as sgd-step), the lr of each step from
             tests/ref_optim.py's lr_at (mmcv warm-up and cosine by epoch; the epoch is
             the batch's meta.epoch, as sgd-step takes it); BN in train mode with
             momentum train.bn_momentum (torch's update is sgd-step's: unbiased batch
             variance, momentum * batch + (1 - momentum) * running)

usage (from the repository root, Debian's python with torch 1.13):
  /usr/bin/python3 bench/train_torch.py train CONFIG --init PARAMS.tns --run DIR
        [--epochs N --batch N --size N --seed N --lr X --max-steps N --threads 2
         --layout nchw|channels_last --save-every 3 --check-loss N --bin DIR
         --data ROOT --classes FILE --split NAME]
  ... | /usr/bin/python3 bench/train_torch.py predict CONFIG --weights PARAMS.tns > preds
        (batch records in, pred records out, as `forward --weights`: feed ssd-decode)

train writes DIR/metrics.jsonl (one line per step, sgd-step's fields plus data_s, the
time spent waiting for the batch, cpu_s, this process's CPU seconds in the step, and
load1, the machine's load average), DIR/epoch_K.tns every --save-every epochs and at the
end, DIR/latest.tns (params records with our tensor names: `forward --weights` and
pipelines/eval.sh read them) and DIR/summary.json (steps, step time, img/s, command).
--layout: NCHW by default. channels_last is torch's faster CPU layout, but torch 1.13's
training-mode BatchNorm in it is much less precise in float32 (docs/training.md: a 40 %
error in the first step's gradient against float64, 2 % for NCHW and for our forward).
--bin DIR takes voc-decode and augment from DIR (default bin/), e.g. a private copy
when others rebuild bin/ during a long run.
--check-loss N also runs tests/ref_loss.py's ssd_loss on the first N batches' outputs
and prints how far this loss and its gradients are from it.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import ref_loss  # noqa: E402
import tnsfile  # noqa: E402
from ref_detect import DEFAULT_ANCHORS, DEFAULT_CODER, anchors  # noqa: E402
from ref_model import Detector  # noqa: E402
from ref_optim import lr_at  # noqa: E402


def say(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- config

def merge(a, b):
    """b over a: objects member by member, anything else replaced (lib/core/config.c, lib.sh)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return b
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(a[k], v) if k in a else v
    return out


def load_config(path):
    cfg = json.load(open(path))
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    if not os.path.isabs(base):
        base = os.path.join(os.path.dirname(path), base)
    return merge(load_config(base), cfg)


# ---------------------------------------------------------------- params records

def state_names(model):
    return [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]


def load_params(model, path):
    """The first params record of path into model, by name; returns its tensor order."""
    recs = [r for r in tnsfile.read(path) if r[0] == "params"]
    if not recs:
        sys.exit(f"{path}: no params record")
    _, tensors, _ = recs[0]
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    sd = model.state_dict()
    want = set(state_names(model))
    if set(tensors) != want:
        sys.exit(f"{path}: missing {sorted(want - set(tensors))[:5]}, extra {sorted(set(tensors) - want)[:5]}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(sd[k].shape):
            sys.exit(f"{path}: {k} is {v.shape}, the model's {tuple(sd[k].shape)}")
    with torch.no_grad():
        for k, v in tensors.items():
            sd[k].copy_(torch.from_numpy(v))
    return list(tensors)


def save_params(model, names, path, meta):
    sd = model.state_dict()
    tensors = {k: np.ascontiguousarray(sd[k].detach().contiguous().numpy(), dtype=np.float32) for k in names}
    tnsfile.write(path + ".tmp", [("params", tensors, meta)], level=1)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------- loss

class SSDLoss:
    """mmdet 2.x SSDHead.loss in the autograd graph, from tests/ref_loss.py's pieces:
    per image MaxIoUAssigner (ref_loss.max_iou_assign; boxes without area left out as
    ref_loss does), cross entropy over all anchors, positives plus the
    neg_pos_ratio * num_pos negatives of largest loss, smooth L1 of the positives'
    DeltaXYWH targets, both summed and divided by sum over images of max(num_pos, 1)."""

    def __init__(self, cfg):
        m = cfg["model"]
        self.acfg = dict(DEFAULT_ANCHORS, **m.get("anchors", {}))
        self.coder = dict(DEFAULT_CODER, **m.get("bbox_coder", {}))
        self.train = dict(ref_loss.DEFAULT_TRAIN, **m.get("train", {}))
        self.anchors = {}

    def anc(self, size):
        if size not in self.anchors:
            self.anchors[size] = torch.from_numpy(anchors(size, self.acfg)[0])
        return self.anchors[size]

    def __call__(self, cls, reg, boxes, labels, nbox, size):
        N, A, K = cls.shape
        C = K - 1
        anc = self.anc(size)
        assert anc.shape[0] == A, (anc.shape, A)
        lab, assigned, tgt_img, tgt_anchor, tgt_box = [], [], [], [], []
        with torch.no_grad():
            for n in range(N):
                g = boxes[n, :int(nbox[n])]
                keep = (g[:, 2] > g[:, 0]) & (g[:, 3] > g[:, 1])
                gt, gl = g[keep], labels[n, :int(nbox[n])][keep].long()
                a = ref_loss.max_iou_assign(gt, anc, self.train)
                pos = torch.nonzero(a > 0).view(-1)
                ln = torch.full((A,), C, dtype=torch.long)
                ln[pos] = gl[a[pos] - 1]
                lab.append(ln)
                assigned.append(a)
                tgt_img.append(torch.full_like(pos, n))
                tgt_anchor.append(pos)
                tgt_box.append(gt[a[pos] - 1])
        lab = torch.stack(lab)
        num_total_pos = sum(max(int((a > 0).sum()), 1) for a in assigned)
        ce = F.cross_entropy(cls.reshape(-1, K), lab.view(-1), reduction="none").view(N, A)
        loss_cls = cls.new_zeros(())
        num_pos = num_neg = 0
        for n, a in enumerate(assigned):
            pos = a > 0
            neg = torch.nonzero(a == 0).view(-1)
            k = min(int(self.train["neg_pos_ratio"]) * int(pos.sum()), len(neg))
            top = neg[torch.topk(ce[n, neg].detach(), k).indices] if k else neg[:0]
            loss_cls = loss_cls + ce[n, pos].sum() + ce[n, top].sum()
            num_pos += int(pos.sum())
            num_neg += k
        ii, aa = torch.cat(tgt_img), torch.cat(tgt_anchor)
        tgt = ref_loss.bbox2delta(anc[aa], torch.cat(tgt_box), self.coder)
        loss_bbox = ref_loss.smooth_l1(reg[ii, aa], tgt, self.train["smoothl1_beta"]).sum()
        return loss_cls / num_total_pos, loss_bbox / num_total_pos, num_pos, num_neg


def check_loss(crit, cls, reg, rec, size):
    """This loss against ref_loss.ssd_loss (the fixture generator of our loss tool) on
    one batch: relative differences of the losses and of the gradients."""
    t = rec[1]
    c = cls.detach().contiguous().numpy().copy()
    r = reg.detach().contiguous().numpy().copy()
    try:
        ref = ref_loss.ssd_loss(c, r, t["boxes"], t["labels"], t["nbox"], size, crit.train, crit.acfg, crit.coder)
    except ref_loss.Ambiguous as e:
        return f"ref_loss: ambiguous mining cut ({e}), not compared"
    ct = torch.from_numpy(c).requires_grad_(True)
    rt = torch.from_numpy(r).requires_grad_(True)
    lc, lb, npos, nneg = crit(ct, rt, torch.from_numpy(t["boxes"]), torch.from_numpy(t["labels"]),
                              t["nbox"], size)
    (lc + lb).backward()
    m = ref["meta"]

    def rel(x, y):
        return float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
    return (f"vs ref_loss.ssd_loss: loss_cls {float(lc):.6f}/{m['loss_cls']:.6f} "
            f"loss_bbox {float(lb):.6f}/{m['loss_bbox']:.6f} pos {npos}/{m['num_pos']} neg {nneg}/{m['num_neg']} "
            f"grad rel.diff cls {rel(ct.grad.numpy(), ref['cls']):.1e} reg {rel(rt.grad.numpy(), ref['reg']):.1e}")


# ---------------------------------------------------------------- data

def tool(bin_dir, name):
    return os.path.join(bin_dir, name)


def count_images(a, split):
    out = subprocess.run([tool(a.bin, "voc-decode"), a.data, "--split", split, "--classes", a.classes, "--list"],
                         check=True, capture_output=True, text=True).stdout
    return len(out.splitlines())


class Batches:
    """voc-decode | augment --train as child processes; batch records from the pipe."""

    def __init__(self, a, epochs):
        self.dec_cmd = [tool(a.bin, "voc-decode"), a.data, "--split", a.split, "--classes", a.classes,
                        "--shuffle", "--seed", str(a.seed), "--epochs", str(epochs)]
        self.aug_cmd = [tool(a.bin, "augment"), "--train", "--config", a.config, "--batch", str(a.batch),
                        "--seed", str(a.seed)] + (["--size", str(a.size)] if a.size else [])
        self.command = shlex.join(self.dec_cmd) + " | " + shlex.join(self.aug_cmd)
        self.dec = subprocess.Popen(self.dec_cmd, stdout=subprocess.PIPE)
        self.aug = subprocess.Popen(self.aug_cmd, stdin=self.dec.stdout, stdout=subprocess.PIPE)
        self.dec.stdout.close()
        self.records = tnsfile.stream(self.aug.stdout)

    def __iter__(self):
        for rec in self.records:
            if rec[0] == "batch":
                yield rec

    def cpu_seconds(self):
        """CPU seconds (user + system) the two tools have used so far (/proc)."""
        total = 0.0
        for p in (self.dec, self.aug):
            try:
                f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                return None
        return total

    def close(self, complete):
        if not complete:
            for p in (self.aug, self.dec):
                p.terminate()
        self.aug.stdout.close()
        st = [self.dec.wait(), self.aug.wait()]
        if complete and any(st):
            sys.exit(f"data pipeline failed: voc-decode {st[0]}, augment {st[1]}")


# ---------------------------------------------------------------- train

def build_model(cfg, layout):
    model = Detector(cfg)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


def cmd_train(a):
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    tr = cfg.get("train", {})
    for key in ("epochs", "batch"):
        if getattr(a, key) is not None:
            tr[key] = getattr(a, key)
    if a.lr is not None:
        tr.setdefault("optimizer", {})["lr"] = a.lr
    a.epochs, a.batch = tr.get("epochs", 24), tr.get("batch", 8)
    ds = cfg.get("dataset", {})
    a.data = a.data or ds.get("root")
    a.classes = a.classes or ds.get("classes")
    a.split = a.split or ds.get("train_split", "trainval")
    opt_cfg = tr.get("optimizer", {})
    lr0, momentum, wd = opt_cfg.get("lr", 0.04), opt_cfg.get("momentum", 0.9), opt_cfg.get("weight_decay", 4e-5)
    bn_momentum = tr.get("bn_momentum", 0.1)
    # ref_optim.lr_at reads train.optimizer.lr, train.lr_config, train.epochs
    sched = {"optimizer": {"lr": lr0}, "epochs": a.epochs,
             "lr_config": dict({"policy": "cosine", "warmup": "linear", "warmup_iters": 1000, "warmup_ratio": 0.001,
                                "min_lr_ratio": 1e-4, "by_epoch": True}, **tr.get("lr_config", {}))}
    images = count_images(a, a.split)
    iters = (images + a.batch - 1) // a.batch
    max_iters = iters * a.epochs

    model = build_model(cfg, a.layout)
    names = load_params(model, a.init)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = bn_momentum
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=momentum, weight_decay=wd)
    crit = SSDLoss(cfg)
    os.makedirs(a.run, exist_ok=True)
    metrics = open(os.path.join(a.run, "metrics.jsonl"), "w")
    name = cfg.get("name", os.path.basename(a.config))
    say(f"train_torch: {name}: {images} images, batch {a.batch}, {iters} steps per epoch, {a.epochs} epochs, "
        f"lr {lr0} momentum {momentum} wd {wd} bn_momentum {bn_momentum}, torch {torch.__version__} "
        f"{torch.get_num_threads()} threads, {a.layout}, init {a.init} -> {a.run}")
    data = Batches(a, a.epochs)
    say(f"train_torch: data: {data.command}")

    t_start = time.perf_counter()
    last, cpu_last = t_start, time.process_time()
    cpu_start = cpu_last
    step, epoch, epoch_steps, times, ips_all, data_s_total = 0, 0, 0, [], [], 0.0
    smooth = None
    complete = True
    t_wait = time.perf_counter()
    for rec in data:
        _, t, meta = rec
        data_s = time.perf_counter() - t_wait
        e = int(meta.get("epoch", epoch))
        if e != epoch:
            if epoch_steps and (epoch + 1) % a.save_every == 0:
                save_params(model, names, os.path.join(a.run, f"epoch_{epoch + 1}.tns"),
                            {"step": step, "epoch": epoch + 1, "config": name})
            epoch, epoch_steps = e, 0
        lr = lr_at(sched, step, epoch, max_iters)
        for g in opt.param_groups:
            g["lr"] = lr
        size = int(meta["size"])
        img = torch.from_numpy(t["image"])
        if a.layout == "channels_last":
            img = img.contiguous(memory_format=torch.channels_last)
        cls, reg = model(img)
        if step < a.check_loss:
            say(f"train_torch: step {step + 1} " + check_loss(crit, cls, reg, rec, size))
        lc, lb, npos, nneg = crit(cls, reg, torch.from_numpy(t["boxes"]), torch.from_numpy(t["labels"]),
                                  t["nbox"], size)
        loss = lc + lb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        epoch_steps += 1
        now = time.perf_counter()
        dt, last = now - last, now
        cpu = time.process_time()
        cpu_dt, cpu_last = cpu - cpu_last, cpu
        n = int(t["image"].shape[0])
        times.append(dt)
        ips_all.append(n / dt)
        data_s_total += data_s
        smooth = dt if smooth is None else 0.9 * smooth + 0.1 * dt
        row = {"step": step, "epoch": epoch, "lr": lr, "loss": float(loss), "loss_cls": float(lc),
               "loss_bbox": float(lb), "num_pos": npos, "num_neg": nneg, "images": n, "images_per_s": n / dt,
               "data_s": data_s, "cpu_s": cpu_dt, "load1": os.getloadavg()[0],
               "eta_s": (max_iters - step) * smooth}
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        if step % a.log_every == 0 or step <= a.check_loss:
            eta = int(row["eta_s"])
            say(f"epoch {epoch + 1} iter {epoch_steps}/{iters} loss {float(loss):.3g} (cls {float(lc):.3g} "
                f"reg {float(lb):.3g}) lr {lr:.4f} {n / smooth:.1f} img/s "
                f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        if a.max_steps and step >= a.max_steps:
            complete = False
            break
        t_wait = time.perf_counter()
    t_end = time.perf_counter()
    cpu_total = time.process_time() - cpu_start
    data_cpu = data.cpu_seconds()
    data.close(complete)
    done_epoch = epoch + 1 if epoch_steps == iters else epoch
    meta = {"step": step, "epoch": done_epoch, "config": name}
    if epoch_steps == iters:
        save_params(model, names, os.path.join(a.run, f"epoch_{epoch + 1}.tns"), meta)
    save_params(model, names, os.path.join(a.run, "latest.tns"), meta)
    summary = {"steps": step, "epochs_done": done_epoch, "images": images, "batch": a.batch,
               "wall_s": t_end - t_start, "step_time_s": sum(times), "data_wait_s": data_s_total,
               "cpu_s": cpu_total, "data_tools_cpu_s": data_cpu,
               "median_images_per_s": statistics.median(ips_all), "best_images_per_s": max(ips_all),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "layout": a.layout,
               "init": a.init, "config": a.config, "data_command": data.command,
               "command": shlex.join([sys.executable] + sys.argv)}
    json.dump(summary, open(os.path.join(a.run, "summary.json"), "w"), indent=1)
    say(f"train_torch: {step} steps done (epoch {done_epoch}), {sum(times):.1f} s of steps "
        f"({data_s_total:.1f} s waiting for data), median {summary['median_images_per_s']:.2f} img/s, "
        f"best {summary['best_images_per_s']:.2f}; {a.run}/latest.tns")


# ---------------------------------------------------------------- predict

def cmd_predict(a):
    """batch records (augment --eval) in, pred records out, as `forward --weights`."""
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    model = build_model(cfg, a.layout)
    load_params(model, a.weights)
    model.eval()
    out = sys.stdout.buffer
    if out.isatty():
        sys.exit("train_torch.py predict: binary output refuses a terminal")
    for kind, t, meta in tnsfile.stream(sys.stdin.buffer):
        if kind != "batch":
            out.write(tnsfile.encode(kind, t, meta, level=1))
            continue
        img = torch.from_numpy(t["image"])
        if a.layout == "channels_last":
            img = img.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            cls, reg = model(img)
        tensors = {"cls": cls.contiguous().numpy(), "reg": reg.contiguous().numpy()}
        tensors.update({k: v for k, v in t.items() if k != "image"})
        out.write(tnsfile.encode("pred", tensors, dict(meta, size=int(t["image"].shape[2])), level=1))
        out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("config")
    t.add_argument("--init", required=True, help="params .tns to start from")
    t.add_argument("--run", required=True, help="run directory")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--size", type=int, help="network input (default: the config's data.size)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float)
    t.add_argument("--max-steps", type=int, default=0, help="stop after N steps (the schedule stays the run's)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--layout", choices=("nchw", "channels_last"), default="nchw")
    t.add_argument("--save-every", type=int, default=3, help="epoch_K.tns every K epochs (and the last)")
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--check-loss", type=int, default=0, metavar="N")
    t.add_argument("--bin", default=os.path.join(ROOT, "bin"))
    t.add_argument("--data")
    t.add_argument("--classes")
    t.add_argument("--split")
    p = sub.add_parser("predict")
    p.add_argument("config")
    p.add_argument("--weights", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layout", choices=("nchw", "channels_last"), default="nchw")
    a = ap.parse_args()
    (cmd_train if a.cmd == "train" else cmd_predict)(a)


if __name__ == "__main__":
    main()
