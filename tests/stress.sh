#!/usr/bin/env bash
# make stress: a crash storm. Trains the tiny BCCD pipeline once uninterrupted, then
# again under STRESS_KILLS (50) SIGKILLs at random moments, resuming with the same
# command after each: of the whole process group of the driver (as `setsid make train`
# then `kill -9 -- -PGID`), of the driver alone, or of one stage. After each kill:
#  - no process of that run is left within 10 s,
#  - no FIFO directory within 3 s more, no temp file in the run directory,
#  - every checkpoint on disk loads (tns ls: frames, checksums, records),
#  - metrics.jsonl parses line by line.
# At the end the storm's final weights must equal the uninterrupted run's bit for bit
# (and its metrics, timing aside). Prints a line per kill and a summary; exit 1 if any
# check failed. Environment: BIN, STRESS_KILLS (50), STRESS_EPOCHS (8), STRESS_SEED
# (the kill schedule's; default: random, printed), STRESS_MAX_DELAY (seconds between a
# start and its kill, at most; 6), STRESS_DIR (build/stress), THREADS (2).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${BIN:=bin}"
export BIN THREADS=${THREADS:-2}
kills=${STRESS_KILLS:-50}
epochs=${STRESS_EPOCHS:-8}
max_delay=${STRESS_MAX_DELAY:-6}
seed=${STRESS_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed
cfg=tests/fixtures/pipeline/tiny_bccd.json
work=$(mkdir -p "${STRESS_DIR:-build/stress}" && cd "${STRESS_DIR:-build/stress}" && pwd)
rm -rf "${work:?}"/storm "${work:?}"/tmp "$work/storm.log"
export TMPDIR=$work/tmp # the FIFO directories
mkdir -p "$TMPDIR"
ref=$work/ref run=$work/storm log=$work/storm.log
problems=0
problem() { echo "  PROBLEM: $*"; problems=$((problems + 1)); }

# the live processes started by the driver with pid $1 (lib/tool/tool.c's TNS_DRIVER_PID)
stages_of() { grep -lz "^TNS_DRIVER_PID=$1\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }

echo "stress: seed $seed, $kills kills, $epochs epochs of $cfg; work in $work"
t0=$(date +%s)
# (an uninterrupted run of these epochs left by an earlier storm is reused: it says done)
RUN=$ref EPOCHS=$epochs RESUME=auto pipelines/train.sh $cfg >"$work/ref.log" 2>&1 || { tail "$work/ref.log"; exit 1; }
grep -q "already trained" "$work/ref.log" && echo "stress: reusing the uninterrupted run in $ref" ||
	echo "stress: the uninterrupted run took $(($(date +%s) - t0)) s ($(wc -l <"$ref/metrics.jsonl") steps)"

check_after_kill() {
	local driver=$1 t left f
	for t in $(seq 100); do left=$(stages_of "$driver"); [ -z "$left" ] && break; sleep 0.1; done
	if [ -n "$left" ]; then
		problem "still running 10 s after the kill: $(ps -o comm= -p "$(echo $left | tr ' ' ,)" | tr '\n' ' ')"
		kill -9 $left 2>/dev/null
	fi
	for t in $(seq 30); do [ -z "$(ls -A "$TMPDIR")" ] && break; sleep 0.1; done
	[ -z "$(ls -A "$TMPDIR")" ] || { problem "FIFO directory left: $(ls -A "$TMPDIR")"; rm -rf "${TMPDIR:?}"/*; }
	left=$(find "$run" -name '.tmp-*' -o -name '*.tmp' 2>/dev/null)
	[ -z "$left" ] || problem "temp files left: $left"
	for f in "$run"/*.tns; do
		[ -e "$f" ] || continue
		"$BIN/tns" ls "$f" >/dev/null 2>&1 || problem "$f does not load"
	done
	if [ -s "$run/metrics.jsonl" ]; then
		[ "$(tail -c 1 "$run/metrics.jsonl" | od -An -c | tr -d ' ')" = '\n' ] || problem "metrics.jsonl ends inside a line"
		while IFS= read -r line; do
			jq -e 'has("step")' <<<"$line" >/dev/null 2>&1 || { problem "metrics.jsonl line does not parse: $line"; break; }
		done <"$run/metrics.jsonl"
	fi
}

declare -A count=([group]=0 [driver]=0 [stage]=0)
n=0 finished=0
t0=$(date +%s)
while [ "$n" -lt "$kills" ]; do
	RUN=$run EPOCHS=$epochs setsid pipelines/train.sh $cfg >>"$log" 2>&1 &
	driver=$!
	delay=$(awk -v r=$RANDOM -v m="$max_delay" 'BEGIN { printf "%.2f", 0.2 + r / 32768 * (m - 0.2) }')
	sleep "$delay"
	if ! kill -0 "$driver" 2>/dev/null; then
		wait "$driver" && { finished=1; break; }
		problem "the run failed on its own (see $log)"
		break
	fi
	mode=$(((RANDOM % 3)))
	what=
	case $mode in
	0) kill -9 -- -"$driver" && what=group ;;
	1) kill -9 "$driver" && what=driver ;;
	2)
		# one of the five stages (stages_of also lists the log's tee, the job's
		# subshell and the FIFO watcher)
		stages=($(for p in $(stages_of "$driver"); do
			case $(ps -o comm= -p "$p") in voc-decode | augment | forward | loss | sgd-step) echo "$p" ;; esac
		done))
		if [ ${#stages[@]} -gt 0 ]; then
			victim=${stages[RANDOM % ${#stages[@]}]}
			what="stage $(ps -o comm= -p "$victim")"
			kill -9 "$victim"
			what=${what%% }
		else
			kill -9 "$driver" && what=driver # still starting: no stage yet
		fi
		;;
	esac
	if [ -z "$what" ]; then
		# the kill found no driver: it ended on its own between the check and the kill
		wait "$driver" && { finished=1; break; }
		problem "the run failed on its own (see $log)"
		break
	fi
	# the driver ends at once when killed, within seconds when a stage was (it
	# reports the failure); a driver still there after 60 s is a hang
	for t in $(seq 600); do kill -0 "$driver" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$driver" 2>/dev/null; then
		problem "the driver still runs 60 s after the kill ($what)"
		kill -9 -- -"$driver"
	fi
	wait "$driver" 2>/dev/null
	n=$((n + 1))
	count[${what%% *}]=$((count[${what%% *}] + 1))
	step=$( [ -f "$run/latest.tns" ] && "$BIN/tns" cat --json "$run/latest.tns" 2>/dev/null | jq -s '.[1].meta.step' || echo -)
	printf 'kill %2d after %5ss: %-22s latest checkpoint: step %s\n' "$n" "$delay" "$what" "$step"
	check_after_kill "$driver"
done
echo "stress: $n kills in $(($(date +%s) - t0)) s (group ${count[group]}, driver ${count[driver]}, stage ${count[stage]})$([ "$finished" = 1 ] && echo "; the run finished before the last one")"

RUN=$run EPOCHS=$epochs pipelines/train.sh $cfg >>"$log" 2>&1 || problem "the final resume failed (see $log)"
if cmp -s <("$BIN/tns" head -n 1 "$ref/latest.tns") <("$BIN/tns" head -n 1 "$run/latest.tns"); then
	echo "stress: final weights bit-equal to the uninterrupted run's"
else
	problem "final weights differ from the uninterrupted run's"
fi
untimed='del(.images_per_s, .eta_s)'
if cmp -s <(jq -c "$untimed" "$ref/metrics.jsonl") <(jq -c "$untimed" "$run/metrics.jsonl"); then
	echo "stress: metrics.jsonl equal to the uninterrupted run's, step by step (timing aside)"
else
	problem "metrics.jsonl differs from the uninterrupted run's"
fi
echo "stress: $problems problems"
[ "$problems" -eq 0 ]
