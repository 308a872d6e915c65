"""Differentiable operations on Tensors, as functions (the operators of :class:`~gpunet.Tensor`
are the same operations).

Every op takes Tensors (Python numbers and host arrays are accepted where a value is expected)
and returns a new Tensor on the same device. Each runs one array function of
:mod:`gpunet.functional` — where its forward and backward stand side by side — through
:func:`gpunet.tensor.apply`, which records the backward on any active
:class:`~gpunet.GradientTape`.

Broadcasting follows NumPy; the gradient of a broadcast operand is summed back to that
operand's shape (:func:`unbroadcast`).

Example (the chapter's Dense layer, ``relu(dot(input, W) + b)``):
    >>> import gpunet
    >>> from gpunet import ops
    >>> x = gpunet.tensor([[1., 2.]])
    >>> W = gpunet.tensor([[1., -1.], [1., -1.]], requires_grad=True)
    >>> b = gpunet.tensor([0.5, 0.5], requires_grad=True)
    >>> with gpunet.GradientTape() as tape:
    ...     y = ops.relu(ops.dot(x, W) + b).sum()
    >>> gW, gb = tape.gradient(y, [W, b])
    >>> gW.numpy(), gb.numpy()
    (array([[1., 0.],
           [2., 0.]], dtype=float32), array([1., 0.], dtype=float32))
"""
from __future__ import annotations

from . import functional as F
from . import functional_conv as FC
from .functional import unbroadcast
from .tensor import Tensor, apply, as_tensor, compare, true_divide

__all__ = [
    "add", "subtract", "multiply", "divide", "power", "negative", "abs", "square", "sqrt",
    "matmul", "dot", "relu", "sigmoid", "tanh", "exp", "log", "softmax", "log_softmax",
    "sum", "mean", "max", "min", "maximum", "minimum", "where", "clip", "reshape", "transpose",
    "getitem", "concatenate", "stack", "astype", "to_device", "dense", "unbroadcast",
    "softmax_cross_entropy", "compare", "conv2d", "max_pool2d", "avg_pool2d",
]


# ------------------------------------------------------- element-wise, binary
def add(a, b) -> Tensor:
    """``a + b`` with broadcasting."""
    return apply(F.add, (a, b))


def subtract(a, b) -> Tensor:
    """``a - b`` with broadcasting."""
    return apply(F.subtract, (a, b))


def multiply(a, b) -> Tensor:
    """Element-wise ``a * b`` with broadcasting."""
    return apply(F.multiply, (a, b))


def divide(a, b) -> Tensor:
    """Element-wise ``a / b`` with broadcasting, as ``Tensor.__truediv__``: integer operands give
    float32 (gpunet's float32 policy; NumPy would give float64)."""
    return true_divide(a, b)


def power(a, b) -> Tensor:
    """Element-wise ``a ** b``. The gradient for ``b`` uses ``log(a)`` (needs ``a > 0``)."""
    return apply(F.power, (a, b))


def maximum(a, b) -> Tensor:
    """Element-wise maximum (ties share the gradient equally)."""
    return apply(F.extremum, (a, b), 1)


def minimum(a, b) -> Tensor:
    """Element-wise minimum (ties share the gradient equally)."""
    return apply(F.extremum, (a, b), -1)


def where(condition, a, b) -> Tensor:
    """``a`` where ``condition`` is true, else ``b`` (condition is not differentiated)."""
    return apply(F.where, (condition, a, b))


# -------------------------------------------------------- element-wise, unary
def negative(x) -> Tensor:
    """``-x``."""
    return apply(F.negative, (as_tensor(x),))


def abs(x) -> Tensor:
    """``|x|`` (gradient ``sign(x)``, 0 at 0)."""
    return apply(F.abs, (as_tensor(x),))


def square(x) -> Tensor:
    """``x * x``."""
    return apply(F.square, (as_tensor(x),))


def sqrt(x) -> Tensor:
    """Element-wise square root."""
    return apply(F.sqrt, (as_tensor(x),))


def exp(x) -> Tensor:
    """Element-wise ``e ** x``."""
    return apply(F.exp, (as_tensor(x),))


def log(x) -> Tensor:
    """Natural logarithm."""
    return apply(F.log, (as_tensor(x),))


def relu(x) -> Tensor:
    """``max(x, 0)`` element-wise (gradient 0 at 0, as in Keras and PyTorch)."""
    return apply(F.relu, (as_tensor(x),))


def sigmoid(x) -> Tensor:
    """``1 / (1 + exp(-x))``, computed as ``0.5 * tanh(x / 2) + 0.5`` (no overflow)."""
    return apply(F.sigmoid, (as_tensor(x),))


def tanh(x) -> Tensor:
    """Hyperbolic tangent."""
    return apply(F.tanh, (as_tensor(x),))


def clip(x, min_value, max_value) -> Tensor:
    """Values limited to ``[min_value, max_value]``; gradient passes where ``min <= x <= max``."""
    return apply(F.clip, (as_tensor(x),), min_value, max_value)


def astype(x, dtype) -> Tensor:
    """The values converted to ``dtype``; the gradient is converted back."""
    return apply(F.astype, (as_tensor(x),), dtype)


def to_device(x, device) -> Tensor:
    """``x`` copied to ``device`` (``x`` itself if already there); the gradient is copied back."""
    return as_tensor(x).to(device)


# ------------------------------------------------------------- softmax family
def softmax(x, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the max so large logits cannot overflow."""
    return apply(F.softmax, (as_tensor(x),), axis)


def log_softmax(x, axis: int = -1) -> Tensor:
    """``log(softmax(x))`` computed as ``x - max - log(sum(exp(x - max)))``: finite for any finite logits."""
    return apply(F.log_softmax, (as_tensor(x),), axis)


def softmax_cross_entropy(logits, labels, sparse: bool = False) -> Tensor:
    """Mean over the batch of ``-sum(y * log(softmax(logits)))``, fused into one op.

    Args:
        logits: float tensor ``(batch, classes)``.
        labels: one-hot / probability targets ``(batch, classes)``, or with ``sparse=True``
            integer class indices ``(batch,)``.

    The backward is exactly ``(softmax(logits) - y) / batch`` (no clipped log in between),
    and the forward is finite even for logits of ``1e4``.
    """
    return apply(F.softmax_cross_entropy, (logits, labels), sparse)


# ------------------------------------------------------------------ reductions
def sum(x, axis=None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes when ``None``)."""
    return apply(F.sum, (as_tensor(x),), axis, keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes when ``None``)."""
    return apply(F.mean, (as_tensor(x),), axis, keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``; tied maxima share the gradient equally."""
    return apply(F.extreme, (as_tensor(x),), axis, keepdims, "max")


def min(x, axis=None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``; tied minima share the gradient equally."""
    return apply(F.extreme, (as_tensor(x),), axis, keepdims, "min")


# --------------------------------------------------------------- shape ops
def reshape(x, shape) -> Tensor:
    """Same values in a new shape (one axis may be ``-1``)."""
    return as_tensor(x).reshape(shape)


def transpose(x, axes=None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None): ``(300, 20) -> (20, 300)``."""
    return apply(F.transpose, (as_tensor(x),), axes)


def getitem(x, index) -> Tensor:
    """``x[index]``: slices, integers, ``None``, ``...``, integer arrays and boolean masks.

    The gradient scatters back into a zero tensor of ``x``'s shape (repeated indices add up).
    """
    return as_tensor(x)[index]


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    return apply(F.concatenate, tuple(tensors), axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    return apply(F.stack, tuple(tensors), axis=axis)


# ------------------------------------------------------------- products
def matmul(a, b) -> Tensor:
    """``a @ b`` with NumPy's rules: 1-D operands are promoted, leading axes broadcast."""
    return apply(F.matmul, (a, b))


def dot(a, b) -> Tensor:
    """The chapter's tensor dot (NumPy's ``np.dot``): the last axis of ``a`` meets the
    second-to-last axis of ``b`` (its only axis when ``b`` is a vector).

    Shapes: ``(d,).(d,) -> ()``, ``(a,b).(b,c) -> (a,c)``, ``(a,b,c,d).(d,) -> (a,b,c)``,
    ``(a,b,c,d).(d,e) -> (a,b,c,e)``; a 0-d operand multiplies element-wise.
    """
    return apply(F.dot, (a, b))


def dense(x, kernel, bias=None, activation: str | None = None) -> Tensor:
    """``activation(dot(x, kernel) + bias)`` as one op, with the bias and ReLU fused in one kernel.

    Shapes: x ``(..., in)``, kernel ``(in, units)``, bias ``(units,)`` -> ``(..., units)``.
    ``activation`` is ``None``/``'linear'`` or ``'relu'``. The backward masks the incoming
    gradient with ``out > 0`` in one pass and computes the gradient for ``x`` only when
    something tracks ``x`` (never for the input data).
    """
    if bias is None:
        return apply(F.dense, (x, kernel), None, activation)
    return apply(F.dense, (x, kernel, bias), activation)


# ------------------------------------------------------- convolution, pooling
def conv2d(x, kernel, bias=None, strides=(1, 1), padding: str = "valid") -> Tensor:
    """2D convolution (cross-correlation, as Keras computes it) of channels-last images.

    Shapes: x ``(n, H, W, C)``, kernel ``(kh, kw, C, filters)``, bias ``(filters,)`` or None ->
    ``(n, out_h, out_w, filters)``; ``strides`` an int or a pair; ``padding`` 'valid' (no padding) or
    'same' (``out = ceil(in / stride)``, zeros around, the odd one on the bottom/right as in TensorFlow).
    Computed as im2col and one matrix product; gradients for x, kernel and bias.

    >>> import gpunet
    >>> x = gpunet.ones((1, 4, 4, 1)); k = gpunet.ones((3, 3, 1, 2))
    >>> conv2d(x, k, padding='same').numpy()[0, :, :, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]], dtype=float32)
    """
    operands = (x, kernel) if bias is None else (x, kernel, bias)
    return apply(FC.conv2d, operands, strides=strides, padding=str(padding).lower())


def max_pool2d(x, pool_size=(2, 2), strides=None, padding: str = "valid") -> Tensor:
    """Max pooling of channels-last images ``(n, H, W, C)`` (``strides`` default to ``pool_size``); the
    gradient of each window goes to its first maximum in row-major order (TensorFlow's choice)."""
    return apply(FC.max_pool2d, (as_tensor(x),), pool_size, strides, str(padding).lower())


def avg_pool2d(x, pool_size=(2, 2), strides=None, padding: str = "valid") -> Tensor:
    """Average pooling of channels-last images; with 'same' padding each window averages only its
    positions inside the image (TensorFlow's rule)."""
    return apply(FC.avg_pool2d, (as_tensor(x),), pool_size, strides, str(padding).lower())
