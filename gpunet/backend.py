"""The only door to the array library.

A :class:`Device` names where arrays live and owns the array module ``xp``
that computes on them: NumPy for ``'cpu'`` devices, CuPy for ``'gpu'`` devices.
CuPy is imported lazily, the first time a GPU device is asked for, so
``import gpunet`` never touches CUDA on a CPU-only machine.

No other gpunet module imports numpy or cupy: compute code asks a tensor's
device for ``xp``; host-side code (data loading, ``get_weights``) uses
:data:`numpy` re-exported from here.

Device names::

    'cpu'  == 'cpu:0'       the host, NumPy arrays
    'cpu:1', 'cpu:2', ...   the same NumPy arrays under another device
                            identity (lets CPU-only CI catch device bugs)
    'gpu'  == 'gpu:0'       CUDA device 0 through CuPy
    'gpu:N'                 CUDA device N

Examples:
    >>> import gpunet
    >>> d = gpunet.device('cpu:1')
    >>> d
    Device('cpu:1')
    >>> d.xp.__name__
    'numpy'
    >>> d == gpunet.device('cpu:1'), d == gpunet.device('cpu')
    (True, False)
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy

from .errors import DeviceUnavailableError

__all__ = [
    "Device", "device", "get_default_device", "set_default_device", "use_device",
    "gpu_available", "gpu_bus_id", "free_memory", "memory_info", "numpy", "from_dlpack",
]

_cupy = None          # the cupy module once imported
_cupy_error = None    # why it could not be imported, if it could not

_INSTALL_HINT = ("install CuPy for your CUDA version: pip install 'gpunet[cuda12]' "
                 "(CUDA 12.x) or pip install 'gpunet[cuda13]' (CUDA 13.x)")


def _import_cupy():
    """Import CuPy once; return the module or raise DeviceUnavailableError."""
    global _cupy, _cupy_error
    if _cupy is not None:
        return _cupy
    if _cupy_error is None:
        try:
            import cupy  # the only place gpunet imports cupy
            _cupy = cupy
            return cupy
        except Exception as exc:  # ImportError, or a broken CUDA install raising anything
            _cupy_error = f"{type(exc).__name__}: {exc}"
    raise DeviceUnavailableError(
        f"a GPU device was requested but CuPy cannot be imported ({_cupy_error}); "
        f"{_INSTALL_HINT}, or use device='cpu'")


def _cuda_device_count() -> int:
    cupy = _import_cupy()
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        raise DeviceUnavailableError(
            f"CuPy is installed but no CUDA device can be used ({type(exc).__name__}: {exc}); "
            "check the NVIDIA driver with `nvidia-smi`, or use device='cpu'") from None


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device is visible. Never raises."""
    try:
        return _cuda_device_count() > 0
    except DeviceUnavailableError:
        return False


class Device:
    """Where arrays live, and the array module (``xp``) that computes on them.

    Use :func:`device` to get one; devices with the same name are equal.
    A device is also a context manager that makes it the default for a block::

        with gpunet.device('cpu:1'):
            t = gpunet.tensor([1.0])   # t.device == Device('cpu:1')
    """

    __slots__ = ("kind", "index", "xp", "_cupy_device", "_token")

    def __init__(self, kind: str, index: int):
        self.kind = kind
        self.index = index
        self._token = []
        if kind == "cpu":
            self.xp = numpy
            self._cupy_device = None
        else:
            count = _cuda_device_count()
            if index >= count:
                raise DeviceUnavailableError(
                    f"device 'gpu:{index}' was requested but this machine has {count} CUDA "
                    f"device(s) (valid: {', '.join(f'gpu:{i}' for i in range(count)) or 'none'}); "
                    "pick an existing index or use device='cpu'")
            self.xp = _cupy
            self._cupy_device = _cupy.cuda.Device(index)

    # -- identity --------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.kind}:{self.index}" if self.index else self.kind

    def __repr__(self):
        return f"Device('{self.name}')"

    def __str__(self):
        return self.name

    def __eq__(self, other):
        return isinstance(other, Device) and (self.kind, self.index) == (other.kind, other.index)

    def __hash__(self):
        return hash((self.kind, self.index))

    def __reduce__(self):
        return device, (self.name,)        # pickled by name: unpickles to this process's Device

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    # -- arrays ------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Return ``data`` as an array of this device (copying across devices when needed)."""
        if self._cupy_device is None:
            if _cupy is not None and isinstance(data, _cupy.ndarray):
                data = data.get()
            return numpy.asarray(data, dtype=dtype)
        with self._cupy_device:
            if isinstance(data, _cupy.ndarray) and data.device.id != self.index:
                return _cupy.array(data, dtype=dtype, copy=True)     # a copy onto this GPU (peer copy)
            return _cupy.asarray(data, dtype=dtype)

    @property
    def context(self):
        """A context manager making this device CuPy's current one (for kernels, allocations and
        library calls on its arrays); does nothing for CPU devices. Cheaper than ``with device:``,
        which also makes it gpunet's default device."""
        return _NO_CONTEXT if self._cupy_device is None else self._cupy_device

    def to_host(self, array):
        """A NumPy array holding ``array``'s values (a copy for GPU arrays, a view for CPU ones)."""
        if self._cupy_device is None:
            return array
        return _cupy.asnumpy(array)

    def synchronize(self) -> None:
        """Wait until every queued kernel on this device has finished (no-op on CPU)."""
        if self._cupy_device is not None:
            self._cupy_device.synchronize()

    # -- default-device context -------------------------------------------
    def __enter__(self):
        self._token.append(_state.push(self))
        if self._cupy_device is not None:
            self._cupy_device.__enter__()
        return self

    def __exit__(self, *exc):
        if self._cupy_device is not None:
            self._cupy_device.__exit__(*exc)
        _state.pop(self._token.pop())
        return False


class _DefaultState(threading.local):
    def __init__(self):
        self.stack = []

    def push(self, dev):
        self.stack.append(dev)
        return len(self.stack) - 1

    def pop(self, depth):
        del self.stack[depth:]


_state = _DefaultState()
_NO_CONTEXT = contextlib.nullcontext()
_global_default: Device | None = None
_cache: dict = {}


def _parse(name: str):
    text = str(name).strip().lower()
    kind, _, idx = text.partition(":")
    if kind == "cuda":
        kind = "gpu"
    if kind not in ("cpu", "gpu") or (idx and not idx.isdigit()):
        raise ValueError(
            f"unknown device {name!r}; use 'cpu', 'cpu:N', 'gpu' or 'gpu:N' (N a device index)")
    return kind, int(idx or 0)


def device(name: "str | Device | None" = None) -> Device:
    """Return the :class:`Device` called ``name`` (``None``: the current default device).

    Raises:
        DeviceUnavailableError: a GPU was asked for and CuPy or a CUDA device is missing.
        ValueError: ``name`` is not a device name.
    """
    if name is None:
        return get_default_device()
    if isinstance(name, Device):
        return name
    key = _parse(name)
    dev = _cache.get(key)
    if dev is None:
        dev = _cache[key] = Device(*key)
    return dev


_device_named = device        # for functions whose argument is called ``device``


def get_default_device() -> Device:
    """The device new tensors and models use: the innermost ``with device`` block, else the
    one set by :func:`set_default_device`, else ``$GPUNET_DEVICE``, else ``'cpu'``."""
    if _state.stack:
        return _state.stack[-1]
    if _global_default is not None:
        return _global_default
    env = os.environ.get("GPUNET_DEVICE")
    if env:
        try:
            return device(env)
        except ValueError as exc:
            raise ValueError(f"GPUNET_DEVICE={env!r} is not a device name: {exc}") from None
    return device("cpu")


def set_default_device(name: "str | Device | None") -> Device | None:
    """Make ``name`` the default device for the whole process (``None`` resets to
    ``$GPUNET_DEVICE`` / ``'cpu'``). Returns the device set."""
    global _global_default
    _global_default = None if name is None else device(name)
    return _global_default


@contextlib.contextmanager
def use_device(name: "str | Device"):
    """Context manager: ``with gpunet.use_device('gpu'):`` makes that device the default."""
    with device(name) as dev:
        yield dev


def free_memory() -> None:
    """Return the memory CuPy's pools cache (on every GPU) to the driver (no-op when CuPy was never used)."""
    if _cupy is not None:
        for index in range(_cuda_device_count()):
            with _cupy.cuda.Device(index):       # each GPU has its own pool
                _cupy.get_default_memory_pool().free_all_blocks()
        _cupy.get_default_pinned_memory_pool().free_all_blocks()


def memory_info(device=None) -> dict:
    """Bytes used and held by CuPy's memory pool of ``device`` (a GPU; default: CuPy's current one;
    zeros when CuPy was never used)."""
    if _cupy is None:
        return {"used_bytes": 0, "total_bytes": 0}
    dev = None if device is None else _device_named(device)
    with (_NO_CONTEXT if dev is None else dev.context):
        pool = _cupy.get_default_memory_pool()
        return {"used_bytes": int(pool.used_bytes()), "total_bytes": int(pool.total_bytes())}


def array_module_of(array):
    """NumPy or CuPy, whichever owns ``array`` (host numpy for non-arrays)."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return numpy


def cuda_device_count() -> int:
    """Number of visible CUDA devices; raises DeviceUnavailableError without CuPy or a driver."""
    return _cuda_device_count()


def nccl_module():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``), or None when this CuPy has no NCCL."""
    _import_cupy()
    try:
        from cupy.cuda import nccl
    except Exception:
        return None
    return nccl if getattr(nccl, "available", True) else None


DLPACK_CPU, DLPACK_CUDA = 1, 2       # DLPack device types (dlpack.h: kDLCPU, kDLCUDA)


def from_dlpack(obj):
    """``(array, device)`` viewing the memory of ``obj`` (any object with ``__dlpack__``: a PyTorch, JAX,
    CuPy or NumPy array) without a copy: a NumPy array on ``'cpu'`` or a CuPy array on ``'gpu:N'``."""
    if not hasattr(obj, "__dlpack__") or not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"from_dlpack needs an object with __dlpack__ and __dlpack_device__ (a PyTorch, JAX, CuPy "
                        f"or NumPy array), got {type(obj).__name__}")
    kind, index = obj.__dlpack_device__()
    if kind == DLPACK_CPU:
        return numpy.from_dlpack(obj), device("cpu")
    if kind == DLPACK_CUDA:
        dev = device(f"gpu:{int(index)}")
        with dev:
            return _cupy.from_dlpack(obj), dev
    raise DeviceUnavailableError(f"from_dlpack: the data lives on DLPack device type {kind}, which gpunet cannot use "
                                 "(it takes CPU and CUDA memory); copy it to the CPU first")


def gpu_bus_id(device) -> str:
    """The PCI bus id of GPU ``device`` (``'0000:3B:00.0'``): equal for two processes on one GPU."""
    dev = _device_named(device)
    return str(getattr(_import_cupy().cuda.Device(dev.index), "pci_bus_id", f"gpu:{dev.index}"))


def cupy_module():
    """The CuPy module (imported on demand); raises DeviceUnavailableError without it."""
    return _import_cupy()
