#!/usr/bin/env bats
# forward: batch records in, pred records out; --train with params and grad streams.
# The numbers are test_model's job (torch parity); these tests check the tool around them:
# record contracts, pass-through, the training handshake over FIFOs, and bad inputs.

load helpers

CFG=$ROOT/configs/ssd_mobilenet_fpn.json
F=$ROOT/tests/fixtures/model

setup() {
	T=$BATS_TEST_TMPDIR
	"$BIN/forward" --config "$CFG" --init --seed 1 >"$T/params.tns"
	"$BIN/voc-decode" "$BCCD" --split test --classes "$ROOT/configs/bccd.classes" --limit 2 \
		| "$BIN/augment" --eval --size 128 --batch 2 >"$T/batch.tns"
}

# one line per record: kind and tensor shapes
shapes() {
	"$BIN/tns" cat --json "$@" | jq -c '[.kind, (.tensors | map(.name + ":" + .dtype + (.shape | tostring)))]'
}

@test "forward --help lists the options and exits 0" {
	run "$BIN/forward" --help
	[ "$status" -eq 0 ]
	for o in --config --weights --train --grad --threads --summary --init --seed --profile; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "forward: usage errors exit 2" {
	run "$BIN/forward" --weights x </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "forward: --config is required"* ]]
	run "$BIN/forward" --config "$CFG" </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"--weights is required"* ]]
	run "$BIN/forward" --config "$CFG" --weights x --train </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"--train and --grad go together"* ]]
	run "$BIN/forward" --config "$CFG" --weights x --threads 0 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/forward" --config "$CFG" --frobnicate </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "forward: unknown option '--frobnicate'"* ]]
	run "$BIN/forward" --config "$CFG" --weights x extra </dev/null
	[ "$status" -eq 2 ]
}

@test "forward --summary: layers, params and GMACs per part, as the torch reference" {
	run "$BIN/forward" --config "$CFG" --summary
	[ "$status" -eq 0 ]
	[[ "$output" == *"ssd_mobilenet_fpn at 512x512: 236 layers (90 convs)"* ]]
	[[ "$output" == *"backbone.features.0.0 "*"conv "*"[32,256,256]"* ]]
	echo "$output" | grep -Eq '^backbone +1811712 +1\.4598$'
	echo "$output" | grep -Eq '^neck +546496 +0\.4512$'
	echo "$output" | grep -Eq '^bbox_head +239392 +0\.1823$'
	echo "$output" | grep -Eq '^total +2597600 +2\.0934$'
	[[ "$output" == *"anchors 24560: cls [N,24560,21], reg [N,24560,4]"* ]]
	run "$BIN/forward" --config "$CFG" --summary --size 320
	echo "$output" | grep -Eq '^total +2597600 +0\.8183$'
}

@test "forward --init: a params record of every parameter, seeded" {
	run shapes "$T/params.tns"
	[ "${#lines[@]}" -eq 1 ]
	[[ "${lines[0]}" == '["params",["backbone.features.0.0.weight:f32[32,3,3,3]","backbone.features.0.1.weight:f32[32]"'* ]]
	[ "$("$BIN/tns" cat --json "$T/params.tns" | jq '.tensors | length')" -eq 414 ]
	[ "$("$BIN/tns" cat --json "$T/params.tns" | jq -c .meta)" = '{"step":0,"config":"ssd_mobilenet_fpn"}' ]
	"$BIN/forward" --config "$CFG" --init --seed 1 >"$T/again.tns"
	cmp "$T/params.tns" "$T/again.tns"
	"$BIN/forward" --config "$CFG" --init --seed 2 >"$T/other.tns"
	! cmp -s "$T/params.tns" "$T/other.tns"
}

