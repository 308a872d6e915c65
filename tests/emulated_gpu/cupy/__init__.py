"""An emulated CuPy: NumPy arrays on emulated GPUs, for running gpunet's GPU path without a GPU.

Test infrastructure, not part of gpunet. ``tests/conftest.py`` puts ``tests/emulated_gpu`` first on
the import path when no real CUDA GPU is usable, so ``import cupy`` finds this package (child
processes inherit it through ``PYTHONPATH``). What it emulates, as CuPy does it:

* arrays (:class:`ndarray`) that carry a device; new arrays live on the current device
  (``cupy.cuda.Device(i)`` contexts); an operation on arrays of another device, or mixing in a NumPy
  array, raises; implicit conversion to NumPy raises TypeError (use ``.get()``/``asnumpy``);
* ``.get()``, ``asnumpy``, ``float()``, ``.item()`` count as host synchronisations, host arrays moved
  in as transfers, new buffers as allocations (``STATS``), with a memory pool per device;
* ``RawModule``/``RawKernel`` compile gpunet's CUDA sources for the host and run the grid serially
  (``_raw.py``); streams, stream capture into graphs that replay (while capturing, host syncs, host
  copies and cuBLAS calls raise, as CUDA and CuPy refuse them); ``cuda.set_allocator`` (its function
  is called for every new buffer); ``cuda.nccl`` across processes (MPI).
"""
from __future__ import annotations

import numpy as _np

from . import _state, cuda
from ._core import STATS, ndarray, reset_stats, run

__version__ = "14.0.0+emulated"
EMULATED = True

_pools = {}


def get_default_memory_pool():
    dev = _state.current_device()
    if dev not in _pools:
        _pools[dev] = cuda.MemoryPool(dev)
    return _pools[dev]


def get_default_pinned_memory_pool():
    return cuda.PinnedMemoryPool()


# ---------------------------------------------------------------- crossing between host and device
def _to_device(obj, dtype=None, copy=True, order="K"):
    dev = _state.current_device()
    if isinstance(obj, ndarray):
        if obj._device_id == dev:
            host = obj._a.astype(dtype, order=order) if dtype is not None else obj._a
            if copy or host is obj._a and dtype is not None:
                host = _np.array(host, copy=True, order=order)
            return ndarray._from_host(host, dev) if host is not obj._a else obj
        _state.transfer("a peer copy")
        STATS["transfers"] += 1                       # device to device (peer copy)
        return ndarray._from_host(_np.array(obj._a, dtype=dtype, copy=True, order=order), dev)
    if hasattr(obj, "__array__") or isinstance(obj, (list, tuple, int, float, bool, complex, _np.generic)):
        _state.transfer("cupy.asarray of host data")
        STATS["transfers"] += 1
        host = _np.array(obj, dtype=dtype, copy=True, order=order)
        return ndarray._from_host(host, dev)
    raise TypeError(f"Unsupported type {type(obj)}")


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    out = _to_device(obj, dtype, True, order)
    return out if out.ndim >= ndmin else ndarray._from_host(_np.array(out._a, ndmin=ndmin), out._device_id)


def asarray(a, dtype=None, order=None, blocking=False):
    if isinstance(a, ndarray) and a._device_id == _state.current_device() and (dtype is None or
                                                                               _np.dtype(dtype) == a.dtype):
        return a
    return _to_device(a, dtype, False, order or "K")


def ascontiguousarray(a, dtype=None):
    a = asarray(a)
    return run(_np.ascontiguousarray, (a,), {} if dtype is None else {"dtype": dtype})


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order)
    return _np.asarray(a, order=order)


def from_dlpack(obj):
    if isinstance(obj, ndarray):
        with cuda.Device(obj._device_id):
            return ndarray._from_host(obj._a, obj._device_id)
    raise TypeError("the emulated CuPy imports DLPack data of emulated arrays only")


def get_array_module(*args):
    return __import__(__name__) if any(isinstance(a, ndarray) for a in args) else _np


# ---------------------------------------------------------------- array creation on the current device
def _creator(name):
    fn = getattr(_np, name)

    def create(*args, **kwargs):
        kwargs.pop("blocking", None)
        return ndarray._from_host(fn(*args, **kwargs), _state.current_device())
    create.__name__ = name
    return create


for _name in ("empty", "zeros", "ones", "full", "arange", "linspace", "eye", "identity"):
    globals()[_name] = _creator(_name)


def _like(name):
    fn = getattr(_np, name)

    def create(a, *args, **kwargs):
        return run(fn, (a,) + args, kwargs)
    create.__name__ = name
    return create


for _name in ("empty_like", "zeros_like", "ones_like", "full_like"):
    globals()[_name] = _like(_name)


def _record_launch(launch):
    """A kernel launch runs now and, on a capturing stream, is kept for the graph's replays."""
    _state.record(launch.run, (), {}, None)
    return False


def __getattr__(name):
    """Any other NumPy function runs on the emulated device (``cupy.maximum``, ``cupy.exp``, ...);
    dtypes and constants are NumPy's, as in CuPy."""
    if name in ("RawModule", "RawKernel"):
        from . import _raw
        if _record_launch not in _raw.LAUNCH_HOOKS:
            _raw.LAUNCH_HOOKS.append(_record_launch)
        return getattr(_raw, name)
    attr = getattr(_np, name)
    if isinstance(attr, type) or not callable(attr):
        return attr
    if isinstance(attr, _np.ufunc):
        return _Ufunc(attr)
    return lambda *args, **kwargs: run(attr, args, kwargs)


class _Ufunc:
    """A ufunc of the emulated device, with ``.at``/``.reduce`` ... as methods."""

    def __init__(self, ufunc):
        self.ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return run(self.ufunc, args, kwargs)

    def __getattr__(self, method):
        return lambda *args, **kwargs: run(getattr(self.ufunc, method), args, kwargs)
