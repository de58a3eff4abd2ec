#!/usr/bin/env bats
# tns: the inspector, on streams written by the library's own test fixture.

load helpers

setup() {
	# three records: params (f32+i8), image (u8), end (no tensors)
	f=$BATS_TEST_TMPDIR/s.tns
	cp "$ROOT/tests/fixtures/stream/three.tns" "$f"
}

@test "tns --help prints usage and exits 0" {
	run "$BIN/tns" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"tns ls"* ]]
	[[ "$output" == *"tns stats"* ]]
}

@test "tns without a command or with an unknown one is a usage error (2)" {
	run "$BIN/tns"
	[ "$status" -eq 2 ]
	run "$BIN/tns" frobnicate
	[ "$status" -eq 2 ]
	[[ "$output" == *"unknown command 'frobnicate'"* ]]
}

@test "tns ls: one line per record with kind, tensors and meta" {
	run "$BIN/tns" ls "$f"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[0]}" == *"params"*"w:f32[3,4]"*"b:i8[2]"*'"step":7'* ]]
	[[ "${lines[1]}" == *"image"*"image:u8[3,2,2]"* ]]
	[[ "${lines[2]}" == *"end"* ]]
}

@test "tns ls reads stdin and concatenated streams" {
	run bash -c "cat '$f' '$f' | '$BIN/tns' ls"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 6 ]
	[[ "${lines[5]}" == *"   6 end"* ]]
}

@test "tns cat --json emits headers as JSON lines for jq" {
	run bash -c "'$BIN/tns' cat --json '$f' | jq -r '.kind + \" \" + ((.tensors | length) | tostring)'"
	[ "$status" -eq 0 ]
	[ "$output" = $'params 2\nimage 1\nend 0' ]
	run bash -c "'$BIN/tns' cat --json '$f' | jq -c 'select(.kind==\"params\") | .tensors[0].shape'"
	[ "$output" = "[3,4]" ]
}

@test "tns cat copies records unchanged; tns head -n keeps the first N" {
	"$BIN/tns" cat "$f" "$f" > "$BATS_TEST_TMPDIR/two.tns"
	cat "$f" "$f" | cmp - "$BATS_TEST_TMPDIR/two.tns"
	"$BIN/tns" head -n 2 "$f" > "$BATS_TEST_TMPDIR/h.tns"
	run "$BIN/tns" ls "$BATS_TEST_TMPDIR/h.tns"
	[ "${#lines[@]}" -eq 2 ]
	"$BIN/tns" head -n 0 "$f" > "$BATS_TEST_TMPDIR/h0.tns"
	[ ! -s "$BATS_TEST_TMPDIR/h0.tns" ]
}

@test "a stream is plain zstd: zstd -dc shows the TNS1 headers" {
	run bash -c "zstd -dc '$f' | head -c 4"
	[ "$output" = "TNS1" ]
}

@test "tns stats: min, max, mean per tensor" {
	run "$BIN/tns" stats "$f"
	[ "$status" -eq 0 ]
	[[ "$output" == *"w "*"min 0 "*"max 11 "*"mean 5.5 "* ]]
	[[ "$output" == *"image "*"min 0 "*"max 255 "* ]]
}

@test "binary output to a terminal is refused" {
	command -v script >/dev/null || skip "no script(1)"
	run script -qec "'$BIN/tns' cat '$f'" /dev/null
	[[ "$output" == *"refusing to write a binary stream to a terminal"* ]]
}

@test "truncated stream: error names the record, exit 1, earlier records still listed" {
	size=$(stat -c %s "$f")
	first=$("$BIN/tns" head -n 1 "$f" | wc -c)
	for cut in 1 5 $((first - 1)) $((first + 3)) $((size - 1)); do
		head -c "$cut" "$f" > "$BATS_TEST_TMPDIR/cut.tns"
		run "$BIN/tns" ls "$BATS_TEST_TMPDIR/cut.tns"
		[ "$status" -eq 1 ]
		[[ "$output" == *"tns: $BATS_TEST_TMPDIR/cut.tns: record "[123]": "* ]]
	done
	head -c $((first + 3)) "$f" > "$BATS_TEST_TMPDIR/cut.tns"
	run "$BIN/tns" ls "$BATS_TEST_TMPDIR/cut.tns"
	[[ "$output" == *"params"* ]]
	[[ "$output" == *"record 2: truncated record"* ]]
}

@test "corrupt and foreign input: clear errors" {
	printf 'hello, world' > "$BATS_TEST_TMPDIR/junk"
	run "$BIN/tns" ls "$BATS_TEST_TMPDIR/junk"
	[ "$status" -eq 1 ]
	[[ "$output" == *"record 1: not a tns stream"* ]]
	cp "$f" "$BATS_TEST_TMPDIR/flip.tns"
	printf '\xff' | dd of="$BATS_TEST_TMPDIR/flip.tns" bs=1 seek=40 conv=notrunc 2>/dev/null
	run "$BIN/tns" ls "$BATS_TEST_TMPDIR/flip.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"record 1: "* ]]
	run "$BIN/tns" ls "$BATS_TEST_TMPDIR/does-not-exist"
	[ "$status" -eq 1 ]
	[[ "$output" == *"does-not-exist: No such file or directory"* ]]
}

@test "oversized record is refused before allocation (TNS_MAX_RECORD)" {
	TNS_MAX_RECORD=100 run "$BIN/tns" ls "$f"
	[ "$status" -eq 1 ]
	[[ "$output" == *"record 1: oversized record"* ]]
}