@test "forward: pred records with cls and reg per anchor, ground truth and other records passed through" {
	cat "$F/../augment/note.tns" "$T/batch.tns" "$F/../augment/note.tns" \
		| "$BIN/forward" --config "$CFG" --weights "$T/params.tns" >"$T/out.tns"
	run shapes "$T/out.tns"
	[ "${#lines[@]}" -eq 3 ]
	[ "${lines[0]}" = '["note",["x:i32[3]"]]' ]
	[ "${lines[1]}" = '["pred",["cls:f32[2,1538,21]","reg:f32[2,1538,4]","boxes:f32[2,19,4]","labels:i32[2,19]","difficult:u8[2,19]","nbox:i32[2]","scale_factor:f32[2,4]","orig_size:i32[2,2]"]]' ]
	[ "${lines[2]}" = '["note",["x:i32[3]"]]' ]
	# the note passes byte for byte; meta is the batch's plus size
	"$BIN/tns" head -n 1 "$T/out.tns" | cmp - "$F/../augment/note.tns"
	[ "$("$BIN/tns" cat --json "$T/out.tns" | jq -c 'select(.kind == "pred") | .meta')" = \
	  "$("$BIN/tns" cat --json "$T/batch.tns" | jq -c '.meta')" ]
	# ground truth unchanged
	diff <("$BIN/tns" stats "$T/batch.tns" | sed 1d | grep -v '^ *image ') \
	     <("$BIN/tns" stats "$T/out.tns" | sed -n '/^2 pred/,/^3 note/p' | sed '1d;$d' | grep -v -e '^ *cls ' -e '^ *reg ')
}

@test "forward: preds feed ssd-decode" {
	"$BIN/forward" --config "$CFG" --weights "$T/params.tns" <"$T/batch.tns" \
		| "$BIN/ssd-decode" --config "$CFG" >"$T/dets.tns"
	run shapes "$T/dets.tns"
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" == '["dets",'* ]]
}

@test "forward --profile: the layers and the costs outside them on stderr, the preds unchanged" {
	"$BIN/forward" --config "$CFG" --weights "$T/params.tns" <"$T/batch.tns" >"$T/plain.tns"
	"$BIN/forward" --config "$CFG" --weights "$T/params.tns" --profile <"$T/batch.tns" >"$T/prof.tns" 2>"$T/err"
	cmp "$T/plain.tns" "$T/prof.tns"
	grep -q '^forward: profile over 1 batches' "$T/err"
	grep -q '^  conv1x1 *[0-9.]* *0.000 ' "$T/err"
	grep -q '^  outside the layers: params stream [0-9.]* s, planning [0-9.]* s, the rest [0-9.]* s' "$T/err"
	grep -q '^  of the rest: reading batches [0-9.]* s, grad records 0.000 s, making records [0-9.]* s, writing records [0-9.]* s' "$T/err"
}

@test "forward --train: pred, then the grad from a FIFO, then grads with BN batch statistics" {
	cat "$T/params.tns" "$T/params.tns" >"$T/weights.tns"
	cat "$T/batch.tns" "$T/batch.tns" >"$T/batches.tns"
	mkfifo "$T/grad"
	"$BIN/forward" --config "$CFG" --weights "$T/weights.tns" --train --grad "$T/grad" \
		<"$T/batches.tns" >"$T/out.tns" 2>"$T/err" &
	pid=$!
	exec 5>"$T/grad" # opens once forward opens the grad stream: after its first pred
	for i in $(seq 100); do
		[ "$("$BIN/tns" ls "$T/out.tns" 2>/dev/null | wc -l)" -ge 1 ] && break
		sleep 0.1
	done
	[ "$("$BIN/tns" ls "$T/out.tns" | wc -l)" -eq 1 ]
	"$BIN/tns" head -n 1 "$F/grad_128.tns" >&5
	for i in $(seq 100); do
		[ "$("$BIN/tns" ls "$T/out.tns" 2>/dev/null | wc -l)" -ge 3 ] && break
		sleep 0.1
	done
	[ "$("$BIN/tns" ls "$T/out.tns" | wc -l)" -eq 3 ]
	"$BIN/tns" cat "$F/grad_128.tns" | "$BIN/tns" head -n 1 >&5
	exec 5>&-
	wait $pid
	run "$BIN/tns" cat --json "$T/out.tns"
	[ "$status" -eq 0 ]
	run jq -r .kind <<<"$output"
	[ "$(echo $output)" = "pred grads pred grads" ]
	g=$("$BIN/tns" cat --json "$T/out.tns" | jq -c 'select(.kind == "grads")' | head -n 1)
	[ "$(jq -c .meta <<<"$g")" = '{"step":0,"ids":["BloodImage_00007","BloodImage_00011"]}' ]
	# weights and biases, and batch_mean, batch_var per BN in place of the running stats: 414
	[ "$(jq '.tensors | length' <<<"$g")" -eq 414 ]
	[ "$(jq -c '.tensors[0] | [.name, .shape]' <<<"$g")" = '["backbone.features.0.0.weight",[32,3,3,3]]' ]
	jq -e '.tensors | map(.name) | index("neck.fpn_convs.5.1.1.batch_var") != null' <<<"$g"
	jq -e '.tensors | map(.name) | index("bbox_head.reg_convs.5.1.bias") != null' <<<"$g"
	# gradients are not all zero
	"$BIN/tns" stats "$T/out.tns" | grep -E 'backbone.features.0.0.weight' | grep -vq ' 0 +0 +0 '
}

