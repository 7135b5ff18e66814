#!/usr/bin/env python3
"""Pictures for a bundled model's card: training curves and a sheet of sample test pairs.

Reads MODEL.onnx and the per-epoch metrics MODEL.csv that `twinscan train` wrote, runs the model
with onnxruntime (an independent runtime, so the sheet doubles as a cross-check) on seeded test
pairs from the IDX test set, and writes MODEL-curves.png and MODEL-pairs.png beside the model.

The sheet's top two rows are random balanced pairs; the bottom row holds the test pairs the model
gets most confidently wrong. Each pair shows the head's probability p = sigmoid(a - b d) that the
two images are the same class; green when the decision at the model's threshold is right.

Usage: plot_model.py MODEL.onnx DATA_DIR [--seed N]   (scripts/plot-models.sh sets up the venv)
"""
import argparse
import csv
import gzip
import pathlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402


def idx(directory, stem):
    for name in (stem, stem + ".gz"):
        path = pathlib.Path(directory) / name
        if path.exists():
            raw = path.read_bytes()
            raw = gzip.decompress(raw) if name.endswith(".gz") else raw
            ndim = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise SystemExit(f"{directory}: no {stem}")


def save(fig, out):
    """A 64-colour palette PNG: a third of the bytes, no visible change for line plots and digits."""
    fig.savefig(out)
    plt.close(fig)
    Image.open(out).convert("RGB").quantize(64).save(out, optimize=True)


def curves(model, out):
    rows = list(csv.DictReader(open(model.with_suffix(".csv"))))
    epoch = [int(r["epoch"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    left.plot(epoch, [float(r["loss"]) for r in rows], color="tab:blue")
    left.set(title="training loss", xlabel="epoch")
    right.plot(epoch, [float(r["train_accuracy"]) for r in rows], label="training pairs")
    right.plot(epoch, [float(r["val_accuracy"]) for r in rows], label="validation pairs")
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    right.axvline(int(best["epoch"]), color="grey", linestyle=":", label=f"kept: epoch {best['epoch']}")
    right.set(title="pair accuracy at the validation threshold", xlabel="epoch")
    right.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.suptitle(model.stem)
    fig.tight_layout()
    save(fig, out)


def pairs_sheet(model, data, seed, out):
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    mean = np.array([float(v) for v in meta["twinscan.preprocess.mean"].split(",")], np.float32)
    std = np.array([float(v) for v in meta["twinscan.preprocess.std"].split(",")], np.float32)
    a, b = float(meta["twinscan.head.a"]), float(meta["twinscan.head.b"])
    threshold = float(meta["twinscan.threshold"])
    images = idx(data, "t10k-images-idx3-ubyte")
    labels = idx(data, "t10k-labels-idx1-ubyte")
    rng = np.random.default_rng(seed)
    n = 2000
    first = rng.integers(0, len(labels), n)
    second = np.array([rng.choice(np.flatnonzero((labels == labels[i]) == (k % 2 == 0))) for k, i in enumerate(first)])
    x = images.astype(np.float32)[:, None] / 255.0
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    embed = lambda idxs: session.run(None, {"image": x[idxs]})[0]  # noqa: E731
    d = np.linalg.norm(embed(first) - embed(second), axis=1)
    p = 1 / (1 + np.exp(-(a - b * d)))
    same = labels[first] == labels[second]
    right = (d <= threshold) == same
    wrong = np.flatnonzero(~right)
    worst = wrong[np.argsort(-np.abs(d[wrong] - threshold))][:8]
    shown = list(range(16)) + list(worst)
    fig, axes = plt.subplots(3, 8, figsize=(12, 5.4), dpi=80)
    for ax, k in zip(axes.flat, shown):
        ax.imshow(np.hstack([images[first[k]], np.full((images.shape[1], 2), 255, np.uint8), images[second[k]]]), cmap="gray")
        ax.set_title(f"p={p[k]:.2f} {'same' if same[k] else 'diff'}", fontsize=9, color="green" if right[k] else "red")
        ax.axis("off")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    accuracy = right.mean()
    fig.suptitle(
        f"{model.stem}: random test pairs (rows 1-2) and the most confident mistakes of {n} (row 3); "
        f"accuracy on these {n}: {accuracy:.4f}",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=pathlib.Path)
    parser.add_argument("data", type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    stem = args.model.with_suffix("")
    curves(args.model, f"{stem}-curves.png")
    pairs_sheet(args.model, args.data, args.seed, f"{stem}-pairs.png")
    print(f"{stem}-curves.png {stem}-pairs.png")


if __name__ == "__main__":
    main()
