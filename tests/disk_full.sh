#!/usr/bin/env bash
# Training, evaluation and export on a full filesystem: a tmpfs of 24 MiB mounted in a
# mount namespace of our own (unshare -rm: no root needed where user namespaces are
# allowed), filled up between steps. Prints a transcript; exits 0 only if every tool
# failed with a message naming its file, the previous checkpoint stayed intact, nothing
# half-written was left, and the same command resumed once space was freed.
# usage: tests/disk_full.sh [--inside]   (BIN: the tools; run from the repository root)
set -uo pipefail
if [ "${1:-}" != --inside ]; then
	exec unshare -rm "$0" --inside
fi
: "${BIN:=bin}"
export BIN THREADS=${THREADS:-2}
CFG=tests/fixtures/pipeline/tiny_bccd.json
m=$(mktemp -d "${TMPDIR:-/tmp}/diskfull.XXXXXX")
mount -t tmpfs -o size=24m tmpfs "$m" || { echo "disk_full: cannot mount a tmpfs at $m"; exit 77; }
trap 'umount "$m"; rmdir "$m"' EXIT
run=$m/run
fail() { echo "FAILED: $*"; exit 1; }
step() { echo; echo "\$ $*"; }
# fill: leaves about $1 KiB free on the tmpfs
fill() {
	local free
	rm -f "$m/filler"
	free=$(df -k --output=avail "$m" | tail -n 1)
	[ "$free" -le "$1" ] || dd if=/dev/zero of="$m/filler" bs=1K count=$((free - $1)) status=none 2>/dev/null
	echo "(disk filled: $(df -k --output=avail "$m" | tail -n 1) KiB free)"
}

step "RUN=$run MAX_STEPS=3 pipelines/train.sh $CFG   # 3 steps, a checkpoint at step 3"
RUN=$run EPOCHS=1 MAX_STEPS=3 pipelines/train.sh $CFG 2>&1 | tail -n 2
[ -f "$run/latest.tns" ] || fail "no first checkpoint"
before=$(sha256sum <"$run/latest.tns")
fill 200
step "RUN=$run pipelines/train.sh $CFG   # the next checkpoint (step 6, 1.3 MB) cannot fit"
out=$(RUN=$run EPOCHS=1 pipelines/train.sh $CFG 2>&1) && fail "training on a full disk succeeded"
printf '%s\n' "$out" | grep -v '^epoch ' | tail -n 4
printf '%s\n' "$out" | grep -qE "sgd-step: $run/[a-z_0-9]+\.(tns|jsonl).*No space left on device" ||
	fail "no message naming the file and the full disk"
[ "$(sha256sum <"$run/latest.tns")" = "$before" ] || fail "latest.tns changed"
"$BIN/tns" ls "$run/latest.tns" >/dev/null || fail "latest.tns does not load"
ls "$run"/.tmp-* 2>/dev/null && fail "a temp file was left"
echo "(latest.tns unchanged and loads; no temp file left)"

fill 0
step "RUN=$run pipelines/eval.sh $CFG   # the disk full to the last block"
out=$(RUN=$run pipelines/eval.sh $CFG 2>&1) && fail "eval on a full disk succeeded"
printf '%s\n' "$out" | tail -n 2
printf '%s\n' "$out" | grep -q "$run/eval.*No space left on device" || fail "eval: no message naming the file"
ls "$run"/eval.json "$run"/eval.txt 2>/dev/null && fail "eval left a result"
step "RUN=$run pipelines/export.sh $CFG"
out=$(RUN=$run pipelines/export.sh $CFG 2>&1) && fail "export on a full disk succeeded"
printf '%s\n' "$out" | tail -n 2
printf '%s\n' "$out" | grep -q "$run/.*No space left on device" || fail "export: no message naming the file"
ls "$run"/model.onnx "$run"/model.prototxt 2>/dev/null && fail "export left a model"

rm -f "$m/filler"
step "rm filler; RUN=$run MAX_STEPS=6 pipelines/train.sh $CFG   # space freed: the same command resumes"
out=$(RUN=$run EPOCHS=1 MAX_STEPS=6 pipelines/train.sh $CFG 2>&1) || { printf '%s\n' "$out" | tail -n 5; fail "resume failed"; }
printf '%s\n' "$out" | grep -E "resuming|done"
printf '%s\n' "$out" | grep -q "resuming $run at step 3" || fail "did not resume from step 3"
jq -e . "$run/metrics.jsonl" >/dev/null || fail "metrics.jsonl does not parse"
[ "$(jq -s 'map(.step) == [range(1; 7)]' "$run/metrics.jsonl")" = true ] || fail "metrics.jsonl steps are not 1..6"
echo "(metrics.jsonl: steps 1..6, each once)"
step "RUN=$run pipelines/export.sh $CFG"
RUN=$run pipelines/export.sh $CFG 2>&1 | tail -n 1
ls "$run"/model.onnx >/dev/null || fail "no model.onnx"
echo
echo "disk_full: all checks passed"
