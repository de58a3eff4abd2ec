#!/usr/bin/python3
"""Reference for augment: numpy re-implementation of the mmdetection 2.x SSD transforms
(PhotoMetricDistortion with OpenCV float HSV, Expand, MinIoURandomCrop's box step,
Resize with cv2 INTER_LINEAR semantics, RandomFlip, Normalize), applied with explicit
parameters and the expanded canvas materialised, as mmdet does.

Writes small fixtures under tests/fixtures/augment/ that tests/unit/test_augment.c
compares against (CI has no numpy). Run from the repository root:
    /usr/bin/python3 tests/ref_augment.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tnsfile  # noqa: E402

F32 = np.float32
EPS = F32(np.finfo(np.float32).eps)
OUT = "tests/fixtures/augment"
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def rgb2hsv(img):
    """OpenCV COLOR_RGB2HSV on float32 [3,H,W]: H degrees, S in [0,1], V as given."""
    r, g, b = img
    v = np.maximum(np.maximum(r, g), b)
    vmin = np.minimum(np.minimum(r, g), b)
    diff = v - vmin
    s = diff / (np.abs(v) + EPS)
    k = (60.0 / (diff + EPS).astype(np.float64)).astype(F32)
    h = np.where(v == r, (g - b) * k, np.where(v == g, (b - r) * k + F32(120), (r - g) * k + F32(240)))
    h = np.where(h < 0, h + F32(360), h).astype(F32)
    return np.stack([h, s, v]).astype(F32)


def hsv2rgb(hsv):
    """OpenCV COLOR_HSV2RGB on float32 [3,H,W]."""
    h, s, v = hsv
    h = h * (F32(6) / F32(360))
    h = np.fmod(h, F32(6))
    h = np.where(h < 0, h + F32(6), h).astype(F32)
    sector = np.floor(h).astype(np.int64)
    h = (h - sector.astype(F32)).astype(F32)
    bad = (sector < 0) | (sector >= 6)
    sector[bad] = 0
    h[bad] = 0
    p = v * (F32(1) - s)
    q = v * (F32(1) - s * h)
    t = v * (F32(1) - s * (F32(1) - h))
    # (r, g, b) per sector
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros((3,) + h.shape, F32)
    for k, (rr, gg, bb) in enumerate(table):
        m = sector == k
        out[0][m], out[1][m], out[2][m] = rr[m], gg[m], bb[m]
    gray = s == 0
    for c in range(3):
        out[c][gray] = v[gray]
    return out


def photometric(img, p):
    """PhotoMetricDistortion with drawn parameters p (dict), float32 [3,H,W] RGB."""
    img = img.astype(F32).copy()
    if p["brightness"]:
        img = img + F32(p["delta"])
    if p["contrast"] and p["contrast_first"]:
        img = img * F32(p["alpha"])
    hsv = rgb2hsv(img)
    if p["saturation"]:
        hsv[1] = hsv[1] * F32(p["sat"])
    if p["hue"]:
        hsv[0] = hsv[0] + F32(p["hue_shift"])
        hsv[0][hsv[0] > 360] -= 360
        hsv[0][hsv[0] < 0] += 360
    img = hsv2rgb(hsv)
    if p["contrast"] and not p["contrast_first"]:
        img = img * F32(p["alpha"])
    if p["swap"]:
        img = img[p["perm"]]
    return img.astype(F32)


def taps(dst, src, clamp_weight):
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(F32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(F32)).astype(F32)
    if clamp_weight:
        lo = s < 0
        f[lo], s[lo] = 0, 0
        hi = s >= src - 1
        f[hi], s[hi] = 0, src - 1
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), (F32(1) - f).astype(F32), f


def resize(img, size):
    """cv2.resize(INTER_LINEAR) of float32 [C,H,W] to [C,size,size]."""
    _, h, w = img.shape
    x0, x1, a0, a1 = taps(size, w, True)
    y0, y1, b0, b1 = taps(size, h, False)
    r0, r1 = img[:, y0], img[:, y1]
    h0 = r0[:, :, x0] * a0 + r0[:, :, x1] * a1
    h1 = r1[:, :, x0] * a0 + r1[:, :, x1] * a1
    return (h0 * b0[:, None] + h1 * b1[:, None]).astype(F32)


def normalize(img):
    mean = MEAN.astype(F32).reshape(3, 1, 1)
    istd = (1.0 / STD).astype(F32).reshape(3, 1, 1)
    return ((img - mean) * istd).astype(F32)


def train_geometry(img, boxes, labels, difficult, g):
    """Expand (materialised), crop, resize, flip, normalise with explicit parameters.
    Difficult boxes go through the geometry (mmdet's gt_bboxes_ignore) and are dropped
    at the end."""
    boxes, labels, difficult = boxes.astype(F32), labels.copy(), difficult.copy()
    _, h, w = img.shape
    canvas = np.empty((3, g["ch"], g["cw"]), F32)
    canvas[:] = MEAN.astype(F32).reshape(3, 1, 1)
    canvas[:, g["top"]:g["top"] + h, g["left"]:g["left"] + w] = img
    boxes = boxes + np.array([g["left"], g["top"], g["left"], g["top"]], F32)
    x0, y0, x1, y1 = g["x0"], g["y0"], g["x1"], g["y1"]
    if g["crop"]:
        c = (boxes[:, :2] + boxes[:, 2:]) / F32(2)
        m = (c[:, 0] > x0) & (c[:, 1] > y0) & (c[:, 0] < x1) & (c[:, 1] < y1)
        boxes, labels, difficult = boxes[m].copy(), labels[m], difficult[m]
        boxes[:, 2:] = boxes[:, 2:].clip(max=np.array([x1, y1], F32))
        boxes[:, :2] = boxes[:, :2].clip(min=np.array([x0, y0], F32))
        boxes = boxes - np.array([x0, y0, x0, y0], F32)
    patch = canvas[:, y0:y1, x0:x1]
    s = g["size"]
    out = resize(patch, s)
    sf = np.array([s / (x1 - x0), s / (y1 - y0)] * 2, F32)
    boxes = (boxes * sf).astype(F32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, s)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, s)
    if g["flip"]:
        out = out[:, :, ::-1]
        fl = boxes.copy()
        fl[:, 0] = s - boxes[:, 2]
        fl[:, 2] = s - boxes[:, 0]
        boxes = fl
    keep = difficult == 0
    return normalize(out), boxes[keep].astype(F32), labels[keep].astype(np.int32)


def test_image(rng, h, w):
    """Smooth colours plus grays, saturated primaries and a dark corner."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256]).astype(np.uint8)
    img[:, 0, :3] = 128                      # grays: S = 0
    img[:, 1, 0] = (255, 0, 0)
    img[:, 1, 1] = (0, 255, 0)
    img[:, 1, 2] = (0, 0, 255)
    img[:, 1, 3] = (255, 0, 8)               # hue just under 360
    img[:, -1, -1] = 0
    img[:, -2, -2] = rng.integers(0, 256, 3)
    return img


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)

    img = test_image(rng, 9, 13)
    recs = [("input", {"image": img}, {})]
    cases = [
        dict(brightness=0, delta=0, contrast_first=0, contrast=0, alpha=1, saturation=0, sat=1, hue=0,
             hue_shift=0, swap=0, perm=[0, 1, 2]),
        dict(brightness=1, delta=20.5, contrast_first=1, contrast=1, alpha=1.3, saturation=1, sat=0.7, hue=1,
             hue_shift=15.25, swap=0, perm=[0, 1, 2]),
        dict(brightness=1, delta=-31.0, contrast_first=0, contrast=1, alpha=0.6, saturation=1, sat=1.4, hue=1,
             hue_shift=-17.9, swap=1, perm=[2, 0, 1]),
        dict(brightness=0, delta=0, contrast_first=1, contrast=0, alpha=1, saturation=1, sat=1.5, hue=1,
             hue_shift=18.0, swap=1, perm=[1, 2, 0]),
        dict(brightness=1, delta=-32.0, contrast_first=1, contrast=1, alpha=0.5, saturation=0, sat=1, hue=1,
             hue_shift=-18.0, swap=0, perm=[0, 1, 2]),
    ]
    for p in cases:
        recs.append(("photometric", {"out": photometric(img, p)}, p))
    tnsfile.write(f"{OUT}/photometric.tns", recs)

    img = test_image(rng, 23, 31)
    boxes = np.array([[2, 3, 10, 12], [15.5, 4, 29, 20.25], [0, 0, 31, 23], [20, 15, 30, 22], [5, 14, 9, 21]], F32)
    labels = np.array([1, 2, 3, 4, 5], np.int32)
    difficult = np.array([0, 0, 0, 0, 1], np.uint8)
    recs = [("input", {"image": img, "boxes": boxes, "labels": labels, "difficult": difficult}, {})]
    full = dict(cw=31, ch=23, left=0, top=0, crop=0, x0=0, y0=0, x1=31, y1=23)
    geoms = [
        dict(full, size=16, flip=0),
        dict(full, size=64, flip=1),
        dict(full, size=31, flip=0),  # width unchanged: a copy along x
        dict(cw=70, ch=50, left=20, top=9, crop=1, x0=10, y0=5, x1=60, y1=40, size=24, flip=1),
        dict(cw=70, ch=50, left=20, top=9, crop=0, x0=0, y0=0, x1=70, y1=50, size=20, flip=0),
        dict(full, crop=1, x0=8, y0=2, x1=27, y1=19, size=37, flip=0),
        dict(cw=40, ch=40, left=9, top=17, crop=1, x0=0, y0=20, x1=30, y1=40, size=13, flip=1),
        dict(full, crop=1, x0=30, y0=0, x1=31, y1=23, size=5, flip=0),  # a one column patch
    ]
    for g in geoms:
        out, b, lab = train_geometry(img, boxes, labels, difficult, g)
        recs.append(("geometry", {"out": out, "boxes": b, "labels": lab}, g))
    tnsfile.write(f"{OUT}/geometry.tns", recs)
    streams(rng)
    print(f"wrote {OUT}/photometric.tns, geometry.tns, images.tns and bad-*.tns")


