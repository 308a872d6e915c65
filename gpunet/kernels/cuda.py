"""CUDA kernels from ``.cu`` files shipped beside the Python modules that launch them.

A :class:`Source` reads one ``.cu`` file (package data) when its module is imported; CuPy
compiles it on the first launch (once per process and GPU; CuPy caches the binary on disk).
Every kernel is a grid-stride loop, so any element count runs on a capped grid. Without a
GPU nothing here touches CuPy: launched with NumPy arrays, a kernel runs on the CPU, built from the same
source by the system C++ compiler (:mod:`.host`: OpenMP, the twins' bits), or, when that is turned off
or impossible, the caller runs its NumPy twin (:func:`fused`, and :meth:`Source.launch` returns False).
The test suite compiles every registered source with nvcc for sm_80 and sm_90.
"""
from __future__ import annotations

import pathlib
import re

from .. import backend
from . import host

np = backend.numpy

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 65535 * 8          # a grid-stride loop covers the rest; more blocks only add scheduling
COMPILE_OPTIONS = ("--std=c++14",)
NULL = np.uint64(0)             # a null device pointer argument (8 bytes, like a pointer)

SOURCES: list["Source"] = []    # every Source created (the tests compile and check them all)


def is_gpu(xp) -> bool:
    """True when ``xp`` is CuPy (the arrays live on a GPU and a kernel can be launched)."""
    return xp is not np


def fused(xp) -> bool:
    """True when a fused kernel can run on ``xp``'s arrays: CuPy, or NumPy with the CPU kernels on
    (:func:`.host.enabled`: not turned off by ``GPUNET_CPU_KERNELS=0``, no failed build)."""
    return is_gpu(xp) or host.enabled()


def cpu_kernels() -> bool:
    """True when kernels launched with NumPy arrays run on the CPU (:func:`.host.enabled`)."""
    return host.enabled()


def capturing(xp) -> bool:
    """True while the current CUDA stream is being captured into a graph (never for NumPy)."""
    return xp is not np and xp.cuda.get_current_stream().is_capturing()


class GraphCapture:
    """``with GraphCapture() as capture:`` records the CUDA work launched inside into ``capture.graph``
    instead of running it (on a stream of its own; ``capture.graph.launch()`` then runs it on the current
    stream, as often as wanted). Nothing inside may wait for the device or copy host data; cuBLAS
    refuses to run (CuPy: cupy/cupy#6290), hence :func:`capturing`. Every buffer allocated while
    capturing is kept for the graph's lifetime (:attr:`kept`), since its replays write there. An
    exception inside ends the capture, leaves :attr:`graph` None and propagates."""

    def __init__(self):
        self.graph, self.kept = None, []

    def __enter__(self):
        cp = backend.cupy_module()
        self._allocator = cp.cuda.get_allocator()
        self._stream = cp.cuda.Stream(non_blocking=True)

        def keep(nbytes):
            memory = self._allocator(nbytes)
            self.kept.append(memory)
            return memory
        cp.cuda.set_allocator(keep)
        self._stream.__enter__()
        try:
            self._stream.begin_capture()
        except BaseException:
            self._restore(cp)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        cp = backend.cupy_module()
        try:
            graph = self._stream.end_capture()      # also after an error: the stream must leave capture mode
        except Exception:
            if exc_type is None:
                raise
            graph = None
        finally:
            self._restore(cp)
        self.graph = graph if exc_type is None else None
        return False

    def _restore(self, cp):
        self._stream.__exit__(None, None, None)
        cp.cuda.set_allocator(self._allocator)


def f32(value):
    return np.float32(value)


def i32(value):
    return np.int32(value)


def i64(value):
    return np.int64(value)


def pointer(array):
    """``array`` as a kernel argument, or :data:`NULL` for None."""
    return NULL if array is None else array


class Source:
    """One ``.cu`` file next to ``module_file``; :meth:`launch` runs one of its kernels."""

    def __init__(self, module_file: str, filename: str):
        self.path = pathlib.Path(module_file).with_name(filename)
        self.code = self.path.read_text()
        self.kernel_names = tuple(re.findall(r"__global__\s+void\s+(\w+)", self.code))
        self._modules = {}      # GPU index -> cupy.RawModule
        self._functions = {}    # (GPU index, kernel name) -> compiled kernel, looked up once
        self._host = None       # the CPU build (host.HostModule), made at the first launch on NumPy arrays
        SOURCES.append(self)

    def function(self, name: str):
        """The compiled kernel ``name`` for the current GPU (compiled on first use)."""
        cp = backend.cupy_module()
        gpu = cp.cuda.runtime.getDevice()
        fn = self._functions.get((gpu, name))
        if fn is None:
            if name not in self.kernel_names:
                raise KeyError(f"{self.path.name} has no kernel {name!r} (it has {', '.join(self.kernel_names)})")
            module = self._modules.get(gpu)
            if module is None:
                module = self._modules[gpu] = cp.RawModule(code=self.code, options=COMPILE_OPTIONS)
            fn = self._functions[(gpu, name)] = module.get_function(name)
        return fn

    def host_module(self) -> "host.HostModule":
        """This source built for the CPU (built at first use)."""
        if self._host is None:
            self._host = host.HostModule(self.path.name, self.code)
        return self._host

    def launch(self, name: str, n: int, args: tuple) -> bool:
        """Run kernel ``name`` over ``n`` elements (a grid-stride loop) with ``args``; True when it ran.
        NumPy arrays among ``args``: on the CPU (:meth:`.host.HostModule.try_launch`; False when the CPU
        kernels are off or cannot be built: the caller then runs the twin)."""
        for a in args:
            if type(a) is np.ndarray:
                return self.host_module().try_launch(name, n, args)
        blocks = int(min(max(-(-n // THREADS_PER_BLOCK), 1), MAX_BLOCKS))
        self.function(name)((blocks,), (THREADS_PER_BLOCK,), args)
        return True
