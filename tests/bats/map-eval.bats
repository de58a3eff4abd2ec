#!/usr/bin/env bats
# map-eval: dets records in, mmdet's VOC table out. The dets and the expected results are
# committed fixtures of tests/ref_detect.py (tests/fixtures/detect/cases.json): "random"
# (6 classes, as two shards: difficult, duplicate and zero-area gts, score ties, a class
# without gts, one without dets) and "bccd" (the BCCD test split with perturbed gts as
# dets; its last 5 records have no dets). --gt tests read the real data with voc-decode.

load helpers

F=$ROOT/tests/fixtures/detect

setup() {
	printf 'c0\nc1\nc2\nc3\nc4\nc5\n' >"$BATS_TEST_TMPDIR/six"
}

# The JSON result $1 agrees with the reference's case $2, variant $3 to 1e-6.
agrees() {
	jq -n --slurpfile g "$1" --slurpfile e "$F/cases.json" --arg c "$2" --arg v "$3" '
		$e[0].eval[$c].expected[$v] as $x | $g[0] as $y |
		($y.mAP - $x.mAP | fabs) < 1e-6 and ($y.classes | length) == ($x.classes | length) and
		([range($x.classes | length)] | all(. as $i | $y.classes[$i] as $a | $x.classes[$i] as $b |
			$a.gts == $b.gts and $a.dets == $b.dets and ($a.ap - $b.ap | fabs) < 1e-6 and
			($a.recall - $b.recall | fabs) < 1e-6))' | grep -qx true
}

@test "map-eval --help lists the options and exits 0" {
	run "$BIN/map-eval" --help
	[ "$status" -eq 0 ]
	for o in --classes --gt --mode --iou-thr --no-legacy-coordinate --json; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "map-eval: bad options are usage errors (2)" {
	run "$BIN/map-eval" --mode voc </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "map-eval: --mode: 'voc' is not 11points or area"* ]]
	run "$BIN/map-eval" --iou-thr 1.5 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/map-eval" --frobnicate </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/map-eval" --json </dev/null
	[ "$status" -eq 2 ]
}

@test "map-eval: the reference's AP per class and mAP, both modes, both coordinate conventions" {
	for v in 11points area 11points_nolegacy area_nolegacy; do
		args=(--mode "${v%_nolegacy}")
		[[ "$v" == *_nolegacy ]] && args+=(--no-legacy-coordinate)
		"$BIN/map-eval" "${args[@]}" --classes "$BATS_TEST_TMPDIR/six" --json "$BATS_TEST_TMPDIR/r.json" \
			"$F/eval_random_a.tns" "$F/eval_random_b.tns" >/dev/null
		agrees "$BATS_TEST_TMPDIR/r.json" random "$v"
		"$BIN/map-eval" "${args[@]}" --classes "$ROOT/configs/bccd.classes" --json "$BATS_TEST_TMPDIR/b.json" \
			<"$F/eval_bccd.tns" >/dev/null
		agrees "$BATS_TEST_TMPDIR/b.json" bccd "$v"
	done
	run jq -c '[.mode, .iou_thr, .legacy_coordinate, .images, (.classes | map(.name))]' "$BATS_TEST_TMPDIR/b.json"
	[ "$output" = '["area",0.5,false,72,["RBC","WBC","Platelets"]]' ]
}

@test "map-eval prints mmdet's table" {
	run "$BIN/map-eval" --classes "$BATS_TEST_TMPDIR/six" "$F/eval_random_a.tns" "$F/eval_random_b.tns"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 12 ]
	[ "${lines[0]}" = "+-------+-----+------+--------+-------+" ]
	[ "${lines[1]}" = "| class | gts | dets | recall | ap    |" ]
	[ "${lines[7]}" = "| c4    | 0   | 15   | 0.000  | 0.000 |" ]
	[ "${lines[8]}" = "| c5    | 37  | 0    | 0.000  | 0.000 |" ]
	[ "${lines[10]}" = "| mAP   |     |      |        | 0.377 |" ]
}

