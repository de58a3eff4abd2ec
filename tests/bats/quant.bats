#!/usr/bin/env bats
# Quantisation tools and pipelines: forward --stats/--quant, calib-ranges, fakequant,
# make calibrate (pipelines/calibrate.sh), eval QUANTIZE=1 and QAT (train QUANTIZE=1),
# on BCCD with the reduced-width model at 96x96 (tests/fixtures/pipeline/tiny_bccd.json).
# The arithmetic itself is checked bit-exactly by test_quant against tests/ref_quant.py.

load helpers

CFG=tests/fixtures/pipeline/tiny_bccd.json
PY=/usr/bin/python3

# One float checkpoint (a few steps of training) and three stats records, for all tests.
setup_file() {
	cd "$ROOT"
	export BIN THREADS=2
	F=$BATS_FILE_TMPDIR/float
	RUN=$F EPOCHS=1 MAX_STEPS=4 pipelines/train.sh $CFG 2>/dev/null
	"$BIN/voc-decode" "$BCCD" --split test --classes configs/bccd.classes --limit 12 |
		"$BIN/augment" --eval --config $CFG --batch 4 >"$BATS_FILE_TMPDIR/batches.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --stats <"$BATS_FILE_TMPDIR/batches.tns" \
		>"$BATS_FILE_TMPDIR/stats.tns"
}

setup() {
	cd "$ROOT"
	export BIN THREADS=2
	F=$BATS_FILE_TMPDIR/float
	B=$BATS_FILE_TMPDIR/batches.tns
	S=$BATS_FILE_TMPDIR/stats.tns
	T=$BATS_TEST_TMPDIR
}

@test "forward --stats: one stats record per batch, a range per quantisation point" {
	run "$BIN/tns" ls "$S"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[0]}" == *"stats"*"input:f32[2]"*"backbone.features.0.2:f32[2]"* ]]
	[[ "${lines[0]}" == *"bbox_head.reg_convs.5.1:f32[2]"* ]]
	[[ "${lines[0]}" != *"upsample"* ]]
	# the ReLU6 points are non-negative and at most 6
	"$BIN/tns" stats "$S" | awk '$1 ~ /features\.0\.2$/ && ($3 < 0 || $4 > 6) { bad = 1 } END { exit bad }'
}

@test "calib-ranges: running average; split runs continued with --init are bit-identical" {
	"$BIN/calib-ranges" <"$S" >"$T/all.tns"
	run "$BIN/tns" cat --json "$T/all.tns"
	[ "$(jq -r .meta.batches <<<"$output")" = 3 ]
	"$BIN/tns" head -n 2 "$S" | "$BIN/calib-ranges" >"$T/two.tns"
	"$BIN/calib-ranges" --batches 2 <"$S" >"$T/two_b.tns"
	cmp "$T/two.tns" "$T/two_b.tns"
	"$PY" - "$S" "$T/two.tns" "$T/all.tns" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	stats = list(tnsfile.read(sys.argv[1]))
	(_, two, m2), = tnsfile.read(sys.argv[2])
	(_, three, m3), = tnsfile.read(sys.argv[3])
	assert m2["batches"] == 2 and m3["batches"] == 3
	for name in three:
	    b = [s[1][name].astype(np.float64) for s in stats]
	    r1 = b[0].astype(np.float32)
	    r2 = (r1.astype(np.float64) * 0.5 + b[1] * 0.5).astype(np.float32)
	    r3 = (r2.astype(np.float64) * (1 - 1 / 3) + b[2] * (1 / 3)).astype(np.float32)
	    assert (two[name] == r2).all(), (name, two[name], r2)
	    assert (three[name] == r3).all(), (name, three[name], r3)
	EOF
	# the third record on top of the first two's ranges gives the same as all three
	"$PY" - "$S" "$T/third.tns" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import tnsfile
	recs = list(tnsfile.read(sys.argv[1]))
	tnsfile.write(sys.argv[2], [recs[2]])
	EOF
	"$BIN/calib-ranges" --init "$T/two.tns" <"$T/third.tns" >"$T/cont.tns"
	cmp <("$BIN/tns" cat --json "$T/cont.tns" | jq -c '.meta.batches, .tensors') \
		<("$BIN/tns" cat --json "$T/all.tns" | jq -c '.meta.batches, .tensors')
	"$PY" - "$T/cont.tns" "$T/all.tns" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import tnsfile
	(_, a, _), = tnsfile.read(sys.argv[1])
	(_, b, _), = tnsfile.read(sys.argv[2])
	assert all((a[k] == b[k]).all() for k in b)
	EOF
	# --every 1: the ranges after each batch, the last one the same as the end's
	"$BIN/calib-ranges" --every 1 <"$S" >"$T/every.tns"
	[ "$("$BIN/tns" ls "$T/every.tns" | wc -l)" -eq 3 ]
}

