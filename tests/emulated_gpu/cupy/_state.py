"""Process-wide state of the emulated GPUs: how many, the current one, their memory pools, and the
stream being captured (its operations are recorded for replay)."""
from __future__ import annotations

import os
import threading
import weakref

COUNT = int(os.environ.get("GPUNET_EMULATED_GPUS", "2"))
ALIGN = 512                      # CuPy's pool rounds allocations up to 512 bytes


class _Local(threading.local):
    def __init__(self):
        self.device = 0
        self.capturing = None    # the Stream capturing, if any


_local = _Local()
live = weakref.WeakValueDictionary()   # id -> array owning a buffer (not views): what a capture must leave untouched
used = [0] * COUNT               # bytes in live arrays, per device
allocations = [0] * COUNT        # new buffers ever made, per device
held = [0] * COUNT               # bytes the pool holds (live + cached until free_all_blocks)
allocator = None                 # cupy.cuda.set_allocator's function (None: the pools'), called per new buffer


def current_device() -> int:
    return _local.device


def set_device(index: int) -> None:
    if not 0 <= index < COUNT:
        from .cuda.runtime import CUDARuntimeError
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {index} (emulated GPUs: {COUNT})")
    _local.device = index


def allocate(device: int, nbytes: int) -> None:
    allocations[device] += 1
    size = -(-nbytes // ALIGN) * ALIGN
    used[device] += size
    held[device] = max(held[device], used[device])


def free(device: int, nbytes: int) -> None:
    used[device] -= -(-nbytes // ALIGN) * ALIGN


def capturing():
    return _local.capturing


def set_capturing(stream) -> None:
    _local.capturing = stream


def sync(what: str) -> None:
    """A host synchronisation: refused while a stream is being captured, as CUDA refuses it."""
    if _local.capturing is not None:
        from .cuda.runtime import CUDARuntimeError
        raise CUDARuntimeError(f"cudaErrorStreamCaptureUnsupported: {what} synchronises with the host during "
                               "stream capture")


def transfer(what: str) -> None:
    """A copy between host and device (or between GPUs) outside a kernel: refused while a stream is being
    captured. CUDA either refuses it (a synchronous copy) or runs it once, at capture, and never in the
    graph's replays; either way a captured step must not depend on one."""
    if _local.capturing is not None:
        from .cuda.runtime import CUDARuntimeError
        raise CUDARuntimeError(f"cudaErrorStreamCaptureUnsupported: {what} copies between host and device "
                               "during stream capture (a graph would not replay it)")


def record(fn, args, kwargs, result) -> None:
    """An operation ran on the device: a capturing stream keeps it, to replay it into the same buffers."""
    if _local.capturing is not None:
        _local.capturing.recorded.append((fn, args, kwargs, result))
