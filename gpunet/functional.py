"""Differentiable operations on plain arrays: each forward beside its backward.

Every function takes the array module ``xp`` and array operands (Python numbers are allowed
where a value is expected) and returns ``(out, backward)``; ``backward(g, needs)`` gives one
gradient per operand (an array or None), computing only those whose ``needs[i]`` is true.
Nothing here knows about Tensors or tapes: :func:`gpunet.tensor.apply` runs these functions on
a Tensor's array and records ``backward`` on the active tape; layers and the tapeless training
step call them directly.

Broadcasting follows NumPy; the gradient of a broadcast operand is summed back to that
operand's shape (:func:`unbroadcast`).
"""
from __future__ import annotations

import builtins
import numbers

from . import kernels
from .errors import ShapeError


def shape_of(a) -> tuple:
    """``a.shape``, or ``()`` for a Python number."""
    return getattr(a, "shape", ())


def unbroadcast(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, giving ``shape``."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


# ------------------------------------------------------- element-wise, binary
def add(xp, a, b):
    sa, sb = shape_of(a), shape_of(b)
    return a + b, lambda g, n: (unbroadcast(g, sa) if n[0] else None, unbroadcast(g, sb) if n[1] else None)


def subtract(xp, a, b):
    sa, sb = shape_of(a), shape_of(b)
    return a - b, lambda g, n: (unbroadcast(g, sa) if n[0] else None, unbroadcast(-g, sb) if n[1] else None)


def multiply(xp, a, b):
    return a * b, lambda g, n: (unbroadcast(g * b, shape_of(a)) if n[0] else None,
                                unbroadcast(g * a, shape_of(b)) if n[1] else None)


def divide(xp, a, b):
    return a / b, lambda g, n: (unbroadcast(g / b, shape_of(a)) if n[0] else None,
                                unbroadcast(-g * a / (b * b), shape_of(b)) if n[1] else None)


def power(xp, a, b):
    out = a ** b
    return out, lambda g, n: (unbroadcast(g * b * a ** (b - 1), shape_of(a)) if n[0] else None,
                              unbroadcast(g * out * xp.log(a), shape_of(b)) if n[1] else None)


def extremum(xp, a, b, sign):
    """Element-wise maximum (``sign`` 1) or minimum (-1); ties share the gradient equally."""
    out = xp.maximum(a, b) if sign > 0 else xp.minimum(a, b)

    def backward(g, n):
        wa = (a * sign > b * sign) + 0.5 * (a == b)
        return (unbroadcast(g * wa, shape_of(a)) if n[0] else None,
                unbroadcast(g * (1 - wa), shape_of(b)) if n[1] else None)
    return out, backward


def where(xp, condition, a, b):
    cond = condition.astype(bool)
    return xp.where(cond, a, b), lambda g, n: (None, unbroadcast(xp.where(cond, g, 0), shape_of(a)) if n[1] else None,
                                               unbroadcast(xp.where(cond, 0, g), shape_of(b)) if n[2] else None)


# -------------------------------------------------------- element-wise, unary
def negative(xp, a):
    return -a, lambda g, n: (-g,)


def abs(xp, a):
    return xp.abs(a), lambda g, n: (g * (a > 0) - g * (a < 0),)


def square(xp, a):
    return a * a, lambda g, n: (2 * g * a,)


def sqrt(xp, a):
    y = xp.sqrt(a)
    return y, lambda g, n: (0.5 * g / y,)


def exp(xp, a):
    y = xp.exp(a)
    return y, lambda g, n: (g * y,)


def log(xp, a):
    return xp.log(a), lambda g, n: (g / a,)


def clip(xp, a, lo, hi):
    return xp.clip(a, lo, hi), lambda g, n: (g * ((a >= lo) & (a <= hi)),)


def astype(xp, a, dtype):
    src = a.dtype
    return a.astype(dtype), lambda g, n: (g.astype(src),)


# --------------------------------- activations: forward(z) and backward(g, y) from the output y
def relu_forward(xp, z, *, out=None):
    return kernels.bias_act(xp, z, None, "relu", out=xp.empty_like(z) if out is None else out)


def relu_backward(xp, g, y, *, out=None):
    return kernels.act_backward(xp, g, y, "relu", out=out)


def sigmoid_forward(xp, z, *, out=None):
    """``1 / (1 + exp(-z))`` computed as ``0.5 * tanh(z / 2) + 0.5`` (no overflow)."""
    out = xp.multiply(z, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def sigmoid_backward(xp, g, y, *, out=None):
    return xp.multiply(g * y, 1 - y, out=out)


def tanh_forward(xp, z, *, out=None):
    return xp.tanh(z, out=out)


def tanh_backward(xp, g, y, *, out=None):
    return xp.multiply(g, 1 - y * y, out=out)


def softmax_forward(xp, z, axis=-1, *, out=None):
    """``exp(z) / sum(exp(z))`` along ``axis``, shifted by the max so large logits cannot overflow."""
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return xp.divide(e, e.sum(axis=axis, keepdims=True), out=out)


def softmax_backward(xp, g, y, axis=-1, *, out=None):
    return xp.multiply(y, g - (g * y).sum(axis=axis, keepdims=True), out=out)


def relu(xp, a):
    y = relu_forward(xp, a)
    return y, lambda g, n: (relu_backward(xp, g, y),)


def sigmoid(xp, a):
    y = sigmoid_forward(xp, a)
    return y, lambda g, n: (sigmoid_backward(xp, g, y),)


def tanh(xp, a):
    y = tanh_forward(xp, a)
    return y, lambda g, n: (tanh_backward(xp, g, y),)


def softmax(xp, a, axis=-1):
    y = softmax_forward(xp, a, axis=axis)
    return y, lambda g, n: (softmax_backward(xp, g, y, axis=axis),)


def log_softmax(xp, a, axis=-1):
    z = a - a.max(axis=axis, keepdims=True)
    y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
    return y, lambda g, n: (g - xp.exp(y) * g.sum(axis=axis, keepdims=True),)


def softmax_cross_entropy(xp, logits, labels, sparse=False, sample_weight=None):
    """Mean over the batch of ``-sum(y * log(softmax(logits)))`` (each row's loss times its
    ``sample_weight``, a float32 ``(rows,)`` array, when given): the fused kernel of
    :mod:`gpunet.kernels.softmax_xent`; no gradient for the labels or the weights."""
    loss, probs = kernels.softmax_xent_forward(xp, logits, labels, sparse, sample_weight)
    return loss, lambda g, n: (kernels.softmax_xent_backward(xp, probs, labels, g, sparse, sample_weight)
                               if n[0] else None, None)


# ------------------------------------------------------------------ reductions
def normalize_axes(axis, ndim) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ShapeError(f"axis {a} is out of range for a tensor with {ndim} axes")
        out.append(a % ndim if ndim else 0)
    return tuple(out)


def _expand(g, shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input's ``shape``."""
    return g if keepdims else g.reshape([1 if i in axes else n for i, n in enumerate(shape)])


def sum(xp, a, axis=None, keepdims=False):
    axes = normalize_axes(axis, a.ndim)
    return a.sum(axis=axes, keepdims=keepdims), \
        lambda g, n: (xp.broadcast_to(_expand(g, a.shape, axes, keepdims), a.shape),)


def mean(xp, a, axis=None, keepdims=False):
    axes = normalize_axes(axis, a.ndim)
    count = 1
    for i in axes:
        count *= a.shape[i]
    return a.mean(axis=axes, keepdims=keepdims), \
        lambda g, n: (xp.broadcast_to(_expand(g, a.shape, axes, keepdims) / count, a.shape),)


def extreme(xp, a, axis=None, keepdims=False, which="max"):
    """Maximum or minimum over ``axis``; tied extremes share the gradient equally."""
    if a.size == 0:
        raise ShapeError(f"{which}() of an empty tensor (shape {a.shape}) has no value")
    axes = normalize_axes(axis, a.ndim)
    out = getattr(a, which)(axis=axes, keepdims=keepdims)

    def backward(g, n):
        mask = a == _expand(out, a.shape, axes, keepdims)
        return (mask * (_expand(g, a.shape, axes, keepdims) / mask.sum(axis=axes, keepdims=True)),)
    return out, backward


# --------------------------------------------------------------- shape ops
def reshape(xp, a, shape):
    try:
        out = a.reshape(shape)
    except ValueError:
        raise ShapeError(f"cannot reshape a tensor of shape {a.shape} ({a.size} values) into {tuple(shape)}; "
                         "the new shape must hold the same number of values") from None
    return out, lambda g, n: (g.reshape(a.shape),)


def transpose(xp, a, axes=None):
    axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(axes)
    inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
    return a.transpose(axes), lambda g, n: (g.transpose(inverse),)


def _is_basic(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral)) and not isinstance(i, bool)
               for i in items)


def getitem(xp, a, index):
    """``a[index]``; the gradient scatters back into zeros of ``a``'s shape (repeated indices add up)."""
    try:
        out = a[index]
    except IndexError as exc:
        raise IndexError(f"index {index!r} is invalid for a tensor of shape {a.shape}: {exc}") from None
    basic = _is_basic(index)

    def backward(g, n):
        full = xp.zeros(a.shape, dtype=g.dtype)
        if basic:
            full[index] = g
        else:
            xp.add.at(full, index, g)
        return (full,)
    return out, backward


def concatenate(xp, *arrays, axis=0):
    out = xp.concatenate(arrays, axis=axis)
    ax = axis % out.ndim
    bounds = [0]
    for a in arrays:
        bounds.append(bounds[-1] + a.shape[ax])

    def backward(g, n):
        index = [slice(None)] * g.ndim
        grads = []
        for i in range(len(arrays)):
            index[ax] = slice(bounds[i], bounds[i + 1])
            grads.append(g[tuple(index)] if n[i] else None)
        return grads
    return out, backward


def stack(xp, *arrays, axis=0):
    out = xp.stack(arrays, axis=axis)
    ax = axis % out.ndim
    return out, lambda g, n: [g.take(i, axis=ax) if n[i] else None for i in range(len(arrays))]


# ------------------------------------------------------------- products
def _axis_mismatch(name, sa, sb):
    where = "second-to-last" if len(sb) > 1 else "only"
    k = sb[-2] if len(sb) > 1 else sb[0]
    return ShapeError(f"{name} shapes {sa} and {sb} do not match: the last axis of the first ({sa[-1]}) must equal "
                      f"the {where} axis of the second ({k})")


def matmul(xp, a, b):
    """``a @ b`` with NumPy's rules: 1-D operands are promoted, leading axes broadcast."""
    a, b = xp.asarray(a), xp.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul needs operands with at least one axis, got shapes {a.shape} and {b.shape}; "
                         "use * to multiply by a scalar")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise _axis_mismatch("matmul", a.shape, b.shape)
    A = a if a.ndim > 1 else a[None, :]
    B = b if b.ndim > 1 else b[:, None]
    out = xp.matmul(A, B)
    out_shape = out.shape[:-2] + (out.shape[-2:] if a.ndim > 1 and b.ndim > 1 else
                                  out.shape[-1:] if a.ndim == 1 and b.ndim > 1 else
                                  out.shape[-2:-1] if b.ndim == 1 and a.ndim > 1 else ())

    def backward(g, n):
        G = g.reshape(out.shape)
        ga = unbroadcast(xp.matmul(G, xp.swapaxes(B, -1, -2)), A.shape).reshape(a.shape) if n[0] else None
        gb = unbroadcast(xp.matmul(xp.swapaxes(A, -1, -2), G), B.shape).reshape(b.shape) if n[1] else None
        return ga, gb
    return out.reshape(out_shape), backward


