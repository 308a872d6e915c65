"""Emulated ``cupy.RawModule`` / ``cupy.RawKernel``: CUDA C++ compiled by the host C++ compiler, with a
prelude (``__global__``, ``blockIdx``, ``__fadd_rn``...) and a ``launch_<name>`` wrapper per kernel that runs
the whole grid serially. Arguments are checked against the kernel's C parameters by CuPy's rules; built
libraries are cached on disk. Test infrastructure: no shared memory, barriers or warp operations (refused).

The prelude, the signature parser and the atomic, digest-checked build cache are gpunet's own
(:mod:`gpunet.kernels.host`, which builds the same sources for the CPU with OpenMP); this module adds
the serial grid, CuPy's argument rules and the emulated ``-ftz=true``.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import pathlib
import platform
import re
import shutil
import subprocess
import threading

import numpy

from gpunet.kernels import host

LAUNCHES = collections.deque(maxlen=1000)   # the latest Launch records (bounded: they keep their arrays alive)
LAUNCH_COUNT = [0]                          # launches so far in this process (len(LAUNCHES) stops at 1000)
LAUNCH_HOOKS = []                           # hook(launch) -> truthy: defer the launch (stream capture)
_TRAILER = b"\0gpunet-emulated-cuda-1-sha256\0"   # appended to each cached .so, then the digest of the ELF part

PRELUDE = host.PRELUDE      # GPUNET_HOST_OPENMP undefined: the serial grid's globals, noinline __f*_rn

_WRAPPER = """
extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz{params}) {{
    FlushSubnormals ftz;
    gridDim = dim3{{gx, gy, gz}}; blockDim = dim3{{bx, by, bz}};
    for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x)
        for (unsigned k = 0; k < bz; ++k) for (unsigned j = 0; j < by; ++j) for (unsigned i = 0; i < bx; ++i) {{
            blockIdx = dim3{{x, y, z}}; threadIdx = dim3{{i, j, k}};
            {name}({call});
        }}
}}
"""

_COMMENTS = host.COMMENTS
_UNSUPPORTED = re.compile(r"\b(__shared__|__syncthreads\w*|__syncwarp|__shfl\w*|__ballot_sync|__any_sync|"
                          r"__all_sync|cooperative_groups)\b")
_HARMLESS_OPTIONS = {"arch", "gpu-architecture", "lineinfo", "generate-line-info", "G", "device-debug", "restrict",
                     "prec-div=true", "prec-sqrt=true"}   # options that change no IEEE float result


class CompileException(Exception):
    """The host compiler rejected a kernel source (``cupy.cuda.compiler.CompileException``'s role)."""


def current_device() -> int:
    """The current GPU index, asked of the emulated CuPy (a test may replace this function)."""
    from cupy.cuda import runtime    # imported late: the emulated cupy package imports this module
    return runtime.getDevice()


# -- parsing: gpunet.kernels.host's ---------------------------------------------------------
Param, Signature, parse_kernels = host.Param, host.Signature, host.parse_kernels


# -- building ---------------------------------------------------------------------------------
def cache_dir() -> pathlib.Path:
    """Where built libraries live: $GPUNET_EMULATED_CUDA_CACHE, else $XDG_CACHE_HOME (or ~/.cache)
    /gpunet-emulated-cuda; a per-user temporary folder when that cannot be created."""
    return host.user_cache("gpunet-emulated-cuda", "GPUNET_EMULATED_CUDA_CACHE")


def compiler() -> tuple:
    """``(path, version line)`` of the host C++ compiler: $GPUNET_EMULATED_CXX, else g++, c++ or clang++."""
    cxx = os.environ.get("GPUNET_EMULATED_CXX") or next(filter(None, map(shutil.which, ("g++", "c++", "clang++"))), 0)
    if cxx is None:
        raise RuntimeError("the emulated CUDA kernels need a C++ compiler (g++): none found on PATH")
    return cxx, host.compiler_version(cxx)


def fma_flags() -> list:
    """Flags that let the compiler contract ``a*b + c`` into FMA instructions where the CPU has them."""
    x86_fma = False           # other CPUs (aarch64...) have FMA in their base instruction set
    if platform.machine().lower() in ("x86_64", "amd64"):
        with contextlib.suppress(OSError):
            x86_fma = " fma " in pathlib.Path("/proc/cpuinfo").read_text().replace("\n", " ")
    return ["-ffp-contract=fast"] + (["-mfma"] if x86_fma else [])


def compiler_flags(options: tuple, fma=None) -> list:
    """g++ flags for CuPy/NVRTC ``options``. FMA contraction: ``fma`` if not None, else ``--fmad=``
    from the options, else $GPUNET_EMULATED_FMA=1; off by default. Subnormals: the last ``-ftz=``
    wins, as in NVRTC (CuPy appends ``-ftz=true``; $GPUNET_EMULATED_FTZ=0 turns the emulation off)."""
    std, extra, fmad, ftz = "-std=c++17", [], None, False
    for opt in options:
        key, _, value = opt.lstrip("-").partition("=")
        if opt.startswith(("-D", "-I")):
            extra.append(opt)
        elif key in ("std", "fmad"):
            std, fmad = (f"-std={value}", fmad) if key == "std" else (std, value == "true")
        elif key == "ftz" and value in ("true", "false"):
            ftz = value == "true"
        elif key not in _HARMLESS_OPTIONS and opt.lstrip("-") not in _HARMLESS_OPTIONS:
            raise ValueError(f"the emulated kernel runner does not support the compiler option {opt!r} "
                             "(it computes IEEE float with the host compiler)")
    if fma is None:
        fma = fmad if fmad is not None else os.environ.get("GPUNET_EMULATED_FMA", "") in ("1", "true", "yes")
    if ftz and os.environ.get("GPUNET_EMULATED_FTZ", "1") not in ("0", "false", "no"):
        extra.append("-DGPUNET_FTZ")
    return [std, "-O2", "-fPIC", "-shared", *(fma_flags() if fma else ["-ffp-contract=off"]), *extra]


def _valid(path: pathlib.Path) -> bool:
    """Is ``path`` a complete library written by this module (its trailer's digest matches)?"""
    return host.valid_library(path, _TRAILER)


def _compile(cxx: str, flags: list, text: str, out: str) -> None:
    """Compile the translation unit ``text`` into the shared library ``out`` (a test may wrap this)."""
    result = subprocess.run([cxx, *flags, "-x", "c++", "-", "-o", out], input=text, capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileException(f"the host compiler rejected the kernel source:\n{result.stderr.strip()}")


def build(text: str, flags: list) -> pathlib.Path:
    """The cached library of translation unit ``text``, compiled first if absent or corrupt
    (:func:`gpunet.kernels.host.cached_build`: a temporary file renamed into place)."""
    cxx, version = compiler()
    return host.cached_build(text, flags, cxx, version, cache_dir(), _TRAILER, lambda *a: _compile(*a))[0]


_LIBRARIES, _LOCK = {}, threading.Lock()      # (translation unit, flags) -> ctypes.CDLL, in this process


def load(text: str, flags: list) -> ctypes.CDLL:
    """The loaded library of ``text`` built with ``flags`` (built or taken from the cache)."""
    key = (text, tuple(flags))
    with _LOCK:
        if key not in _LIBRARIES:
            _LIBRARIES[key] = ctypes.CDLL(str(build(text, flags)))
        return _LIBRARIES[key]


# -- modules, kernels, launches -----------------------------------------------------------------
class RawModule:
    """``cupy.RawModule(code=..., options=(...))``: :meth:`get_function` gives a :class:`RawKernel`.
    ``fma`` (emulator only): build with FMA contraction (default: see :func:`compiler_flags`)."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False, fma=None):
        if code is None or path is not None or name_expressions or jitify or translate_cucomplex \
                or enable_cooperative_groups:
            raise NotImplementedError("the emulated RawModule compiles source code (code=...) only: no cubin/ptx "
                                      "path, templates (name_expressions), jitify, cuComplex or cooperative groups")
        if not isinstance(options, tuple):
            raise TypeError(f"options must be a tuple, got {type(options).__name__}")
        found = _UNSUPPORTED.search(_COMMENTS.sub(" ", code))
        if found:
            raise NotImplementedError(f"the emulated kernel runner runs the threads of a grid one after another: "
                                      f"it cannot run a source that uses {found.group(1)} (no shared memory, "
                                      "barriers or warp operations)")
        self.code, self.options, self.backend = code, options, backend
        self.flags = compiler_flags(options + ("-ftz=true",), fma)      # appended, as CuPy does
        self.kernels = parse_kernels(code)
        self._library = None

    def translation_unit(self) -> str:
        """The prelude, the source as given, and a serial-grid wrapper per kernel."""
        wraps = [_WRAPPER.format(name=k.name, params="".join(f", {p.type_text} a{i}" for i, p in enumerate(k.params)),
                                 call=", ".join(f"a{i}" for i in range(len(k.params))))
                 for k in self.kernels.values() if not k.problem]
        return "\n".join([PRELUDE, '#line 1 "kernel.cu"', self.code, '#line 1 "<launch wrappers>"', *wraps])

    def library(self) -> ctypes.CDLL:
        if self._library is None:
            self._library = load(self.translation_unit(), self.flags)
        return self._library

    def get_function(self, name: str) -> "RawKernel":
        kernel = RawKernel(None, name, _module=self)
        kernel.function()     # compile now, as CuPy does
        return kernel


class Launch(collections.namedtuple("Launch", "kernel grid block args c_args shared_mem stream")):
    """One launch: 3-tuples ``grid``, ``block``; ``args`` as given (keeps arrays alive), ``c_args`` as passed."""

    def run(self) -> None:
        """Run (or replay) the launch on the host, with the same pointers and values."""
        self.kernel.function()(*self.grid, *self.block, *self.c_args)


@contextlib.contextmanager
def recording(execute=True):
    """Collect the launches made inside the block in the list it yields; ``execute=False`` defers them
    (as stream capture does: replay each with ``launch.run()``)."""
    launches = []

    def hook(launch):
        return launches.append(launch) or not execute
    LAUNCH_HOOKS.append(hook)
    try:
        yield launches
    finally:
        LAUNCH_HOOKS.remove(hook)


def _dim3(value, what: str) -> tuple:
    dims = (value,) if isinstance(value, (int, numpy.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, numpy.integer)) for d in dims):
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    limits = (1024, 1024, 64, 1024) if what == "block" else (2 ** 31 - 1, 65535, 65535, 2 ** 64)
    if min(dims) < 1 or any(d > m for d, m in zip(dims + (dims[0] * dims[1] * dims[2],), limits)):
        raise ValueError(f"invalid {what} {value!r}: CUDA wants sizes >= 1 and at most {limits[:3]}"
                         f"{' (1024 threads in all)' if what == 'block' else ''}")
    return dims


def _scalar(arg):
    """``(dtype, description)`` of a scalar argument, by CuPy's rules (int -> long long, float -> double)."""
    if isinstance(arg, numpy.generic):       # first: numpy.float64 is a float
        return arg.dtype, f"a numpy.{arg.dtype.name} scalar"
    if isinstance(arg, bool):
        return numpy.dtype(bool), "a Python bool (passed as a C bool)"
    if isinstance(arg, int):
        if not -2 ** 63 <= arg < 2 ** 63:
            raise OverflowError(f"Python int {arg} does not fit a C long long")
        return numpy.dtype("int64"), "a Python int (CuPy passes it as a C long long)"
    if isinstance(arg, float):
        return numpy.dtype("float64"), "a Python float (CuPy passes it as a C double)"
    if isinstance(arg, numpy.ndarray):
        raise TypeError("a NumPy array is host memory: pass a (emulated) cupy array")
    raise TypeError(f"unsupported kernel argument type {type(arg).__name__}")


class RawKernel:
    """``cupy.RawKernel(code, name, options=(...))``, or one function of a :class:`RawModule`."""

    def __init__(self, code, name, options=(), backend="nvrtc", *, translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=False, fma=None, _module=None):
        module = _module or RawModule(code=code, options=options, backend=backend, fma=fma, jitify=jitify,
                                      translate_cucomplex=translate_cucomplex,
                                      enable_cooperative_groups=enable_cooperative_groups)
        signature = module.kernels.get(name)
        if signature is None:
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: no __global__ function {name!r} "
                               f"(the source has {', '.join(module.kernels) or 'none'})")
        if signature.problem:
            raise NotImplementedError(f"kernel {name}: the emulated runner cannot pass {signature.problem}")
        self.module, self.name, self.params, self._cfunc = module, name, signature.params, None
        self.code, self.options, self.backend = module.code, module.options, module.backend

    def function(self):
        """The C wrapper ``launch_<name>(gx, gy, gz, bx, by, bz, params...)`` (built on first use)."""
        if self._cfunc is None:
            fn = getattr(self.module.library(), f"launch_{self.name}")
            fn.argtypes = [ctypes.c_uint] * 6 + [host.ctypes_of(p) for p in self.params]
            fn.restype = None
            self._cfunc = fn
        return self._cfunc

    def _mismatch(self, i, param, given):
        want = (f"a {'const ' if 'const' in param.type_text.split() else ''}pointer to {param.dtype or 'anything'} "
                f"(a device array, or numpy.uint64(0) for NULL)" if param.pointer else
                f"{param.type_text} (pass numpy.{param.dtype.name}(...))")
        raise TypeError(f"kernel {self.name}: argument {i} ({param.decl}) got {given}, but the signature wants {want}")

    def marshal(self, args) -> tuple:
        """``args`` as C values by CuPy's rules, checked against the parameter list."""
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise ValueError(f"kernel {self.name} takes {len(self.params)} arguments "
                             f"({', '.join(p.decl for p in self.params)}), got {len(args)}")
        out, gpu = [], None
        for i, (arg, p) in enumerate(zip(args, self.params)):
            host = getattr(arg, "__cuda_host__", None)
            if host is not None:
                if not isinstance(host, numpy.ndarray):
                    raise TypeError(f"kernel {self.name}: argument {i}: __cuda_host__ must be a numpy.ndarray")
                if not p.pointer or (p.dtype is not None and host.dtype != p.dtype):
                    self._mismatch(i, p, f"a {host.dtype} array")
                gpu = current_device() if gpu is None else gpu
                if arg.device.id != gpu:
                    raise ValueError(f"kernel {self.name}: argument {i} ({p.decl}) is an array on GPU {arg.device.id}, "
                                     f"but the current device is GPU {gpu}")
                out.append(host.ctypes.data)     # the address of its first element, as CuPy's data.ptr
                continue
            dtype, given = _scalar(arg)
            if p.pointer and isinstance(arg, numpy.uint64) and arg == 0:
                out.append(None)                 # gpunet's NULL
            elif p.pointer or dtype != p.dtype:
                self._mismatch(i, p, given)
            else:
                out.append(arg.item() if isinstance(arg, numpy.generic) else arg)
        return tuple(out)

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        """Run the kernel over ``grid`` x ``block`` on the host (serially), after recording the launch in
        :data:`LAUNCHES` and offering it to the :data:`LAUNCH_HOOKS` (one returning true defers it)."""
        grid, block = _dim3(grid, "grid"), _dim3(block, "block")
        if shared_mem or enable_cooperative_groups:
            raise NotImplementedError("the emulated kernel runner has no shared memory or cooperative groups")
        launch = Launch(self, grid, block, args, self.marshal(args), shared_mem, stream)   # args as given
        LAUNCHES.append(launch)
        LAUNCH_COUNT[0] += 1
        if not any([hook(launch) for hook in tuple(LAUNCH_HOOKS)]):
            launch.run()
