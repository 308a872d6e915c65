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

import contextlib

from . import backend

_np = backend.numpy
_generator = _np.random.default_rng()
_shard = None      # (global batch size, first row, end row) while fit(distributed=True) runs a step

__all__ = ["seed", "generator", "get_state", "set_state", "batch_uniform", "batch_shard"]


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


def batch_uniform(shape, generator=None):
    """Uniform float32 numbers in [0, 1) for a batch of ``shape`` (batch axis first), e.g. dropout masks,
    from ``generator`` (default: gpunet's).

    Inside :func:`batch_shard` (each step of ``fit(distributed=True)``) the numbers one process
    would draw for the whole global batch are drawn and this rank's rows returned: every rank's
    generator stays in step, and the masks are those of a single-process run.
    """
    rng = _generator if generator is None else generator
    if _shard is None:
        return rng.random(shape, dtype=_np.float32)
    n, lo, hi = _shard
    return rng.random((n,) + tuple(shape[1:]), dtype=_np.float32)[lo:hi]


@contextlib.contextmanager
def batch_shard(n_global: int, lo: int, hi: int):
    """Within the block, batches are rows ``[lo, hi)`` of a global batch of ``n_global`` (see :func:`batch_uniform`)."""
    global _shard
    previous, _shard = _shard, (int(n_global), int(lo), int(hi))
    try:
        yield
    finally:
        _shard = previous
