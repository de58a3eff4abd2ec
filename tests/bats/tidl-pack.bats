#!/usr/bin/env bats
# tidl-pack and make export-tidl (pipelines/export.sh), validated by real consumers:
# Debian's python3-onnx checker and ONNX Runtime (onnxruntime-node, tests/ort_run.js),
# through tests/onnx_check.py. The reduced-width model on BCCD at 96x96
# (tests/fixtures/pipeline/tiny_bccd.json), a few training steps, 8 test images.

load helpers

CFG=tests/fixtures/pipeline/tiny_bccd.json
PY=/usr/bin/python3

setup_file() {
	cd "$ROOT"
	export BIN THREADS=2
	D=$BATS_FILE_TMPDIR
	RUN=$D/float EPOCHS=1 MAX_STEPS=4 pipelines/train.sh $CFG 2>/dev/null
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 8 |
		"$BIN/augment" --eval --config $CFG --batch 4 >"$D/batches.tns"
	"$BIN/forward" --config $CFG --weights "$D/float/latest.tns" <"$D/batches.tns" >"$D/pred.tns"
	"$BIN/forward" --config $CFG --weights "$D/float/latest.tns" --stats <"$D/batches.tns" |
		"$BIN/calib-ranges" >"$D/ranges.tns"
	# a QAT checkpoint holds params then ranges: the same records, concatenated
	cat "$D/float/latest.tns" "$D/ranges.tns" >"$D/qat.tns"
	"$BIN/forward" --config $CFG --weights "$D/float/latest.tns" --quant --ranges "$D/ranges.tns" \
		<"$D/batches.tns" >"$D/qpred.tns"
	"$BIN/fakequant" --config $CFG --weights "$D/float/latest.tns" --ranges "$D/ranges.tns" >"$D/qparams.tns"
}

setup() {
	cd "$ROOT"
	export BIN THREADS=2
	D=$BATS_FILE_TMPDIR
	T=$BATS_TEST_TMPDIR
}

# quant_reference NAME ARGS...: the float checkpoint quantised with the ranges and ARGS
# (--bits, --weight-bits, --per-channel-dw): forward --quant's pred stream on the test
# images into $T/qpredNAME.tns, fakequant's qparams into $T/qparamsNAME.tns
quant_reference() {
	local name=$1
	shift
	"$BIN/forward" --config $CFG --weights "$D/float/latest.tns" --quant --ranges "$D/ranges.tns" "$@" \
		<"$D/batches.tns" >"$T/qpred$name.tns"
	"$BIN/fakequant" --config $CFG --weights "$D/float/latest.tns" --ranges "$D/ranges.tns" "$@" >"$T/qparams$name.tns"
}

# compare_quant ONNX PRED QPARAMS STEPS: ONNX Runtime on the 8 test images within STEPS
# quantisation steps of the quantised pred stream PRED (onnx_check.py's JSON in $output)
compare_quant() {
	run "$PY" tests/onnx_check.py compare "$1" --batches "$D/batches.tns" --pred "$2" --qparams "$3" --max-steps "$4"
	echo "$output"
	[ "$status" -eq 0 ]
}

# derived CONFIG.json in $T: tiny_bccd with the "model" section JSON on top
derived_config() {
	printf '{"base": "%s", "model": %s}\n' "$ROOT/$CFG" "$2" >"$T/$1.json"
}

# compare_dets ONNX DETS [ARGS]: ONNX Runtime's detections of the graph (dets + labels,
# or detections) on the 8 test images equal ssd-decode's DETS (onnx_check.py's JSON in
# $output)
compare_dets() {
	local onnx=$1 dets=$2
	shift 2
	run "$PY" tests/onnx_check.py dets "$onnx" --batches "$D/batches.tns" --dets "$dets" "$@"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(jq '.equal and .counts_equal and .labels_equal and .unmatched == 0' <<<"$output")" = true ]
}

