#!/usr/bin/env bats
# The library's layers (docs/architecture.md): each folder of lib/ includes only its own
# headers and those of the layers below it, and only lib/tool may end the process.

setup() {
	cd "$BATS_TEST_DIRNAME/../.."
}

# may_include LAYER: the layers LAYER's files may include besides its own
may_include() {
	case $1 in
	core) echo "" ;;
	kernels | data | ssd) echo "core" ;;
	tool) echo "core kernels data ssd nn quant train eval export" ;;
	nn) echo "core kernels ssd" ;;
	quant) echo "core kernels nn" ;;
	train) echo "core kernels nn quant" ;;
	eval) echo "core data ssd" ;;
	export) echo "core kernels nn quant ssd" ;;
	*) return 1 ;;
	esac
}

@test "every lib/ folder is a known layer" {
	for d in lib/*/; do
		l=$(basename "$d")
		may_include "$l" >/dev/null || { echo "lib/$l: not a layer of docs/architecture.md"; return 1; }
	done
	[ -z "$(find lib -maxdepth 1 -type f -name '*.[ch]')" ] || { echo "files directly in lib/: $(find lib -maxdepth 1 -type f)"; return 1; }
}

@test "a layer includes only itself and the layers below it" {
	bad=
	for d in lib/*/; do
		l=$(basename "$d") allowed=" $l $(may_include "$(basename "$d")") "
		while IFS=: read -r file line inc; do
			dep=${inc#*\"}
			dep=${dep%%/*}
			case $allowed in *" $dep "*) ;; *) bad+="$file:$line: $inc ($l may include:$allowed)"$'\n' ;; esac
		done < <(grep -Hn '^#include "[a-z_]*/' "$d"*.[ch])
	done
	[ -z "$bad" ] || { printf '%s' "$bad"; return 1; }
}

@test "headers name their layer: no bare library include" {
	run grep -Hn '^#include "[a-z_]*\.h"' lib/*/*.[ch] src/*.c
	# the one generated header (protoc-c's) lives outside lib/
	bad=$(printf '%s\n' "$output" | grep -v 'onnx.pb-c.h' || true)
	[ -z "$bad" ] || { echo "$bad"; return 1; }
}

@test "only lib/tool ends the process" {
	run grep -Hn -E '\b(exit|_exit|abort)\(' lib/core lib/kernels lib/data lib/ssd lib/nn lib/quant lib/train lib/eval lib/export -r --include=*.c
	bad=$(printf '%s\n' "$output" | grep -v -E '^[^:]+:[0-9]+:\s*(/\*|\*)' || true)
	[ -z "$bad" ] || { echo "$bad"; return 1; }
}
