#!/usr/bin/env bash
# bench-detect: make detect end to end on the BCCD test images (copied without their
# XML into a flat folder) at SIZE (default 512), batch 1: images/s, then each stage
# alone on the previous stage's saved output, and its share of their sum.
# CKPT: default runs/demo/latest.tns (make demo), else an untrained init (the network's
# cost is the same; its detections, and so the drawing, are not a trained model's).
# Usage: BIN=bin pipelines/bench-detect.sh [DATA [CONFIG]]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:-../shared/data/bccd} cfg=${2:-configs/ssd_mobilenet_fpn_bccd.json}
BIN=${BIN:-bin} size=${SIZE:-512} threads=${THREADS:-$(nproc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/images"
while read -r id; do cp "$data/JPEGImages/$id.jpg" "$tmp/images/"; done <"$data/ImageSets/Main/test.txt"
n=$(ls "$tmp/images" | wc -l)
ckpt=${CKPT:-runs/demo/latest.tns}
if [ ! -f "$ckpt" ]; then
	ckpt=$tmp/init.tns
	"$BIN/forward" --config "$cfg" --init --seed 1 >"$ckpt"
	note=" (untrained init: run make demo for the demo model)"
fi
classes=$(jq -r '.dataset.classes // empty' <<<"$(config_json "$cfg")")
echo "make detect: $n BCCD test JPEGs at $size x $size, batch 1, $threads threads, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "checkpoint $ckpt${note:-}"
t=$(timed "BIN='$BIN' IMAGES='$tmp/images' OUT='$tmp/out' CKPT='$ckpt' SIZE=$size BATCH=1 THREADS=$threads pipelines/detect.sh '$cfg' 2>/dev/null")
printf '  %-46s %7.2f s  %6.1f images/s\n' "end to end (pipelines/detect.sh)" "$t" "$(awk -v n="$n" -v t="$t" 'BEGIN { print n / t }')"
[ "$(ls "$tmp/out"/*.jpg | wc -l)" -eq "$n" ] || { say "expected $n pictures"; exit 1; }

echo "each stage alone on the saved output of the one before:"
stages=(
	"image-decode|'$BIN/image-decode' '$tmp/images' > '$tmp/s1'"
	"augment --eval --pass-images|'$BIN/augment' --eval --pass-images --config '$cfg' --size $size --batch 1 --threads $threads < '$tmp/s1' > '$tmp/s2'"
	"forward|'$BIN/forward' --config '$cfg' --weights '$ckpt' --threads $threads < '$tmp/s2' > '$tmp/s3'"
	"ssd-decode|'$BIN/ssd-decode' --config '$cfg' < '$tmp/s3' > '$tmp/s4'"
	"draw-dets (JPEG)|'$BIN/draw-dets' --out '$tmp/pics' --classes '$classes' < '$tmp/s4' > '$tmp/s5'"
	"dets-json|'$BIN/dets-json' --classes '$classes' --score-thr 0.3 < '$tmp/s5' > '$tmp/d.json'"
)
# wall time, and CPU time (user + sys), which other jobs on a shared machine inflate less
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # as detect.sh runs forward
names=() times=() cpus=()
for s in "${stages[@]}"; do
	names+=("${s%%|*}")
	read -r wall cpu < <(/usr/bin/time -f '%e %U %S' bash -c "set -o pipefail; ${s#*|}" 2>&1 >/dev/null |
		awk 'END { print $1, $2 + $3 }')
	times+=("$wall") cpus+=("$cpu")
done
sum=$(printf '%s\n' "${times[@]}" | awk '{ s += $1 } END { print s }')
csum=$(printf '%s\n' "${cpus[@]}" | awk '{ s += $1 } END { print s }')
printf '  %-32s %9s %7s %10s %7s %12s\n' stage "wall s" share "CPU s" share "ms CPU/image"
for i in "${!names[@]}"; do
	printf '  %-32s %9.2f %6.1f%% %10.2f %6.1f%% %12.1f\n' "${names[$i]}" "${times[$i]}" \
		"$(awk -v a="${times[$i]}" -v s="$sum" 'BEGIN { print 100 * a / s }')" "${cpus[$i]}" \
		"$(awk -v a="${cpus[$i]}" -v s="$csum" 'BEGIN { print 100 * a / s }')" \
		"$(awk -v a="${cpus[$i]}" -v n="$n" 'BEGIN { print 1000 * a / n }')"
done
printf '  %-32s %9.2f %7s %10.2f %7s %12.1f\n' "sum (one after the other)" "$sum" "" "$csum" "" \
	"$(awk -v a="$csum" -v n="$n" 'BEGIN { print 1000 * a / n }')"
echo "  (the pipe runs the stages side by side; $(nproc) CPUs at full use would give $(awk -v a="$csum" -v n="$n" -v c="$(nproc)" 'BEGIN { printf "%.1f", n * c / a }') images/s at this CPU cost)"
