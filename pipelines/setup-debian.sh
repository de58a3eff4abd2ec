#!/usr/bin/env bash
# Installs what building, testing and the demo need, from Debian's packages only.
set -euo pipefail
pkgs=(
	make gcc pkg-config          # build
	libzstd-dev zstd             # stream framing (zstd CLI: tests inspect streams)
	libcjson-dev                 # record headers, configs
	libarchive-dev               # VOC from .tar/.tar.gz/.zip
	libjpeg62-turbo-dev libpng-dev libexpat1-dev   # images and annotations
	libopenblas-dev              # sgemm for the convolutions
	bats jq                      # shell tests
	gnuplot-nox                  # make plot
	python3 python3-numpy python3-pil python3-zstandard   # tests that build odd images and read streams
)
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > /dev/null
echo "setup: installed ${#pkgs[@]} packages"
