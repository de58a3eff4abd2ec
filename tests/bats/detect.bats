#!/usr/bin/env bats
# Plain images in, detections out: image-decode, augment --pass-images, draw-dets,
# dets-json and make detect (pipelines/detect.sh). Pixels of odd images are checked
# against OpenCV's decode (tests/gen_image_fixtures.py wrote the fixtures).

load helpers

PY=/usr/bin/python3
IMG=tests/fixtures/images
CFG=tests/fixtures/pipeline/tiny_bccd.json

setup() {
	cd "$ROOT"
	export BIN PYTHONPATH=$ROOT/tests
	T=$BATS_TEST_TMPDIR
}

# A few BCCD test images, copied without their XML into a flat folder.
flat_bccd() {
	mkdir -p "$1"
	for id in $(head -n "$2" "$BCCD/ImageSets/Main/test.txt"); do cp "$BCCD/JPEGImages/$id.jpg" "$1/"; done
}

@test "image-decode: odd images decode as OpenCV's imdecode(IMREAD_COLOR) does, byte for byte (grey, CMYK, 16-bit, palette, alpha, EXIF 1-8)" {
	n=0
	for f in $IMG/*.jpg $IMG/*.png; do
		"$BIN/image-decode" "$f" >"$T/one.tns"
		"$PY" - "$T/one.tns" "${f%.*}.rgb" "$f" <<-'EOF'
		import sys, numpy as np, tnsfile
		(kind, t, m), = tnsfile.read(sys.argv[1])
		ref = np.fromfile(sys.argv[2], np.uint8)
		a = t["image"]
		assert a.shape[0] == 3 and a.shape[1] == m["height"] and a.shape[2] == m["width"], (sys.argv[3], a.shape, m)
		assert a.size == ref.size and np.array_equal(a.ravel(), ref), sys.argv[3]
		EOF
		n=$((n + 1))
	done
	[ "$n" -eq 19 ]
	# EXIF 6 turns the 23x17 picture upright: 17 wide, 23 high
	run "$BIN/image-decode" --list $IMG/exif6.jpg
	"$BIN/image-decode" $IMG/exif6.jpg | "$BIN/tns" ls | grep -q 'image:u8\[3,23,17\]'
}

@test "image-decode: records equal voc-decode's for the same files (pixels and meta, byte for byte)" {
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 6 >"$T/voc.tns"
	head -n 6 "$BCCD/ImageSets/Main/test.txt" | sed "s|^|$BCCD/JPEGImages/|; s|$|.jpg|" |
		"$BIN/image-decode" >"$T/plain.tns"
	"$PY" - "$T/voc.tns" "$T/plain.tns" <<-'EOF'
	import sys, tnsfile
	voc, plain = tnsfile.read(sys.argv[1]), tnsfile.read(sys.argv[2])
	assert len(voc) == len(plain) == 6
	for (k1, t1, m1), (k2, t2, m2) in zip(voc, plain):
	    assert k1 == k2 == "image"
	    assert t1["image"].tobytes() == t2["image"].tobytes(), m1["id"]
	    assert list(t2) == ["image"], list(t2)           # no box tensors at all
	    assert list(m1) == list(m2), (list(m1), list(m2))  # the same keys in the same order
	    for key in ("id", "width", "height", "index", "epoch"):
	        assert m1[key] == m2[key], (key, m1[key], m2[key])
	    assert m2["file"].endswith("/JPEGImages/" + m1["id"] + ".jpg")
	EOF
}

@test "image-decode: directories sorted, -r, archives, lists on stdin and --files-from, --shard, --limit" {
	mkdir -p "$T/d/sub/deeper" "$T/d/.hidden"
	cp $IMG/rgb.jpg "$T/d/b.JPG"
	cp $IMG/gray8.png "$T/d/a.png"
	cp $IMG/cmyk.jpg "$T/d/sub/c.jpeg"
	cp $IMG/rgba.png "$T/d/sub/deeper/d.png"
	cp $IMG/rgb.jpg "$T/d/.hidden/e.jpg"
	echo "not an image" >"$T/d/notes.txt"
	run "$BIN/image-decode" --list "$T/d"
	[ "$status" -eq 0 ]
	[ "$output" = "$(printf 'a\t%s/d/a.png\nb\t%s/d/b.JPG' "$T" "$T")" ]
	run "$BIN/image-decode" --list -r "$T/d/"
	[ "$(cut -f1 <<<"$output" | tr '\n' ' ')" = "a b sub/c sub/deeper/d " ]
	(cd "$T/d" && tar cf ../d.tar sub a.png && zip -qr ../d.zip b.JPG sub)
	run "$BIN/image-decode" --list "$T/d.tar"
	[ "$status" -eq 0 ]
	[[ "$output" == *$'sub/c\t'"$T/d.tar:sub/c.jpeg"* ]]
	[ "${#lines[@]}" -eq 3 ]
	# the archive's pixels are the file's
	"$BIN/image-decode" "$T/d.zip" | "$BIN/tns" ls >"$T/zip.txt"
	[ "$(wc -l <"$T/zip.txt")" -eq 3 ]
	cmp <("$BIN/image-decode" --limit 1 "$T/d/sub/c.jpeg" | "$PY" -c 'import sys,tnsfile; print(tnsfile.read("/dev/stdin")[0][1]["image"].tobytes().hex())') \
	    <("$BIN/image-decode" "$T/d.tar" | "$PY" -c 'import sys,tnsfile; r=[x for x in tnsfile.read("/dev/stdin") if x[2]["id"]=="sub/c"]; print(r[0][1]["image"].tobytes().hex())')
	# a list on stdin, and the same list from a file after a PATH
	printf '%s\n' "$T/d/b.JPG" "  $T/d/sub/c.jpeg  " "" >"$T/list"
	run "$BIN/image-decode" --list <"$T/list"
	[ "$(cut -f1 <<<"$output" | tr '\n' ' ')" = "b c " ]
	run "$BIN/image-decode" --list "$T/d/a.png" --files-from "$T/list"
	[ "$(cut -f1 <<<"$output" | tr '\n' ' ')" = "a b c " ]
	# shards keep the positions as indices; --limit first
	"$BIN/image-decode" -r "$T/d" --shard 1/2 | "$BIN/tns" cat --json | jq -c '[.meta.id, .meta.index]' >"$T/shard.txt"
	[ "$(tr '\n' ' ' <"$T/shard.txt")" = '["b",1] ["sub/deeper/d",3] ' ]
	run "$BIN/image-decode" -r "$T/d" --list --limit 3 --shard 0/2
	[ "$(cut -f1 <<<"$output" | tr '\n' ' ')" = "a sub/c " ]
}

@test "image-decode: bad inputs fail with one line naming the file; --skip-bad goes on; usage errors exit 2" {
	mkdir -p "$T/d" "$T/empty" "$T/two"
	cp $IMG/rgb.jpg "$T/d/good.jpg"
	head -c 300 $IMG/rgb.jpg >"$T/d/cut.jpg"
	echo "hello" >"$T/d/text.png"
	: >"$T/d/zero.jpg"
	run "$BIN/image-decode" "$T/d/cut.jpg"
	[ "$status" -eq 1 ]
	[[ "$output" == "image-decode: $T/d/cut.jpg: corrupt JPEG: "* ]]
	[ "${#lines[@]}" -eq 1 ]
	run "$BIN/image-decode" "$T/d/text.png"
	[ "$status" -eq 1 ]
	[ "$output" = "image-decode: $T/d/text.png: not a JPEG or PNG image" ]
	run "$BIN/image-decode" "$T/d/zero.jpg"
	[ "$output" = "image-decode: $T/d/zero.jpg: empty image file" ]
	run "$BIN/image-decode" "$T/missing.jpg"
	[ "$status" -eq 1 ]
	[ "$output" = "image-decode: $T/missing.jpg: No such file or directory" ]
	echo "$T/gone.jpg" >"$T/list"
	run "$BIN/image-decode" --files-from "$T/list"
	[ "$status" -eq 1 ]
	[ "$output" = "image-decode: $T/gone.jpg: No such file or directory" ]
	run "$BIN/image-decode" "$T/empty"
	[ "$status" -eq 1 ]
	[ "$output" = "image-decode: $T/empty: no JPEG or PNG images (*.jpg, *.jpeg, *.png) (--recursive looks in subdirectories)" ]
	cp $IMG/rgb.jpg "$T/two/x.jpg"
	cp $IMG/gray8.png "$T/two/x.png"
	run "$BIN/image-decode" "$T/two"
	[ "$status" -eq 1 ]
	[ "$output" = "image-decode: $T/two/x.jpg and $T/two/x.png: both have the image id 'x'" ]
	# nothing half-written: a failing run's output holds whole records only
	run "$BIN/image-decode" "$T/d"
	[ "$status" -eq 1 ]
	[[ "$output" == "image-decode: $T/d/cut.jpg: corrupt JPEG"* ]]
	run "$BIN/image-decode" --skip-bad "$T/d"
	[ "$status" -eq 0 ]
	[[ "$output" == *"image-decode: $T/d/cut.jpg: corrupt JPEG: "*"(skipped)"* ]]
	[[ "$output" == *"image-decode: skipped 3 bad images" ]]
	[ "$("$BIN/image-decode" --skip-bad "$T/d" 2>/dev/null | "$BIN/tns" ls | wc -l)" -eq 1 ]
	run "$BIN/image-decode" --shard 2/2 "$T/d"
	[ "$status" -eq 2 ]
	run "$BIN/image-decode" --bogus "$T/d"
	[ "$status" -eq 2 ]
	[[ "$output" == "image-decode: unknown option '--bogus'"* ]]
	run "$BIN/image-decode" --files-from "$T/list" -
	[ "$status" -eq 2 ]
	run "$BIN/image-decode" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--recursive"*"--files-from"*"--skip-bad"*"EXIF orientation"* ]]
}

@test "augment --eval on plain images: batches without box tensors, images passed on ahead of their batch; --train refuses them" {
	"$BIN/image-decode" $IMG/rgb.jpg $IMG/exif6.jpg $IMG/gray8.png >"$T/img.tns"
	run "$BIN/tns" ls <("$BIN/augment" --eval --size 32 --batch 2 --pass-images <"$T/img.tns")
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == *"image "*'"id":"rgb"'* ]]
	[[ "${lines[1]}" == *"image "*'"id":"exif6"'* ]]
	[[ "${lines[2]}" == *"batch    image:f32[2,3,32,32] scale_factor:f32[2,4] orig_size:i32[2,2]  "* ]]
	[[ "${lines[3]}" == *"image "*'"id":"gray8"'* ]]
	[[ "${lines[4]}" == *"batch    image:f32[1,3,32,32] scale_factor"* ]]
	[ "${#lines[@]}" -eq 5 ]
	# passed on byte for byte
	"$BIN/augment" --eval --size 32 --batch 2 --pass-images <"$T/img.tns" | "$BIN/tns" cat --json | jq -c 'select(.kind == "image")' >"$T/a"
	"$BIN/tns" cat --json <"$T/img.tns" >"$T/b"
	cmp "$T/a" "$T/b"
	# the same batches as without --pass-images
	cmp <("$BIN/augment" --eval --size 32 --batch 2 <"$T/img.tns") \
	    <("$BIN/augment" --eval --size 32 --batch 2 --pass-images <"$T/img.tns" | "$BIN/tns" cat --json | jq -c 'select(.kind == "batch")' >/dev/null; "$BIN/augment" --eval --size 32 --batch 2 <"$T/img.tns")
	run "$BIN/augment" --train --size 32 --batch 2 <"$T/img.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"image rgb has no ground truth (boxes, labels): --train needs it"* ]]
	# a batch mixing annotated and plain images is refused
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 1 | cat - "$T/img.tns" >"$T/mixed.tns"
	run "$BIN/augment" --eval --size 32 --batch 2 <"$T/mixed.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"has ground truth and image rgb none: a batch takes one kind"* ]]
}

@test "forward (float, --quant, --int8) and ssd-decode run on plain-image batches" {
	"$BIN/forward" --config $CFG --init --seed 3 >"$T/params.tns"
	flat_bccd "$T/flat" 4
	"$BIN/image-decode" "$T/flat" | "$BIN/augment" --eval --config $CFG --batch 2 >"$T/b.tns"
	"$BIN/forward" --config $CFG --weights "$T/params.tns" --stats <"$T/b.tns" | "$BIN/calib-ranges" >"$T/ranges.tns"
	for q in "" "--quant --ranges $T/ranges.tns" "--int8 --ranges $T/ranges.tns"; do
		# shellcheck disable=SC2086
		"$BIN/forward" --config $CFG --weights "$T/params.tns" $q <"$T/b.tns" |
			"$BIN/ssd-decode" --config $CFG --score-thr 0 --max-per-img 5 >"$T/dets.tns"
		run "$BIN/tns" ls "$T/dets.tns"
		[ "${#lines[@]}" -eq 4 ]
		[[ "${lines[0]}" == *"dets     boxes:f32[5,4] scores:f32[5] labels:i32[5] gt_boxes:f32[0,4]"*'"width":640,"height":480'* ]]
	done
}

# draw-dets with its passed-on stream thrown away, so `run` sees its messages alone
draw() {
	"$BIN/draw-dets" "$@" >/dev/null
}

# An image record and dets for it, written by Python: a grey 120x90 picture, three
# detections (one under the score threshold) and two ground truth boxes.
make_dets() {
	"$PY" - "$1" "${2:-im}" <<-'EOF'
	import sys, numpy as np, tnsfile
	img = np.full((3, 90, 120), 128, np.uint8)
	dets = {"boxes": np.array([[10.7, 30.2, 60.9, 80.5], [70, 5, 119, 40], [20, 20, 40, 40]], np.float32),
	        "scores": np.array([0.9, 0.5, 0.2], np.float32), "labels": np.array([0, 2, 1], np.int32),
	        "gt_boxes": np.array([[80, 50, 110, 85], [5, 5, 30, 25]], np.float32),
	        "gt_labels": np.array([1, 0], np.int32), "gt_difficult": np.zeros(2, np.uint8)}
	meta = {"id": sys.argv[2], "index": 0, "width": 120, "height": 90, "num_classes": 3}
	tnsfile.write(sys.argv[1], [("image", {"image": img}, {"id": sys.argv[2], "file": "x/" + sys.argv[2] + ".jpg", "index": 0}),
	                            ("dets", dets, meta)])
	EOF
}

@test "draw-dets: box edges at the exact pixels the dets give, labels drawn, one colour per class, dashed gt (PNG read back)" {
	make_dets "$T/s.tns"
	"$BIN/draw-dets" --out "$T/out" --classes configs/bccd.classes --format png --gt <"$T/s.tns" >/dev/null
	[ -f "$T/out/im.png" ]
	"$PY" - "$T/out/im.png" <<-'EOF'
	import colorsys, sys, numpy as np
	from PIL import Image
	a = np.asarray(Image.open(sys.argv[1]).convert("RGB")).astype(int)
	assert a.shape == (90, 120, 3)
	def colour(c):  # golden-angle hues, as docs/detect.md says
	    r, g, b = colorsys.hsv_to_rgb((c * 137.507764 % 360) / 360, 0.85, 0.95)
	    return [int(np.floor(v * 255 + 0.5)) for v in (r, g, b)]
	grey = [128, 128, 128]
	# det 0 (RBC 0.9): [10.7, 30.2, 60.9, 80.5] -> columns 10..60, rows 30..80, 2 px inwards
	c0 = colour(0)
	for y in range(32, 79):
	    assert list(a[y, 10]) == c0 and list(a[y, 11]) == c0, ("left edge", y, a[y, 10])
	    assert list(a[y, 60]) == c0 and list(a[y, 59]) == c0, ("right edge", y)
	    assert list(a[y, 9]) == grey and list(a[y, 61]) == grey and list(a[y, 12]) == grey, ("outside/inside", y)
	for x in range(10, 61):
	    assert list(a[80, x]) == c0 and list(a[79, x]) == c0 and list(a[81, x]) == grey, ("bottom", x)
	    assert list(a[78, x]) == (c0 if x < 12 or x > 58 else grey), ("above the bottom band", x)
	# det 1 (Platelets 0.5): [70, 5, 119, 40]: its label has no room above, so it sits inside the top
	c2 = colour(2)
	for y in range(25, 39):  # below its label, above its bottom band
	    assert list(a[y, 119]) == c2 and list(a[y, 118]) == c2 and list(a[y, 117]) == grey, ("right", y)
	assert list(a[40, 90]) == c2 and list(a[41, 90]) == grey
	# det 2 is under --score-thr 0.3: nothing drawn at its edge (20..40) where no label lies
	assert list(a[35, 20]) == grey and list(a[35, 40]) == grey
	# labels: a filled box of the class colour above det 0 with text in it (dark or white ink)
	above = a[18:30, 10:60]
	assert (above == c0).all(-1).sum() > 100, "no label box above det 0"
	ink = ~(above == c0).all(-1) & ~(above == grey).all(-1)
	assert ink.sum() > 20, "no text in the label"
	inside = a[5:20, 70:119]
	assert (inside == c2).all(-1).sum() > 100 and (~(inside == c2).all(-1) & ~(inside == grey).all(-1)).sum() > 20
	# ground truth dashed: along gt 0's top edge (row 50, x 80..110) both colour and gaps
	c1 = colour(1)
	top = a[50, 80:111]
	on = (top == c1).all(-1).sum()
	assert 8 < on < 28, on
	print("ok")
	EOF
	# without --gt nothing is dashed
	"$BIN/draw-dets" --out "$T/nogt" --classes configs/bccd.classes --format png <"$T/s.tns" >/dev/null
	"$PY" -c 'import sys, numpy as np; from PIL import Image; a = np.asarray(Image.open(sys.argv[1]).convert("RGB")); assert (a[50, 80:111] == 128).all()' "$T/nogt/im.png"
	# JPEG by default, with a JPEG's magic
	"$BIN/draw-dets" --out "$T/jpg" --classes configs/bccd.classes <"$T/s.tns" >/dev/null
	[ "$(head -c 3 "$T/jpg/im.jpg" | od -An -tx1 | tr -d ' ')" = "ffd8ff" ]
}

@test "draw-dets: atomic writes into subdirectories, the stream passed on unchanged, every bad input named" {
	make_dets "$T/s.tns" "sub/dir/im"
	"$BIN/draw-dets" --out "$T/out" --classes configs/bccd.classes <"$T/s.tns" >"$T/passed.tns"
	cmp "$T/s.tns" "$T/passed.tns"
	[ -f "$T/out/sub/dir/im.jpg" ]
	[ -z "$(find "$T/out" -name '.tmp-*')" ]
	# dets without their image record
	"$BIN/tns" cat --json <"$T/s.tns" >/dev/null
	"$PY" -c 'import sys, tnsfile; r = tnsfile.read(sys.argv[1]); tnsfile.write(sys.argv[2], r[1:]); tnsfile.write(sys.argv[3], r[:1]); tnsfile.write(sys.argv[4], r[:1] + r[:1] + r[1:])' \
		"$T/s.tns" "$T/dets_only.tns" "$T/image_only.tns" "$T/twice.tns"
	run draw --out "$T/o2" --classes configs/bccd.classes <"$T/dets_only.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "draw-dets: stdin: record 1: dets of image sub/dir/im: no image record before them (augment --pass-images writes them)" ]
	run draw --out "$T/o2" --classes configs/bccd.classes <"$T/image_only.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "draw-dets: 1 image record at the end got no dets" ]
	run "$BIN/dets-json" --classes configs/bccd.classes <"$T/image_only.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "dets-json: 1 image record at the end got no dets" ]
	run draw --out "$T/o2" --classes configs/bccd.classes <"$T/twice.tns"
	[ "$status" -eq 0 ] || [[ "$output" == *"got no dets"* ]]
	# the class list must fit the dets
	run draw --out "$T/o2" <"$T/s.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "draw-dets: stdin: record 2: the detections have 3 classes, the class list 20" ]
	# an id that would write outside --out
	make_dets "$T/evil.tns" "../evil"
	run draw --out "$T/o3" --classes configs/bccd.classes <"$T/evil.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "draw-dets: image id '../evil': '.' and '..' would leave the output directory" ]
	[ ! -e "$T/evil.jpg" ]
	# not a stream
	run draw --out "$T/o4" <<<"garbage"
	[ "$status" -eq 1 ]
	[[ "$output" == "draw-dets: stdin: record 1: "* ]]
	run draw <"$T/s.tns"
	[ "$status" -eq 2 ]
	[[ "$output" == "draw-dets: missing --out DIR"* ]]
	run draw --out "$T/o5" --format gif <"$T/s.tns"
	[ "$status" -eq 2 ]
	run draw --out "$T/o5" --score-thr 2 <"$T/s.tns"
	[ "$status" -eq 2 ]
	run "$BIN/draw-dets" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--score-thr X    draw detections with score > X (default 0.3)"* ]]
}

@test "dets-json: one object per image, equal to the dets stream (every number reads back as its f32); jq reads it" {
	cp tests/fixtures/detect/dets_320.tns "$T/d.tns"
	"$BIN/dets-json" --classes configs/bccd.classes <"$T/d.tns" >"$T/all.json"
	"$BIN/dets-json" --classes configs/bccd.classes --score-thr 0.8 <"$T/d.tns" >"$T/thr.json"
	[ "$(jq -s length "$T/all.json")" -eq 1 ]
	[ "$(jq '.detections | length' "$T/all.json")" -eq 200 ]
	"$PY" - "$T/d.tns" "$T/all.json" "$T/thr.json" <<-'EOF'
	import json, sys, numpy as np, tnsfile
	names = [l.strip() for l in open("configs/bccd.classes") if l.strip()]
	recs = [r for r in tnsfile.read(sys.argv[1]) if r[0] == "dets"]
	for path, thr in ((sys.argv[2], 0), (sys.argv[3], 0.8)):
	    lines = open(path).read().splitlines()
	    assert len(lines) == len(recs)
	    for line, (kind, t, m) in zip(lines, recs):
	        o = json.loads(line)
	        assert o["file"] is None and o["id"] == m["id"] and o["index"] == m["index"]
	        assert o["width"] == m["width"] and o["height"] == m["height"]
	        keep = [i for i in range(len(t["scores"])) if float(t["scores"][i]) > thr]
	        assert len(o["detections"]) == len(keep), (len(o["detections"]), len(keep))
	        assert thr == 0 or 0 < len(keep) < len(t["scores"]), len(keep)
	        for d, i in zip(o["detections"], keep):
	            assert d["label"] == int(t["labels"][i]) and d["class"] == names[t["labels"][i]]
	            assert np.float32(d["score"]) == t["scores"][i], (d["score"], t["scores"][i])
	            assert np.array_equal(np.array(d["box"], np.float32), t["boxes"][i])
	print("ok")
	EOF
	# with image records the file comes from them
	make_dets "$T/s.tns"
	[ "$("$BIN/dets-json" --classes configs/bccd.classes <"$T/s.tns" | jq -r .file)" = "x/im.jpg" ]
	[ "$("$BIN/dets-json" --classes configs/bccd.classes <"$T/s.tns" | jq -c '[.detections[].class]')" = '["RBC","Platelets","WBC"]' ]
	run "$BIN/dets-json" <"$T/d.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "dets-json: stdin: record 1: the detections have 3 classes, the class list 20" ]
	run "$BIN/dets-json" --score-thr x
	[ "$status" -eq 2 ]
}

@test "make detect on a flat folder of BCCD JPEGs: a picture and a JSON object per image; the same JSON from a list on stdin and under NP=2" {
	under_mpi
	export THREADS=1
	"$BIN/forward" --config $CFG --init --seed 3 >"$T/params.tns"
	flat_bccd "$T/flat" 5
	run env IMAGES="$T/flat" OUT="$T/out" CKPT="$T/params.tns" SCORE=0.01 pipelines/detect.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"detect.sh: tiny_bccd: 5 images, checkpoint $T/params.tns -> $T/out"* ]]
	[[ "$output" == *"ssd-decode: 5 of 5 images"* ]]
	[ "$(ls "$T/out"/*.jpg | wc -l)" -eq 5 ]
	[ "$(jq -s length "$T/out/detections.json")" -eq 5 ]
	[ "$(jq -r .file "$T/out/detections.json" | head -n 1)" = "$T/flat/$(head -n 1 "$BCCD/ImageSets/Main/test.txt").jpg" ]
	ls "$T/flat"/*.jpg | IMAGES=- OUT="$T/list" CKPT="$T/params.tns" SCORE=0.01 pipelines/detect.sh $CFG 2>/dev/null
	cmp "$T/out/detections.json" "$T/list/detections.json"
	[ -z "$(ls -A "$T/list" | grep -v '\.jpg$' | grep -v '^detections.json$')" ]
	NP=2 MPIRUN_FLAGS=--oversubscribe IMAGES="$T/flat" OUT="$T/np2" CKPT="$T/params.tns" SCORE=0.01 pipelines/detect.sh $CFG 2>/dev/null
	cmp "$T/out/detections.json" "$T/np2/detections.json"
	[ "$(ls "$T/np2"/*.jpg | wc -l)" -eq 5 ]
	for f in "$T/out"/*.jpg; do cmp "$f" "$T/np2/${f##*/}"; done
	run env IMAGES="$T/flat" OUT="$T/x" CKPT="$T/nothing.tns" pipelines/detect.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == *"$T/nothing.tns: no such checkpoint"* ]]
}
