#!/usr/bin/env bats
# loss: pred records in, grad records to --grad, loss records to stdout. The numbers are
# tests/ref_loss.py's torch fixtures (tests/fixtures/loss/), compared in full by the unit
# test test_loss; these tests the tool around them: records, order, FIFOs, errors.

load helpers

F=$ROOT/tests/fixtures/loss

# one line per record: kind, meta and tensor shapes
headers() {
	"$BIN/tns" cat --json "$@" | jq -c '[.kind, .meta, (.tensors | map(.name + ":" + .dtype + (.shape | tostring)))]'
}

# grad records' headers with their meta's ids and step only
grad_headers() {
	"$BIN/tns" cat --json "$@" |
		jq -c '[.kind, (.meta | {ids, step} | with_entries(select(.value != null))),
			(.tensors | map(.name + ":" + .dtype + (.shape | tostring)))]'
}

# every grad record carries its loss record's numbers and the normaliser (forward --mpi
# combines the ranks' gradients with them): LOSSES GRADS
grad_carries_loss() {
	jq -n --slurpfile l <("$BIN/tns" cat --json "$1" | jq -c 'select(.kind == "loss") | .meta') \
		--slurpfile g <("$BIN/tns" cat --json "$2" | jq -c '.meta') -e '
		($l | length) == ($g | length) and ([range($l | length) as $i
			| ["loss_cls", "loss_bbox", "num_pos", "num_neg", "images"] | map(. as $k | $l[$i][$k] == $g[$i][$k]) | all]
			| all) and ($g | map(.num_total_pos >= .images) | all)'
}

# the loss records' numbers agree with the expect records' to 1e-5 relative
same_losses() {
	jq -n --slurpfile a <("$BIN/tns" cat --json "$1" | jq -c 'select(.kind == "loss") | .meta') \
		--slurpfile b <("$BIN/tns" cat --json "$2" | jq -c '.meta') '
		def near(x; y): ((x - y) | fabs) <= 1e-5 * ([(y | fabs), 1e-12] | max);
		($a | length) == ($b | length) and ($a | length) > 0 and
		all(range($a | length) as $i | $a[$i] as $x | $b[$i] as $y |
		    near($x.loss_cls; $y.loss_cls) and near($x.loss_bbox; $y.loss_bbox) and near($x.loss; $y.loss)
		    and $x.num_pos == $y.num_pos and $x.num_neg == $y.num_neg; .)' | grep -qx true
}

# zero_pred A C < one batch record > a pred record with all-zero cls [N,A,C+1] and reg
# [N,A,4] and the batch's boxes, labels, nbox and meta: a stand-in for forward, built
# with zstd and jq only (the record layout of docs/stream-format.md).
zero_pred() {
	local A=$1 K=$(($2 + 1)) d=$BATS_TEST_TMPDIR/zp
	mkdir -p "$d"
	zstd -dcq >"$d/in"
	local hlen base
	hlen=$(od -An -tu4 -j4 -N4 "$d/in" | tr -d ' ')
	base=$(((8 + hlen + 63) / 64 * 64))
	head -c $((8 + hlen)) "$d/in" | tail -c "$hlen" >"$d/h.json"
	local N
	N=$(jq '.meta.ids | length' "$d/h.json")
	# new header: cls, reg, then the batch's gt tensors, each padded to 64 bytes
	jq -c --argjson N "$N" --argjson A "$A" --argjson K "$K" '
		def pad: (. + 63) / 64 | floor * 64;
		def bytes: ((.shape | reduce .[] as $s (1; . * $s)) * 4);
		([{name: "cls", dtype: "f32", shape: [$N, $A, $K]}, {name: "reg", dtype: "f32", shape: [$N, $A, 4]}]
		 + [.tensors[] | select(.name == "boxes" or .name == "labels" or .name == "nbox")]) as $t
		| {kind: "pred", meta: .meta,
		   tensors: (reduce $t[] as $x ({off: 0, out: []};
				.out += [{name: $x.name, dtype: $x.dtype, shape: $x.shape, offset: .off}]
				| .off += ($x | bytes | pad)) | .out)}' "$d/h.json" >"$d/h2.json"
	# the header file ends in a newline jq added: leave it out
	local h2len
	h2len=$(($(wc -c <"$d/h2.json") - 1))
	{
		printf 'TNS1'
		printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((h2len & 255)) $((h2len >> 8 & 255)) $((h2len >> 16 & 255)) $((h2len >> 24)))"
		head -c "$h2len" "$d/h2.json"
		head -c $(((8 + h2len + 63) / 64 * 64 - 8 - h2len)) /dev/zero
		head -c $(((N * A * K * 4 + 63) / 64 * 64)) /dev/zero
		head -c $(((N * A * 16 + 63) / 64 * 64)) /dev/zero
		for name in boxes labels nbox; do
			local off n
			off=$(jq -r --arg n "$name" '.tensors[] | select(.name == $n) | .offset' "$d/h.json")
			n=$(jq -r --arg n "$name" '.tensors[] | select(.name == $n) | (.shape | reduce .[] as $s (1; . * $s)) * 4' "$d/h.json")
			tail -c +$((base + off + 1)) "$d/in" | head -c "$n"
			head -c $(((n + 63) / 64 * 64 - n)) /dev/zero
		done
	} >"$d/body"
	zstd -q -c "$d/body"
}

