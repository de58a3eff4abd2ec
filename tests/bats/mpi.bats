#!/usr/bin/env bats
# Data-parallel training and sharded evaluation under Open MPI (NP=N: pipelines/lib.sh
# mpi_ranks, forward --mpi, sgd-step --replica, map-eval --mpi), with the reduced-width
# model on BCCD at 96x96. The exactness of the combined BN statistics and gradients is
# test_model's (replicas against torch); here: the ranks behave as one job.

load helpers

CFG=tests/fixtures/pipeline/tiny_bccd.json

setup() {
	cd "$ROOT"
	export BIN THREADS=1
	under_mpi
	R=$BATS_TEST_TMPDIR/run
}

# loss_at RUN STEP: the loss logged at STEP
loss_at() {
	jq -r "select(.step == $2) | .loss" "$1/metrics.jsonl"
}

@test "forward --mpi: 2 ranks on 3 + 1 images give torch's gradients of the whole batch (sync BN, rescale, sum)" {
	local n=$BATS_TEST_TMPDIR fix=tests/fixtures/model/tiny.tns
	/usr/bin/python3 tests/mpi_parts.py split $fix $n 2
	run timeout 120 mpirun -np 2 --oversubscribe bash -c "
		k=\$OMPI_COMM_WORLD_RANK
		$BIN/forward --config tests/fixtures/model/tiny.json --train --mpi --weights $n/params.tns \
			--grad $n/grad\$k.tns --threads 1 <$n/batch\$k.tns >$n/out\$k.tns"
	[ "$status" -eq 0 ]
	# rank 0's gradients are torch's; rank 1's are the same bits
	run /usr/bin/python3 tests/mpi_parts.py check $fix $n/out0.tns $n/out1.tns
	echo "$output"
	[ "$status" -eq 0 ]
	# and both carry the whole batch's loss numbers
	cmp <("$BIN/tns" cat --json $n/out0.tns | jq -c 'select(.kind == "grads") | .meta.replicas') \
		<("$BIN/tns" cat --json $n/out1.tns | jq -c 'select(.kind == "grads") | .meta.replicas')
	"$BIN/tns" cat --json $n/out1.tns | jq -e 'select(.kind == "grads") | .meta.replicas | .ranks == 2 and .images == 4'
}

@test "train NP=2: the first step's loss is one process's, every step's numbers are the global batch's" {
	RUN=$R/one MAX_STEPS=4 pipelines/train.sh $CFG 2>/dev/null
	RUN=$R/two NP=2 MAX_STEPS=4 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"batch 4 (2 on each of 2 ranks)"* ]]
	[ "$(grep -c "done:" <<<"$output")" -eq 1 ] # rank 0 alone reports
	# step 1: the same weights and images, so the same loss up to rounding
	awk -v a="$(loss_at $R/one 1)" -v b="$(loss_at $R/two 1)" 'BEGIN { d = a - b; exit !(d * d < 1e-10 * a * a) }'
	[ "$(wc -l <$R/two/metrics.jsonl)" -eq 4 ]
	[ "$(jq -s 'map(.images) | unique' $R/two/metrics.jsonl)" = "$(printf '[\n  4\n]')" ]
	"$BIN/tns" ls $R/two/latest.tns | grep -q '"step":4'
	grep -q "2 ranks" $R/two/train.log
}

@test "train NP=2: resumes with one rank, and one rank's run resumes with two" {
	RUN=$R NP=2 MAX_STEPS=3 pipelines/train.sh $CFG 2>/dev/null
	RUN=$R MAX_STEPS=5 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming $R at step 3"* ]]
	RUN=$R NP=2 MAX_STEPS=7 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming $R at step 5"* ]]
	[ "$(jq -s 'map(.step)' -c $R/metrics.jsonl)" = "[1,2,3,4,5,6,7]" ]
	"$BIN/tns" ls $R/latest.tns | grep -q '"step":7'
}

