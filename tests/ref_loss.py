#!/usr/bin/python3
"""Reference for `loss`: mmdetection 2.x's SSDHead training loss, written in torch from
its definitions (MaxIoUAssigner, DeltaXYWH bbox2delta, F.cross_entropy with hard negative
mining, smooth L1), the gradient w.r.t. the head outputs from autograd. Writes the
fixtures in tests/fixtures/loss/ that the C unit test and the bats tests compare against
(CI has no torch):

  small.tns        two pred records at S=64 (C=20 classes; the first of 5 images: no gt;
                   tiny boxes, a zero-area box, boxes on the border and the whole image;
                   a crowded image with duplicate gts; identical logits everywhere (ties
                   in the mining); a plain one), each followed by a "grads" record (as
                   forward sends), and a "note" record at the end
  custom.tns       one pred record at S=96 for custom.json (other train thresholds, ratio
                   2, beta 0.5, other coder stds: ignored anchors exist)
  s320.tns         one pred record at S=320, 3 classes, 2 images of 18 and 6 boxes
  *_expect.tns     per pred record one "expect" record: assigned i32[N,A] (mmdet's
                   assigned_gt_inds: -1 ignored, 0 background, g + 1 = box g of the image),
                   labels i32[N,A] (-1 ignored, 0..C-1, C background), selected u8[N,A]
                   (positives and kept negatives), cls f32[N,A,C+1] and reg f32[N,A,4] =
                   dloss/dpred; meta loss_cls, loss_bbox, loss, num_pos, num_neg,
                   num_total_pos
  bad_*.tns        broken pred records for the error tests

Semantics, and the two deliberate differences from mmdet (boxes without area are left
out; ignored anchors are not counted among the negatives), as lib/ssd/ssd_loss.h says. The
hard-negative choice among equal losses goes to the lower anchor index (a stable sort;
torch's topk leaves it unspecified). Cases whose outcome float rounding could decide
(a mined loss within 1e-5 of the next one, unequal) are rejected and re-drawn.

Run: /usr/bin/python3 tests/ref_loss.py  (from the repository root)
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402
from ref_detect import DEFAULT_ANCHORS, DEFAULT_CODER, anchors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "loss")
F32 = np.float32
DEFAULT_TRAIN = dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, neg_pos_ratio=3, smoothl1_beta=1.0)


class Ambiguous(Exception):
    """Float rounding could decide the case: draw it again."""


# ---------------------------------------------------------------- mmdet pieces, in torch

def bbox_overlaps(gt, anc, eps=1e-6):
    """[G, A] IoU as mmdet 2.x's bbox_overlaps (no +1), float32."""
    area1 = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    area2 = (anc[:, 2] - anc[:, 0]) * (anc[:, 3] - anc[:, 1])
    lt = torch.max(gt[:, None, :2], anc[None, :, :2])
    rb = torch.min(gt[:, None, 2:], anc[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - overlap
    return overlap / torch.max(union, union.new_tensor([eps]))


def first_max(v, dim):
    """max along dim and the index of its first occurrence (spelled out: the rule the C
    code must follow, whatever torch.max does on ties)."""
    m = v.max(dim=dim).values
    hit = v == m.unsqueeze(dim)
    n = v.shape[dim]
    ar = torch.arange(n).view([-1 if d == dim else 1 for d in range(v.dim())])
    idx = torch.where(hit, ar.expand_as(v), torch.full_like(ar.expand_as(v), n)).min(dim=dim).values
    return m, idx


def max_iou_assign(gt, anc, cfg):
    """mmdet's MaxIoUAssigner.assign_wrt_overlaps: assigned_gt_inds [A] (-1, 0, g + 1)."""
    A = anc.shape[0]
    G = gt.shape[0]
    if G == 0:
        return torch.zeros(A, dtype=torch.long)
    ov = bbox_overlaps(gt, anc)
    assigned = torch.full((A,), -1, dtype=torch.long)
    max_ov, argmax_ov = first_max(ov, 0)
    gt_max, gt_arg = first_max(ov, 1)
    # thresholds compare as float32, as torch does with a Python number
    neg = torch.tensor(cfg["neg_iou_thr"], dtype=torch.float32)
    pos = torch.tensor(cfg["pos_iou_thr"], dtype=torch.float32)
    assigned[(max_ov >= 0) & (max_ov < neg)] = 0
    p = max_ov >= pos
    assigned[p] = argmax_ov[p] + 1
    minpos = torch.tensor(cfg["min_pos_iou"], dtype=torch.float32)
    for i in range(G):
        if gt_max[i] >= minpos:
            assigned[gt_arg[i]] = i + 1
    return assigned


def bbox2delta(p, g, coder):
    px, py = (p[:, 0] + p[:, 2]) * 0.5, (p[:, 1] + p[:, 3]) * 0.5
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gx, gy = (g[:, 0] + g[:, 2]) * 0.5, (g[:, 1] + g[:, 3]) * 0.5
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    d = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], -1)
    return (d - d.new_tensor(coder["means"])) / d.new_tensor(coder["stds"])