@test "float export: the ONNX checker passes, ONNX Runtime equals forward, prototxt detections equal ssd-decode's" {
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --onnx "$T/m.onnx" \
		--prototxt "$T/m.prototxt" --confidence 0.2 --top-k 100000 --keep-top-k 100000
	[ "$status" -eq 0 ]
	[[ "$output" == *"float"*"opset 11"*"0 range Clips"* ]]
	[[ "$output" == *"input f32[1,3,96,96]"*"cls_0  f32[1,16,12,12]"*"reg_5  f32[1,16,1,1]"* ]]
	[[ "$output" == *"prior boxes equal the anchors"* ]]
	run "$PY" tests/onnx_check.py check "$T/m.onnx" 11
	[ "$status" -eq 0 ]
	[[ "$output" == *'"checker": "ok"'*'"NonMaxSuppression"'*'"outputs": ["cls_0", '*', "reg_5", "dets", "labels"]'* ]]
	# mmdet's decoding at the prototxt's settings: every anchor, score > 0.2, NMS 0.45, no
	# cap (a barely trained model has many equal scores: a cap would cut among them)
	"$BIN/ssd-decode" --config $CFG --score-thr 0.2 --nms-pre 0 --nms-iou 0.45 --max-per-img 100000 \
		<"$D/pred.tns" >"$T/dets.tns"
	run "$PY" tests/onnx_check.py compare "$T/m.onnx" --batches "$D/batches.tns" --pred "$D/pred.tns" \
		--prototxt "$T/m.prototxt" --dets "$T/dets.tns"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(jq '.cls.max_rel <= 1e-4 and .reg.max_rel <= 1e-4 and .dets.equal and .dets.count > 0' <<<"$output")" = true ]
}

@test "--heads-only: the graph ends at the heads, ONNX Runtime equals forward" {
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --onnx "$T/h.onnx" \
		--prototxt "$T/h.prototxt" --heads-only
	[ "$status" -eq 0 ]
	[[ "$output" == *"detection outputs: none (--heads-only)"* ]]
	run "$PY" tests/onnx_check.py check "$T/h.onnx" 11
	[ "$status" -eq 0 ]
	[[ "$output" == *'"checker": "ok"'*'"outputs": ["cls_0", '*', "reg_5"]'* ]]
	[[ "$output" != *'"NonMaxSuppression"'* ]]
	run "$PY" tests/onnx_check.py compare "$T/h.onnx" --batches "$D/batches.tns" --pred "$D/pred.tns"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(jq '.cls.max_rel <= 1e-4 and .reg.max_rel <= 1e-4' <<<"$output")" = true ]
}

@test "quantised export (QAT checkpoint): a Clip per point; with --round ONNX Runtime computes forward --quant" {
	run "$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --onnx "$T/q.onnx" --prototxt "$T/q.prototxt"
	[ "$status" -eq 0 ]
	points=$("$BIN/tns" cat --json "$D/ranges.tns" | jq '.tensors | length')
	[[ "$output" == *"quantised to 8 bits, ranges $D/qat.tns"*"$points range Clips"* ]]
	[[ "$output" == *"ranges ($points points"*"input "*"bbox_head.reg_convs.5.1 "* ]]
	run "$PY" tests/onnx_check.py check "$T/q.onnx" 11
	[ "$status" -eq 0 ]
	# the export TIDL gets only clips (TIDL rounds, in integers; ONNX Runtime does not):
	# a few steps apart at most from the simulation, which rounds at every point
	compare_quant "$T/q.onnx" "$D/qpred.tns" "$D/qparams.tns" 2
	# with the rounding in the graph, the same weights and ranges give forward --quant's outputs
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --round --onnx "$T/qr.onnx" \
		--prototxt "$T/qr.prototxt" >/dev/null
	run "$PY" tests/onnx_check.py check "$T/qr.onnx" 11
	[ "$status" -eq 0 ]
	compare_quant "$T/qr.onnx" "$D/qpred.tns" "$D/qparams.tns" 1
	# bit-exact here; f32 summation order may flip a rare rounding elsewhere
	[ "$(jq '.cls.equal_on_grid > 0.99 and .reg.equal_on_grid > 0.99' <<<"$output")" = true ]
	# the ranges given apart: the same file
	"$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --quant --ranges "$D/ranges.tns" \
		--onnx "$T/q2.onnx" --prototxt "$T/q2.prototxt" >/dev/null
	cmp "$T/q.onnx" "$T/q2.onnx"
}

