"""``Flatten``: each sample to one axis."""
from __future__ import annotations

import math

from .layer import NO_WORKSPACE, Layer


class Flatten(Layer):
    """Flattens each sample: ``(batch, 28, 28)`` -> ``(batch, 784)`` (a view: no copy; integers pass)."""

    accepts_integers = True

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], math.prod(rest) if all(d is not None for d in rest) else None)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        return (x.reshape(x.shape[0], -1) if x.ndim != 2 else x), x.shape

    def backward(self, saved, gz, need_input=True):
        return gz.reshape(saved), []
