"""Writes the bad-input corpus that cli/tests/bad_corpus.rs scans: hostile and unusual files
beside good images in every format and layout twinscan must read. Made with Pillow, an encoder
independent of the decoders under test. Nothing is random without the seed.

Usage: python tests/corpus/make_bad_corpus.py OUT_DIR [--seed N]

OUT_DIR/manifest.json lists every entry: `name_hex` (the path under OUT_DIR as bytes in hex, as
some names are not UTF-8) and `expect`: "error" (exactly one error record), "image" with
`group` (images of one group must be found as one duplicate group; a group of one is in none),
"unreadable" (an error unless the user can read it anyway, as root can), or "none" (neither:
not a regular file, or a link the scan does not follow into a second copy).
"""
import argparse
import io
import json
import os
import random
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def picture(seed, size=(160, 120)):
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = [x0, y0, x0 + rng.randrange(10, 80), y0 + rng.randrange(10, 60)]
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def encoded(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming(width, height):
    """A PNG signature and header claiming width x height, with no pixels: a decompression bomb's
    probe."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def exif_oriented_jpeg(img, orientation=6):
    """The picture stored turned, with the EXIF orientation that turns it back when shown."""
    stored = img.transpose(Image.Transpose.ROTATE_90)  # orientation 6 shows it turned 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(stored, "JPEG", quality=92, exif=exif.tobytes())


def scan_bomb(img, scans=50_000):
    """A progressive JPEG whose last scan is repeated until it has `scans` of them: under a
    megabyte, yet every scan makes a progressive decoder revisit the whole image."""
    data = encoded(img, "JPEG", quality=50, progressive=True)
    last = data.rfind(b"\xff\xda")
    return data[:last] + data[last:-2] * (scans - data.count(b"\xff\xda") + 1) + b"\xff\xd9"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = os.fsencode(args.out)
    os.makedirs(out, exist_ok=True)
    rng = random.Random(args.seed)
    a, b, c = picture(args.seed * 3), picture(args.seed * 3 + 1), picture(args.seed * 3 + 2)
    manifest = []

    def put(name, data, expect, group=None):
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        manifest.append({"name_hex": name.hex(), "expect": expect, "group": group})

    jpeg_a = encoded(a, "JPEG", quality=90)
    png_a = encoded(a, "PNG")
    # Good images, every one a copy of a, b or c in some format or layout.
    put(b"a.png", png_a, "image", "a")
    put(b"a.jpg", jpeg_a, "image", "a")
    put(b"a-cmyk.jpg", encoded(a.convert("CMYK"), "JPEG", quality=90), "image", "a")
    grey16 = Image.fromarray(np.asarray(a.convert("L"), dtype=np.uint16) * 257)  # full 16-bit range
    put(b"a-16bit.png", encoded(grey16, "PNG"), "image", "a")
    put(b"a-palette.png", encoded(a.quantize(256), "PNG"), "image", "a")
    # Opaque but for a transparent corner (twinscan composites alpha over white).
    alpha = a.convert("RGBA")
    mask = Image.new("L", a.size, 255)
    mask.paste(0, (0, 0, 12, 12))
    alpha.putalpha(mask)
    put(b"a-alpha.png", encoded(alpha, "PNG"), "image", "a")
    put(b"a-animated.gif", encoded(a, "GIF", save_all=True, append_images=[b, c], duration=100, loop=0), "image", "a")
    put(b"a.tiff", encoded(a, "TIFF"), "image", "a")
    put(b"a-exif-rotated.jpg", exif_oriented_jpeg(a), "image", "a")
    put(b"a.webp", encoded(a, "WEBP", lossless=True), "image", "a")
    put(b"b.png", encoded(b, "PNG"), "image", "b")
    put(b"b-\xff\xfename.png", encoded(b, "PNG"), "image", "b")  # not UTF-8
    put(b"folder-named.jpg/b.bmp", encoded(b, "BMP"), "image", "b")  # a directory named x.jpg
    put(b"c.jpg", encoded(c, "JPEG", quality=90), "image", "c")
    put(b"c-progressive.jpg", encoded(c, "JPEG", quality=90, progressive=True), "image", "c")
    # A panorama-sized progressive JPEG with a photo's detail (several megabytes): the bound on
    # progressive work is per byte, so it decodes.
    grain = Image.fromarray(np.random.default_rng(args.seed).integers(0, 256, (8192, 8192), dtype=np.uint8))
    panorama = Image.blend(picture(args.seed * 3 + 3).resize((8192, 8192)), grain.convert("RGB"), 0.06)
    put(b"d-panorama-progressive.jpg", encoded(panorama, "JPEG", quality=70, progressive=True), "image", "d")
    # Bad files: each must be one error record, and must not stop the scan.
    put(b"empty.jpg", b"", "error")
    put(b"truncated.jpg", jpeg_a[: len(jpeg_a) // 3], "error")
    put(b"truncated.png", png_a[: len(png_a) // 2], "error")
    gif = encoded(b, "GIF")
    put(b"truncated.gif", gif[: len(gif) // 2], "error")
    webp = encoded(b, "WEBP", quality=80)
    put(b"truncated.webp", webp[: len(webp) // 2], "error")
    put(b"random.jpg", bytes(rng.randrange(256) for _ in range(4096)), "error")
    put(b"jpeg-header-only.jpg", jpeg_a[:2] + bytes(rng.randrange(256) for _ in range(2000)), "error")
    put(b"huge.png", png_claiming(100_000, 100_000), "error")
    # Work bombs for a progressive decoder: 50,000 scans of a tiny picture, and 8192 x 8192
    # pixels of flat grey in ten scans from a few hundred kilobytes.
    put(b"scan-bomb.jpg", scan_bomb(Image.new("L", (8, 8), 90)), "error")
    put(b"work-bomb.jpg", encoded(Image.new("L", (8192, 8192), 128), "JPEG", quality=75, progressive=True), "error")
    put(b"unreadable.png", encoded(c, "PNG"), "unreadable", "c")
    os.chmod(os.path.join(out, b"unreadable.png"), 0)
    # Links: one to a file deleted since (what a file deleted mid-scan looks like to the reader),
    # a loop, and a FIFO with an image's name, which must be passed over, not waited on.
    os.symlink(b"gone.png", os.path.join(out, b"deleted.png"))
    manifest.append({"name_hex": b"deleted.png".hex(), "expect": "error", "group": None})
    os.symlink(b".", os.path.join(out, b"loop"))
    manifest.append({"name_hex": b"loop".hex(), "expect": "error", "group": None})
    os.mkfifo(os.path.join(out, b"pipe.jpg"))
    manifest.append({"name_hex": b"pipe.jpg".hex(), "expect": "none", "group": None})

    with open(os.path.join(out, b"manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
