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
           "naive_matrix_vector_dot", "naive_matrix_dot", "naive_conv2d", "naive_max_pool2d", "naive_avg_pool2d"]


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


def _same_or_valid(size, k, stride, padding):
    """``(out, pad_before)`` along one axis, by Keras/TensorFlow's 'valid'/'same' rules."""
    _require(padding in ("valid", "same"), f"padding must be 'valid' or 'same', got {padding!r}")
    if padding == "valid":
        return (size - k) // stride + 1, 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + k - size, 0) // 2


def _window_positions(x, i, oh, ow, kh, kw, strides, pads):
    """The ``(dy, dx, row, col)`` of window ``(oh, ow)`` that fall inside image ``i`` of ``x``, row-major."""
    for dy in range(kh):
        for dx in range(kw):
            r, c = oh * strides[0] + dy - pads[0], ow * strides[1] + dx - pads[1]
            if 0 <= r < x.shape[1] and 0 <= c < x.shape[2]:
                yield dy, dx, r, c


def naive_conv2d(x, kernel, bias=None, strides=(1, 1), padding="valid"):
    """2D convolution (a cross-correlation, as in Keras) of channels-last images ``x (n, H, W, C)`` with
    ``kernel (kh, kw, C, filters)``, plus ``bias (filters,)``: ``(n, out_h, out_w, filters)``, each output
    entry a sum over the window's pixels and channels, positions in the padding counting as zeros."""
    x, kernel = _host(x), _host(kernel)
    _require(x.ndim == 4, f"naive_conv2d needs images (n, height, width, channels), got shape {x.shape}")
    _require(kernel.ndim == 4 and kernel.shape[2] == x.shape[3],
             f"kernel {kernel.shape} must be (kh, kw, {x.shape[3]}, filters) for inputs {x.shape}")
    kh, kw, _, filters = kernel.shape
    out_h, pad_top = _same_or_valid(x.shape[1], kh, strides[0], padding)
    out_w, pad_left = _same_or_valid(x.shape[2], kw, strides[1], padding)
    z = np.zeros((x.shape[0], out_h, out_w, filters))
    for i in range(x.shape[0]):
        for oh in range(out_h):
            for ow in range(out_w):
                for f in range(filters):
                    total = 0. if bias is None else float(_host(bias)[f])
                    for dy, dx, r, c in _window_positions(x, i, oh, ow, kh, kw, strides, (pad_top, pad_left)):
                        total += naive_vector_dot(x[i, r, c, :], kernel[dy, dx, :, f])
                    z[i, oh, ow, f] = total
    return z


def _naive_pool(x, pool_size, strides, padding, reduce):
    x = _host(x)
    _require(x.ndim == 4, f"pooling needs images (n, height, width, channels), got shape {x.shape}")
    strides = pool_size if strides is None else strides
    out_h, pad_top = _same_or_valid(x.shape[1], pool_size[0], strides[0], padding)
    out_w, pad_left = _same_or_valid(x.shape[2], pool_size[1], strides[1], padding)
    z = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(x.shape[0]):
        for oh in range(out_h):
            for ow in range(out_w):
                for ch in range(x.shape[3]):
                    values = [x[i, r, c, ch] for _, _, r, c in
                              _window_positions(x, i, oh, ow, *pool_size, strides, (pad_top, pad_left))]
                    z[i, oh, ow, ch] = reduce(values)
    return z


def naive_max_pool2d(x, pool_size=(2, 2), strides=None, padding="valid"):
    """Max pooling of channels-last images ``x (n, H, W, C)``: each output entry the largest of its
    window's pixels (padding left out); ``strides`` default to ``pool_size``, as in Keras."""
    return _naive_pool(x, pool_size, strides, padding, max)


def naive_avg_pool2d(x, pool_size=(2, 2), strides=None, padding="valid"):
    """Average pooling: each output entry the mean of its window's pixels inside the image (padding is
    left out of the count, as in Keras/TensorFlow)."""
    return _naive_pool(x, pool_size, strides, padding, lambda values: sum(values) / len(values))
