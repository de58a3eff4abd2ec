#!/usr/bin/env bats
# voc-decode: VOC trees and archives into image records. Small datasets are built at
# run time in $BATS_TEST_TMPDIR from the real bccd data (../shared/data/bccd).

bats_require_minimum_version 1.5.0

setup() {
	REPO="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
	DATA="$(cd "$REPO/../shared/data/bccd" && pwd)"
	CLS="$REPO/configs/bccd.classes"
	PY=/usr/bin/python3
	T="$BATS_TEST_TMPDIR"
	export PYTHONPATH="$REPO/tests"
}

# mkroot DIR ID...: a VOC root with these bccd images, listed in trainval.txt and test.txt.
mkroot() {
	local dir=$1
	shift
	mkdir -p "$dir/Annotations" "$dir/JPEGImages" "$dir/ImageSets/Main"
	: >"$dir/ImageSets/Main/trainval.txt"
	for id in "$@"; do
		cp "$DATA/Annotations/$id.xml" "$dir/Annotations/"
		cp "$DATA/JPEGImages/$id.jpg" "$dir/JPEGImages/"
		echo "$id" >>"$dir/ImageSets/Main/trainval.txt"
	done
	cp "$dir/ImageSets/Main/trainval.txt" "$dir/ImageSets/Main/test.txt"
}

SMALL=(BloodImage_00007 BloodImage_00338 BloodImage_00011 BloodImage_00343 BloodImage_00015)

# ids of a stream, one per line (root/id when ROOTS=1)
ids() {
	"$BIN/tns" cat --json "$1" | jq -r 'if env.ROOTS == "1" then .meta.root + "/" + .meta.id else .meta.id end'
}

decode() {
	"$BIN/voc-decode" --classes "$CLS" "$@"
}

# ---------------------------------------------------------------- happy paths

@test "bccd test split: 72 records, RGB 640x480, box counts and order as the XML files" {
	decode "$DATA" --split test >"$T/out.tns"
	run "$BIN/tns" ls "$T/out.tns"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 72 ]
	"$BIN/tns" cat --json "$T/out.tns" | jq -r '[.kind, .meta.id, .meta.root, .meta.file, .meta.width, .meta.height,
		(.tensors | map(.name + ":" + .dtype + (.shape | tostring)) | join(" "))] | join(" ")' >"$T/got"
	while read -r id; do
		n=$(grep -c '<object>' "$DATA/Annotations/$id.xml")
		echo "image $id bccd bccd/JPEGImages/$id.jpg 640 480 image:u8[3,480,640] boxes:f32[$n,4] labels:i32[$n] difficult:u8[$n]"
	done <"$DATA/ImageSets/Main/test.txt" >"$T/want"
	diff "$T/want" "$T/got"
	# index counts the selection; epoch 0
	run bash -c "'$BIN/tns' cat --json '$T/out.tns' | jq -r '\"\(.meta.index) \(.meta.epoch)\"' | tail -n 1"
	[ "$output" = "71 0" ]
}