@test "loss --help lists the options and the records, exits 0" {
	run "$BIN/loss" --help
	[ "$status" -eq 0 ]
	for o in --config --grad pos_iou_thr neg_pos_ratio smoothl1_beta '"grad"' '"loss"' num_neg; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "loss: bad options are usage errors (2)" {
	run "$BIN/loss" --frobnicate </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "loss: unknown option '--frobnicate'"* ]]
	run "$BIN/loss" --grad </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"needs an argument"* ]]
	run "$BIN/loss" --grad '' </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/loss" extra </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"unexpected argument 'extra'"* ]]
}

@test "loss: the reference's losses; grad records to --grad; other records pass through after each loss" {
	"$BIN/loss" --grad "$BATS_TEST_TMPDIR/grad.tns" <"$F/small.tns" >"$BATS_TEST_TMPDIR/out.tns"
	run headers "$BATS_TEST_TMPDIR/out.tns"
	[ "${#lines[@]}" -eq 5 ]
	[[ "${lines[0]}" == '["loss",{"loss_cls":18.5926'*',"num_pos":21,"num_neg":63,"images":5,"epoch":1,"ids":["img000","img001","img002","img003","img004"],"indices":[0,1,2,3,4],"step":7},[]]' ]]
	[[ "${lines[1]}" == '["grads",{"step":7},["w:f32[6]"]]' ]]
	[[ "${lines[2]}" == '["loss",'*'"images":2,'*'"step":8},[]]' ]]
	[[ "${lines[3]}" == '["grads",{"step":8},["w:f32[6]"]]' ]]
	[[ "${lines[4]}" == '["note",'* ]]
	same_losses "$BATS_TEST_TMPDIR/out.tns" "$F/small_expect.tns"
	# loss = loss_cls + loss_bbox
	run jq -s 'map(select(.kind == "loss") | .meta | ((.loss - .loss_cls - .loss_bbox) | fabs) < 1e-9) | all' \
		< <("$BIN/tns" cat --json "$BATS_TEST_TMPDIR/out.tns")
	[ "$output" = true ]
	grad_carries_loss "$BATS_TEST_TMPDIR/out.tns" "$BATS_TEST_TMPDIR/grad.tns"
	run grad_headers "$BATS_TEST_TMPDIR/grad.tns"
	[ "${#lines[@]}" -eq 2 ]
	[ "${lines[0]}" = '["grad",{"ids":["img000","img001","img002","img003","img004"],"step":7},["cls:f32[5,392,21]","reg:f32[5,392,4]"]]' ]
	[ "${lines[1]}" = '["grad",{"ids":["img005","img006"],"step":8},["cls:f32[2,392,21]","reg:f32[2,392,4]"]]' ]
	# passed-through records keep their bytes: the stream minus the loss records is the input minus the preds
	cmp <("$BIN/tns" cat --json "$BATS_TEST_TMPDIR/out.tns" | jq -c 'select(.kind != "loss")') \
		<("$BIN/tns" cat --json "$F/small.tns" | jq -c 'select(.kind != "pred")')
}

@test "loss: without --grad, loss records only (validation loss), the same numbers" {
	"$BIN/loss" <"$F/small.tns" >"$BATS_TEST_TMPDIR/out.tns"
	run headers "$BATS_TEST_TMPDIR/out.tns"
	[ "${#lines[@]}" -eq 5 ]
	same_losses "$BATS_TEST_TMPDIR/out.tns" "$F/small_expect.tns"
}

