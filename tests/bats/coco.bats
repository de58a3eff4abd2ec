#!/usr/bin/env bats
# COCO: coco-decode (instance JSON + image folder -> voc-decode's records, mmdet 2.x
# CocoDataset semantics) and map-eval --metric coco (pycocotools' COCOeval numbers),
# against the numpy reference tests/ref_cocoeval.py and its committed fixtures
# (tests/fixtures/coco/<case>/: gt.json, dets.tns, expected*.json), and the pipelines on
# the COCO version of BCCD (pipelines/voc2coco.py).

load helpers

F=$ROOT/tests/fixtures/coco
STATS='["bbox_mAP","bbox_mAP_50","bbox_mAP_75","bbox_mAP_s","bbox_mAP_m","bbox_mAP_l","AR@1","AR@10","AR@100","AR_s@100","AR_m@100","AR_l@100"]'

setup() {
	T=$BATS_TEST_TMPDIR
}

# agrees OUT.json EXPECTED.json: the 12 numbers and the classwise APs within 1e-9
agrees() {
	jq -n --slurpfile o "$1" --slurpfile e "$2" --argjson names "$STATS" '
		$o[0] as $y | $e[0] as $x |
		([range(12)] | all(. as $i | ($y[$names[$i]] - $x.stats[$i] | fabs) < 1e-9)) and
		($y.classwise | length) == ($x.classwise | length) and
		([range($x.classwise | length)] | all(. as $i | $y.classwise[$i].ap as $a | $x.classwise[$i] as $b |
			if $b == null then $a == null else ($a - $b | fabs) < 1e-9 end))' | grep -qx true
}

# A small COCO set with PNG images: non-contiguous category ids, float boxes, a box
# with w < 1, a crowd, an empty image, a category left out by a class list.
small_set() {
	mkdir -p "$T/img"
	/usr/bin/python3 - "$T" <<'PY'
import json, sys
from PIL import Image
d = sys.argv[1]
for name, (w, h) in {"a.png": (64, 48), "b.png": (40, 40), "c.png": (32, 50)}.items():
    Image.new("RGB", (w, h), (w, h, 7)).save(f"{d}/img/{name}")
gt = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48},
                 {"id": 3, "file_name": "b.png", "width": 40, "height": 40},
                 {"id": 12, "file_name": "c.png", "width": 32, "height": 50}],
      "categories": [{"id": 9, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 5, "name": "bird"}],
      "annotations": [
          {"id": 1, "image_id": 7, "category_id": 9, "bbox": [1.5, 2.25, 10.5, 20], "area": 150, "iscrowd": 0,
           "segmentation": [[1.5, 2.25, 12, 2.25, 12, 22.25]]},
          {"id": 2, "image_id": 7, "category_id": 2, "bbox": [30, 10, 0.5, 8], "area": 4, "iscrowd": 0},
          {"id": 3, "image_id": 7, "category_id": 5, "bbox": [40, 5, 20, 30], "area": 600, "iscrowd": 1,
           "segmentation": {"counts": "a \"segmentation\": [1]", "size": [48, 64]}},
          {"id": 4, "image_id": 3, "category_id": 2, "bbox": [0, 0, 40, 40], "area": 1600}]}
json.dump(gt, open(f"{d}/gt.json", "w"))
PY
}

@test "coco-decode --help and usage errors" {
	run "$BIN/coco-decode" --help
	[ "$status" -eq 0 ]
	for o in --classes --filter-empty-gt --min-size --shuffle --epochs --resume --limit --shard --threads --skip-bad --list; do
		[[ "$output" == *"$o"* ]]
	done
	run "$BIN/coco-decode" only-one </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "coco-decode: expected ANN_FILE and IMG_PREFIX"* ]]
}