def smooth_l1(pred, target, beta):
    diff = torch.abs(pred - target)
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def ssd_loss(cls, reg, boxes, labels, nbox, S, train=DEFAULT_TRAIN, acfg=DEFAULT_ANCHORS, coder=DEFAULT_CODER):
    """The loss of one pred record and everything the C test compares."""
    anc = torch.from_numpy(anchors(S, acfg)[0])
    N, A, K = cls.shape
    C = K - 1
    assert A == anc.shape[0], (A, anc.shape)
    cls_t = torch.from_numpy(cls).requires_grad_(True)
    reg_t = torch.from_numpy(reg).requires_grad_(True)
    per = []
    for n in range(N):
        g = boxes[n, :nbox[n]]
        keep = np.nonzero((g[:, 2] > g[:, 0]) & (g[:, 3] > g[:, 1]))[0]  # boxes with area
        gt = torch.from_numpy(g[keep].copy())
        a = max_iou_assign(gt, anc, train)
        kmap = torch.from_numpy(np.concatenate([keep, [0]]).astype(np.int64))  # [0]: for G = 0
        exported = torch.where(a > 0, kmap[(a - 1).clamp(min=0)] + 1, a)
        lab = torch.full((A,), C, dtype=torch.long)
        w = torch.zeros(A)
        pos = a > 0
        lab[pos] = torch.from_numpy(labels[n, keep].astype(np.int64))[a[pos] - 1]
        w[a >= 0] = 1
        per.append(dict(a=a, exported=exported, lab=lab, w=w, pos=pos, gt=gt))
    num_total_pos = sum(max(int(p["pos"].sum()), 1) for p in per)
    loss_cls = loss_bbox = 0
    num_pos = num_neg = 0
    out_labels = np.full((N, A), -1, np.int32)
    selected = np.zeros((N, A), np.uint8)
    for n, p in enumerate(per):
        ce_all = F.cross_entropy(cls_t[n], p["lab"], reduction="none") * p["w"]
        pos_idx = torch.nonzero(p["pos"]).view(-1)
        neg_idx = torch.nonzero(p["a"] == 0).view(-1)
        npos = len(pos_idx)
        k = min(train["neg_pos_ratio"] * npos, len(neg_idx))
        ce_neg = ce_all[neg_idx]
        # largest first, equal losses by lower anchor index
        order = torch.sort(-ce_neg.detach(), stable=True).indices
        if 0 < k < len(neg_idx):
            v = ce_neg.detach()[order]
            gap = float(v[k - 1] - v[k])
            if gap == 0:
                # equal losses must come from equal rows, or the C code may see them unequal
                r1, r2 = cls[n, int(neg_idx[order[k - 1]])], cls[n, int(neg_idx[order[k]])]
                if not np.array_equal(r1, r2):
                    raise Ambiguous(f"image {n}: unequal rows with equal loss at the mining cut")
            elif gap < 1e-5 * max(float(v[k - 1]), 1e-3):
                raise Ambiguous(f"image {n}: mined losses {float(v[k - 1])} and {float(v[k])} too close")
        top = order[:k]
        lc = (ce_all[pos_idx].sum() + ce_neg[top].sum()) / num_total_pos
        if npos:
            tgt = bbox2delta(anc[pos_idx], p["gt"][p["a"][pos_idx] - 1], coder)
            lb = smooth_l1(reg_t[n, pos_idx], tgt, train["smoothl1_beta"]).sum() / num_total_pos
        else:
            lb = reg_t[n].sum() * 0
        loss_cls = loss_cls + lc
        loss_bbox = loss_bbox + lb
        num_pos += npos
        num_neg += k
        lab_np = p["lab"].numpy().astype(np.int32)
        lab_np[p["a"].numpy() < 0] = -1
        out_labels[n] = lab_np
        selected[n, pos_idx.numpy()] = 1
        selected[n, neg_idx[top].numpy()] = 1
    total = loss_cls + loss_bbox
    total.backward()
    return dict(assigned=np.stack([p["exported"].numpy() for p in per]).astype(np.int32).reshape(N, A),
                labels=out_labels, selected=selected, cls=cls_t.grad.numpy().astype(F32),
                reg=reg_t.grad.numpy().astype(F32),
                meta=dict(loss_cls=float(loss_cls), loss_bbox=float(loss_bbox), loss=float(total), num_pos=num_pos,
                          num_neg=num_neg, num_total_pos=num_total_pos))