@test "calib-ranges: no stats, wrong points, bad options are clear errors" {
	run "$BIN/calib-ranges" </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == "calib-ranges: stdin: no stats records"* ]]
	run "$BIN/calib-ranges" --every 0 </dev/null
	[ "$status" -eq 2 ]
	run "$BIN/calib-ranges" --bogus </dev/null
	[ "$status" -eq 2 ]
	# stats of another model do not continue these ranges
	"$BIN/calib-ranges" <"$S" >"$T/r.tns"
	"$BIN/forward" --config tests/fixtures/model/tiny.json --init >"$T/p.tns"
	run "$BIN/calib-ranges" --init "$T/p.tns" <"$S"
	[ "$status" -eq 1 ]
	[[ "$output" == *"--init: $T/p.tns: no ranges record"* ]]
	run "$BIN/calib-ranges" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--init"*"--every"*"--batches"* ]]
}

@test "fakequant: BN folded, integers and fraction bits agree with the dequantised values" {
	"$BIN/calib-ranges" <"$S" >"$T/r.tns"
	"$BIN/fakequant" --config $CFG --weights "$F/latest.tns" --ranges "$T/r.tns" >"$T/q8.tns"
	"$BIN/fakequant" --config $CFG --weights "$F/latest.tns" --ranges "$T/r.tns" --bits 16 >"$T/q16.tns"
	"$BIN/fakequant" --config $CFG --weights "$F/latest.tns" --ranges "$T/r.tns" --weight-bits 4 >"$T/q4.tns"
	"$BIN/fakequant" --config $CFG --weights "$F/latest.tns" --ranges "$T/r.tns" --per-channel-dw >"$T/qpc.tns"
	"$PY" - "$T/q8.tns" 8 8 "$T/q16.tns" 16 16 "$T/q4.tns" 8 4 <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	for path, bits, wbits in zip(sys.argv[1::3], map(int, sys.argv[2::3]), map(int, sys.argv[3::3])):
	    (kind, t, meta), = tnsfile.read(path)
	    assert kind == "qparams" and meta["bits"] == bits and meta["weight_bits"] == wbits
	    convs = [k[:-len(".frac")] for k in t if k.endswith(".frac") and k[:-len(".frac")] + ".weight" in t]
	    assert len(convs) > 50, len(convs)
	    wt, bt = (np.int8, np.int16) if bits == 8 else (np.int16, np.int32)
	    for c in convs:
	        fw, fx, fb = t[c + ".frac"].tolist()
	        w, q = t[c + ".weight"], t[c + ".weight_q"]
	        assert q.dtype == wt and t[c + ".bias_q"].dtype == bt
	        # bias split: fewer fraction bits than the accumulator's only where it must
	        bq = np.abs(t[c + ".bias_q"].astype(np.int64)).max()
	        assert fb == fw + fx or (fb < fw + fx and bq >= 2 ** (2 * bits - 2)), (c, fw, fx, fb, bq)
	        assert (np.ldexp(q.astype(np.float64), -fw) == w).all(), c
	        assert (np.ldexp(t[c + ".bias_q"].astype(np.float32), -fb) == t[c + ".bias"]).all(), c
	        # the largest weight uses the top of the range: 2^(wbits-2) <= max|q| <= 2^(wbits-1)
	        m = np.abs(q.astype(np.int64)).max()
	        assert m == 0 or 2 ** (wbits - 2) <= m <= 2 ** (wbits - 1), (c, m)
	        assert q.min() >= -2 ** (wbits - 1) and q.max() <= 2 ** (wbits - 1) - 1, c
	    assert not any(k.endswith(".weight_frac") for k in t) and not meta["per_channel_dw"]
	    acts = [k[:-len(".act")] for k in t if k.endswith(".act")]
	    for p in acts:
	        frac, qmin, qmax = t[p + ".act"].tolist()
	        assert qmin in (0, -2 ** (bits - 1)) and qmax in (2 ** bits - 1, 2 ** (bits - 1) - 1)
	        assert (t[p + ".clip"] == np.ldexp(np.array([qmin, qmax], np.float64), -frac)).all()
	    # the first conv after the image takes the input point's fraction bits
	    assert t["backbone.features.0.0.frac"][1] == t["input.act"][0]
	EOF
	# per channel: the depthwise convs' weights at each channel's scale, the rest as before
	"$PY" - "$T/qpc.tns" "$T/q8.tns" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	(_, t, meta), = tnsfile.read(sys.argv[1])
	(_, t8, _), = tnsfile.read(sys.argv[2])
	assert meta["per_channel_dw"] is True
	pcs = [k[:-len(".weight_frac")] for k in t if k.endswith(".weight_frac")]
	assert len(pcs) > 10, len(pcs)
	for c in pcs:
	    q, w, wf, bf = t[c + ".weight_q"], t[c + ".weight"], t[c + ".weight_frac"], t[c + ".bias_frac"]
	    assert q.shape[1] == 1 and len(wf) == q.shape[0], c  # depthwise
	    assert (np.ldexp(q.astype(np.float64), -wf.reshape(-1, 1, 1, 1)) == w).all(), c
	    assert (np.ldexp(t[c + ".bias_q"].astype(np.float64), -bf) == t[c + ".bias"]).all(), c
	    m = np.abs(q.astype(np.int64)).reshape(len(wf), -1).max(1)
	    assert ((m == 0) | ((m >= 64) & (m <= 128))).all(), c
	    assert t[c + ".frac"][0] == wf.min() and t[c + ".frac"][2] == bf.min(), c
	others = [k for k in t if k.endswith(".weight_q") and k[:-len(".weight_q")] not in pcs]
	assert others and all((t[k] == t8[k]).all() for k in others)
	EOF
}

