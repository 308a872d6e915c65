"""Small helpers from ``keras.utils``: ``to_categorical`` and ``normalize``.

Example:
    >>> from gpunet.utils import to_categorical
    >>> to_categorical([0, 2, 1])
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]], dtype=float32)
"""
from __future__ import annotations

from . import backend, ops
from .tensor import Tensor

np = backend.numpy

__all__ = ["to_categorical", "normalize"]


def _host(x):
    """``(host NumPy array, how to give a result back)``: a Tensor's result becomes a Tensor of its
    device, a CuPy array's a CuPy array, anything else stays a NumPy array."""
    if isinstance(x, Tensor):
        return x.numpy(), lambda out: Tensor(out, device=x.device, dtype=out.dtype)
    if not isinstance(x, np.ndarray) and hasattr(x, "get") and hasattr(x, "__cuda_array_interface__"):
        xp = backend.array_module_of(x)
        return x.get(), xp.asarray
    return np.asarray(x), lambda out: out


def to_categorical(y, num_classes: int | None = None, dtype="float32"):
    """One-hot encode integer class labels: shape ``(...,)`` -> ``(..., num_classes)`` (a trailing axis of
    size 1 is dropped first, as in Keras).

    ``num_classes`` defaults to ``max(y) + 1``. Labels must be integers in ``[0, num_classes)``. NumPy
    data and lists give a NumPy array; a gpunet Tensor gives a Tensor on its device (a CuPy array, a
    CuPy array), as Keras gives a backend tensor for one.
    """
    y, give_back = _host(y)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"to_categorical needs integer class labels, got values like {y.flat[0]!r}")
    y = y.astype(np.int64)
    if not num_classes:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found min {y.min()} and max {y.max()}; "
                         "pass a larger num_classes or fix the labels")
    out = np.zeros(y.shape + (int(num_classes),), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return give_back(out)


def normalize(x, axis=-1, order=2):
    """``x`` divided by its ``order``-norm along ``axis`` (Keras' ``keras.utils.normalize``).

    A NumPy array (or list) gives a NumPy array, zero norms left as 1 (as Keras does); a gpunet Tensor
    gives a Tensor, differentiable, with norms floored at 1e-7 (Keras' ``ops.normalize``).
    """
    if isinstance(x, Tensor):
        if order == 2:
            norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
        else:
            norm = ops.power(ops.sum(ops.power(ops.abs(x), order), axis=axis, keepdims=True), 1.0 / order)
        return x / ops.maximum(norm, 1e-7)
    x = np.asarray(x)
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, -1 if axis is None else axis)
