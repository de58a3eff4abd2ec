#!/usr/bin/env bats
# augment: image records in, batch records out. Inputs are committed fixtures written by
# tests/ref_augment.py (voc-decode's record contract): images.tns holds 6 small images
# (epochs 0 0 | 0 1 1 1, the third record a "note" of another kind), bad-*.tns a good
# image then a broken one.

load helpers

F=$ROOT/tests/fixtures/augment

@test "augment --help lists the options and exits 0" {
	run "$BIN/augment" --help
	[ "$status" -eq 0 ]
	for o in --train --eval --config --size --batch --seed --threads; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "augment: bad options are usage errors (2)" {
	run "$BIN/augment" </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"say --train or --eval"* ]]
	run "$BIN/augment" --train --eval </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/augment" --train --size 0 </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"--size: '0' is not an integer"* ]]
	run "$BIN/augment" --train --batch x </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/augment" --train --threads 0 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/augment" --train --frobnicate </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/augment" --train 64 extra </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"unexpected argument 'extra'"* ]]
}

@test "augment --train: batches, pass-through in order, flush at epoch change and end" {
	run bash -c "'$BIN/augment' --train --size 64 --batch 2 < '$F/images.tns' | '$BIN/tns' cat --json"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 5 ]
	# batch [0,1] (full) | note | [2] (epoch 1 follows) | [3,4] | [5] (end)
	run bash -c "'$BIN/augment' --train --size 64 --batch 2 < '$F/images.tns' | '$BIN/tns' cat --json |
		jq -c '[.kind, .meta.indices, .meta.epoch, (.tensors | map(.name + \":\" + .dtype + (.shape | tostring)) | join(\" \"))]'"
	[ "$status" -eq 0 ]
	[[ "${lines[0]}" == '["batch",[0,1],0,"image:f32[2,3,64,64] boxes:f32[2,'*',4] labels:i32[2,'*'] nbox:i32[2]"]' ]]
	[ "${lines[1]}" = '["note",null,null,"x:i32[3]"]' ]
	[[ "${lines[2]}" == '["batch",[2],0,"image:f32[1,3,64,64] boxes:f32[1,'* ]]
	[[ "${lines[3]}" == '["batch",[3,4],1,'* ]]
	[[ "${lines[4]}" == '["batch",[5],1,'* ]]
	run bash -c "'$BIN/augment' --train --size 64 < '$F/images.tns' | '$BIN/tns' cat --json | jq -c 'select(.kind == \"batch\") | .meta | [.mode, .boxes_frame, .size, .ids[0]]'"
	[ "${lines[0]}" = '["train","input",64,"img000"]' ]
}

@test "augment: a record of another kind passes through byte for byte" {
	run bash -c "'$BIN/augment' --train < '$F/note.tns' | cmp - '$F/note.tns'"
	[ "$status" -eq 0 ]
	run bash -c "cat '$F/note.tns' '$F/note.tns' | '$BIN/augment' --eval | cmp - <(cat '$F/note.tns' '$F/note.tns')"
	[ "$status" -eq 0 ]
	# among batches its values are unchanged too
	run bash -c "'$BIN/augment' --train --size 32 < '$F/images.tns' | '$BIN/tns' stats | grep -A1 ' note'"
	[ "$status" -eq 0 ]
	[[ "${lines[1]}" == *"x"*"i32[3]"*"min 0"*"max 2"* ]]
}

@test "augment --train drops difficult boxes; boxes lie inside the S x S input" {
	# without the crop no box can be lost, so nbox = boxes - difficult: 3-1, 0, 2, 4, 1, 5-2
	printf '{"data": {"train": {"min_iou_crop": false}}}' >"$BATS_TEST_TMPDIR/nocrop.json"
	run bash -c "'$BIN/augment' --train --size 64 --batch 1 --config '$BATS_TEST_TMPDIR/nocrop.json' < '$F/images.tns' |
		'$BIN/tns' stats | awk '\$1 == \"nbox\" { printf \"%s \", \$4 }'"
	[ "$status" -eq 0 ]
	[ "$output" = "2 0 2 4 1 3 " ]
	# with every transform, over several seeds, no coordinate leaves [0, 64]
	for seed in 0 1 2 3 4 5 6 7; do
		"$BIN/augment" --train --size 64 --seed $seed <"$F/images.tns" | "$BIN/tns" stats |
			awk '$1 == "boxes" && $4 != "nan" && ($4 < 0 || $6 > 64) { bad = 1 } END { exit bad }'
	done
	# eval keeps all of them, difficult flags included
	run bash -c "'$BIN/augment' --eval --size 64 --batch 1 < '$F/images.tns' | '$BIN/tns' stats | awk '\$1 == \"nbox\" { printf \"%s \", \$4 }'"
	[ "$output" = "3 0 2 4 1 5 " ]
}

