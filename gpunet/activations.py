"""Activation functions by Keras name: ``relu``, ``sigmoid``, ``tanh``, ``softmax``, ``linear``.

Each is an :class:`Activation`: call it on a Tensor of any shape (differentiable; softmax acts
on the last axis), or use its array-level ``forward(xp, z)`` / ``backward(xp, g, y)`` pair
(from :mod:`gpunet.functional`), which layers and the tapeless training step run directly.

Example:
    >>> from gpunet import activations
    >>> activations.get('relu')(gpunet.tensor([-1.0, 2.0])).numpy()
    array([0., 2.], dtype=float32)
"""
from __future__ import annotations

from . import functional as F
from ._registry import lookup
from .tensor import apply, as_tensor


class Activation:
    """A named element-wise (or, for softmax, last-axis) activation.

    ``forward(xp, z, out=None)`` returns ``y``; ``backward(xp, g, y, out=None)`` returns the
    gradient for ``z`` from the gradient ``g`` of ``y`` and from ``y`` alone (so ``z`` need not
    be kept). ``out`` is an optional array to write into.
    """

    def __init__(self, name: str, forward, backward, doc: str):
        self.name, self.forward, self.backward = name, forward, backward
        self.__doc__ = doc

    def _function(self, xp, z, *args, **kwargs):
        y = self.forward(xp, z, *args, **kwargs)
        return y, lambda g, n: (self.backward(xp, g, y, *args, **kwargs),)

    def __call__(self, x, *args, **kwargs):
        """The activation of ``x`` (a Tensor; differentiable); softmax also takes ``axis`` (default -1)."""
        return apply(self._function, (as_tensor(x),), *args, **kwargs)

    def __repr__(self):
        return f"<activation {self.name}>"


def _identity(xp, z, *, out=None):
    return z


def _pass_gradient(xp, g, y, *, out=None):
    return g


relu = Activation("relu", F.relu_forward, F.relu_backward, "``max(x, 0)``.")
sigmoid = Activation("sigmoid", F.sigmoid_forward, F.sigmoid_backward, "``1 / (1 + exp(-x))``.")
tanh = Activation("tanh", F.tanh_forward, F.tanh_backward, "Hyperbolic tangent.")
softmax = Activation("softmax", F.softmax_forward, F.softmax_backward,
                     "Probabilities along the last axis (rows sum to 1); ``axis=`` picks another axis.")
linear = Activation("linear", _identity, _pass_gradient, "The identity.")

_TABLE = {a.name: a for a in (relu, sigmoid, tanh, softmax, linear)}


def get(identifier):
    """The activation called ``identifier`` (``None`` -> linear), or ``identifier`` if callable."""
    if identifier is None:
        return linear
    return lookup("activation", identifier, _TABLE)


def name_of(fn) -> str | None:
    """The registry name of an activation, or None for a user callable."""
    return fn.name if isinstance(fn, Activation) and _TABLE.get(fn.name) is fn else None
