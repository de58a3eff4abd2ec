// ort_bench: runs an ONNX model in ONNX Runtime (onnxruntime-node, build/ort or $ORT_DIR)
// on N raw f32 images [3,S,S], one at a time, as a user's inference would: CPU, THREADS
// intra-op threads, graph optimisation on, session start included in the process's time.
// Only the head outputs (cls_k, reg_k) are fetched. ORT runs every node of a graph, fetched
// or not, so for ORT to run what `forward` runs the model must end at the heads
// (tidl-pack --heads-only: ssd-decode's part left out).
//   node bench/ort_bench.js MODEL.onnx IMAGES.f32 N S THREADS
// Prints one line: images, seconds in session.create, seconds in the runs.
// OMP_WAIT_POLICY=passive also turns ORT's spinning off (session.intra_op.allow_spinning).
'use strict';
const fs = require('fs');
const path = require('path');

const ortDir = process.env.ORT_DIR || path.join(__dirname, '..', 'build', 'ort');
let ort;
try {
	ort = require(path.join(ortDir, 'node_modules', 'onnxruntime-node'));
} catch (e) {
	console.error(`ort_bench: onnxruntime-node is not in ${ortDir} (make setup installs it): ${e.message}`);
	process.exit(1);
}

async function main() {
	const [model, images, n, s, threads] = process.argv.slice(2);
	if (!threads) {
		console.error('usage: node bench/ort_bench.js MODEL.onnx IMAGES.f32 N S THREADS');
		process.exit(2);
	}
	const per = 3 * s * s;
	const buf = fs.readFileSync(images);
	if (buf.length !== 4 * per * n)
		throw new Error(`${images}: ${buf.length} bytes, expected ${4 * per * n}`);
	const all = new Float32Array(buf.buffer, buf.byteOffset, per * n);
	const t0 = process.hrtime.bigint();
	// ORT's pool spins between ops as libgomp does: with OMP_WAIT_POLICY=passive (ours
	// sleeping at barriers) it is told not to, so both sides wait alike
	const spin = (process.env.OMP_WAIT_POLICY || '').toLowerCase() === 'passive' ? '0' : '1';
	const session = await ort.InferenceSession.create(model, {
		intraOpNumThreads: +threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
		executionProviders: ['cpu'], extra: {session: {intra_op: {allow_spinning: spin}}}});
	const t1 = process.hrtime.bigint();
	const heads = session.outputNames.filter((name) => /^(cls|reg)_[0-9]+$/.test(name));
	if (!heads.length)
		throw new Error(`${model}: no cls_k / reg_k outputs`);
	for (let i = 0; i < n; i++) {
		const x = new ort.Tensor('float32', all.subarray(i * per, (i + 1) * per), [1, 3, +s, +s]);
		await session.run({[session.inputNames[0]]: x}, heads);
	}
	const t2 = process.hrtime.bigint();
	console.log(`ort images ${n} create ${(Number(t1 - t0) / 1e9).toFixed(3)} s runs ${(Number(t2 - t1) / 1e9).toFixed(3)} s`);
}

main().catch((e) => {
	console.error(`ort_bench: ${e.message}`);
	process.exit(1);
});
