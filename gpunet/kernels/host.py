"""The fused CUDA kernels built for the CPU: one ``.cu`` source, two targets.

A :class:`HostModule` compiles a ``.cu`` file with the system C++ compiler at first use, after a
:data:`PRELUDE` that maps CUDA onto C++ (``__global__``, ``dim3``, ``__fadd_rn``...). Each kernel's
grid-stride loop ``for (i = blockIdx.x*blockDim.x + threadIdx.x; i < n; i += gridDim.x*blockDim.x)``
becomes ``#pragma omp for`` over ``[0, n)`` in one OpenMP parallel region per launch (another loop still
runs correctly: ``blockIdx.x`` is the OpenMP thread). ``-O3 -march=native -fopenmp -ffp-contract=off
-fno-math-errno``: no FMA contraction, nothing that changes an IEEE result, subnormals kept (not
CuPy's ``-ftz=true``: ``GPUNET_IEEE_SUBNORMALS``), so a CPU kernel gives its NumPy twin's bits.

Built libraries are cached (:func:`cache_dir`) under a key of the translation unit, the compiler and
its version, the flags and the CPU; written to a temporary file and renamed into place, with a
SHA-256 trailer that detects a damaged file (rebuilt); each build's time is logged (INFO, logger
``gpunet.kernels``) and kept in :data:`BUILD_SECONDS`. The emulated CuPy of the test suite builds
the same sources with this module's prelude, parser and cache (``tests/emulated_gpu/cupy/_raw.py``).
Control: ``GPUNET_CPU_KERNELS=0`` runs the NumPy twins, ``=1`` requires the kernels (an error when
they cannot be built); unset, a missing compiler or failed build falls back to the twins with one line
on stderr. The setting is read at the first launch (:func:`mode`; :func:`reset` reads it again).
Threads: :func:`threads`.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import pathlib
import platform
import re
import shutil
import sys
import threading
import time

from .. import backend
from . import recording
from .build_cache import (BuildError, cached_build, compile_library, compiler_version,  # noqa: F401
                          user_cache, valid_library)    # (valid_library: for the emulated CuPy and tests)

np = backend.numpy

PRELUDE = r"""
#include <math.h>
#include <cstdint>
#include <cstring>
#define __global__
#define __device__
#define __host__
#define __constant__
#define __launch_bounds__(...)
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
struct dim3 { unsigned int x, y, z; };
typedef dim3 uint3;
using std::isfinite; using std::isnan; using std::isinf; using std::signbit;   // float overloads, as CUDA's
using std::exp; using std::log; using std::sqrt; using std::fabs; using std::fmax; using std::fmin; using std::pow;
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
#ifdef GPUNET_HOST_OPENMP
// The CPU build: one OpenMP parallel region per launch, thread t of T block t of T one-thread blocks
// (grid-stride loops become `omp for` loops); -ffp-contract=off: the operations below are never fused.
#include <omp.h>
#define blockIdx (dim3{(unsigned)omp_get_thread_num(), 0u, 0u})
#define threadIdx (dim3{0u, 0u, 0u})
#define blockDim (dim3{1u, 1u, 1u})
#define gridDim (dim3{(unsigned)omp_get_num_threads(), 1u, 1u})
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
struct FlushSubnormals {};
#else
// The emulated GPU: a serial grid on the calling thread (tests/emulated_gpu/cupy/_raw.py).
static thread_local dim3 gridDim, blockDim, blockIdx, threadIdx;
// Correctly rounded single operations; noinline, so that FMA contraction (-ffp-contract=fast)
// cannot fuse them with their neighbours, as nvcc never fuses the __f*_rn intrinsics.
static __attribute__((noinline)) float __fadd_rn(float a, float b) { return a + b; }
static __attribute__((noinline)) float __fsub_rn(float a, float b) { return a - b; }
static __attribute__((noinline)) float __fmul_rn(float a, float b) { return a * b; }
static __attribute__((noinline)) float __fdiv_rn(float a, float b) { return a / b; }
static __attribute__((noinline)) float __fsqrt_rn(float a) { return sqrtf(a); }
// CuPy compiles every kernel with -ftz=true (appended after the caller's options): subnormals read and
// flushed as zero. The host's SSE unit does the same with MXCSR's DAZ and FTZ bits set during a launch.
#if defined(GPUNET_FTZ) && (defined(__x86_64__) || defined(__i386__))
#include <xmmintrin.h>
struct FlushSubnormals { unsigned saved = _mm_getcsr(); FlushSubnormals() { _mm_setcsr(saved | 0x8040u); }
                         ~FlushSubnormals() { _mm_setcsr(saved); } };
