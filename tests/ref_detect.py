#!/usr/bin/python3
"""Reference for ssd-decode and map-eval, written from mmdetection 2.x's semantics
(SSDAnchorGenerator, DeltaXYWHBBoxCoder, SSDHead test-time post-processing, eval_map for
VOC), in numpy. Writes the fixtures in tests/fixtures/detect/ that the C unit tests and
bats tests compare against (CI has no numpy):

  anchors.tns          kind "anchors": boxes f32[A,4] for several input sizes / configs
  coder.tns            kind "coder": anchors, gt, deltas (encode), raw deltas, decoded
  pred_small.tns       pred records (S=64, 20 classes, 3 images) and a "note" record
  pred_320.tns         one pred record at S=320, 3 classes (per-level top-k is active)
  dets_*.tns           the dets records expected from them (see cases.json)
  eval_random_{a,b}.tns  dets records of 40 random images as two shards (6 classes:
                       difficult gts, duplicate gts, zero-area gts, score ties, a class
                       without gts, a class without dets, images without dets)
  eval_bccd.tns        dets records: the BCCD test split's gts with perturbed boxes as dets
                       (the last 5 images have no dets)
  bad_*.tns            broken pred records (reg f32[1,392,3], no meta.size, size 96 with
                       the anchors of 64)
  oracle_bccd.tns      pred records at S=320 whose logits / deltas encode the BCCD test gts
  cases.json           which pred gives which dets with which parameters, and the expected
                       eval results (mAP, per-class gts, dets, recall, ap) per case, mode
                       (11points, area) and coordinates (legacy: w = x2 - x1 + 1, or not)

Run: /usr/bin/python3 tests/ref_detect.py  (from the repository root)
"""
import json
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "detect")
BCCD = os.path.join(ROOT, "..", "shared", "data", "bccd")
F32 = np.float32

DEFAULT_ANCHORS = dict(strides=[8, 16, 32, 64, 128, 256], ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2]],
                       basesize_ratio_range=[0.1, 0.9], scale_major=False, center_offset=0.0)
DEFAULT_CODER = dict(means=[0.0, 0.0, 0.0, 0.0], stds=[0.1, 0.1, 0.2, 0.2], wh_ratio_clip=16 / 1000)
DEFAULT_TEST = dict(nms_pre=1000, score_thr=0.02, nms_iou=0.45, max_per_img=200)


class Ambiguous(Exception):
    """A value lies so close to a threshold that float rounding could decide it."""


# ---------------------------------------------------------------- anchors

def base_sizes(S, L, lo, hi):
    min_r, max_r = int(lo * 100), int(hi * 100)
    step = int(np.floor(max_r - min_r) / (L - 2))
    mins, maxs = [], []
    for r in range(min_r, max_r + 1, step):
        mins.append(int(S * r / 100))
        maxs.append(int(S * (r + step) / 100))
    # mmdet has these for S = 300 (0.15, 0.2) and 512 (0.1, 0.15); we use them for any S
    first = {0.1: (4, 10), 0.15: (7, 15), 0.2: (10, 20)}[lo]
    mins.insert(0, int(S * first[0] / 100))
    maxs.insert(0, int(S * first[1] / 100))
    assert len(mins) == L, (mins, L)
    return mins, maxs


def base_anchors(stride, mn, mx, ratios, scale_major, center_offset):
    """float32 as mmdet (torch.Tensor of scales and ratios)."""
    scales = np.array([1.0, np.sqrt(mx / mn)], dtype=F32)
    rat = [1.0]
    for r in ratios:
        rat += [1 / r, r]
    rat = np.array(rat, dtype=F32)
    h_r = np.sqrt(rat)
    w_r = F32(1) / h_r
    b = F32(mn)
    if scale_major:
        ws = (b * w_r[:, None] * scales[None, :]).ravel()
        hs = (b * h_r[:, None] * scales[None, :]).ravel()
    else:
        ws = (b * scales[:, None] * w_r[None, :]).ravel()
        hs = (b * scales[:, None] * h_r[None, :]).ravel()
    c = F32((stride - center_offset) / 2)
    boxes = np.stack([c - F32(0.5) * ws, c - F32(0.5) * hs, c + F32(0.5) * ws, c + F32(0.5) * hs], -1)
    R = len(rat)
    return boxes[[0, R] + list(range(1, R))]


