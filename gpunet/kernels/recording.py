"""Recordings of host work: the CPU's counterpart of a CUDA graph (see :mod:`gpunet.trainers.step_replays`).

While a :class:`Recording` is active (``with Recording() as rec:``), each piece of array work that
takes part says what it did by :func:`record`: a CPU kernel launch (:meth:`.host.HostModule.launch`:
the C function and its converted arguments), a matrix product (:func:`.dense.matmul`: ``np.matmul``
into its result array), a block of NumPy code that writes fixed arrays (the CPU twin of the
softmax-cross-entropy forward, ``Rescaling`` of integer images). :meth:`Recording.replay` then does
the same work again, on whatever the arrays hold now, without the Python that chose it: no layer
walk, no argument checks, no conversions. Work done outside these calls is not recorded: a
replay is trusted only after it matched an ordinary call bit for bit on other data (the caller's
duty). The arrays a recording refers to are kept alive with it.
"""
from __future__ import annotations

import threading

_active = threading.local()


class Recording:
    """The calls ``(function, args, kwargs)`` recorded while active, in order, and the arrays they use."""

    def __init__(self):
        self.calls, self.kept = [], []
        self._outer = None

    def __enter__(self):
        self._outer = getattr(_active, "recording", None)
        _active.recording = self
        return self

    def __exit__(self, *exc):
        _active.recording = self._outer
        return False

    def add(self, fn, args=(), kwargs=None, keep=()) -> None:
        self.calls.append((fn, tuple(args), kwargs or {}))
        self.kept.extend(keep)

    def replay(self) -> None:
        """Run the recorded calls again, in order."""
        for fn, args, kwargs in self.calls:
            fn(*args, **kwargs)

    def __len__(self):
        return len(self.calls)


def active() -> Recording | None:
    """The recording of this thread, or None (the usual case: one attribute read)."""
    return getattr(_active, "recording", None)


def record(fn, *args, keep=(), **kwargs) -> None:
    """Add ``fn(*args, **kwargs)`` to the active recording (nothing when none is); ``keep``: objects the
    call reaches by address rather than through its arguments (a kernel's arrays: kept alive with the
    recording). The caller has already run the call."""
    rec = getattr(_active, "recording", None)
    if rec is not None:
        rec.add(fn, args, kwargs, keep)
