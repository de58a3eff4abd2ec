#!/usr/bin/env bats
# The config as the pipeline scripts read it: pipelines/lib.sh's load_config and cfg,
# which take the config from sgd-step --print-config (bases merged and the training
# defaults filled in C), against the rules the scripts kept in jq before: the "base"
# chain merged with jq's `*` and each script's own defaults. Every value the scripts
# read must come out the same, for every config in configs/ and the test pipelines'.

load helpers

setup() {
	cd "$ROOT"
	export BIN
}

# The reference: the merge and the defaults as the scripts had them in jq.
ref_json() {
	local f=$1 base
	base=$(jq -r '.base // empty' "$f") || return 1
	if [ -z "$base" ]; then
		cat "$f"
		return
	fi
	case $base in /*) ;; *) base=$(dirname "$f")/$base ;; esac
	jq -s '.[0] * (.[1] | del(.base))' <(ref_json "$base") "$f"
}
ref_get() { # KEY DEFAULT of $J
	local v
	v=$(jq -r "$1 // empty" <<<"$J")
	echo "${v:-$2}"
}
ref_values() { # CONFIG [NAME]: what the scripts read, as the old scripts resolved it
	local J epochs s k
	J=$(ref_json "$1")
	epochs=$(ref_get .train.epochs 24)
	echo "name=$(ref_get .name "${2:-$(basename "$1" .json)}")"
	echo "root=$(ref_get .dataset.root "")"
	echo "classes=$(ref_get .dataset.classes "")"
	echo "quantize=$(ref_get .quantize 0)"
	echo "type=$(ref_get .dataset.type voc)"
	echo "train_split=$(ref_get .dataset.train_split trainval)"
	echo "test_split=$(ref_get .dataset.test_split test)"
	echo "epochs=$epochs"
	echo "batch=$(ref_get .train.batch 8)"
	echo "qat.epochs=$(ref_get .qat.epochs $((epochs / 4 > 0 ? epochs / 4 : 1)))"
	echo "qat.lr=$(ref_get .qat.lr "$(jq -rn --argjson l "$(ref_get .train.optimizer.lr 0.04)" '$l / 10')")"
	for s in train val test; do
		for k in ann_file img_prefix; do echo "$s.$k=$(ref_get ".dataset[\"$s\"].$k" "")"; done
		echo "$s.filter_empty_gt=$(ref_get ".dataset[\"$s\"].filter_empty_gt" false)"
	done
}

# The same values as the scripts read them now (the expressions of lib.sh, train.sh and
# calibrate.sh, eval.sh).
new_values() { # CONFIG
	(
		set -e
		. "$ROOT/pipelines/lib.sh"
		load_config "$1"
		echo "name=$name"
		echo "root=$(cfg .dataset.root "")"
		echo "classes=$(cfg .dataset.classes "")"
		echo "quantize=$(cfg .quantize 0)"
		echo "type=$(cfg .dataset.type voc)"
		echo "train_split=$(cfg .dataset.train_split trainval)"
		echo "test_split=$(cfg .dataset.test_split test)"
		echo "epochs=$(cfg .train.epochs)"
		echo "batch=$(cfg .train.batch)"
		echo "qat.epochs=$(cfg .qat.epochs)"
		echo "qat.lr=$(cfg .qat.lr)"
		for s in train val test; do
			for k in ann_file img_prefix; do echo "$s.$k=$(cfg ".dataset[\"$s\"].$k" "")"; done
			echo "$s.filter_empty_gt=$(cfg ".dataset[\"$s\"].filter_empty_gt" false)"
		done
	)
}

CONFIGS="configs/*.json tests/fixtures/pipeline/*.json"

@test "config: every config resolves to the values the scripts read before, defaults included" {
	local n=0 f
	for f in $CONFIGS; do
		diff <(ref_values "$f") <(new_values "$f") || { echo "differs: $f"; false; }
		n=$((n + 1))
	done
	[ "$n" -ge 11 ]
	# the training defaults, where a config gives none (lib/train/optim.c)
	ref_values configs/ssd_mobilenet_fpn.json | grep -qx 'epochs=24'
	new_values configs/ssd_mobilenet_fpn.json | grep -qx 'batch=8'
	new_values configs/ssd_mobilenet_fpn.json | grep -qx 'qat.lr=0.004'
}

@test "config: the test above covers every key the scripts read with cfg" {
	local keys
	keys=$(grep -ho 'cfg "\?\.[][a-z_."\\$0-9]*' pipelines/*.sh | sed -E 's/^cfg "?//; s/\\"/"/g; s/"$//' | sort -u)
	[ -n "$keys" ]
	while read -r k; do
		case $k in
		.name | .dataset.root | .dataset.classes | .quantize | .dataset.type | .dataset.train_split | \
			.dataset.test_split | .train.epochs | .train.batch | .qat.epochs | .qat.lr) ;;
		'.dataset["$1"].$2' | '.dataset["$1"].filter_empty_gt') ;; # coco_file, decoder: per split
		*) echo "a key config.bats does not check: $k"; false ;;
		esac
	done <<<"$keys"
}

@test "config: a piped config gives what its file gives (a relative base from the current directory)" {
	local f=configs/ssd_mobilenet_fpn_bccd.json
	diff <(ref_values "$f") <(new_values <(ref_json "$f"))
	diff <(ref_values configs/ssd_resnet_fpn_bccd.json) <(cd configs && new_values <(cat ssd_resnet_fpn_bccd.json))
}

@test "config: sgd-step --print-config" {
	run "$BIN/sgd-step" --print-config
	[ "$status" -eq 0 ]
	[ "$(jq -c '[.train.optimizer.lr, .train.epochs, .train.batch, .train.lr_config.policy, .qat]' <<<"$output")" = \
		'[0.04,24,8,"cosine",{"epochs":6,"lr":0.004}]' ]
	# what it prints reads back as the same training config
	"$BIN/sgd-step" --print-config --config configs/ssd512_vgg16_bccd.json >"$BATS_TEST_TMPDIR/c.json"
	diff <("$BIN/sgd-step" --print-config --config configs/ssd512_vgg16_bccd.json) \
		<("$BIN/sgd-step" --print-config --config "$BATS_TEST_TMPDIR/c.json")
	[ "$(jq -r .base "$BATS_TEST_TMPDIR/c.json")" = null ]
	# bad configs and usage
	echo '{"train": {"epochs": 0}}' >"$BATS_TEST_TMPDIR/bad.json"
	run "$BIN/sgd-step" --print-config --config "$BATS_TEST_TMPDIR/bad.json"
	[ "$status" -eq 1 ]
	[ "$output" = "sgd-step: $BATS_TEST_TMPDIR/bad.json: train.epochs: expected a number in [1, 1.07374e+09]" ]
	run "$BIN/sgd-step" --print-config --config /nonexistent.json
	[ "$status" -eq 1 ] && [[ "$output" == "sgd-step: /nonexistent.json: "* ]]
	run "$BIN/sgd-step" --print-config --lr 0.1
	[ "$status" -eq 2 ]
	# and load_config stops at a bad config, naming it
	run bash -c '. pipelines/lib.sh && load_config "$1" && echo reached' _ "$BATS_TEST_TMPDIR/bad.json"
	[ "$status" -ne 0 ] && [[ "$output" == *"bad.json: train.epochs"* ]] && [[ "$output" != *reached* ]]
}