def anchors(S, cfg=DEFAULT_ANCHORS):
    """All anchors [A,4] f32 and the levels' (first, count)."""
    L = len(cfg["strides"])
    mins, maxs = base_sizes(S, L, *cfg["basesize_ratio_range"])
    out, levels, first = [], [], 0
    for k, s in enumerate(cfg["strides"]):
        base = base_anchors(s, mins[k], maxs[k], cfg["ratios"][k], cfg["scale_major"], cfg["center_offset"])
        f = -(-S // s)
        xs = np.arange(f, dtype=F32) * F32(s)
        sy, sx = np.meshgrid(xs, xs, indexing="ij")
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], -1)
        a = (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)
        out.append(a)
        levels.append((first, len(a)))
        first += len(a)
    return np.concatenate(out).astype(F32), levels


# ---------------------------------------------------------------- box coder

def decode(anc, deltas, coder=DEFAULT_CODER, max_shape=None):
    d = deltas.astype(F32) * np.array(coder["stds"], F32) + np.array(coder["means"], F32)
    r = F32(abs(np.log(coder["wh_ratio_clip"])))
    dw, dh = np.clip(d[:, 2], -r, r), np.clip(d[:, 3], -r, r)
    px, py = (anc[:, 0] + anc[:, 2]) * F32(0.5), (anc[:, 1] + anc[:, 3]) * F32(0.5)
    pw, ph = anc[:, 2] - anc[:, 0], anc[:, 3] - anc[:, 1]
    gw, gh = pw * np.exp(dw), ph * np.exp(dh)
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    b = np.stack([gx - gw * F32(0.5), gy - gh * F32(0.5), gx + gw * F32(0.5), gy + gh * F32(0.5)], -1)
    if max_shape is not None:
        b[:, 0::2] = np.clip(b[:, 0::2], 0, max_shape[1])
        b[:, 1::2] = np.clip(b[:, 1::2], 0, max_shape[0])
    return b.astype(F32)


def encode(anc, gt, coder=DEFAULT_CODER):
    px, py = (anc[:, 0] + anc[:, 2]) * F32(0.5), (anc[:, 1] + anc[:, 3]) * F32(0.5)
    pw, ph = anc[:, 2] - anc[:, 0], anc[:, 3] - anc[:, 1]
    gx, gy = (gt[:, 0] + gt[:, 2]) * F32(0.5), (gt[:, 1] + gt[:, 3]) * F32(0.5)
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    d = np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], -1).astype(np.float64)
    return ((d - np.array(coder["means"])) / np.array(coder["stds"])).astype(F32)


# ---------------------------------------------------------------- test-time post-processing