@test "coco-decode: mmdet's CocoDataset semantics on a small set" {
	small_set
	"$BIN/coco-decode" "$T/gt.json" "$T/img" >"$T/all.tns"
	run "$BIN/tns" cat --json "$T/all.tns"
	[ "$status" -eq 0 ]
	# file order, ids as meta id, every image kept (the empty one too)
	[ "$(jq -r .meta.id <<<"$output" | tr '\n' ' ')" = "7 3 12 " ]
	[ "$(jq -r '.meta.difficult_is' <<<"${lines[0]}")" = iscrowd ]
	/usr/bin/python3 - "$T/all.tns" <<'PY'
import sys
sys.path.insert(0, "tests")
import numpy as np, tnsfile
r = tnsfile.read(sys.argv[1])
a = r[0][1]
# labels in the file's category order (mmdet's getCatIds): dog (9) 0, cat (2) 1, bird (5) 2;
# the w < 1 box is dropped
assert a["labels"].tolist() == [0, 2], a["labels"]
assert np.array_equal(a["boxes"], np.array([[1.5, 2.25, 12, 22.25], [40, 5, 60, 35]], np.float32)), a["boxes"]
assert a["difficult"].tolist() == [0, 1]
assert a["image"].shape == (3, 48, 64) and a["image"][2, 0, 0] == 7
assert r[1][1]["labels"].tolist() == [1] and r[2][1]["boxes"].shape == (0, 4)
PY
	# a class list: other categories are left out; labels still follow the file's
	# order (mmdet's cat2label), so a list in another order gets a warning naming them
	for list in 'dog\ncat\n' 'cat\ndog\n'; do
		printf "$list" >"$T/classes"
		"$BIN/coco-decode" "$T/gt.json" "$T/img" --classes "$T/classes" --filter-empty-gt --verbose \
			>"$T/sub.tns" 2>"$T/err"
		run "$BIN/tns" cat --json "$T/sub.tns"
		[ "$(jq -r .meta.id <<<"$output" | tr '\n' ' ')" = "7 3 " ]
		/usr/bin/python3 -c "
import sys; sys.path.insert(0, 'tests'); import tnsfile
r = tnsfile.read('$T/sub.tns')
assert r[0][1]['labels'].tolist() == [0] and r[1][1]['labels'].tolist() == [1]"
		# the summary names the labels as the file does
		grep -qx 'coco-decode:   dog  *1' "$T/err"
		grep -qx 'coco-decode:   cat  *1' "$T/err"
	done
	grep -qx "coco-decode: $T/classes: warning: the class list is not in the file's category order; labels follow the file's, as mmdet's cat2label: 0 dog, 1 cat" "$T/err"
	printf 'dog\ncat\n' >"$T/classes"
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --classes "$T/classes" --list
	[[ "$output" != *warning* ]]
	# mmdet's min_size on the file's width and height (images 64x48, 40x40, 32x50)
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --min-size 32 --list
	[ "$output" = $'7\t2\n3\t1\n12\t0' ]
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --min-size 33 --list
	[ "$output" = $'7\t2\n3\t1' ]
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --min-size 41 --list
	[ "$output" = $'7\t2' ]
	# listing, limit, shards and threads as voc-decode's
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --list
	[ "$output" = $'7\t2\n3\t1\n12\t0' ]
	cmp <("$BIN/coco-decode" "$T/gt.json" "$T/img" --threads 1) <("$BIN/coco-decode" "$T/gt.json" "$T/img" --threads 3)
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --shard 1/2 --list
	[ "$output" = $'3\t1' ]
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --limit 1 --epochs 2 --list
	[ "$output" = $'7\t2\n7\t2' ]
}

# bad_json EDIT EXPECTED: the small set's JSON changed by the jq filter EDIT fails with EXPECTED
bad_json() {
	jq "$1" "$T/gt.json" >"$T/bad.json"
	run "$BIN/coco-decode" "$T/bad.json" "$T/img" --list
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == "coco-decode: $T/bad.json: $2"* ]]
}

