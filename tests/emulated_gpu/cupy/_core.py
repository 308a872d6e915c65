"""The emulated CuPy ndarray: a NumPy array that lives on an emulated GPU.

Every operation goes through :func:`run`, which checks what CuPy checks (all arrays on the current
device, no NumPy arrays mixed in), runs NumPy on the host buffers, and wraps the results as arrays of
the current device. ``STATS`` counts what a real GPU would pay for: host synchronisations (``.get()``,
``float()``, ``.item()``...), host-to-device transfers and allocations.
"""
from __future__ import annotations

import contextlib
import weakref

import numpy as np

from . import _state

STATS = {"host_syncs": 0, "transfers": 0, "allocations": 0}


class DeviceMismatch(ValueError):
    pass


def reset_stats():
    for k in STATS:
        STATS[k] = 0


class MemoryPointer:
    """``arr.data``: the device pointer (the host buffer's address in the emulator) and its device."""

    __slots__ = ("ptr", "device")

    def __init__(self, ptr, device):
        self.ptr, self.device = ptr, device


def _unwrap(value, device_id):
    if isinstance(value, ndarray):
        if value._device_id != device_id:
            raise DeviceMismatch(f"Array device must be same as the current device: array device = "
                                 f"{value._device_id} while current = {device_id}")
        return value._a
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value[()]
        raise TypeError(f"Unsupported type {type(value)}: an emulated CuPy operation was given a NumPy array; "
                        "move it with cupy.asarray first")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, device_id) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, device_id) for k, v in value.items()}
    return value


def _wrap(result, device_id, outs):
    if isinstance(result, np.ndarray):
        for o in outs:
            if result is o._a:
                return o
        return ndarray._from_host(result, device_id)
    if isinstance(result, np.generic):                 # CuPy reductions give 0-d arrays, not scalars
        return ndarray._from_host(np.asarray(result), device_id)
    if isinstance(result, tuple):
        return tuple(_wrap(r, device_id, outs) for r in result)
    if isinstance(result, list):
        return [_wrap(r, device_id, outs) for r in result]
    return result


# what CuPy computes with cuBLAS, which it refuses under stream capture (cupy_backends/cuda/libs/cublas.pyx:
# setStream raises NotImplementedError while capturing; cupy/cupy#6290)
CUBLAS = {np.matmul, np.dot, np.vdot, np.inner, np.tensordot, np.einsum, np.ndarray.dot, np.ndarray.__matmul__,
          np.ndarray.__rmatmul__}


def run(fn, args, kwargs):
    """``fn`` (a NumPy function or method) on the host buffers of emulated arrays; results wrapped."""
    if fn in CUBLAS and _state.capturing() is not None:
        raise NotImplementedError("cuBLAS cannot run during stream capture (CuPy's cublas.setStream refuses it: "
                                  "cupy/cupy#6290)")
    dev = _state.current_device()
    outs = []
    out = kwargs.get("out")
    for o in (out if isinstance(out, tuple) else (out,)):
        if isinstance(o, ndarray):
            outs.append(o)
    host_args, host_kwargs = _unwrap(args, dev), _unwrap(kwargs, dev)
    result = fn(*host_args, **host_kwargs)
    _state.record(fn, host_args, host_kwargs, result)
    return _wrap(result, dev, outs)


def _index(key):
    """CuPy moves list and NumPy-array indices to the device (advanced indexing)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, (list, np.ndarray)) and not (isinstance(key, np.ndarray) and key.ndim == 0):
        _state.transfer("a host index")
        STATS["transfers"] += 1
        return ndarray._from_host(np.asarray(key), _state.current_device())
    return key


def _operator(name):
    def op(self, *others):
        return run(getattr(np.ndarray, name), (self,) + others, {})
    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        run(getattr(np.ndarray, name), (self, other), {})
        return self
    op.__name__ = name
    return op


class ndarray:
    """An array on an emulated GPU (``device.id``), backed by a NumPy array on the host."""

    __array_priority__ = 100     # below gpunet's Tensor, above NumPy
    __slots__ = ("_a", "_device_id", "_memory", "__weakref__")

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)
        self._device_id = _state.current_device()
        _allocated(self)

    @classmethod
    def _from_host(cls, host, device_id):
        arr = object.__new__(cls)
        arr._a = host
        arr._device_id = device_id
        if host.base is None or not isinstance(host.base, np.ndarray):   # a new buffer, not a view
            _allocated(arr)
        return arr

    # -- what the kernel runner and the transports read --------------------------------------
    @property
    def __cuda_host__(self):
        return self._a

    @property
    def device(self):
        from .cuda import Device
        return Device(self._device_id)

    @property
    def data(self):
        return MemoryPointer(self._a.__array_interface__["data"][0], self.device)

    # -- attributes ---------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._from_host(self._a.T, self._device_id))
    base = property(lambda self: None if self._a.base is None else True)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        return f"emulated_cupy.{np.array_repr(self._a)} on gpu:{self._device_id}"

    # -- leaving the device -------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        _state.sync("get")
        STATS["host_syncs"] += 1
        return np.array(self._a, copy=True, order=order if order != "A" else "K")

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def item(self):
        _state.sync("item")
        STATS["host_syncs"] += 1
        return self._a.item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __index__(self):
        return int(self.item())

    def tolist(self):
        return self.get().tolist()

    def __dlpack_device__(self):
        return (2, self._device_id)        # kDLCUDA

    def __dlpack__(self, stream=None, **kwargs):
        return self._a.__dlpack__()

    # -- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key):
        return run(np.ndarray.__getitem__, (self, _index(key)), {})

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim:      # CuPy copies a NumPy value to the device
            _state.transfer("setting items from a host array")
            STATS["transfers"] += 1
            value = ndarray._from_host(np.array(value), _state.current_device())
        run(np.ndarray.__setitem__, (self, _index(key), value), {})

    # -- NumPy's protocols: np.maximum(cupy_array, 0) runs on the device in CuPy -------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return run(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return run(func, args, kwargs)

    def __getattr__(self, name):
        attr = getattr(np.ndarray, name, None)
        if attr is None or not callable(attr):
            raise AttributeError(f"emulated cupy.ndarray has no attribute {name!r}")
        return lambda *args, **kwargs: run(attr, (self,) + args, kwargs)


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__",
              "__rmatmul__", "__neg__", "__pos__", "__abs__", "__invert__", "__lt__", "__le__", "__gt__", "__ge__",
              "__eq__", "__ne__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__"):
    setattr(ndarray, _name, _operator(_name))
for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__", "__imod__", "__iand__", "__ior__"):
    setattr(ndarray, _name, _inplace(_name))
ndarray.__hash__ = None


def _allocated(arr):
    if _state.allocator is not None:     # cupy.cuda.set_allocator's function: it owns the buffer's memory
        arr._memory = _state.allocator(arr._a.nbytes)
    _state.live[id(arr)] = arr
    STATS["allocations"] += 1
    _state.allocate(arr._device_id, arr._a.nbytes)
    weakref.finalize(arr, _state.free, arr._device_id, arr._a.nbytes)


@contextlib.contextmanager
def no_stats():
    saved = dict(STATS)
    try:
        yield
    finally:
        STATS.update(saved)
