#!/usr/bin/python3
"""tidl-pack's exports against real consumers (docs/export.md, tests/bats/tidl-pack.bats).

  onnx_check.py check MODEL.onnx OPSET
      Debian's python3-onnx checker (full check, with shape inference) and the opset.
  onnx_check.py compare MODEL.onnx --batches B --pred P [--qparams Q] [--prototxt X --dets D]
      Runs the model in ONNX Runtime (tests/ort_run.js) on the images of the batch
      records B and compares its per-level head outputs, put in forward's anchor order,
      with forward's pred records P: float to 1e-4 of the largest output; quantised
      (--qparams from fakequant) within --max-steps (1) quantisation steps of the
      head's points, after rounding ONNX Runtime's outputs to those grids.
      With --prototxt and --dets: decodes the ONNX Runtime outputs as caffe's SSD
      DetectionOutput does with the prototxt's PriorBox and detection parameters (boxes
      clipped to the input, as mmdet), and checks that the detections equal ssd-decode's D.
  onnx_check.py dets MODEL.onnx --batches B --dets D [--nms-iou X --max-per-img N]
      Runs the model in ONNX Runtime on the images of B and compares the graph's own
      detections (dets + labels, or detections) with ssd-decode's D at the settings the
      graph was exported with: same count, labels and order (free among equal scores),
      scores to --score-tol, boxes (divided by scale_factor) to --box-tol pixels. With
      --nms-iou (an opset 9 graph, which stops before NMS) NMS is finished here first.
Prints the figures as one JSON line; exits 1 when a check fails.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ORT_TYPES = {"float32": "<f4", "int64": "<i8", "int32": "<i4"}


def check(path, opset):
    import onnx
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    got = {o.domain: o.version for o in m.opset_import}
    assert got.get("", got.get("ai.onnx")) == opset, f"opset {got}, expected {opset}"
    ops = sorted({n.op_type for n in m.graph.node})
    print(json.dumps({"checker": "ok", "opset": opset, "ir_version": m.ir_version, "nodes": len(m.graph.node),
                      "ops": ops, "outputs": [o.name for o in m.graph.output]}))


def records(path, kind):
    return [(t, meta) for k, t, meta in tnsfile.read(path) if k == kind]


def run_ort(model, images):
    n, c, h, w = images.shape
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "images.f32")
        np.ascontiguousarray(images, dtype="<f4").tofile(src)
        r = subprocess.run(["node", os.path.join(HERE, "ort_run.js"), model, src, str(n), str(c), str(h), str(w), d],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr.strip() or f"ort_run.js exited {r.returncode}")
        info = json.loads(r.stdout.strip().splitlines()[-1])
        out = {}
        for name in info["outputs"]:
            raw = np.fromfile(os.path.join(d, name + ".raw"), dtype=ORT_TYPES[info["types"][name]])
            shapes = info["image_shapes"][name]
            if all(s == shapes[0] for s in shapes):
                out[name] = raw.reshape([n] + shapes[0][1:])
            else:
                # a size that varies per image (the number of detections): one array each
                ends = np.cumsum([int(np.prod(s)) for s in shapes])
                out[name] = [a.reshape(s[1:]) for a, s in zip(np.split(raw, ends[:-1]), shapes)]
        return out


def levels(out, prefix):
    names = sorted((k for k in out if re.fullmatch(prefix + r"_\d+", k)), key=lambda k: int(k.split("_")[1]))
    return [out[k] for k in names]


def flatten(per_level, k):
    """[N, A*K, H, W] per level -> [N, sum(H W A), K]: forward's rows (level, y, x, a)."""
    n = per_level[0].shape[0]
    return np.concatenate([x.transpose(0, 2, 3, 1).reshape(n, -1, k) for x in per_level], axis=1)


# ---- caffe SSD: PriorBox + DetectionOutput, from the prototxt's numbers

def parse_prototxt(path):
    text = open(path).read()
    p = {"box_input": re.findall(r'box_input: "([^"]+)"', text),
         "class_input": re.findall(r'class_input: "([^"]+)"', text),
         "in_width": int(re.search(r"in_width: (\d+)", text).group(1)),
         "in_height": int(re.search(r"in_height: (\d+)", text).group(1)), "priors": []}
    for block in re.findall(r"prior_box_param \{(.*?)\}", text, re.S):
        def nums(key):
            return [float(v) for v in re.findall(key + r": ([-0-9.eE+]+)", block)]
        off = nums("offset")
        p["priors"].append({"min_size": nums("min_size")[0], "max_size": nums("max_size")[0],
                            "aspect_ratio": nums("aspect_ratio"), "flip": "flip: true" in block,
                            "variance": nums("variance"), "step": nums("step")[0],
                            "offset": off[0] if off else 0.5})
    det = re.search(r"detection_output_param \{(.*)\}", text, re.S).group(1)
    for key in ("num_classes", "background_label_id", "top_k", "keep_top_k"):
        p[key] = int(re.search(key + r": (-?\d+)", det).group(1))
    for key in ("nms_threshold", "confidence_threshold"):
        p[key] = float(re.search(key + r": ([-0-9.eE+]+)", det).group(1))
    return p


