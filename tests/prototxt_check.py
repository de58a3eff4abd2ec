#!/usr/bin/python3
"""tidl-pack's prototxt against our schema of TIDL's meta-architecture messages
(tests/proto/*.proto) and against the ONNX graph it goes with (tests/bats/tidl-pack.bats).

  prototxt_check.py MODEL.prototxt MODEL.onnx [--old]

Compiles tests/proto with protoc (Debian's protobuf-compiler) into a temporary
directory, parses the prototxt with protobuf's text format into TIDLMetaArch (--old: the
older message shape, one optional `output`) - an unknown field, a wrong type or a
repeated optional field is an error - and checks it against the ONNX:
  - every tensor it names exists in the graph: box_input/class_input are values some node
    produces, each `output` is a graph output;
  - one box and one class input per prior_box_param, with the channels its priors need
    (per location 2 + (2 if flip else 1) len(aspect_ratio) priors: 4 box values each,
    num_classes scores each), and in_width/in_height the graph input's.
Prints the figures as one JSON line; exits 1 with the reason on stderr when a check fails.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "proto")


def load_schema(tmp):
    files = sorted(f for f in os.listdir(PROTO) if f.endswith(".proto"))
    r = subprocess.run(["protoc", "--proto_path=" + PROTO, "--python_out=" + tmp] + files, capture_output=True,
                       text=True)
    if r.returncode:
        sys.exit(f"prototxt_check: protoc: {r.stderr.strip()}")
    sys.path.insert(0, tmp)
    import tidl_meta_arch_old_pb2
    import tidl_meta_arch_pb2
    return tidl_meta_arch_pb2, tidl_meta_arch_old_pb2


def fail(msg):
    print(f"prototxt_check: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("prototxt")
    ap.add_argument("onnx")
    ap.add_argument("--old", action="store_true", help="the older shape (one output)")
    a = ap.parse_args()
    import onnx
    from google.protobuf import text_format
    with tempfile.TemporaryDirectory() as tmp:
        new, old = load_schema(tmp)
        schema = old if a.old else new
        arch = schema.TIDLMetaArch()
        try:
            text_format.Parse(open(a.prototxt).read(), arch)
        except text_format.ParseError as e:
            fail(f"{a.prototxt}: {'older ' if a.old else ''}TIDLMetaArch: {e}")
    if len(arch.caffe_ssd) != 1:
        fail(f"{a.prototxt}: {len(arch.caffe_ssd)} caffe_ssd heads, expected 1")
    ssd = arch.caffe_ssd[0]
    outputs = [ssd.output] if a.old else list(ssd.output)

    m = onnx.load(a.onnx)
    g = m.graph
    produced = {o for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}
    for name in list(ssd.box_input) + list(ssd.class_input):
        if name not in produced:
            fail(f"{a.prototxt}: '{name}' is no tensor of {a.onnx}")
    for name in outputs:
        if name not in graph_outputs:
            fail(f"{a.prototxt}: output '{name}' is no output of {a.onnx} (outputs: {sorted(graph_outputs)})")

    def dims(value):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]

    shapes = {o.name: dims(o) for o in g.output}
    inp = dims(g.input[0])
    if [ssd.in_height, ssd.in_width] != inp[2:]:
        fail(f"{a.prototxt}: in_height, in_width {ssd.in_height}, {ssd.in_width}; the graph input is {inp}")
    L = len(ssd.prior_box_param)
    if not (len(ssd.box_input) == len(ssd.class_input) == L):
        fail(f"{a.prototxt}: {len(ssd.box_input)} box inputs, {len(ssd.class_input)} class inputs, {L} priors")
    nc = ssd.detection_output_param.num_classes
    for k, p in enumerate(ssd.prior_box_param):
        priors = len(p.min_size) + len(p.max_size) + (2 if p.flip else 1) * len(p.aspect_ratio)
        for name, per in ((ssd.box_input[k], 4), (ssd.class_input[k], nc)):
            if name not in shapes:
                fail(f"{a.prototxt}: '{name}' has no shape in {a.onnx} (not a graph output)")
            if shapes[name][1] != priors * per:
                fail(f"{a.prototxt}: '{name}' has {shapes[name][1]} channels; level {k}'s {priors} priors need "
                     f"{priors * per}")
    print(json.dumps({"schema": "old" if a.old else "current", "levels": L, "num_classes": nc,
                      "names_checked": len(ssd.box_input) + len(ssd.class_input) + len(outputs),
                      "outputs": {n: shapes[n] for n in outputs}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