def iou_one_many(a, b):
    """IoU (float64, no +1) of box a with boxes b."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    w = np.maximum(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0)
    h = np.maximum(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(F32).eps)


def nms(boxes, order, thr, margin):
    keep, alive = [], np.ones(len(order), bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(order[i])
        rest = np.nonzero(alive[i + 1:])[0] + i + 1
        if len(rest):
            ious = iou_one_many(boxes[order[i]], boxes[order[rest]])
            if np.any(np.abs(ious - thr) < margin):
                raise Ambiguous("nms iou")
            alive[rest[ious > thr]] = False
    return keep


def softmax(x):
    x = x.astype(F32)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def detect(cls, reg, S, sf, test=DEFAULT_TEST, acfg=DEFAULT_ANCHORS, coder=DEFAULT_CODER):
    """One image: cls [A,C+1], reg [A,4], scale factor [4] -> boxes, scores, labels."""
    anc, levels = anchors(S, acfg)
    assert len(anc) == len(cls)
    C = cls.shape[1] - 1
    probs = softmax(cls)[:, :C]
    cand = []
    for first, count in levels:
        idx = np.arange(first, first + count)
        if test["nms_pre"] > 0 and count > test["nms_pre"]:
            mx = probs[idx].max(1)
            order = np.lexsort((idx, -mx))
            k = test["nms_pre"]
            if 0 < mx[order[k - 1]] - mx[order[k]] < 1e-6:  # exact ties are decided by index
                raise Ambiguous("top-k boundary")
            idx = np.sort(idx[order[:k]])
        cand.append(idx)
    cand = np.concatenate(cand)
    boxes = decode(anc[cand], reg[cand], coder, (S, S)) / sf.astype(F32)
    kept = []
    for c in range(C):
        s = probs[cand, c]
        if np.any(np.abs(s.astype(np.float64) - test["score_thr"]) < 1e-6):
            raise Ambiguous("score threshold")
        ids = np.nonzero(s > test["score_thr"])[0]
        order = ids[np.lexsort((ids, -s[ids]))]
        for k in nms(boxes, order, test["nms_iou"], 2e-5):
            kept.append((float(s[k]), c, int(k)))
    kept.sort(key=lambda t: (-t[0], t[1], t[2]))
    m = test["max_per_img"]
    if len(kept) > m and 0 < kept[m - 1][0] - kept[m][0] < 1e-6:
        raise Ambiguous("max_per_img boundary")
    kept = kept[:m]
    return (boxes[[k for _, _, k in kept]].reshape(-1, 4).astype(F32), np.array([s for s, _, _ in kept], F32),
            np.array([c for _, c, _ in kept], np.int32))


# ---------------------------------------------------------------- eval_map

def iou_eval(d, g, extra):
    """mmdet's bbox_overlaps in float32 and its order of operations."""
    e = F32(extra)
    a1 = (d[:, 2] - d[:, 0] + e) * (d[:, 3] - d[:, 1] + e)
    a2 = (g[:, 2] - g[:, 0] + e) * (g[:, 3] - g[:, 1] + e)
    w = np.maximum(np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0]) + e, F32(0))
    h = np.maximum(np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1]) + e, F32(0))
    ov = w * h
    union = np.maximum(a1[:, None] + a2[None, :] - ov, np.finfo(F32).eps)
    return (ov / union).astype(F32)


def eval_map(images, C, mode="11points", legacy=True, iou_thr=0.5):
    """images: list of dicts id, index, gt_boxes, gt_labels, gt_difficult, boxes, scores, labels."""
    extra = 1.0 if legacy else 0.0
    images = sorted(images, key=lambda im: (im["index"], im["id"]))
    eps = np.finfo(np.float64).eps
    res = []
    for c in range(C):
        flags, scores, gts, ndet = [], [], 0, 0
        for im in images:
            gl, gd = im["gt_labels"], im["gt_difficult"].astype(bool)
            normal = np.nonzero((gl == c) & ~gd)[0]
            ignore = np.nonzero((gl == c) & gd)[0]
            gts += len(normal)
            g = im["gt_boxes"][np.concatenate([normal, ignore]).astype(int)].reshape(-1, 4)
            di = np.nonzero(im["labels"] == c)[0]
            di = di[np.argsort(-im["scores"][di], kind="stable")]
            covered = np.zeros(len(g), bool)
            ious = iou_eval(im["boxes"][di].reshape(-1, 4), g, extra) if len(g) and len(di) else None
            for k in range(len(di)):
                f = 0
                if ious is not None:
                    j = int(np.argmax(ious[k]))
                    if ious[k, j] >= F32(iou_thr):
                        if j >= len(normal):
                            f = 2
                        elif not covered[j]:
                            covered[j], f = True, 1
                flags.append(f)
                scores.append(im["scores"][di[k]])
            ndet += len(di)
        order = np.argsort(-np.array(scores, F32), kind="stable")
        fl = np.array(flags, int)[order] if flags else np.zeros(0, int)
        tp, fp = np.cumsum(fl == 1).astype(np.float64), np.cumsum(fl == 0).astype(np.float64)
        rec = tp / max(gts, eps)
        prec = tp / np.maximum(tp + fp, eps)
        if mode == "11points":
            ap = 0.0
            for t in np.arange(0, 1 + 1e-3, 0.1):
                p = prec[rec >= t]
                ap += p.max() if p.size else 0.0
            ap /= 11
        else:
            mrec = np.concatenate([[0.0], rec, [1.0]])
            mpre = np.concatenate([[0.0], prec, [0.0]])
            for i in range(len(mpre) - 1, 0, -1):
                mpre[i - 1] = max(mpre[i - 1], mpre[i])
            i = np.nonzero(mrec[1:] != mrec[:-1])[0]
            ap = float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
        res.append(dict(gts=int(gts), dets=int(ndet), recall=float(rec[-1]) if len(rec) else 0.0, ap=float(ap)))
    aps = [r["ap"] for r in res if r["gts"] > 0]
    return dict(mAP=float(np.mean(aps)) if aps else 0.0, classes=res)