# ---------------------------------------------------------------- cases

def q(x, step=1 / 64):
    """Values on a grid: exact in float32 and better compressed."""
    return (np.round(np.asarray(x) / step) * step).astype(F32)


def pred_record(S, cls, reg, gts, step, first_index=0):
    """gts: per image a list of (x1, y1, x2, y2, label)."""
    N = len(gts)
    M = max([len(g) for g in gts] + [1])
    boxes = np.zeros((N, M, 4), F32)
    labels = np.full((N, M), -1, np.int32)
    for n, g in enumerate(gts):
        for i, (x1, y1, x2, y2, lb) in enumerate(g):
            boxes[n, i] = (x1, y1, x2, y2)
            labels[n, i] = lb
    nbox = np.array([len(g) for g in gts], np.int32)
    ids = [f"img{first_index + n:03d}" for n in range(N)]
    meta = dict(ids=ids, indices=list(range(first_index, first_index + N)), epoch=1, size=S, mode="train",
                boxes_frame="input", step=step)
    return ("pred", dict(cls=cls, reg=reg, boxes=boxes, labels=labels, nbox=nbox), meta)


def random_logits(rng, N, A, C, scale=1.5):
    x = q(rng.normal(0, scale, (N, A, C + 1)))
    x[..., C] += F32(1.0)  # background a little more likely, as a trained head
    return x


def random_boxes(rng, S, n, C, lo=0.05, hi=0.6):
    out = []
    for _ in range(n):
        w, h = rng.uniform(lo, hi, 2) * S
        x1, y1 = rng.uniform(0, S - w), rng.uniform(0, S - h)
        out.append((*q([x1, y1, x1 + w, y1 + h], 1 / 4), int(rng.integers(0, C))))
    return out


def small_case(seed):
    S, C = 64, 20
    A = len(anchors(S)[0])
    rng = np.random.default_rng(seed)
    gts = [
        [],  # no ground truth
        [(0, 0, 1, 1, 3),            # tiny, in a corner (no anchor overlaps it)
         (30.5, 30.5, 32, 33, 4),    # tiny, inside
         (10, 10, 10, 20, 5),        # zero width: left out
         (0, 0, 64, 30, 6),          # on three borders
         (40, 40, 64, 64, 7),        # bottom-right corner
         (0, 0, 64, 64, 8)],         # the whole image
        # crowded: overlapping gts around the centre, one duplicated (later one wins)
        [(20 + d, 20 + e, 44 + d, 44 + e, (d + e) % 20) for d, e in
         [(0, 0), (1, 0), (0, 1), (2, 2), (-2, 1), (3, -3), (-3, -3), (1, 2)]]
        + [(24, 24, 40, 40, 11), (24, 24, 40, 40, 12), (8, 8, 56, 56, 13), (28, 10, 36, 54, 14),
           (10, 28, 54, 36, 15), (30, 30, 34, 34, 16)],
        random_boxes(rng, S, 3, C),  # ties: every row the same logits
        random_boxes(rng, S, 4, C),
    ]
    cls = random_logits(rng, len(gts), A, C)
    cls[3] = cls[3, 0]
    reg = q(rng.normal(0, 0.7, (len(gts), A, 4)))
    rec1 = pred_record(S, cls, reg, gts, step=7)
    gts2 = [random_boxes(rng, S, 2, C), random_boxes(rng, S, 9, C, 0.1, 0.4)]
    rec2 = pred_record(S, random_logits(rng, 2, A, C, 3.0), q(rng.normal(0, 2.0, (2, A, 4))), gts2, step=8,
                       first_index=5)
    return [rec1, rec2]


def custom_case(seed):
    S, C = 96, 5
    A = len(anchors(S)[0])
    rng = np.random.default_rng(seed)
    gts = [random_boxes(rng, S, 5, C, 0.03, 0.5), random_boxes(rng, S, 1, C), [(2, 3, 5, 5, 1), (40, 40, 90, 60, 2)]]
    return [pred_record(S, random_logits(rng, 3, A, C), q(rng.normal(0, 0.5, (3, A, 4))), gts, step=0)]


