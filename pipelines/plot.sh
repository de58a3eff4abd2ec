#!/usr/bin/env bash
# plot: the loss and mAP curves of a training run, as RUN/curves.png.
# Losses come from RUN/metrics.jsonl; the mAP from evaluating the epoch checkpoints
# (RUN/epoch_K.tns), each once: results are kept in RUN/evals/epoch_K.json. At most
# POINTS (default 10) checkpoints are evaluated, evenly spread, the last always.
# usage: pipelines/plot.sh CONFIG   (environment: BIN, RUN, POINTS, and eval.sh's)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
load_config "${1:?usage: plot.sh CONFIG}"
[ -s "$run/metrics.jsonl" ] || { say "$run/metrics.jsonl: no training metrics (train first)"; exit 1; }
command -v gnuplot >/dev/null || { say "gnuplot is not installed (make setup installs it)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

jq -r '[.step, .loss, .loss_cls, .loss_bbox] | @tsv' "$run/metrics.jsonl" >"$tmp/loss.tsv"
mapfile -t epochs < <(ls "$run" | sed -n 's/^epoch_\([0-9]*\)\.tns$/\1/p' | sort -n)
n=${#epochs[@]} points=${POINTS:-10}
: >"$tmp/map.tsv"
if [ "$n" -gt 0 ]; then
	stride=$(((n + points - 1) / points))
	for ((i = n - 1; i >= 0; i -= stride)); do
		e=${epochs[$i]}
		if [ ! -f "$run/evals/epoch_$e.json" ]; then
			say "evaluating epoch $e"
			RUN=$run CKPT=$run/epoch_$e.tns OUT=$run/evals/epoch_$e "$here/eval.sh" "$cfg_file" >/dev/null
		fi
		printf '%s\t%s\n' "$e" "$(jq .mAP "$run/evals/epoch_$e.json")" >>"$tmp/map.tsv"
	done
	sort -n "$tmp/map.tsv" -o "$tmp/map.tsv"
fi

gnuplot <<GP
set terminal pngcairo size 1100,420 font ",10" noenhanced
set output "$run/curves.png.tmp"
set multiplot layout 1,2 title "$name ($run)"
set grid
set xlabel "step"
set ylabel "loss"
plot "$tmp/loss.tsv" using 1:2 with lines lw 1 lc rgb "#999999" title "loss", \
     "" using 1:3 with lines lw 1 title "cls", \
     "" using 1:4 with lines lw 1 title "reg"
set xlabel "epoch"
set ylabel "mAP (VOC07 11-point)"
set key bottom right
set yrange [0:*]
$( [ -s "$tmp/map.tsv" ] && echo "plot \"$tmp/map.tsv\" using 1:2 with linespoints pt 7 title \"mAP\"" || echo 'set label "no epoch checkpoints" at graph 0.3,0.5; plot [0:1][0:1] 2 notitle' )
unset multiplot
GP
mv "$run/curves.png.tmp" "$run/curves.png"
say "wrote $run/curves.png"
