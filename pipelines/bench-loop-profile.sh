#!/usr/bin/env bash
# bench-loop-profile: what a user waits for in `make train`, and where every second of a
# step goes, per process, beside PyTorch's training step in the same run.
# Each case runs the loop as pipelines/train.sh wires it, data stages included:
#   voc-decode --shuffle | augment --train | forward --train | loss | sgd-step
# (params and grads back on FIFOs, the loop's zstd level) for STEPS steps of BATCH images,
# each process under /usr/bin/time (its wall time alive, user and system CPU time) and
# forward with --profile (its layers forward and backward, the rest). A case is
# CONFIG:SIZE or CONFIG:SIZE:qat (quantisation-aware: forward --quant --stats, sgd-step
# --quant owning the ranges, calibrated first on the same batches from the initial params).
# Per case: the whole process's wall (start, planning, first touch, every stage) and the
# steady rate (the steps after the first, from sgd-step's metrics.jsonl), then the
# per-process table: CPU seconds per step and share of the CPU the loop used, beside what
# the machine offered (cores x wall); forward's lines split its share.
# At the end PyTorch's training step (tests/bench_model_torch.py: forward + backward on
# synthetic input, no data loading, no loss, no optimizer step; best of NCHW and
# channels_last, THREADS threads) on the same configs and sizes, and the ratios; each
# rate also as a share of the fp32 FMA peak measured now (bench_layers peak).
# Usage: BIN=bin pipelines/bench-loop-profile.sh [DATA [CLASSES]]
# Environment: CASES (default below), BATCH (8), STEPS (25: 24 after the first), THREADS
# (forward's and torch's, 2), TORCH=0 skips PyTorch, TORCH_ITERS (3), BENCH (bench_layers'
# directory), TNS_LEVEL (the loop's, pipe_level).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:-../shared/data/bccd} classes=${2:-configs/bccd.classes}
batch=${BATCH:-8} steps=${STEPS:-25} threads=${THREADS:-2} PY=${PY:-/usr/bin/python3}
cases=${CASES:-configs/ssd_mobilenet_fpn_bccd.json:320 configs/ssd_mobilenet_fpn_bccd.json:512
configs/ssd_mobilenet_fpn_bccd.json:320:qat configs/ssd_mobilenet_fpn_bccd.json:512:qat
configs/ssd_regnet_fpn_bccd.json:320}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
level=$(pipe_level)
T() { /usr/bin/time -f '%e %U %S' -o "$tmp/time.$1" "${@:2}"; }

peak=0
if [ -x "${BENCH:-build/bench}/bench_layers" ]; then
	peak=$(OMP_NUM_THREADS=$threads "${BENCH:-build/bench}/bench_layers" -t 1 peak |
		sed -n 's/^fma peak: \([0-9.]*\).*/\1/p')
fi
printf 'bench-loop-profile: batch %d, %d steps, %d threads, %d CPUs, fp32 FMA peak now %s GFLOP/s\n\n' \
	"$batch" "$steps" "$threads" "$(nproc)" "$peak"
summary=$tmp/summary
: >"$summary"

# loop CONFIG SIZE [qat]: one run of the loop; its table on stdout, a summary line to $summary
loop() {
	local cfg=$1 size=$2 mode=${3:-float}
	load_config "$cfg"
	rm -rf "$tmp/run" "$tmp/params" "$tmp/grad"
	mkfifo "$tmp/params" "$tmp/grad"
	"$BIN/forward" --config "$cfg_file" --init --seed 1 >"$tmp/init.tns"
	local fq=() sq=()
	if [ "$mode" = qat ]; then
		"$BIN/voc-decode" "$data" --split trainval --classes "$classes" --limit $((4 * batch)) |
			"$BIN/augment" --eval --config "$cfg_file" --size "$size" --batch "$batch" |
			"$BIN/forward" --config "$cfg_file" --weights "$tmp/init.tns" --stats |
			"$BIN/calib-ranges" >"$tmp/ranges.tns"
		fq=(--quant --stats) sq=(--quant --ranges "$tmp/ranges.tns")
	fi
	local t0 t1
	t0=$(date +%s.%N)
	T voc-decode "$BIN/voc-decode" "$data" --split trainval --classes "$classes" --shuffle --seed 1 \
		--limit $((steps * batch)) |
		T augment "$BIN/augment" --train --config "$cfg_file" --batch "$batch" --seed 1 --size "$size" |
		TNS_LEVEL=$level T forward "$BIN/forward" --config "$cfg_file" --train --weights "$tmp/params" \
			--grad "$tmp/grad" --profile --threads "$threads" "${fq[@]}" 2>"$tmp/prof" |
		TNS_LEVEL=$level T loss "$BIN/loss" --config "$cfg_file" --grad "$tmp/grad" |
		TNS_LEVEL=$level T sgd-step "$BIN/sgd-step" --config "$cfg_file" --run "$tmp/run" --params "$tmp/params" \
			--init "$tmp/init.tns" "${sq[@]}" --epochs 1 --iters-per-epoch "$steps" --checkpoint-every 0 \
			--log-every 0 --seed 1 2>"$tmp/sgd.log"
	t1=$(date +%s.%N)
	local wall steady gmacs
	wall=$(echo "$t1 - $t0" | bc)
	# the steps after the first: their images over their summed step times
	steady=$(jq -rs '.[1:] | (map(.images) | add) / (map(.images / .images_per_s) | add)' "$tmp/run/metrics.jsonl")
	gmacs=$("$BIN/forward" --config "$cfg_file" --summary --size "$size" | awk '$1 == "total" { print $NF }')
	printf '%s %s %s %s %s %s\n' "$name" "$size" "$mode" "$(echo "$steps * $batch / $wall" | bc -l)" "$steady" \
		"$gmacs" >>"$summary"
	printf '%s, size %d, %s, batch %d, %d steps: %.2f s wall, %.2f img/s whole process, %.2f img/s after the first step\n' \
		"$cfg_file" "$size" "$mode" "$batch" "$steps" "$wall" "$(echo "$steps * $batch / $wall" | bc -l)" "$steady"
	for st in voc-decode augment forward loss sgd-step; do
		printf '%s %s\n' "$st" "$(cat "$tmp/time.$st")"
	done | awk -v steps="$steps" -v wall="$wall" -v cores="$(nproc)" -v prof="$tmp/prof" '
		{ name[NR] = $1; alive[NR] = $2; cpu[NR] = $3 + $4; total += $3 + $4 }
		END {
			printf "  %-28s %9s %9s %7s %9s\n", "process", "cpu s", "s/step", "share", "alive s"
			for (i = 1; i <= NR; i++) {
				printf "  %-28s %9.2f %9.3f %6.1f%% %9.2f\n", name[i], cpu[i], cpu[i] / steps, 100 * cpu[i] / total, alive[i]
				if (name[i] != "forward")
					continue
				# forward --profile: layer seconds (wall, its threads together) and the rest
				while ((getline line < prof) > 0) {
					n = split(line, f, " ")
					if (f[1] == "total") { lf = f[2]; lb = f[3] }
					if (line ~ /outside the layers/) { ps = f[6]; pl = f[9]; rest = f[13] }
				}
				printf "  %-28s %9.2f %9.3f\n", "  layers forward (wall)", lf, lf / steps
				printf "  %-28s %9.2f %9.3f\n", "  layers backward (wall)", lb, lb / steps
				printf "  %-28s %9.2f %9.3f\n", "  params stream (wall)", ps, ps / steps
				printf "  %-28s %9.2f %9.3f\n", "  planning (wall)", pl, pl / steps
				printf "  %-28s %9.2f %9.3f\n", "  the rest (wall)", rest, rest / steps
			}
			printf "  %-28s %9.2f %9.3f %6.1f%% of %.2f s (%d cores x wall)\n", "all processes", total, total / steps,
				100 * total / (cores * wall), cores * wall, cores
		}'
	echo "  forward --profile:"
	sed 's/^/    /' "$tmp/prof"
	echo
}

