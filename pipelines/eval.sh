#!/usr/bin/env bash
# eval: the mAP of a checkpoint on the test split, as one pipeline of tools:
#
#   voc-decode --split test | augment --eval | forward | ssd-decode | map-eval
#
# usage: pipelines/eval.sh CONFIG
# environment (all optional): BIN, RUN (default runs/<config name>), CKPT (default
# RUN/latest.tns), DATA, CLASSES, SPLIT (default the config's dataset.test_split or
# test), SIZE, BATCH (default 8), NP (MPI ranks, default 1), THREADS,
# MODE (11points or area), OUT (default RUN/eval), METRIC (voc, default, or coco: COCO's
# 12 numbers under mmdet's names in OUT.json, and the dets as a COCO results file
# RUN/results.bbox.json, results_quant... when quantised; a coco dataset's own
# ann_file gives the ground truth).
# QUANTIZE=1 (or true/yes/on, or the config's "quantize"): the fake-quantised model (forward --quant, BITS default 8; WBITS: the
# conv weights at fewer bits, as 4 with 8; PER_CHANNEL_DW=1: depthwise weights at a
# scale per channel). CKPT defaults
# to RUN/ptq.tns when pipelines/calibrate.sh made one (bias-calibrated params and
# ranges); a QAT checkpoint carries its ranges too; otherwise RANGES (default
# RUN/ranges.tns) goes with CKPT. OUT defaults to RUN/eval_quant. INT8=1 (with
# QUANTIZE=1): the same model on integers (forward --int8: at 8 bits the same mAP; at
# BITS=16 exact where the simulation rounds), OUT RUN/eval_int8 (eval_int16).
# Writes OUT.json and OUT.txt (mmdet's table). With NP=N (or under mpirun -np N), N
# ranks each run the pipeline on --shard k/N and map-eval --mpi gathers their dets on
# rank 0, which writes OUT: the same mAP as one pipeline (docs/distributed.md).
# One brace group, as train.sh: bash reads it all before running any of it.
{
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
load_config "${1:?usage: eval.sh CONFIG}"
stages_follow_driver # the stages stop when this script dies
mpi_ranks "$0" "$@"
ckpt=$(run_checkpoint)
split=${SPLIT:-$(cfg .dataset.test_split test)}
quant_args "$ckpt" # forward's --quant/--int8 flags (lib.sh), as detect.sh's
suffix=
if [ "$quantize" = 1 ]; then
	suffix=_quant
	if [ "$int8" = 1 ]; then suffix=_int${BITS:-8}; fi
fi
out=${OUT:-$run/eval$suffix}
[ -n "$data" ] || { say "no data: set DATA or the config's dataset.root"; exit 2; }
decoder "$split"
[ -f "$ckpt" ] || { say "$ckpt: no such checkpoint (train first, or set CKPT)"; exit 1; }
mkdir -p "$run"

images=$("${decode_cmd[@]}" --list | wc -l)
[ "$rank" -ne 0 ] || say "$name: $images images of $split, checkpoint $ckpt$([ "$ranks" -gt 1 ] && echo ", $ranks ranks")${quant:+, quantised: ${quant[*]}}"
threads=$(rank_threads)
metric=()
case ${METRIC:-voc} in voc | coco) ;; *) say "METRIC=$METRIC: voc or coco"; exit 2 ;; esac
if [ "${METRIC:-voc}" = coco ]; then
	ann=$(coco_file "$split" ann_file)
	metric=(--metric coco ${ann:+--ann "$ann"} --results "$(dirname "$out")/results$suffix.bbox.json")
fi
shard=() gather=() table=$out.txt.tmp
[ "$ranks" -le 1 ] || shard=(--shard "$rank/$ranks") gather=(--mpi)
[ "$rank" -eq 0 ] || table=/dev/null # rank 0 alone writes OUT
mkdir -p "$(dirname "$out")"
export TNS_LEVEL=$(pipe_level) # every stage writes to the next one's pipe
"${decode_cmd[@]}" "${shard[@]}" --threads "$threads" |
	"$BIN/augment" --eval --config "$cfg_file" --batch "${BATCH:-8}" ${SIZE:+--size "$SIZE"} --threads "$threads" |
	"$BIN/forward" --config "$cfg_file" --weights "$ckpt" --threads "$threads" "${quant[@]}" |
	"$BIN/ssd-decode" --config "$cfg_file" --progress $(((images - rank + ranks - 1) / ranks)) |
	"$BIN/map-eval" ${classes:+--classes "$classes"} ${MODE:+--mode "$MODE"} --json "$out.json" "${metric[@]}" "${gather[@]}" \
		>"$table"
[ "$rank" -eq 0 ] || exit 0
cat "$out.txt.tmp"
mv "$out.txt.tmp" "$out.txt"
say "wrote $out.txt and $out.json"
exit
}
