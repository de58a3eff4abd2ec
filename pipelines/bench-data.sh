#!/usr/bin/env bash
# bench-data: images/s of the data stages on a real VOC dataset, and the cost of the
# stream framing. Usage: BIN=bin BENCH=build/bench pipelines/bench-data.sh DATA CLASSES [SIZE]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
data=${1:?usage: bench-data.sh DATA CLASSES [SIZE]} classes=${2:?classes file} size=${3:-512}
BIN=${BIN:-bin} BENCH=${BENCH:-build/bench}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

split=trainval
n=$("$BIN/voc-decode" "$data" --split $split --classes "$classes" --list | wc -l)
printf 'data: %s, split %s, %d images, %d CPUs, size %d\n\n' "$data" "$split" "$n" "$(nproc)" "$size"

row() { # label, pipeline
	local t
	t=$(timed "$2")
	awk -v l="$1" -v n="$n" -v t="$t" 'BEGIN { printf "%-44s %8.1f images/s  (%.2f s)\n", l, n / t, t }'
}

dec="'$BIN/voc-decode' '$data' --split $split --classes '$classes'"
row "voc-decode (1 thread)" "$dec --threads 1"
row "voc-decode (default threads)" "$dec"
row "voc-decode | augment --train (1 thread)" "$dec | '$BIN/augment' --train --size $size --seed 1 --threads 1"
row "voc-decode | augment --train" "$dec | '$BIN/augment' --train --size $size --seed 1"
row "voc-decode | augment --eval" "$dec | '$BIN/augment' --eval --size $size"

echo
echo "stream framing on $size x $size training batches (uncompressed MB/s through the library):"
bash -c "$dec --limit 64 | '$BIN/augment' --train --size $size --seed 1" > "$tmp/batches.tns"
"$BENCH/bench_stream" "$tmp/batches.tns" -5 1 3
