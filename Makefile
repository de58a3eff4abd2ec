# ssd-tools: SSD detectors as a pipeline of small Unix tools. See README.md.

TOOLS   := tns voc-decode augment forward loss sgd-step calib-ranges fakequant ssd-decode map-eval
PKGS    := libzstd libcjson libarchive libjpeg libpng expat openblas
ARCH    ?= -march=native
OPT     ?= -O2
CC      ?= cc
CFLAGS  ?= $(OPT) -g $(ARCH)
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter -Werror=implicit-function-declaration
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -fopenmp $(WARN) -Ilib $(shell pkg-config --cflags $(PKGS)) $(CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm -pthread -fopenmp

# BUILD holds objects; BIN the executables. The sanitizer build uses its own pair.
BUILD   ?= build
BIN     ?= bin

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(BUILD)/lib/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

all: $(TOOLS:%=$(BIN)/%)

$(BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h) | $(BUILD)/lib
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/libssd.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

$(BIN)/%: src/%.c $(BUILD)/libssd.a $(wildcard lib/*.h) | $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libssd.a $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(BUILD)/libssd.a | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libssd.a $(LDLIBS)

$(BUILD)/lib $(BUILD)/tests $(BUILD)/bench $(BIN):
	mkdir -p $@

$(BUILD)/bench/%: bench/%.c $(BUILD)/libssd.a | $(BUILD)/bench
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libssd.a $(LDLIBS)

units: $(UNIT_BIN)

# Unit tests and bats tests against this build.
test-quick: all units
	BIN=$(abspath $(BIN)) UNITS=$(abspath $(BUILD)/tests) tests/run

SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined $(ARCH)
test-san:
	$(MAKE) BUILD=build/san BIN=build/san/bin CFLAGS="$(SAN_FLAGS)" test-quick

# What CI runs: the tests on the normal build, then again under ASan+UBSan.
test: test-quick test-san

# ---- training and evaluation: make train PIPELINE=<configs/NAME.json> [EPOCHS= BATCH= SIZE=
# DATA= CLASSES= LR= SEED= RUN= NP= CKPT= QUANTIZE=1 BITS= RANGES= ITERS=]; the data comes from the config's "dataset"
# section unless DATA (and CLASSES) say otherwise. See pipelines/train.sh, eval.sh.
PIPELINE ?= ssd_mobilenet_fpn_bccd
RUN_ENV = BIN=$(BIN) RUN=$(RUN) DATA=$(DATA) CLASSES=$(CLASSES) EPOCHS=$(EPOCHS) BATCH=$(BATCH) \
	SIZE=$(SIZE) LR=$(LR) SEED=$(SEED) THREADS=$(THREADS) MAX_STEPS=$(MAX_STEPS) NP=$(NP) CKPT=$(CKPT) \
	QUANTIZE=$(QUANTIZE) BITS=$(BITS) RANGES=$(RANGES) ITERS=$(ITERS)

train: all
	$(RUN_ENV) pipelines/train.sh configs/$(PIPELINE).json

eval: all
	$(RUN_ENV) pipelines/eval.sh configs/$(PIPELINE).json

# PTQ: activation ranges of a float checkpoint -> RUN/ranges.tns, RUN/qparams.tns; then
# make eval QUANTIZE=1 gives the quantised mAP, make train QUANTIZE=1 the QAT.
calibrate: all
	$(RUN_ENV) pipelines/calibrate.sh configs/$(PIPELINE).json

# Loss and mAP curves of a run (evaluates its epoch checkpoints once each) -> RUN/curves.png
plot: all
	$(RUN_ENV) pipelines/plot.sh configs/$(PIPELINE).json

# ---- demo and benchmarks on the real data in ../shared/data
BENCH_DATA    ?= ../shared/data/bccd
BENCH_CLASSES ?= configs/bccd.classes

# A short real run: records through the data stages, then a few minutes of training on
# BCCD from scratch (DEMO_EPOCHS at 320x320) and the mAP table of the result.
DEMO_EPOCHS ?= 4
demo: all
	$(BIN)/voc-decode $(BENCH_DATA) --split train --classes $(BENCH_CLASSES) --limit 8 \
	  | $(BIN)/augment --train --size 320 --batch 4 --seed 1 | $(BIN)/tns ls
	BIN=$(BIN) RUN=runs/demo EPOCHS=$(DEMO_EPOCHS) pipelines/train.sh configs/ssd_mobilenet_fpn_bccd.json
	BIN=$(BIN) RUN=runs/demo pipelines/eval.sh configs/ssd_mobilenet_fpn_bccd.json

bench-data: all $(BUILD)/bench/bench_stream
	BIN=$(BIN) BENCH=$(BUILD)/bench pipelines/bench-data.sh $(BENCH_DATA) $(BENCH_CLASSES)

# Layer kernels against OpenBLAS's sgemm peak and torch (if Debian's python3-torch is there).
bench-layers: $(BUILD)/bench/bench_layers
	$(BUILD)/bench/bench_layers
	if /usr/bin/python3 -c 'import torch' 2>/dev/null; then /usr/bin/python3 bench/bench_layers_torch.py; \
	else echo "(python3-torch not installed: no torch comparison)"; fi

# ssd-decode per image at 512 and map-eval on a VOC07-test-sized set of generated dets.
bench-eval: all $(BUILD)/bench/gen_dets $(BUILD)/bench/gen_pred
	BIN=$(BIN) BENCH=$(BUILD)/bench pipelines/bench-eval.sh $(BENCH_DATA) $(BENCH_CLASSES)

# The network: images/s for inference and a train step, ours and torch's, side by side.
bench-model: all
	BIN=$(BIN) pipelines/bench-model.sh

# The training loop's price: forward | loss | sgd-step with its FIFOs against the same
# steps in one process (bench/bench_train_step), on the same batches. See docs/stream-format.md.
bench-loop: all $(BUILD)/bench/bench_train_step
	BIN=$(BIN) BENCH=$(BUILD)/bench pipelines/bench-loop.sh $(BENCH_DATA) $(BENCH_CLASSES)

bench: bench-data bench-layers bench-eval bench-model bench-loop

setup:
	pipelines/setup-debian.sh

clean:
	rm -rf build bin

.PHONY: all units test test-quick test-san setup demo train eval calibrate plot bench bench-data bench-layers bench-eval bench-model bench-loop clean
.DELETE_ON_ERROR:
