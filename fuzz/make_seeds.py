#!/usr/bin/python3
"""Writes the seed corpora of the fuzz harnesses into fuzz/corpus/<harness>/.

Small, valid inputs of each format, so the fuzzer starts from files that reach deep
into the decoders: run once, and the output is committed (regenerate only to change
the seeds; inputs the fuzzer found are added beside them by hand, named after the bug).
Needs python3-pil, python3-numpy, python3-zstandard (pipelines/setup-debian.sh)."""
import io
import json
import os
import sys
import tarfile
import zipfile

import numpy as np
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests"))
import tnsfile  # noqa: E402

out = os.path.join(here, "corpus")


def put(harness, name, data):
    d = os.path.join(out, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def picture(w, h, mode):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x ^ y) * 16 % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)


def encoded(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


# ---- images: the JPEG and PNG variants lib/data/image.c handles
jpeg_rgb = encoded(picture(16, 12, "RGB"), "JPEG", quality=80)
png_rgb = encoded(picture(16, 12, "RGB"), "PNG")
put("image", "rgb.jpg", jpeg_rgb)
put("image", "progressive.jpg", encoded(picture(24, 16, "RGB"), "JPEG", progressive=True, quality=70))
put("image", "gray.jpg", encoded(picture(8, 8, "L"), "JPEG"))
put("image", "cmyk.jpg", encoded(picture(8, 8, "CMYK"), "JPEG"))
put("image", "subsampled.jpg", encoded(picture(17, 9, "RGB"), "JPEG", subsampling=2))
put("image", "rgb.png", png_rgb)
put("image", "palette.png", encoded(picture(16, 12, "P"), "PNG"))
put("image", "gray1.png", encoded(picture(13, 7, "1"), "PNG"))
put("image", "gray16.png", encoded(Image.fromarray((np.arange(45, dtype=np.uint16) * 1000).reshape(5, 9)), "PNG"))
put("image", "rgba.png", encoded(picture(10, 6, "RGBA"), "PNG"))
put("image", "gray_alpha.png", encoded(picture(11, 11, "LA"), "PNG"))

# ---- VOC annotations
xml_a = b"""<annotation><filename>a.jpg</filename>
<size><width>16</width><height>12</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10.5</xmax><ymax>11</ymax></bndbox></object>
<object><name>RBC</name><difficult>1</difficult><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>16</xmax><ymax>12</ymax></bndbox></object>
</annotation>
"""
xml_b = b"""<?xml version="1.0"?>
<annotation><size><width>0</width><height>0</height></size>
<object><name>Platelets</name><pose>Unspecified</pose><truncated>0</truncated>
<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object></annotation>
"""
put("voc_xml", "a.xml", xml_a)
put("voc_xml", "b.xml", xml_b)
with open(os.path.join(root, "..", "shared", "data", "bccd", "Annotations", "BloodImage_00000.xml"), "rb") as f:
    put("voc_xml", "bccd.xml", f.read())

# ---- VOC roots in archives: split list, annotations, a JPEG and a PNG
members = {
    "mini/ImageSets/Main/train.txt": b"a\nb\n",
    "mini/Annotations/a.xml": xml_a,
    "mini/Annotations/b.xml": xml_b.replace(b"<width>0</width><height>0</height>",
                                            b"<width>16</width><height>12</height>"),
    "mini/JPEGImages/a.jpg": jpeg_rgb,
    "mini/JPEGImages/b.png": png_rgb,
}


def tar_bytes(mode):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode=mode, format=tarfile.USTAR_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return b.getvalue()


def zip_bytes():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return b.getvalue()


put("voc_archive", "mini.tar", tar_bytes("w"))
put("voc_archive", "mini.tar.gz", tar_bytes("w:gz"))
put("voc_archive", "mini.zip", zip_bytes())

# ---- streams: records of every dtype, an empty tensor, several records in a row
rec = tnsfile.encode("batch", {
    "image": np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4),
    "nbox": np.array([1, 0], np.int32),
    "boxes": np.zeros((0, 4), np.float32),
    "h": np.array([1.5, -2], np.float16),
    "s": np.array([-3, 4], np.int16),
    "b": np.array([-1, 1], np.int8),
    "u": np.array([7], np.uint8),
}, meta={"ids": ["x", "y"], "epoch": 0})
put("stream", "batch.tns", rec)
put("stream", "two.tns", tnsfile.encode("end", {}) + tnsfile.encode("params", {"w": np.ones(3, np.float32)},
                                                                     level=-1))
with open(os.path.join(root, "tests", "fixtures", "stream", "three.tns"), "rb") as f:
    put("stream", "three.tns", f.read())

# ---- configs: a.json on its base b.json, as configs/*_bccd.json on their bases
with open(os.path.join(root, "configs", "ssd_mobilenet_fpn.json"), "rb") as f:
    base = f.read()
child = json.dumps({"base": "b.json", "name": "x", "data": {"size": 320},
                    "model": {"num_classes": 3}, "train": {"epochs": 2, "batch": 4}}).encode()
put("config", "bccd_on_base", child + b"\0" + base)
put("config", "loop", b'{"base": "b.json"}\0{"base": "a.json"}')
put("config", "three_levels", b'{"base": "b.json", "data": {"mean": [1, 2, 3]}}\0'
    b'{"base": "c.json", "data": {"train": {"expand": false}}}\0' + base)

# ---- .pth: the small state dicts of tests/fixtures/pth (protocol 2 and 4)
for name in ("odd.pth", "odd_p4.pth"):
    with open(os.path.join(root, "tests", "fixtures", "pth", name), "rb") as f:
        put("pth", name, f.read())
print("seeds written to", out)