for c in $cases; do
	IFS=: read -r cfg size mode <<<"$c"
	loop "$cfg" "$size" "${mode:-float}"
done

# PyTorch's training step on each config at its sizes
torch=$tmp/torch
echo "#" >"$torch" # never empty: awk tells its two files apart by FNR == NR
if [ "${TORCH:-1}" = 0 ]; then
	echo "(TORCH=0: PyTorch side skipped)"
elif "$PY" -c 'import torch' 2>/dev/null; then
	for cfg in $(printf '%s\n' $cases | cut -d: -f1 | sort -u); do
		sizes=$(printf '%s\n' $cases | awk -F: -v c="$cfg" '$1 == c { print $2 }' | sort -un | paste -sd,)
		load_config "$cfg"
		printf '%s\n' "$CFG_JSON" >"$tmp/config.json" # resolved: torch's model reads the model keys
		# torch as its users run it: libgomp's default wait (spinning), not the pipelines' passive
		env -u OMP_WAIT_POLICY "$PY" tests/bench_model_torch.py "$tmp/config.json" --cases train$batch --sizes "$sizes" --threads "$threads" \
			--iters "${TORCH_ITERS:-3}" | sed "s/^torch /torch $name /" | tee -a "$torch"
	done
else
	echo "(no torch: PyTorch side skipped)"
fi
echo
# summary: name size mode whole steady gmacs; torch: torch name train layout size S batch B: X img/s ...
awk -v peak="$peak" '
	FNR == NR { if ($9 + 0 > best[$2 " " $6]) best[$2 " " $6] = $9 + 0; next }
	{ k = $1 " " $2; if ($3 == "float") fl[k] = $5
	  row[++n] = $0 }
	END {
		printf "%-22s %5s %-5s %10s %10s %10s %12s %12s %9s\n", "loop", "size", "mode", "whole", "steady", "torch",
			"steady/torch", "whole/torch", "FMA peak"
		for (i = 1; i <= n; i++) {
			split(row[i], f, " "); k = f[1] " " f[2]; t = best[k]
			printf "%-22s %5d %-5s %10.2f %10.2f %10s %12s %12s %8.1f%%\n", f[1], f[2], f[3], f[4], f[5],
				t ? sprintf("%.2f", t) : "-", t ? sprintf("%.2fx", f[5] / t) : "-", t ? sprintf("%.2fx", f[4] / t) : "-",
				(peak > 0 ? 100 * 2 * 3 * f[6] * f[5] / peak : 0)
		}
		for (i = 1; i <= n; i++) {
			split(row[i], f, " "); k = f[1] " " f[2]
			if (f[3] == "qat" && fl[k])
				printf "QAT step / float step, %s %d: %.2fx (steady rates %.2f / %.2f img/s)\n", f[1], f[2],
					fl[k] / f[5], fl[k], f[5]
		}
		print "(img/s; whole: steps x batch / the whole process wall; steady: the steps after the first;"
		print " torch: its best layout, its threads spinning as by default, a train step of forward + backward"
		print " on synthetic input; FMA peak: the steady rate x 3 x the forward MACs x 2 over the fp32 FMA peak)"
	}' "$torch" "$summary"