@test "boxes, labels and difficult are the XML values (zero-area boxes accepted)" {
	mkroot "$T/r" "${SMALL[@]}"
	decode "$T/r" >"$T/out.tns"
	run "$PY" - "$T/out.tns" "$T/r" <<'EOF'
import sys, re
import tnsfile
classes = ["RBC", "WBC", "Platelets"]
recs = tnsfile.read(sys.argv[1])
assert len(recs) == 5, len(recs)
for kind, t, m in recs:
    xml = open(f"{sys.argv[2]}/Annotations/{m['id']}.xml").read()
    objs = re.findall(r"<object>.*?</object>", xml, re.S)
    want = [[int(re.search(f"<{k}>(.*?)</{k}>", o).group(1)) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objs]
    labels = [classes.index(re.search("<name>(.*?)</name>", o).group(1)) for o in objs]
    assert t["boxes"].tolist() == want, m["id"]
    assert t["labels"].tolist() == labels, m["id"]
    assert t["difficult"].tolist() == [0] * len(objs)
zero = {m["id"]: t["boxes"].tolist() for _, t, m in recs}
assert [504, 337, 504, 337] in zero["BloodImage_00338"]
assert [181, 329, 181, 329] in zero["BloodImage_00343"]
print("ok")
EOF
	[ "$status" -eq 0 ]
	[ "$output" = "ok" ]
}

@test "pixels equal PIL's decode, CMYK as OpenCV converts it (JPEG RGB, grayscale, CMYK, progressive; PNG palette, tRNS, RGBA, LA, 1-bit, 16-bit, interlaced)" {
	mkdir -p "$T/r/Annotations" "$T/r/JPEGImages" "$T/r/ImageSets/Main"
	"$PY" - "$T/r" <<'EOF'
import sys
import numpy as np
from PIL import Image
r = sys.argv[1]
rng = np.random.default_rng(7)
base = (rng.random((37, 53, 3)) * 255).astype(np.uint8)
im = Image.fromarray(base)
im.save(f"{r}/JPEGImages/rgb.jpg", quality=90)
im.convert("L").save(f"{r}/JPEGImages/gray.jpg", quality=90)
im.convert("CMYK").save(f"{r}/JPEGImages/cmyk.jpg", quality=90)
im.save(f"{r}/JPEGImages/prog.jpeg", quality=90, progressive=True)
im.convert("P", palette=Image.ADAPTIVE).save(f"{r}/JPEGImages/pal.png")
im.convert("RGBA").save(f"{r}/JPEGImages/rgba.png")
im.convert("LA").save(f"{r}/JPEGImages/la.png")
Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(f"{r}/JPEGImages/g16.png")
im.convert("P", palette=Image.ADAPTIVE).save(f"{r}/JPEGImages/palt.png", transparency=3)
im.convert("1").save(f"{r}/JPEGImages/bw.png")
# PIL cannot write Adam7: an interlaced RGB PNG by hand
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
raw = b""
for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
    sub = base[y0::dy, x0::dx]
    if sub.size:
        raw += b"".join(b"\0" + row.tobytes() for row in sub)
ihdr = struct.pack(">IIBBBBB", 53, 37, 8, 2, 0, 0, 1)
open(f"{r}/JPEGImages/adam7.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
    chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
ids = ["rgb", "gray", "cmyk", "prog", "pal", "rgba", "la", "g16", "palt", "bw", "adam7"]
open(f"{r}/ImageSets/Main/trainval.txt", "w").write("\n".join(ids) + "\n")
for i in ids:
    open(f"{r}/Annotations/{i}.xml", "w").write(
        "<annotation><size><width>53</width><height>37</height></size>"
        "<object><name>WBC</name><difficult>1</difficult><bndbox><xmin>1.9</xmin><ymin>-0.5</ymin>"
        "<xmax> 53 </xmax><ymax>37.99</ymax></bndbox></object></annotation>")
EOF
	decode "$T/r" --threads 2 >"$T/out.tns"
	run "$PY" - "$T/out.tns" "$T/r" <<'EOF'
import sys
import numpy as np
from PIL import Image
import tnsfile
for kind, t, m in tnsfile.read(sys.argv[1]):
    img = Image.open(f"{sys.argv[2]}/{m['file'].split('/', 1)[1]}")
    if m["id"] == "adam7":
        assert img.info.get("interlace") == 1
    if m["id"] == "g16":   # 16-bit keeps the high byte
        ref = np.repeat((np.asarray(img).astype(np.uint32) >> 8)[None], 3, 0)
    elif m["id"] == "cmyk":  # OpenCV's formula on the inks as stored (PIL un-inverts Adobe's)
        raw = 255 - np.asarray(img).astype(np.int32).transpose(2, 0, 1)
        ref = raw[3] - ((255 - raw[:3]) * raw[3] >> 8)
    else:
        ref = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    assert t["image"].shape == (3, 37, 53), (m["id"], t["image"].shape)
    assert np.abs(ref.astype(int) - t["image"].astype(int)).max() == 0, m["id"]
    # int(float(text)): truncated toward zero
    assert t["boxes"].tolist() == [[1, 0, 53, 37]], (m["id"], t["boxes"])
    assert t["difficult"].tolist() == [1] and t["labels"].tolist() == [1]
    print(m["id"], m["file"])
EOF
	[ "$status" -eq 0 ]
	[ "${lines[3]}" = "prog r/JPEGImages/prog.jpeg" ]
	[ "${lines[4]}" = "pal r/JPEGImages/pal.png" ]
	[ "${#lines[@]}" -eq 11 ]
}

@test "default classes are the 20 VOC classes" {
	mkdir -p "$T/r/Annotations" "$T/r/JPEGImages" "$T/r/ImageSets/Main"
	cp "$DATA/JPEGImages/BloodImage_00007.jpg" "$T/r/JPEGImages/a.jpg"
	echo a >"$T/r/ImageSets/Main/trainval.txt"
	printf '<annotation><object><name>tvmonitor</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object><object><name>aeroplane</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>' >"$T/r/Annotations/a.xml"
	"$BIN/voc-decode" "$T/r" >"$T/out.tns"
	run "$PY" -c "import tnsfile,sys; print(tnsfile.read(sys.argv[1])[0][1]['labels'].tolist())" "$T/out.tns"
	[ "$output" = "[19, 0]" ]
	# bccd's names are not VOC names
	run --separate-stderr "$BIN/voc-decode" "$DATA" --split test
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"unknown class 'WBC'"* ]]
}