@test "map-eval: shards in any order, as files or concatenated, give the same output" {
	a=$F/eval_random_a.tns b=$F/eval_random_b.tns c="--classes $BATS_TEST_TMPDIR/six"
	"$BIN/map-eval" $c --json "$BATS_TEST_TMPDIR/1.json" "$a" "$b" >"$BATS_TEST_TMPDIR/1.txt"
	"$BIN/map-eval" $c --json "$BATS_TEST_TMPDIR/2.json" "$b" "$a" >"$BATS_TEST_TMPDIR/2.txt"
	cat "$b" "$a" | "$BIN/map-eval" $c --json "$BATS_TEST_TMPDIR/3.json" >"$BATS_TEST_TMPDIR/3.txt"
	cat "$a" "$b" | "$BIN/map-eval" $c --mode area >"$BATS_TEST_TMPDIR/4.txt"
	cat "$b" "$a" | "$BIN/map-eval" $c --mode area >"$BATS_TEST_TMPDIR/5.txt"
	cmp "$BATS_TEST_TMPDIR/1.txt" "$BATS_TEST_TMPDIR/2.txt"
	cmp "$BATS_TEST_TMPDIR/1.txt" "$BATS_TEST_TMPDIR/3.txt"
	cmp "$BATS_TEST_TMPDIR/1.json" "$BATS_TEST_TMPDIR/2.json"
	cmp "$BATS_TEST_TMPDIR/1.json" "$BATS_TEST_TMPDIR/3.json"
	cmp "$BATS_TEST_TMPDIR/4.txt" "$BATS_TEST_TMPDIR/5.txt"
	# records of other kinds are ignored
	cat "$ROOT/tests/fixtures/augment/note.tns" "$b" "$a" | "$BIN/map-eval" $c | cmp - "$BATS_TEST_TMPDIR/1.txt"
}

@test "map-eval --gt: ground truth from voc-decode; its images without dets count as misses" {
	gt=$BATS_TEST_TMPDIR/gt.tns
	"$BIN/voc-decode" "$BCCD" --split test --classes "$ROOT/configs/bccd.classes" >"$gt"
	"$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" <"$F/eval_bccd.tns" >"$BATS_TEST_TMPDIR/all.txt"
	"$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" --gt "$gt" <"$F/eval_bccd.tns" | cmp - "$BATS_TEST_TMPDIR/all.txt"
	# the last 5 dets records are empty: leaving them out changes nothing
	"$BIN/tns" head -n 67 "$F/eval_bccd.tns" >"$BATS_TEST_TMPDIR/67.tns"
	run "$BIN/tns" ls "$BATS_TEST_TMPDIR/67.tns"
	[ "${#lines[@]}" -eq 67 ]
	"$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" --gt "$gt" "$BATS_TEST_TMPDIR/67.tns" | cmp - "$BATS_TEST_TMPDIR/all.txt"
	# ... but without --gt their gts are unknown
	run bash -c "'$BIN/map-eval' --classes '$ROOT/configs/bccd.classes' '$BATS_TEST_TMPDIR/67.tns' | tail -n 2 | head -n 1"
	[ "$output" != "$(tail -n 2 "$BATS_TEST_TMPDIR/all.txt" | head -n 1)" ]
	# dets of an image the gt does not have
	run "$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" --gt "$gt" "$F/eval_random_a.tns"
	[ "$status" -eq 1 ]
}

@test "map-eval: bad input fails clearly (1)" {
	run "$BIN/map-eval" </dev/null
	[ "$status" -eq 1 ]
	[ "$output" = "map-eval: no dets records in the input" ]
	run "$BIN/map-eval" "$ROOT/tests/fixtures/augment/note.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "map-eval: no dets records in the input" ]
	# the same image twice (one shard given twice)
	run "$BIN/map-eval" --classes "$BATS_TEST_TMPDIR/six" "$F/eval_random_a.tns" "$F/eval_random_a.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "map-eval: $F/eval_random_a.tns: record 1: image rand"*" appears twice" ]]
	# 6-class dets against the 20 VOC names, or 3 names
	run "$BIN/map-eval" "$F/eval_random_a.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"record 1: image rand"*": mismatched classes: the dets have 6 classes, the class list 20" ]]
	run "$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" "$F/eval_random_a.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"mismatched classes"* ]]
	# dets for an image not in --gt: named
	"$BIN/voc-decode" "$BCCD" --split test --classes "$ROOT/configs/bccd.classes" --limit 3 >"$BATS_TEST_TMPDIR/gt3.tns"
	run "$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" --gt "$BATS_TEST_TMPDIR/gt3.tns" "$F/eval_bccd.tns"
	[ "$status" -eq 1 ]
	[ "$output" = "map-eval: $F/eval_bccd.tns: record 4: dets for image BloodImage_00016, which has no ground truth" ]
	# truncated, not a stream, missing file
	run bash -c "head -c 3000 '$F/eval_bccd.tns' | '$BIN/map-eval' --classes '$ROOT/configs/bccd.classes'"
	[ "$status" -eq 1 ]
	[[ "$output" == "map-eval: stdin: record "*": truncated record"* ]]
	run "$BIN/map-eval" "$ROOT/configs/bccd.classes"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a tns stream"* ]]
	run "$BIN/map-eval" "$BATS_TEST_TMPDIR/none.tns"
	[ "$status" -eq 1 ]
	# a dets record without gt and no --gt; a ssd-decode output missing its scores
	run bash -c "'$BIN/tns' cat '$F/pred_small.tns' | '$BIN/map-eval'"
	[ "$status" -eq 1 ]
	# an unwritable --json
	run "$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" --json /nonexistent/dir/r.json "$F/eval_bccd.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"/nonexistent/dir/r.json"* ]]
}