def image_record(rng, h, w, n, index, epoch, ndiff=0):
    img = test_image(rng, h, w)
    x0 = rng.uniform(0, w / 2, n)
    y0 = rng.uniform(0, h / 2, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(3, w / 2, n), y0 + rng.uniform(3, h / 2, n)], 1).astype(F32)
    labels = rng.integers(0, 3, n).astype(np.int32)
    difficult = np.zeros(n, np.uint8)
    difficult[:ndiff] = 1
    meta = {"id": f"img{index:03d}", "root": "synthetic", "file": f"synthetic/img{index:03d}.png",
            "width": w, "height": h, "index": index, "epoch": epoch}
    return ("image", {"image": img, "boxes": boxes.reshape(n, 4), "labels": labels, "difficult": difficult}, meta)


def streams(rng):
    """Input streams for tests/bats/augment.bats (voc-decode's record contract)."""
    recs = [
        image_record(rng, 32, 48, 3, 0, 0, ndiff=1),
        image_record(rng, 40, 40, 0, 1, 0),
        ("note", {"x": np.arange(3, dtype=np.int32)}, {"text": "passes through"}),
        image_record(rng, 21, 33, 2, 2, 0),
        image_record(rng, 32, 48, 4, 3, 1),
        image_record(rng, 30, 20, 1, 4, 1),
        image_record(rng, 25, 25, 5, 5, 1, ndiff=2),
    ]
    tnsfile.write(f"{OUT}/images.tns", recs)
    tnsfile.write(f"{OUT}/note.tns", [recs[2]])
    good = image_record(rng, 8, 8, 1, 0, 0)
    k, t, m = image_record(rng, 8, 8, 2, 1, 0)
    tnsfile.write(f"{OUT}/bad-nolabels.tns", [good, (k, {a: b for a, b in t.items() if a != "labels"}, m)])
    tnsfile.write(f"{OUT}/bad-dtype.tns", [good, (k, dict(t, image=t["image"].astype(F32)), m)])
    tnsfile.write(f"{OUT}/bad-count.tns", [good, (k, dict(t, labels=t["labels"][:1]), m)])
    tnsfile.write(f"{OUT}/bad-shape.tns", [good, (k, dict(t, image=t["image"][:1]), m)])


if __name__ == "__main__":
    main()
