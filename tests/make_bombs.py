#!/usr/bin/python3
"""Writes small hostile inputs into DIR, each claiming far more than it holds, for
tests/bats/reliability.bats: every reader must refuse them before allocating.

  zstd_huge.tns        one zstd frame declaring 1.5 GiB of content, holding one byte
  png_claims_16k.png   a 16000x16000 PNG header (within TNS_MAX_PIXELS) on 60 bytes
  png_60k.png          a 60000x60000 PNG header (over TNS_MAX_PIXELS)
  jpeg_claims_16k.jpg  a baseline JPEG header claiming 16000x16000 on a few hundred bytes
  tar_terabyte.tar     a VOC root whose annotation entry declares 1 TiB (GNU base-256 size)
  deep.json            a config nested 100,000 levels deep
  deep_header.tns      a record whose header JSON nests 100,000 levels deep
usage: make_bombs.py DIR"""
import io
import os
import struct
import sys
import tarfile
import zlib

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def put(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def zstd_frame(body_bytes, declared):
    """A single-segment zstd frame with an 8-byte content size and raw blocks."""
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", declared)
    for i in range(0, max(len(body_bytes), 1), 128 << 10):
        chunk = body_bytes[i:i + (128 << 10)]
        last = i + (128 << 10) >= len(body_bytes)
        frame += struct.pack("<I", (len(chunk) << 3) | int(last))[:3] + chunk
    return frame


put("zstd_huge.tns", zstd_frame(b"T", 3 << 29))

# a header nested 100,000 levels, in a record otherwise well formed (declared size true)
deep = b'{"kind": "x", "meta": {"a": ' + b"[" * 100000 + b"]" * 100000 + b"}}"
body = b"TNS1" + struct.pack("<I", len(deep)) + deep
body += b"\0" * (-len(body) % 64)
put("deep_header.tns", zstd_frame(body, len(body)))
put("deep.json", b'{"data": ' + b'{"x": ' * 100000 + b"1" + b"}" * 100000 + b"}")


def png(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


put("png_claims_16k.png", png(16000, 16000))
put("png_60k.png", png(60000, 60000))


def baseline_jpeg(width, height):
    """SOI, one quantisation table, SOF0 (grayscale), one DC and one AC Huffman table,
    SOS, then a few bytes of scan data and EOI: a header that decodes as far as the
    size and claims width x height."""
    def seg(marker, data):
        return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data
    dqt = seg(0xDB, bytes([0]) + bytes([1] * 64))
    sof = seg(0xC0, bytes([8]) + struct.pack(">HH", height, width) + bytes([1, 1, 0x11, 0]))
    counts = bytes([1] + [0] * 15)
    dht = seg(0xC4, bytes([0x00]) + counts + bytes([0]) + bytes([0x10]) + counts + bytes([0]))
    sos = seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\x00" * 16 + b"\xff\xd9"


put("jpeg_claims_16k.jpg", baseline_jpeg(16000, 16000))

# a VOC root in a tar whose annotation entry declares a terabyte: the header alone,
# then the end of the archive (a reader trusting the size would allocate 1 TiB)
b = io.BytesIO()
split = tarfile.TarInfo("voc/ImageSets/Main/train.txt")
split.size = 2
b.write(split.tobuf(format=tarfile.GNU_FORMAT) + b"a\n".ljust(512, b"\0"))
huge = tarfile.TarInfo("voc/Annotations/a.xml")
huge.size = 1 << 40
b.write(huge.tobuf(format=tarfile.GNU_FORMAT))
b.write(b"\0" * 1024)
put("tar_terabyte.tar", b.getvalue())