@test "forward: wrong params are named" {
	"$BIN/forward" --config "$F/tiny.json" --init >"$T/tiny.tns"
	run "$BIN/forward" --config "$CFG" --weights "$T/tiny.tns" <"$T/batch.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: --weights $T/tiny.tns: record 1: params: tensor 'backbone.features.0.0.weight' is f32[8,3,3,3], expected f32[32,3,3,3]" ]]
	run "$BIN/forward" --config "$CFG" --weights "$T/batch.tns" <"$T/batch.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"record 1: expected a params record, got 'batch'" ]]
	run "$BIN/forward" --config "$CFG" --weights /dev/null <"$T/batch.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"no params record for batch 1"* ]]
	run "$BIN/forward" --config "$CFG" --weights "$T/nonexistent" <"$T/batch.tns"
	[ "$status" -eq 1 ]
}

@test "forward: a truncated batch stream is an error naming the record" {
	head -c 20000 "$T/batch.tns" >"$T/cut.tns"
	run "$BIN/forward" --config "$CFG" --weights "$T/params.tns" <"$T/cut.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: stdin: record 1: truncated"* ]]
}

@test "forward: a batch without an f32 image is an error naming the record" {
	run "$BIN/forward" --config "$CFG" --weights "$T/params.tns" <"$F/bad_batch.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: stdin: record 1: "*"image"* ]]
	# image records are not batches: they pass through
	"$BIN/forward" --config "$CFG" --weights "$T/params.tns" <"$ROOT/tests/fixtures/augment/images.tns" >"$T/out.tns"
	cmp "$T/out.tns" "$ROOT/tests/fixtures/augment/images.tns"
}

@test "forward --train: a missing or mis-shaped grad record is an error" {
	run sh -c '"$0" --config "$1" --weights "$2" --train --grad /dev/null <"$3" >/dev/null' "$BIN/forward" "$CFG" "$T/params.tns" "$T/batch.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: --grad: record 1: missing (the stream ended; expected the grad of batch 1)" ]]
	run sh -c '"$0" --config "$1" --weights "$2" --train --grad "$3" <"$4" >/dev/null' "$BIN/forward" "$CFG" "$T/params.tns" "$F/grad_128_bad.tns" "$T/batch.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: --grad: record 1: tensor 'reg' is f32[2,1538,3], expected f32[2,1538,4]" ]]
	# one params record for two batches
	cat "$T/batch.tns" "$T/batch.tns" >"$T/two.tns"
	run sh -c '"$0" --config "$1" --weights "$2" --train --grad "$3" <"$4" >/dev/null' "$BIN/forward" "$CFG" "$T/params.tns" "$F/grad_128.tns" "$T/two.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"--weights $T/params.tns: no params record for batch 2"* ]]
}

@test "forward: a closed stdout is an error" {
	run bash -c "'$BIN/forward' --config '$CFG' --weights '$T/params.tns' <'$T/batch.tns' >/dev/full"
	[ "$status" -eq 1 ]
	run bash -c "'$BIN/forward' --config '$CFG' --summary >/dev/full"
	[ "$status" -eq 1 ]
}
