#!/usr/bin/env bats
# A new user's first hour: `make setup demo` in one command, file options from pipes,
# one meaning for boolean settings, failures reported where they happen, the demo's
# output, `make help`, a README that can be read to the end.

load helpers

CFG=tests/fixtures/pipeline/tiny_bccd.json

setup() {
	cd "$ROOT"
	export BIN THREADS=2
	R=$BATS_TEST_TMPDIR/run
	T=$BATS_TEST_TMPDIR
}

# fake_pkg_config DIR RULE: a pkg-config in DIR/bin that answers as the real one only
# when the shell test RULE holds (with $* the arguments), else fails as for a missing
# package.
fake_pkg_config() {
	mkdir -p "$1/bin"
	cat >"$1/bin/pkg-config" <<EOF
#!/bin/sh
if $2; then exec /usr/bin/pkg-config "\$@"; fi
echo "Package was not found in the pkg-config search path." >&2
exit 1
EOF
	chmod +x "$1/bin/pkg-config"
}

@test "make setup X: the packages setup installs are used by the same make (flags asked for after setup, not at parse time)" {
	# the packages "appear" only when the setup goal has run
	fake_pkg_config "$T/fake" "[ -e $T/fake/installed ]"
	PATH=$T/fake/bin:$PATH run make --no-print-directory BUILD="$T/b" BIN="$T/bin" SETUP="touch $T/fake/installed" \
		setup flags
	echo "$output"
	[ "$status" -eq 0 ]
	grep -E '^LDLIBS .*-lzstd .*-lcjson .*-larchive' <<<"$output"
	grep -E '^CFLAGS .*-I/usr/include/cjson' <<<"$output"
}

@test "a build without a package names the Debian package and make setup, in a few lines" {
	fake_pkg_config "$T/fake" '! echo " $* " | grep -q " libzstd "'
	PATH=$T/fake/bin:$PATH run make --no-print-directory BUILD="$T/b" BIN="$T/bin" "$T/b/lib/kernels/qlayers.o"
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"missing Debian package libzstd-dev (libzstd)"* ]]
	[[ "$output" == *'`make setup` installs them'* ]]
	[ "${#lines[@]}" -le 5 ]
	[ ! -f "$T/b/lib/kernels/qlayers.o" ]
}

# the merged tiny config (no base), for --config <(...)
tiny_config() {
	(. pipelines/lib.sh && config_json "$CFG")
}