@test "train NP=2: a rank that dies stops the whole job, the last checkpoint intact" {
	RUN=$R NP=2 EPOCHS=50 pipelines/train.sh $CFG >"$BATS_TEST_TMPDIR/out" 2>&1 &
	local pid=$! victim="" t p
	for t in $(seq 300); do [ -f "$R/latest.tns" ] && break; sleep 0.1; done
	[ -f "$R/latest.tns" ]
	for p in $(pgrep -f "$BIN/forward --config $CFG --train"); do
		tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$p
	done
	[ -n "$victim" ]
	kill -9 "$victim"
	if ! exits_within "$pid" 300; then
		pkill -f "$BIN/.*$CFG" || true
		echo "job still running 30 s after a rank's forward was killed"
		return 1
	fi
	! wait "$pid"
	"$BIN/tns" ls "$R/latest.tns" >/dev/null
	! ls "$R"/.tmp* 2>/dev/null
	! pgrep -f "$BIN/.*--config $CFG"
	# resuming works after the crash
	RUN=$R NP=2 MAX_STEPS=$(($(jq -s 'map(.step) | max' $R/metrics.jsonl) + 1)) run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
}

@test "forward --mpi: ranks whose inputs end apart stop with a message, not a hang" {
	local n=$BATS_TEST_TMPDIR
	"$BIN/forward" --config $CFG --init >$n/init.tns
	cat $n/init.tns $n/init.tns >$n/params.tns # one params record per batch
	# rank 0 gets images 0 and 2 (two batches of 1), rank 1 image 1 (one batch)
	run timeout 60 mpirun -np 2 --oversubscribe bash -c "
		g=$n/grad\$OMPI_COMM_WORLD_RANK; mkfifo \$g
		$BIN/voc-decode $BCCD --split test --classes configs/bccd.classes --limit 3 --shard \$OMPI_COMM_WORLD_RANK/2 |
			$BIN/augment --train --config $CFG --batch 1 |
			$BIN/forward --config $CFG --train --mpi --weights $n/params.tns --grad \$g --threads 1 |
			$BIN/loss --config $CFG --grad \$g >/dev/null"
	[ "$status" -ne 0 ] && [ "$status" -ne 124 ]
	# each rank says it; the first to abort may silence the other
	[[ "$output" == *"forward: after batch 1, the input ended: rank 1 has no other batch but rank 0 has one"* ||
		"$output" == *"forward: batch 2: rank 0 has another batch but rank 1 has none"* ]]
}

@test "train NP=2 QUANTIZE=1: after a QAT step the activation ranges are one process's, bit for bit" {
	RUN=$R/float MAX_STEPS=3 pipelines/train.sh $CFG 2>/dev/null
	RUN=$R/calib CKPT=$R/float/latest.tns ITERS=3 BIAS_ITERS=0 BATCH=4 pipelines/calibrate.sh $CFG 2>/dev/null
	q=(INIT=$R/float/latest.tns RANGES=$R/calib/ranges.tns QUANTIZE=1 MAX_STEPS=1)
	env "${q[@]}" RUN=$R/one pipelines/train.sh $CFG 2>/dev/null
	env "${q[@]}" RUN=$R/two NP=2 pipelines/train.sh $CFG 2>/dev/null
	# the histograms and extrema of the ranks' parts combine exactly (BN is folded in QAT,
	# so each image's activations are the same bits on any rank)
	/usr/bin/python3 - "$R" <<-'EOF'
		import sys
		sys.path.insert(0, "tests")
		import numpy as np, tnsfile
		ranges = lambda p: next(t for kind, t, _ in tnsfile.read(p) if kind == "ranges")
		one, two, calib = (ranges(f"{sys.argv[1]}/{p}") for p in ("one/latest.tns", "two/latest.tns", "calib/ranges.tns"))
		assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one), "ranges differ"
		assert sum(not np.array_equal(one[k], calib[k]) for k in one) > len(one) // 2, "the step moved no ranges"
	EOF
	awk -v a="$(loss_at $R/one 1)" -v b="$(loss_at $R/two 1)" 'BEGIN { d = a - b; exit !(d * d < 1e-12 * a * a) }'
}

@test "forward --mpi: usage errors" {
	run "$BIN/forward" --config $CFG --weights x --mpi
	[ "$status" -eq 2 ]
	[[ "$output" == *"--mpi is data-parallel training: it goes with --train"* ]]
}