@test "loss: --config reads model.train and model.bbox_coder (custom thresholds, ratio, beta, stds)" {
	"$BIN/loss" --config "$F/custom.json" <"$F/custom.tns" >"$BATS_TEST_TMPDIR/out.tns"
	same_losses "$BATS_TEST_TMPDIR/out.tns" "$F/custom_expect.tns"
	# the defaults give other numbers
	"$BIN/loss" <"$F/custom.tns" >"$BATS_TEST_TMPDIR/def.tns"
	! same_losses "$BATS_TEST_TMPDIR/def.tns" "$F/custom_expect.tns"
	"$BIN/loss" --config "$ROOT/configs/ssd_mobilenet_fpn.json" <"$F/s320.tns" >"$BATS_TEST_TMPDIR/320.tns"
	same_losses "$BATS_TEST_TMPDIR/320.tns" "$F/s320_expect.tns"
}

@test "loss: bad configs are errors naming the key" {
	echo '{"model": {"train": {"neg_pos_ratio": -1}}}' >"$BATS_TEST_TMPDIR/c.json"
	run "$BIN/loss" --config "$BATS_TEST_TMPDIR/c.json" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == "loss: $BATS_TEST_TMPDIR/c.json: model.train.neg_pos_ratio: expected an integer in [0, 1000]" ]]
	echo '{"model": {"train": {"pos_iou": 0.5}}}' >"$BATS_TEST_TMPDIR/c.json"
	run "$BIN/loss" --config "$BATS_TEST_TMPDIR/c.json" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"model.train.pos_iou: unknown key"* ]]
	run "$BIN/loss" --config "$BATS_TEST_TMPDIR/nonexistent.json" </dev/null
	[ "$status" -eq 1 ]
}

@test "loss: --grad to a FIFO read by another process" {
	mkfifo "$BATS_TEST_TMPDIR/g"
	"$BIN/tns" ls "$BATS_TEST_TMPDIR/g" >"$BATS_TEST_TMPDIR/ls.txt" &
	local reader=$!
	"$BIN/loss" --grad "$BATS_TEST_TMPDIR/g" <"$F/small.tns" >"$BATS_TEST_TMPDIR/out.tns"
	wait "$reader"
	run cat "$BATS_TEST_TMPDIR/ls.txt"
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" == *"grad"*"cls:f32[5,392,21] reg:f32[5,392,4]"*'"step":7'* ]]
	[[ "${lines[1]}" == *"grad"*"cls:f32[2,392,21] reg:f32[2,392,4]"*'"step":8'* ]]
}

@test "loss: a grad FIFO whose reader goes away is an error, not a hang or a silent exit" {
	mkfifo "$BATS_TEST_TMPDIR/g"
	for i in $(seq 20); do cat "$F/small.tns"; done >"$BATS_TEST_TMPDIR/many.tns"
	# the reader opens the FIFO and closes it at once
	(exec 3<"$BATS_TEST_TMPDIR/g") &
	run timeout 20 "$BIN/loss" --grad "$BATS_TEST_TMPDIR/g" <"$BATS_TEST_TMPDIR/many.tns"
	wait
	[ "$status" -eq 1 ]
	[[ "$output" == *"loss: $BATS_TEST_TMPDIR/g: "*"Broken pipe"* ]]
}

@test "loss: a stream without pred records still opens and closes a grad FIFO (no reader left waiting)" {
	mkfifo "$BATS_TEST_TMPDIR/g"
	"$BIN/tns" ls "$BATS_TEST_TMPDIR/g" >"$BATS_TEST_TMPDIR/ls.txt" &
	local reader=$!
	"$BIN/tns" head -n 0 "$F/small.tns" | "$BIN/loss" --grad "$BATS_TEST_TMPDIR/g" >/dev/null
	# (a reader left blocked fails the test instead of hanging it)
	timeout 10 tail --pid="$reader" -f /dev/null || { kill "$reader"; false; }
	wait "$reader"
	[ ! -s "$BATS_TEST_TMPDIR/ls.txt" ]
}