@test "4-bit and per-channel weights: the export with --round computes forward --quant's outputs" {
	quant_reference 4 --weight-bits 4
	run "$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --weight-bits 4 --round --onnx "$T/qr4.onnx" \
		--prototxt "$T/qr4.prototxt"
	[ "$status" -eq 0 ]
	[[ "$output" == *"quantised to 8 bits, weights 4, ranges"* ]]
	run "$PY" tests/onnx_check.py check "$T/qr4.onnx" 11
	[ "$status" -eq 0 ]
	# 4-bit weights times 8-bit values: f32 sums as exact as at 8 bits
	compare_quant "$T/qr4.onnx" "$T/qpred4.tns" "$T/qparams4.tns" 1
	[ "$(jq '.cls.equal_on_grid > 0.99 and .reg.equal_on_grid > 0.99' <<<"$output")" = true ]
	# per-channel depthwise weights: the same
	quant_reference pc --per-channel-dw
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --per-channel-dw --round --onnx "$T/qrpc.onnx" \
		--prototxt "$T/qrpc.prototxt" >/dev/null
	compare_quant "$T/qrpc.onnx" "$T/qpredpc.tns" "$T/qparamspc.tns" 1
	[ "$(jq '.cls.equal_on_grid > 0.99 and .reg.equal_on_grid > 0.99' <<<"$output")" = true ]
	run "$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --weight-bits 4
	[ "$status" -eq 2 ]
	[[ "$output" == *"--weight-bits and --per-channel-dw go with --quant"* ]]
}

@test "16-bit quantised export: ONNX Runtime within one 16-bit step of forward --quant --bits 16" {
	quant_reference 16 --bits 16
	run "$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --bits 16 --round --onnx "$T/qr16.onnx" \
		--prototxt "$T/qr16.prototxt"
	[ "$status" -eq 0 ]
	[[ "$output" == *"quantised to 16 bits"* ]]
	run "$PY" tests/onnx_check.py check "$T/qr16.onnx" 11
	[ "$status" -eq 0 ]
	# at 16 bits the simulation's f32 sums are not exact (products of 16-bit values), so
	# ONNX Runtime's other summation order flips roundings: one step (measured: 87% and
	# 91% of the cls and reg values on the grid exactly; the rest one step off)
	compare_quant "$T/qr16.onnx" "$T/qpred16.tns" "$T/qparams16.tns" 1
	[ "$(jq '.cls.equal_on_grid > 0.5 and .reg.equal_on_grid > 0.5' <<<"$output")" = true ]
	# the clips-only file TIDL takes: its steps are fine enough that not rounding stays
	# near one (measured 1.08)
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --bits 16 --onnx "$T/q16.onnx" \
		--prototxt "$T/q16.prototxt" >/dev/null
	compare_quant "$T/q16.onnx" "$T/qpred16.tns" "$T/qparams16.tns" 2
}

@test "opset 9 and old TIDL: Clip attributes, Upsample, one prototxt output" {
	run "$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --opset 9 --old-tidl \
		--onnx "$T/q9.onnx" --prototxt "$T/q9.prototxt"
	[ "$status" -eq 0 ]
	[[ "$output" == *"opset 9 (IR 4)"*"one output (old TIDL)"* ]]
	run "$PY" tests/onnx_check.py check "$T/q9.onnx" 9
	[ "$status" -eq 0 ]
	[[ "$output" == *'"Upsample"'* ]]
	[ "$(grep -c '^  output:' "$T/q9.prototxt")" -eq 1 ]
	compare_quant "$T/q9.onnx" "$D/qpred.tns" "$D/qparams.tns" 2
}

@test "odd feature sizes (80x80: the FPN upsamples 3x3 to 5x5): Resize by sizes; opset 9 refuses" {
	C=tests/fixtures/model/tiny.json
	"$BIN/forward" --config $C --init >"$T/p.tns"
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 2 |
		"$BIN/augment" --eval --size 80 --batch 2 >"$T/b.tns"
	"$BIN/forward" --config $C --weights "$T/p.tns" <"$T/b.tns" >"$T/pred.tns"
	"$BIN/tidl-pack" --config $C --weights "$T/p.tns" --size 80 --onnx "$T/m.onnx" --prototxt "$T/m.prototxt" \
		>/dev/null
	run "$PY" tests/onnx_check.py check "$T/m.onnx" 11
	[ "$status" -eq 0 ]
	run "$PY" tests/onnx_check.py compare "$T/m.onnx" --batches "$T/b.tns" --pred "$T/pred.tns"
	echo "$output"
	[ "$status" -eq 0 ]
	run "$PY" tests/prototxt_check.py "$T/m.prototxt" "$T/m.onnx"
	[ "$status" -eq 0 ]
	run "$BIN/tidl-pack" --config $C --weights "$T/p.tns" --size 80 --opset 9 --onnx "$T/m9.onnx"
	[ "$status" -eq 1 ]
	[[ "$output" == "tidl-pack: neck.top_down.2.upsample: opset 9: upsampling 3x3 to 5x5 is no integer factor"* ]]
}