def eval_all(images, C):
    return {f"{mode}{'' if legacy else '_nolegacy'}": eval_map(images, C, mode, legacy)
            for mode in ("11points", "area") for legacy in (True, False)}


# ---------------------------------------------------------------- records

def dets_record(im, C):
    meta = dict(id=im["id"], index=im["index"], width=im["width"], height=im["height"], num_classes=C)
    return ("dets", dict(boxes=im["boxes"].reshape(-1, 4).astype(F32), scores=im["scores"].astype(F32),
                         labels=im["labels"].astype(np.int32), gt_boxes=im["gt_boxes"].reshape(-1, 4).astype(F32),
                         gt_labels=im["gt_labels"].astype(np.int32),
                         gt_difficult=im["gt_difficult"].astype(np.uint8)), meta)


def pred_record(ims, S, cls, reg):
    """ims: list of dicts id, index, width, height, gt_boxes, gt_labels, gt_difficult."""
    N = len(ims)
    M = max([len(im["gt_labels"]) for im in ims] + [1])
    boxes = np.zeros((N, M, 4), F32)
    labels = np.full((N, M), -1, np.int32)
    diff = np.zeros((N, M), np.uint8)
    nbox = np.zeros(N, np.int32)
    sf = np.zeros((N, 4), F32)
    osz = np.zeros((N, 2), np.int32)
    for i, im in enumerate(ims):
        n = len(im["gt_labels"])
        boxes[i, :n], labels[i, :n], diff[i, :n], nbox[i] = im["gt_boxes"], im["gt_labels"], im["gt_difficult"], n
        sf[i] = scale_factor(S, im["width"], im["height"])
        osz[i] = (im["height"], im["width"])
    meta = dict(ids=[im["id"] for im in ims], indices=[im["index"] for im in ims], epoch=0, size=S, mode="eval",
                boxes_frame="original")
    return ("pred", dict(cls=cls.astype(F32), reg=reg.astype(F32), boxes=boxes, labels=labels, difficult=diff,
                         nbox=nbox, scale_factor=sf, orig_size=osz), meta)


def scale_factor(S, w, h):
    return np.array([S / w, S / h, S / w, S / h], F32)