@test "coco-decode: the images from a .zip or .tar.gz of their folder give the folder's records, byte for byte" {
	small_set
	"$BIN/coco-decode" "$T/gt.json" "$T/img" >"$T/dir.tns"
	"$BIN/coco-decode" "$T/gt.json" "$T/img" --list >"$T/dir.list"
	# the folder at the archive's top, and one level down with a stray file beside it
	(cd "$T" && mkdir -p deep/x && cp -r img deep/x/ && echo stray >deep/x/a.png &&
		/usr/bin/python3 -c 'import shutil; shutil.make_archive("img", "zip", ".", "img"); shutil.make_archive("deep", "gztar", ".", "deep")')
	for a in img.zip deep.tar.gz; do
		"$BIN/coco-decode" "$T/gt.json" "$T/$a" >"$T/arc.tns"
		cmp "$T/dir.tns" "$T/arc.tns"
		"$BIN/coco-decode" "$T/gt.json" "$T/$a" --list >"$T/arc.list"
		cmp "$T/dir.list" "$T/arc.list"
	done
	# an image the archive lacks: named by archive and entry, exit 1
	(cd "$T" && rm img/b.png && /usr/bin/python3 -c 'import shutil; shutil.make_archive("less", "zip", ".", "img")')
	run "$BIN/coco-decode" "$T/gt.json" "$T/less.zip"
	[ "$status" -eq 1 ]
	[[ "$output" == *"coco-decode: $T/less.zip:img/b.png: missing image"* ]]
	run "$BIN/coco-decode" "$T/gt.json" "$T/gt.json"
	[ "$status" -eq 1 ]
	[[ "$output" == *"gt.json"* ]]
}

@test "coco-decode: bad input is one clear line and exit 1" {
	small_set
	printf '{"images": [\n  {"id": 1 "file_name": "a.png"}]}' >"$T/broken.json"
	run "$BIN/coco-decode" "$T/broken.json" "$T/img"
	[ "$status" -eq 1 ]
	[ "$output" = "coco-decode: $T/broken.json: line 2, column 12: malformed JSON" ]
	bad_json '.annotations[1].category_id = 77' "annotations[1]: category_id 77: no such category"
	bad_json '.images[1].id = 7' "images: id 7 twice"
	bad_json '.annotations[0].image_id = 8' "annotations[0]: image_id 8: no such image"
	bad_json '.annotations[2].id = 1' "annotations: id 1 twice"
	bad_json '.images[0].file_name = 5' "images[0].file_name: expected a non-empty string"
	bad_json '.annotations[3].bbox = [1, 2, 3]' "annotations[3].bbox: expected [x, y, w, h]"
	run "$BIN/coco-decode" "$T/nonexistent.json" "$T/img"
	[ "$status" -eq 1 ]
	[ "$output" = "coco-decode: $T/nonexistent.json: no such file" ]
	# per image: a box outside its image, a missing image file (--skip-bad goes on)
	# (records to a file: the output is stderr alone, one line)
	jq '.annotations[3].bbox = [10, 10, 40, 40]' "$T/gt.json" >"$T/out.json"
	run bash -c '"$0" "$1" "$2" >"$3"' "$BIN/coco-decode" "$T/out.json" "$T/img" "$T/o.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "coco-decode: $T/out.json: image 3 (b.png): annotation 4: box [10, 10, 40, 40] lies outside the image (40x40)" ]
	rm "$T/img/c.png"
	run bash -c '"$0" "$1" "$2" >"$3"' "$BIN/coco-decode" "$T/gt.json" "$T/img" "$T/o.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "coco-decode: $T/img/c.png: missing image" ]
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --skip-bad --list
	[ "$status" -eq 0 ]
	[[ "$output" == *"(skipped)"* ]]
	printf 'dog\nhorse\n' >"$T/classes"
	run "$BIN/coco-decode" "$T/gt.json" "$T/img" --classes "$T/classes"
	[ "$status" -eq 1 ]
	[[ "$output" == "coco-decode: $T/classes: class 'horse': no category of that name" ]]
}