def prior_boxes(pp, fh, fw, img_w, img_h):
    """caffe's PriorBoxLayer (clip false), normalised [fh fw n, 4] and variances."""
    ars = [1.0]
    for a in pp["aspect_ratio"]:
        if all(abs(a - b) > 1e-6 for b in ars):
            ars.append(a)
            if pp["flip"]:
                ars.append(1.0 / a)
    out = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + pp["offset"]) * pp["step"], (h + pp["offset"]) * pp["step"]
            mn, mx = pp["min_size"], pp["max_size"]
            sizes = [(mn, mn), (np.sqrt(mn * mx),) * 2] + [(mn * np.sqrt(a), mn / np.sqrt(a)) for a in ars[1:]]
            for bw, bh in sizes:
                out.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h, (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    return np.array(out)


def iou(a, b):
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def detection_output(p, priors, cls, reg, scale):
    """One image: softmax, CENTER_SIZE decode with the variances, per class threshold,
    top_k and greedy NMS, keep_top_k; boxes in original pixels (clipped to the input)."""
    W, H = p["in_width"], p["in_height"]
    var = np.array(p["priors"][0]["variance"])
    e = np.exp(cls - cls.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    cx, cy = var[0] * reg[:, 0] * pw + pcx, var[1] * reg[:, 1] * ph + pcy
    bw, bh = np.exp(var[2] * reg[:, 2]) * pw, np.exp(var[3] * reg[:, 3]) * ph
    boxes = np.stack([(cx - bw / 2) * W, (cy - bh / 2) * H, (cx + bw / 2) * W, (cy + bh / 2) * H], axis=1)
    boxes = np.clip(boxes, 0, [W, H, W, H])
    dets = []
    for c in range(p["num_classes"]):
        if c == p["background_label_id"]:
            continue
        idx = np.nonzero(prob[:, c] > p["confidence_threshold"])[0]
        idx = idx[np.argsort(-prob[idx, c], kind="stable")][:p["top_k"]]
        keep = []
        for i in idx:
            if not keep or iou(boxes[i], boxes[keep]).max() <= p["nms_threshold"]:
                keep.append(i)
        label = c if c < p["background_label_id"] else c - 1
        dets += [(prob[i, c], label, boxes[i] / scale) for i in keep]
    dets.sort(key=lambda d: -d[0])
    return dets[:p["keep_top_k"]]


def compare(a):
    batches = [t for t, _ in records(a.batches, "batch")]
    images = np.concatenate([t["image"] for t in batches])
    preds = records(a.pred, "pred")
    cls_ref = np.concatenate([t["cls"] for t, _ in preds])
    reg_ref = np.concatenate([t["reg"] for t, _ in preds])
    out = run_ort(a.model, images)
    K = cls_ref.shape[2]
    cls_o, reg_o = levels(out, "cls"), levels(out, "reg")
    cls, reg = flatten(cls_o, K), flatten(reg_o, 4)
    assert cls.shape == cls_ref.shape and reg.shape == reg_ref.shape, (cls.shape, cls_ref.shape)
    fig = {"images": int(images.shape[0]), "anchors": int(cls.shape[1])}
    ok = True
    for name, x, t in (("cls", cls, cls_ref), ("reg", reg, reg_ref)):
        d = np.abs(x.astype(np.float64) - t)
        fig[name] = {"max_abs": float(d.max()), "max_rel": float(d.max() / max(np.abs(t).max(), 1e-30))}
    if a.qparams:
        # ONNX Runtime does not round to the points' grids (Clip only, as TIDL is given);
        # forward --quant does. Raw: |ort - forward| in steps of the head's point;
        # on grid: ort rounded to that grid as TIDL's integer output is, in whole steps.
        (_, q, _), = tnsfile.read(a.qparams)
        worst = 0.0
        for name, per, ref in (("cls", cls_o, cls_ref), ("reg", reg_o, reg_ref)):
            kk = ref.shape[2]
            raw, grid, same, total, off = [], [], 0, 0, 0
            for lv, x in enumerate(per):
                frac = int(q[f"bbox_head.{name}_convs.{lv}.1.act"][0])
                rows = x.shape[2] * x.shape[3] * x.shape[1] // kk
                x = flatten([x], kk).astype(np.float64)
                t = ref[:, off:off + rows].astype(np.float64)
                raw.append(float(np.abs(x - t).max() * 2.0 ** frac))
                g = np.abs(np.floor(x * 2.0 ** frac + 0.5) - t * 2.0 ** frac)
                grid.append(float(g.max()))
                same += int((g == 0).sum())
                total += g.size
                off += rows
            fig[name].update({"max_steps_raw": max(raw), "max_steps_on_grid": max(grid),
                              "equal_on_grid": same / total})
            worst = max(worst, max(grid))
        ok &= worst <= a.max_steps
    else:
        ok &= fig["cls"]["max_rel"] <= 1e-4 and fig["reg"]["max_rel"] <= 1e-4
    if a.prototxt:
        p = parse_prototxt(a.prototxt)
        S = p["in_width"]
        priors = np.concatenate([prior_boxes(pp, x.shape[2], x.shape[3], S, p["in_height"])
                                 for pp, x in zip(p["priors"], cls_o)])
        assert p["class_input"] == [f"cls_{i}" for i in range(len(cls_o))], p["class_input"]
        assert p["box_input"] == [f"reg_{i}" for i in range(len(reg_o))], p["box_input"]
        dets = [t for t, _ in records(a.dets, "dets")]
        scales = np.concatenate([t["scale_factor"] for t, _ in preds])
        n_dets, max_score, max_box, equal = 0, 0.0, 0.0, True
        for i, ref in enumerate(dets):
            mine = detection_output(p, priors, cls[i].astype(np.float64), reg[i].astype(np.float64), scales[i])
            if len(mine) != len(ref["scores"]):
                equal = False
                print(f"image {i}: {len(mine)} detections from ONNX Runtime + prototxt, ssd-decode "
                      f"{len(ref['scores'])}", file=sys.stderr)
                continue
            # each detection against its nearest unmatched one of the same label and score
            # (order among equal scores is not part of the contract)
            free = np.ones(len(mine), dtype=bool)
            for s, lab, box in mine:
                cand = np.nonzero(free & (ref["labels"] == lab) & (np.abs(ref["scores"] - s) <= 1e-4))[0]
                if len(cand) == 0:
                    equal = False
                    continue
                d = np.abs(ref["boxes"][cand] - box).max(axis=1)
                j = cand[np.argmin(d)]
                free[j] = False
                max_score = max(max_score, abs(s - ref["scores"][j]))
                max_box = max(max_box, float(d.min()))
            n_dets += len(mine)
        equal &= max_score <= 1e-4 and max_box <= 1e-2
        fig["dets"] = {"count": n_dets, "equal": bool(equal), "max_score_diff": max_score, "max_box_diff_px": max_box}
        ok &= equal
    fig["ok"] = bool(ok)
    print(json.dumps(fig))
    return 0 if ok else 1


# ---- the graph's own detections (dets/labels, or detections) against ssd-decode

def greedy_nms(boxes, scores, labels, iou_thr, max_per_img):
    """ssd-decode's steps 4-5 on candidates that passed the score threshold (the opset 9
    graph's output): per class, greedy NMS in score order (IoU > iou_thr suppresses, in
    float32 as lib/core/boxes.c), at most max_per_img a class; then all by score, label, index."""
    f = np.float32
    keep = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        kept = []
        for i in idx:
            if len(kept) == max_per_img:
                break
            b = boxes[i].astype(f)
            ok = True
            for j in kept:
                a = boxes[j].astype(f)
                w = min(a[2], b[2]) - max(a[0], b[0])
                h = min(a[3], b[3]) - max(a[1], b[1])
                ov = f(max(w, f(0))) * f(max(h, f(0)))
                un = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ov
                if ov / max(un, f(np.finfo(f).eps)) > f(iou_thr):
                    ok = False
                    break
            if ok:
                kept.append(i)
        keep += kept
    keep.sort(key=lambda i: (-scores[i], labels[i], i))
    return np.array(keep[:max_per_img], dtype=np.int64)


def match_in_order(mine, ref, box_tol, score_tol):
    """mine and ref: (boxes [K,4], scores [K], labels [K]), both by score descending.
    Equal when the counts agree and position by position the label, score and box agree;
    among entries whose scores tie (within score_tol) the order is free (ONNX Runtime's
    NonMaxSuppression orders equal scores as its heap pops them). Returns the figures."""
    (mb, ms, ml), (rb, rs, rl) = mine, ref
    fig = {"count": len(rs), "count_equal": len(ms) == len(rs), "max_box_diff_px": 0.0, "max_score_diff": 0.0,
           "labels_equal": True, "in_order": 0, "reordered_in_ties": 0, "unmatched": 0}
    if len(ms) != len(rs):
        fig["unmatched"] = abs(len(ms) - len(rs))
        return fig
    used = np.zeros(len(rs), dtype=bool)
    for i in range(len(ms)):
        d = np.abs(rb[i] - mb[i]).max() if len(rb) else 0.0
        if not used[i] and rl[i] == ml[i] and abs(rs[i] - ms[i]) <= score_tol and d <= box_tol:
            used[i] = True
            fig["in_order"] += 1
            fig["max_box_diff_px"] = max(fig["max_box_diff_px"], float(d))
            fig["max_score_diff"] = max(fig["max_score_diff"], float(abs(rs[i] - ms[i])))
            continue
        # another reference entry of the same score (a tie), label and box
        cand = np.nonzero(~used & (rl == ml[i]) & (np.abs(rs - ms[i]) <= score_tol) &
                          (np.abs(rs - rs[i]) <= score_tol))[0]
        dd = np.abs(rb[cand] - mb[i]).max(axis=1) if len(cand) else np.array([])
        if len(cand) and dd.min() <= box_tol:
            j = cand[np.argmin(dd)]
            used[j] = True
            fig["reordered_in_ties"] += 1
            fig["max_box_diff_px"] = max(fig["max_box_diff_px"], float(dd.min()))
            fig["max_score_diff"] = max(fig["max_score_diff"], float(abs(rs[j] - ms[i])))
        else:
            fig["unmatched"] += 1
            if rl[i] != ml[i]:
                fig["labels_equal"] = False
    return fig


def dets(a):
    batches = [t for t, _ in records(a.batches, "batch")]
    images = np.concatenate([t["image"] for t in batches])
    scales = np.concatenate([t["scale_factor"] for t in batches])
    ref = [t for t, _ in records(a.dets, "dets")]
    assert len(ref) == len(images), f"{len(ref)} dets records for {len(images)} images"
    out = run_ort(a.model, images)
    single = "detections" in out
    total = {"images": len(images), "count": 0, "max_box_diff_px": 0.0, "max_score_diff": 0.0, "in_order": 0,
             "reordered_in_ties": 0, "unmatched": 0, "labels_equal": True, "counts_equal": True,
             "ort_outputs": [k for k in ("dets", "labels", "detections") if k in out]}
    for i in range(len(images)):
        if single:
            d = np.asarray(out["detections"][i]).reshape(-1, 6)
            boxes, scores, labels = d[:, :4], d[:, 4], d[:, 5].astype(np.int64)
            assert np.all(d[:, 5] == labels), "detections: labels are not whole numbers"
        else:
            d = np.asarray(out["dets"][i]).reshape(-1, 5)
            boxes, scores, labels = d[:, :4], d[:, 4], np.asarray(out["labels"][i]).reshape(-1)
        if a.nms_iou is not None:
            # the opset 9 graph stops before NMS: finish it as ssd-decode does
            k = greedy_nms(boxes, scores, labels, a.nms_iou, a.max_per_img)
            boxes, scores, labels = boxes[k], scores[k], labels[k]
        mine = (boxes.astype(np.float64) / scales[i], scores.astype(np.float64), labels)
        r = ref[i]
        fig = match_in_order(mine, (r["boxes"].astype(np.float64), r["scores"].astype(np.float64),
                                    r["labels"].astype(np.int64)), a.box_tol, a.score_tol)
        if not fig["count_equal"]:
            print(f"image {i}: {len(scores)} detections from ONNX Runtime, ssd-decode {len(r['scores'])}",
                  file=sys.stderr)
        total["counts_equal"] &= fig["count_equal"]
        total["labels_equal"] &= fig["labels_equal"]
        for key in ("count", "in_order", "reordered_in_ties", "unmatched"):
            total[key] += fig[key]
        for key in ("max_box_diff_px", "max_score_diff"):
            total[key] = max(total[key], fig[key])
    total["equal"] = bool(total["counts_equal"] and total["unmatched"] == 0)
    print(json.dumps(total))
    return 0 if total["equal"] else 1


def main():
    import argparse
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("opset", type=int)
    c = sub.add_parser("compare")
    c.add_argument("model")
    c.add_argument("--batches", required=True)
    c.add_argument("--pred", required=True)
    c.add_argument("--qparams")
    c.add_argument("--max-steps", type=float, default=1.0)
    c.add_argument("--prototxt")
    c.add_argument("--dets")
    c = sub.add_parser("dets")
    c.add_argument("model")
    c.add_argument("--batches", required=True)
    c.add_argument("--dets", required=True)
    c.add_argument("--nms-iou", type=float, help="the graph has no NMS (opset 9): apply it here")
    c.add_argument("--max-per-img", type=int, default=200)
    c.add_argument("--box-tol", type=float, default=1e-3, help="pixels")
    c.add_argument("--score-tol", type=float, default=1e-5)
    a = ap.parse_args()
    if a.cmd == "dets":
        return dets(a)
    if a.cmd == "check":
        check(a.model, a.opset)
        return 0
    return compare(a)


if __name__ == "__main__":
    sys.exit(main())
