#!/usr/bin/env bats
# sgd-step: params out (a FIFO read by tns), checkpoints, metrics, resume, failures.
# Inputs are committed fixtures written by tests/ref_optim.py (tests/fixtures/optim/:
# a few named tensors, 12 steps of loss + grads records in two parts, 5 + 7) and
# tests/make_pth_fixture.py (tests/fixtures/pth/); test_optim and test_pth compare
# the numbers with torch, these tests the tool around them.

load helpers

F=$ROOT/tests/fixtures/optim
P=$ROOT/tests/fixtures/pth

setup() {
	T=$BATS_TEST_TMPDIR
	cat "$F/cosine_steps_a.tns" "$F/cosine_steps_b.tns" >"$T/all.tns"
}

# sgd-step on the cosine set with run directory $1 and more options
sgd() {
	local dir=$1
	shift
	"$BIN/sgd-step" --config "$F/cosine.json" --run "$dir" --log-every 0 "$@"
}

@test "sgd-step --help lists the options and exits 0" {
	run "$BIN/sgd-step" --help
	[ "$status" -eq 0 ]
	for o in --config --init --pretrained --pretrained-prefix --resume --params --run --checkpoint-every \
		--log-every --lr --epochs --iters-per-epoch --max-steps --seed; do
		[[ "$output" == *"$o"* ]]
	done
}

@test "sgd-step: bad options are usage errors (2)" {
	run "$BIN/sgd-step" --frobnicate </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == "sgd-step: unknown option '--frobnicate'"* ]]
	run "$BIN/sgd-step" </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"--init PARAMS"*"or --resume is needed"* ]]
	run "$BIN/sgd-step" --resume --init "$F/cosine_init.tns" </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/sgd-step" --init "$F/cosine_init.tns" --lr x </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/sgd-step" --init "$F/cosine_init.tns" --max-steps 0 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/sgd-step" --init
	[ "$status" -eq 2 ]
	[[ "$output" == *"needs an argument"* ]]
	run "$BIN/sgd-step" --init "$F/cosine_init.tns" extra </dev/null
	[ "$status" -eq 2 ]
	[[ "$output" == *"unexpected argument 'extra'"* ]]
}

@test "sgd-step: bad configs and inputs are errors naming the problem (1)" {
	printf '{"train": {"optimizer": {"lr": 0.1, "nesterov": true}}}' >"$T/c.json"
	run "$BIN/sgd-step" --config "$T/c.json" --init "$F/cosine_init.tns" --run "$T/r" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"c.json: train.optimizer.nesterov: unknown key"* ]]
	printf '{"train": {"lr_config": {"policy": "cosine", "by_epoch": false}}}' >"$T/c.json"
	run "$BIN/sgd-step" --config "$T/c.json" --init "$F/cosine_init.tns" --run "$T/r" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"needs the run's length"* ]]
	run sgd "$T/r" --init /nonexistent.tns </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"/nonexistent.tns"* ]]
	run sgd "$T/r" --resume </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == "sgd-step: cannot resume: $T/r/latest.tns: "* ]]
	# grads that do not fit the params
	run sgd "$T/r2" --init "$P/mbv2_w025_init.tns" <"$T/all.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"stdin: record 2: grads: 'backbone.conv.weight' is not a trainable parameter"* ]]
}

@test "sgd-step: params to a FIFO, checkpoints, metrics" {
	mkfifo "$T/params"
	"$BIN/tns" ls "$T/params" >"$T/ls.txt" 3>&- &
	reader=$!
	run sgd "$T/run" --init "$F/cosine_init.tns" --params "$T/params" --iters-per-epoch 4 --log-every 3 <"$T/all.tns"
	[ "$status" -eq 0 ]
	wait "$reader"
	# version 0, then one per step
	[ "$(wc -l <"$T/ls.txt")" -eq 13 ]
	[[ "$(sed -n 1p "$T/ls.txt")" == *'{"step":0,"config":"cosine","epoch":0}' ]]
	[[ "$(sed -n 13p "$T/ls.txt")" == *'{"step":12,"config":"cosine","epoch":2}' ]]
	# progress every 3 steps, epochs counted from 1 as mmcv logs them
	[[ "$output" == *"epoch 1 iter 3/4 loss 3.76 (cls 2.8 reg 0.96) lr 0.0160 "*" img/s ETA "* ]]
	[[ "$output" == *"epoch 3 iter 4/4 loss 2.68 (cls 1.9 reg 0.78) lr 0.0100 "* ]]
	# checkpoint_every 5 (the config), every epoch end, latest; no temp files
	run ls -A "$T/run"
	[ "$output" == "$(printf '%s\n' epoch_1.tns epoch_2.tns epoch_3.tns iter_10.tns iter_5.tns latest.tns metrics.jsonl)" ]
	run "$BIN/tns" ls "$T/run/latest.tns"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" == *"params "*'{"step":12,"config":"cosine","epoch":2}' ]]
	[[ "${lines[1]}" == *"optim "*"head.scale:f32[131]"* ]]
	run "$BIN/tns" cat --json "$T/run/epoch_2.tns"
	[[ "${lines[1]}" == *'"step":8,"epoch":1,"epoch_steps":4,"images":16,"epoch_images":8'* ]]
	# metrics: one JSON line per step
	[ "$(wc -l <"$T/run/metrics.jsonl")" -eq 12 ]
	run jq -e -s 'length == 12 and (map(.step) == [range(1; 13)]) and .[0].lr == 4e-05 and .[11].epoch == 2
		and .[11].loss_cls == 1.9 and .[11].num_pos == 23 and (.[0] | has("images_per_s") and has("eta_s"))' \
		"$T/run/metrics.jsonl"
	[ "$status" -eq 0 ]
	# the last params written are the checkpoint's
	cmp <("$BIN/tns" head -n 1 "$T/run/latest.tns") <("$BIN/tns" head -n 1 "$T/run/epoch_3.tns")
}