@test "fakequant and forward --quant: missing or mismatched ranges are clear errors" {
	run "$BIN/fakequant" --config $CFG --weights "$F/latest.tns"
	[ "$status" -eq 2 ]
	run "$BIN/fakequant" --config $CFG --weights "$F/latest.tns" --ranges "$F/latest.tns"
	[ "$status" -eq 1 ]
	[[ "$output" == *"no ranges record"* ]]
	# ranges of the 320x320 MobileNetV2 config do not fit the tiny model's points
	"$BIN/forward" --config $CFG --init --seed 3 >"$T/p.tns"
	"$PY" - "$T/bad.tns" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	tnsfile.write(sys.argv[1], [("ranges", {"input": np.array([-2, 2], np.float32)}, {"batches": 1})])
	EOF
	run "$BIN/forward" --config $CFG --weights "$T/p.tns" --quant --ranges "$T/bad.tns" <"$B"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: --ranges $T/bad.tns: ranges: 1 tensors for the "*" quantisation points"* ]]
	# --quant without --ranges wants a ranges record after the params
	run "$BIN/forward" --config $CFG --weights "$T/p.tns" --quant <"$B"
	[ "$status" -eq 1 ]
	[[ "$output" == *"no ranges record for batch 1"* ]]
	run "$BIN/forward" --config $CFG --weights "$T/p.tns" --ranges "$T/bad.tns" <"$B"
	[ "$status" -eq 2 ]
}

