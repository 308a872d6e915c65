"""Weight initializers (Keras names and defaults), drawing on the host from :mod:`gpunet.random`.

Each initializer is called with ``(shape, dtype)`` and returns a host NumPy
array; layers move it to their device, so one seed gives the same initial
weights on every device.

* ``glorot_uniform``: ``U(-l, l)``, ``l = sqrt(6 / (fan_in + fan_out))`` (Dense kernel default)
* ``glorot_normal``: truncated normal, stddev ``sqrt(2 / (fan_in + fan_out))``
* ``he_uniform`` / ``he_normal``: as above with ``fan_in`` only and 6 (2) in the numerator
* ``zeros`` / ``ones`` (``zeros`` is the bias default), ``random_normal`` (stddev 0.05),
  ``random_uniform`` (``[-0.05, 0.05]``)
"""
from __future__ import annotations

import math

from . import backend, random
from ._registry import lookup

np = backend.numpy

TRUNCATE_AT = 2.0                           # truncated normals are redrawn beyond this many standard deviations
TRUNCATED_STD = 0.87962566103423978         # the standard deviation of a standard normal truncated at +-2


def _fans(shape):
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(shape, std):
    rng = random.generator()
    out = rng.standard_normal(shape)
    bad = np.abs(out) > TRUNCATE_AT
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > TRUNCATE_AT
    return out * std


def glorot_uniform(shape, dtype="float32"):
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return random.generator().uniform(-limit, limit, shape).astype(dtype)


def glorot_normal(shape, dtype="float32"):
    fan_in, fan_out = _fans(shape)
    return _truncated_normal(shape, math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STD).astype(dtype)


def he_uniform(shape, dtype="float32"):
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return random.generator().uniform(-limit, limit, shape).astype(dtype)


def he_normal(shape, dtype="float32"):
    return _truncated_normal(shape, math.sqrt(2.0 / _fans(shape)[0]) / TRUNCATED_STD).astype(dtype)


def zeros(shape, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    return np.ones(shape, dtype=dtype)


def random_normal(shape, dtype="float32"):
    return (random.generator().standard_normal(shape) * 0.05).astype(dtype)


def random_uniform(shape, dtype="float32"):
    return random.generator().uniform(-0.05, 0.05, shape).astype(dtype)


_TABLE = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal, zeros, ones,
                                  random_normal, random_uniform)}


def get(identifier):
    """The initializer called ``identifier``, or ``identifier`` itself if callable."""
    return lookup("initializer", identifier, _TABLE)
