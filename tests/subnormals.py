"""Float32 subnormals as a CUDA kernel sees them, for tests that hold a kernel to its NumPy twin.

CuPy compiles every kernel with ``-ftz=true`` (appended after the caller's options, so it always
wins): a subnormal input reads as zero and a subnormal result is flushed to zero. The emulated CuPy
does the same (x86 MXCSR's DAZ and FTZ bits during a launch). :func:`flushing` gives host NumPy code
those semantics for a block, so that a twin run inside it is the kernel's oracle bit for bit, every
intermediate rounding included; outside it the twins keep IEEE subnormals, as NumPy does.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

SOURCE = b"""
#include <xmmintrin.h>
extern "C" unsigned get_csr(void) { return _mm_getcsr(); }
extern "C" void set_csr(unsigned v) { _mm_setcsr(v); }
"""
DAZ_FTZ = 0x8040
_LIB = []


def flushes(dev) -> bool:
    """Does ``dev`` flush float32 subnormals? Every CUDA kernel does; the emulator unless
    $GPUNET_EMULATED_FTZ=0."""
    return dev.is_gpu and os.environ.get("GPUNET_EMULATED_FTZ", "1") not in ("0", "false", "no")


def _library():
    if not _LIB:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise RuntimeError("subnormal flushing on the host needs x86 (MXCSR)")
        cxx = os.environ.get("GPUNET_EMULATED_CXX") or shutil.which("g++") or shutil.which("c++")
        if not cxx:
            raise RuntimeError("subnormal flushing on the host needs a C++ compiler (g++)")
        path = os.path.join(tempfile.gettempdir(),
                            f"gpunet-mxcsr-{os.getuid()}-{hashlib.sha256(SOURCE).hexdigest()[:16]}.so")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}"
            subprocess.run([cxx, "-O1", "-fPIC", "-shared", "-x", "c++", "-", "-o", tmp], input=SOURCE, check=True)
            os.replace(tmp, path)
        lib = ctypes.CDLL(path)
        lib.get_csr.restype, lib.set_csr.argtypes = ctypes.c_uint, [ctypes.c_uint]
        _LIB.append(lib)
    return _LIB[0]


@contextlib.contextmanager
def flushing(enabled: bool = True):
    """Within the block, this thread's float32/float64 SSE/AVX arithmetic reads subnormals as zero
    and flushes subnormal results to zero (as a CUDA kernel built with -ftz=true does for float32)."""
    if not enabled:
        yield
        return
    lib = _library()
    saved = lib.get_csr()
    lib.set_csr(saved | DAZ_FTZ)
    try:
        yield
    finally:
        lib.set_csr(saved)
