#!/usr/bin/env bash
# bench-loop: what the training loop's processes and pipes cost. The same batches go
#  (a) through bench/bench_train_step: the loop's work per batch in one process (forward,
#      loss and its gradient, backward, SGD step with BN statistics, new params into the
#      model; the same library calls as the tools, without the streams between them);
#  (b) through the tool loop, wired as pipelines/train.sh wires it:
#      cat batches | forward --train | loss | sgd-step, grads and params back on two FIFOs,
#      the three writing at the loop's zstd level (pipe_level in lib.sh).
# The two alternate step by step (bench_train_step relays the loop's params records from
# sgd-step to forward and runs its own step k while the loop waits for params k; the
# relay adds one pipe hop of ~1 ms to each loop step), so that the load of other jobs on
# the machine falls on both alike. PACED=0 alternates whole runs instead, the loop
# unchanged (its step time from sgd-step's metrics.jsonl): a, b, a, b, ...
# The first WARMUP steps (planning, first touch of the buffers) are left out; a run's
# figure is BATCH / its median step time, its overhead the median over its steps of
# (b's time / a's time - 1); the table shows the medians over REPS runs, and the median
# and quartiles of that ratio over the steps of all runs. The losses of
# both must agree (same batches, same initial params): both did the same work. Beside
# them, the stream work the loop adds to a step (its records encoded and decoded once, in
# memory; bench_train_step) and its share of the fastest in-process step.
# Then bench-loop-profile.sh: the loop with its data stages, per process, as a table.
# Usage: BIN=bin BENCH=build/bench pipelines/bench-loop.sh [DATA [CLASSES]]
# Environment: CONFIG (configs/ssd_mobilenet_fpn_bccd.json), SIZES ("320 512"), BATCH (8),
# STEPS (12; at 512 STEPS_512, 8), WARMUP (2), REPS (3), PACED (1), THREADS (forward's),
# TNS_LEVEL (the loop's, pipe_level).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:-../shared/data/bccd} classes=${2:-configs/bccd.classes}
BENCH=${BENCH:-build/bench}
load_config "${CONFIG:-configs/ssd_mobilenet_fpn_bccd.json}"
sizes=${SIZES:-320 512} batch=${BATCH:-8} warmup=${WARMUP:-2} reps=${REPS:-3} paced=${PACED:-1}
[ -x "$BENCH/bench_train_step" ] || make -s "$BENCH/bench_train_step" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/params" "$tmp/grad" "$tmp/relayed"
"$BIN/forward" --config "$cfg_file" --init --seed 1 >"$tmp/init.tns"
level=$(pipe_level)

# tool_loop STEPS WEIGHTS: the loop as train.sh wires it, forward reading params from
# WEIGHTS (the params FIFO, or the relay's); its log to $tmp/b.log
tool_loop() {
	rm -rf "$tmp/run"
	cat "$tmp/batches.tns" |
		TNS_LEVEL=$level "$BIN/forward" --config "$cfg_file" --train --weights "$2" --grad "$tmp/grad" \
			${THREADS:+--threads "$THREADS"} |
		TNS_LEVEL=$level "$BIN/loss" --config "$cfg_file" --grad "$tmp/grad" |
		TNS_LEVEL=$level "$BIN/sgd-step" --config "$cfg_file" --run "$tmp/run" --params "$tmp/params" \
			--init "$tmp/init.tns" --epochs 1 --iters-per-epoch "$1" --checkpoint-every 0 --log-every 0 \
			--seed 1 2>"$tmp/b.log"
}

# in_process [FROM TO]: bench_train_step (relaying FROM to TO); its output to $tmp/a.out,
# its step times to $tmp/a.steps (and the loop's to $tmp/b.steps), losses to $tmp/a.loss
in_process() {
	TNS_LEVEL=$level "$BENCH/bench_train_step" "$cfg_file" "$tmp/init.tns" "$tmp/batches.tns" "$warmup" "$@" \
		>"$tmp/a.out" 2>"$tmp/a.log" || { cat "$tmp/a.log" >&2; return 1; }
	sed -n 's/^step [0-9]*: \([0-9.]*\) s, .*/\1/p' "$tmp/a.log" >"$tmp/a.steps"
	sed -n 's/^loop step [0-9]*: \([0-9.]*\) s/\1/p' "$tmp/a.log" >"$tmp/b.steps"
	sed -n 's/^step [0-9]*: .*, loss \(.*\)/\1/p' "$tmp/a.log" | awk '{ printf "%.5g\n", $1 }' >"$tmp/a.loss"
}

