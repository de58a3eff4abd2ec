#!/usr/bin/env bash
# detect: a checkpoint run on plain images, detections out as pictures and JSON:
#
#   image-decode IMAGES | augment --eval --pass-images | forward | ssd-decode
#     | draw-dets --out OUT | dets-json > OUT/detections.json
#
# usage: IMAGES=PATH OUT=DIR pipelines/detect.sh CONFIG
# IMAGES: image files, directories, .tar/.zip archives (several: separated by blanks),
# or - for a list of paths on stdin. OUT: the pictures (OUT/<id>.jpg) and
# OUT/detections.json (one JSON object per image).
# environment (optional): BIN, RUN, CKPT (default RUN/latest.tns), CLASSES (default the
# config's), SCORE (score threshold of pictures and JSON, default 0.3), FORMAT (jpg or
# png), RECURSIVE=1 (directories' subdirectories too), SKIP_BAD=1 (skip corrupt images
# with a warning), SIZE, BATCH (default 1), THREADS, QUANTIZE=1 [INT8=1 BITS= WBITS=
# RANGES= PER_CHANNEL_DW=1] as eval.sh, NP=N (N ranks of mpirun, each on --shard k/N;
# the JSON is put back in image order at the end). Progress on stderr.
{
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
load_config "${1:?usage: IMAGES=PATH OUT=DIR detect.sh CONFIG}"
out=${OUT:?OUT: the directory for the pictures and detections.json}
[ -n "${IMAGES:-}${IMAGES_FROM:-}" ] || { say "IMAGES: image files, directories or archives to run on"; exit 2; }
read -r -a images <<<"$IMAGES"
decode=("$BIN/image-decode")
recursive=$(bool RECURSIVE) skip_bad=$(bool SKIP_BAD)
[ "$recursive" = 0 ] || decode+=(--recursive)
[ "$skip_bad" = 0 ] || decode+=(--skip-bad)
# a list on stdin can be read once only: it is kept for the count and every rank
if [ "$IMAGES" = - ]; then
	mkdir -p "$out"
	IMAGES_FROM=$(mktemp "$out/.list.XXXXXX")
	trap 'rm -f "$IMAGES_FROM"' EXIT
	cat >"$IMAGES_FROM"
	export IMAGES_FROM IMAGES=
	images=()
fi
[ -z "${IMAGES_FROM:-}" ] || decode+=(--files-from "$IMAGES_FROM")

# NP > 1: the ranks write their pictures and a JSON part each; the parts are merged
# here, in image order, once mpirun is done
if [ "${NP:-1}" -gt 1 ] && [ -z "${OMPI_COMM_WORLD_SIZE:-}" ]; then
	mkdir -p "$out"
	rm -f "$out"/.detections.json.rank* # a failed run's parts
	(mpi_ranks "$0" "$@")
	# by index, each line kept as dets-json wrote it (jq would reprint the numbers)
	cat "$out"/.detections.json.rank* >"$out/.detections.json.all"
	paste <(jq -r .index "$out/.detections.json.all") "$out/.detections.json.all" | sort -s -n -k1,1 | cut -f2- \
		>"$out/detections.json.tmp"
	rm -f "$out/.detections.json.all"
	rm -f "$out"/.detections.json.rank*
	mv "$out/detections.json.tmp" "$out/detections.json"
	say "wrote $out/detections.json"
	exit
fi
mpi_ranks "$0" "$@"
ckpt=$(run_checkpoint)
[ -f "$ckpt" ] || { say "$ckpt: no such checkpoint (train first, or set CKPT)"; exit 1; }
quant_args "$ckpt"
threads=$(rank_threads)
shard=() json=$out/detections.json.tmp
[ "$ranks" -le 1 ] || shard=(--shard "$rank/$ranks") json=$out/.detections.json.rank$rank
mkdir -p "$out"
total=$("${decode[@]}" --list "${shard[@]}" "${images[@]}" | wc -l)
[ "$rank" -ne 0 ] || say "$name: $total images$([ "$ranks" -gt 1 ] && echo " on rank 0 of $ranks"), checkpoint $ckpt${quant:+, ${quant[*]}} -> $out"
export TNS_LEVEL=$(pipe_level) # every stage writes to the next one's pipe
"${decode[@]}" "${shard[@]}" "${images[@]}" |
	"$BIN/augment" --eval --pass-images --config "$cfg_file" --batch "${BATCH:-1}" ${SIZE:+--size "$SIZE"} --threads "$threads" |
	"$BIN/forward" --config "$cfg_file" --weights "$ckpt" --threads "$threads" "${quant[@]}" |
	"$BIN/ssd-decode" --config "$cfg_file" --progress "$total" |
	"$BIN/draw-dets" --out "$out" ${classes:+--classes "$classes"} --score-thr "${SCORE:-0.3}" ${FORMAT:+--format "$FORMAT"} |
	"$BIN/dets-json" ${classes:+--classes "$classes"} --score-thr "${SCORE:-0.3}" >"$json"
[ "$ranks" -le 1 ] || exit 0
mv "$json" "$out/detections.json"
say "wrote $total pictures and $out/detections.json"
exit
}