@test "loss: bad pred records are errors naming the record and the problem (1)" {
	check() {
		run "$BIN/loss" --grad "$BATS_TEST_TMPDIR/grad.tns" <"$F/$1"
		[ "$status" -eq 1 ]
		[[ "$output" == "loss: stdin: record 1: $2"* ]] || { echo "$1: $output"; return 1; }
	}
	check bad_label.tns "image 0 (img001): box 1 has label 20, expected 0..19"
	check bad_nan.tns "image 1 (img004): non-finite value in 'cls'"
	check bad_box.tns "image 1 (img004): box 0 is"
	check bad_noreg.tns "pred record has no tensor 'reg'"
	check bad_regshape.tns "pred record: tensor 'reg' is f32[2,392,3], expected dimension 2 to be 4"
	check bad_nosize.tns "pred record: meta.size"
	check bad_anchors.tns "392 anchors in the pred, but the anchor config gives 880 at input size 96"
	check bad_frame.tns 'pred record: meta.boxes_frame is "original"'
	check bad_nbox.tns "image 0 (img001): nbox 99 outside 0..14"
}

@test "loss: a truncated stream is an error after the complete records" {
	local n
	n=$(($(wc -c <"$F/small.tns") - 100))
	head -c "$n" "$F/small.tns" >"$BATS_TEST_TMPDIR/cut.tns"
	run "$BIN/loss" <"$BATS_TEST_TMPDIR/cut.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"loss: stdin: record 4: truncated record"* ]]
	# the records before it came out
	"$BIN/loss" <"$BATS_TEST_TMPDIR/cut.tns" 2>/dev/null | "$BIN/tns" ls >"$BATS_TEST_TMPDIR/ls.txt" || true
	[ "$(wc -l <"$BATS_TEST_TMPDIR/ls.txt")" -eq 3 ]
	run "$BIN/loss" </dev/null
	[ "$status" -eq 0 ]
}

@test "loss: refuses a terminal on stdout" {
	command -v script >/dev/null || skip "no script(1)"
	run script -qec "$BIN/loss < /dev/null" /dev/null
	[ "$status" -eq 2 ]
}

@test "loss: real data: voc-decode | augment --train | (zero preds) | loss" {
	[ -d "$BCCD" ] || skip "no BCCD data beside the repository"
	"$BIN/voc-decode" "$BCCD" --split train --classes "$ROOT/configs/bccd.classes" --limit 4 \
		| "$BIN/augment" --train --size 320 --batch 4 --seed 3 >"$BATS_TEST_TMPDIR/batch.tns"
	zero_pred 9620 3 <"$BATS_TEST_TMPDIR/batch.tns" >"$BATS_TEST_TMPDIR/pred.tns"
	run headers "$BATS_TEST_TMPDIR/pred.tns"
	[[ "${lines[0]}" == '["pred",'*'"cls:f32[4,9620,4]","reg:f32[4,9620,4]","boxes:f32[4,'* ]]
	"$BIN/loss" --grad "$BATS_TEST_TMPDIR/grad.tns" <"$BATS_TEST_TMPDIR/pred.tns" >"$BATS_TEST_TMPDIR/out.tns"
	# zero logits: every kept anchor's cross-entropy is log(4), with 3 negatives per positive
	# (every image has gts) loss_cls = 4 log 4; zero deltas: a positive loss_bbox
	run jq '.meta
		| .images == 4 and .num_pos > 0 and .num_neg == 3 * .num_pos and .loss_bbox > 0
		  and ((.loss_cls - 4 * 1.3862944) | fabs) < 1e-4
		  and .ids == ["BloodImage_00001", "BloodImage_00003", "BloodImage_00004", "BloodImage_00005"]' \
		< <("$BIN/tns" cat --json "$BATS_TEST_TMPDIR/out.tns")
	[ "$output" = true ]
	run grad_headers "$BATS_TEST_TMPDIR/grad.tns"
	[ "${lines[0]}" = '["grad",{"ids":["BloodImage_00001","BloodImage_00003","BloodImage_00004","BloodImage_00005"]},["cls:f32[4,9620,4]","reg:f32[4,9620,4]"]]' ]
}

@test "loss: a stdout reader that goes away ends loss by SIGPIPE, quietly, as any stage" {
	for i in $(seq 20); do cat "$F/small.tns"; done >"$BATS_TEST_TMPDIR/many.tns"
	run bash -c "'$BIN/loss' <'$BATS_TEST_TMPDIR/many.tns' 2>'$BATS_TEST_TMPDIR/err' | (exec 0<&-; true); echo \${PIPESTATUS[0]}"
	[ "$output" = 141 ]
	[ ! -s "$BATS_TEST_TMPDIR/err" ]
}
