"""Tensor creation, attributes, host copies and the chapter's tensor vocabulary."""
import numpy as np
import pytest

import gpunet


def test_ranks_from_the_chapter(dev):
    assert gpunet.tensor(12, device=dev).ndim == 0
    assert gpunet.tensor([12, 3, 6, 14], device=dev).ndim == 1
    m = gpunet.tensor([[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]], device=dev)
    assert m.ndim == 2 and m.shape == (3, 5) and m.size == 15 and m.dtype == np.int64
    t = gpunet.tensor(np.zeros((3, 3, 5), np.uint8), device=dev)
    assert t.ndim == 3 and t.dtype == np.uint8 and len(t) == 3


def test_float_defaults_and_explicit_dtypes(dev):
    assert gpunet.tensor([1.5], device=dev).dtype == np.float32
    assert gpunet.tensor(np.ones(2), device=dev).dtype == np.float32        # float64 data -> float32
    assert gpunet.tensor(np.ones(2), dtype="float64", device=dev).dtype == np.float64
    assert gpunet.tensor([True], device=dev).dtype == bool
    assert gpunet.tensor([1, 2], device=dev).astype("float32").dtype == np.float32


def test_numpy_is_a_host_copy(dev):
    src = np.arange(4.0, dtype=np.float32)
    t = gpunet.tensor(src, device=dev)
    src[0] = 99          # the tensor does not alias the caller's array
    assert t.numpy()[0] == 0
    h = t.numpy()
    h[1] = 42            # nor does the host copy alias the tensor
    assert t.numpy()[1] == 1 and isinstance(h, np.ndarray)
    assert np.asarray(t).tolist() == [0, 1, 2, 3]


def test_item_and_scalars(dev):
    assert gpunet.tensor([[2.5]], device=dev).item() == 2.5
    assert float(gpunet.tensor(3.0, device=dev)) == 3.0
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        gpunet.tensor([1.0, 2.0], device=dev).item()


def test_repr_mentions_device_and_grad():
    r = repr(gpunet.tensor([1.0], device="cpu:1", requires_grad=True))
    assert "device='cpu:1'" in r and "requires_grad=True" in r


def test_batches_and_mnist_style_slicing(dev):
    images = gpunet.tensor(np.arange(300 * 28 * 28, dtype=np.uint32).reshape(300, 28, 28) % 255, device=dev)
    batch = images[128:256]
    assert batch.shape == (128, 28, 28)
    n = 2
    assert images[128 * n:128 * (n + 1)].shape == (44, 28, 28)
    assert images[:, 7:-7, 7:-7].shape == (300, 14, 14)
    flat = images.reshape((300, 28 * 28)).astype("float32") / 255
    assert flat.shape == (300, 784) and float(flat.max().item()) <= 1.0


def test_argmax(dev):
    t = gpunet.tensor([[0.1, 0.7, 0.2], [0.9, 0.0, 0.1]], device=dev)
    assert t.argmax(axis=1).numpy().tolist() == [1, 0]


def test_zeros_ones(dev):
    assert gpunet.zeros((2, 3), device=dev).numpy().sum() == 0
    assert gpunet.ones(4, device=dev).numpy().sum() == 4