@test "sgd-step: stopped at EOF and resumed gives bit-identical weights" {
	sgd "$T/a" --init "$F/cosine_init.tns" --params "$T/pa.tns" --checkpoint-every 0 <"$T/all.tns"
	sgd "$T/b" --init "$F/cosine_init.tns" --params "$T/pb1.tns" --checkpoint-every 0 <"$F/cosine_steps_a.tns"
	[ -f "$T/b/iter_5.tns" ]
	run sgd "$T/b" --resume --params "$T/pb2.tns" --checkpoint-every 0 <"$F/cosine_steps_b.tns"
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming $T/b/latest.tns at step 5, epoch 1 (2 images into it)"* ]]
	# the same final state, byte for byte (params, momentum, step, epoch, lr, images)
	cmp "$T/a/latest.tns" "$T/b/latest.tns"
	# and the same params records after the resume point: pb2 is the tail of pa
	size=$(stat -c %s "$T/pb2.tns")
	cmp <(tail -c "$size" "$T/pa.tns") "$T/pb2.tns"
	[ "$("$BIN/tns" ls "$T/pb2.tns" | wc -l)" -eq 8 ]
	# metrics continue: 12 lines, steps 1..12
	run jq -e -s 'map(.step) == [range(1; 13)]' "$T/b/metrics.jsonl"
	[ "$status" -eq 0 ]
}

@test "sgd-step: killed (-9) after a checkpoint and resumed gives bit-identical weights" {
	sgd "$T/a" --init "$F/cosine_init.tns" --checkpoint-every 0 <"$T/all.tns"
	mkfifo "$T/in"
	sgd "$T/k" --init "$F/cosine_init.tns" --checkpoint-every 5 <"$T/in" 3>&- &
	pid=$!
	# the writer keeps the FIFO open: sgd-step waits for more input when it is killed
	exec 4>"$T/in"
	cat "$F/cosine_steps_a.tns" >&4
	for _ in $(seq 100); do [ -f "$T/k/iter_5.tns" ] && break; sleep 0.1; done
	[ -f "$T/k/iter_5.tns" ]
	kill -9 "$pid"
	exec 4>&-
	wait "$pid" || true
	run sgd "$T/k" --resume --checkpoint-every 0 <"$F/cosine_steps_b.tns"
	[ "$status" -eq 0 ]
	cmp "$T/a/latest.tns" "$T/k/latest.tns"
	run jq -e -s 'map(.step) == [range(1; 13)]' "$T/k/metrics.jsonl"
	[ "$status" -eq 0 ]
}

@test "sgd-step: truncated input is an error; the last checkpoint stays intact" {
	size=$(stat -c %s "$T/all.tns")
	head -c $((size - 300)) "$T/all.tns" >"$T/cut.tns"
	run sgd "$T/run" --init "$F/cosine_init.tns" --checkpoint-every 5 <"$T/cut.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"sgd-step: stdin: record 24: truncated record"*"(last checkpoint: $T/run/latest.tns, step 10)"* ]]
	run "$BIN/tns" ls "$T/run/latest.tns"
	[ "$status" -eq 0 ]
	[[ "$output" == *'{"step":10,"config":"cosine","epoch":2}'* ]]
	run ls -A "$T/run"
	[[ "$output" != *.tmp* ]]
	# and the run resumes from it
	run sgd "$T/run" --resume --max-steps 11 <"$F/cosine_steps_b.tns"
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming $T/run/latest.tns at step 10, epoch 2"* ]]
	[ -f "$T/run/iter_11.tns" ]
}

