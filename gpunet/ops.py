"""Differentiable operations, each a forward and its backward side by side.

Every op takes Tensors (Python numbers and host arrays are accepted where a
value is expected) and returns a new Tensor on the same device, computed with
that device's ``xp``. When a :class:`~gpunet.GradientTape` is recording and an
input is tracked, the op appends ``backward(g, needs) -> grads per input`` to
the tape; ``needs[i]`` lets it skip gradients nobody asked for.

Broadcasting follows NumPy; the gradient of a broadcast operand is summed back
to that operand's shape (:func:`unbroadcast`).

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

import builtins
import numbers

from . import autograd as _ag, kernels
from .errors import DeviceMismatchError, ShapeError
from .tensor import Tensor, as_tensor

__all__ = [
    "add", "subtract", "multiply", "divide", "power", "negative", "abs", "square", "sqrt",
    "matmul", "dot", "relu", "sigmoid", "tanh", "exp", "log", "softmax", "log_softmax",
    "sum", "mean", "max", "min", "maximum", "minimum", "where", "clip", "reshape", "transpose",
    "getitem", "concatenate", "stack", "astype", "to_device", "dense", "unbroadcast",
    "softmax_cross_entropy", "compare",
]

_state = _ag._state


# ---------------------------------------------------------------- helpers
def _result(data, device, inputs, backward):
    """Wrap ``data`` and record the op when a tape is listening (one list check otherwise)."""
    out = Tensor._wrap(data, device)
    if _state.tapes and not _state.paused:
        _ag.record(out, inputs, backward)
    return out


def _operands(*xs):
    """Common device of the tensor operands; host values become arrays of it, numbers stay."""
    dev = None
    for x in xs:
        if isinstance(x, Tensor):
            if dev is None:
                dev = x.device
            elif x.device is not dev and x.device != dev:
                raise DeviceMismatchError(
                    f"operands live on different devices: {dev} and {x.device}; "
                    f"move one with .to('{dev}') before combining them")
    if dev is None:
        raise TypeError("at least one operand must be a gpunet Tensor")
    out = []
    for x in xs:
        if isinstance(x, Tensor) or isinstance(x, numbers.Number):
            out.append(x)
        else:
            out.append(Tensor(x, device=dev))
    return dev, out


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def unbroadcast(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, giving ``shape``."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _shape(x):
    return x.shape if isinstance(x, Tensor) else ()


# ------------------------------------------------------- element-wise, binary
def add(a, b) -> Tensor:
    """``a + b`` with broadcasting."""
    dev, (a, b) = _operands(a, b)
    sa, sb = _shape(a), _shape(b)
    return _result(_data(a) + _data(b), dev, (a, b),
                   lambda g, n: (unbroadcast(g, sa) if n[0] else None, unbroadcast(g, sb) if n[1] else None))


def subtract(a, b) -> Tensor:
    """``a - b`` with broadcasting."""
    dev, (a, b) = _operands(a, b)
    sa, sb = _shape(a), _shape(b)
    return _result(_data(a) - _data(b), dev, (a, b),
                   lambda g, n: (unbroadcast(g, sa) if n[0] else None, unbroadcast(-g, sb) if n[1] else None))


def multiply(a, b) -> Tensor:
    """Element-wise ``a * b`` with broadcasting."""
    dev, (a, b) = _operands(a, b)
    da, db = _data(a), _data(b)
    return _result(da * db, dev, (a, b), lambda g, n: (
        unbroadcast(g * db, _shape(a)) if n[0] else None,
        unbroadcast(g * da, _shape(b)) if n[1] else None))


def divide(a, b) -> Tensor:
    """Element-wise ``a / b`` with broadcasting."""
    dev, (a, b) = _operands(a, b)
    da, db = _data(a), _data(b)
    return _result(da / db, dev, (a, b), lambda g, n: (
        unbroadcast(g / db, _shape(a)) if n[0] else None,
        unbroadcast(-g * da / (db * db), _shape(b)) if n[1] else None))


def power(a, b) -> Tensor:
    """Element-wise ``a ** b``. The gradient for ``b`` uses ``log(a)`` (needs ``a > 0``)."""
    dev, (a, b) = _operands(a, b)
    da, db = _data(a), _data(b)
    out = da ** db
    xp = dev.xp
    return _result(out, dev, (a, b), lambda g, n: (
        unbroadcast(g * db * da ** (db - 1), _shape(a)) if n[0] else None,
        unbroadcast(g * out * xp.log(da), _shape(b)) if n[1] else None))


def maximum(a, b) -> Tensor:
    """Element-wise maximum (ties share the gradient equally)."""
    return _pick(a, b, 1)


def minimum(a, b) -> Tensor:
    """Element-wise minimum (ties share the gradient equally)."""
    return _pick(a, b, -1)


def _pick(a, b, sign):
    dev, (a, b) = _operands(a, b)
    xp = dev.xp
    da, db = _data(a), _data(b)
    out = xp.maximum(da, db) if sign > 0 else xp.minimum(da, db)

    def backward(g, n):
        wa = (da * sign > db * sign) + 0.5 * (da == db)
        return (unbroadcast(g * wa, _shape(a)) if n[0] else None,
                unbroadcast(g * (1 - wa), _shape(b)) if n[1] else None)
    return _result(out, dev, (a, b), backward)


def where(condition, a, b) -> Tensor:
    """``a`` where ``condition`` is true, else ``b`` (condition is not differentiated)."""
    dev, (c, a, b) = _operands(condition, a, b) if isinstance(condition, Tensor) else \
        (lambda d, r: (d, [Tensor(condition, d)] + r))(*_operands(a, b))
    cond = _data(c).astype(bool)
    xp = dev.xp
    return _result(xp.where(cond, _data(a), _data(b)), dev, (c, a, b), lambda g, n: (
        None,
        unbroadcast(xp.where(cond, g, 0), _shape(a)) if n[1] else None,
        unbroadcast(xp.where(cond, 0, g), _shape(b)) if n[2] else None))


def compare(name: str, a, b) -> Tensor:
    """Element-wise comparison (``'less'``, ``'equal'`` ...): a boolean tensor, not differentiable."""
    dev, (a, b) = _operands(a, b)
    return Tensor._wrap(getattr(dev.xp, name)(_data(a), _data(b)), dev)


# -------------------------------------------------------- element-wise, unary
def _unary(x, fn, grad):
    """``fn(x)``; ``grad(g, x_data, out_data)`` gives the input gradient."""
    x = as_tensor(x)
    xd = x.data
    out = fn(x.device.xp, xd)
    return _result(out, x.device, (x,), lambda g, n: (grad(g, xd, out),))


def negative(x) -> Tensor:
    """``-x``."""
    return _unary(x, lambda xp, a: -a, lambda g, a, y: -g)


def abs(x) -> Tensor:
    """``|x|`` (gradient ``sign(x)``, 0 at 0)."""
    return _unary(x, lambda xp, a: xp.abs(a), lambda g, a, y: g * (a > 0) - g * (a < 0))


def square(x) -> Tensor:
    """``x * x``."""
    return _unary(x, lambda xp, a: a * a, lambda g, a, y: 2 * g * a)


def sqrt(x) -> Tensor:
    """Element-wise square root."""
    return _unary(x, lambda xp, a: xp.sqrt(a), lambda g, a, y: 0.5 * g / y)


def exp(x) -> Tensor:
    """Element-wise ``e ** x``."""
    return _unary(x, lambda xp, a: xp.exp(a), lambda g, a, y: g * y)


def log(x) -> Tensor:
    """Natural logarithm."""
    return _unary(x, lambda xp, a: xp.log(a), lambda g, a, y: g / a)


def relu(x) -> Tensor:
    """``max(x, 0)`` element-wise (gradient 0 at 0, as in Keras and PyTorch)."""
    return _unary(x, lambda xp, a: xp.maximum(a, 0), lambda g, a, y: g * (y > 0))


def sigmoid(x) -> Tensor:
    """``1 / (1 + exp(-x))``, computed as ``0.5 * tanh(x / 2) + 0.5`` (no overflow)."""
    return _unary(x, lambda xp, a: 0.5 * xp.tanh(0.5 * a) + 0.5, lambda g, a, y: g * y * (1 - y))


def tanh(x) -> Tensor:
    """Hyperbolic tangent."""
    return _unary(x, lambda xp, a: xp.tanh(a), lambda g, a, y: g * (1 - y * y))


def clip(x, min_value, max_value) -> Tensor:
    """Values limited to ``[min_value, max_value]``; gradient passes where ``min <= x <= max``."""
    return _unary(x, lambda xp, a: xp.clip(a, min_value, max_value),
                  lambda g, a, y: g * ((a >= min_value) & (a <= max_value)))


def astype(x, dtype) -> Tensor:
    """The values converted to ``dtype``; the gradient is converted back."""
    x = as_tensor(x)
    src = x.dtype
    return _result(x.data.astype(dtype), x.device, (x,), lambda g, n: (g.astype(src),))


def to_device(x, device) -> Tensor:
    """``x`` copied to ``device`` (``x`` itself if already there); the gradient is copied back."""
    from .backend import device as _device
    x = as_tensor(x)
    dev = _device(device)
    if dev == x.device:
        return x
    src = x.device
    data = dev.asarray(x.device.to_host(x.data)) if (src.is_gpu and dev.is_gpu) else dev.asarray(x.data)
    return _result(data, dev, (x,), lambda g, n: (src.asarray(dev.to_host(g)),))


# ------------------------------------------------------------- softmax family
def softmax(x, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the max so large logits cannot overflow."""
    x = as_tensor(x)
    xp = x.device.xp
    e = xp.exp(x.data - x.data.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return _result(y, x.device, (x,), lambda g, n: (y * (g - (g * y).sum(axis=axis, keepdims=True)),))


def log_softmax(x, axis: int = -1) -> Tensor:
    """``log(softmax(x))`` computed as ``x - max - log(sum(exp(x - max)))``: finite for any finite logits."""
    x = as_tensor(x)
    xp = x.device.xp
    z = x.data - x.data.max(axis=axis, keepdims=True)
    y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
    return _result(y, x.device, (x,), lambda g, n: (g - xp.exp(y) * g.sum(axis=axis, keepdims=True),))


def softmax_cross_entropy(logits, labels, sparse: bool = False) -> Tensor:
    """Mean over the batch of ``-sum(y * log(softmax(logits)))``, fused into one op.

    Args:
        logits: float tensor ``(batch, classes)``.
        labels: one-hot / probability targets ``(batch, classes)``, or with ``sparse=True``
            integer class indices ``(batch,)``.

    The backward is exactly ``(softmax(logits) - y) / batch`` (no clipped log in between),
    and the forward is finite even for logits of ``1e4``.
    """
    dev, (z, y) = _operands(logits, labels)
    loss, probs = kernels.softmax_xent_forward(dev.xp, z.data, y.data, sparse)
    return _result(loss, dev, (z, y), lambda g, n: (
        kernels.softmax_xent_backward(dev.xp, probs, y.data, g, sparse) if n[0] else None, None))


# ------------------------------------------------------------------ reductions
def _norm_axis(axis, ndim):
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
    if not keepdims:
        g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return g


def sum(x, axis=None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes when ``None``)."""
    x = as_tensor(x)
    xp, shape = x.device.xp, x.shape
    axes = _norm_axis(axis, x.ndim)
    return _result(x.data.sum(axis=axes, keepdims=keepdims), x.device, (x,),
                   lambda g, n: (xp.broadcast_to(_expand(g, shape, axes, keepdims), shape),))


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes when ``None``)."""
    x = as_tensor(x)
    xp, shape = x.device.xp, x.shape
    axes = _norm_axis(axis, x.ndim)
    count = 1
    for a in axes:
        count *= shape[a]
    return _result(x.data.mean(axis=axes, keepdims=keepdims), x.device, (x,),
                   lambda g, n: (xp.broadcast_to(_expand(g, shape, axes, keepdims) / count, shape),))


def max(x, axis=None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``; tied maxima share the gradient equally."""
    return _extreme(x, axis, keepdims, "max")


def min(x, axis=None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``; tied minima share the gradient equally."""
    return _extreme(x, axis, keepdims, "min")


def _extreme(x, axis, keepdims, which):
    x = as_tensor(x)
    if x.size == 0:
        raise ShapeError(f"{which}() of an empty tensor (shape {x.shape}) has no value")
    axes = _norm_axis(axis, x.ndim)
    shape = x.shape
    out = getattr(x.data, which)(axis=axes, keepdims=keepdims)

    def backward(g, n):
        mask = x.data == _expand(out, shape, axes, keepdims)
        return (mask * (_expand(g, shape, axes, keepdims) / mask.sum(axis=axes, keepdims=True)),)
    return _result(out, x.device, (x,), backward)


# --------------------------------------------------------------- shape ops
def reshape(x, shape) -> Tensor:
    """Same values in a new shape (one axis may be ``-1``)."""
    x = as_tensor(x)
    src = x.shape
    try:
        out = x.data.reshape(shape)
    except ValueError:
        raise ShapeError(f"cannot reshape a tensor of shape {src} ({x.size} values) into {tuple(shape)}; "
                         "the new shape must hold the same number of values") from None
    return _result(out, x.device, (x,), lambda g, n: (g.reshape(src),))


def transpose(x, axes=None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None): ``(300, 20) -> (20, 300)``."""
    x = as_tensor(x)
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
    return _result(x.data.transpose(axes), x.device, (x,), lambda g, n: (g.transpose(inverse),))


def _is_basic(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral)) and not isinstance(i, bool)
               for i in items)


def getitem(x, index) -> Tensor:
    """``x[index]``: slices, integers, ``None``, ``...``, integer arrays and boolean masks.

    The gradient scatters back into a zero tensor of ``x``'s shape (repeated indices add up).
    """
    x = as_tensor(x)
    xp = x.device.xp
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, Tensor):
        index = index.data
    try:
        out = x.data[index]
    except IndexError as exc:
        raise IndexError(f"index {index!r} is invalid for a tensor of shape {x.shape}: {exc}") from None
    basic = _is_basic(index)

    def backward(g, n):
        full = xp.zeros(x.shape, dtype=g.dtype)
        if basic:
            full[index] = g
        else:
            xp.add.at(full, index, g)
        return (full,)
    return _result(out, x.device, (x,), backward)


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    dev, ts = _operands(*tensors)
    ts = [t if isinstance(t, Tensor) else Tensor(t, dev) for t in ts]
    xp = dev.xp
    out = xp.concatenate([t.data for t in ts], axis=axis)
    ax = axis % out.ndim
    bounds = [0]
    for t in ts:
        bounds.append(bounds[-1] + t.shape[ax])

    def backward(g, n):
        sl = [slice(None)] * g.ndim
        grads = []
        for i in range(len(ts)):
            sl[ax] = slice(bounds[i], bounds[i + 1])
            grads.append(g[tuple(sl)] if n[i] else None)
        return grads
    return _result(out, dev, tuple(ts), backward)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    dev, ts = _operands(*tensors)
    ts = [t if isinstance(t, Tensor) else Tensor(t, dev) for t in ts]
    out = dev.xp.stack([t.data for t in ts], axis=axis)
    ax = axis % out.ndim
    return _result(out, dev, tuple(ts),
                   lambda g, n: [g.take(i, axis=ax) if n[i] else None for i in range(len(ts))])


# ------------------------------------------------------------- products
def matmul(a, b) -> Tensor:
    """``a @ b`` with NumPy's rules: 1-D operands are promoted, leading axes broadcast."""
    dev, (a, b) = _operands(a, b)
    a, b = as_tensor(a, dev), as_tensor(b, dev)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul needs operands with at least one axis, got shapes {a.shape} and {b.shape}; "
                         "use * to multiply by a scalar")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ShapeError(f"matmul shapes {a.shape} and {b.shape} do not match: the last axis of the first "
                         f"({a.shape[-1]}) must equal the {'second-to-last' if b.ndim > 1 else 'only'} axis "
                         f"of the second ({b.shape[-2 if b.ndim > 1 else 0]})")
    xp = dev.xp
    A = a.data if a.ndim > 1 else a.data[None, :]
    B = b.data if b.ndim > 1 else b.data[:, None]
    out = xp.matmul(A, B)
    out_shape = out.shape[:-2] + (out.shape[-2:] if a.ndim > 1 and b.ndim > 1 else
                                  out.shape[-1:] if a.ndim == 1 and b.ndim > 1 else
                                  out.shape[-2:-1] if b.ndim == 1 and a.ndim > 1 else ())

    def backward(g, n):
        G = g.reshape(out.shape)
        ga = unbroadcast(xp.matmul(G, xp.swapaxes(B, -1, -2)), A.shape).reshape(a.shape) if n[0] else None
        gb = unbroadcast(xp.matmul(xp.swapaxes(A, -1, -2), G), B.shape).reshape(b.shape) if n[1] else None
        return ga, gb
    return _result(out.reshape(out_shape), dev, (a, b), backward)


def dot(a, b) -> Tensor:
    """The chapter's tensor dot (NumPy's ``np.dot``): the last axis of ``a`` meets the
    second-to-last axis of ``b`` (its only axis when ``b`` is a vector).

    Shapes: ``(d,).(d,) -> ()``, ``(a,b).(b,c) -> (a,c)``, ``(a,b,c,d).(d,) -> (a,b,c)``,
    ``(a,b,c,d).(d,e) -> (a,b,c,e)``; a 0-d operand multiplies element-wise.
    """
    dev, (a, b) = _operands(a, b)
    a, b = as_tensor(a, dev), as_tensor(b, dev)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    d = a.shape[-1]
    k = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if d != k:
        raise ShapeError(f"dot shapes {a.shape} and {b.shape} do not match: the last axis of the first ({d}) "
                         f"must equal the {'second-to-last' if b.ndim > 1 else 'only'} axis of the second ({k})")
    xp = dev.xp
    A = a.data.reshape(-1, d)                                # (m, d)
    Bm = xp.moveaxis(b.data, -2, 0) if b.ndim > 1 else b.data[:, None]
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
    return _result((A @ B).reshape(out_shape), dev, (a, b), backward)


def dense(x, kernel, bias=None, activation: str | None = None) -> Tensor:
    """``activation(dot(x, kernel) + bias)`` as one op — the Dense layer's forward and backward.

    Shapes: x ``(..., in)``, kernel ``(in, units)``, bias ``(units,)`` -> ``(..., units)``.
    ``activation`` is ``None``/``'linear'`` or ``'relu'`` (others are applied as separate ops).
    The backward masks the incoming gradient with ``out > 0`` in one pass and computes the
    gradient for ``x`` only when something tracks ``x`` (never for the input data).
    """
    dev, (x, kernel, bias) = _operands(x, kernel, bias) if bias is not None else (
        lambda d, r: (d, r + [None]))(*_operands(x, kernel))
    if x.shape[-1] != kernel.shape[0]:
        raise ShapeError(f"dense: input has {x.shape[-1]} features (shape {x.shape}) but the kernel expects "
                         f"{kernel.shape[0]} (kernel shape {kernel.shape})")
    xd = x.data.reshape(-1, x.shape[-1])
    out = dense_forward(dev.xp, xd, kernel.data, None if bias is None else bias.data, activation)
    inputs = (x, kernel) if bias is None else (x, kernel, bias)

    def backward(g, n):
        gx, gk, gb = dense_backward(dev.xp, g.reshape(out.shape), out, xd, kernel.data, activation,
                                    n[0], n[1], bias is not None and n[2])
        return (None if gx is None else gx.reshape(x.shape), gk) + ((gb,) if bias is not None else ())
    return _result(out.reshape(x.shape[:-1] + (kernel.shape[1],)), dev, inputs, backward)


def dense_forward(xp, x2, kernel, bias, activation, out=None):
    """Array-level forward of :func:`dense`: ``x2 (n, in)`` -> ``act(x2 @ kernel + bias) (n, units)``,
    written into ``out`` when given (the fused training step reuses its buffers)."""
    return kernels.bias_act_forward(xp, xp.matmul(x2, kernel, out=out), bias, activation)


def dense_backward(xp, g2, out, x2, kernel, activation, need_x, need_kernel, need_bias, buffers=None):
    """Array-level backward of :func:`dense` from the gradient ``g2 (n, units)`` of its output ``out``:
    ``(grad x2, grad kernel, grad bias)``, each None when not needed. ``buffers``: optional arrays
    ``{'gz', 'gx', 'gk'}`` to write into instead of allocating."""
    b = buffers or {}
    gz = kernels.act_backward(xp, g2, out, activation, out=b.get("gz"))
    return (xp.matmul(gz, kernel.T, out=b.get("gx")) if need_x else None,
            xp.matmul(x2.T, gz, out=b.get("gk")) if need_kernel else None,
            gz.sum(axis=0) if need_bias else None)
