"""One seed for everything gpunet draws: initial weights, dropout masks, shuffling.

Random numbers are drawn on the host with NumPy's PCG64 generator and then
moved to the device, so one seed gives the same initial weights and batch
order on every device.

Example:
    >>> import gpunet
    >>> gpunet.random.seed(42); a = gpunet.random.generator().random()
    >>> gpunet.random.seed(42); b = gpunet.random.generator().random()
    >>> a == b
    True
"""
from __future__ import annotations

from . import backend

_np = backend.numpy
_generator = _np.random.default_rng()

__all__ = ["seed", "generator", "get_state", "set_state"]


def seed(value: int | None) -> None:
    """Reseed gpunet's generator (``None``: fresh entropy from the OS)."""
    global _generator
    if value is not None and (not isinstance(value, (int, _np.integer)) or value < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {value!r}")
    _generator = _np.random.default_rng(value)


def generator():
    """The host ``numpy.random.Generator`` all gpunet randomness comes from."""
    return _generator


def get_state() -> dict:
    """The generator's state (a dict that :func:`set_state` accepts), for checkpoints."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    """Restore a state taken by :func:`get_state`."""
    _generator.bit_generator.state = state
