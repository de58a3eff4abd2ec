# Shell helpers the pipeline scripts share. Source it; it sets nothing else but this:
# a pipeline's stages share the cores, so an OpenMP thread waiting for work sleeps
# instead of spinning on a core another stage needs (libgomp's default spins: forward
# ran 15-35x slower beside other jobs on 2 cores; detect.sh's 8 images at 512 took
# 23.5 s spinning and 1.7 s passive: docs/benchmarks.md, docs/detect.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# config_json FILE: the config as the tools read it, from sgd-step --print-config: its
# "base" chain merged, "train" complete with the training defaults and "qat" with its
# defaults (lib/train/optim.c keeps them, once).
config_json() {
	"${BIN:-bin}/sgd-step" --print-config --config "$1"
}

# cfg KEY DEFAULT: a value of the merged config in $CFG_JSON (jq path), or DEFAULT. The
# training keys (.train.*, .qat.epochs, .qat.lr) always have a value there.
cfg() {
	local v
	v=$(jq -r "$1 // empty" <<<"$CFG_JSON")
	echo "${v:-$2}"
}

# bool NAME [DEFAULT [FROM]]: the boolean setting NAME (an environment variable) as 1
# or 0. 1, true, yes, on and 0, false, no, off (any case) are the words; unset or empty
# is DEFAULT (one of the words too; FROM says where it came from, for the message).
# Anything else is an error naming the setting: exit status 2, as for a usage error.
bool() {
	local v=${!1:-} from=$1
	[ -n "$v" ] || v=${2:-0} from=${3:-$1}
	case ${v,,} in
	1 | true | yes | on) echo 1 ;;
	0 | false | no | off) echo 0 ;;
	*)
		say "$from=$v: not a boolean (1, true, yes, on or 0, false, no, off)"
		return 2
		;;
	esac
}

# load_config CONFIG: what every run script starts from. Sets cfg_file, BIN (default
# bin), CFG_JSON (config_json: merged, defaults filled; a bad config fails here),
# name, run (RUN or runs/<name>), data and classes (DATA / CLASSES, else the config's
# dataset section; empty if neither), and the boolean settings every script reads
# alike: quantize (QUANTIZE, else the config's "quantize"), int8 (INT8) and
# per_channel_dw (PER_CHANNEL_DW: forward's, fakequant's and tidl-pack's flag as an
# array).
load_config() {
	cfg_file=$1
	BIN=${BIN:-bin}
	CFG_JSON=$(config_json "$cfg_file") || return
	name=$(cfg .name "$(basename "$cfg_file" .json)")
	run=${RUN:-runs/$name}
	data=${DATA:-$(cfg .dataset.root "")}
	classes=${CLASSES:-$(cfg .dataset.classes "")}
	quantize=$(bool QUANTIZE "$(cfg .quantize 0)" "the config's quantize")
	int8=$(bool INT8)
	per_channel_dw=$(bool PER_CHANNEL_DW)
	if [ "$per_channel_dw" = 1 ]; then per_channel_dw=(--per-channel-dw); else per_channel_dw=(); fi
}

# mpi_ranks SCRIPT ARGS...: with NP > 1 and not yet a rank of an MPI job, runs SCRIPT
# ARGS again as NP ranks of Open MPI's mpirun (MPIRUN, default mpirun; MPIRUN_FLAGS for
# its own options: --hostfile H, --oversubscribe for more ranks than cores ...) with
# the run settings of this environment passed to every rank, and exits with its
# status. Otherwise returns. Sets rank and ranks (0 and 1 outside MPI).
mpi_ranks() {
	rank=${OMPI_COMM_WORLD_RANK:-0} ranks=${OMPI_COMM_WORLD_SIZE:-1}
	local np=${NP:-1}
	if [ "$np" -le 1 ] || [ -n "${OMPI_COMM_WORLD_SIZE:-}" ]; then
		return 0
	fi
	local vars=() v root=()
	for v in BIN RUN DATA CLASSES SPLIT EPOCHS BATCH SIZE LR SEED THREADS MAX_STEPS CKPT QUANTIZE BITS WBITS PER_CHANNEL_DW RANGES \
		ITERS INT8 INIT PRETRAINED RESUME TNS_LEVEL MODE METRIC OUT TMPDIR IMAGES IMAGES_FROM SCORE FORMAT RECURSIVE SKIP_BAD; do
		[ -z "${!v:-}" ] || vars+=("$v=${!v}")
	done
	[ "$(id -u)" -ne 0 ] || root=(--allow-run-as-root) # containers run as root
	# --bind-to none: a rank is a pipeline of processes, not one process for one core
	# shellcheck disable=SC2086
	exec ${MPIRUN:-mpirun} -np "$np" --bind-to none "${root[@]}" ${MPIRUN_FLAGS:-} env "${vars[@]}" "$@"
}

