#!/usr/bin/env bash
# Installs what building, testing and the demo need, from Debian's packages only.
set -euo pipefail
pkgs=(
	make gcc pkg-config          # build
	libzstd-dev zstd             # stream framing (zstd CLI: tests inspect streams)
	libcjson-dev                 # record headers, configs
	libarchive-dev               # VOC from .tar/.tar.gz/.zip
	libjpeg62-turbo-dev libpng-dev libexpat1-dev   # images and annotations
	libexif-dev                  # JPEG EXIF orientation, applied as OpenCV's imread does
	libopenblas-dev              # sgemm for the convolutions
	bats jq                      # shell tests
	gnuplot-nox                  # make plot
	python3 python3-numpy python3-pil python3-zstandard   # tests that build odd images and read streams
	libprotobuf-c-dev protobuf-c-compiler libonnx-dev     # tidl-pack: ONNX messages from Debian's onnx.proto
	python3-onnx                 # tests: the ONNX checker
	protobuf-compiler python3-protobuf   # tests: exported prototxts parsed with our TIDL schema (tests/proto)
	openmpi-bin libopenmpi-dev   # data-parallel training and sharded eval (NP=N)
	libcairo2-dev fonts-dejavu-core   # draw-dets: cairo (and libfontconfig-dev with it), labels in DejaVu Sans
	clang libclang-rt-14-dev     # the fuzz harnesses (libFuzzer): make fuzz, and make test's corpus replay
)
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > /dev/null
echo "setup: installed ${#pkgs[@]} packages"

# ONNX Runtime for the export tests (tests/ort_run.js): the npm package, into build/ort
# (not global). Its install script only fetches optional GPU files, so it is skipped.
ORT_VERSION=1.30.0
ort=$(dirname "$0")/../build/ort
if [ ! -f "$ort/node_modules/onnxruntime-node/package.json" ]; then
	command -v npm > /dev/null || $sudo apt-get install -y -qq --no-install-recommends nodejs npm > /dev/null
	mkdir -p "$ort"
	npm install --prefix "$ort" --no-save --ignore-scripts --no-audit --no-fund --loglevel=error \
		"onnxruntime-node@$ORT_VERSION" > /dev/null
	echo "setup: onnxruntime-node $ORT_VERSION in build/ort"
fi