@test "augment: output is identical for any --threads and for the same seed; seeds differ" {
	"$BIN/augment" --train --size 48 --batch 3 --threads 1 <"$F/images.tns" >"$BATS_TEST_TMPDIR/t1"
	"$BIN/augment" --train --size 48 --batch 3 --threads 2 <"$F/images.tns" >"$BATS_TEST_TMPDIR/t2"
	"$BIN/augment" --train --size 48 --batch 3 --threads 5 <"$F/images.tns" >"$BATS_TEST_TMPDIR/t5"
	cmp "$BATS_TEST_TMPDIR/t1" "$BATS_TEST_TMPDIR/t2"
	cmp "$BATS_TEST_TMPDIR/t1" "$BATS_TEST_TMPDIR/t5"
	"$BIN/augment" --train --size 48 --batch 3 --seed 1 <"$F/images.tns" >"$BATS_TEST_TMPDIR/s1"
	! cmp -s "$BATS_TEST_TMPDIR/t1" "$BATS_TEST_TMPDIR/s1"
	"$BIN/augment" --eval --size 48 --threads 1 <"$F/images.tns" >"$BATS_TEST_TMPDIR/e1"
	"$BIN/augment" --eval --size 48 --threads 2 <"$F/images.tns" >"$BATS_TEST_TMPDIR/e2"
	cmp "$BATS_TEST_TMPDIR/e1" "$BATS_TEST_TMPDIR/e2"
}

@test "augment: an image's result does not depend on the batch size" {
	# image 2 is alone in its batch either way: output record 4 with --batch 1, 3 with --batch 3
	a=$("$BIN/augment" --train --size 40 --batch 1 <"$F/images.tns" | "$BIN/tns" stats | grep -A4 '^4 batch' | tail -n +2)
	b=$("$BIN/augment" --train --size 40 --batch 3 <"$F/images.tns" | "$BIN/tns" stats | grep -A4 '^3 batch' | tail -n +2)
	[[ "$a" == *"image"*"f32[1,3,40,40]"* ]]
	[ "$a" = "$b" ]
}

@test "augment --eval: scale factors, original sizes, boxes in original pixels" {
	run bash -c "'$BIN/augment' --eval --size 64 --batch 1 < '$F/images.tns' | '$BIN/tns' stats | sed -n '1,8p'"
	[ "$status" -eq 0 ]
	# image 0 is 48 x 32: scale_factor (64/48, 64/32, 64/48, 64/32), orig_size (32, 48)
	[[ "$output" == *"scale_factor"*"f32[1,4]"*"min 1.33333"*"max 2 "* ]]
	[[ "$output" == *"orig_size"*"i32[1,2]"*"min 32"*"max 48 "* ]]
	[[ "$output" == *"difficult"*"u8[1,3]"* ]]
	run bash -c "'$BIN/augment' --eval 64 < '$F/images.tns' | '$BIN/tns' cat --json | jq -c 'select(.kind == \"batch\") | [.meta.mode, .meta.boxes_frame, (.tensors | map(.name))]' | head -1"
	[ "$output" = '["eval","original",["image","boxes","labels","difficult","nbox","scale_factor","orig_size"]]' ]
}

@test "augment: bad image records name the record and exit 1" {
	run "$BIN/augment" --train <"$F/bad-nolabels.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "augment: stdin: record 2: image record has no tensor 'labels'" ]
	run "$BIN/augment" --train <"$F/bad-dtype.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "augment: stdin: record 2: "*"'image' is f32[3,8,8]"* ]]
	run "$BIN/augment" --eval <"$F/bad-count.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "augment: stdin: record 2: image record: 1 labels for 2 boxes" ]
	run "$BIN/augment" --eval <"$F/bad-shape.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "augment: stdin: record 2: "*"expected u8[3,H,W]"* ]]
}

@test "augment: a truncated stream is an error; an empty one gives nothing" {
	head -c 2000 "$F/images.tns" >"$BATS_TEST_TMPDIR/cut.tns"
	run "$BIN/augment" --train --size 32 <"$BATS_TEST_TMPDIR/cut.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"augment: "*"record"* ]]
	run bash -c "'$BIN/augment' --train < /dev/null | wc -c"
	[ "$status" -eq 0 ]
	[ "$output" -eq 0 ]
}

@test "augment --config reads the data section; command line wins; bad configs are named" {
	run bash -c "'$BIN/augment' --train --config '$ROOT/configs/ssd_mobilenet_fpn.json' --batch 6 < '$F/images.tns' | '$BIN/tns' cat --json | jq -c 'select(.kind == \"batch\") | .tensors[0].shape'"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "[2,3,512,512]" ]
	run bash -c "'$BIN/augment' --eval --config '$ROOT/configs/ssd_mobilenet_fpn.json' --size 40 < '$F/images.tns' | '$BIN/tns' cat --json | jq -c 'select(.kind == \"batch\") | .meta.size'"
	[ "${lines[0]}" = 40 ]
	printf '{"data": {"size": 64, "train": {"flip": 0.5}}}' >"$BATS_TEST_TMPDIR/bad.json"
	run "$BIN/augment" --train --config "$BATS_TEST_TMPDIR/bad.json" <"$F/images.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "augment: $BATS_TEST_TMPDIR/bad.json: data.train.flip: unknown key"* ]]
	run "$BIN/augment" --train --config "$BATS_TEST_TMPDIR/missing.json" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"missing.json: No such file"* ]]
	# to_rgb false gives BGR output: channel 0 of eval equals channel 2 of RGB output up to mean/std
	printf '{"data": {"to_rgb": false, "mean": [0, 0, 0], "std": [1, 1, 1]}}' >"$BATS_TEST_TMPDIR/bgr.json"
	printf '{"data": {"mean": [0, 0, 0], "std": [1, 1, 1]}}' >"$BATS_TEST_TMPDIR/rgb.json"
	a=$("$BIN/augment" --eval --size 16 --config "$BATS_TEST_TMPDIR/bgr.json" <"$F/images.tns" | "$BIN/tns" stats | grep -m1 image)
	b=$("$BIN/augment" --eval --size 16 --config "$BATS_TEST_TMPDIR/rgb.json" <"$F/images.tns" | "$BIN/tns" stats | grep -m1 image)
	[ "$a" = "$b" ] # same values, other channel order: the same statistics
	[[ "$a" != *"min -"* ]] # raw 0..255 values: mean 0, std 1
}

@test "augment after voc-decode on the BCCD test split" {
	[ -x "$BIN/voc-decode" ] || skip "no voc-decode"
	[ -d "$BCCD" ] || skip "no BCCD data"
	run bash -c "'$BIN/voc-decode' '$BCCD' --split test --classes '$ROOT/configs/bccd.classes' --limit 4 |
		'$BIN/augment' --train --batch 2 --seed 3 | '$BIN/tns' cat --json | jq -c '[.kind, .tensors[0].shape, (.meta.ids | length)]'"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 2 ]
	[ "${lines[0]}" = '["batch",[2,3,512,512],2]' ]
	run bash -c "'$BIN/voc-decode' '$BCCD' --split test --classes '$ROOT/configs/bccd.classes' --limit 2 |
		'$BIN/augment' --eval --batch 2 | '$BIN/tns' stats"
	[ "$status" -eq 0 ]
	[[ "$output" == *"orig_size"*"min 480"*"max 640"* ]]
	[[ "$output" == *"scale_factor"*"min 0.8 "*"max 1.06667"* ]]
}
