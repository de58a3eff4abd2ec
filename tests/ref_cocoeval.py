#!/usr/bin/python3
"""Reference for map-eval --metric coco: COCO's bbox evaluation (pycocotools' COCOeval
semantics: evaluate, accumulate, summarize) written independently in numpy, and the
generator of the fixtures tests/bats/coco.bats checks map-eval against (to 1e-9).

usage: ref_cocoeval.py gen OUT_DIR               random cases -> OUT_DIR/<case>/
       ref_cocoeval.py real OUT_DIR GT DETS...   a real case: GT (COCO JSON) and ssd-decode
                                                 dets streams -> OUT_DIR
       ref_cocoeval.py eval GT RESULTS           the 12 numbers of a COCO results JSON

A case directory holds gt.json (COCO annotations), dets.tns ("dets" records as
ssd-decode writes them: boxes f32[D,4] corners, scores f32[D], labels i32[D], meta id =
the image id, and gt_* tensors of the boxes for --metric coco without --ann),
expected.json (stats and classwise AP with gt.json as the ground truth) and
expected_records.json (the same with the records' gt_* as the ground truth: areas
w * h of the float32 corners, gt_difficult counted as iscrowd).

What the semantics are (the ones lib/eval/coco_eval.h lists): per category and image the
dets by descending score (ties in results order) capped at 100; IoU of [x, y, w, h]
boxes with a crowd gt's union being the det's area; per area range the gts that are
crowd or outside it ignored and put last; per IoU threshold a greedy match to the best
IoU >= threshold among untaken gts (crowds stay takeable), not going on to ignored gts
once a real one is held; unmatched dets outside the range ignored. Accumulation over
images in id order with maxDets 1/10/100, a 101-point interpolated precision.
"""
import json
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
AREAS = [(0.0, 1e10), (0.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 1e10)]
MAX_DETS = [1, 10, 100]


def iou_matrix(dt, gt, crowd):
    """[D, G] IoU of xywh boxes; a crowd gt's union is the det's own area."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    dx2 = dt[:, 0] + dt[:, 2]
    dy2 = dt[:, 1] + dt[:, 3]
    gx2 = gt[:, 0] + gt[:, 2]
    gy2 = gt[:, 1] + gt[:, 3]
    w = np.minimum(dx2[:, None], gx2[None, :]) - np.maximum(dt[:, None, 0], gt[None, :, 0])
    h = np.minimum(dy2[:, None], gy2[None, :]) - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = w * h
    da = dt[:, 2] * dt[:, 3]
    ga = gt[:, 2] * gt[:, 3]
    union = np.where(crowd[None, :], da[:, None], da[:, None] + ga[None, :] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / union
    return np.where((w > 0) & (h > 0), out, 0.0)


def match_image(ious, g_ign, crowd, d_area, lo, hi):
    """Greedy matching of one image's sorted dets: (matched, ignored) as [T, D] bools."""
    nd, ng = ious.shape
    matched = np.zeros((len(IOU_THRS), nd), bool)
    ignored = np.zeros((len(IOU_THRS), nd), bool)
    for t, thr in enumerate(IOU_THRS):
        taken = np.zeros(ng, bool)
        for d in range(nd):
            best, hit = min(thr, 1 - 1e-10), -1
            for g in range(ng):
                if taken[g] and not crowd[g]:
                    continue
                if hit >= 0 and not g_ign[hit] and g_ign[g]:
                    break
                if ious[d, g] >= best:
                    best, hit = ious[d, g], g
            if hit >= 0:
                taken[hit] = True
                matched[t, d] = True
                ignored[t, d] = g_ign[hit]
    outside = (d_area < lo) | (d_area > hi)
    ignored |= ~matched & outside[None, :]
    return matched, ignored


def curve(matched, ignored, scores, npos):
    """precision [T, R] and recall [T] of one category/area/maxDets."""
    order = np.argsort(-scores, kind="stable")
    m, ig = matched[:, order], ignored[:, order]
    tp = np.cumsum(m & ~ig, axis=1).astype(np.float64)
    fp = np.cumsum(~m & ~ig, axis=1).astype(np.float64)
    prec = np.zeros((len(IOU_THRS), len(REC_THRS)))
    rec = np.zeros(len(IOU_THRS))
    for t in range(len(IOU_THRS)):
        rc = tp[t] / npos
        pr = tp[t] / (tp[t] + fp[t] + np.finfo(np.float64).eps)
        rec[t] = rc[-1] if len(rc) else 0.0
        env = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        idx = np.searchsorted(rc, REC_THRS, side="left")
        ok = idx < len(env)
        prec[t, ok] = env[idx[ok]]
    return prec, rec


