# Shell helpers the pipeline scripts share. Source it; it sets nothing else.

# config_json FILE: the config with its "base" chain merged, as lib/config.c reads it
# (jq's * merges objects member by member and replaces everything else, the same rule).
config_json() {
	local f=$1 base
	base=$(jq -r '.base // empty' "$f") || return 1
	if [ -z "$base" ]; then
		cat "$f"
		return
	fi
	case $base in /*) ;; *) base=$(dirname "$f")/$base ;; esac
	jq -s '.[0] * (.[1] | del(.base))' <(config_json "$base") "$f"
}

# cfg KEY DEFAULT: a value of the merged config in $CFG_JSON (jq path), or DEFAULT.
cfg() {
	local v
	v=$(jq -r "$1 // empty" <<<"$CFG_JSON")
	echo "${v:-$2}"
}

# load_config CONFIG: what every run script starts from. Sets cfg_file, BIN (default
# bin), CFG_JSON (the merged config), name, run (RUN or runs/<name>), and data and
# classes (DATA / CLASSES, else the config's dataset section; empty if neither).
load_config() {
	cfg_file=$1
	BIN=${BIN:-bin}
	CFG_JSON=$(config_json "$cfg_file")
	name=$(cfg .name "$(basename "$cfg_file" .json)")
	run=${RUN:-runs/$name}
	data=${DATA:-$(cfg .dataset.root "")}
	classes=${CLASSES:-$(cfg .dataset.classes "")}
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
		ITERS INT8 INIT PRETRAINED RESUME TNS_LEVEL MODE METRIC OUT TMPDIR; do
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

# loop_level: the zstd level of the training loop's own streams (pred, grad, grads and
# params: ~10 MB of floats each way per step at 320): TNS_LEVEL, else -1. Level 1 would
# shrink them by ~10% at a third of the speed, on the loop's critical path
# (docs/stream-format.md, "The cost of the pipes").
loop_level() {
	echo "${TNS_LEVEL:--1}"
}

# run_checkpoint: the checkpoint eval and export use: CKPT, else RUN/latest.tns, or with
# QUANTIZE=1 RUN/ptq.tns when make calibrate made one (bias-calibrated params + ranges).
run_checkpoint() {
	if [ -n "${CKPT:-}" ]; then
		echo "$CKPT"
	elif [ "${QUANTIZE:-0}" = 1 ] && [ -f "$run/ptq.tns" ]; then
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

# PER_CHANNEL_DW=1 (0 or unset: off): forward's, fakequant's and tidl-pack's flag
per_channel_dw=()
[ "${PER_CHANNEL_DW:-0}" = 0 ] || per_channel_dw=(--per-channel-dw)

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

# decoder SPLIT: sets decode_cmd, the command (an array) that writes the config's dataset's
# SPLIT as image records; callers add the options voc-decode and coco-decode share
# (--list, --shard, --shuffle, ...). VOC: voc-decode DATA --split SPLIT. "type": "coco":
# coco-decode of dataset.SPLIT's ann_file and img_prefix, --filter-empty-gt if its
# filter_empty_gt is true. CLASSES goes to either. (A command, not a function that runs
# it, so the decoder is a direct child of a pipeline's job, as the other stages.)
decoder() {
	local ann img
	if [ "$(cfg .dataset.type voc)" != coco ]; then
		decode_cmd=("$BIN/voc-decode" "$data" --split "$1" ${classes:+--classes "$classes"})
		return
	fi
	ann=$(coco_file "$1" ann_file) && img=$(coco_file "$1" img_prefix) || return 2
	decode_cmd=("$BIN/coco-decode" "$ann" "$img" ${classes:+--classes "$classes"})
	[ "$(cfg ".dataset[\"$1\"].filter_empty_gt" false)" = false ] || decode_cmd+=(--filter-empty-gt)
}
