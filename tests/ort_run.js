// Runs an ONNX model in ONNX Runtime (the onnxruntime-node package, installed by
// pipelines/setup-debian.sh into build/ort, or $ORT_DIR) on raw f32 images, one at a time.
//   node tests/ort_run.js MODEL.onnx IMAGES.f32 N C H W OUTDIR
// IMAGES.f32 holds N images [C,H,W]; each model output goes to OUTDIR/<name>.raw (the N
// results one after the other, little-endian), and a JSON line gives each output's
// element type and its shape per image (shapes: the last image's; image_shapes: all, for
// outputs whose size varies, such as the number of detections).
'use strict';
const fs = require('fs');
const path = require('path');

const ortDir = process.env.ORT_DIR || path.join(__dirname, '..', 'build', 'ort');
let ort;
try {
	ort = require(path.join(ortDir, 'node_modules', 'onnxruntime-node'));
} catch (e) {
	console.error(`ort_run: onnxruntime-node is not in ${ortDir} (make setup installs it): ${e.message}`);
	process.exit(1);
}

async function main() {
	const [model, images, n, c, h, w, outdir] = process.argv.slice(2);
	if (!outdir) {
		console.error('usage: node tests/ort_run.js MODEL.onnx IMAGES.f32 N C H W OUTDIR');
		process.exit(2);
	}
	const dims = [1, +c, +h, +w];
	const per = dims[1] * dims[2] * dims[3];
	const buf = fs.readFileSync(images);
	if (buf.length !== 4 * per * n)
		throw new Error(`${images}: ${buf.length} bytes, expected ${4 * per * n}`);
	const all = new Float32Array(buf.buffer, buf.byteOffset, per * n);
	const session = await ort.InferenceSession.create(model, {intraOpNumThreads: 1, interOpNumThreads: 1});
	const files = {}, shapes = {}, types = {}, imageShapes = {};
	for (const name of session.outputNames) {
		files[name] = fs.openSync(path.join(outdir, `${name}.raw`), 'w');
		imageShapes[name] = [];
	}
	for (let i = 0; i < n; i++) {
		const x = new ort.Tensor('float32', all.slice(i * per, (i + 1) * per), dims);
		const out = await session.run({[session.inputNames[0]]: x});
		for (const name of session.outputNames) {
			const t = out[name];
			shapes[name] = t.dims;
			types[name] = t.type;
			imageShapes[name].push(t.dims);
			fs.writeSync(files[name], Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
		}
	}
	for (const name of session.outputNames)
		fs.closeSync(files[name]);
	console.log(JSON.stringify({inputs: session.inputNames, outputs: session.outputNames, shapes, types,
		image_shapes: imageShapes}));
}

main().catch((e) => {
	console.error(`ort_run: ${e.message}`);
	process.exit(1);
});