@test "sgd-step: the params reader going away is an error (EPIPE), not a silent death" {
	mkfifo "$T/params"
	"$BIN/tns" head -n 1 "$T/params" >/dev/null 3>&- &
	run bash -c "{ cat '$F/cosine_steps_a.tns'; sleep 1; cat '$F/cosine_steps_b.tns'; } |
		'$BIN/sgd-step' --config '$F/cosine.json' --run '$T/run' --init '$F/cosine_init.tns' --params '$T/params'"
	[ "$status" -eq 1 ]
	[[ "$output" == *"sgd-step: $T/params: write error: Broken pipe"* ]]
	# whatever checkpoints were made before are whole (there may be none yet)
	run ls -A "$T/run"
	[[ "$output" != *.tmp* ]]
	for f in "$T"/run/*.tns; do
		[ -e "$f" ] || continue
		"$BIN/tns" ls "$f" >/dev/null
	done
}

@test "sgd-step: --max-steps stops cleanly; grads alone are steps; other records are ignored" {
	run sgd "$T/run" --init "$F/cosine_init.tns" --max-steps 3 --params "$T/p.tns" <"$T/all.tns"
	[ "$status" -eq 0 ]
	[ "$("$BIN/tns" ls "$T/p.tns" | wc -l)" -eq 4 ]
	[ -f "$T/run/iter_3.tns" ]
	# grads records alone (the loss records dropped by a pass-through filter) still step
	"$BIN/tns" cat "$F/cosine_init.tns" "$T/all.tns" >"$T/mixed.tns"
	run sgd "$T/run2" --init "$F/cosine_init.tns" <"$T/mixed.tns"
	[ "$status" -eq 0 ]
	[[ "$output" == *"12 steps done"*"(other records ignored)"* ]]
}

@test "sgd-step --pretrained: a torchvision state dict onto the backbone" {
	run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$P/mbv2_w025.pth" --params "$T/p.tns" </dev/null
	[ "$status" -eq 0 ]
	[[ "$output" == *"sgd-step: $P/mbv2_w025.pth: loaded 260 tensors into the backbone, skipped 2 unused: classifier.*; missing 0"* ]]
	# the values are the file's: the first tensors against the fixture made with torch
	diff <("$BIN/tns" stats "$T/p.tns" | grep 'backbone.features.0.0.weight\|backbone.features.1.conv.0.1.running_var' |
		sed 's/backbone\.//; s/^ *[0-9]* *//') \
		<("$BIN/tns" stats "$P/mbv2_w025_head.tns" | grep ' features.0.0.weight\| features.1.conv.0.1.running_var' |
		sed 's/^ *[0-9]* *//')
	# a key the model lacks is skipped, and named (as mmcv's load_checkpoint(strict=False));
	# (this params record, without one BN's running mean, is then refused by the optimizer)
	run sgd "$T/run" --init "$P/mbv2_w025_init_missing.tns" --pretrained "$P/mbv2_w025.pth" </dev/null
	[ "$status" -eq 1 ]
	[[ "${lines[0]}" == "sgd-step: $P/mbv2_w025.pth: loaded 259 tensors into the backbone, skipped 3 unused: features.4.conv.1.1.running_mean, classifier.*; missing 0" ]]
	[[ "${lines[1]}" == *"'backbone.features.4.conv.1.1.running_var' has no 'backbone.features.4.conv.1.1.running_mean'" ]]
	run sgd "$T/run" --init "$P/mbv2_w025_init_shape.tns" --pretrained "$P/mbv2_w025.pth" </dev/null
	[ "$status" -eq 1 ]
	[ "$output" == "sgd-step: $P/mbv2_w025.pth: key 'features.2.conv.2.weight': f32[8,48,1,1] in the file, f32[8,24,1,1] in the model ('backbone.features.2.conv.2.weight')" ]
	run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$P/mbv2_w025.pth" --pretrained-prefix net. </dev/null
	[ "$status" -eq 1 ]
	[ "$output" == "sgd-step: $P/mbv2_w025.pth: none of its 314 tensors is one of the model's (its first, 'features.0.0.weight', would be 'net.features.0.0.weight')" ]
}

@test "sgd-step --pretrained: torchvision's RegNet names onto mmdet's, the fc classifier skipped" {
	"$BIN/forward" --config "$P/regnet_tiny_ssd.json" --init >"$T/init.tns"
	run sgd "$T/run" --init "$T/init.tns" --pretrained "$P/regnet_tiny.pth" --params "$T/p.tns" </dev/null
	[ "$status" -eq 0 ]
	# 140 keys: 23 num_batches_tracked and fc.weight, fc.bias skipped (test_pth checks
	# where each of the 115 went)
	[[ "$output" == *"sgd-step: $P/regnet_tiny.pth: loaded 115 tensors into the backbone (torchvision RegNet names mapped to mmdet's), skipped 2 unused: fc.*; missing 0"* ]]
	[ "$("$BIN/tns" stats "$T/p.tns" | grep -c ' backbone\.layer3\.2\.conv2\.weight ')" -eq 1 ]
	# a wrong prefix: the error names the mapped tensor it looked for
	run sgd "$T/run2" --init "$T/init.tns" --pretrained "$P/regnet_tiny.pth" --pretrained-prefix nothing. </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"none of its 140 tensors is one of the model's (its first, 'stem.0.weight', would be 'nothing.conv1.weight')"* ]]
}

