#!/usr/bin/env bash
# demo: what `make demo` runs, told to a person: one line per stage with its time, the
# training's progress, then the float and 8-bit integer mAP side by side and where the
# files went. Each stage's whole output goes to RUN/logs/STAGE.log.
#
#   train (SSD-lite MobileNetV2-FPN from scratch, 320x320) -> eval (float mAP) ->
#   calibrate (8-bit ranges) -> eval on integers (forward --int8) -> TIDL export ->
#   detections drawn on the first 4 test images (RUN/detections/)
#
# usage: pipelines/demo.sh CONFIG
# environment (all optional): BIN, RUN (default runs/demo), EPOCHS (default 12),
# CALIB_ITERS (batches for the ranges, default 20), and what the stage scripts read.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
export BIN=${BIN:-bin} RUN=${RUN:-runs/demo}
load_config "${1:?usage: demo.sh CONFIG}"
logs=$run/logs
mkdir -p "$logs"
t_all=$(date +%s.%N)

# stage NAME SHOWN CMD...: runs CMD with its output in logs/NAME.log (SHOWN: an
# extended regex of the lines also shown, as progress), then one line with the time; on
# a failure the log's last lines and the exit.
stage() {
	local name=$1 shown=$2 t0 st=0
	shift 2
	printf '%-10s %s\n' "$name" "started (log: $logs/$name.log)" >&2
	t0=$(date +%s.%N)
	if [ -n "$shown" ]; then
		"$@" 2>&1 | tee "$logs/$name.log" | grep --line-buffered -E "$shown" | sed -u 's/^/           /' >&2 || st=${PIPESTATUS[0]}
	else
		"$@" >"$logs/$name.log" 2>&1 || st=$?
	fi
	if [ "$st" -ne 0 ]; then
		tail -n 15 "$logs/$name.log" >&2
		say "$name failed (exit $st); the whole log is $logs/$name.log"
		exit 1
	fi
	printf '%-10s done in %s s\n' "$name" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" >&2
}

stage train '^epoch [0-9]+ iter|resuming|already trained' env EPOCHS="${EPOCHS:-12}" "$here/train.sh" "$cfg_file"
stage eval '' "$here/eval.sh" "$cfg_file"
stage calibrate '' env ITERS="${CALIB_ITERS:-20}" BIAS_ITERS=0 "$here/calibrate.sh" "$cfg_file"
stage eval-int8 '' env QUANTIZE=1 INT8=1 "$here/eval.sh" "$cfg_file"
stage export '' env QUANTIZE=1 "$here/export.sh" "$cfg_file"
# the first test images as a user's own photos would come: a list of paths
head -n 4 "$data/ImageSets/Main/$(cfg .dataset.test_split test).txt" | sed "s|.*|$data/JPEGImages/&.jpg|" >"$logs/detect.list"
stage detect '' env IMAGES=- OUT="$run/detections" "$here/detect.sh" "$cfg_file" <"$logs/detect.list"

# the two tables as one: AP per class, float and 8-bit on integers
echo
jq -r -s '
	def f: . * 1000 | round / 1000 | tostring | if test("\\.") then . + "000" | .[:5] else . + ".000" end;
	(.[0].classes | map(.name | length) | max | if . < 9 then 9 else . end) as $w
	| def pad: . + (" " * ($w - length));
	("class" | pad) + "  gts   AP float  AP 8-bit (integers)",
	(range(.[0].classes | length) as $i | .[0].classes[$i] as $c
		| ($c.name | pad) + "  " + ($c.gts | tostring | . + (" " * (4 - length))) + "  " + ($c.ap | f)
		  + "     " + (.[1].classes[$i].ap | f)),
	("mAP" | pad) + "        " + (.[0].mAP | f) + "     " + (.[1].mAP | f)
' "$run/eval.json" "$run/eval_int8.json"
echo
secs=$(awk -v a="$t_all" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }')
echo "demo: done in $((secs / 60)) min $((secs % 60)) s; in $run:"
echo "  latest.tns                 the trained weights (epoch_N.tns: one per epoch)"
echo "  eval.txt, eval_int8.txt    the mAP tables (mmdet's), .json beside them"
echo "  ranges.tns, qparams.tns    the 8-bit activation ranges and integer parameters"
echo "  model.onnx, model.prototxt the TIDL export; export.txt says what is in it"
echo "  detections/                the boxes on 4 test images (.jpg) and detections.json"
echo "  logs/                      each stage's whole output"
