#!/usr/bin/env bash
# train: float training as one pipeline of tools (design.md section 3):
#
#   voc-decode | augment --train | forward --train | loss | sgd-step
#                                    ^   ^           |        |
#                                    |   +- grad fifo+        |
#                                    +----- params fifo ------+
#
# usage: pipelines/train.sh CONFIG
# environment (all optional): BIN (tools, default bin), RUN (run directory, default
# runs/<config name>), DATA, CLASSES, SPLIT (default: the config's dataset section),
# EPOCHS, BATCH, SIZE, LR, SEED (default 0), THREADS, INIT (params file), PRETRAINED
# (.pth), RESUME (auto: resume if RUN has a checkpoint (default), 0: start over, 1: must
# resume), MAX_STEPS, TNS_LEVEL (zstd level of forward, loss and sgd-step's streams and
# checkpoints; default -1, see pipe_level in lib.sh).
# QUANTIZE=1 (or true/yes/on; or "quantize": true in the config): quantisation-aware training (QAT) of a
# float run: RUN (the QAT run) defaults to runs/<name>_qat, INIT to runs/<name>/latest.tns, the
# starting activation ranges RANGES to runs/<name>/ranges.tns (made by
# pipelines/calibrate.sh when missing); EPOCHS and LR default to the config's
# qat.epochs and qat.lr (else a quarter of the epochs and a tenth of the LR: sgd-step
# --print-config fills them in). forward
# runs fake-quantised (--quant --stats), sgd-step owns the ranges (--quant).
# The run directory gets checkpoints (latest.tns, iter_*.tns, epoch_*.tns),
# metrics.jsonl and train.log. Running the same command again resumes.
# NP=N (or under mpirun -np N [--hostfile H] pipelines/train.sh ...): N ranks, where
# each runs this pipeline on --shard rank/N of each epoch with BATCH/N images per
# step; forward --mpi combines BN statistics and gradients, so the N ranks train as one
# process on BATCH would. Rank 0 writes the run directory, which every rank reads when
# resuming (a shared filesystem across hosts). docs/distributed.md
# The whole script is one brace group: bash reads it all before running any of it, so
# editing this file while a run is on cannot change what that run executes next.
{
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
load_config "${1:?usage: train.sh CONFIG}"
mpi_ranks "$0" "$@"
split=${SPLIT:-$(cfg .dataset.train_split trainval)}
quant=$quantize
fwd_quant=() sgd_quant=() lr=${LR:-}
if [ "$quant" = 1 ]; then
	float_run=runs/$name
	run=${RUN:-runs/${name}_qat}
	epochs=${EPOCHS:-$(cfg .qat.epochs)}
	lr=${LR:-$(cfg .qat.lr)}
	INIT=${INIT:-$float_run/latest.tns}
	ranges=${RANGES:-$float_run/ranges.tns}
	[ -f "$INIT" ] || { say "QAT starts from a float checkpoint: $INIT missing (train without QUANTIZE first, or set INIT)"; exit 1; }
	if [ ! -f "$ranges" ] && [ ! -f "$run/latest.tns" ]; then
		say "no activation ranges at $ranges: calibrating $INIT first"
		RUN=$float_run CKPT=$INIT OUT=$(dirname "$ranges") "$here/calibrate.sh" "$cfg_file"
	fi
	fwd_quant=(--quant --stats ${BITS:+--bits "$BITS"} ${WBITS:+--weight-bits "$WBITS"} "${per_channel_dw[@]}")
	sgd_quant=(--quant)
else
	epochs=${EPOCHS:-$(cfg .train.epochs)}
fi
batch=${BATCH:-$(cfg .train.batch)} # the training defaults are filled in (config_json)
seed=${SEED:-0}
[ -n "$data" ] || { say "no data: set DATA or the config's dataset.root"; exit 2; }
decoder "$split" train
mkdir -p "$run"
[ "$rank" -ne 0 ] || lock_run "$run" # one writer per run directory
stages_follow_driver                  # the stages stop when this script dies

images=$("${decode_cmd[@]}" --list | wc -l)
[ "$images" -gt 0 ] || { say "$data: no images in split $split"; exit 1; }
dist=() fwd_dist=() sgd_dist=() threads=${THREADS:-}
if [ "$ranks" -gt 1 ]; then
	[ $((batch % ranks)) -eq 0 ] || { say "BATCH $batch: not a multiple of the $ranks ranks"; exit 2; }
	batch_rank=$((batch / ranks))
	images=$((images - images % ranks)) # --even-shards: every rank as many
	dist=(--shard "$rank/$ranks" --even-shards)
	fwd_dist=(--mpi)
	[ "$rank" -eq 0 ] || sgd_dist=(--replica)
	threads=$(rank_threads)
else
	batch_rank=$batch
fi
iters=$(((images + batch - 1) / batch))

# start or resume
decode_resume=() state=()
if [ "${RESUME:-auto}" != 0 ] && [ -f "$run/latest.tns" ]; then
	meta=$("$BIN/tns" cat --json "$run/latest.tns" | jq -s '.[] | select(.kind == "optim") | .meta')
	e=$(jq -r .epoch <<<"$meta") p=$(jq -r .epoch_images <<<"$meta") s=$(jq -r .step <<<"$meta")
	seed=$(jq -r .seed <<<"$meta")
	if [ "$p" -ge "$images" ]; then e=$((e + 1)) p=0; fi
	if [ "$e" -ge "$epochs" ]; then
		[ "$rank" -ne 0 ] || say "$run: already trained $epochs epochs (step $s); nothing to do"
		exit 0
	fi
	[ "$rank" -ne 0 ] || say "resuming $run at step $s: epoch $((e + 1)), image $p of $images"
	decode_resume=(--resume "$e:$p")
	state=(--resume "${sgd_quant[@]}")
elif [ "${RESUME:-auto}" = 1 ]; then
	say "$run: no checkpoint to resume from"
	exit 1
else
	init=${INIT:-$run/init.tns}
	if [ -z "${INIT:-}" ]; then
		# every rank makes the same init (seeded); rank 0's is the one kept
		[ "$rank" -eq 0 ] || init=$(mktemp "${TMPDIR:-/tmp}/init.XXXXXX") tmp_init=$init
		# (two commands, not `a && b`: set -e does not stop at a failure inside an && list)
		"$BIN/forward" --config "$cfg_file" --init --seed "$seed" >"$init.tmp"
		mv "$init.tmp" "$init"
	fi
	state=(--init "$init" ${PRETRAINED:+--pretrained "$PRETRAINED"})
	[ "$quant" = 1 ] && state+=("${sgd_quant[@]}" --ranges "$ranges")
fi

fifo_dir train # sets fifos
mkfifo "$fifos/params" "$fifos/grad"
trap 'rm -rf "$fifos" ${tmp_init:+"$tmp_init"}' EXIT
# (tee ignores Ctrl-C: it ends with this script, so the last words reach the log too)
[ "$rank" -ne 0 ] || exec 2> >(trap '' INT && exec tee -a "$run/train.log" >&2)

[ "$rank" -ne 0 ] || say "$name: $images images, batch $batch$([ "$ranks" -gt 1 ] && echo " ($batch_rank on each of $ranks ranks)"), $iters steps per epoch, $epochs epochs$([ "$quant" = 1 ] && echo ", quantisation-aware from $INIT") -> $run"
stages=("${decode_cmd[0]##*/}" augment forward loss sgd-step)
level=$(pipe_level) # the loop's own streams: fast zstd (lib.sh)
# The stages run as a background job in a process group of their own (set -m), so
# that a signal to this script alone (kill PID; bash would defer the trap until a
# foreground pipeline ended) stops them too instead of leaving them training
# orphaned: the trap signals the group. Ctrl-C reaches this script, which does the
# same. Each stage's exit status goes to a file (no PIPESTATUS across a job).
job=
stop() {
	trap - INT TERM HUP
	if [ -n "$job" ]; then
		kill -TERM -- -"$job" 2>/dev/null
		wait "$job"
	fi
	say "stopped by SIG$1, the stages too; the last checkpoint is $run/latest.tns (run the same command to resume)"
	exit $((128 + $(kill -l "$1")))
}
trap 'stop INT' INT
trap 'stop TERM' TERM
trap 'stop HUP' HUP
set +e -m
(
	"${decode_cmd[@]}" --shuffle --seed "$seed" \
	--epochs "$epochs" "${decode_resume[@]}" "${dist[@]}" |
	"$BIN/augment" --train --config "$cfg_file" --batch "$batch_rank" --seed "$seed" ${SIZE:+--size "$SIZE"} |
	TNS_LEVEL=$level "$BIN/forward" --config "$cfg_file" --train --weights "$fifos/params" --grad "$fifos/grad" \
		${threads:+--threads "$threads"} "${fwd_quant[@]}" "${fwd_dist[@]}" |
	TNS_LEVEL=$level "$BIN/loss" --config "$cfg_file" --grad "$fifos/grad" |
	TNS_LEVEL=$level "$BIN/sgd-step" --config "$cfg_file" --run "$run" --params "$fifos/params" "${state[@]}" \
		"${sgd_dist[@]}" \
		--epochs "$epochs" --iters-per-epoch "$iters" --seed "$seed" ${lr:+--lr "$lr"} \
		${MAX_STEPS:+--max-steps "$MAX_STEPS"}
	echo "${PIPESTATUS[@]}" >"$fifos/status"
) &
job=$!
set +m
wait "$job"
read -ra status 2>/dev/null <"$fifos/status" || status=()
set -e
if [ ${#status[@]} -ne ${#stages[@]} ]; then
	say "failed: the stages' job ended without their statuses (killed from outside?); the last checkpoint is $run/latest.tns"
	exit 1
fi
# Every stage stops when one dies (EOF, a closed FIFO or SIGPIPE reaches the others);
# name the ones that failed, leaving out SIGPIPE (141), which only follows another.
# With MAX_STEPS, sgd-step ending first on purpose cuts the others off: not a failure.
if [ -n "${MAX_STEPS:-}" ] && [ "${status[4]}" -eq 0 ]; then
	status=(0 0 0 0 0)
fi
failed=()
for i in "${!stages[@]}"; do
	st=${status[$i]}
	[ "$st" -eq 0 ] || [ "$st" -eq 141 ] && continue
	if [ "$st" -gt 128 ]; then failed+=("${stages[$i]} (killed by signal $((st - 128)))"); else failed+=("${stages[$i]} (exit $st)"); fi
done
if [ ${#failed[@]} -gt 0 ]; then
	say "failed: ${failed[*]}$([ "$ranks" -gt 1 ] && echo " on rank $rank"); the last checkpoint is $run/latest.tns (run the same command to resume)"
	exit 1
fi
[ "$rank" -ne 0 ] || say "done: $run/latest.tns"
exit
}