def evaluate(gt, dets, cat_ids=None):
    """gt: COCO dict; dets: list of {image_id, category_id, bbox, score} in results order.
    Returns (stats[12], classwise AP per category in the file's order: mmdet's cat_ids, which
    labels number)."""
    img_ids = sorted({im["id"] for im in gt["images"]})
    cat_ids = [c["id"] for c in gt["categories"]] if cat_ids is None else cat_ids
    gts, dts = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        gts[a["image_id"], a["category_id"]].append(a)
    for d in dets:
        dts[d["image_id"], d["category_id"]].append(d)
    T, R, K, A, M = len(IOU_THRS), len(REC_THRS), len(cat_ids), len(AREAS), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for k, c in enumerate(cat_ids):
        per_area = [[] for _ in AREAS]
        for i in img_ids:
            g, d = gts[i, c], dts[i, c]
            if not g and not d:
                continue
            d = [d[j] for j in np.argsort([-x["score"] for x in d], kind="stable")[:100]]
            gbox = np.array([x["bbox"] for x in g], np.float64).reshape(-1, 4)
            dbox = np.array([x["bbox"] for x in d], np.float64).reshape(-1, 4)
            crowd = np.array([bool(x.get("iscrowd", 0)) for x in g], bool)
            garea = np.array([x["area"] for x in g], np.float64)
            darea = dbox[:, 2] * dbox[:, 3]
            scores = np.array([x["score"] for x in d], np.float64)
            ious = iou_matrix(dbox, gbox, crowd)
            for a, (lo, hi) in enumerate(AREAS):
                g_ign = crowd | (garea < lo) | (garea > hi)
                go = np.argsort(g_ign, kind="stable")
                matched, ignored = match_image(ious[:, go], g_ign[go], crowd[go], darea, lo, hi)
                per_area[a].append((scores, matched, ignored, int((~g_ign).sum())))
        for a in range(A):
            if not per_area[a]:
                continue
            npos = sum(e[3] for e in per_area[a])
            if npos == 0:
                continue
            for m, md in enumerate(MAX_DETS):
                s = np.concatenate([e[0][:md] for e in per_area[a]])
                mt = np.concatenate([e[1][:, :md] for e in per_area[a]], axis=1)
                ig = np.concatenate([e[2][:, :md] for e in per_area[a]], axis=1)
                precision[:, :, k, a, m], recall[:, k, a, m] = curve(mt, ig, s, npos)

    def mean(x):
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    t50, t75 = 0, 5
    stats = [mean(precision[:, :, :, 0, 2]), mean(precision[t50, :, :, 0, 2]), mean(precision[t75, :, :, 0, 2]),
             mean(precision[:, :, :, 1, 2]), mean(precision[:, :, :, 2, 2]), mean(precision[:, :, :, 3, 2]),
             mean(recall[:, :, 0, 0]), mean(recall[:, :, 0, 1]), mean(recall[:, :, 0, 2]),
             mean(recall[:, :, 1, 2]), mean(recall[:, :, 2, 2]), mean(recall[:, :, 3, 2])]
    classwise = []
    for k in range(K):
        p = precision[:, :, k, 0, 2]
        p = p[p > -1]
        classwise.append(float(np.mean(p)) if p.size else None)
    return stats, classwise


# ---------------------------------------------------------------- streams and cases

def dets_from_records(records, cat_ids):
    """ssd-decode dets records -> results list (in record order) and the records' gts."""
    dets, rec_gt = [], []
    for kind, t, meta in records:
        if kind != "dets":
            continue
        image_id = int(meta["id"])
        b = t["boxes"].astype(np.float64)
        for j in range(len(b)):
            dets.append({"image_id": image_id, "category_id": cat_ids[int(t["labels"][j])],
                         "bbox": [b[j, 0], b[j, 1], b[j, 2] - b[j, 0], b[j, 3] - b[j, 1]],
                         "score": float(t["scores"][j])})
        if "gt_boxes" in t:
            gb = t["gt_boxes"].astype(np.float64)
            for j in range(len(gb)):
                w, h = gb[j, 2] - gb[j, 0], gb[j, 3] - gb[j, 1]
                rec_gt.append({"id": len(rec_gt) + 1, "image_id": image_id,
                               "category_id": cat_ids[int(t["gt_labels"][j])], "bbox": [gb[j, 0], gb[j, 1], w, h],
                               "area": w * h, "iscrowd": int(t["gt_difficult"][j])})
    return dets, rec_gt


def write_expected(path, gt, dets):
    stats, classwise = evaluate(gt, dets)
    with open(path, "w") as f:
        json.dump({"stats": stats, "classwise": classwise,
                   "names": [c["name"] for c in gt["categories"]]}, f, indent=1)
    return stats