@test "pipes: --classes, --config, --weights, --ranges, --gt from process substitutions give what files give" {
	tiny_config >"$T/cfg.json"
	"$BIN/forward" --config "$T/cfg.json" --init --seed 3 >"$T/init.tns"
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 4 >"$T/images.tns"
	"$BIN/augment" --eval --config "$T/cfg.json" --batch 2 <"$T/images.tns" >"$T/batches.tns"
	"$BIN/forward" --config "$T/cfg.json" --weights "$T/init.tns" --stats <"$T/batches.tns" |
		"$BIN/calib-ranges" --batches 2 >"$T/ranges.tns"

	# voc-decode --classes
	"$BIN/voc-decode" "$BCCD" --split test --classes <(cat configs/bccd.classes) --limit 4 | cmp - "$T/images.tns"
	# augment, forward (--config, --weights, --ranges), ssd-decode, map-eval (--classes, --gt)
	"$BIN/augment" --eval --config <(cat "$T/cfg.json") --batch 2 <"$T/images.tns" | cmp - "$T/batches.tns"
	"$BIN/forward" --config "$T/cfg.json" --weights "$T/init.tns" --quant --ranges "$T/ranges.tns" <"$T/batches.tns" >"$T/pred.tns"
	"$BIN/forward" --config <(cat "$T/cfg.json") --weights <(cat "$T/init.tns") --quant --ranges <(cat "$T/ranges.tns") \
		<"$T/batches.tns" | cmp - "$T/pred.tns"
	"$BIN/ssd-decode" --config "$T/cfg.json" <"$T/pred.tns" >"$T/dets.tns"
	"$BIN/ssd-decode" --config <(cat "$T/cfg.json") <"$T/pred.tns" | cmp - "$T/dets.tns"
	"$BIN/map-eval" --classes configs/bccd.classes --gt "$T/images.tns" <"$T/dets.tns" >"$T/table"
	"$BIN/map-eval" --classes <(cat configs/bccd.classes) --gt <(cat "$T/images.tns") <"$T/dets.tns" | cmp - "$T/table"
	# fakequant and tidl-pack (--config, --weights, --ranges)
	"$BIN/fakequant" --config "$T/cfg.json" --weights "$T/init.tns" --ranges "$T/ranges.tns" >"$T/q.tns"
	"$BIN/fakequant" --config <(cat "$T/cfg.json") --weights <(cat "$T/init.tns") --ranges <(cat "$T/ranges.tns") |
		cmp - "$T/q.tns"
	"$BIN/tidl-pack" --config <(cat "$T/cfg.json") --weights <(cat "$T/init.tns") --quant --ranges <(cat "$T/ranges.tns") \
		--onnx "$T/m.onnx" --prototxt "$T/m.prototxt" >/dev/null
	[ -s "$T/m.onnx" ] && [ -s "$T/m.prototxt" ]
	# calib-ranges --init
	"$BIN/forward" --config "$T/cfg.json" --weights "$T/init.tns" --stats <"$T/batches.tns" >"$T/stats.tns"
	"$BIN/calib-ranges" --init "$T/ranges.tns" <"$T/stats.tns" >"$T/r2.tns"
	"$BIN/calib-ranges" --init <(cat "$T/ranges.tns") <"$T/stats.tns" | cmp - "$T/r2.tns"
}

@test "pipes: loss and sgd-step --config and sgd-step --init from process substitutions" {
	tiny_config >"$T/cfg.json"
	"$BIN/forward" --config "$T/cfg.json" --init --seed 3 >"$T/init.tns"
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 2 |
		"$BIN/augment" --train --config "$T/cfg.json" --batch 2 --seed 1 >"$T/batches.tns"
	"$BIN/forward" --config "$T/cfg.json" --weights "$T/init.tns" <"$T/batches.tns" >"$T/pred.tns"
	"$BIN/loss" --config "$T/cfg.json" <"$T/pred.tns" >"$T/loss.tns"
	"$BIN/loss" --config <(cat "$T/cfg.json") <"$T/pred.tns" | cmp - "$T/loss.tns"
	# sgd-step sends its first params from --init before any step
	"$BIN/sgd-step" --config <(cat "$T/cfg.json") --init <(cat "$T/init.tns") --run "$T/r" --params "$T/p.tns" \
		--epochs 1 --iters-per-epoch 1 </dev/null
	[ "$("$BIN/tns" head -n 1 "$T/p.tns" | "$BIN/tns" cat --json | jq -r .kind)" = params ]
}

@test "pipes: sgd-step --pretrained from a process substitution, both torch formats" {
	local P=tests/fixtures/pth F=tests/fixtures/pretrained
	for f in "$P/mbv2_w025.pth" "$F/mbv2_w01_legacy.pth"; do
		[ "$f" = "$P/mbv2_w025.pth" ] && init=$P/mbv2_w025_init.tns || init=$T/w01_init.tns
		[ -f "$init" ] || "$BIN/forward" --config "$F/mbv2_w01.json" --init >"$init"
		"$BIN/sgd-step" --config tests/fixtures/model/tiny.json --init "$init" --pretrained "$f" --run "$T/a" \
			--params "$T/a.tns" --epochs 1 --iters-per-epoch 1 </dev/null
		"$BIN/sgd-step" --config tests/fixtures/model/tiny.json --init "$init" --pretrained <(cat "$f") --run "$T/b" \
			--params "$T/b.tns" --epochs 1 --iters-per-epoch 1 </dev/null
		cmp "$T/a.tns" "$T/b.tns"
	done
}

@test "pipes: a piped config's relative base is taken from the current directory, and said so when missing" {
	(cd tests/fixtures/pipeline && "$BIN/forward" --config <(cat tiny_bccd.json) --init --seed 3) >"$T/a.tns"
	"$BIN/forward" --config $CFG --init --seed 3 | cmp - "$T/a.tns"
	run "$BIN/forward" --config <(cat $CFG) --init
	[ "$status" -eq 1 ]
	[[ "$output" == *"base (of a piped config: from the current directory)"* ]]
}

# ---- boolean settings: one parser (pipelines/lib.sh bool) for every script

@test "booleans: QUANTIZE=true/yes/on mean 1 in eval, train and export; a word that is not a boolean is an error naming it" {
	tiny_config | jq 'del(.quantize)' >"$T/cfg.json"
	mkdir -p "$R"
	"$BIN/forward" --config "$T/cfg.json" --init >"$R/latest.tns"
	for v in true yes on 1 TRUE; do
		# eval: the quantised model needs ranges (none here): proof that QUANTIZE was read as 1
		RUN=$R QUANTIZE=$v run pipelines/eval.sh "$T/cfg.json"
		[ "$status" -eq 1 ] && [[ "$output" == *"no activation ranges"* ]]
		# train: QAT starts from the float run's checkpoint
		RUN=$R/qat INIT=$T/none QUANTIZE=$v run pipelines/train.sh "$T/cfg.json"
		[ "$status" -eq 1 ] && [[ "$output" == *"QAT starts from a float checkpoint"* ]]
		# export: the quantised export needs ranges too
		RUN=$R QUANTIZE=$v OUT=$T/x run pipelines/export.sh "$T/cfg.json"
		[ "$status" -eq 1 ] && [[ "$output" == *"--quant: "*"no ranges record"* ]]
	done
	for v in false no off 0 ""; do
		RUN=$R QUANTIZE=$v OUT=$T/x run pipelines/export.sh "$T/cfg.json"
		[ "$status" -eq 0 ] && grep -q "$R/latest.tns, float" "$T/x/export.txt"
	done
	for s in eval train export calibrate; do
		RUN=$R QUANTIZE=maybe run pipelines/$s.sh "$T/cfg.json"
		[ "$status" -eq 2 ]
		[[ "$output" == *"QUANTIZE=maybe: not a boolean"* ]]
	done
	RUN=$R INT8=2 QUANTIZE=1 run pipelines/eval.sh "$T/cfg.json"
	[ "$status" -eq 2 ] && [[ "$output" == *"INT8=2: not a boolean"* ]]
	RUN=$R OLD_TIDL=si run pipelines/export.sh "$T/cfg.json"
	[ "$status" -eq 2 ] && [[ "$output" == *"OLD_TIDL=si: not a boolean"* ]]
}

@test "booleans: the config's \"quantize\" is honoured by eval, train and export, and QUANTIZE=0 overrides it" {
	tiny_config | jq '.quantize = true' >"$T/cfg.json"
	mkdir -p "$R"
	"$BIN/forward" --config "$T/cfg.json" --init >"$R/latest.tns"
	RUN=$R run pipelines/eval.sh "$T/cfg.json"
	[ "$status" -eq 1 ] && [[ "$output" == *"no activation ranges"* ]]
	RUN=$R/qat INIT=$T/none run pipelines/train.sh "$T/cfg.json"
	[ "$status" -eq 1 ] && [[ "$output" == *"QAT starts from a float checkpoint"* ]]
	RUN=$R OUT=$T/x run pipelines/export.sh "$T/cfg.json"
	[ "$status" -eq 1 ] && [[ "$output" == *"--quant: "*"no ranges record"* ]]
	RUN=$R OUT=$T/y QUANTIZE=0 run pipelines/export.sh "$T/cfg.json"
	[ "$status" -eq 0 ] && grep -q "$R/latest.tns, float" "$T/y/export.txt"
	RUN=$R QUANTIZE=0 run pipelines/eval.sh "$T/cfg.json"
	[ "$status" -eq 0 ] && [[ "$output" != *"quantised"* ]]
	tiny_config | jq '.quantize = "perhaps"' >"$T/bad.json"
	RUN=$R run pipelines/eval.sh "$T/bad.json"
	[ "$status" -eq 2 ] && [[ "$output" == *"the config's quantize=perhaps: not a boolean"* ]]
}

