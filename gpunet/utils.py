"""Small helpers from ``keras.utils``.

Example:
    >>> from gpunet.utils import to_categorical
    >>> to_categorical([0, 2, 1])
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]], dtype=float32)
"""
from __future__ import annotations

from . import backend

np = backend.numpy


def to_categorical(y, num_classes: int | None = None, dtype="float32"):
    """One-hot encode integer class labels: shape ``(n,)`` -> ``(n, num_classes)`` (host NumPy).

    ``num_classes`` defaults to ``max(y) + 1``. Labels must be integers in ``[0, num_classes)``.
    """
    y = np.asarray(y.numpy() if hasattr(y, "numpy") and not isinstance(y, np.ndarray) else y)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"to_categorical needs integer class labels, got values like {y.flat[0]!r}")
    y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found min {y.min()} and max {y.max()}; "
                         "pass a larger num_classes or fix the labels")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out
