#!/usr/bin/env bash
# bench-loop: what the training loop's processes and pipes cost. The same batches go
#  (a) through bench/bench_train_step: the loop's work per batch in one process (forward,
#      loss and its gradient, backward, SGD step with BN statistics, new params into the
#      model; the same library calls as the tools, without the streams between them);
#  (b) through the tool loop, wired as pipelines/train.sh wires it:
#      cat batches | forward --train | loss | sgd-step, grads and params back on two FIFOs.
# A step's time is (a) what bench_train_step prints, (b) the time between two params
# records sent, from sgd-step's metrics.jsonl; the first WARMUP steps (planning, first
# touch of the buffers) are left out. Runs alternate a, b, a, b, ... (REPS each) so load
# from other jobs falls on both; a run's figure is BATCH / its median step time, and the
# table shows the medians over runs and the loop's overhead: time per image of (b) over (a).
# The losses of both must agree (same batches, same initial params): a check that both
# did the same work.
# Usage: BIN=bin BENCH=build/bench pipelines/bench-loop.sh [DATA [CLASSES]]
# Environment: CONFIG (configs/ssd_mobilenet_fpn_bccd.json), SIZES ("320 512"), BATCH (8),
# STEPS (14; 512: STEPS_512, 8), WARMUP (2), REPS (3), THREADS (forward's), TNS_LEVEL.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:-../shared/data/bccd} classes=${2:-configs/bccd.classes}
BENCH=${BENCH:-build/bench}
load_config "${CONFIG:-configs/ssd_mobilenet_fpn_bccd.json}"
sizes=${SIZES:-320 512} batch=${BATCH:-8} warmup=${WARMUP:-2} reps=${REPS:-3}
[ -x "$BENCH/bench_train_step" ] || make -s "$BENCH/bench_train_step" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/params" "$tmp/grad"
"$BIN/forward" --config "$cfg_file" --init --seed 1 >"$tmp/init.tns"

# steps_ips FILE: images/s at the median of the step times in FILE (one a line), warm-up left out.
steps_ips() {
	tail -n +$((warmup + 1)) "$1" | sort -g | awk -v b="$batch" '{ t[NR] = $1 } END { printf "%.3f", b / t[int((NR + 1) / 2)] }'
}

# in_process SIZE: run (a); step times to $tmp/a.steps, losses to $tmp/a.loss
in_process() {
	"$BENCH/bench_train_step" "$cfg_file" "$tmp/init.tns" "$tmp/batches.tns" "$warmup" >/dev/null 2>"$tmp/a.log" ||
		{ cat "$tmp/a.log" >&2; return 1; }
	sed -n 's/^step [0-9]*: \([0-9.]*\) s, loss \(.*\)/\1/p' "$tmp/a.log" >"$tmp/a.steps"
	sed -n 's/^step [0-9]*: .*, loss \(.*\)/\1/p' "$tmp/a.log" | awk '{ printf "%.5g\n", $1 }' >"$tmp/a.loss"
}

# tool_loop STEPS: run (b) as train.sh wires it; step times to $tmp/b.steps, losses to $tmp/b.loss
tool_loop() {
	rm -rf "$tmp/run"
	cat "$tmp/batches.tns" |
		"$BIN/forward" --config "$cfg_file" --train --weights "$tmp/params" --grad "$tmp/grad" \
			${THREADS:+--threads "$THREADS"} |
		"$BIN/loss" --config "$cfg_file" --grad "$tmp/grad" |
		"$BIN/sgd-step" --config "$cfg_file" --run "$tmp/run" --params "$tmp/params" --init "$tmp/init.tns" \
			--epochs 1 --iters-per-epoch "$1" --checkpoint-every 0 --log-every 0 --seed 1 2>"$tmp/b.log" ||
		{ cat "$tmp/b.log" >&2; return 1; }
	jq -r '.images / .images_per_s' "$tmp/run/metrics.jsonl" >"$tmp/b.steps"
	jq -r '.loss' "$tmp/run/metrics.jsonl" | awk '{ printf "%.5g\n", $1 }' >"$tmp/b.loss"
}

printf 'bench-loop: %s, batch %d, %d CPUs, TNS_LEVEL %s, %d runs of each, alternating\n' "$cfg_file" "$batch" \
	"$(nproc)" "${TNS_LEVEL:-default}" "$reps"
summary=()
for size in $sizes; do
	steps=${STEPS:-14}
	[ "$size" -ge 512 ] && steps=${STEPS_512:-8}
	"$BIN/voc-decode" "$data" --split trainval --classes "$classes" --limit $((steps * batch)) |
		"$BIN/augment" --train --config "$cfg_file" --size "$size" --batch "$batch" --seed 1 >"$tmp/batches.tns"
	printf '\nsize %d: %d steps, the first %d left out\n' "$size" "$steps" "$warmup"
	a=() b=()
	for r in $(seq "$reps"); do
		in_process
		a+=("$(steps_ips "$tmp/a.steps")")
		tool_loop "$steps"
		b+=("$(steps_ips "$tmp/b.steps")")
		same=yes
		cmp -s "$tmp/a.loss" "$tmp/b.loss" || same="NO (the two did not compute the same steps)"
		printf '  run %d: in-process %6.3f images/s, tool loop %6.3f images/s, same losses: %s\n' "$r" \
			"${a[-1]}" "${b[-1]}" "$same"
	done
	ma=$(printf '%s\n' "${a[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
	mb=$(printf '%s\n' "${b[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
	summary+=("$(awk -v s="$size" -v a="$ma" -v b="$mb" \
		'BEGIN { printf "%-6d %14.3f %14.3f %+9.1f%%", s, a, b, 100 * (a / b - 1) }')")
done
printf '\n%-6s %14s %14s %10s   (images/s, medians over runs)\n' size in-process "tool loop" overhead
printf '%s\n' "${summary[@]}"