# rank_threads: threads for a rank's tools: THREADS, else this host's CPUs shared out
# among the ranks on it (all of them outside MPI).
rank_threads() {
	local local_ranks=${OMPI_COMM_WORLD_LOCAL_SIZE:-1}
	echo "${THREADS:-$(($(nproc) / local_ranks > 0 ? $(nproc) / local_ranks : 1))}"
}

# pipe_level: the zstd level of the streams between a pipeline's stages, which no file
# keeps: the training loop's pred, grad, grads and params (~10 MB of floats each way per
# step at 320), eval's and detect's batches and preds (a 3 MB image record at 512 took
# 5.5 ms to encode and 4.5 ms to decode at level 1, a fifth of forward's batch-1 time):
# TNS_LEVEL, else -1. Level 1 would shrink them by ~10% at a third of the speed
# (docs/stream-format.md, "The cost of the pipes").
pipe_level() {
	echo "${TNS_LEVEL:--1}"
}

# run_checkpoint: the checkpoint eval and export use: CKPT, else RUN/latest.tns, or with
# QUANTIZE=1 RUN/ptq.tns when make calibrate made one (bias-calibrated params + ranges).
run_checkpoint() {
	if [ -n "${CKPT:-}" ]; then
		echo "$CKPT"
	elif [ "$quantize" = 1 ] && [ -f "$run/ptq.tns" ]; then
		echo "$run/ptq.tns"
	else
		echo "$run/latest.tns"
	fi
}