# run STEPS: one run of both, paced or one after the other; step times in $tmp/{a,b}.steps
run() {
	if [ "$paced" = 1 ]; then
		tool_loop "$1" "$tmp/relayed" &
		local pid=$! f
		if ! in_process "$tmp/params" "$tmp/relayed"; then
			# a stage still blocked opening a FIFO gets a peer that goes away: EOF or EPIPE
			for f in "$tmp/params" "$tmp/relayed" "$tmp/grad"; do
				exec 3<>"$f" 3>&-
			done
			wait "$pid" || true
			return 1
		fi
		wait "$pid" || { cat "$tmp/b.log" >&2; return 1; }
	else
		in_process
		tool_loop "$1" "$tmp/params" || { cat "$tmp/b.log" >&2; return 1; }
		jq -r '.images / .images_per_s' "$tmp/run/metrics.jsonl" >"$tmp/b.steps"
	fi
	jq -r '.loss' "$tmp/run/metrics.jsonl" | awk '{ printf "%.5g\n", $1 }' >"$tmp/b.loss"
}

# median: the median of the numbers on stdin (the lower middle one for an even count)
median() {
	sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# ips FILE: images/s at the median of the step times in FILE, warm-up left out
ips() {
	tail -n +$((warmup + 1)) "$1" | median | awk -v n="$batch" '{ printf "%.3f", n / $1 }'
}

# ratios: b's time / a's time - 1 of each step, in percent, warm-up left out
ratios() {
	paste "$tmp/a.steps" "$tmp/b.steps" | tail -n +$((warmup + 1)) | awk '{ print 100 * ($2 / $1 - 1) }'
}

# quartiles: the 1st and 3rd quartiles of the numbers on stdin, "q1..q3"
quartiles() {
	sort -g | awk '{ v[NR] = $1 } END { printf "%+.1f..%+.1f%%", v[int((NR + 3) / 4)], v[int((3 * NR + 3) / 4)] }'
}

printf 'bench-loop: %s, batch %d, %d CPUs, the loop'"'"'s streams at zstd level %s, %d runs, alternating %s\n' \
	"$cfg_file" "$batch" "$(nproc)" "$level" "$reps" "$([ "$paced" = 1 ] && echo "every step" || echo runs)"
summary=()
for size in $sizes; do
	steps=${STEPS:-12}
	[ "$size" -ge 512 ] && steps=${STEPS_512:-8}
	"$BIN/voc-decode" "$data" --split trainval --classes "$classes" --limit $((steps * batch)) |
		"$BIN/augment" --train --config "$cfg_file" --size "$size" --batch "$batch" --seed 1 >"$tmp/batches.tns"
	printf '\nsize %d: %d steps, the first %d left out\n' "$size" "$steps" "$warmup"
	a=() b=() w=()
	: >"$tmp/a.all"
	: >"$tmp/o.all"
	for r in $(seq "$reps"); do
		run "$steps"
		a+=("$(ips "$tmp/a.steps")") b+=("$(ips "$tmp/b.steps")")
		tail -n +$((warmup + 1)) "$tmp/a.steps" >>"$tmp/a.all"
		ratios >>"$tmp/o.all"
		w+=("$(sed -n 's/^stream work per step: .* ms at level 1, \([0-9.]*\) ms at level .*/\1/p' "$tmp/a.out")")
		same=yes
		cmp -s "$tmp/a.loss" "$tmp/b.loss" || same="NO (the two did not compute the same steps)"
		printf '  run %d: in-process %6.3f images/s, tool loop %6.3f images/s, overhead %+6.1f%%, same losses: %s\n' \
			"$r" "${a[-1]}" "${b[-1]}" "$(ratios | median)" "$same"
	done
	sed 's/^/  /' "$tmp/a.out" | tail -n 1
	mw=$(printf '%s\n' "${w[@]}" | median) fastest=$(sort -g "$tmp/a.all" | head -n 1)
	summary+=("$(printf '%-6d %12.3f %12.3f %+9.1f%% %16s %10.1f ms (%.1f%%)' "$size" \
		"$(printf '%s\n' "${a[@]}" | median)" "$(printf '%s\n' "${b[@]}" | median)" "$(median <"$tmp/o.all")" \
		"$(quartiles <"$tmp/o.all")" "$mw" "$(awk -v w="$mw" -v t="$fastest" 'BEGIN { print w / 10 / t }')")")
done
printf '\n%-6s %12s %12s %10s %16s %21s\n' size "in-process" "tool loop" overhead "(quartiles)" "stream work"
printf '%s\n' "${summary[@]}"
printf '(images/s: medians over the runs; overhead: median and quartiles over all steps of b'"'"'s time / a'"'"'s\n'
printf 'time - 1; stream work: the loop'"'"'s records encoded and decoded once per step at level %s, in memory,\n' \
	"$level"
printf 'and its share of the fastest in-process step)\n'

# Where every second of a step goes, per process, the data stages included
echo
"$(dirname "$0")/bench-loop-profile.sh" "$data" "$classes"
