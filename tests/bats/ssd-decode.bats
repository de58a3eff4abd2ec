#!/usr/bin/env bats
# ssd-decode: pred records in, dets records out. Inputs and expected outputs are committed
# fixtures written by tests/ref_detect.py (tests/fixtures/detect/, see cases.json); the
# unit test test_detect compares the numbers, these tests the tool around them.

load helpers

F=$ROOT/tests/fixtures/detect

# one line per record: kind, meta and tensor shapes (values left out)
headers() {
	"$BIN/tns" cat --json "$@" | jq -c '[.kind, .meta, (.tensors | map(.name + ":" + .dtype + (.shape | tostring)))]'
}

# tns stats of two streams agree: names and shapes exactly, numbers to 1e-4 relative
same_stats() {
	paste <("$BIN/tns" stats "$1") <("$BIN/tns" stats "$2") | awk -F'\t' '
		function near(a, b) { d = a - b; if (d < 0) d = -d; m = (b < 0 ? -b : b); return d <= 1e-4 * (m > 1 ? m : 1) }
		{ n1 = split($1, a, " +"); n2 = split($2, b, " +")
		  if (n1 != n2) { print "differs: " $0; bad = 1; next }
		  for (i = 1; i <= n1; i++) if (a[i] != b[i] && !(a[i] + 0 == a[i] && near(a[i], b[i]))) { print "differs: " $0; bad = 1 } }
		END { exit bad }'
}

@test "ssd-decode --help lists the options and exits 0" {
	run "$BIN/ssd-decode" --help
	[ "$status" -eq 0 ]
	for o in --config --score-thr --nms-iou --max-per-img --nms-pre; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "ssd-decode: bad options are usage errors (2)" {
	run "$BIN/ssd-decode" --frobnicate </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "ssd-decode: unknown option '--frobnicate'"* ]]
	run "$BIN/ssd-decode" --score-thr 1.5 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/ssd-decode" --max-per-img 0 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/ssd-decode" --nms-iou x </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/ssd-decode" --config </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"needs an argument"* ]]
	run "$BIN/ssd-decode" extra </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"unexpected argument 'extra'"* ]]
}

@test "ssd-decode: the reference's dets, one record per image, other records passed through" {
	"$BIN/ssd-decode" <"$F/pred_small.tns" >"$BATS_TEST_TMPDIR/out.tns"
	run diff <(headers "$BATS_TEST_TMPDIR/out.tns") <(headers "$F/dets_small.tns")
	[ "$status" -eq 0 ]
	run headers "$BATS_TEST_TMPDIR/out.tns"
	[ "${#lines[@]}" -eq 4 ]
	[[ "${lines[0]}" == '["dets",{"id":"img000","index":0,"width":179,"height":499,"num_classes":20},["boxes:f32[200,4]","scores:f32[200]","labels:i32[200]","gt_boxes:f32[4,4]","gt_labels:i32[4]","gt_difficult:u8[4]"]]' ]]
	[[ "${lines[3]}" == '["note",'* ]]
	run same_stats "$BATS_TEST_TMPDIR/out.tns" "$F/dets_small.tns"
	[ "$status" -eq 0 ]
	# and they score the same
	printf 'c%s\n' $(seq 0 19) >"$BATS_TEST_TMPDIR/c20"
	run diff <("$BIN/map-eval" --classes "$BATS_TEST_TMPDIR/c20" "$BATS_TEST_TMPDIR/out.tns") \
		<("$BIN/map-eval" --classes "$BATS_TEST_TMPDIR/c20" "$F/dets_small.tns")
	[ "$status" -eq 0 ]
	# at 320 with 3 classes the per-level top-k (nms_pre 1000) is in play
	"$BIN/ssd-decode" <"$F/pred_320.tns" >"$BATS_TEST_TMPDIR/o320.tns"
	run same_stats "$BATS_TEST_TMPDIR/o320.tns" "$F/dets_320.tns"
	[ "$status" -eq 0 ]
	run diff <(headers "$BATS_TEST_TMPDIR/o320.tns") <(headers "$F/dets_320.tns")
	[ "$status" -eq 0 ]
}

@test "ssd-decode: options and config override the test settings alike" {
	"$BIN/ssd-decode" --score-thr 0.3 --nms-iou 0.3 --max-per-img 10 --nms-pre 50 <"$F/pred_small.tns" >"$BATS_TEST_TMPDIR/cli.tns"
	run same_stats "$BATS_TEST_TMPDIR/cli.tns" "$F/dets_small_strict.tns"
	[ "$status" -eq 0 ]
	run diff <(headers "$BATS_TEST_TMPDIR/cli.tns") <(headers "$F/dets_small_strict.tns")
	[ "$status" -eq 0 ]
	printf '{"model": {"test": {"nms_pre": 50, "score_thr": 0.3, "nms_iou": 0.3, "max_per_img": 10}}}' >"$BATS_TEST_TMPDIR/c.json"
	"$BIN/ssd-decode" --config "$BATS_TEST_TMPDIR/c.json" <"$F/pred_small.tns" | cmp - "$BATS_TEST_TMPDIR/cli.tns"
	# an option wins over the config
	printf '{"model": {"test": {"max_per_img": 3}}}' >"$BATS_TEST_TMPDIR/m3.json"
	run bash -c "'$BIN/ssd-decode' --config '$BATS_TEST_TMPDIR/m3.json' --max-per-img 5 < '$F/pred_small.tns' | '$BIN/tns' ls"
	[[ "${lines[0]}" == *"scores:f32[5]"* ]]
	# the shipped config has no model section yet: the defaults
	"$BIN/ssd-decode" --config "$ROOT/configs/ssd_mobilenet_fpn.json" <"$F/pred_small.tns" | cmp - <("$BIN/ssd-decode" <"$F/pred_small.tns")
}

