"""``cupy.cuda`` of the emulated GPUs: devices, streams (with capture into graphs), memory pools."""
from __future__ import annotations

import numpy as np

from .. import _state
from . import runtime

__all__ = ["Device", "Stream", "Graph", "get_current_stream", "runtime", "nccl", "MemoryPool", "MemoryPointer",
           "get_allocator", "set_allocator",
           "PinnedMemoryPool"]


class Device:
    """An emulated GPU; ``with Device(1):`` makes it the current one, as in CuPy."""

    def __init__(self, device=None):
        self.id = _state.current_device() if device is None else int(device)
        if not 0 <= self.id < _state.COUNT:
            raise runtime.CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._previous = []

    def __enter__(self):
        self._previous.append(_state.current_device())
        _state.set_device(self.id)
        return self

    def __exit__(self, *exc):
        _state.set_device(self._previous.pop())
        return False

    def use(self):
        _state.set_device(self.id)

    def synchronize(self):
        _state.sync("Device.synchronize")

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    @property
    def pci_bus_id(self):
        """The same for every process of this machine, as a real GPU's."""
        return f"0000:{0x1B + self.id:02X}:00.0"

    def __repr__(self):
        return f"<CUDA Device {self.id} (emulated)>"


class Graph:
    """What a captured stream recorded: ``launch`` replays every operation into the same buffers."""

    def __init__(self, recorded):
        self.recorded = recorded

    def launch(self, stream=None):
        for fn, args, kwargs, result in self.recorded:
            out = fn(*args, **kwargs)
            if isinstance(result, np.ndarray) and out is not result and "out" not in kwargs:
                np.copyto(result, out)          # a captured allocation keeps its address


class Stream:
    """A stream; ``begin_capture``/``end_capture`` record the operations in between into a Graph."""

    _null = None

    def __init__(self, null=False, non_blocking=False, ptr=None):
        self.ptr = 0 if null else id(self)
        self.recorded = []
        self._previous = []

    @classmethod
    def null_stream(cls):
        if cls._null is None:
            cls._null = Stream(null=True)
        return cls._null

    def __enter__(self):
        self._previous.append(_current_stream[0])
        _current_stream[0] = self
        return self

    def __exit__(self, *exc):
        _current_stream[0] = self._previous.pop()
        return False

    def synchronize(self):
        _state.sync("Stream.synchronize")

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise runtime.CUDARuntimeError("cudaErrorStreamCaptureUnsupported: the legacy default stream cannot be "
                                           "captured")
        self.recorded = []
        # CUDA runs nothing while it captures: the emulator runs each operation (to give it its results'
        # shapes) and records it, then puts back every buffer that existed before the capture
        self._before = [(arr, arr.__cuda_host__.copy()) for arr in list(_state.live.values())]
        _state.set_capturing(self)

    def end_capture(self) -> Graph:
        _state.set_capturing(None)
        for arr, saved in self._before:
            np.copyto(arr.__cuda_host__, saved)
        self._before = []
        return Graph(self.recorded)

    def is_capturing(self) -> bool:
        return _state.capturing() is self


_current_stream = [Stream.null_stream()]


def get_current_stream(device=None) -> Stream:
    return _current_stream[0]


class MemoryPool:
    """The pool of one emulated device: bytes used by live arrays, bytes held (cached) by the pool."""

    def __init__(self, device: int):
        self.device = device

    def used_bytes(self) -> int:
        return _state.used[self.device]

    def total_bytes(self) -> int:
        return _state.held[self.device]

    def free_all_blocks(self) -> None:
        _state.held[self.device] = _state.used[self.device]


    def malloc(self, nbytes: int) -> "MemoryPointer":
        """What an allocator returns for a new buffer (the emulated array holds its own NumPy memory)."""
        return MemoryPointer(self.device, nbytes)


class MemoryPointer:
    """Stands for the pool memory of one buffer: the allocator's result, kept by the array that owns it."""

    def __init__(self, device: int, nbytes: int):
        self.device_id, self.size = device, nbytes


def get_allocator():
    """The function new buffers are allocated with: the one given to :func:`set_allocator`, else the
    current device's pool's ``malloc``."""
    if _state.allocator is not None:
        return _state.allocator
    from .. import get_default_memory_pool
    return get_default_memory_pool().malloc


def set_allocator(allocator=None) -> None:
    """Allocate every new buffer with ``allocator(nbytes)`` (None: the pools again), as CuPy does."""
    _state.allocator = allocator


class PinnedMemoryPool:
    def free_all_blocks(self) -> None:
        pass


from . import nccl  # noqa: E402