@test "the other families export: ResNet-FPN and RegNet-FPN (bilinear Resize), SSD512 VGG (L2Norm, ceil-mode pools)" {
	for spec in tiny_resnet:64:MaxPool tiny_regnet:64:Resize tiny_vgg:100:ReduceL2; do
		IFS=: read -r name size op <<<"$spec"
		C=tests/fixtures/model/$name.json
		"$BIN/forward" --config $C --init >"$T/p.tns"
		"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 2 |
			"$BIN/augment" --eval --size $size --batch 2 >"$T/b.tns"
		"$BIN/forward" --config $C --weights "$T/p.tns" <"$T/b.tns" >"$T/pred.tns"
		"$BIN/tidl-pack" --config $C --weights "$T/p.tns" --size $size --onnx "$T/$name.onnx" \
			--prototxt "$T/$name.prototxt" >/dev/null
		run "$PY" tests/onnx_check.py check "$T/$name.onnx" 11
		[ "$status" -eq 0 ]
		[[ "$output" == *"\"$op\""* ]]
		run "$PY" tests/prototxt_check.py "$T/$name.prototxt" "$T/$name.onnx"
		echo "$name: $output"
		[ "$status" -eq 0 ]
		run "$PY" tests/onnx_check.py compare "$T/$name.onnx" --batches "$T/b.tns" --pred "$T/pred.tns"
		echo "$name: $output"
		[ "$status" -eq 0 ]
		[ "$(jq '.cls.max_rel <= 1e-4 and .reg.max_rel <= 1e-4' <<<"$output")" = true ]
		# opset 9 cannot say either: its Upsample "linear" is not torch's half-pixel bilinear,
		# its MaxPool has no ceil_mode
		run "$BIN/tidl-pack" --config $C --weights "$T/p.tns" --size $size --opset 9 --onnx "$T/m9.onnx"
		[ "$status" -eq 1 ]
		[[ "$output" == *"use opset 11"* ]]
	done
}