@test "--classes: blank lines ignored, order gives the labels" {
	mkroot "$T/r" BloodImage_00005
	printf '\nPlatelets\n\n  WBC \nRBC\n\n' >"$T/cls"
	"$BIN/voc-decode" --classes "$T/cls" "$T/r" >"$T/out.tns"
	run "$PY" -c "import tnsfile,sys; print(sorted(set(tnsfile.read(sys.argv[1])[0][1]['labels'].tolist())))" "$T/out.tns"
	[ "$output" = "[0, 1, 2]" ]
	run --separate-stderr "$BIN/voc-decode" --classes "$T/missing" "$T/r"
	[ "$status" -eq 1 ]
	[[ "$stderr" == "voc-decode: $T/missing: "* ]]
}

@test "--list prints id and box count without decoding" {
	run decode "$DATA" --split test --list
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 72 ]
	id=$(head -n 1 "$DATA/ImageSets/Main/test.txt")
	[ "${lines[0]}" = "$id	$(grep -c '<object>' "$DATA/Annotations/$id.xml")" ]
}

@test "--verbose prints a per-class summary" {
	run --separate-stderr decode "$DATA" --split test --list --verbose
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"72 images"* ]]
	total=$(cat "$DATA/ImageSets/Main/test.txt" | while read -r id; do grep -c '<name>WBC</name>' "$DATA/Annotations/$id.xml"; done | awk '{ s += $1 } END { print s }')
	[[ "$stderr" =~ WBC\ +$total ]]
}

# ---------------------------------------------------------------- archives, roots