def s320_case(seed):
    S, C = 320, 3
    A = len(anchors(S)[0])
    rng = np.random.default_rng(seed)
    gts = [random_boxes(rng, S, 18, C, 0.08, 0.3), random_boxes(rng, S, 6, C, 0.02, 0.9)]
    return [pred_record(S, random_logits(rng, 2, A, C), q(rng.normal(0, 0.5, (2, A, 4))), gts, step=3)]


CUSTOM = dict(train=dict(pos_iou_thr=0.6, neg_iou_thr=0.4, min_pos_iou=0.3, neg_pos_ratio=2, smoothl1_beta=0.5),
              coder=dict(means=[0.0, 0.0, 0.0, 0.0], stds=[0.1, 0.1, 0.25, 0.25], wh_ratio_clip=16 / 1000))


def expect_record(rec, train=DEFAULT_TRAIN, coder=DEFAULT_CODER):
    _, t, meta = rec
    r = ssd_loss(t["cls"], t["reg"], t["boxes"], t["labels"], t["nbox"], meta["size"], train, coder=coder)
    return ("expect", {k: r[k] for k in ("assigned", "labels", "selected", "cls", "reg")}, r["meta"])


def write_case(name, make, train=DEFAULT_TRAIN, coder=DEFAULT_CODER, grads=False):
    for seed in range(100):
        try:
            recs = make(seed)
            exp = [expect_record(r, train, coder) for r in recs]
            break
        except Ambiguous as e:
            print(f"{name}: seed {seed}: {e}; next seed")
    stream = []
    for r in recs:
        stream.append(r)
        if grads:  # what forward sends after each pred: passes through loss
            stream.append(("grads", dict(w=np.arange(6, dtype=F32)), dict(step=r[2]["step"])))
    if grads:
        stream.append(("note", {}, dict(text="end of the small case")))
    tnsfile.write(os.path.join(OUT, f"{name}.tns"), stream, level=19)
    tnsfile.write(os.path.join(OUT, f"{name}_expect.tns"), exp, level=19)
    for (_, t, m), (_, _, e) in zip(recs, exp):
        print(f"{name}: S={m['size']} N={len(t['nbox'])} A={t['cls'].shape[1]} loss_cls {e['loss_cls']:.6f} "
              f"loss_bbox {e['loss_bbox']:.6f} pos {e['num_pos']} neg {e['num_neg']}")
    return recs


def main():
    os.makedirs(OUT, exist_ok=True)
    small = write_case("small", small_case, grads=True)
    write_case("custom", custom_case, CUSTOM["train"], CUSTOM["coder"])
    write_case("s320", s320_case)
    with open(os.path.join(OUT, "custom.json"), "w") as f:
        json.dump(dict(model=dict(bbox_coder=CUSTOM["coder"], train=CUSTOM["train"])), f, indent=1)
        f.write("\n")

    # broken inputs: variations of images 1 and 4 of the first small pred record
    kind, t0, meta0 = small[0]
    pick = [1, 4]
    t = {k: v[pick].copy() for k, v in t0.items()}
    meta = dict(meta0, ids=[meta0["ids"][i] for i in pick], indices=[meta0["indices"][i] for i in pick])

    def bad(name, **change):
        tt, mm = dict(t), dict(meta)
        for k, v in change.items():
            if k.startswith("meta_"):
                if v is None:
                    mm.pop(k[5:])
                else:
                    mm[k[5:]] = v
            elif v is None:
                tt.pop(k)
            else:
                tt[k] = v
        tnsfile.write(os.path.join(OUT, f"bad_{name}.tns"), [(kind, tt, mm)], level=19)

    lab = t["labels"].copy()
    lab[0, 1] = 20
    bad("label", labels=lab)
    nan = t["cls"].copy()
    nan[1, 5, 3] = np.nan
    bad("nan", cls=nan)
    box = t["boxes"].copy()
    box[1, 0, 2] = box[1, 0, 0] - 1
    bad("box", boxes=box)
    bad("noreg", reg=None)
    bad("regshape", reg=t["reg"][..., :3].copy())
    bad("nosize", meta_size=None)
    bad("anchors", meta_size=96)
    bad("frame", meta_boxes_frame="original")
    nb = t["nbox"].copy()
    nb[0] = 99
    bad("nbox", nbox=nb)

if __name__ == "__main__":
    main()
