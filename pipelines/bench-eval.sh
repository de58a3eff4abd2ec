#!/usr/bin/env bash
# bench-eval: what evaluation costs. Times map-eval on a generated dets stream of VOC07
# test's size (4,952 images, 20 classes, 200 dets and ~3 gts per image) and ssd-decode per
# image at SIZE (default 512) on generated preds (bench/gen_pred: the gts of a real
# dataset's test split encoded on the anchors, plus noise, 20 classes), then checks the
# chain on real data: voc-decode | augment --eval | gen_pred | ssd-decode | map-eval
# with noise-free preds must find (nearly) every gt.
# Usage: BIN=bin BENCH=build/bench pipelines/bench-eval.sh [DATA [CLASSES [SIZE]]]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:-../shared/data/bccd} classes=${2:-configs/bccd.classes} size=${3:-512}
BIN=${BIN:-bin} BENCH=${BENCH:-build/bench}
for t in gen_dets gen_pred; do
	[ -x "$BENCH/$t" ] || make -s "$BENCH/$t" >/dev/null
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ncls=$(grep -c . "$classes")

echo "map-eval on 4952 generated images (20 classes, 200 dets, ~3 gts each), $(nproc) CPUs:"
t=$(timed "'$BENCH/gen_dets' 4952 20 200 3 > '$tmp/dets.tns'")
printf '  %-44s %7.3f s  (%s MB)\n' "generate" "$t" "$(du -m "$tmp/dets.tns" | cut -f1)"
printf '  %-44s %7.3f s\n' "tns cat (reading the stream alone)" "$(timed "'$BIN/tns' cat '$tmp/dets.tns'")"
printf '  %-44s %7.3f s\n' "map-eval --mode 11points" "$(timed "'$BIN/map-eval' '$tmp/dets.tns'")"
printf '  %-44s %7.3f s\n' "map-eval --mode area --json" "$(timed "'$BIN/map-eval' --mode area --json '$tmp/r.json' '$tmp/dets.tns'")"

echo
dec="'$BIN/voc-decode' '$data' --split test --classes '$classes'"
n=$(bash -c "$dec --list" | wc -l)
echo "ssd-decode at $size x $size, 20 classes, $n images (preds from $data test, noise 1):"
bash -c "$dec | '$BIN/augment' --eval --size $size | '$BENCH/gen_pred' 20 1" >"$tmp/pred.tns"
tr=$(timed "'$BIN/tns' cat '$tmp/pred.tns'")
td=$(timed "'$BIN/ssd-decode' < '$tmp/pred.tns'")
awk -v n="$n" -v tr="$tr" -v td="$td" -v mb="$(du -m "$tmp/pred.tns" | cut -f1)" 'BEGIN {
	printf "  %-44s %7.3f s  %6.2f ms/image (%d MB of preds)\n", "tns cat (reading the preds alone)", tr, 1000 * tr / n, mb
	printf "  %-44s %7.3f s  %6.2f ms/image\n", "ssd-decode", td, 1000 * td / n
	printf "  %-44s %7s    %6.2f ms/image\n", "ssd-decode minus reading", "", 1000 * (td - tr) / n }'
"$BIN/ssd-decode" <"$tmp/pred.tns" | "$BIN/tns" stats | awk '$1 == "scores" { n++; d += substr($2, 5) + 0 } END { printf "  (%.0f dets per image kept)\n", d / n }'

echo
echo "real data: voc-decode | augment --eval --size 320 | gen_pred (no noise) | ssd-decode | map-eval:"
bash -c "set -o pipefail; $dec | '$BIN/augment' --eval --size 320 | '$BENCH/gen_pred' $ncls | '$BIN/ssd-decode' | '$BIN/map-eval' --classes '$classes'"
