#!/usr/bin/env python3
"""The origin study's recipe in Keras (TensorFlow CPU), timed per epoch.

Seed tower (Conv 3x3 8 ReLU, Conv 3x3 16 ReLU, MaxPool 2, Flatten, Dense 32 ReLU), concatenation
head (Dense 16, Dense 4, Dense 1 sigmoid), binary cross-entropy, Adam 1e-3, batch 1024, 70,000
training pairs (70% of 100,000) from MNIST. Prints seconds per epoch.
Usage: keras_epoch.py DATA_DIR [EPOCHS]
"""
import pathlib
import sys
import time

import numpy as np
import tensorflow as tf
from tensorflow import keras


def idx(path):
    raw = pathlib.Path(path).read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


data = pathlib.Path(sys.argv[1])
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
x = idx(data / "train-images-idx3-ubyte").astype("float32")[..., None] / 255.0
y = idx(data / "train-labels-idx1-ubyte")
rng = np.random.default_rng(1)
by = [np.flatnonzero(y == c) for c in range(10)]
n = 100_000
a = rng.integers(0, len(y), n)
b = np.empty(n, np.int64)
sim = np.arange(n) % 2 == 0
for i in range(n):
    if sim[i]:
        b[i] = rng.choice(by[y[a[i]]])
    else:
        b[i] = rng.integers(0, len(y))
        while y[b[i]] == y[a[i]]:
            b[i] = rng.integers(0, len(y))
split = int(n * 0.7)

inp = keras.Input((28, 28, 1))
t = keras.layers.Conv2D(8, 3, activation="relu")(inp)
t = keras.layers.Conv2D(16, 3, activation="relu")(t)
t = keras.layers.MaxPooling2D(2)(t)
t = keras.layers.Flatten()(t)
t = keras.layers.Dense(32, activation="relu")(t)
tower = keras.Model(inp, t)
ia, ib = keras.Input((28, 28, 1)), keras.Input((28, 28, 1))
h = keras.layers.Concatenate()([tower(ia), tower(ib)])
h = keras.layers.Dense(16, activation="relu")(h)
h = keras.layers.Dense(4, activation="relu")(h)
out = keras.layers.Dense(1, activation="sigmoid")(h)
model = keras.Model([ia, ib], out)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])


class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(f"keras epoch {epoch + 1}: {time.perf_counter() - self.t:.1f} s, val_accuracy {logs['val_accuracy']:.4f}", flush=True)


model.fit(
    [x[a[:split]], x[b[:split]]], sim[:split].astype("float32"),
    validation_data=([x[a[split:]], x[b[split:]]], sim[split:].astype("float32")),
    batch_size=1024, epochs=epochs, verbose=0, callbacks=[Timer()],
)
print(f"tensorflow {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