@test "pipelines' decoder: training drops images under 32 pixels on a side (mmdet's _filter_imgs), eval keeps them" {
	small_set
	# c.png (32x50) is kept at 32; a 31-pixel-wide copy of it is not
	jq '.images += [{"id": 20, "file_name": "c.png", "width": 31, "height": 50}]' "$T/gt.json" >"$T/gt31.json"
	cat >"$T/cfg.json" <<-EOF
	{"name": "t", "dataset": {"type": "coco", "root": "$T", "train_split": "train", "test_split": "test",
	 "train": {"ann_file": "gt31.json", "img_prefix": "img"}, "test": {"ann_file": "gt31.json", "img_prefix": "img"}}}
	EOF
	cd "$ROOT"
	. pipelines/lib.sh
	DATA=$T load_config "$T/cfg.json"
	decoder train train
	run "${decode_cmd[@]}" --list
	[ "$status" -eq 0 ]
	[ "$output" = $'7\t2\n3\t1\n12\t0' ]
	decoder test
	run "${decode_cmd[@]}" --list
	[ "$output" = $'7\t2\n3\t1\n12\t0\n20\t0' ]
}

@test "coco-decode on the COCO version of BCCD: the records of voc-decode, byte for byte in tensors" {
	[ -d "$BCCD" ] || skip "no BCCD data"
	/usr/bin/python3 "$ROOT/pipelines/voc2coco.py" "$BCCD" "$ROOT/configs/bccd.classes" "$T" test 2>/dev/null
	"$BIN/voc-decode" "$BCCD" --split test --classes "$ROOT/configs/bccd.classes" --limit 12 >"$T/voc.tns"
	"$BIN/coco-decode" "$T/instances_test.json" "$BCCD/JPEGImages" --classes "$ROOT/configs/bccd.classes" \
		--limit 12 >"$T/coco.tns"
	/usr/bin/python3 - "$T/voc.tns" "$T/coco.tns" <<'PY'
import sys
sys.path.insert(0, "tests")
import numpy as np, tnsfile
v, c = tnsfile.read(sys.argv[1]), tnsfile.read(sys.argv[2])
assert len(v) == len(c) == 12
for (kv, tv, mv), (kc, tc, mc) in zip(v, c):
    assert kv == kc == "image" and list(tv) == list(tc)
    for k in tv:
        assert tv[k].dtype == tc[k].dtype and np.array_equal(tv[k], tc[k]), (mv["id"], k)
    assert (mv["width"], mv["height"], mv["index"]) == (mc["width"], mc["height"], mc["index"])
PY
}