@test "forward --quant: more bits come closer to the clipped model; outputs are on the output grid" {
	"$BIN/calib-ranges" <"$S" >"$T/r.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/r.tns" --bits 12 <"$B" >"$T/q12.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/r.tns" <"$B" >"$T/q8.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/r.tns" --bits 16 <"$B" >"$T/q16.tns"
	"$BIN/fakequant" --config $CFG --weights "$F/latest.tns" --ranges "$T/r.tns" >"$T/qp.tns"
	"$PY" - "$T" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	d = sys.argv[1]
	q12, q8, q16 = (list(tnsfile.read(f"{d}/{n}.tns")) for n in ("q12", "q8", "q16"))
	(_, qp, _), = tnsfile.read(f"{d}/qp.tns")
	def err(a, b):
	    return max(np.abs(x[1]["cls"] - y[1]["cls"]).max() / np.abs(x[1]["cls"]).max() for x, y in zip(a, b))
	# the quantised model's limit (ReLU6 clipped at the ranges) is what more bits approach
	e8, e12 = err(q16, q8), err(q16, q12)
	print(f"relative distance of cls to 16 bits: 8 bits {e8:.2e}, 12 bits {e12:.2e}")
	assert 0 < e12 < e8 / 4, (e8, e12)
	# cls rows come from the head's cls convs: every value is a multiple of 2^-frac of one of them
	fr = min(qp[f"bbox_head.cls_convs.{i}.1.act"][0] for i in range(6))
	for r in q8:
	    v = np.ldexp(r[1]["cls"].astype(np.float64), int(fr))
	    assert (v == np.round(v)).all()
	EOF
}

