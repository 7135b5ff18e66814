"""Writes N generated JPEGs (random rectangles and ellipses on a random background) for scan
benchmarks: `python3 scripts/gen_images.py OUT_DIR N [--seed 1] [--size 320x240]`.

Seeded: image i depends only on (seed, i), so any N gives a prefix of a larger run. Needs
Pillow (`pip install pillow`); 100 images per folder, spread over two processes.
"""

import argparse
import os
import random
from multiprocessing import Pool

from PIL import Image, ImageDraw


def make(task):
    out, i, seed, w, h = task
    rng = random.Random(seed * 1_000_003 + i)
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = [x0, y0, min(w, x0 + rng.randint(8, w // 2)), min(h, y0 + rng.randint(8, h // 2))]
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    folder = os.path.join(out, f"{i // 100:05d}")
    os.makedirs(folder, exist_ok=True)
    img.save(os.path.join(folder, f"{i:07d}.jpg"), quality=rng.randint(70, 95))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("count", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--size", default="320x240")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    with Pool(2) as pool:
        pool.map(make, [(a.out, i, a.seed, w, h) for i in range(a.count)], chunksize=500)


if __name__ == "__main__":
    main()
