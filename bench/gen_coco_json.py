#!/usr/bin/python3
"""gen_coco_json: a COCO instance file shaped like COCO's own instances_train2017.json
(118,287 images, 860,001 annotations with polygon segmentations, 80 categories with
COCO's ids 1..90, ~1% crowds with RLE counts), its segmentations sized so the file is
about TARGET_MB (default 470: the real file is 469,785,474 bytes, 448 MiB), for measuring coco-decode's
memory and time on it. Seeded: the same file on every machine.

usage: gen_coco_json.py OUT.json [TARGET_MB [IMAGE_DIR]]
IMAGE_DIR: also create the images as empty files there (coco-decode --list checks that
each image exists without reading it).
"""
import json
import os
import random
import sys

IMAGES, ANNS = 118287, 860001
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    out, target = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 470
    img_dir = sys.argv[3] if len(sys.argv) > 3 else None
    rnd = random.Random(2017)
    # polygons: a pool of point lists; the count of points sets the file size
    per_ann = target * 1e6 / ANNS - 190  # bytes of segmentation per annotation
    points = max(3, round(per_ann / 14.4))  # "123.45, 67.89, ": ~14.4 bytes a point
    pool = [", ".join(f"{rnd.uniform(0, 640):.2f}, {rnd.uniform(0, 480):.2f}" for _ in range(points))
            for _ in range(997)]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write('{"info": {"description": "generated: instances_train2017-shaped"}, "licenses": [], "images": [')
        sizes = []
        for i in range(IMAGES):
            w, h = rnd.choice(((640, 480), (480, 640), (640, 427), (500, 375)))
            sizes.append((w, h))
            f.write("%s\n{\"license\": 1, \"file_name\": \"%012d.jpg\", \"height\": %d, \"width\": %d, \"id\": %d}"
                    % ("," if i else "", i + 1, h, w, i + 1))
        f.write('],\n"annotations": [')
        for k in range(ANNS):
            image = rnd.randrange(IMAGES)
            w, h = sizes[image]
            bw, bh = rnd.uniform(1, w / 2), rnd.uniform(1, h / 2)
            x, y = rnd.uniform(0, w - bw), rnd.uniform(0, h - bh)
            crowd = rnd.random() < 0.01
            seg = ('{"counts": [%s], "size": [%d, %d]}' % (", ".join(str(rnd.randrange(1, 900)) for _ in range(40)), h, w)
                   if crowd else "[[%s]]" % pool[k % len(pool)])
            f.write('%s\n{"segmentation": %s, "area": %.4f, "iscrowd": %d, "image_id": %d, "bbox": [%.2f, %.2f, %.2f, %.2f], '
                    '"category_id": %d, "id": %d}' % ("," if k else "", seg, bw * bh * 0.7, crowd, image + 1,
                                                      x, y, bw, bh, rnd.choice(COCO_IDS), 900000 + k))
        f.write('],\n"categories": [%s]}\n' % ", ".join(
            json.dumps({"supercategory": "thing", "id": c, "name": f"class{c}"}) for c in COCO_IDS))
    os.replace(tmp, out)
    if img_dir:
        os.makedirs(img_dir, exist_ok=True)
        for i in range(IMAGES):
            open(os.path.join(img_dir, "%012d.jpg" % (i + 1)), "w").close()
    print(f"gen_coco_json: {out}: {os.path.getsize(out) / 1e6:.0f} MB, {IMAGES} images, {ANNS} annotations",
          file=sys.stderr)


main()
