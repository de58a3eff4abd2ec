#!/usr/bin/env bats
# Hostile input and hard faults (docs/reliability.md): decompression and allocation
# bombs refused before allocating, a killed driver, one writer per run directory, a
# full disk. Training runs use the reduced-width model on BCCD at 96x96.

load helpers

CFG=tests/fixtures/pipeline/tiny_bccd.json

setup() {
	cd "$ROOT"
	export BIN THREADS=2
	R=$BATS_TEST_TMPDIR/run
	B=$BATS_TEST_TMPDIR/bombs
	# the FIFO directories land here, so a test can see that none is left
	export TMPDIR=$BATS_TEST_TMPDIR/tmp
	mkdir -p "$TMPDIR"
	/usr/bin/python3 tests/make_bombs.py "$B"
}

# ---- bombs: each refused by its header, with the limit named where one applies

# capped CMD: CMD under a 512 MB address-space cap, where a reader that allocated what a
# bomb claims would fail with "out of memory" instead of the expected message. The
# sanitizer build cannot start under a cap (ASan reserves terabytes of shadow space):
# there CMD runs uncapped, and the message alone tells the check from the allocation.
capped() {
	if bash -c "ulimit -v 524288; '$BIN/tns' --help" >/dev/null 2>&1; then
		bash -c "ulimit -v 524288; $1"
	else
		bash -c "$1"
	fi
}

@test "bomb: a 17-byte zstd frame declaring 1.5 GiB is refused before allocating" {
	run capped "'$BIN/tns' ls '$B/zstd_huge.tns'"
	[ "$status" -eq 1 ]
	[[ "$output" == *"zstd_huge.tns: record 1: corrupt record (declares 1610612736 bytes, but its 1 blocks hold at most 131072)" ]]
}

# a VOC root holding one image file, id "a"
voc_with_image() {
	local root=$BATS_TEST_TMPDIR/voc
	rm -rf "$root"
	mkdir -p "$root/Annotations" "$root/ImageSets/Main" "$root/JPEGImages"
	echo a >"$root/ImageSets/Main/train.txt"
	echo '<annotation><size><width>0</width><height>0</height></size></annotation>' >"$root/Annotations/a.xml"
	cp "$1" "$root/JPEGImages/a.${1##*.}"
	echo "$root"
}

@test "bomb: PNG and JPEG headers claiming more pixels than the file holds are refused; TNS_MAX_PIXELS" {
	local v
	v=$(voc_with_image "$B/png_claims_16k.png")
	run capped "'$BIN/voc-decode' '$v' --split train >/dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == *"a.png: corrupt PNG: 16000x16000 pixels cannot fit in 69 bytes (at least 744202 needed)" ]]
	v=$(voc_with_image "$B/jpeg_claims_16k.jpg")
	run capped "'$BIN/voc-decode' '$v' --split train >/dev/null"
	[ "$status" -eq 1 ]
	[[ "$output" == *"a.jpg: corrupt JPEG: 16000x16000 pixels cannot fit in 152 bytes"* ]]
	# over the pixel limit: refused by the limit, named; raised, the data check still holds
	v=$(voc_with_image "$B/png_60k.png")
	run "$BIN/voc-decode" "$v" --split train
	[ "$status" -eq 1 ]
	[[ "$output" == *"a.png: PNG: bad image size 60000x60000 (over 268435456 pixels; see TNS_MAX_PIXELS)" ]]
	TNS_MAX_PIXELS=4000000000 run "$BIN/voc-decode" "$v" --split train
	[ "$status" -eq 1 ]
	[[ "$output" == *"60000x60000 pixels cannot fit in 69 bytes"* ]]
	# the limit applies to real images too: lowered below BCCD's 640x480, it refuses them
	TNS_MAX_PIXELS=300000 run "$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 1
	[ "$status" -eq 1 ]
	[[ "$output" == *"bad image size 640x480 (over 300000 pixels; see TNS_MAX_PIXELS)"* ]]
}

@test "bomb: a tar entry declaring a terabyte is refused naming TNS_MAX_FILE; the limit can be lowered" {
	run capped "'$BIN/voc-decode' '$B/tar_terabyte.tar' --split train --list"
	[ "$status" -eq 1 ]
	[[ "$output" == *"tar_terabyte.tar: voc/Annotations/a.xml: 1099511627776 bytes or more, over the limit of 1073741824 (see TNS_MAX_FILE)" ]]
	# the fuzz seed archive (classes dog, RBC, Platelets) reads whole; under a limit of
	# 100 bytes its JPEG entry is refused
	printf 'dog\nRBC\nPlatelets\n' >"$BATS_TEST_TMPDIR/classes"
	run "$BIN/voc-decode" fuzz/corpus/voc_archive/mini.tar --split train --classes "$BATS_TEST_TMPDIR/classes" --list
	[ "$status" -eq 0 ]
	TNS_MAX_FILE=100 run "$BIN/voc-decode" fuzz/corpus/voc_archive/mini.tar --split train \
		--classes "$BATS_TEST_TMPDIR/classes"
	[ "$status" -eq 1 ]
	[[ "$output" == *"over the limit of 100 (see TNS_MAX_FILE)"* ]]
}

