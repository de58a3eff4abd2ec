#!/usr/bin/env bash
# bench-model: images/s of `forward` (inference at batch 1 and 8, train step at batch 8)
# at 512 and 320, and of `forward --int8` (the 8-bit model on integers, ranges
# calibrated on the same batches), beside PyTorch on the same model (tests/bench_model_torch.py, 2 threads,
# NCHW and channels_last), in the same run, with the ratios to torch's best layout.
# Our figures are the tool's wall time over BATCHES batches, and for inference over at
# least IMAGES images (40: whole batches; stream decode/encode and the first batch's
# allocation included), and the compute time from --profile.
# Usage: BIN=bin pipelines/bench-model.sh [CONFIG] [DATA] [CLASSES]
# (make bench-model runs it for each of BENCH_MODELS, the seed table's four rows.)
# CASES: which of ours, as mode:batch:size words (default all six below, then ONNX
# Runtime at batch 1); TORCH=0 skips PyTorch's side (its cases are the float ones,
# whatever CASES says). Mode ort: our own export of the float model (tidl-pack) in
# onnxruntime-node (bench/ort_bench.js: THREADS intra-op threads, graph optimisation on,
# exported with --heads-only), whole process over the same images, session start included;
# skipped with a note when node or build/ort is missing.
# Each figure is also given as a fraction of the machine's fp32 FMA peak, measured in
# the same run (bench_layers peak, THREADS threads): GMACs (forward --summary) x 2 x
# images/s over the peak's GFLOP/s. BENCH: bench_layers' directory.
set -euo pipefail
cfg=${1:-configs/ssd_mobilenet_fpn.json} data=${2:-../shared/data/bccd} classes=${3:-configs/bccd.classes}
# forward's batches and preds at the level eval.sh's and detect.sh's pipes carry them
# (pipe_level in lib.sh: zstd -1; ORT's side reads raw floats); our threads sleep while
# they wait, as in every pipeline (lib.sh), while torch and ORT run as their users get
# them: their threads spin between ops (torch's libgomp default, ORT's allow_spinning)
. "$(dirname "$0")/lib.sh"
export TNS_LEVEL=$(pipe_level)
BIN=${BIN:-bin} BATCHES=${BATCHES:-3} IMAGES=${IMAGES:-40} THREADS=${THREADS:-2} PY=${PY:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN/forward" --config "$cfg" --init --seed 1 >"$tmp/params.tns"
printf 'forward vs torch, %s, %d threads, %d CPUs, %d batches per case (inference: at least %d images), ours OMP_WAIT_POLICY %s\n' \
	"$cfg" "$THREADS" "$(nproc)" "$BATCHES" "$IMAGES" "$OMP_WAIT_POLICY"
peak=0
if [ -x "${BENCH:-build/bench}/bench_layers" ]; then
	peak=$(OMP_NUM_THREADS=$THREADS "${BENCH:-build/bench}/bench_layers" -t 1 peak | sed -n 's/^fma peak: \([0-9.]*\).*/\1/p')
	printf 'fp32 FMA peak now, %d threads: %s GFLOP/s\n' "$THREADS" "$peak"
fi
echo

results=$tmp/results
: >"$results"
# case: mode batch size
run_case() {
	local mode=$1 b=$2 s=$3 n=$(($2 * BATCHES))
	# inference over at least IMAGES images (whole batches), as a user's run over a folder
	[ "$mode" = train ] || [ "$n" -ge "$IMAGES" ] || n=$(((IMAGES + b - 1) / b * b))
	"$BIN/voc-decode" "$data" --split trainval --classes "$classes" --limit "$n" \
		| "$BIN/augment" --eval --size "$s" --batch "$b" >"$tmp/batch.tns"
	local args=(--config "$cfg" --threads "$THREADS" --profile)
	local gmacs
	gmacs=$("$BIN/forward" --config "$cfg" --summary --size "$s" | awk '$1 == "total" { print $NF }')
	if [ "$mode" = ort ]; then
		run_ort "$b" "$s" "$n" "$gmacs"
		return 0
	fi
	if [ "$mode" = train ]; then
		for _ in $(seq "$BATCHES"); do cat "$tmp/params.tns"; done >"$tmp/weights.tns"
		local A K
		read -r A K < <("$BIN/forward" --config "$cfg" --summary --size "$s" |
			sed -n 's/^anchors \([0-9]*\): cls \[N,[0-9]*,\([0-9]*\)\].*/\1 \2/p')
		"$PY" - "$tmp/grad.tns" "$b" "$A" "$K" "$BATCHES" <<-'EOF'
		import sys, numpy as np
		sys.path.insert(0, "tests")
		import tnsfile
		path, b, A, K, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
		g = ("grad", {"cls": np.full((b, A, K), 1e-3, np.float32), "reg": np.full((b, A, 4), 1e-3, np.float32)}, {})
		tnsfile.write(path, [g] * k, level=1)
		EOF
		args+=(--weights "$tmp/weights.tns" --train --grad "$tmp/grad.tns")
	elif [ "$mode" = int8 ]; then
		"$BIN/forward" --config "$cfg" --weights "$tmp/params.tns" --stats <"$tmp/batch.tns" |
			"$BIN/calib-ranges" >"$tmp/ranges.tns"
		args+=(--weights "$tmp/params.tns" --int8 --ranges "$tmp/ranges.tns")
		# a model with layers the integer path lacks: say which, and go on
		if ! "$BIN/forward" "${args[@]}" <"$tmp/batch.tns" >/dev/null 2>"$tmp/prof"; then
			printf 'ours  %-5s size %3d batch %d: n/a (%s)\n' "$mode" "$s" "$b" "$(tail -1 "$tmp/prof")" | tee -a "$results"
			return 0
		fi
	else
		args+=(--weights "$tmp/params.tns")
	fi
	local t0 t1
	t0=$(date +%s.%N)
	"$BIN/forward" "${args[@]}" <"$tmp/batch.tns" >/dev/null 2>"$tmp/prof"
	t1=$(date +%s.%N)
	awk -v m="$mode" -v b="$b" -v s="$s" -v n="$n" -v t0="$t0" -v t1="$t1" -v g="$gmacs" -v peak="$peak" '
		/^  total/ { c = $2 + $3 } /peak RSS/ { rss = $3 }
		END { w = n / (t1 - t0); f = m == "train" ? 3 : 1
		      printf "ours  %-5s size %3d batch %d: %6.2f img/s wall, %6.2f img/s compute, peak RSS %s MiB", m, s, b, w, n / c, rss
		      if (peak > 0) printf ", %4.1f%% of FMA peak", 100 * 2 * f * g * w / peak
		      printf "\n" }' "$tmp/prof" | tee -a "$results"
	[ -n "${PROFILE:-}" ] && sed 's/^/    /' "$tmp/prof"
	return 0
}
# ONNX Runtime on the images of the same case (batch 1: the export's input is [1,3,S,S])
run_ort() {
	local b=$1 s=$2 n=$3 gmacs=$4
	local ortdir=${ORT_DIR:-build/ort}
	if [ "$b" != 1 ] || ! command -v node >/dev/null || [ ! -d "$ortdir/node_modules/onnxruntime-node" ]; then
		printf 'ort   infer size %3d batch %d: n/a (batch 1 only; needs node and %s)\n' "$s" "$b" "$ortdir" | tee -a "$results"
		return 0
	fi
	# the network alone, as forward runs it: ORT runs every node of a graph, fetched or not
	"$BIN/tidl-pack" --config "$cfg" --weights "$tmp/params.tns" --size "$s" --onnx "$tmp/model.onnx" \
		--prototxt "$tmp/model.prototxt" --heads-only >/dev/null
	"$PY" - "$tmp/batch.tns" "$tmp/images.f32" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import tnsfile
	with open(sys.argv[2], "wb") as f:
	    for kind, tensors, _ in tnsfile.read(sys.argv[1]):
	        if kind == "batch":
	            f.write(tensors["image"].astype("<f4").tobytes())
	EOF
	local t0 t1
	t0=$(date +%s.%N)
	env -u OMP_WAIT_POLICY node bench/ort_bench.js "$tmp/model.onnx" "$tmp/images.f32" "$n" "$s" "$THREADS" >"$tmp/ort"
	t1=$(date +%s.%N)
	awk -v s="$s" -v n="$n" -v t0="$t0" -v t1="$t1" -v g="$gmacs" -v peak="$peak" '
		{ runs = $8 }
		END { w = n / (t1 - t0)
		      printf "ort   infer size %3d batch 1: %6.2f img/s wall, %6.2f img/s compute", s, w, n / runs
		      if (peak > 0) printf ", %4.1f%% of FMA peak", 100 * 2 * g * w / peak
		      printf "\n" }' "$tmp/ort" | tee -a "$results"
}

for c in ${CASES:-infer:1:512 infer:8:512 int8:1:512 int8:8:512 train:8:512 train:8:320 ort:1:512 infer:1:320 ort:1:320}; do
	IFS=: read -r mode b s <<<"$c"
	case "$mode:$b:$s" in
	infer:[0-9]*:[0-9]* | int8:[0-9]*:[0-9]* | train:[0-9]*:[0-9]* | ort:[0-9]*:[0-9]*) run_case "$mode" "$b" "$s" ;;
	*) echo "bench-model: case $c: not mode:batch:size (mode infer, int8, train or ort)" >&2; exit 2 ;;
	esac
