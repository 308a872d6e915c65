"""One seed for everything gpunet draws: initial weights, dropout masks, shuffling.

Initial weights and the batch order are drawn on the host with NumPy's PCG64 generator
(:func:`generator`) and then moved to the device, so one seed gives the same initial weights and
batch order on every device. Dropout masks come from a counter-based generator, Philox4x32-10
(:class:`PhiloxStream`, :mod:`gpunet.kernels.philox`): drawn where the layer computes (a CUDA kernel
on a GPU, its NumPy twin on the CPU) with the same bits, so one seed gives the same masks on every
device and a GPU draws its masks without host work. :func:`seed` reseeds both.

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

__all__ = ["seed", "generator", "get_state", "set_state", "check_state", "batch_uniform", "batch_shard", "current_shard",
           "PhiloxStream", "dropout_stream"]


class PhiloxStream:
    """A Philox4x32-10 stream: a 64-bit key and a 64-bit element counter (see :mod:`gpunet.kernels.philox`).

    The state lives where the draws happen: :meth:`state_on` gives a device's uint64 ``[key, counter]``
    array, which the draws read and advance in place (on a GPU, on the device: a captured CUDA graph
    that replays a draw advances it too). The device of the latest :meth:`state_on` holds the stream's
    state (:meth:`get_state` reads it there); when draws move to another device the state is copied
    into that device's array, which stays the same for the stream's lifetime (so keep the graphs that
    replay a stream's draws and its other draws on one device). ``PhiloxStream(seed)``: the key is
    ``numpy.random.SeedSequence(seed).generate_state(2, uint32)`` (``k0`` first), the counter 0.

    ``legacy`` is a NumPy Generator when the stream was restored from a state written before gpunet
    drew masks with Philox (a PCG64 state): masks then come from it on the host, as they did then, so
    resuming an old checkpoint is bit-exact. :meth:`reseed` or a Philox state ends that.
    """

    def __init__(self, seed=None):
        self._arrays = {}           # Device -> its uint64 [key, counter] array
        self._home = None           # the Device whose array holds the state (None: self._values does)
        self._values = (0, 0)
        self.legacy = None
        self.reseed(seed)

    def reseed(self, seed=None) -> None:
        """A fresh stream: the key from ``seed`` (None: from the OS's entropy), the counter 0."""
        k0, k1 = (int(k) for k in _np.random.SeedSequence(seed).generate_state(2, _np.uint32))
        self.set_state({"key": k0 | k1 << 32, "counter": 0})

    def get_state(self) -> dict:
        """``{'key': int, 'counter': int}`` (a device read when the stream draws on a GPU)."""
        if self._home is not None:
            self._values = tuple(int(v) for v in self._home.to_host(self._arrays[self._home]))
        return {"key": self._values[0], "counter": self._values[1]}

    def set_state(self, state: dict) -> None:
        """Restore a :meth:`get_state` dict. Every device's array takes it at once (in place, two scalar
        fills: nothing allocated), so a captured graph draws from the new state too."""
        key, counter = int(state["key"]), int(state["counter"])
        if not (0 <= key < 2 ** 64 and 0 <= counter < 2 ** 64):
            raise ValueError(f"a Philox state needs a 64-bit key and counter, got {state!r}")
        self._values, self.legacy = (key, counter), None
        for device in self._arrays:
            self._write(device)

    def _write(self, device) -> None:
        with device.context:
            self._arrays[device][0], self._arrays[device][1] = (_np.uint64(v) for v in self._values)

    def state_for(self, xp, array):
        """:meth:`state_on` the device holding ``array``, an array of ``xp`` (NumPy: the CPU)."""
        if xp is _np:
            return self.state_on(backend.device("cpu"))
        return self.state_on(backend.device(f"gpu:{array.device.id}"))

    def state_on(self, device):
        """The uint64 ``[key, counter]`` array on ``device`` (a :class:`gpunet.Device`) holding the current
        state, for a draw there (which advances it in place)."""
        if device != self._home:
            self.get_state()                      # the current values, from where they were
            if device in self._arrays:
                self._write(device)
            else:
                self._arrays[device] = device.asarray(_np.array(self._values, _np.uint64))
            self._home = device
        return self._arrays[device]


_dropout = PhiloxStream()


def seed(value: int | None) -> None:
    """Reseed gpunet's generators (``None``: fresh entropy from the OS): the host generator and the
    dropout stream (whose key is derived from ``value`` as :class:`PhiloxStream` says)."""
    global _generator
    if value is not None and (not isinstance(value, (int, _np.integer)) or value < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {value!r}")
    _generator = _np.random.default_rng(value)
    _dropout.reseed(value)


def generator():
    """The host ``numpy.random.Generator`` that weights and batch orders come from."""
    return _generator


def dropout_stream() -> PhiloxStream:
    """The Philox stream of dropout layers without a seed of their own."""
    return _dropout


def get_state() -> dict:
    """The generators' state (a dict that :func:`set_state` accepts), for checkpoints: the host
    generator's state, with the dropout stream's under ``'philox'``."""
    state = dict(_generator.bit_generator.state)
    if _dropout.legacy is None:
        state["philox"] = _dropout.get_state()
    return state


def check_state(state) -> None:
    """ValueError, saying what is wrong, unless ``state`` is one :func:`set_state` accepts: a dict with
    NumPy's PCG64 state (``bit_generator``, ``state`` with ``state`` and ``inc`` below 2**128,
    ``has_uint32``, ``uinteger``) and optionally ``'philox'`` (``key`` and ``counter`` below 2**64)."""
    def count(v, bits):
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** bits
    if not isinstance(state, dict):
        raise ValueError(f"a gpunet.random state is a dict (from get_state), got {type(state).__name__}")
    inner, philox = state.get("state"), state.get("philox")
    problems = [(state.get("bit_generator") == "PCG64", f"bit_generator {state.get('bit_generator')!r} is not 'PCG64'"),
                (isinstance(inner, dict) and count(inner.get("state"), 128) and count(inner.get("inc"), 128),
                 f"'state' {inner!r} is not {{'state': int, 'inc': int}} below 2**128"),
                (count(state.get("has_uint32"), 1) and count(state.get("uinteger"), 32),
                 "'has_uint32' (0 or 1) or 'uinteger' (a 32-bit integer) is missing or wrong"),
                (philox is None or (isinstance(philox, dict) and count(philox.get("key"), 64)
                                    and count(philox.get("counter"), 64)),
                 f"'philox' {philox!r} is not {{'key': int, 'counter': int}} below 2**64"),
                (set(state) <= {"bit_generator", "state", "has_uint32", "uinteger", "philox"},
                 f"unknown keys {sorted(set(state) - {'bit_generator', 'state', 'has_uint32', 'uinteger', 'philox'})}")]
    for ok, problem in problems:
        if not ok:
            raise ValueError(f"not a gpunet.random state: {problem}")
    try:
        _np.random.PCG64().state = {k: v for k, v in state.items() if k != "philox"}
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"not a gpunet.random state: NumPy refuses it ({exc})") from None


def set_state(state: dict) -> None:
    """Restore a state taken by :func:`get_state` (checked first by :func:`check_state`: ValueError, and
    nothing changed, for anything else). A state without ``'philox'`` (written before dropout used
    Philox) makes dropout draw from the host generator as it did then (see :class:`PhiloxStream`)."""
    check_state(state)
    state = dict(state)
    philox = state.pop("philox", None)
    _generator.bit_generator.state = state
    if philox is None:
        _dropout.legacy = _generator
    else:
        _dropout.set_state(philox)


def batch_uniform(shape, generator=None):
    """Uniform float32 numbers in [0, 1) for a batch of ``shape`` (batch axis first) from ``generator``
    (default: gpunet's host generator).

    Inside :func:`batch_shard` (each step of ``fit(distributed=True)``) the numbers one process
    would draw for the whole global batch are drawn and this rank's rows returned: every rank's
    generator stays in step, and the numbers are those of a single-process run.
    """
    rng = _generator if generator is None else generator
    if _shard is None:
        return rng.random(shape, dtype=_np.float32)
    n, lo, hi = _shard
    return rng.random((n,) + tuple(shape[1:]), dtype=_np.float32)[lo:hi]


def current_shard():
    """``(global batch size, first row, end row)`` inside :func:`batch_shard`, else None."""
    return _shard


@contextlib.contextmanager
def batch_shard(n_global: int, lo: int, hi: int):
    """Within the block, batches are rows ``[lo, hi)`` of a global batch of ``n_global`` (see
    :func:`batch_uniform`; dropout draws this rank's rows of the global batch's masks)."""
    global _shard
    previous, _shard = _shard, (int(n_global), int(lo), int(hi))
    try:
        yield
    finally:
        _shard = previous