@test "sgd-step --pretrained: damaged .pth files are errors, never crashes" {
	size=$(stat -c %s "$P/mbv2_w025.pth")
	# (cut inside the central directory at the end, every member is still complete and
	# CRC-checked: the streaming zip reader accepts that, as test_pth shows)
	for cut in 0 100 5000 $((size / 2)) $((size - 60000)); do
		head -c "$cut" "$P/mbv2_w025.pth" >"$T/cut.pth"
		run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$T/cut.pth" </dev/null
		[ "$status" -eq 1 ]
		[[ "$output" == "sgd-step: $T/cut.pth: "* ]]
	done
	for off in 40 300 2000 100000 700000; do
		cp "$P/mbv2_w025.pth" "$T/flip.pth"
		printf '\x5a\xa5\x00' | dd of="$T/flip.pth" bs=1 seek="$off" conv=notrunc status=none
		run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$T/flip.pth" </dev/null
		[ "$status" -eq 1 ]
		[[ "$output" == "sgd-step: $T/flip.pth: "* ]]
	done
	perl -0777 -pe 's/data\.pkl/data.pkx/g' "$P/mbv2_w025.pth" >"$T/nopkl.pth"
	run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$T/nopkl.pth" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"no data.pkl in the archive"* ]]
	run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$F/cosine_init.tns" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a torch.save file: neither a zip (torch >= 1.6) nor torch's legacy format (it starts 28 b5 2f fd)"* ]]
}

@test "sgd-step --pretrained: a file of torch's legacy format (before 1.6); a torchvision RegNet on a BGR config" {
	R=$ROOT/tests/fixtures/pretrained
	"$BIN/forward" --config "$ROOT/tests/fixtures/model/tiny_regnet.json" --init >"$T/init.tns"
	run "$BIN/sgd-step" --config "$ROOT/tests/fixtures/model/tiny_regnet.json" --run "$T/run" --log-every 0 \
		--init "$T/init.tns" --pretrained "$R/regnet_tiny_legacy.pth" --params "$T/p.tns" </dev/null
	[ "$status" -eq 0 ]
	[ "${lines[0]}" == "sgd-step: $R/regnet_tiny_legacy.pth: loaded 145 tensors into the backbone (torchvision RegNet names mapped to mmdet's), skipped 2 unused: fc.*; missing 0" ]
	# the same config feeding BGR: conv1 takes the RGB-trained weights reversed
	jq '.data = {"to_rgb": false}' "$ROOT/tests/fixtures/model/tiny_regnet.json" >"$T/bgr.json"
	run "$BIN/sgd-step" --config "$T/bgr.json" --run "$T/run2" --log-every 0 \
		--init "$T/init.tns" --pretrained "$R/regnet_tiny_legacy.pth" --params "$T/q.tns" </dev/null
	[ "$status" -eq 0 ]
	[ "${lines[1]}" == "sgd-step: $R/regnet_tiny_legacy.pth: its weights take RGB, $T/bgr.json feeds BGR: backbone.conv1.weight's input channels reversed" ]
	# conv1.weight [16,3,3,3], its channels permuted: the same statistics, other bytes
	# (test_pretrained shows the reversed weights on the reversed image give the same stages)
	[ "$("$BIN/tns" stats "$T/p.tns" | grep ' backbone\.conv1\.weight ' | sed 's/^ *[0-9]* *//')" == \
	  "$("$BIN/tns" stats "$T/q.tns" | grep ' backbone\.conv1\.weight ' | sed 's/^ *[0-9]* *//')" ]
	! cmp -s "$T/p.tns" "$T/q.tns"
}

@test "sgd-step --pretrained: a pickle that calls anything but torch's rebuilders is refused" {
	# a legacy file whose object is os.system("id"): magic, version, sys_info, object
	{
		printf '\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.'
		printf '\x80\x02M\xe9\x03.'
		printf '\x80\x02}(X\x0d\x00\x00\x00little_endian\x88u.'
		printf '\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.'
	} >"$T/evil.pth"
	run sgd "$T/run" --init "$P/mbv2_w025_init.tns" --pretrained "$T/evil.pth" </dev/null
	[ "$status" -eq 1 ]
	[ "$output" == "sgd-step: $T/evil.pth: object: offset 70: unsupported callable posix.system (only torch's tensor and OrderedDict rebuilders are called)" ]
	[ ! -e "$T/run/latest.tns" ]
}