@test "prototxt: TIDL's SSD meta-architecture from the training anchors" {
	"$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --onnx "$T/m.onnx" --prototxt "$T/m.prototxt" \
		>/dev/null
	p=$T/m.prototxt
	[ "$(head -2 "$p")" = $'name: "ssd"\ncaffe_ssd {' ]
	[ "$(grep -c 'box_input: "reg_' "$p")" -eq 6 ]
	[ "$(grep -c 'class_input: "cls_' "$p")" -eq 6 ]
	[ "$(grep -c 'prior_box_param {' "$p")" -eq 6 ]
	[ "$(grep -c '^  output:' "$p")" -eq 2 ]
	grep -q '^  in_width: 96$' "$p"
	grep -q '^    num_classes: 4$' "$p"
	grep -q '^    background_label_id: 3$' "$p"
	[ "$(grep -A3 'nms_param {' "$p" | tr -d ' \n')" = "nms_param{nms_threshold:0.45top_k:200}" ]
	grep -q '^    keep_top_k: 200$' "$p"
	grep -q '^    share_location: true$' "$p"
	grep -q '^    code_type: CENTER_SIZE$' "$p"
	grep -q '^    confidence_threshold: 0.3$' "$p"
	grep -q '^  framework: "MMDetection"$' "$p"
	# mmdet's sizes at 96: level 0 (4%, 10%) of S, then 10% .. in steps of 20%
	[ "$(grep -A2 'prior_box_param' "$p" | grep -m2 -E 'min_size|max_size' | tr -d ' \n')" = "min_size:3.0max_size:9.0" ]
	# the first level has ratio 2 only, the second 2 and 3
	[ "$(awk '/prior_box_param/ { k++ } /aspect_ratio/ { a[k] = a[k] $2 } END { print a[1] "," a[2] }' "$p")" = "2,23" ]
}

@test "tidl-pack: bad inputs are clear errors" {
	# params of another model
	"$BIN/forward" --config tests/fixtures/model/tiny.json --init >"$T/p.tns"
	run "$BIN/tidl-pack" --config configs/ssd_mobilenet_fpn_bccd.json --weights "$T/p.tns" --onnx "$T/x.onnx"
	[ "$status" -eq 1 ]
	[[ "$output" == "tidl-pack: --weights $T/p.tns: "* ]]
	[ ! -e "$T/x.onnx" ]
	# a float checkpoint has no ranges
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --quant --onnx "$T/x.onnx"
	[ "$status" -eq 1 ]
	[[ "$output" == "tidl-pack: --quant: $D/float/latest.tns: no ranges record"* ]]
	run "$BIN/tidl-pack" --config $CFG --weights "$T/missing.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == "tidl-pack: --weights $T/missing.tns: "* ]]
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --onnx /nonexistent/m.onnx
	[ "$status" -eq 1 ]
	[[ "$output" == "tidl-pack: /nonexistent/m.onnx: No such file or directory" ]]
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --opset 10
	[ "$status" -eq 2 ]
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --ranges "$D/ranges.tns"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--ranges goes with --quant"* ]]
	run "$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --round
	[ "$status" -eq 2 ]
	run "$BIN/tidl-pack" --config $CFG
	[ "$status" -eq 2 ]
	run "$BIN/tidl-pack" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--quant"*"--opset"*"--old-tidl"* ]]
}

# make export-tidl is pipelines/export.sh with the make variables in its environment
@test "export-tidl: model.onnx, model.prototxt and the summary in the run directory" {
	cp -r "$D/float" "$T/run"
	RUN=$T/run run pipelines/export.sh $CFG
	echo "$output"
	[ "$status" -eq 0 ]
	[ -s "$T/run/model.onnx" ] && [ -s "$T/run/model.prototxt" ]
	[[ "$(cat "$T/run/export.txt")" == *"onnx: $T/run/model.onnx, opset 11"* ]]
	# what TIDL's compiler needs beside the files, the prototxt under its final name
	grep -qx '  object_detection:meta_arch_type: 3 (ONNX SSD)' "$T/run/export.txt"
	grep -qx "  object_detection:meta_layers_names_list: $T/run/model.prototxt" "$T/run/export.txt"
	grep -qx '  input_mean: 123.675 116.28 103.53 (the config.s mean)' "$T/run/export.txt"
	grep -q '^  input_scale: 0.0171247538 0.0175070028 0.0174291939 ' "$T/run/export.txt"
	grep -q '^  channels: RGB (reverse_channels: False), resize 96x96' "$T/run/export.txt"
	# quantised from a float checkpoint: no ranges yet is an error, make calibrate's are used
	RUN=$T/run QUANTIZE=1 run pipelines/export.sh $CFG
	[ "$status" -ne 0 ]
	[[ "$output" == *": no ranges record"* ]]
	cp "$D/ranges.tns" "$T/run/ranges.tns"
	RUN=$T/run QUANTIZE=1 OPSET=9 run pipelines/export.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$(cat "$T/run/export.txt")" == *"ranges $T/run/ranges.tns"*"opset 9"* ]]
	run "$PY" tests/prototxt_check.py "$T/run/model.prototxt" "$T/run/model.onnx"
	[ "$status" -eq 0 ]
	RUN=$T/run QUANTIZE=1 OLD_TIDL=1 run pipelines/export.sh $CFG
	[ "$status" -eq 0 ]
	run "$PY" tests/prototxt_check.py "$T/run/model.prototxt" "$T/run/model.onnx" --old
	[ "$status" -eq 0 ]
	# make calibrate's bias-calibrated ptq.tns (params + ranges) comes first, as for eval
	cp "$D/qat.tns" "$T/run/ptq.tns"
	RUN=$T/run QUANTIZE=1 run pipelines/export.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$(cat "$T/run/export.txt")" == *"weights $T/run/ptq.tns, quantised to 8 bits, ranges $T/run/ptq.tns"* ]]
	grep -qx '  tensor_bits: 8' "$T/run/export.txt"
	grep -q '^  advanced_options:quantization_scale_type: 1 ' "$T/run/export.txt"
}

@test "the ONNX is a complete detector: ONNX Runtime's dets and labels equal ssd-decode's (float and --round)" {
	# float, the config's settings (nms_pre 1000, score > 0.02, NMS 0.45, 200 an image)
	"$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --onnx "$T/m.onnx" --prototxt "$T/m.prototxt" \
		>"$T/summary.txt"
	grep -q "NonMaxSuppression iou 0.45, score > 0.02, max_per_img 200; 880 candidates" "$T/summary.txt"
	"$BIN/ssd-decode" --config $CFG <"$D/pred.tns" >"$T/dets.tns"
	compare_dets "$T/m.onnx" "$T/dets.tns"
	# boxes in float to 1e-3 px (measured 4e-5); in ssd-decode's order but among equal scores
	[ "$(jq '.count == 1600 and .max_box_diff_px < 1e-3 and .in_order >= 1590' <<<"$output")" = true ]
	# quantised: the --round file computes forward --quant's heads, so its detections are
	# ssd-decode's on forward --quant's
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --round --onnx "$T/qr.onnx" \
		--prototxt "$T/qr.prototxt" >/dev/null
	"$BIN/ssd-decode" --config $CFG <"$D/qpred.tns" >"$T/qdets.tns"
	compare_dets "$T/qr.onnx" "$T/qdets.tns"
	[ "$(jq '.count == 1600' <<<"$output")" = true ]
	# a per-level top-k that cuts (levels 0 and 1 have 576 and 216 anchors), a higher
	# threshold and a smaller cap, from the config
	derived_config pre '{"test": {"nms_pre": 100, "score_thr": 0.1, "max_per_img": 50}}'
	"$BIN/tidl-pack" --config "$T/pre.json" --weights "$D/float/latest.tns" --onnx "$T/pre.onnx" \
		--prototxt "$T/pre.prototxt" >"$T/summary.txt"
	# 100 + 100 + 54 + 24 + 6 + 4
	grep -q "nms_pre 100, .*score > 0.1, max_per_img 50; 288 candidates" "$T/summary.txt"
	"$BIN/ssd-decode" --config "$T/pre.json" <"$D/pred.tns" >"$T/pre.tns"
	compare_dets "$T/pre.onnx" "$T/pre.tns"
	[ "$(jq '.count > 0' <<<"$output")" = true ]
	# nothing above the threshold: K = 0, not an error
	derived_config none '{"test": {"score_thr": 1}}'
	"$BIN/tidl-pack" --config "$T/none.json" --weights "$D/float/latest.tns" --onnx "$T/none.onnx" \
		--prototxt "$T/none.prototxt" >/dev/null
	"$BIN/ssd-decode" --config "$T/none.json" <"$D/pred.tns" >"$T/none.tns"
	compare_dets "$T/none.onnx" "$T/none.tns"
	[ "$(jq '.count == 0' <<<"$output")" = true ]
}

@test "opset 9 (no NonMaxSuppression: candidates above the threshold, NMS finished outside) and old TIDL's one output" {
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --round --opset 9 --onnx "$T/q9.onnx" \
		--prototxt "$T/q9.prototxt" >"$T/summary.txt"
	grep -q "no NMS at opset 9" "$T/summary.txt"
	run "$PY" tests/onnx_check.py check "$T/q9.onnx" 9
	[ "$status" -eq 0 ]
	[[ "$output" != *NonMaxSuppression* && "$output" == *'"dets", "labels"]'* ]]
	"$BIN/ssd-decode" --config $CFG <"$D/qpred.tns" >"$T/qdets.tns"
	# the graph alone is not the detector: its candidates are many more than the dets
	run "$PY" tests/onnx_check.py dets "$T/q9.onnx" --batches "$D/batches.tns" --dets "$T/qdets.tns"
	[ "$status" -eq 1 ]
	compare_dets "$T/q9.onnx" "$T/qdets.tns" --nms-iou 0.45 --max-per-img 200
	# opset 9's TopK (k an attribute) with a cutting nms_pre
	derived_config pre '{"test": {"nms_pre": 100, "score_thr": 0.1, "max_per_img": 50}}'
	"$BIN/tidl-pack" --config "$T/pre.json" --weights "$D/float/latest.tns" --opset 9 --onnx "$T/pre9.onnx" \
		--prototxt "$T/pre9.prototxt" >/dev/null
	"$BIN/ssd-decode" --config "$T/pre.json" <"$D/pred.tns" >"$T/pre.tns"
	compare_dets "$T/pre9.onnx" "$T/pre.tns" --nms-iou 0.45 --max-per-img 50
	# --old-tidl: one output "detections" [1, K, 6], the same detections
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --round --old-tidl --onnx "$T/qo.onnx" \
		--prototxt "$T/qo.prototxt" >/dev/null
	compare_dets "$T/qo.onnx" "$T/qdets.tns"
	[ "$(jq -c '.ort_outputs' <<<"$output")" = '["detections"]' ]
}

@test "the detections check fails for a graph with other variances or other anchors" {
	"$BIN/ssd-decode" --config $CFG <"$D/pred.tns" >"$T/dets.tns"
	derived_config var '{"bbox_coder": {"stds": [0.1, 0.1, 0.1, 0.1]}}'
	derived_config anc '{"anchors": {"center_offset": 1}}'
	for c in var anc; do
		"$BIN/tidl-pack" --config "$T/$c.json" --weights "$D/float/latest.tns" --onnx "$T/$c.onnx" \
			--prototxt "$T/$c.prototxt" >/dev/null
		run "$PY" tests/onnx_check.py dets "$T/$c.onnx" --batches "$D/batches.tns" --dets "$T/dets.tns"
		echo "$c: $output"
		[ "$status" -eq 1 ]
		[[ "$output" == *'"equal": false'* ]]
	done
}

# tests/proto: our schema of TIDL's meta-architecture messages (protoc + python3-protobuf)
@test "every prototxt parses as TIDLMetaArch and names only tensors of its ONNX; old TIDL's against the older shape" {
	"$BIN/tidl-pack" --config $CFG --weights "$D/float/latest.tns" --onnx "$T/m.onnx" --prototxt "$T/m.prototxt" \
		>/dev/null
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --onnx "$T/q.onnx" --prototxt "$T/q.prototxt" \
		>/dev/null
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --opset 9 --onnx "$T/q9.onnx" \
		--prototxt "$T/q9.prototxt" >/dev/null
	for f in m q q9; do
		run "$PY" tests/prototxt_check.py "$T/$f.prototxt" "$T/$f.onnx"
		echo "$f: $output"
		[ "$status" -eq 0 ]
		[[ "$output" == *'"names_checked": 14, "outputs": {"dets": [1, "K", 5], "labels": [1, "K"]}'* ]]
	done
	"$BIN/tidl-pack" --config $CFG --weights "$D/qat.tns" --quant --opset 9 --old-tidl --onnx "$T/o.onnx" \
		--prototxt "$T/o.prototxt" >/dev/null
	run "$PY" tests/prototxt_check.py "$T/o.prototxt" "$T/o.onnx" --old
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *'"outputs": {"detections": [1, "K", 6]}'* ]]
	# the older shape has one optional output: the current prototxt does not parse with it
	run "$PY" tests/prototxt_check.py "$T/m.prototxt" "$T/m.onnx" --old
	[ "$status" -eq 1 ]
	[[ "$output" == *'should not have multiple "output" fields'* ]]
	# a field TIDL does not know, a name the graph lacks, heads that do not fit the priors
	sed 's/in_width/in_widht/' "$T/m.prototxt" >"$T/bad.prototxt"
	run "$PY" tests/prototxt_check.py "$T/bad.prototxt" "$T/m.onnx"
	[ "$status" -eq 1 ]
	[[ "$output" == *'no field named "in_widht"'* ]]
	sed 's/output: "dets"/output: "boxes"/' "$T/m.prototxt" >"$T/bad.prototxt"
	run "$PY" tests/prototxt_check.py "$T/bad.prototxt" "$T/m.onnx"
	[ "$status" -eq 1 ]
	[[ "$output" == *"output 'boxes' is no output of $T/m.onnx"* ]]
	run "$PY" tests/prototxt_check.py "$T/o.prototxt" "$T/m.onnx" --old
	[ "$status" -eq 1 ]
	[[ "$output" == *"output 'detections' is no output"* ]]
	sed '0,/aspect_ratio: 2/s//aspect_ratio: 2\n    aspect_ratio: 3/' "$T/m.prototxt" >"$T/bad.prototxt"
	run "$PY" tests/prototxt_check.py "$T/bad.prototxt" "$T/m.onnx"
	[ "$status" -eq 1 ]
	[[ "$output" == *"'reg_0' has 16 channels; level 0's 6 priors need 24"* ]]
}