#elif defined(GPUNET_FTZ)
#error "the emulated -ftz=true needs an x86 host (MXCSR); build with GPUNET_EMULATED_FTZ=0"
#else
struct FlushSubnormals {};
#endif
#endif
"""

# -- parsing the kernels' signatures --------------------------------------------------------------
_C_TYPES = {name: np.dtype(dtype) for dtype, names in {
    "float32": ("float",), "float64": ("double",), "float16": ("half", "__half"), "bool": ("bool",),
    "int8": ("char", "signed char", "int8_t"), "uint8": ("unsigned char", "uint8_t"),
    "int16": ("short", "short int", "signed short", "int16_t"), "uint16": ("unsigned short", "uint16_t"),
    "int32": ("int", "signed", "signed int", "int32_t"), "uint32": ("unsigned", "unsigned int", "uint32_t"),
    "int64": ("long", "long int", "long long", "long long int", "signed long long", "int64_t", "ptrdiff_t"),
    "uint64": ("unsigned long", "unsigned long long", "unsigned long long int", "uint64_t", "size_t"),
}.items() for name in names}
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict"}
COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)")

# One kernel parameter: ``decl`` as written ("const float* z"), ``type_text`` without the name ("const float*"),
# ``dtype`` the value's or the pointee's (None: void*), ``problem`` why it cannot be passed from the host (or None).
Param = collections.namedtuple("Param", "decl type_text pointer dtype problem")
Signature = collections.namedtuple("Signature", "name params problem")   # problem: the first Param.problem


def _parse_param(decl: str) -> Param:
    tokens = [t for t in re.findall(r"[A-Za-z_]\w*|[*&\[<]", decl) if t not in _QUALIFIERS]
    words = [t for t in tokens if t.isidentifier()] or ["?"]
    named = len(words) > 1 and " ".join(words) not in _C_TYPES
    type_words = words[:-1] if named else words
    type_text = re.sub(rf"\b{words[-1]}\s*$", "", decl) if named else decl
    pointer, base = "*" in tokens, " ".join(type_words)
    problem = None
    if any(t in tokens for t in "&[<") or tokens.count("*") > 1:
        problem = f"parameter {decl!r} (references, arrays, templates, pointers to pointers)"
    elif (base not in _C_TYPES or base in ("half", "__half") and not pointer) and not (pointer and base == "void"):
        problem = f"the type of parameter {decl!r} (only fundamental C types and pointers to them)"
    return Param(decl, type_text.strip(), pointer, _C_TYPES.get(base), problem)


def parse_kernels(code: str) -> dict:
    """``{name: Signature}`` of every ``__global__ void name(...)`` in ``code`` (comments stripped)."""
    kernels = {}
    for name, params in _KERNEL.findall(COMMENTS.sub(" ", code)):
        decls = [d.strip() for d in params.split(",")] if params.strip() not in ("", "void") else []
        parsed = tuple(_parse_param(d) for d in decls)
        kernels.setdefault(name, Signature(name, parsed, next((p.problem for p in parsed if p.problem), None)))
    return kernels


def ctypes_of(param: Param):        # the ctypes type that passes ``param`` (a pointer as c_void_p)
    return ctypes.c_void_p if param.pointer else np.ctypeslib.as_ctypes_type(param.dtype)


# -- the CPU build ------------------------------------------------------------------------------
TRAILER = b"\0gpunet-cpu-kernels-1-sha256\0"
FLAGS = ["-std=c++17", "-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fPIC",
         "-shared", "-DGPUNET_HOST_OPENMP", "-DGPUNET_IEEE_SUBNORMALS"]
_GRID_LOOP = re.compile(
    r"for\s*\(\s*((?:unsigned\s+)?(?:long\s+long|long|int|size_t))\s+(\w+)\s*=\s*blockIdx\.x\s*\*\s*"
    r"(?:\(\s*[\w ]+\)\s*)?blockDim\.x\s*\+\s*threadIdx\.x\s*;\s*\2\s*<\s*([^;]+?)\s*;\s*\2\s*\+=\s*"
    r"(?:\(\s*[\w ]+\)\s*)?gridDim\.x\s*\*\s*blockDim\.x\s*\)")
_WRAPPER = """
extern "C" void cpu_{name}(int gpunet_threads{params}) {{
    #pragma omp parallel num_threads(gpunet_threads) if(gpunet_threads > 1)
    {name}({call});
}}
"""
MIN_PER_THREAD = 131072     # elements per extra thread (below: one thread; each parallel region risks a wait)


def cache_dir() -> pathlib.Path:     # $GPUNET_CPU_KERNELS_CACHE, else $XDG_CACHE_HOME (~/.cache)/gpunet/kernels
    return user_cache("gpunet/kernels", "GPUNET_CPU_KERNELS_CACHE")


def compiler():
    """The C++ compiler: $GPUNET_CXX, else g++, c++ or clang++ on PATH; None when there is none."""
    return os.environ.get("GPUNET_CXX") or next(filter(None, map(shutil.which, ("g++", "c++", "clang++"))), None)


def _cpu_id() -> str:
    """What ``-march=native`` depends on (a cache shared by several machines keeps one library each)."""
    with contextlib.suppress(OSError):
        info = pathlib.Path("/proc/cpuinfo").read_text()
        return "\n".join(sorted({line for line in info.splitlines() if line.startswith(("flags", "model name"))}))
    return platform.processor()


def translation_unit(code: str, kernels: dict) -> str:
    """The prelude, the source with its grid-stride loops as ``omp for`` loops, a wrapper per kernel."""
    body = _GRID_LOOP.sub(lambda m: f'_Pragma("omp for schedule(static)") for ({m[1]} {m[2]} = 0; {m[2]} < {m[3]}; '
                                    f'++{m[2]})', code)
    wraps = [_WRAPPER.format(name=k.name, params="".join(f", {p.type_text} a{i}" for i, p in enumerate(k.params)),
                             call=", ".join(f"a{i}" for i in range(len(k.params))))
             for k in kernels.values() if not k.problem]
    return "\n".join([PRELUDE, '#line 1 "kernel.cu"', body, '#line 1 "<cpu wrappers>"', *wraps])


_state, _lock = {"threads": None, "reported": set(), "disabled": None, "mode": None}, threading.Lock()
BUILD_SECONDS = {}      # source file name -> seconds its first build took in this process (0.0: from the cache)
LOG = logging.getLogger("gpunet.kernels")


def mode() -> str:
    """'0' (the twins), '1' (the kernels, required) or 'auto': $GPUNET_CPU_KERNELS, read at the first
    launch (as $OMP_NUM_THREADS is) and again after :func:`reset`: a launch then reads no environment."""
    m = _state["mode"]
    if m is None:
        value = os.environ.get("GPUNET_CPU_KERNELS", "").strip().lower()
        m = _state["mode"] = "0" if value in ("0", "false", "no", "off") else \
            "1" if value in ("1", "true", "yes", "on") else "auto"
    return m


def enabled() -> bool:               # do CPU launches use the kernels (not turned off, no failed build)?
    return _state["disabled"] is None and mode() != "0"


def threads() -> int:
    """OpenMP threads per launch: 1, unless $OMP_NUM_THREADS asks for more (then at most the BLAS pool's
    size as threadpoolctl reports it, e.g. a rank's share under ``fit(distributed=True)``, and the CPUs).
    One thread is 3-5x NumPy on the updates; two gain ~40% more on an idle machine but wait for each
    other at every kernel when another process holds a core (several times slower). :func:`set_threads`."""
    if _state["threads"] is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        n = min(n, int(env)) if env.isdigit() and int(env) > 0 else 1
        with contextlib.suppress(Exception):
            from threadpoolctl import threadpool_info
            n = min([n, *(p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas")])
        _state["threads"] = max(1, n)
    return _state["threads"]


if hasattr(os, "register_at_fork"):     # libgomp's thread pool does not survive fork(): a child uses one thread
    os.register_at_fork(after_in_child=lambda: _state.update(threads=1))


def set_threads(n) -> None:         # n OpenMP threads per launch from now on (None: read again, see threads())
    _state["threads"] = None if n is None else max(1, int(n))


def reset() -> None:
    """Forget a failed build, the lines said, the thread count and the mode: the next launch reads
    $GPUNET_CPU_KERNELS, $OMP_NUM_THREADS (tests; after changing them, $GPUNET_CXX or PATH)."""
    _state.update(threads=None, disabled=None, reported=set(), mode=None)


def _say(line: str) -> None:      # one line on stderr, once per process
    if line not in _state["reported"]:
        _state["reported"].add(line)
        print(f"gpunet: {line}", file=sys.stderr)


SPINCOUNT = "10000"     # libgomp's idle threads spin this long (~10 us), then sleep: BLAS gets the cores back


def _load(path):
    """``ctypes.CDLL(path)``; the first load starts libgomp, which reads its settings then: unless the user
    set them, its idle threads spin only :data:`SPINCOUNT` iterations (its default, ~300,000, keeps
    them busy for a while after each kernel, taking the cores from the matrix products that follow)."""
    if os.environ.get("OMP_WAIT_POLICY") or os.environ.get("GOMP_SPINCOUNT"):
        return ctypes.CDLL(str(path))
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        return ctypes.CDLL(str(path))
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)


_char, _addressof = ctypes.c_char, ctypes.addressof


def address(array) -> int:
    """The address of ``array``'s first byte (``array.ctypes.data``, in a quarter of its time where the
    array exports a writable buffer of at least one byte: the kernels' usual arguments)."""
    try:
        return _addressof(_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):      # read-only, empty or not contiguous
        return array.ctypes.data


class HostModule:
    """One ``.cu`` source built for the CPU; :meth:`launch` runs one of its kernels on NumPy arrays."""

    def __init__(self, name: str, code: str):
        self.name, self.code = name, code
        self.kernels = parse_kernels(code)
        self._functions = {}
        self._library = None

    def library(self):
        """The loaded library (built or taken from the cache on first use); raises :class:`BuildError`."""
        if self._library is None:
            with _lock:
                if self._library is None:
                    cxx = compiler()
                    if cxx is None:
                        raise BuildError("no C++ compiler found (g++, c++ or clang++ on PATH, or $GPUNET_CXX)")
                    start = time.perf_counter()
                    path, built = cached_build(translation_unit(self.code, self.kernels), FLAGS, cxx,
                                               f"{compiler_version(cxx)}\0{_cpu_id()}", cache_dir(), TRAILER,
                                               compile_library)
                    library = _load(path)
                    BUILD_SECONDS[self.name] = seconds = time.perf_counter() - start if built else 0.0
                    if built:       # logged (INFO, logger gpunet.kernels): stderr stays the program's
                        LOG.info("compiled the CPU kernels of %s in %.2f s (cached in %s)", self.name, seconds,
                                 path.parent)
                    self._library = library
        return self._library

    def function(self, name: str) -> tuple:
        """``(the C function cpu_<name>, which parameters are pointers)``."""
        fn = self._functions.get(name)
        if fn is None:
            signature = self.kernels[name]
            fn = getattr(self.library(), f"cpu_{name}")
            fn.argtypes = [ctypes.c_int] + [ctypes_of(p) for p in signature.params]
            fn.restype = None
            fn = self._functions[name] = fn, tuple(p.pointer for p in signature.params)
        return fn

    def launch(self, name: str, n: int, args: tuple) -> None:
        """Run kernel ``name`` over ``n`` elements: NumPy arrays are passed by address, anything else given
        for a pointer (``cuda.NULL``) as null."""
        fn, pointers = self._functions.get(name) or self.function(name)
        if len(args) != len(pointers):
            raise TypeError(f"kernel {name} takes {len(pointers)} arguments, got {len(args)}")
        c_args = [address(a) if type(a) is np.ndarray else (None if p else a) for a, p in zip(args, pointers)]
        count = 1 if n < 2 * MIN_PER_THREAD else max(1, min(threads(), n // MIN_PER_THREAD))
        fn(count, *c_args)
        if recording.active() is not None:      # the same call again at each replay (its arrays kept alive)
            recording.record(fn, count, *c_args, keep=args)

    def try_launch(self, name: str, n: int, args: tuple) -> bool:
        """:meth:`launch`, or False (the caller runs the twin) when the kernels are off or cannot be built:
        then, in auto mode, one line on stderr says why and how to enable them."""
        if not enabled():
            return False
        try:
            self.launch(name, n, args)
            return True
        except BuildError as e:
            if mode() == "1":
                raise BuildError(f"GPUNET_CPU_KERNELS=1 but the CPU kernels of {self.name} cannot be built: {e}") from e
            _state["disabled"] = reason = str(e).partition("\n")[0]
            _say(f"the CPU kernels are off, the NumPy code runs instead: {reason} (install g++, or set "
                 "GPUNET_CXX; GPUNET_CPU_KERNELS=0 silences this, =1 makes it an error)")
            return False