@test "ssd-decode: records of other kinds pass through byte for byte; no input, no output" {
	run bash -c "'$BIN/ssd-decode' < '$ROOT/tests/fixtures/augment/note.tns' | cmp - '$ROOT/tests/fixtures/augment/note.tns'"
	[ "$status" -eq 0 ]
	run bash -c "'$BIN/ssd-decode' < /dev/null | wc -c"
	[ "$status" -eq 0 ]
	[ "$output" = "0" ]
}

@test "ssd-decode | map-eval on BCCD preds that encode the test split's gts: the reference's mAP" {
	"$BIN/ssd-decode" <"$F/oracle_bccd.tns" >"$BATS_TEST_TMPDIR/dets.tns"
	run "$BIN/map-eval" --classes "$ROOT/configs/bccd.classes" --json "$BATS_TEST_TMPDIR/r.json" "$BATS_TEST_TMPDIR/dets.tns"
	[ "$status" -eq 0 ]
	[[ "${lines[3]}" == "| RBC       | 805 | 802  | 0.996  | 0.909 |" ]]
	[[ "${lines[7]}" == "| mAP       |     |      |        | 0.970 |" ]]
	run jq -n --slurpfile g "$BATS_TEST_TMPDIR/r.json" --slurpfile e "$F/cases.json" \
		'$e[0].eval.oracle_bccd.expected["11points"] as $x | ($g[0].mAP - $x.mAP | fabs) < 1e-6 and
		 ([range(3)] | all(($g[0].classes[.].ap - $x.classes[.].ap | fabs) < 1e-6))'
	[ "$output" = "true" ]
}

@test "ssd-decode: bad records fail with the record number (1)" {
	run bash -c "'$BIN/ssd-decode' < '$F/bad_reg.tns' > /dev/null"
	[ "$status" -eq 1 ]
	[ "$output" = "ssd-decode: stdin: record 2: pred record: tensor 'reg' is f32[1,392,3], expected dimension 2 to be 4" ]
	run bash -c "'$BIN/ssd-decode' < '$F/bad_nosize.tns' > /dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == *"record 1: pred record: meta.size: expected the network input size"* ]]
	run bash -c "'$BIN/ssd-decode' < '$F/bad_anchors.tns' > /dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == *"tensor 'cls' has 392 anchors, but the anchor config gives 880 at input size 96"* ]]
	# anchors of another config
	printf '{"model": {"anchors": {"ratios": [[2], [2], [2], [2], [2], [2]]}}}' >"$BATS_TEST_TMPDIR/r.json"
	run bash -c "'$BIN/ssd-decode' --config '$BATS_TEST_TMPDIR/r.json' < '$F/pred_small.tns' > /dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == *"392 anchors, but the anchor config gives 348 at input size 64"* ]]
	# truncated stream
	run bash -c "head -c 5000 '$F/pred_small.tns' | '$BIN/ssd-decode' > /dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == "ssd-decode: stdin: record 1: truncated record"* ]]
	# dets records are not preds: they pass through
	run bash -c "'$BIN/tns' cat '$F/eval_random_a.tns' | '$BIN/ssd-decode' | '$BIN/tns' ls | wc -l"
	[ "$output" = "17" ]
}

@test "ssd-decode: bad configs fail naming the file and key (1)" {
	printf '{"model": {"test": {"score_thr": "high"}}}' >"$BATS_TEST_TMPDIR/c.json"
	run "$BIN/ssd-decode" --config "$BATS_TEST_TMPDIR/c.json" </dev/null
	[ "$status" -eq 1 ]
	[ "$output" = "ssd-decode: $BATS_TEST_TMPDIR/c.json: model.test.score_thr: expected a number in [0, 1]" ]
	printf '{"model": {"anchors": {"basesize_ratio_range": [0.12, 0.9]}}}' >"$BATS_TEST_TMPDIR/c.json"
	run bash -c "'$BIN/ssd-decode' --config '$BATS_TEST_TMPDIR/c.json' < '$F/pred_small.tns' > /dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == *"basesize_ratio_range min 0.12 has no first-level rule"* ]]
	run "$BIN/ssd-decode" --config "$BATS_TEST_TMPDIR/none.json" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"none.json: No such file"* ]]
}

@test "ssd-decode refuses to write to a terminal" {
	command -v script >/dev/null || skip "no script(1)"
	run script -qec "'$BIN/ssd-decode' < /dev/null" /dev/null
	[ "$status" -eq 2 ]
}
