"""The chapter's naive loop implementations, as readable teaching code.

These are deliberately slow Python loops over host NumPy arrays, exactly as
written in *Deep Learning with Python*, section 2.3, except that the shape
``assert``s are clear :class:`~gpunet.ShapeError`s. gpunet's tests use them
as oracles for the vectorized ops.

Example:
    >>> from gpunet import naive
    >>> import gpunet
    >>> x = gpunet.backend.numpy.array([[1., -2.], [-3., 4.]])
    >>> naive.naive_relu(x)
    array([[1., 0.],
           [0., 4.]])
"""
from __future__ import annotations

from . import backend
from .errors import ShapeError

np = backend.numpy

__all__ = ["naive_relu", "naive_add", "naive_add_matrix_and_vector", "naive_vector_dot",
           "naive_matrix_vector_dot", "naive_matrix_dot"]


def _host(x):
    """Accept NumPy arrays and gpunet Tensors (copied to the host)."""
    return x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else np.asarray(x)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ShapeError(message)


def naive_relu(x):
    """Element-wise ``max(x, 0)`` of a 2D tensor, one entry at a time."""
    x = _host(x)
    _require(x.ndim == 2, f"naive_relu needs a 2D tensor, got shape {x.shape}; reshape it to (rows, cols)")
    x = x.copy()  # avoid overwriting the input tensor
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = max(x[i, j], 0)
    return x


def naive_add(x, y):
    """Element-wise sum of two 2D tensors of the same shape."""
    x, y = _host(x), _host(y)
    _require(x.ndim == 2, f"naive_add needs 2D tensors, got x of shape {x.shape}")
    _require(x.shape == y.shape, f"naive_add needs equal shapes, got {x.shape} and {y.shape}; "
             "use naive_add_matrix_and_vector (broadcasting) for a vector")
    x = x.copy()
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += y[i, j]
    return x


def naive_add_matrix_and_vector(x, y):
    """Add vector ``y`` to every row of matrix ``x`` (broadcasting, done by hand)."""
    x, y = _host(x), _host(y)
    _require(x.ndim == 2, f"x must be a 2D tensor (a matrix), got shape {x.shape}")
    _require(y.ndim == 1, f"y must be a 1D tensor (a vector), got shape {y.shape}")
    _require(x.shape[1] == y.shape[0], f"x has {x.shape[1]} columns but y has {y.shape[0]} entries; they must match")
    x = x.copy()
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += y[j]
    return x


def naive_vector_dot(x, y):
    """Dot product of two vectors of the same length: a scalar."""
    x, y = _host(x), _host(y)
    _require(x.ndim == 1 and y.ndim == 1, f"naive_vector_dot needs two vectors, got shapes {x.shape} and {y.shape}")
    _require(x.shape[0] == y.shape[0], f"vectors of different lengths {x.shape[0]} and {y.shape[0]} have no dot product")
    z = 0.
    for i in range(x.shape[0]):
        z += x[i] * y[i]
    return z


def naive_matrix_vector_dot(x, y):
    """Matrix ``(a, b)`` times vector ``(b,)``: a vector ``(a,)`` of row-by-vector dot products."""
    x, y = _host(x), _host(y)
    _require(x.ndim == 2, f"x must be a matrix, got shape {x.shape}")
    _require(y.ndim == 1, f"y must be a vector, got shape {y.shape}")
    _require(x.shape[1] == y.shape[0], f"x has {x.shape[1]} columns but y has {y.shape[0]} entries; they must match")
    z = np.zeros(x.shape[0])
    for i in range(x.shape[0]):
        z[i] = naive_vector_dot(x[i, :], y)
    return z


def naive_matrix_dot(x, y):
    """Matrix ``(a, b)`` times matrix ``(b, c)``: ``(a, c)``, each entry a row-column dot product."""
    x, y = _host(x), _host(y)
    _require(x.ndim == 2 and y.ndim == 2, f"naive_matrix_dot needs two matrices, got shapes {x.shape} and {y.shape}")
    _require(x.shape[1] == y.shape[0], f"the width of x ({x.shape[1]}) must equal the height of y ({y.shape[0]})")
    z = np.zeros((x.shape[0], y.shape[1]))
    for i in range(x.shape[0]):
        for j in range(y.shape[1]):
            z[i, j] = naive_vector_dot(x[i, :], y[:, j])
    return z