def random_gt(rng, w, h, n, C):
    x1, y1 = rng.integers(0, w - 20, n), rng.integers(0, h - 20, n)
    x2 = np.minimum(x1 + rng.integers(8, w // 2, n), w)
    y2 = np.minimum(y1 + rng.integers(8, h // 2, n), h)
    return (np.stack([x1, y1, x2, y2], -1).astype(F32), rng.integers(0, C, n).astype(np.int32),
            (rng.random(n) < 0.2).astype(np.uint8))


def random_pred(seed, S, C, N, first_index, test):
    """Random logits (mostly background) and deltas (some extreme, for the dw/dh clamp);
    retries seeds until no value is ambiguous at the thresholds."""
    A = len(anchors(S)[0])
    for attempt in range(100):
        rng = np.random.default_rng(seed * 1000 + attempt)
        cls = np.concatenate([rng.normal(-1, 1.5, (N, A, C)), rng.normal(2, 1, (N, A, 1))], -1).astype(F32)
        reg = rng.normal(0, 1, (N, A, 4)).astype(F32)
        reg[rng.random((N, A, 4)) < 0.01] *= 40
        ims = []
        for i in range(N):
            w, h = int(rng.integers(100, 700)), int(rng.integers(100, 700))
            b, l, d = random_gt(rng, w, h, int(rng.integers(0, 5)), C)
            ims.append(dict(id=f"img{first_index + i:03d}", index=first_index + i, width=w, height=h,
                            gt_boxes=b, gt_labels=l, gt_difficult=d))
        try:
            outs = [detect(cls[i], reg[i], S, scale_factor(S, im["width"], im["height"]), test)
                    for i, im in enumerate(ims)]
        except Ambiguous:
            continue
        return pred_record(ims, S, cls, reg), ims, outs
    raise RuntimeError("no unambiguous draw")


def expected_dets(ims, outs, C):
    recs = []
    for im, (b, s, l) in zip(ims, outs):
        recs.append(dets_record(dict(im, boxes=b, scores=s, labels=l), C))
    return recs


# ---------------------------------------------------------------- BCCD

def bccd_test(classes):
    ids = open(os.path.join(BCCD, "ImageSets", "Main", "test.txt")).read().split()
    ims = []
    for index, i in enumerate(ids):
        t = ET.parse(os.path.join(BCCD, "Annotations", i + ".xml")).getroot()
        w, h = int(t.find("size/width").text), int(t.find("size/height").text)
        boxes, labels, diff = [], [], []
        for o in t.findall("object"):
            bb = o.find("bndbox")
            boxes.append([int(float(bb.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(classes.index(o.find("name").text.strip()))
            d = o.find("difficult")
            diff.append(int(d.text) if d is not None else 0)
        ims.append(dict(id=i, index=index, width=w, height=h, gt_boxes=np.array(boxes, F32).reshape(-1, 4),
                        gt_labels=np.array(labels, np.int32), gt_difficult=np.array(diff, np.uint8)))
    return ims


def jitter_dets(rng, im, C, p_hit, n_fp, p_dup, quant):
    """Dets near im's gts (some missed, some duplicated, some mislabelled) plus false positives."""
    w, h = im["width"], im["height"]
    boxes, scores, labels = [], [], []
    for b, l in zip(im["gt_boxes"], im["gt_labels"]):
        for _ in range(1 + (rng.random() < p_dup)):
            if rng.random() > p_hit:
                continue
            bw, bh = b[2] - b[0] + 1, b[3] - b[1] + 1
            j = b + rng.normal(0, 0.12, 4) * np.array([bw, bh, bw, bh])
            boxes.append(j)
            labels.append(l if rng.random() > 0.1 else rng.integers(0, C))
            scores.append(rng.random())
    for _ in range(int(rng.integers(0, n_fp + 1))):
        x, y = rng.random() * w * 0.8, rng.random() * h * 0.8
        boxes.append([x, y, x + rng.random() * w * 0.3 + 2, y + rng.random() * h * 0.3 + 2])
        labels.append(rng.integers(0, C))
        scores.append(rng.random() * 0.7)
    scores = np.array(scores, np.float64)
    if quant:  # exact ties inside and across images
        scores = np.round(scores * quant) / quant
    return (np.array(boxes, F32).reshape(-1, 4), scores.astype(F32), np.array(labels, np.int32))


def oracle_pred(im, S, C, margin_rng):
    """Logits and deltas that encode im's gts: anchors with IoU >= 0.5 to a gt (and each gt's
    best anchor) predict it, the rest background (foreground scores ~0.017 < 0.02)."""
    anc, _ = anchors(S)
    A = len(anc)
    cls = np.zeros((A, C + 1), F32)
    cls[:, C] = 4
    reg = np.zeros((A, 4), F32)
    sf = scale_factor(S, im["width"], im["height"])
    g = np.clip(im["gt_boxes"] * sf, 0, S).astype(F32)
    if len(g):
        ious = np.stack([iou_one_many(b, anc) for b in g], 1)  # [A, G]
        best = ious.argmax(1)
        bi = ious[np.arange(A), best]
        pos = bi >= 0.5
        pos[ious.argmax(0)] = True
        best[ious.argmax(0)] = np.arange(len(g))
        p = np.nonzero(pos)[0]
        cls[p, C] = 0
        cls[p, im["gt_labels"][best[p]]] = np.round(2 + 6 * ious[p, best[p]] + margin_rng.random(len(p)) * 0.01, 4)
        reg[p] = encode(anc[p], g[best[p]])
    return cls, reg


# ---------------------------------------------------------------- main

def main():
    os.makedirs(OUT, exist_ok=True)
    cases = dict(pred=[], eval={})

    # anchors
    recs = []
    for S, cfg, name in [(512, DEFAULT_ANCHORS, "default"), (320, DEFAULT_ANCHORS, "default"),
                         (300, dict(strides=[8, 16, 32, 64, 100, 300], ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                                    basesize_ratio_range=[0.2, 0.9], scale_major=False, center_offset=0.0), "ssd300voc"),
                         (128, dict(DEFAULT_ANCHORS, basesize_ratio_range=[0.15, 0.9], scale_major=True,
                                    center_offset=1.0), "variant")]:
        a, levels = anchors(S, cfg)
        recs.append(("anchors", dict(boxes=a), dict(size=S, name=name, config=cfg,
                                                    levels=[c for _, c in levels])))
        print(f"anchors {name} S={S}: {len(a)}")
    tnsfile.write(os.path.join(OUT, "anchors.tns"), recs, level=19)

    # box coder
    rng = np.random.default_rng(7)
    anc = anchors(320)[0][rng.choice(9620, 500, replace=False)]
    gt = np.clip(anc + rng.normal(0, 20, anc.shape).astype(F32), -50, 400).astype(F32)
    gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2] + 1)
    raw = rng.normal(0, 1, (500, 4)).astype(F32)
    raw[::7] *= 60  # beyond the dw/dh clamp
    tnsfile.write(os.path.join(OUT, "coder.tns"), [("coder", dict(
        anchors=anc, gt=gt, deltas=encode(anc, gt), raw=raw, decoded=decode(anc, raw),
        decoded_clip=decode(anc, raw, max_shape=(320, 320))), dict(clip=320))], level=19)

    # pred -> dets
    small = dict(DEFAULT_TEST)
    strict = dict(nms_pre=50, score_thr=0.3, nms_iou=0.3, max_per_img=10)
    rec, ims, outs = random_pred(1, 64, 20, 3, 0, small)
    note = ("note", dict(x=np.arange(3, dtype=np.int32)), dict(why="passes through"))
    tnsfile.write(os.path.join(OUT, "pred_small.tns"), [rec, note])
    tnsfile.write(os.path.join(OUT, "dets_small.tns"), expected_dets(ims, outs, 20) + [note])
    cases["pred"].append(dict(pred="pred_small.tns", dets="dets_small.tns", test=small))
    outs2 = [detect(rec[1]["cls"][i], rec[1]["reg"][i], 64, rec[1]["scale_factor"][i], strict)
             for i in range(len(ims))]
    tnsfile.write(os.path.join(OUT, "dets_small_strict.tns"), expected_dets(ims, outs2, 20) + [note])
    cases["pred"].append(dict(pred="pred_small.tns", dets="dets_small_strict.tns", test=strict))
    rec, ims, outs = random_pred(2, 320, 3, 1, 10, DEFAULT_TEST)
    tnsfile.write(os.path.join(OUT, "pred_320.tns"), [rec])
    tnsfile.write(os.path.join(OUT, "dets_320.tns"), expected_dets(ims, outs, 3))
    cases["pred"].append(dict(pred="pred_320.tns", dets="dets_320.tns", test=DEFAULT_TEST))
    # broken preds for the bats tests (S=64, 2 classes, 1 image)
    rng = np.random.default_rng(4)
    good = pred_record(ims[:1], 64, rng.normal(0, 1, (1, 392, 3)), rng.normal(0, 1, (1, 392, 4)))
    bad = dict(good[1], reg=good[1]["reg"][:, :, :3].copy())
    tnsfile.write(os.path.join(OUT, "bad_reg.tns"), [good, ("pred", bad, good[2])])
    tnsfile.write(os.path.join(OUT, "bad_nosize.tns"), [("pred", good[1], {k: v for k, v in good[2].items()
                                                                           if k != "size"})])
    tnsfile.write(os.path.join(OUT, "bad_anchors.tns"), [("pred", good[1], dict(good[2], size=96))])
    print("pred cases:", [(c["dets"], sum(len(r[1]["scores"]) for r in tnsfile.read(os.path.join(OUT, c["dets"]))
                                           if r[0] == "dets")) for c in cases["pred"]])

    # eval: random images, 6 classes; class 4 has no gts, class 5 no dets
    rng = np.random.default_rng(11)
    C = 6
    ims = []
    for index in range(40):
        w, h = int(rng.integers(150, 500)), int(rng.integers(150, 500))
        n = int(rng.integers(0, 7))
        b, l, d = random_gt(rng, w, h, n, C)
        l[l == 4] = 5
        if n and index % 5 == 0:  # a duplicated gt
            b, l, d = np.concatenate([b, b[:1]]), np.concatenate([l, l[:1]]), np.concatenate([d, [0]]).astype(np.uint8)
        if n and index % 7 == 3:  # a zero-area gt
            b[0, 2] = b[0, 0]
        im = dict(id=f"rand{index:03d}", index=index, width=w, height=h, gt_boxes=b, gt_labels=l, gt_difficult=d)
        db, ds, dl = jitter_dets(rng, im, C, 0.8, 4, 0.3, 10 if index % 2 else 0)
        keep = dl != 5
        im.update(boxes=db[keep], scores=ds[keep], labels=dl[keep])
        if index % 9 == 4:
            im.update(boxes=np.zeros((0, 4), F32), scores=np.zeros(0, F32), labels=np.zeros(0, np.int32))
        ims.append(im)
    order = rng.permutation(len(ims))
    tnsfile.write(os.path.join(OUT, "eval_random_a.tns"), [dets_record(ims[i], C) for i in order[:17]])
    tnsfile.write(os.path.join(OUT, "eval_random_b.tns"), [dets_record(ims[i], C) for i in order[17:]])
    cases["eval"]["random"] = dict(files=["eval_random_a.tns", "eval_random_b.tns"], classes=C,
                                   expected=eval_all(ims, C))

    # eval: BCCD test split, perturbed gts as dets; the last 5 records have no dets
    classes = [x.strip() for x in open(os.path.join(ROOT, "configs", "bccd.classes")) if x.strip()]
    ims = bccd_test(classes)
    rng = np.random.default_rng(5)
    for k, im in enumerate(ims):
        db, ds, dl = jitter_dets(rng, im, len(classes), 0.85, 3, 0.15, 0)
        if k >= len(ims) - 5:
            db, ds, dl = np.zeros((0, 4), F32), np.zeros(0, F32), np.zeros(0, np.int32)
        im.update(boxes=db, scores=ds, labels=dl)
    tnsfile.write(os.path.join(OUT, "eval_bccd.tns"), [dets_record(im, len(classes)) for im in ims])
    cases["eval"]["bccd"] = dict(files=["eval_bccd.tns"], classes=len(classes), expected=eval_all(ims, len(classes)))

    # BCCD oracle preds at 320 (batches of 8) and what ssd-decode | map-eval must make of them
    ims = bccd_test(classes)
    mrng = np.random.default_rng(3)
    recs, dets = [], []
    for b0 in range(0, len(ims), 8):
        batch = ims[b0:b0 + 8]
        pr = [oracle_pred(im, 320, len(classes), mrng) for im in batch]
        recs.append(pred_record(batch, 320, np.stack([p[0] for p in pr]), np.stack([p[1] for p in pr])))
        for im, (c, r) in zip(batch, pr):
            b, s, l = detect(c, r, 320, scale_factor(320, im["width"], im["height"]))
            dets.append(dict(im, boxes=b, scores=s, labels=l))
    tnsfile.write(os.path.join(OUT, "oracle_bccd.tns"), recs, level=19)
    cases["eval"]["oracle_bccd"] = dict(pred="oracle_bccd.tns", classes=len(classes),
                                        expected=eval_all(dets, len(classes)))

    for name, c in cases["eval"].items():
        print(f"eval {name}: " + ", ".join(f"{k} mAP {v['mAP']:.6f}" for k, v in c["expected"].items()))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