done
echo
if [ "${TORCH:-1}" = 0 ]; then
	echo "(TORCH=0: PyTorch side skipped)"
elif "$PY" -c 'import torch' 2>/dev/null; then
	env -u OMP_WAIT_POLICY "$PY" tests/bench_model_torch.py "$cfg" --threads "$THREADS" --iters "$BATCHES" | tee -a "$results"
else
	echo "(no torch: PyTorch side skipped)"
fi
echo
awk '
	/^ours/ && $8 == "img/s" { key = $2 " " $4 " " $6; ours[key] = $7 + 0; comp[key] = $10 + 0; order[++n] = key }
	/^torch/ { key = $2 " " $5 " " $7; if ($8 + 0 > best[key]) { best[key] = $8 + 0; lay[key] = $3 } }
	/^ort/ && $8 == "img/s" { ort[$4 " " $6] = $7 + 0 }
	END { for (i = 1; i <= n; i++) { k = order[i]; t = k; sub(/^int8/, "infer", t)
	        split(k, kk, " "); ok = kk[2] " " kk[3]
	        if (ort[ok]) printf "%-22s ours/ort %.2fx wall\n", k, ours[k] / ort[ok]
	        if (best[t]) printf "%-22s ours/torch(%s) %.2fx wall, %.2fx compute\n", k, lay[t], ours[k] / best[t], comp[k] / best[t]
	        if (k != t && ours[t]) printf "%-22s int8/float (ours) %.2fx wall, %.2fx compute\n", k, ours[k] / ours[t], comp[k] / comp[t] } }' "$results"
