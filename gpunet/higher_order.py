"""Higher-order gradients: the backward of each common op written again with Tensor ops.

``tape.gradient`` normally runs the array-level backward functions of :mod:`gpunet.functional`
with recording paused. Called while another tape is active, it runs these rules instead, on
Tensors, so the outer tape records the backward pass and can differentiate the gradient
(TensorFlow's nested tapes):

    >>> x = gpunet.tensor(3.0)
    >>> with gpunet.GradientTape() as outer:
    ...     outer.watch(x)
    ...     with gpunet.GradientTape() as inner:
    ...         inner.watch(x)
    ...         y = x * x * x
    ...     dy_dx = inner.gradient(y, x)          # 3 x**2 = 27, recorded by ``outer``
    >>> float(outer.gradient(dy_dx, x).numpy())   # 6 x = 18
    18.0

Each rule ``rule(g, inputs, output, needs, *args)`` returns one Tensor (or None) per input.
"""
from __future__ import annotations

import math

from . import autograd, functional as F
from .tensor import Tensor, apply, ones

__all__ = []


def _shape(t):
    return t.shape if isinstance(t, Tensor) else ()


def _unbroadcast(g, shape):
    """``g`` summed over the axes broadcasting added or stretched, back to ``shape`` (Tensor ops)."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(tuple(shape))


def _pair(da, db, a, b, needs):
    return (_unbroadcast(da(), _shape(a)) if needs[0] else None, _unbroadcast(db(), _shape(b)) if needs[1] else None)


def _log(t):
    return apply(F.log, (t,)) if isinstance(t, Tensor) else math.log(t)


def _expand(g, shape, axis, keepdims):
    """A reduced gradient broadcast back over the input's ``shape`` (times ones: differentiable)."""
    axes = F.normalize_axes(axis, len(shape))
    if not keepdims:
        g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return g * ones(shape, dtype=g.dtype, device=g.device), axes


def _matmul(g, inputs, output, needs):
    a, b = inputs
    if a.ndim != 2 or b.ndim != 2:
        raise NotImplementedError("higher-order gradients of matmul/dot are supported for 2-D operands")
    return (g @ b.T if needs[0] else None, a.T @ g if needs[1] else None)


def _sum(g, inputs, output, needs, axis=None, keepdims=False):
    return (_expand(g, inputs[0].shape, axis, keepdims)[0],)


def _mean(g, inputs, output, needs, axis=None, keepdims=False):
    full, axes = _expand(g, inputs[0].shape, axis, keepdims)
    count = 1
    for i in axes:
        count *= inputs[0].shape[i]
    return (full / count,)


def _transpose(g, inputs, output, needs, axes=None):
    axes = tuple(reversed(range(inputs[0].ndim))) if axes is None else tuple(axes)
    return (g.transpose(tuple(sorted(range(len(axes)), key=lambda i: axes[i]))),)


def _mask(t, condition):
    """``condition`` (an array) as a float Tensor on ``t``'s device: a constant, not differentiated."""
    return Tensor.wrap(condition.astype(t.dtype), t.device)


RULES = {
    F.add: lambda g, i, o, n: _pair(lambda: g, lambda: g, *i, n),
    F.subtract: lambda g, i, o, n: _pair(lambda: g, lambda: -g, *i, n),
    F.multiply: lambda g, i, o, n: _pair(lambda: g * i[1], lambda: g * i[0], *i, n),
    F.divide: lambda g, i, o, n: _pair(lambda: g / i[1], lambda: -g * i[0] / (i[1] * i[1]), *i, n),
    F.power: lambda g, i, o, n: _pair(lambda: g * i[1] * i[0] ** (i[1] - 1), lambda: g * o * _log(i[0]), *i, n),
    F.negative: lambda g, i, o, n: (-g,),
    F.square: lambda g, i, o, n: (2 * g * i[0],),
    F.sqrt: lambda g, i, o, n: (0.5 * g / o,),
    F.exp: lambda g, i, o, n: (g * o,),
    F.log: lambda g, i, o, n: (g / i[0],),
    F.relu: lambda g, i, o, n: (g * _mask(o, o.data > 0),),
    F.sigmoid: lambda g, i, o, n: (g * o * (1 - o),),
    F.tanh: lambda g, i, o, n: (g * (1 - o * o),),
    F.sum: _sum,
    F.mean: _mean,
    F.reshape: lambda g, i, o, n, shape: (g.reshape(i[0].shape),),
    F.transpose: _transpose,
    F.matmul: _matmul,
    F.dot: _matmul,
}

autograd.DIFFERENTIABLE_BACKWARDS.update(RULES)
