"""Ported from Keras 3, keras/src/utils/numerical_utils_test.py, for ``gpunet.utils.to_categorical`` and
``gpunet.utils.normalize``, with Keras' numbers.

Adapted: Keras' "backend tensor" is a gpunet Tensor (on each backend: the ``dev`` fixture), and Keras'
``backend.random.uniform((3, 3), seed=1337)`` is a NumPy draw; ``assertAllClose`` is
``np.testing.assert_allclose`` with Keras' tolerance (1e-6). gpunet's one-hot arrays are float32 (Keras 3's
NumPy path gives float64): the values are the same. Not ported: ``test_build_pos_neg_masks`` (a Keras-internal
helper that gpunet does not have).
"""
import numpy as np
import pytest

import gpunet
from gpunet.utils import normalize, to_categorical

NUM_CLASSES = 5


@pytest.mark.parametrize("shape,expected_shape", [
    ((1,), (1, NUM_CLASSES)),
    ((3,), (3, NUM_CLASSES)),
    ((4, 3), (4, 3, NUM_CLASSES)),
    ((5, 4, 3), (5, 4, 3, NUM_CLASSES)),
    ((3, 1), (3, NUM_CLASSES)),
    ((3, 2, 1), (3, 2, NUM_CLASSES)),
])
def test_to_categorical(shape, expected_shape):
    label = np.random.default_rng(0).integers(0, NUM_CLASSES, shape)
    one_hot = to_categorical(label, NUM_CLASSES)
    # Check shape
    assert one_hot.shape == expected_shape
    # Make sure there is only one 1 in a row
    assert np.all(one_hot.sum(axis=-1) == 1)
    # Get original labels back from one hots
    assert np.all(np.argmax(one_hot, -1).reshape(label.shape) == label)


def test_to_categorical_without_num_classes():
    label = [0, 2, 5]
    one_hot = to_categorical(label)
    assert one_hot.shape == (3, 5 + 1)


def test_to_categorical_with_backend_tensor(dev):
    label = gpunet.tensor(np.array([0, 2, 1, 3, 4]))
    expected = np.array([[1, 0, 0, 0, 0],
                         [0, 0, 1, 0, 0],
                         [0, 1, 0, 0, 0],
                         [0, 0, 0, 1, 0],
                         [0, 0, 0, 0, 1]])
    one_hot = to_categorical(label, NUM_CLASSES)
    assert isinstance(one_hot, gpunet.Tensor) and one_hot.device == dev
    np.testing.assert_allclose(one_hot.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_normalize(dev, order):
    xnp = np.random.default_rng(1337).random((3, 3)).astype("float32")
    xb = gpunet.tensor(xnp)

    # Expected result
    l2 = np.atleast_1d(np.linalg.norm(xnp, order, axis=-1))
    l2[l2 == 0] = 1
    expected = xnp / np.expand_dims(l2, axis=-1)

    # Test NumPy
    out = normalize(xnp, axis=-1, order=order)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)

    # Test backend
    out = normalize(xb, axis=-1, order=order)
    assert isinstance(out, gpunet.Tensor)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_normalize_numpy_axis_zero():
    x = np.array([[3.0, 0.0, 12.0],
                  [4.0, 5.0, 0.0]])
    expected = np.array([[0.6, 0.0, 1.0],
                         [0.8, 1.0, 0.0]])
    out = normalize(x, axis=0)
    assert isinstance(out, np.ndarray)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
