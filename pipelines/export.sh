#!/usr/bin/env bash
# export: a run's model for TI's TIDL (docs/export.md):
#
#   tidl-pack --config CONFIG --weights CKPT [--quant --ranges R] --onnx OUT/model.onnx \
#             --prototxt OUT/model.prototxt > OUT/export.txt
#
# usage: pipelines/export.sh CONFIG
# environment (all optional): BIN, RUN (default runs/<config name>), CKPT (default
# RUN/latest.tns; with QUANTIZE=1 (or true/yes/on, or the config's "quantize") RUN/ptq.tns when make calibrate made one: its
# bias-calibrated params and ranges), QUANTIZE=1 (the quantised model: ranges from
# RANGES, else the checkpoint's own (QAT, ptq.tns), else RUN/ranges.tns), BITS (8), WBITS (weight bits, default BITS), PER_CHANNEL_DW=1, OPSET (11, or
# 9 for older TIDL), OLD_TIDL=1 (one prototxt output), SIZE, OUT (default RUN).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
load_config "${1:?usage: export.sh CONFIG}"
ckpt=$(run_checkpoint)
out=${OUT:-$run}
[ -f "$ckpt" ] || { say "$ckpt: no such checkpoint (train first, or set CKPT)"; exit 1; }
quant=()
if [ "$quantize" = 1 ]; then
	quant=(--quant --bits "${BITS:-8}" ${WBITS:+--weight-bits "$WBITS"} "${per_channel_dw[@]}")
	if [ -n "${RANGES:-}" ]; then
		quant+=(--ranges "$RANGES")
	elif ! "$BIN/tns" ls "$ckpt" | awk '$2 == "ranges" { f = 1 } END { exit !f }' && [ -f "$run/ranges.tns" ]; then
		quant+=(--ranges "$run/ranges.tns") # a float checkpoint: PTQ ranges of make calibrate
	fi
fi
old_tidl=$(bool OLD_TIDL)
if [ "$old_tidl" = 1 ]; then old_tidl=(--old-tidl); else old_tidl=(); fi
mkdir -p "$out"
"$BIN/tidl-pack" --config "$cfg_file" --weights "$ckpt" "${quant[@]}" --opset "${OPSET:-11}" \
	"${old_tidl[@]}" ${SIZE:+--size "$SIZE"} --onnx "$out/model.onnx.tmp" \
	--prototxt "$out/model.prototxt.tmp" >"$out/export.txt.tmp" || {
	rm -f "$out"/model.onnx.tmp "$out"/model.prototxt.tmp "$out"/export.txt.tmp
	exit 1
}
sed -i "s|$out/model.onnx.tmp|$out/model.onnx|; s|$out/model.prototxt.tmp|$out/model.prototxt|" "$out/export.txt.tmp"
for f in model.onnx model.prototxt export.txt; do mv "$out/$f.tmp" "$out/$f"; done
say "wrote $out/model.onnx, $out/model.prototxt and $out/export.txt"
cat "$out/export.txt"
