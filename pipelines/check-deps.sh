#!/usr/bin/env bash
# Checks that what the build links and runs is installed, before the first compile:
# one line per missing Debian package instead of pages of linker errors.
set -u
missing=()
# pkg-config name -> the Debian package that provides it
while read -r pc deb; do
	pkg-config --exists "$pc" 2> /dev/null || missing+=("$deb ($pc)")
done <<'LIST'
libzstd libzstd-dev
libcjson libcjson-dev
libarchive libarchive-dev
libjpeg libjpeg62-turbo-dev
libpng libpng-dev
libexif libexif-dev
expat libexpat1-dev
openblas libopenblas-dev
libprotobuf-c libprotobuf-c-dev
ompi-c libopenmpi-dev
cairo libcairo2-dev
fontconfig libfontconfig-dev
LIST
command -v pkg-config > /dev/null || missing=("pkg-config (the build asks it for every library's flags)")
command -v protoc-c > /dev/null || missing+=("protobuf-c-compiler (protoc-c)")
[ -f "${ONNX_PROTO:-/usr/include/onnx/onnx.proto}" ] || missing+=("libonnx-dev (onnx.proto)")
[ ${#missing[@]} -eq 0 ] && exit 0
for m in "${missing[@]}"; do
	echo "build: missing Debian package $m" >&2
done
echo "build: \`make setup\` installs them (or: make setup <target>, in one command)" >&2
exit 1
