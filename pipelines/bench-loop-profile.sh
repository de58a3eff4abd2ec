#!/usr/bin/env bash
# bench-loop-profile: where every second of a training step goes, per process. The loop
# runs as pipelines/train.sh wires it, data stages included:
#   voc-decode --shuffle | augment --train | forward --train | loss | sgd-step
# (params and grads back on FIFOs, the loop's zstd level) for STEPS steps of BATCH images
# at SIZE, each process under /usr/bin/time (its wall time alive, user and system CPU
# time) and forward with --profile (its layers forward and backward, the rest). The
# table gives each process's CPU seconds per step and its share of the CPU the loop
# used, beside what the machine offered (cores x wall); forward's lines split its share.
# CPU time is what a process did whatever else ran on the machine; wall per step is the
# loop's pace, which a loaded machine slows.
# Usage: BIN=bin pipelines/bench-loop-profile.sh [DATA [CLASSES]]
# Environment: CONFIG (configs/ssd_mobilenet_fpn_bccd.json), SIZES ("320 512"), BATCH (8),
# STEPS (12), THREADS (forward's), TNS_LEVEL (the loop's, loop_level).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:-../shared/data/bccd} classes=${2:-configs/bccd.classes}
load_config "${CONFIG:-configs/ssd_mobilenet_fpn_bccd.json}"
batch=${BATCH:-8} steps=${STEPS:-12}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN/forward" --config "$cfg_file" --init --seed 1 >"$tmp/init.tns"
level=$(loop_level)
T() { /usr/bin/time -f '%e %U %S' -o "$tmp/time.$1" "${@:2}"; }

for size in ${SIZES:-320 512}; do
	rm -rf "$tmp/run" "$tmp/params" "$tmp/grad"
	mkfifo "$tmp/params" "$tmp/grad"
	t0=$(date +%s.%N)
	T voc-decode "$BIN/voc-decode" "$data" --split trainval --classes "$classes" --shuffle --seed 1 \
		--limit $((steps * batch)) |
		T augment "$BIN/augment" --train --config "$cfg_file" --batch "$batch" --seed 1 --size "$size" |
		TNS_LEVEL=$level T forward "$BIN/forward" --config "$cfg_file" --train --weights "$tmp/params" \
			--grad "$tmp/grad" --profile ${THREADS:+--threads "$THREADS"} 2>"$tmp/prof" |
		TNS_LEVEL=$level T loss "$BIN/loss" --config "$cfg_file" --grad "$tmp/grad" |
		TNS_LEVEL=$level T sgd-step "$BIN/sgd-step" --config "$cfg_file" --run "$tmp/run" --params "$tmp/params" \
			--init "$tmp/init.tns" --epochs 1 --iters-per-epoch "$steps" --checkpoint-every 0 --log-every 0 \
			--seed 1 2>"$tmp/sgd.log"
	t1=$(date +%s.%N)
	printf '%s, size %d, batch %d, %d steps (the first ones included): %.2f s wall, %.3f s a step, %.2f img/s, %d CPUs\n' \
		"$cfg_file" "$size" "$batch" "$steps" "$(echo "$t1 - $t0" | bc)" "$(echo "($t1 - $t0) / $steps" | bc -l)" \
		"$(echo "$steps * $batch / ($t1 - $t0)" | bc -l)" "$(nproc)"
	for st in voc-decode augment forward loss sgd-step; do
		printf '%s %s\n' "$st" "$(cat "$tmp/time.$st")"
	done | awk -v steps="$steps" -v wall="$(echo "$t1 - $t0" | bc)" -v cores="$(nproc)" -v prof="$tmp/prof" '
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
done
