#!/usr/bin/env bash
# calibrate: post-training quantisation (PTQ) of a float checkpoint, as one pipeline:
#
#   voc-decode | augment | forward --stats | calib-ranges --batches ITERS > ranges.tns
#   fakequant --weights CKPT --ranges ranges.tns > qparams.tns
#
# The activation ranges are TI's: per batch each quantisation point's range with 0.01% of
# each tail trimmed, averaged over the batches (cumulatively, then EMA 0.001); weights
# and biases need no data (fakequant, or forward --quant, quantise them).
# usage: pipelines/calibrate.sh CONFIG
# environment (all optional): BIN, RUN (default runs/<config name>), CKPT (default
# RUN/latest.tns), DATA, CLASSES, SPLIT (default the config's dataset.train_split or
# trainval), ITERS (batches, default 1000 as TI's; the data repeats as needed), BATCH
# (default the config's train.batch or 8), SIZE, AUG (train (default): the training
# augmentation, as TI calibrates on training data; eval: plain resize), BITS (8), WBITS
# (weight bits, default BITS), PER_CHANNEL_DW=1 (depthwise weights per channel), SEED,
# THREADS, OUT (default RUN), BIAS_ITERS (default ITERS; 0: none), FROM_RANGES (start
# from these ranges: no first pass).
# Then TI's bias calibration, a loop like training's:
#
#   voc-decode | augment | tns head -n BIAS_ITERS | forward --stats --quant --bias-calib | calib-ranges
#                                                     ^                                     |
#                                                     +------ params + ranges fifo ---------+
#
# each batch runs float and quantised, and calib-ranges moves every conv's bias by
# (mean_float - mean_quant) * 0.05 * 0.5^pass while the ranges keep averaging.
# QUANTIZE (and the config's "quantize") are read as by every script, and a value that
# is not a boolean is an error; calibration itself always makes the quantised model.
# Writes OUT/ptq.tns (calibrated params + ranges: eval QUANTIZE=1 takes it),
# OUT/ranges.tns and OUT/qparams.tns.
# One brace group, as train.sh: bash reads it all before running any of it.
{
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
load_config "${1:?usage: calibrate.sh CONFIG}"
ckpt=${CKPT:-$run/latest.tns}
split=${SPLIT:-$(cfg .dataset.train_split trainval)}
batch=${BATCH:-$(cfg .train.batch)}
iters=${ITERS:-1000}
aug=${AUG:-train}
out=${OUT:-$run}
[ -n "$data" ] || { say "no data: set DATA or the config's dataset.root"; exit 2; }
decoder "$split"
[ -f "$ckpt" ] || { say "$ckpt: no such checkpoint (train first, or set CKPT)"; exit 1; }
case $aug in train | eval) ;; *) say "AUG=$aug: train or eval"; exit 2 ;; esac
lock_run "$out"       # one writer per run directory (creates it)
stages_follow_driver # the stages stop when this script dies

images=$("${decode_cmd[@]}" --list | wc -l)
[ "$images" -gt 0 ] || { say "$data: no images in split $split"; exit 1; }
per_epoch=$(((images + batch - 1) / batch))
epochs=$(((iters + per_epoch - 1) / per_epoch))
if [ -n "${FROM_RANGES:-}" ]; then
	say "$name: starting from the ranges in $FROM_RANGES, checkpoint $ckpt"
	cp "$FROM_RANGES" "$out/ranges.tns.tmp"
	status=(0 0 0 0)
else
	say "$name: ranges from $iters batches of $batch ($images images of $split, $aug augmentation), checkpoint $ckpt"
	set +e
	"${decode_cmd[@]}" --shuffle --seed "${SEED:-0}" \
		--epochs "$epochs" |
		"$BIN/augment" "--$aug" --config "$cfg_file" --batch "$batch" --seed "${SEED:-0}" ${SIZE:+--size "$SIZE"} |
		"$BIN/forward" --config "$cfg_file" --weights "$ckpt" --stats ${THREADS:+--threads "$THREADS"} |
		"$BIN/calib-ranges" --batches "$iters" >"$out/ranges.tns.tmp"
	status=("${PIPESTATUS[@]}")
	set -e
fi
# calib-ranges ends after ITERS batches and the stages before it then meet a closed
# pipe (SIGPIPE, 141): not a failure
for i in 0 1 2 3; do
	st=${status[$i]}
	if [ "$st" -ne 0 ] && [ "$st" -ne 141 ]; then
		rm -f "$out/ranges.tns.tmp"
		say "failed: stage $((i + 1)) of voc-decode | augment | forward | calib-ranges (exit $st)"
		exit 1
	fi
done
bias_iters=${BIAS_ITERS:-$iters}
final=$ckpt
if [ "$bias_iters" -gt 0 ]; then
	epochs=$(((bias_iters + per_epoch - 1) / per_epoch))
	say "bias calibration over $bias_iters batches"
	fifo_dir calibrate # sets fifos
	trap 'rm -rf "$fifos"' EXIT
	mkfifo "$fifos/params"
	set +e
	"${decode_cmd[@]}" --shuffle \
		--seed "$((${SEED:-0} + 1))" --epochs "$epochs" |
		"$BIN/augment" "--$aug" --config "$cfg_file" --batch "$batch" --seed "$((${SEED:-0} + 1))" \
			${SIZE:+--size "$SIZE"} |
		"$BIN/tns" head -n "$bias_iters" |
		"$BIN/forward" --config "$cfg_file" --weights "$fifos/params" --stats --quant --bias-calib \
			--bits "${BITS:-8}" ${WBITS:+--weight-bits "$WBITS"} "${per_channel_dw[@]}" ${THREADS:+--threads "$THREADS"} |
		"$BIN/calib-ranges" --init "$out/ranges.tns.tmp" --weights "$ckpt" --params "$fifos/params" \
			--save "$out/ptq.tns" >"$out/ranges2.tns.tmp"
	status=("${PIPESTATUS[@]}")
	set -e
	for i in 0 1 2 3 4; do
		st=${status[$i]}
		if [ "$st" -ne 0 ] && { [ "$st" -ne 141 ] || [ "$i" -ge 3 ]; }; then
			rm -f "$out"/*.tns.tmp
			say "failed: bias calibration stage $((i + 1)) (exit $st)"
			exit 1
		fi
	done
	mv "$out/ranges2.tns.tmp" "$out/ranges.tns.tmp"
	final=$out/ptq.tns
fi
mv "$out/ranges.tns.tmp" "$out/ranges.tns"
"$BIN/fakequant" --config "$cfg_file" --weights "$final" --ranges "$out/ranges.tns" --bits "${BITS:-8}" \
	${WBITS:+--weight-bits "$WBITS"} "${per_channel_dw[@]}" >"$out/qparams.tns.tmp"
mv "$out/qparams.tns.tmp" "$out/qparams.tns"
say "wrote $([ "$final" != "$ckpt" ] && echo "$final, ")$out/ranges.tns ($("$BIN/tns" cat --json "$out/ranges.tns" | jq .meta.batches) batches) and $out/qparams.tns"
exit
}