@test "bomb: JSON nested 100,000 deep (a config, a record header) is refused; TNS_MAX_JSON_DEPTH" {
	run "$BIN/forward" --config "$B/deep.json" --summary
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: $B/deep.json: JSON nested deeper than 100 levels (see TNS_MAX_JSON_DEPTH)" ]]
	run "$BIN/tns" ls "$B/deep_header.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"deep_header.tns: record 1: corrupt record: JSON nested deeper than 100 levels (see TNS_MAX_JSON_DEPTH)" ]]
	# our configs nest 5 deep: the limit is live, and lowering it refuses them
	run "$BIN/forward" --config configs/ssd_mobilenet_fpn_bccd.json --summary
	[ "$status" -eq 0 ]
	TNS_MAX_JSON_DEPTH=3 run "$BIN/forward" --config configs/ssd_mobilenet_fpn_bccd.json --summary
	[ "$status" -eq 1 ]
	[[ "$output" == *"JSON nested deeper than 3 levels"* ]]
}

# ---- a killed driver

# stages_of DRIVER: the live processes started with that driver's TNS_DRIVER_PID
stages_of() {
	grep -lz "^TNS_DRIVER_PID=$1\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
}

# start_training [setsid]: a long run in the background (in a session of its own with
# setsid, as `setsid make train` would be); sets driver once a checkpoint exists
start_training() {
	RUN=$R EPOCHS=50 ${1:-} pipelines/train.sh $CFG >"$BATS_TEST_TMPDIR/out" 2>&1 &
	local t
	for t in $(seq 600); do [ -f "$R/latest.tns" ] && break; sleep 0.1; done
	[ -f "$R/latest.tns" ]
	driver=$(cat "$R/.lock")
	[ "$(stages_of "$driver" | wc -l)" -ge 5 ]
}

# after_driver_death: within 5 s no stage is left; within 3 s more the FIFO directory
# is gone; the checkpoint loads, and the same command resumes from it
after_driver_death() {
	local t left
	for t in $(seq 50); do left=$(stages_of "$driver"); [ -z "$left" ] && break; sleep 0.1; done
	if [ -n "$left" ]; then
		ps -o pid,cmd -p "$(echo $left | tr ' ' ,)"
		kill $left
		echo "stages still running 5 s after the driver died"
		return 1
	fi
	for t in $(seq 30); do [ -z "$(ls "$TMPDIR")" ] && break; sleep 0.1; done
	[ -z "$(ls "$TMPDIR")" ] || { ls -la "$TMPDIR"; echo "FIFO directory left"; return 1; }
	"$BIN/tns" ls "$R/latest.tns" >/dev/null
	local step
	step=$("$BIN/tns" cat --json "$R/latest.tns" | jq -s '.[1].meta.step')
	RUN=$R EPOCHS=50 MAX_STEPS=$((step + 1)) run pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming $R at step $step"* ]]
}

@test "driver: kill -9 of train.sh alone stops its stages within seconds; no FIFO left; the run resumes" {
	start_training
	kill -9 "$driver"
	after_driver_death
}

@test "driver: kill -9 of the whole process group (setsid make train; kill -9 -- -PGID) stops the stages too" {
	start_training setsid
	kill -9 -- -"$driver"
	after_driver_death
}

@test "one writer: a second train or calibrate on a run directory being written refuses, naming the pid" {
	start_training
	RUN=$R run pipelines/train.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == "train.sh: $R: being written by another run (pid $driver); wait for it to end, or stop it" ]]
	RUN=$R ITERS=1 BIAS_ITERS=0 run pipelines/calibrate.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == *"$R: being written by another run (pid $driver)"* ]]
	kill -TERM "$driver"
	exits_within "$driver" 100
	# the lock goes with the run's last process: the same command can take over
	RUN=$R EPOCHS=50 MAX_STEPS=1 run pipelines/train.sh $CFG
	[ "$status" -eq 0 ] || [[ "$output" == *"nothing to do"* ]] || [[ "$output" == *"resuming"* ]]
	[[ "$output" != *"being written"* ]]
}

# ---- a full disk

@test "full disk: train, eval and export fail naming the file; the checkpoint stays intact; the run resumes" {
	unshare -rm true 2>/dev/null || skip "no mount namespace here (unshare -rm): cannot mount a small tmpfs"
	run tests/disk_full.sh
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"disk_full: all checks passed"* ]]
}