@test "map-eval --metric coco: the 12 numbers and classwise AP of the reference, to 1e-9" {
	# bccd: real dets (ssd-decode, 200 per image) of a model trained on COCO-BCCD
	for c in random crowded bccd; do
		run "$BIN/map-eval" --metric coco --ann "$F/$c/gt.json" "$F/$c/dets.tns" --json "$T/$c.json"
		[ "$status" -eq 0 ]
		[[ "${lines[0]}" == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "* ]]
		[[ "${lines[11]}" == " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = "* ]]
		agrees "$T/$c.json" "$F/$c/expected.json"
		[ -f "$F/$c/expected_records.json" ] || continue
		# without --ann: the records' gt_* (areas w * h, difficult as crowd)
		jq -r '.categories | sort_by(.id)[] | .name' "$F/$c/gt.json" >"$T/$c.classes"
		"$BIN/map-eval" --metric coco --classes "$T/$c.classes" "$F/$c/dets.tns" --json "$T/$c.rec.json" >/dev/null
		agrees "$T/$c.rec.json" "$F/$c/expected_records.json"
	done
	# the shards of a set in any order give the same numbers
	"$BIN/tns" head -n 20 "$F/random/dets.tns" >"$T/a.tns"
	"$BIN/tns" cat "$F/random/dets.tns" | tail -c +1 >/dev/null
	/usr/bin/python3 -c "
import sys; sys.path.insert(0, 'tests'); import tnsfile
r = tnsfile.read('$F/random/dets.tns')
tnsfile.write('$T/b.tns', r[20:])"
	"$BIN/map-eval" --metric coco --ann "$F/random/gt.json" "$T/b.tns" "$T/a.tns" --json "$T/shards.json" >/dev/null
	agrees "$T/shards.json" "$F/random/expected.json"
}

@test "map-eval --metric coco --results: a COCO results file that scores the same in the reference" {
	run "$BIN/map-eval" --metric coco --ann "$F/random/gt.json" "$F/random/dets.tns" --results "$T/res.json"
	[ "$status" -eq 0 ]
	[ "$(jq length "$T/res.json")" -eq "$(jq '[.[]] | length' "$T/res.json")" ]
	jq -e 'all(.[]; (.image_id | type) == "number" and ([.category_id] | inside([1, 3, 7, 10, 25])) and
		(.bbox | length) == 4 and (.score | type) == "number")' "$T/res.json"
	/usr/bin/python3 "$ROOT/tests/ref_cocoeval.py" eval "$F/random/gt.json" "$T/res.json" >"$T/ref.json"
	"$BIN/map-eval" --metric coco --ann "$F/random/gt.json" "$F/random/dets.tns" --json "$T/out.json" >/dev/null
	agrees "$T/out.json" "$T/ref.json"
	! ls "$T"/.tmp* 2>/dev/null
}

@test "map-eval --metric coco: bad input" {
	run "$BIN/map-eval" --ann "$F/random/gt.json" </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "map-eval: --ann and --results go with --metric coco"* ]]
	run "$BIN/map-eval" --metric cocoa </dev/null
	[ "$status" -eq 2 ]
	# dets of an image the annotation file does not have
	jq '.images |= map(select(.id != 215)) | .annotations |= map(select(.image_id != 215))' \
		"$F/random/gt.json" >"$T/gt.json"
	run "$BIN/map-eval" --metric coco --ann "$T/gt.json" "$F/random/dets.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "map-eval: $F/random/dets.tns: record "*": dets of image 215: image 215: not among the evaluated images" ]]
}

@test "pipelines on a coco config: train, eval METRIC=coco writes eval.json and results.bbox.json, calibrate" {
	[ -d "$BCCD" ] || skip "no BCCD data"
	cd "$ROOT"
	export BIN THREADS=2
	D=$T/data
	/usr/bin/python3 pipelines/voc2coco.py "$BCCD" configs/bccd.classes "$D" test 2>/dev/null
	ln -s "$BCCD/JPEGImages" "$D/images"
	CFG=tests/fixtures/pipeline/tiny_coco_bccd.json
	DATA=$D RUN=$T/run EPOCHS=1 MAX_STEPS=3 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"72 images, batch 4"* ]]
	DATA=$D RUN=$T/run METRIC=coco run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"Average Precision  (AP) @[ IoU=0.50:0.95"* ]]
	jq -e --argjson names "$STATS" '. as $e | $names | all(. as $n | $e[$n] | type == "number")' "$T/run/eval.json"
	jq -e '.images == 72 and (.classwise | length) == 3' "$T/run/eval.json"
	# the results file scores the same in the reference
	/usr/bin/python3 tests/ref_cocoeval.py eval "$D/instances_test.json" "$T/run/results.bbox.json" >"$T/ref.json"
	agrees "$T/run/eval.json" "$T/ref.json"
	# the VOC metric on the same data still works
	DATA=$D RUN=$T/run run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"| mAP "* ]]
	# and calibration reads the coco train split too
	DATA=$D RUN=$T/run ITERS=2 BIAS_ITERS=0 run pipelines/calibrate.sh $CFG
	[ "$status" -eq 0 ]
	[ -f "$T/run/ranges.tns" ]
}