@test "archives (.tar, .tar.gz, .tgz, .zip) give the same bytes as the tree" {
	mkroot "$T/src/bccd" "${SMALL[@]}"
	decode "$T/src/bccd" >"$T/dir.tns"
	tar -C "$T/src" -cf "$T/a.tar" bccd
	tar -C "$T/src" -czf "$T/a.tar.gz" bccd
	cp "$T/a.tar.gz" "$T/a.tgz"
	(cd "$T/src" && "$PY" -c "
import os, zipfile
with zipfile.ZipFile('$T/a.zip', 'w', zipfile.ZIP_DEFLATED) as z:
    for d, _, fs in sorted(os.walk('bccd')):
        for f in sorted(fs):
            z.write(os.path.join(d, f))
    # what macOS adds to zips: must be ignored
    z.writestr('__MACOSX/bccd/Annotations/._BloodImage_00007.xml', b'junk')")
	for a in a.tar a.tar.gz a.tgz a.zip; do
		decode "$T/$a" --threads 2 >"$T/$a.tns"
		cmp "$T/dir.tns" "$T/$a.tns"
	done
	[ "$(ids "$T/dir.tns" | wc -l)" -eq 5 ]
}

@test "an archive of a VOCdevkit with two roots equals the directory" {
	mkroot "$T/VOCdevkit/VOC2012" BloodImage_00015 BloodImage_00016
	mkroot "$T/VOCdevkit/VOC2007" BloodImage_00007 BloodImage_00011
	mkdir "$T/VOCdevkit/notes"
	decode "$T/VOCdevkit" >"$T/dir.tns"
	tar -C "$T" -czf "$T/devkit.tgz" VOCdevkit
	decode "$T/devkit.tgz" >"$T/tgz.tns"
	cmp "$T/dir.tns" "$T/tgz.tns"
	run env ROOTS=1 bash -c "$(declare -f ids); BIN='$BIN' ids '$T/dir.tns'"
	[ "${lines[*]}" = "VOCdevkit/VOC2007/BloodImage_00007 VOCdevkit/VOC2007/BloodImage_00011 VOCdevkit/VOC2012/BloodImage_00015 VOCdevkit/VOC2012/BloodImage_00016" ]
	run bash -c "'$BIN/tns' cat --json '$T/tgz.tns' | jq -r .meta.file | head -n 1"
	[ "$output" = "VOCdevkit/VOC2007/JPEGImages/BloodImage_00007.jpg" ]
}

@test "several roots as arguments, in argument order; --split picks each root's list" {
	mkroot "$T/a" BloodImage_00007 BloodImage_00011
	mkroot "$T/b" BloodImage_00015
	echo BloodImage_00011 >"$T/a/ImageSets/Main/test.txt"
	run env ROOTS=1 bash -c "$(declare -f ids decode); BIN='$BIN' CLS='$CLS' decode '$T/b' '$T/a' | cat >'$T/o.tns'; BIN='$BIN' ids '$T/o.tns'"
	[ "${lines[*]}" = "b/BloodImage_00015 a/BloodImage_00007 a/BloodImage_00011" ]
	decode "$T/a" "$T/b" --split test >"$T/t.tns"
	run env ROOTS=1 bash -c "$(declare -f ids); BIN='$BIN' ids '$T/t.tns'"
	[ "${lines[*]}" = "a/BloodImage_00011 b/BloodImage_00015" ]
}

# ---------------------------------------------------------------- selection

@test "--shard k/N: shards are disjoint and together the whole set (also shuffled)" {
	for extra in "" "--shuffle --seed 5"; do
		decode "$DATA" --split test --list $extra | cut -f1 >"$T/all"
		: >"$T/union"
		for k in 0 1 2; do
			decode "$DATA" --split test --list $extra --shard $k/3 | cut -f1 >"$T/s$k"
			cat "$T/s$k" >>"$T/union"
		done
		[ "$(wc -l <"$T/s0")" -eq 24 ]
		[ -z "$(sort "$T/union" | uniq -d)" ]
		diff <(sort "$T/all") <(sort "$T/union")
		# shard k holds positions k, k+N, ...
		diff "$T/s1" <(sed -n '2~3p' "$T/all")
	done
	# index is the position before sharding
	decode "$DATA" --split test --shard 1/2 --limit 6 >"$T/o.tns"
	run bash -c "'$BIN/tns' cat --json '$T/o.tns' | jq -r .meta.index | paste -sd' '"
	[ "$output" = "1 3 5" ]
}

@test "--shuffle is a seeded permutation: same seed same bytes, other seed other order" {
	decode "$DATA" --split test --limit 20 --shuffle --seed 1 >"$T/a.tns"
	decode "$DATA" --split test --limit 20 --shuffle --seed 1 --threads 1 >"$T/b.tns"
	cmp "$T/a.tns" "$T/b.tns"
	decode "$DATA" --split test --limit 20 --shuffle --seed 2 --list | cut -f1 >"$T/s2"
	decode "$DATA" --split test --limit 20 --shuffle --seed 1 --list | cut -f1 >"$T/s1"
	decode "$DATA" --split test --limit 20 --list | cut -f1 >"$T/plain"
	! cmp -s "$T/s1" "$T/s2"
	! cmp -s "$T/s1" "$T/plain"
	diff <(sort "$T/s1") <(sort "$T/plain")
	diff <(sort "$T/s2") <(sort "$T/plain")
	diff <(ids "$T/a.tns") "$T/s1"
	# pinned: the order must not change between machines or versions
	[ "$(head -n 3 "$T/s1" | paste -sd' ')" = "BloodImage_00021 BloodImage_00041 BloodImage_00019" ]
}

@test "--limit takes the first N of the split order" {
	run decode "$DATA" --split test --list --limit 4
	[ "$status" -eq 0 ]
	[ "$(printf '%s\n' "${lines[@]}" | cut -f1)" = "$(head -n 4 "$DATA/ImageSets/Main/test.txt")" ]
	run decode "$DATA" --split test --list --limit 0
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	run decode "$DATA" --split test --list --limit 1000
	[ "${#lines[@]}" -eq 72 ]
}

@test "--epochs N: N passes, meta epoch, reshuffled per epoch" {
	decode "$DATA" --split test --limit 10 --epochs 3 >"$T/o.tns"
	run bash -c "'$BIN/tns' cat --json '$T/o.tns' | jq -r '\"\(.meta.epoch) \(.meta.index)\"'"
	[ "${#lines[@]}" -eq 30 ]
	[ "${lines[0]}" = "0 0" ]
	[ "${lines[10]}" = "1 0" ]
	[ "${lines[29]}" = "2 9" ]
	decode "$DATA" --split test --limit 10 --epochs 2 --shuffle --seed 3 --list | cut -f1 >"$T/e"
	head -n 10 "$T/e" >"$T/e0"
	tail -n 10 "$T/e" >"$T/e1"
	! cmp -s "$T/e0" "$T/e1"
	diff <(sort "$T/e0") <(sort "$T/e1")
	# epoch 0 of a multi-epoch run is the single-epoch order
	diff "$T/e0" <(decode "$DATA" --split test --limit 10 --shuffle --seed 3 --list | cut -f1)
}

@test "output bytes do not depend on the thread count" {
	decode "$DATA" --split test --threads 1 >"$T/1.tns"
	decode "$DATA" --split test --threads 2 >"$T/2.tns"
	decode "$DATA" --split test --threads 5 >"$T/5.tns"
	cmp "$T/1.tns" "$T/2.tns"
	cmp "$T/1.tns" "$T/5.tns"
	decode "$DATA" --split test --limit 9 --epochs 2 --shuffle --shard 1/2 --threads 1 >"$T/a.tns"
	decode "$DATA" --split test --limit 9 --epochs 2 --shuffle --shard 1/2 --threads 3 >"$T/b.tns"
	cmp "$T/a.tns" "$T/b.tns"
}

# ---------------------------------------------------------------- bad input

# badroot: a root of three good images plus the broken one made by the test.
badroot() {
	mkroot "$T/r" BloodImage_00007 BloodImage_00011 BloodImage_00015
}

# expect_bad FILE WHY ARGS...: exit 1, one line "voc-decode: FILE: ...WHY..."
expect_bad() {
	local file=$1 why=$2
	shift 2
	run --separate-stderr decode "$@"
	echo "status $status stderr: $stderr" >&2
	[ "$status" -eq 1 ]
	[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
	[[ "$stderr" == "voc-decode: $file: "* ]]
	[[ "$stderr" == *"$why"* ]]
}

@test "bad: missing image" {
	badroot
	rm "$T/r/JPEGImages/BloodImage_00011.jpg"
	expect_bad "$T/r/JPEGImages/BloodImage_00011.jpg" "missing image" "$T/r" --threads 2
}

@test "bad: truncated JPEG" {
	badroot
	head -c 20000 "$DATA/JPEGImages/BloodImage_00011.jpg" >"$T/r/JPEGImages/BloodImage_00011.jpg"
	expect_bad "$T/r/JPEGImages/BloodImage_00011.jpg" "corrupt JPEG" "$T/r"
}

@test "bad: JPEG with damaged entropy data, and a file that is no image" {
	badroot
	"$PY" - "$T/r/JPEGImages/BloodImage_00011.jpg" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
for i in range(len(b) // 2, len(b) // 2 + 400):
    b[i] = 0xff if i % 7 == 0 else b[i] ^ 0x5a
open(p, "wb").write(bytes(b))
EOF
	expect_bad "$T/r/JPEGImages/BloodImage_00011.jpg" "corrupt JPEG" "$T/r"
	echo "not an image" >"$T/r/JPEGImages/BloodImage_00011.jpg"
	expect_bad "$T/r/JPEGImages/BloodImage_00011.jpg" "not a JPEG or PNG" "$T/r"
	: >"$T/r/JPEGImages/BloodImage_00011.jpg"
	expect_bad "$T/r/JPEGImages/BloodImage_00011.jpg" "empty image" "$T/r"
}

@test "bad: truncated PNG" {
	badroot
	rm "$T/r/JPEGImages/BloodImage_00011.jpg"
	"$PY" -c "
from PIL import Image; import sys
Image.open(sys.argv[1]).save(sys.argv[2])" "$DATA/JPEGImages/BloodImage_00011.jpg" "$T/full.png"
	head -c 30000 "$T/full.png" >"$T/r/JPEGImages/BloodImage_00011.png"
	expect_bad "$T/r/JPEGImages/BloodImage_00011.png" "corrupt PNG" "$T/r"
	cp "$T/full.png" "$T/r/JPEGImages/BloodImage_00011.png"
	run decode "$T/r" --list
	[ "$status" -eq 0 ]
}

@test "bad: malformed XML, wrong root element, missing or non-numeric fields" {
	badroot
	x="$T/r/Annotations/BloodImage_00011.xml"
	sed -i 's#</bndbox>#</bndbx>#' "$x"
	expect_bad "$x" "malformed XML" "$T/r"
	echo '<notes><object/></notes>' >"$x"
	expect_bad "$x" "not <annotation>" "$T/r"
	cp "$DATA/Annotations/BloodImage_00011.xml" "$x"
	sed -i '0,/<xmax>[0-9]*<\/xmax>/s##<xmax>12px</xmax>#' "$x"
	expect_bad "$x" "bad <xmax> '12px'" "$T/r"
	cp "$DATA/Annotations/BloodImage_00011.xml" "$x"
	sed -i '0,/<ymin>[0-9]*<\/ymin>/s###' "$x"
	expect_bad "$x" "no <ymin>" "$T/r"
	rm "$x"
	expect_bad "$x" "missing annotation" "$T/r"
}

@test "bad: unknown class name" {
	badroot
	x="$T/r/Annotations/BloodImage_00015.xml"
	sed -i '0,/<name>RBC</s//<name>Neutrophil</' "$x"
	expect_bad "$x" "unknown class 'Neutrophil'" "$T/r"
}

@test "bad: boxes outside the image or inverted" {
	badroot
	x="$T/r/Annotations/BloodImage_00011.xml"
	orig="$DATA/Annotations/BloodImage_00011.xml"
	sed '0,/<xmax>[0-9]*</s//<xmax>641</' "$orig" >"$x"
	expect_bad "$x" "outside the image (640x480)" "$T/r"
	sed '0,/<ymax>[0-9]*</s//<ymax>481</' "$orig" >"$x"
	expect_bad "$x" "outside the image" "$T/r"
	sed '0,/<xmin>[0-9]*</s//<xmin>-1</' "$orig" >"$x"
	expect_bad "$x" "negative" "$T/r"
	sed '0,/<ymin>[0-9]*</s//<ymin>479</' "$orig" >"$x"
	expect_bad "$x" "min > max" "$T/r"
	# the border itself is legal (1-based VOC coordinates)
	sed '0,/<xmax>[0-9]*</s//<xmax>640</' "$orig" >"$x"
	run decode "$T/r" --list
	[ "$status" -eq 0 ]
}

@test "bad: XML <size> disagrees with the image" {
	badroot
	x="$T/r/Annotations/BloodImage_00011.xml"
	sed -i 's#<width>640</width>#<width>641</width>#' "$x"
	expect_bad "$x" "<size> 641x480 disagrees with the image (640x480)" "$T/r"
}

@test "bad: missing split file, missing root, directory without roots" {
	badroot
	expect_bad "$T/r/ImageSets/Main/val.txt" "missing split file" "$T/r" --split val
	expect_bad "$T/nothere" "No such file" "$T/nothere"
	mkdir -p "$T/empty/sub"
	expect_bad "$T/empty" "not a VOC root" "$T/empty"
	echo "just text" >"$T/notarchive.tar"
	expect_bad "$T/notarchive.tar" "" "$T/notarchive.tar"
}

@test "bad: inside an archive the message names archive and entry" {
	badroot
	head -c 10000 "$DATA/JPEGImages/BloodImage_00011.jpg" >"$T/r/JPEGImages/BloodImage_00011.jpg"
	tar -C "$T" -cf "$T/r.tar" r
	expect_bad "$T/r.tar:r/JPEGImages/BloodImage_00011.jpg" "corrupt JPEG" "$T/r.tar"
	rm "$T/r/JPEGImages/BloodImage_00011.jpg"
	tar -C "$T" -cf "$T/r2.tar" r
	expect_bad "$T/r2.tar:r/JPEGImages/BloodImage_00011.jpg" "missing image" "$T/r2.tar"
	rm "$T/r/ImageSets/Main/trainval.txt"
	tar -C "$T" -cf "$T/r3.tar" r
	expect_bad "$T/r3.tar:r/ImageSets/Main/trainval.txt" "missing split file" "$T/r3.tar"
}

@test "--skip-bad: warns per bad image, skips it, counts once over epochs" {
	badroot
	mkroot "$T/r" BloodImage_00016 BloodImage_00017
	printf '%s\n' BloodImage_00007 BloodImage_00011 BloodImage_00015 BloodImage_00016 BloodImage_00017 >"$T/r/ImageSets/Main/trainval.txt"
	head -c 5000 "$DATA/JPEGImages/BloodImage_00011.jpg" >"$T/r/JPEGImages/BloodImage_00011.jpg"
	sed -i 's#<name>RBC</name>#<name>rbc</name>#' "$T/r/Annotations/BloodImage_00016.xml"
	run --separate-stderr bash -c "'$BIN/voc-decode' --classes '$CLS' '$T/r' --skip-bad --epochs 2 --threads 2 | '$BIN/tns' ls"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 6 ]
	[ "$(printf '%s\n' "$stderr" | grep -c 'skipped)$')" -eq 2 ]
	[[ "$stderr" == *"voc-decode: $T/r/JPEGImages/BloodImage_00011.jpg: corrupt JPEG"* ]]
	[[ "$stderr" == *"voc-decode: $T/r/Annotations/BloodImage_00016.xml: "*"unknown class 'rbc'"* ]]
	[ "$(printf '%s\n' "$stderr" | tail -n 1)" = "voc-decode: skipped 2 bad images" ]
	# without --skip-bad the first bad image stops the run
	run --separate-stderr decode "$T/r"
	[ "$status" -eq 1 ]
}

# ---------------------------------------------------------------- usage

@test "--help lists every option and exits 0" {
	run "$BIN/voc-decode" --help
	[ "$status" -eq 0 ]
	for o in --split --classes --shuffle --seed --epochs --limit --shard --threads --skip-bad --list --verbose --help; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "usage errors exit 2" {
	for args in "" "--bogus $DATA" "--shard 2/2 $DATA" "--shard x $DATA" "--threads 0 $DATA" "--limit -1 $DATA" \
		"--epochs 0 $DATA" "--seed abc $DATA" "--split"; do
		run --separate-stderr "$BIN/voc-decode" $args
		echo "args '$args': status $status" >&2
		[ "$status" -eq 2 ]
		[[ "$stderr" == "voc-decode: "* ]]
	done
}

@test "--resume E:P continues an epoch where a stopped run left it (also per shard)" {
	common=(--classes "$CLS" --split test --shuffle --seed 3 --epochs 3)
	"$BIN/voc-decode" "$DATA" "${common[@]}" | "$BIN/tns" cat --json | jq -c '[.meta.epoch, .meta.index, .meta.id]' >"$T/full"
	"$BIN/voc-decode" "$DATA" "${common[@]}" --resume 1:50 | "$BIN/tns" cat --json | jq -c '[.meta.epoch, .meta.index, .meta.id]' >"$T/rest"
	[ "$(wc -l <"$T/full")" -eq 216 ]
	[ "$(wc -l <"$T/rest")" -eq 94 ]
	tail -n 94 "$T/full" | cmp - "$T/rest"
	for k in 0 1 2; do
		"$BIN/voc-decode" "$DATA" "${common[@]}" --shard "$k/3" | "$BIN/tns" cat --json | jq -c '[.meta.epoch, .meta.index]' |
			jq -sc 'map(select(.[0] > 1 or (.[0] == 1 and .[1] >= 50)))[]' >"$T/a$k"
		"$BIN/voc-decode" "$DATA" "${common[@]}" --shard "$k/3" --resume 1:50 | "$BIN/tns" cat --json | jq -c '[.meta.epoch, .meta.index]' >"$T/b$k"
		cmp "$T/a$k" "$T/b$k"
	done
	run "$BIN/voc-decode" "$DATA" "${common[@]}" --resume 3:0
	[ "$status" -eq 2 ]
	run "$BIN/voc-decode" "$DATA" "${common[@]}" --resume 1
	[ "$status" -eq 2 ]
}
