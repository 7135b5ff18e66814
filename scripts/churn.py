"""Changes a folder of generated images the way a collection changes between two scans, for the
rescan benchmark: deletes a seeded FRACTION of the images and modifies as many others (a shape
drawn on, then saved again as JPEG). Prints what it did.

Usage: python3 scripts/churn.py DIR [--fraction 0.01] [--seed 1]   (needs Pillow)
"""

import argparse
import os
import random

from PIL import Image, ImageDraw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    files = sorted(
        os.path.join(root, f) for root, _, names in os.walk(args.dir) for f in names if f.endswith(".jpg")
    )
    rng = random.Random(args.seed)
    n = max(1, int(len(files) * args.fraction))
    chosen = rng.sample(files, 2 * n)
    for path in chosen[:n]:
        os.remove(path)
    for path in chosen[n:]:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        x, y = rng.randrange(w // 2), rng.randrange(h // 2)
        ImageDraw.Draw(img).rectangle([x, y, x + w // 4, y + h // 4], fill=(255, 255, 255))
        img.save(path, quality=90)
    print(f"{len(files)} images: {n} deleted, {n} modified (seed {args.seed})")


if __name__ == "__main__":
    main()
