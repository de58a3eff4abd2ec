"""Odd images and how mmcv 1.x's imread(flag='color') decodes them, for image-decode's tests.

mmdet 2.x's LoadImageFromFile reads an image with mmcv.imfrombytes(bytes, flag='color'),
which with the cv2 backend is cv2.imdecode(buf, cv2.IMREAD_COLOR) (imread is the same
for files): that is the reference here, OpenCV 4 (Debian's python3-opencv, 4.6), turned
from BGR into our RGB planes. Writes tests/fixtures/images/NAME.{jpg,png} and NAME.rgb
(u8 [3,H,W], planes R, G, B). Needs python3-opencv and python3-pil, which CI does not
install: the outputs are committed. Run: /usr/bin/python3 tests/gen_image_fixtures.py
"""
import io
import os

import cv2
import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "images")


def picture(w, h, seed):
    """A small picture with structure in every channel (gradients and a block)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (w + h - 2)], -1)
    a = a.astype(np.int32) + rng.integers(-20, 21, size=(h, w, 3))
    a[h // 4:h // 2, w // 4:w // 2] = [250, 20, 60]  # a block that shows where the top-left went
    return np.clip(a, 0, 255).astype(np.uint8)


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert ref is not None, name
    rgb = ref[:, :, ::-1].transpose(2, 0, 1)
    stem = os.path.splitext(name)[0]
    with open(os.path.join(OUT, stem + ".rgb"), "wb") as f:
        f.write(np.ascontiguousarray(rgb).tobytes())
    print(f"{name}: {ref.shape[1]}x{ref.shape[0]}")


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def png16(a16, mode_gray):
    """A 16-bit PNG written by OpenCV (PIL cannot write 16-bit RGB)."""
    ok, buf = cv2.imencode(".png", a16 if mode_gray else a16[:, :, ::-1])
    assert ok
    return buf.tobytes()


def main():
    os.makedirs(OUT, exist_ok=True)
    rgb = picture(23, 17, 1)
    im = Image.fromarray(rgb)
    save("rgb.jpg", pil_bytes(im, "JPEG", quality=90))
    save("gray.jpg", pil_bytes(im.convert("L"), "JPEG", quality=90))
    # PIL writes CMYK JPEGs with an Adobe marker and inverted inks, as Photoshop does
    save("cmyk.jpg", pil_bytes(im.convert("CMYK"), "JPEG", quality=90))
    save("gray8.png", pil_bytes(im.convert("L"), "PNG"))
    save("gray_alpha.png", pil_bytes(im.convert("LA"), "PNG"))
    save("rgba.png", pil_bytes(im.convert("RGBA").copy(), "PNG"))
    pal = im.convert("P", palette=Image.ADAPTIVE, colors=16)
    save("palette.png", pil_bytes(pal, "PNG"))
    save("palette_trns.png", pil_bytes(pal, "PNG", transparency=3))
    save("bits1.png", pil_bytes(im.convert("1"), "PNG"))
    wide = rgb.astype(np.uint16) * 257 + np.arange(23, dtype=np.uint16)[None, :, None] * 7
    save("rgb16.png", png16(wide, False))
    save("gray16.png", png16(wide[:, :, 0], True))
    # EXIF orientation (tag 0x0112): OpenCV 4's IMREAD_COLOR turns the picture upright
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        save(f"exif{o}.jpg", pil_bytes(im, "JPEG", quality=90, exif=ex.tobytes()))


if __name__ == "__main__":
    main()
