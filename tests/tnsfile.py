"""Read and write tns streams from Python (numpy), for the reference generators.

The format is docs/stream-format.md: one zstd frame per record, holding
"TNS1" | u32 header_len | header JSON | pad to 64 | tensors, each 64-byte aligned.
Frames are written with their content size and a checksum, as lib/core/stream.c does.
"""
import json
import struct

import numpy as np
import zstandard

DTYPES = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i16": np.int16,
          "i8": np.int8, "u8": np.uint8}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def _align(n):
    return (n + 63) // 64 * 64


def encode(kind, tensors, meta=None, level=3):
    """One record as bytes. tensors: dict name -> numpy array (kept in order)."""
    entries, blobs, off = [], [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        if a.dtype not in NAMES:
            raise ValueError(f"{name}: dtype {a.dtype} has no tns name")
        entries.append({"name": name, "dtype": NAMES[a.dtype], "shape": list(a.shape), "offset": off})
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        blobs.append(raw + b"\0" * (_align(len(raw)) - len(raw)))
        off += _align(len(raw))
    header = json.dumps({"kind": kind, "meta": meta or {}, "tensors": entries},
                        separators=(",", ":")).encode()
    pre = b"TNS1" + struct.pack("<I", len(header)) + header
    body = pre + b"\0" * (_align(len(pre)) - len(pre)) + b"".join(blobs)
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return cctx.compress(body)


def write(path, records, level=3):
    """records: iterable of (kind, {name: array}, meta)."""
    with open(path, "wb") as f:
        for kind, tensors, meta in records:
            f.write(encode(kind, tensors, meta, level))


def decode(body):
    """One record's decompressed bytes as (kind, {name: array}, meta)."""
    (hlen,) = struct.unpack("<I", body[4:8])
    assert body[:4] == b"TNS1"
    h = json.loads(body[8:8 + hlen])
    base = _align(8 + hlen)
    tensors = {}
    for t in h["tensors"]:
        dt = np.dtype(DTYPES[t["dtype"]]).newbyteorder("<")
        n = int(np.prod(t["shape"], dtype=np.int64))
        a = np.frombuffer(body, dtype=dt, count=n, offset=base + t["offset"])
        tensors[t["name"]] = a.reshape(t["shape"]).copy()
    return h["kind"], tensors, h.get("meta", {})


def read(path):
    """List of (kind, {name: array}, meta)."""
    out = []
    data = open(path, "rb").read()
    dctx = zstandard.ZstdDecompressor()
    while data:
        obj = dctx.decompressobj()
        body = obj.decompress(data)
        data = obj.unused_data
        out.append(decode(body))
    return out


def stream(f, chunk=1 << 20):
    """The records of a binary file object (a pipe, stdin) one at a time, as read()
    gives them, each as soon as its frame is complete."""
    get = getattr(f, "read1", f.read)
    dctx = zstandard.ZstdDecompressor()
    data = b""
    while True:
        if not data:
            data = get(chunk)
            if not data:
                return
        obj = dctx.decompressobj()
        parts = [obj.decompress(data)]
        while not obj.eof:
            data = get(chunk)
            if not data:
                raise EOFError("tns stream: truncated record")
            parts.append(obj.decompress(data))
        data = obj.unused_data
        yield decode(b"".join(parts))
