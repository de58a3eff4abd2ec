#!/usr/bin/env bash
# bench-coco: what COCO costs.
# 1. COCO eval of val2017's size: 5,000 images x 100 dets x 80 classes (~7 gts each,
#    bench/gen_dets), map-eval --metric coco with gts from the records (the same
#    evaluation as with --ann; pycocotools takes 20-60 s for this on one core).
# 2. Reading an instances_train2017-sized annotation file (bench/gen_coco_json.py:
#    118,287 images, 860,001 annotations, 448 MiB; made once in BENCH): coco-decode --list,
#    peak RSS and time from /usr/bin/time -v.
# Wall times depend on what else runs; CPU times (user + sys) are printed beside them.
# Usage: BIN=bin BENCH=build/bench pipelines/bench-coco.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
BIN=${BIN:-bin} BENCH=${BENCH:-build/bench}
[ -x "$BENCH/gen_dets" ] || make -s "$BENCH/gen_dets" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# measured CMD...: "wall s, cpu s, peak RSS MB" of one run (its output discarded)
measured() {
	/usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$@" >/dev/null
	awk '{ printf "%7.2f s wall, %6.2f s CPU, %6.0f MB peak RSS", $1, $2 + $3, $4 / 1024 }' "$tmp/time"
}

echo "COCO eval, 5000 images x 100 dets x 80 classes, $(nproc) CPUs (load $(cut -d' ' -f1 /proc/loadavg)):"
seq 1 80 | sed 's/^/class/' >"$tmp/classes"
"$BENCH/gen_dets" 5000 80 100 7 >"$tmp/dets.tns"
printf '  %-34s %s\n' "tns cat (reading the stream alone)" "$(measured "$BIN/tns" cat "$tmp/dets.tns")"
printf '  %-34s %s\n' "map-eval --metric coco" "$(measured "$BIN/map-eval" --metric coco --classes "$tmp/classes" "$tmp/dets.tns")"
printf '  %-34s %s\n' "map-eval --metric coco --results" \
	"$(measured "$BIN/map-eval" --metric coco --classes "$tmp/classes" --results "$tmp/r.json" "$tmp/dets.tns")"

big=$BENCH/coco_big.json
if [ ! -f "$big" ]; then
	echo "generating $big (once; about a minute)"
	/usr/bin/python3 bench/gen_coco_json.py "$big" 470 "$BENCH/coco_big_images"
fi
echo
echo "reading $(du -m "$big" | cut -f1) MiB of COCO annotations (118,287 images, 860,001 boxes):"
printf '  %-34s %s\n' "coco-decode --list" "$(measured "$BIN/coco-decode" "$big" "$BENCH/coco_big_images" --list)"