# ---- failures reported where they happen

# fake_bin DIR TOOL: DIR holds the real tools but TOOL, which fails saying so when its
# arguments include --init (forward) or --pretrained (sgd-step)
fake_bin() {
	mkdir -p "$1"
	for t in "$BIN"/*; do ln -sf "$t" "$1/"; done
	rm "$1/$2"
	cat >"$1/$2" <<EOF
#!/bin/sh
case " \$* " in *" --init "*) echo "$2: injected failure" >&2; exit 1 ;; esac
exec "$BIN/$2" "\$@"
EOF
	chmod +x "$1/$2"
}

@test "train: a failing forward --init stops train.sh at once with its own message" {
	fake_bin "$T/bin" forward
	BIN=$T/bin RUN=$R run timeout 120 pipelines/train.sh $CFG
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"forward: injected failure"* ]]
	[[ "$output" != *"sgd-step"* ]] # it never got as far as the loop
	[ ! -e "$R/init.tns" ]
}

@test "train: a stage that fails before opening its FIFO ends the loop with its message instead of hanging" {
	echo "not a state dict" >"$T/bad.pth"
	RUN=$R PRETRAINED=$T/bad.pth run timeout 120 pipelines/train.sh $CFG
	echo "$output"
	[ "$status" -eq 1 ] # 124: timeout, the loop hung
	[[ "$output" == *"sgd-step: $T/bad.pth: "* ]]
	[[ "$output" == *"failed: "*"sgd-step (exit 1)"* ]]
	! pgrep -f "$R" >/dev/null
}

# ---- what a newcomer sees

@test "demo: one line a stage, the float and 8-bit mAP side by side, where the files went; details in logs/" {
	RUN=$R EPOCHS=1 CALIB_ITERS=2 run pipelines/demo.sh $CFG
	echo "$output"
	[ "$status" -eq 0 ]
	for s in train eval calibrate eval-int8 export detect; do
		[ "$(grep -c "^$s  *done in [0-9.]* s$" <<<"$output")" -eq 1 ]
		[ -s "$R/logs/$s.log" ]
	done
	grep -E '^mAP +[0-9]\.[0-9]{3} +[0-9]\.[0-9]{3}$' <<<"$output"
	[ "$(grep -cE '^(RBC|WBC|Platelets) ' <<<"$output")" -eq 3 ]
	[[ "$output" == *"model.onnx, model.prototxt the TIDL export"* ]]
	# the ranges table stays in export.txt, out of the terminal
	grep -q "ranges (" "$R/export.txt"
	[[ "$output" != *"ranges ("* ]]
	[ "${#lines[@]}" -le 40 ]
	[ "$(ls "$R"/detections/*.jpg | wc -l)" -eq 4 ]
	[ "$(jq -s length "$R/detections/detections.json")" -eq 4 ]
	# the table's numbers are the eval files' own
	[[ "$output" == *"$(jq -r '.mAP * 1000 | round / 1000' "$R/eval.json")"* ]]
}

@test "make help lists the targets and their variables" {
	run make --no-print-directory help
	[ "$status" -eq 0 ]
	for w in "make setup demo" "make test" "make train" "make eval" "make calibrate" "make export-tidl" \
		QUANTIZE INT8 PRETRAINED NP= CKPT= "make bench"; do
		[[ "$output" == *"$w"* ]] || { echo "make help does not mention $w"; return 1; }
	done
}

@test "README: the two commands of a fresh machine are make targets, and the page is at most 200 lines" {
	grep -q '^make setup demo' README.md
	grep -q '^make test' README.md
	make -n setup demo >/dev/null
	[ "$(wc -l <README.md)" -le 200 ]
}
