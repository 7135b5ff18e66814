"""Anomaly AUROC of a tower's inner layers on classes it never saw (docs/benchmarks.md, "How the
recipe was found"): the unseen-class protocol's anomaly part (for each class, its test images
normal, the other classes' anomalies; score the mean distance to the 5 nearest training images
of the class), on raw pixels, on the model's embedding and on the named inner tensors, read with
onnxruntime by adding them to the graph's outputs.

Usage: .venv/bin/python scripts/inner_features.py DATA_DIR MODEL.onnx [TENSOR[:pool|:avgK]...]
  TENSOR is a node output of the model (for example l10.out, the last ReLU of compact-l2);
  :pool max pools it 2x2 first, :avgK average pools it KxK. Each is flattened, then scored as
  it is and L2-normalised.
Example (the model as of commit 84b3416):
  git show 84b3416:models/fashion-0-4-compact-l2-supcon.onnx > /tmp/f.onnx
  .venv/bin/python scripts/inner_features.py data/fashion-mnist /tmp/f.onnx l12.out l10.out l10.out:pool
and the three-stage compact-proj model as of commit 072ac62 (l6.out: its second stage's ReLU):
  git show 072ac62:models/fashion-0-4-compact-proj-supcon.onnx > /tmp/p.onnx
  .venv/bin/python scripts/inner_features.py data/fashion-mnist /tmp/p.onnx l10.out:avg2 l10.out:avg3 l6.out:avg4
"""
import gzip
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

CLASSES = [5, 6, 7, 8, 9]
K = 5


def idx(path):
    if not os.path.exists(path):
        path += ".gz"
    data = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    if data[3] == 3:
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(data, np.uint8, offset=8)


def auroc(score, positive):
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="mergesort")] = np.arange(1, len(score) + 1)
    n1 = positive.sum()
    return (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(score) - n1))


def knn(reference, queries):
    d = (queries**2).sum(1)[:, None] + (reference**2).sum(1)[None] - 2 * queries @ reference.T
    d = np.sort(np.sqrt(np.maximum(d, 0)), axis=1)
    return d[:, :K].mean(1)


def main():
    root, model_path, tensors = sys.argv[1], sys.argv[2], sys.argv[3:]
    x_train, y_train = idx(f"{root}/train-images-idx3-ubyte"), idx(f"{root}/train-labels-idx1-ubyte")
    x_test, y_test = idx(f"{root}/t10k-images-idx3-ubyte"), idx(f"{root}/t10k-labels-idx1-ubyte")
    train, test = np.isin(y_train, CLASSES), np.isin(y_test, CLASSES)
    x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_test[test], y_test[test]

    model = onnx.load(model_path)
    meta = {p.key: p.value for p in model.metadata_props}
    mean, std = float(meta["twinscan.preprocess.mean"]), float(meta["twinscan.preprocess.std"])
    names = sorted({t.split(":")[0] for t in tensors})
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString())

    def run(images):
        outs = [session.run(None, {"image": ((b[:, None] / 255.0 - mean) / std).astype(np.float32)})
                for b in np.array_split(images, max(1, len(images) // 2000))]
        return {n: np.concatenate([o[i] for o in outs]) for i, n in enumerate(["embedding"] + names)}

    def pool(a, how):
        k = 2 if how == "pool" else int(how[3:])
        h, w = a.shape[2] // k * k, a.shape[3] // k * k
        windows = a[:, :, :h, :w].reshape(len(a), a.shape[1], h // k, k, w // k, k)
        return windows.max((3, 5)) if how == "pool" else windows.mean((3, 5))

    def report(label, f_train, f_test):
        per = [auroc(knn(f_train[y_train == c], f_test), y_test != c) for c in CLASSES]
        print(f"{label:28s} mean {np.mean(per):.4f}  " + " ".join(f"{a:.4f}" for a in per), flush=True)

    f_train, f_test = run(x_train), run(x_test)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)
    norm = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    report("pixels", flat(x_train) / 255, flat(x_test) / 255)
    report("embedding", f_train["embedding"], f_test["embedding"])
    for t in tensors:
        name, _, how = t.partition(":")
        a, b = f_train[name], f_test[name]
        if how:
            a, b = pool(a, how), pool(b, how)
        a, b = flat(a), flat(b)
        report(t, a, b)
        report(t + " L2", norm(a), norm(b))


if __name__ == "__main__":
    main()
