#!/usr/bin/env python3
"""voc2coco: a VOC root's splits as COCO instance files (the COCO version of BCCD).

usage: voc2coco.py VOC_ROOT CLASSES OUT_DIR [SPLIT...]   (default splits: trainval test)

Writes OUT_DIR/instances_<split>.json for each split; file_names are relative to
VOC_ROOT/JPEGImages, which serves as img_prefix (the images are not copied).
Boxes as mmdetection reads the XML (int(float(text)), no -1 shift) become
bbox [x1, y1, x2 - x1, y2 - y1] with area w * h; difficult objects become iscrowd 1
(the one way pycocotools ignores a ground truth box). Category ids are 1.. in class-list
order, image ids 1.. in split order, annotation ids 1.. in file order. Each file is
written to a temp file and renamed, so a reader never sees half of one.
"""
import json
import os
import sys
import tempfile
import xml.etree.ElementTree as ET


def convert(root, classes, split):
    with open(os.path.join(root, "ImageSets", "Main", split + ".txt")) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    images, anns = [], []
    for image_id, name in enumerate(ids, 1):
        ann = ET.parse(os.path.join(root, "Annotations", name + ".xml")).getroot()
        size = ann.find("size")
        images.append({"id": image_id, "file_name": name + ".jpg",
                       "width": int(size.find("width").text), "height": int(size.find("height").text)})
        for obj in ann.findall("object"):
            box = obj.find("bndbox")
            x1, y1, x2, y2 = (int(float(box.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = obj.find("difficult")
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": classes.index(obj.find("name").text) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": int(difficult is not None and int(difficult.text) != 0)})
    cats = [{"id": i + 1, "name": c, "supercategory": "cell"} for i, c in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.split("\n\n")[1])
    root, classes_file, out = sys.argv[1:4]
    splits = sys.argv[4:] or ["trainval", "test"]
    with open(classes_file) as f:
        classes = [line.strip() for line in f if line.strip()]
    os.makedirs(out, exist_ok=True)
    for split in splits:
        data = convert(root, classes, split)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, os.path.join(out, f"instances_{split}.json"))
        print(f"voc2coco: {out}/instances_{split}.json: {len(data['images'])} images, "
              f"{len(data['annotations'])} boxes", file=sys.stderr)


main()