def dot(xp, a, b):
    """The chapter's tensor dot (``np.dot``): the last axis of ``a`` meets the second-to-last
    axis of ``b`` (its only axis when ``b`` is a vector); a 0-d operand multiplies."""
    if shape_of(a) == () or shape_of(b) == ():
        return multiply(xp, a, b)
    d = a.shape[-1]
    if d != (b.shape[-2] if b.ndim > 1 else b.shape[0]):
        raise _axis_mismatch("dot", a.shape, b.shape)
    A = a.reshape(-1, d)                                     # (m, d)
    Bm = xp.moveaxis(b, -2, 0) if b.ndim > 1 else b[:, None]
    B = Bm.reshape(d, -1)                                    # (d, n)
    out_shape = a.shape[:-1] + b.shape[:-2] + b.shape[-1:] if b.ndim > 1 else a.shape[:-1]

    def backward(g, n):
        G = g.reshape(A.shape[0], B.shape[1])
        ga = (G @ B.T).reshape(a.shape) if n[0] else None
        gb = None
        if n[1]:
            gB = (A.T @ G).reshape(Bm.shape)
            gb = xp.moveaxis(gB, 0, -2) if b.ndim > 1 else gB.reshape(b.shape)
        return ga, gb
    return (A @ B).reshape(out_shape), backward


def dense(xp, x, kernel, bias=None, activation=None):
    """``activation(x @ kernel + bias)`` as one op: x ``(..., in)``, kernel ``(in, units)``, bias
    ``(units,)`` or None -> ``(..., units)``; activation None/'linear' or 'relu' (fused kernel)."""
    if x.shape[-1] != kernel.shape[0]:
        raise ShapeError(f"dense: input has {x.shape[-1]} features (shape {x.shape}) but the kernel expects "
                         f"{kernel.shape[0]} (kernel shape {kernel.shape})")
    x2 = x.reshape(-1, x.shape[-1])
    out = kernels.dense_forward(xp, x2, kernel, bias, activation)

    def backward(g, n):
        gz = kernels.act_backward(xp, g.reshape(out.shape), out, activation)
        gx, gk, gb = kernels.dense_backward(xp, gz, x2, kernel, n[0], n[1], bias is not None and n[2])
        return (None if gx is None else gx.reshape(x.shape), gk) + ((gb,) if bias is not None else ())
    return out.reshape(x.shape[:-1] + (kernel.shape[1],)), backward