# timed PIPELINE: the seconds one run of a shell pipeline (a string) takes, its output
# discarded; a failing stage fails the call.
timed() {
	local t0 t1
	t0=$(date +%s.%N)
	bash -c "set -o pipefail; $1" >/dev/null
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# say ...: a progress line on stderr, named after the script.
say() {
	echo "${0##*/}: $*" >&2
}

# quant_args CKPT: sets the array quant to forward's flags for $quantize (--quant, or
# --int8 with $int8; BITS, WBITS, PER_CHANNEL_DW; load_config sets them) and --ranges when CKPT carries no
# ranges record (RANGES, default RUN/ranges.tns); empty without QUANTIZE. Fails when
# the ranges are missing.
quant_args() {
	quant=()
	[ "$quantize" = 1 ] || return 0
	quant=(--quant --bits "${BITS:-8}" ${WBITS:+--weight-bits "$WBITS"} "${per_channel_dw[@]}")
	if [ "$int8" = 1 ]; then quant[0]=--int8; fi
	if ! "$BIN/tns" ls "$1" | awk '$2 == "ranges" { found = 1 } END { exit !found }'; then
		local ranges=${RANGES:-$run/ranges.tns}
		[ -f "$ranges" ] || { say "$ranges: no activation ranges (make calibrate first, or set RANGES)"; return 1; }
		quant+=(--ranges "$ranges")
	fi
}

# coco_file SPLIT KEY: for a "type": "coco" dataset, dataset.SPLIT.KEY (ann_file or
# img_prefix, mmdet's names) resolved against DATA (the dataset's "root", mmdet's
# data_root) unless absolute; empty for other datasets.
coco_file() {
	local f
	[ "$(cfg .dataset.type voc)" = coco ] || return 0
	f=$(cfg ".dataset[\"$1\"].$2" "")
	[ -n "$f" ] || { say "config: dataset.$1.$2 missing (a coco dataset names both ann_file and img_prefix)"; return 2; }
	case $f in /*) echo "$f" ;; *) echo "${data:+$data/}$f" ;; esac
}

# decoder SPLIT [train]: sets decode_cmd, the command (an array) that writes the config's
# dataset's SPLIT as image records; callers add the options voc-decode and coco-decode
# share (--list, --shard, --shuffle, ...). VOC: voc-decode DATA --split SPLIT. "type":
# "coco": coco-decode of dataset.SPLIT's ann_file and img_prefix, --filter-empty-gt if
# its filter_empty_gt is true, and for training --min-size 32 (mmdet 2.x's _filter_imgs
# drops images under 32 pixels on a side from every training set). CLASSES goes to
# either. (A command, not a function that runs it, so the decoder is a direct child of
# a pipeline's job, as the other stages.)
decoder() {
	local ann img
	if [ "$(cfg .dataset.type voc)" != coco ]; then
		decode_cmd=("$BIN/voc-decode" "$data" --split "$1" ${classes:+--classes "$classes"})
		return
	fi
	ann=$(coco_file "$1" ann_file) && img=$(coco_file "$1" img_prefix) || return 2
	decode_cmd=("$BIN/coco-decode" "$ann" "$img" ${classes:+--classes "$classes"})
	[ "$(cfg ".dataset[\"$1\"].filter_empty_gt" false)" = false ] || decode_cmd+=(--filter-empty-gt)
	[ "${2:-}" != train ] || decode_cmd+=(--min-size 32)
}

# lock_run DIR: makes this script the one writer of run directory DIR (created if
# missing), or refuses naming the pid that writes it: an flock on DIR/.lock, held by an
# open descriptor that the stages inherit, so it lasts until the last process of the
# run has ended, however the script ended. The lock file holds the writer's pid.
lock_run() {
	local dir=$1 holder
	mkdir -p "$dir"
	exec {run_lock_fd}>>"$dir/.lock"
	if ! flock -n "$run_lock_fd"; then
		holder=$(cat "$dir/.lock" 2>/dev/null || true)
		say "$dir: being written by another run (pid ${holder:-unknown}); wait for it to end, or stop it"
		exit 1
	fi
	echo "$$" >"$dir/.lock"
}

# stages_follow_driver: every tool started from now on stops (SIGTERM) within moments
# of this script's death, however it dies: kill -9 of the script alone or of its
# process group, the OOM killer (lib/tool/tool.c watches the pid in TNS_DRIVER_PID).
stages_follow_driver() {
	export TNS_DRIVER_PID=$$
}

# fifo_dir NAME: sets fifos to a new directory in $TMPDIR for a pipeline's FIFOs,
# removed once this script and every process it started have ended, however they
# ended (the EXIT trap removes it too, but never runs after a kill -9). A watcher in a
# session of its own (no signal to this script's process group reaches it) makes the
# directory, then reads a pipe whose write end this script holds, as its children
# inherit it: at end of file, when the last of them is gone, it removes the directory.
# (Not a watch on this script's pid: with pid_max 32768 a busy machine reuses a pid
# within seconds, and make stress found directories left that way, as well as one left
# by a group kill between a mktemp and the start of its watcher.)
fifo_dir() {
	local i
	fifos=$(mktemp -u "${TMPDIR:-/tmp}/$1.XXXXXX") # a fresh name; the watcher makes it
	exec {fifo_lifeline}> >(exec setsid -f bash -c '[ -z "$2" ] || eval "exec $2>&-"
		mkdir -m 700 "$1" || exit 1; cat >/dev/null; rm -rf "$1"' _ "$fifos" "${run_lock_fd:-}" \
		>/dev/null 2>&1)
	for i in $(seq 1000); do [ -d "$fifos" ] && return 0; sleep 0.01; done
	say "cannot make a directory $fifos"
	return 1
}