@test "calibrate + eval QUANTIZE=1: PTQ ranges, qparams and a quantised mAP table" {
	RUN=$T/r CKPT=$F/latest.tns ITERS=3 BIAS_ITERS=0 BATCH=4 run pipelines/calibrate.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"wrote $T/r/ranges.tns (3 batches)"* ]]
	[ -f "$T/r/qparams.tns" ] && [ ! -e "$T/r/ptq.tns" ] && ! ls "$T/r"/*.tmp 2>/dev/null
	RUN=$T/r CKPT=$F/latest.tns QUANTIZE=1 run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"| mAP "* ]] && [ -f "$T/r/eval_quant.json" ]
	# on integers (INT8=1): the same table
	RUN=$T/r CKPT=$F/latest.tns QUANTIZE=1 INT8=1 run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"quantised: --int8"* ]]
	cmp "$T/r/eval_quant.txt" "$T/r/eval_int8.txt"
	# 16 bits on integers: its own table (the same ranges)
	RUN=$T/r CKPT=$F/latest.tns QUANTIZE=1 INT8=1 BITS=16 run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"quantised: --int8 --bits 16"* ]] && [ -f "$T/r/eval_int16.json" ]
	# with bias calibration (2 more batches, the ranges go on averaging): ptq.tns, which
	# eval QUANTIZE=1 then takes
	RUN=$T/r CKPT=$F/latest.tns ITERS=3 BIAS_ITERS=2 BATCH=4 run pipelines/calibrate.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"wrote $T/r/ptq.tns, $T/r/ranges.tns (5 batches)"* ]]
	! ls "$T/r"/*.tmp "$T/r"/.tmp* 2>/dev/null
	RUN=$T/r QUANTIZE=1 run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"checkpoint $T/r/ptq.tns"*"| mAP "* ]]
	# a missing checkpoint or missing ranges are named
	RUN=$T/none CKPT=$T/none.tns run pipelines/calibrate.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == *"no such checkpoint"* ]]
	RUN=$T/none CKPT=$F/latest.tns QUANTIZE=1 run pipelines/eval.sh $CFG
	[ "$status" -eq 1 ]
	[[ "$output" == *"no activation ranges"* ]]
}

@test "train QUANTIZE=1: QAT runs, its checkpoints carry the ranges, a stopped run resumes bit-identically" {
	RUN=$T/r CKPT=$F/latest.tns ITERS=3 BIAS_ITERS=0 BATCH=4 pipelines/calibrate.sh $CFG 2>/dev/null
	q=(INIT=$F/latest.tns RANGES=$T/r/ranges.tns QUANTIZE=1 EPOCHS=2 BATCH=4)
	run env "${q[@]}" RUN=$T/whole MAX_STEPS=6 pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"quantisation-aware from $F/latest.tns"* ]]
	run "$BIN/tns" ls "$T/whole/latest.tns"
	[[ "${lines[0]}" == *params* ]] && [[ "${lines[1]}" == *ranges* ]] && [[ "${lines[2]}" == *optim* ]]
	# the ranges went on averaging: 3 calibration batches + 6 steps
	[ "$("$BIN/tns" cat --json "$T/whole/latest.tns" | jq -s '.[1].meta.batches')" = 9 ]
	jq -e 'select(.loss | isnormal | not)' "$T/whole/metrics.jsonl" && false
	env "${q[@]}" RUN=$T/split MAX_STEPS=4 pipelines/train.sh $CFG 2>/dev/null
	run env "${q[@]}" RUN=$T/split MAX_STEPS=6 pipelines/train.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"resuming"*"step 4"* ]]
	cmp <("$BIN/tns" head -n 2 "$T/whole/latest.tns") <("$BIN/tns" head -n 2 "$T/split/latest.tns")
	# the QAT checkpoint evaluates quantised with its own ranges
	RUN=$T/whole QUANTIZE=1 run pipelines/eval.sh $CFG
	[ "$status" -eq 0 ]
	[[ "$output" == *"| mAP "* ]]
	# sgd-step refuses to mix float and QAT state
	run "$BIN/sgd-step" --config $CFG --run "$T/whole" --resume </dev/null
	[ "$status" -eq 1 ]
	[[ "$output" == *"has activation ranges"*"add --quant"* ]]
	run "$BIN/sgd-step" --config $CFG --init "$F/latest.tns" --quant </dev/null
	[ "$status" -eq 2 ]
}

@test "bias calibration: forward --bias-calib gives channel means, calib-ranges moves the biases by TI's rule" {
	"$BIN/calib-ranges" <"$S" >"$T/r.tns"
	"$BIN/tns" head -n 1 "$F/latest.tns" | cat - "$T/r.tns" >"$T/w.tns"
	"$BIN/tns" head -n 1 "$B" >"$T/b1.tns"
	"$BIN/forward" --config $CFG --weights "$T/w.tns" --stats --quant --bias-calib <"$T/b1.tns" >"$T/st.tns"
	run "$BIN/tns" ls "$T/st.tns"
	[[ "$output" == *"stats"*"backbone.features.0.1.bias.mean_float"*"backbone.features.0.1.bias.mean_quant"* ]]
	[[ "$output" == *"bbox_head.cls_convs.0.1.bias.mean_float"* ]]
	"$BIN/calib-ranges" --init "$T/r.tns" --weights "$F/latest.tns" --params "$T/sent.tns" --save "$T/ptq.tns" \
		<"$T/st.tns" >"$T/r2.tns"
	"$PY" - "$T" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	d = sys.argv[1]
	(_, st, meta), = tnsfile.read(f"{d}/st.tns")
	sent = list(tnsfile.read(f"{d}/sent.tns"))
	assert [r[0] for r in sent] == ["params", "ranges", "params", "ranges"]
	p0, p1 = sent[0][1], sent[2][1]
	f = np.float32(0.05 * 0.5 ** meta.get("epoch", 0))
	moved = 0
	for k in st:
	    if not k.endswith(".mean_float"):
	        continue
	    b = k[: -len(".mean_float")]
	    want = p0[b] + (st[k] - st[b + ".mean_quant"]) * f
	    assert (p1[b] == want).all(), b
	    moved += int((p1[b] != p0[b]).any())
	assert moved > 10, moved
	# nothing else changed, and --save holds the last params and ranges
	assert all((p1[k] == p0[k]).all() for k in p0 if k + ".mean_float" not in st)
	saved = list(tnsfile.read(f"{d}/ptq.tns"))
	assert [r[0] for r in saved] == ["params", "ranges"]
	assert all((saved[0][1][k] == p1[k]).all() for k in p1)
	EOF
	# stats without means are refused in this mode
	run "$BIN/calib-ranges" --init "$T/r.tns" --weights "$F/latest.tns" --params "$T/x.tns" --save "$T/x2.tns" <"$S"
	[ "$status" -eq 1 ]
	[[ "$output" == *"stats without channel means"* ]]
	[ ! -e "$T/x2.tns" ]
	run "$BIN/forward" --config $CFG --weights "$T/w.tns" --stats --bias-calib <"$T/b1.tns"
	[ "$status" -eq 2 ]
}

@test "forward --int8: outputs bit-equal to --quant's; 16 bits within a few steps of it; inference only" {
	"$BIN/calib-ranges" <"$S" >"$T/ranges.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/ranges.tns" <"$B" >"$T/sim.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" <"$B" >"$T/int.tns"
	cmp "$T/sim.tns" "$T/int.tns"
	# one thread: the same bytes
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" --threads 1 <"$B" |
		cmp - "$T/int.tns"
	# a 16-bit model on int16: its f32 simulation rounds the sums, the integers do not
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/ranges.tns" --bits 16 <"$B" >"$T/sim16.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" --bits 16 <"$B" >"$T/int16.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" --bits 16 --threads 1 <"$B" |
		cmp - "$T/int16.tns"
	"$PY" - "$T" <<-'EOF'
	import sys
	sys.path.insert(0, "tests")
	import numpy as np, tnsfile
	d = sys.argv[1]
	sim, q, q8 = (list(tnsfile.read(f"{d}/{n}.tns")) for n in ("sim16", "int16", "int"))
	assert len(sim) == len(q) == 3
	for a, b, c in zip(sim, q, q8):
	    for k in ("cls", "reg"):
	        scale = np.abs(a[1][k]).max()
	        e, e8 = np.abs(a[1][k] - b[1][k]).max() / scale, np.abs(a[1][k] - c[1][k]).max() / scale
	        print(f"{k}: 16-bit integers vs simulation {e:.2e}, 8-bit {e8:.2e} of the largest value")
	        assert e <= 5e-4 and e < e8 / 10, (k, e, e8)
	EOF
	run "$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --train --grad /dev/null <"$B"
	[ "$status" -eq 2 ]
	[[ "$output" == "forward: --int8 is inference"* ]]
	# 4-bit weights, 8-bit activations: bit-equal too, and not the 8-bit model
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/ranges.tns" --weight-bits 4 <"$B" >"$T/sim4.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" --weight-bits 4 <"$B" |
		cmp - "$T/sim4.tns"
	! cmp -s "$T/sim4.tns" "$T/sim.tns"
	# depthwise weights per channel: bit-equal, and another model
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --quant --ranges "$T/ranges.tns" --per-channel-dw <"$B" >"$T/simpc.tns"
	"$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" --per-channel-dw <"$B" |
		cmp - "$T/simpc.tns"
	! cmp -s "$T/simpc.tns" "$T/sim.tns"
	run "$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 --ranges "$T/ranges.tns" --weight-bits 9 <"$B"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: weight bits: 9 (2 to the activations' 8)" ]]
	# without ranges there is nothing to run on integers
	run "$BIN/forward" --config $CFG --weights "$F/latest.tns" --int8 <"$B"
	[ "$status" -eq 1 ]
	[[ "$output" == "forward: "*"ranges"* ]]
}