def random_case(rng, n_images, cat_ids, crowd_rate, big_image):
    """A COCO gt and dets records exercising crowds, empty images, a category without
    gts, score ties, areas unlike w * h, all three size ranges and > 100 dets."""
    images, anns, records = [], [], []
    no_gt_cat = cat_ids[-1]
    ids = rng.permutation(np.arange(1, 10 * n_images))[:n_images]  # ids not in file order
    for n, image_id in enumerate(ids):
        W, H = int(rng.integers(160, 720)), int(rng.integers(160, 720))
        images.append({"id": int(image_id), "file_name": f"{image_id}.jpg", "width": W, "height": H})
        ngt = 0 if n % 7 == 3 else int(rng.integers(1, 14))
        gboxes = []
        for _ in range(ngt):
            side = float(np.exp(rng.uniform(np.log(6), np.log(min(W, H) * 0.8))))
            w = round(side * rng.uniform(0.5, 1.5), 2)
            h = round(side * rng.uniform(0.5, 1.5), 2)
            w, h = min(w, W - 1.0), min(h, H - 1.0)
            x, y = round(rng.uniform(0, W - w), 2), round(rng.uniform(0, H - h), 2)
            cat = int(rng.choice(cat_ids[:-1]))
            crowd = int(rng.random() < crowd_rate)
            area = round(w * h * rng.uniform(0.55, 1.0), 3)  # a polygon's area, not the box's
            anns.append({"id": len(anns) + 1, "image_id": int(image_id), "category_id": cat,
                         "bbox": [x, y, w, h], "area": area, "iscrowd": crowd})
            gboxes.append((x, y, w, h, cat, crowd))
        nd = 160 if n == big_image else 125 if n == big_image + 1 else int(rng.integers(0, 30))
        boxes, scores, labels = [], [], []
        for j in range(nd):
            if gboxes and rng.random() < 0.6:
                x, y, w, h, cat, _ = gboxes[int(rng.integers(len(gboxes)))]
                jit = rng.normal(0, 0.12, 4) * [w, h, w, h]
                x1, y1 = x + jit[0], y + jit[1]
                x2, y2 = x + w + jit[2], y + h + jit[3]
                if rng.random() < 0.15:
                    cat = int(rng.choice(cat_ids))
            else:
                cx, cy = rng.uniform(0, W), rng.uniform(0, H)
                s = float(np.exp(rng.uniform(np.log(4), np.log(min(W, H)))))
                x1, y1, x2, y2 = cx - s / 2, cy - s * 0.4, cx + s / 2, cy + s * 0.6
                cat = no_gt_cat if rng.random() < 0.2 else int(rng.choice(cat_ids))
            if n == big_image:
                cat = cat_ids[0]  # > 100 dets of one category in one image
            x1, x2 = np.clip(sorted([x1, x2]), 0, W)
            y1, y2 = np.clip(sorted([y1, y2]), 0, H)
            boxes.append([x1, y1, x2, y2])
            scores.append(round(rng.uniform(0.05, 1.0), 1))  # coarse: many ties
            labels.append(cat_ids.index(cat))
        g = [a for a in anns if a["image_id"] == int(image_id)]
        gb = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in g], np.float32).reshape(-1, 4)
        records.append(("dets", {
            "boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float32),
            "labels": np.array(labels, np.int32),
            "gt_boxes": gb, "gt_labels": np.array([cat_ids.index(a["category_id"]) for a in g], np.int32),
            "gt_difficult": np.array([a["iscrowd"] for a in g], np.uint8)},
            {"id": str(int(image_id)), "index": int(np.searchsorted(np.sort(ids), image_id)),
             "num_classes": len(cat_ids)}))
    cats = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    # records in a shuffled image order: the evaluation orders images by id itself
    order = rng.permutation(len(records))
    return {"images": images, "annotations": anns, "categories": cats}, [records[i] for i in order]


def write_case(out, gt, records):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gt.json"), "w") as f:
        json.dump(gt, f)
    tnsfile.write(os.path.join(out, "dets.tns"), records)
    cat_ids = [c["id"] for c in gt["categories"]]
    dets, rec_gt = dets_from_records(records, cat_ids)
    stats = write_expected(os.path.join(out, "expected.json"), gt, dets)
    print(f"{out}: {len(gt['images'])} images, {len(gt['annotations'])} gts, {len(dets)} dets, "
          f"AP {stats[0]:.4f} AP50 {stats[1]:.4f}", file=sys.stderr)
    if rec_gt:
        write_expected(os.path.join(out, "expected_records.json"),
                       {"images": gt["images"], "annotations": rec_gt, "categories": gt["categories"]}, dets)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "gen" and len(sys.argv) == 3:
        rng = np.random.default_rng(23)
        write_case(os.path.join(sys.argv[2], "random"), *random_case(rng, 40, [1, 3, 7, 10, 25], 0.08, 5))
        write_case(os.path.join(sys.argv[2], "crowded"), *random_case(rng, 25, [2, 4, 90], 0.3, 11))
    elif cmd == "real" and len(sys.argv) >= 5:
        with open(sys.argv[3]) as f:
            gt = json.load(f)
        records = [r for p in sys.argv[4:] for r in tnsfile.read(p)]
        for _, t, _ in records:  # the records' gt is gt.json's: keep them small
            for k in ("gt_boxes", "gt_labels", "gt_difficult"):
                t.pop(k, None)
        write_case(sys.argv[2], gt, records)
    elif cmd == "eval" and len(sys.argv) == 4:
        with open(sys.argv[2]) as f:
            gt = json.load(f)
        with open(sys.argv[3]) as f:
            dets = json.load(f)
        stats, classwise = evaluate(gt, dets)
        print(json.dumps({"stats": stats, "classwise": classwise}))
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
