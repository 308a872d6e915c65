"""Activation functions by Keras name: ``relu``, ``sigmoid``, ``tanh``, ``softmax``, ``linear``.

Each takes and returns a Tensor of any shape (softmax acts on the last axis).

Example:
    >>> from gpunet import activations
    >>> activations.get('relu')(gpunet.tensor([-1.0, 2.0])).numpy()
    array([0., 2.], dtype=float32)
"""
from __future__ import annotations

from . import ops
from ._registry import lookup


def relu(x):
    """``max(x, 0)``."""
    return ops.relu(x)


def sigmoid(x):
    """``1 / (1 + exp(-x))``."""
    return ops.sigmoid(x)


def tanh(x):
    """Hyperbolic tangent."""
    return ops.tanh(x)


def softmax(x, axis=-1):
    """Probabilities along the last axis (rows sum to 1)."""
    return ops.softmax(x, axis)


def linear(x):
    """The identity."""
    return x


_TABLE = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax, "linear": linear}


def get(identifier):
    """The activation called ``identifier`` (``None`` -> linear), or ``identifier`` if callable."""
    if identifier is None:
        return linear
    return lookup("activation", identifier, _TABLE)


def name_of(fn) -> str | None:
    """The registry name of an activation function, or None for a user callable."""
    for k, v in _TABLE.items():
        if v is fn:
            return k
    return None
