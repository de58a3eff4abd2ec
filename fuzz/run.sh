#!/usr/bin/env bash
# The fuzz harnesses (fuzz/fuzz_*.c, libFuzzer + ASan + UBSan), built by the Makefile
# into $FUZZ_BIN (make fuzz-build).
#
#   fuzz/run.sh regress [SECONDS]  each harness over every file of its committed corpus
#                                  (fuzz/corpus/<name>), then SECONDS (default 0) of
#                                  fuzzing from it: what make test runs
#   fuzz/run.sh fuzz SECONDS       SECONDS of fuzzing per harness (make fuzz FUZZ_S=N)
#
# New inputs the fuzzer keeps go to build/fuzz/corpus/<name> (not committed); a crash,
# leak, timeout or out-of-memory stops that harness, leaves its input in
# build/fuzz/findings/<name>/ and fails the run. The last stats line of each harness
# (execs, cov: edges, ft: features) is appended to build/fuzz/report.txt.
# FUZZ_ONLY="stream image" picks harnesses.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: fuzz/run.sh regress|fuzz [SECONDS]}
secs=${2:-0}
: "${FUZZ_BIN:=build/fuzz}"
work=build/fuzz
mkdir -p "$work"
names=${FUZZ_ONLY:-$(for f in fuzz/fuzz_*.c; do f=${f##*/fuzz_}; echo "${f%.c}"; done)}
# -timeout: a hang is an input taking 10 s; -rss_limit_mb: an input costing 2 GiB of
# memory is an out-of-memory bug (every reader has a smaller limit of its own).
opts=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
failed=()
for n in $names; do
	bin=$FUZZ_BIN/fuzz_$n
	seeds=fuzz/corpus/$n
	[ -x "$bin" ] || { echo "fuzz: $bin: not built (make fuzz-build)" >&2; exit 1; }
	mkdir -p "$work/corpus/$n" "$work/findings/$n"
	log=$work/$n.log
	case $mode in
	regress)
		# every committed input once, as a test of its own (crash = failure); given as
		# files, not the directory, which libFuzzer would take as a corpus to add to
		if ! "$bin" "${opts[@]}" -artifact_prefix="$work/findings/$n/" "$seeds"/* >"$log" 2>&1; then
			echo "fuzz: $n: an input of $seeds fails again (see $log)" >&2
			failed+=("$n")
			continue
		fi
		[ "$secs" -gt 0 ] || { echo "fuzz: $n: $(ls "$seeds" | wc -l) committed inputs pass"; continue; }
		;;
	fuzz) ;;
	*) echo "usage: fuzz/run.sh regress|fuzz [SECONDS]" >&2; exit 2 ;;
	esac
	if "$bin" "${opts[@]}" -max_total_time="$secs" -artifact_prefix="$work/findings/$n/" \
		"$work/corpus/$n" "$seeds" >"$log" 2>&1; then
		# "#N DONE cov: C ft: F corp: ..." -> "cov: C ft: F corp: ..."
		stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed -E 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+//')
		execs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")
		echo "fuzz: $n: ${secs}s, $execs execs, $stats"
		echo "$(date -u +%FT%TZ) $n ${secs}s execs=$execs $stats" >>"$work/report.txt"
	else
		echo "fuzz: $n: found a bug, input kept in $work/findings/$n/ (see $log):" >&2
		grep -E 'ERROR:|runtime error|SUMMARY' "$log" | head -n 3 >&2
		failed+=("$n")
	fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: failed: ${failed[*]}" >&2; exit 1; }
