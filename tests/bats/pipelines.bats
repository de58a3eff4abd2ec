#!/usr/bin/env bats
# The training loop and evaluation as pipelines (pipelines/train.sh, eval.sh) on BCCD
# with the reduced-width model at 96x96 (tests/fixtures/pipeline/tiny_bccd.json).

load helpers

CFG=tests/fixtures/pipeline/tiny_bccd.json

setup() {
	cd "$ROOT"
	export BIN THREADS=2
	R=$BATS_TEST_TMPDIR/run
}

params_of() { # the params record of a checkpoint, as bytes
	"$BIN/tns" head -n 1 "$1"
}

@test "train: the loop runs, checkpoints and metrics appear, losses are finite" {
	RUN=$R EPOCHS=1 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"72 images, batch 4, 18 steps per epoch"* ]]
	[ -f "$R/latest.tns" ] && [ -f "$R/epoch_1.tns" ] && [ -f "$R/iter_3.tns" ]
	[ "$(wc -l <"$R/metrics.jsonl")" -eq 18 ]
	jq -e 'select((.loss | isnormal | not) or .loss <= 0)' "$R/metrics.jsonl" && false
	run "$BIN/tns" ls "$R/latest.tns"
	[[ "${lines[0]}" == *"params"* ]] && [[ "${lines[1]}" == *"optim"* ]]
	! ls "$R"/.tmp* 2>/dev/null
}

@test "train: the loss falls; stopped and run again with the same command, the weights are bit-identical" {
	RUN=$R/whole run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	# two epochs on a fixed set: the last 6 steps' mean loss is well below the first 6 steps'
	jq -s -e '(.[:6] | map(.loss) | add / 6) as $a | (.[-6:] | map(.loss) | add / 6) as $b | $b < 0.8 * $a' \
		"$R/whole/metrics.jsonl"
	# stop after 7 steps (mid-epoch, between checkpoints), then the same command resumes
	RUN=$R/split MAX_STEPS=7 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	RUN=$R/split run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming"*"step 7"* ]]
	cmp <(params_of "$R/whole/latest.tns") <(params_of "$R/split/latest.tns")
	# and a third run has nothing left to do
	RUN=$R/split run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"nothing to do"* ]]
}

# stages_of PID [pgrep options]: the stages of the train.sh with that PID (children of
# its job's subshell)
stages_of() {
	local pid=$1
	shift
	pgrep -P "$(pgrep -d, -P "$pid")" "$@"
}

# kill_stage STAGE: start a long run, kill STAGE once a checkpoint exists, and check
# that the whole pipeline stops within seconds with that stage named and the last
# checkpoint intact.
kill_stage() {
	local stage=$1 pid child t
	RUN=$R EPOCHS=50 pipelines/train.sh $CFG >"$BATS_TEST_TMPDIR/out" 2>&1 &
	pid=$!
	for t in $(seq 300); do [ -f "$R/latest.tns" ] && break; sleep 0.1; done
	[ -f "$R/latest.tns" ]
	child=$(stages_of "$pid" -f "$BIN/$stage " | head -n 1)
	[ -n "$child" ]
	kill -9 "$child"
	if ! exits_within "$pid" 200; then
		pkill -P "$pid" || true
		echo "pipeline still running 20 s after $stage was killed"
		return 1
	fi
	wait "$pid" && return 1 # must fail
	grep -q "failed: .*$stage (killed by signal 9)" "$BATS_TEST_TMPDIR/out"
	"$BIN/tns" ls "$R/latest.tns" >/dev/null
	! ls "$R"/.tmp* 2>/dev/null
	! pgrep -P "$pid" >/dev/null
}

@test "train: killing voc-decode stops the pipeline, last checkpoint intact" { kill_stage voc-decode; }
@test "train: killing augment stops the pipeline, last checkpoint intact" { kill_stage augment; }
@test "train: killing forward stops the pipeline, last checkpoint intact" { kill_stage forward; }
@test "train: killing loss stops the pipeline, last checkpoint intact" { kill_stage loss; }
@test "train: killing sgd-step stops the pipeline, last checkpoint intact" { kill_stage sgd-step; }

@test "train: TERM to the driver alone stops its stages too, last checkpoint intact" {
	local pid st=0 stages p
	RUN=$R EPOCHS=50 pipelines/train.sh $CFG >"$BATS_TEST_TMPDIR/out" 2>&1 &
	pid=$!
	for t in $(seq 300); do [ -f "$R/latest.tns" ] && break; sleep 0.1; done
	stages=$(stages_of "$pid")
	[ "$(wc -w <<<"$stages")" -eq 5 ]
	kill -TERM "$pid"
	exits_within "$pid" 200
	wait "$pid" || st=$?
	[ "$st" -eq 143 ]
	grep -q "stopped by SIGTERM, the stages too; the last checkpoint is $R/latest.tns" "$BATS_TEST_TMPDIR/out"
	for p in $stages; do
		exits_within "$p" 50 || { echo "stage $p still running after the driver stopped"; kill $stages; return 1; }
	done
	"$BIN/tns" ls "$R/latest.tns" >/dev/null
}

@test "train: editing train.sh in place during a run does not change what the run executes" {
	local p=$BATS_TEST_TMPDIR/p pid st=0 text
	cp -r pipelines "$p"
	RUN=$R EPOCHS=12 "$p/train.sh" $CFG >"$BATS_TEST_TMPDIR/out" 2>&1 &
	pid=$!
	for t in $(seq 300); do [ -f "$R/latest.tns" ] && break; sleep 0.1; done
	kill -0 "$pid"
	# rewrite the same file (same inode, as an editor saving in place would), with new
	# commands after the pipeline and everything before them moved
	text=$(sed -e '/^# Every stage stops when one dies/i touch "$BATS_TEST_TMPDIR/injected"' \
		-e '/^# start or resume/i ##################################################' "$p/train.sh")
	printf '%s\n' "$text" >"$p/train.sh"
	wait "$pid" || st=$?
	[ "$st" -eq 0 ]
	grep -q "done: $R/latest.tns" "$BATS_TEST_TMPDIR/out"
	[ ! -e "$BATS_TEST_TMPDIR/injected" ]
}

@test "train: bad data and missing checkpoints are clear errors" {
	RUN=$R DATA=/nonexistent run pipelines/train.sh $CFG
	[ "$status" -ne 0 ]
	[[ "$output" == *"/nonexistent"* ]]
	RUN=$R RESUME=1 run pipelines/train.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == *"no checkpoint to resume from"* ]]
	RUN=$R run pipelines/eval.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == *"no such checkpoint"* ]]
}

@test "eval: N shards give exactly the table of one pipeline" {
	RUN=$R EPOCHS=1 MAX_STEPS=6 pipelines/train.sh $CFG 2>/dev/null
	RUN=$R run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"| mAP "* ]]
	cp "$R/eval.json" "$BATS_TEST_TMPDIR/one.json"
	cp "$R/eval.txt" "$BATS_TEST_TMPDIR/one.txt"
	under_mpi
	RUN=$R NP=3 MPIRUN_FLAGS=--oversubscribe run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	cmp "$BATS_TEST_TMPDIR/one.txt" "$R/eval.txt"
	[ "$(jq .mAP "$BATS_TEST_TMPDIR/one.json")" = "$(jq .mAP "$R/eval.json")" ]
	jq -e '.classes | length == 3' "$R/eval.json"
}
