"""The emulated kernel runner (cupy/_raw.py): every gpunet .cu kernel, built by the host C++ compiler, run through
gpunet's GPU code paths (``Source.function`` replaced by ``RawModule.get_function``, stand-in arrays :class:`Arr`)
against gpunet's NumPy twins. The last test prints the measured ULP differences."""
import functools
import importlib.util
import os
import pathlib
import subprocess
import sys
import types
import uuid

import numpy as np
import pytest

from gpunet import kernels
from gpunet.kernels import cuda
from gpunet.optimizers import SGD, Adam, RMSprop

HERE = pathlib.Path(__file__).parent
RAW = HERE / "cupy" / "_raw.py"
CU_FILES = sorted(pathlib.Path(kernels.__file__).parents[1].glob("**/*.cu"))     # gpunet/**/*.cu
F = np.float32
MEASURED = {}             # what -> the largest ULP difference seen (printed by test_zz_report)

_spec = importlib.util.spec_from_file_location("gpunet_emulated_raw", RAW)   # alone: cupy/__init__ not needed
raw = sys.modules["gpunet_emulated_raw"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(raw)
_DEFAULT_CURRENT_DEVICE = raw.current_device
if str(HERE.parent) not in sys.path:          # tests/: a child process imports this file from its folder
    sys.path.insert(0, str(HERE.parent))
from subnormals import flushing  # noqa: E402


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")       # NaN inputs, the mean of 0 rows


@pytest.fixture(autouse=True)
def _gpu0(monkeypatch):     # current device 0 (the emulated cupy.cuda.runtime may not exist yet)
    monkeypatch.setattr(raw, "current_device", lambda: 0)


def _wrap(x):
    return Arr(x) if isinstance(x, np.ndarray) else x


def _unwrap(x):
    return getattr(x, "__cuda_host__", x)        # an Arr's host array; anything else as it is


class Arr:
    """A stand-in for an emulated CuPy array: the runner reads ``__cuda_host__`` and ``device.id``;
    everything else is the host array's (array results wrapped again)."""

    def __init__(self, host, gpu=0):
        self.__cuda_host__, self.device = host, types.SimpleNamespace(id=gpu)

    def __getattr__(self, name):
        attr = getattr(self.__cuda_host__, name)
        return (lambda *a, **k: _wrap(attr(*map(_unwrap, a), **k))) if callable(attr) else attr


class _XP:
    """A stand-in array module: NumPy on :class:`Arr` (``cuda.is_gpu(XP)`` is true)."""

    def __getattr__(self, name):
        fn = getattr(np, name)
        return lambda *a, **k: _wrap(fn(*map(_unwrap, a), **{key: _unwrap(v) for key, v in k.items()}))


XP = _XP()


@functools.lru_cache(maxsize=None)
def module(code, fma=False):
    return raw.RawModule(code=code, options=cuda.COMPILE_OPTIONS, fma=fma)


LAUNCH_SHAPES = {"gpunet-grid": None, "small-grid": (32, 3)}    # (threads, max blocks): grid-stride loops


@pytest.fixture
def emulate(monkeypatch):
    """Make gpunet's Sources launch on the emulator (``fma``: the contracting build)."""
    def install(fma=False, shape=None):
        for src in cuda.SOURCES:
            monkeypatch.setattr(src, "function", module(src.code, fma).get_function)
        for name, value in zip(("THREADS_PER_BLOCK", "MAX_BLOCKS"), shape or ()):
            monkeypatch.setattr(cuda, name, value)
    return install


def ulps(a, b) -> int:
    """The largest distance in float32 steps (NaN == NaN; NaN against a number: 2**32)."""
    a, b = np.asarray(_unwrap(a), F).ravel(), np.asarray(_unwrap(b), F).ravel()
    ia, ib = (np.where(i < 0, -(i & 0x7FFFFFFF), i) for i in (v.view(np.int32).astype(np.int64) for v in (a, b)))
    d = np.where(np.isnan(a) | np.isnan(b), np.where(np.isnan(a) & np.isnan(b), 0, 2 ** 32), np.abs(ia - ib))
    return int(d.max(initial=0))


def record(what, got, want, bound=0):
    """Compare (``bound`` 0: the same bits, -0 != +0), and remember the largest ULP difference."""
    u = MEASURED[what] = max(MEASURED.get(what, 0), ulps(got, want))
    assert same_bits(got, want) if bound == 0 else u <= bound, f"{what}: {u} ULP (bound {bound})"


def same_bits(a, b) -> bool:
    """Equal float32 bits (-0 != +0), any NaN equal to any NaN."""
    a, b = np.asarray(_unwrap(a), F), np.asarray(_unwrap(b), F)
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


def data(shape, seed, special=True):
    """Random float32 (normal, scale 3), with NaN, +-inf and -0 sprinkled in when ``special``."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(F)
    if special and x.size > 10:
        x.reshape(-1)[[1, 3, 5, 7, 9]] = [np.nan, np.inf, -np.inf, -0.0, 1e-40]
    return x


# -- every source compiles; every kernel against its twin ---------------------------------------
@pytest.mark.parametrize("fma", [False, True], ids=["no-fma", "fma"])
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_every_source_compiles(path, fma):
    assert set(CU_FILES) == {s.path for s in cuda.SOURCES}         # gpunet registers them all
    source = next(s for s in cuda.SOURCES if s.path == path)
    mod = module(source.code, fma)
    assert tuple(mod.kernels) == source.kernel_names == tuple(mod.get_function(k).name for k in source.kernel_names)
    assert ("-ffp-contract=fast" in mod.flags) == fma


@pytest.mark.parametrize("launch", LAUNCH_SHAPES)
@pytest.mark.parametrize("shape", [(0, 7), (1, 1), (3, 85), (5, 200), (17, 241)], ids=str)   # n: 0, 1, 255...
def test_dense_kernels(emulate, launch, shape):
    emulate(shape=LAUNCH_SHAPES[launch])
    z, b, g = data(shape, 0), data(shape[-1:], 1), data(shape, 2)
    for act in (None, "relu"):
        for bias in (b, None):
            with flushing():
                want = kernels.bias_act(np, z.copy(), bias, act)
            record("bias_act_fwd", kernels.bias_act(XP, Arr(z.copy()), _wrap(bias), act), want)
            out = kernels.bias_act(XP, Arr(z.copy()), _wrap(bias), act, out=Arr(np.full(shape, 7, F)))
            record("bias_act_fwd", out, want)
    y = kernels.bias_act(np, z.copy(), b, "relu")
    with flushing():
        want = kernels.act_backward(np, g, y, "relu")
    record("relu_bwd", kernels.act_backward(XP, Arr(g), Arr(y), "relu"), want)


@pytest.mark.parametrize("launch", LAUNCH_SHAPES)
@pytest.mark.parametrize("rows,cols", [(0, 5), (1, 1), (257, 10), (1000, 3), (40, 1000)])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan-inf"])
def test_softmax_xent(emulate, launch, rows, cols, sparse, special):
    emulate(shape=LAUNCH_SHAPES[launch])
    rng, z = np.random.default_rng(rows * cols), data((rows, cols), 3, special)
    labels = rng.integers(0, cols, rows)
    if special and rows > 3:
        labels[[0, 2]] = [-1, cols]                     # out of range: a NaN row, kernel and twin
    y = labels if sparse else np.eye(cols, dtype=F)[labels % cols] * F(0.9) + F(0.1 / cols)
    for weights in (None, rng.random(rows, dtype=F)):
        loss, probs = kernels.softmax_xent_forward(XP, Arr(z), _wrap(y), sparse, _wrap(weights))
        want_loss, want_probs = kernels.softmax_xent_forward(np, z, y, sparse, weights)
        record(f"softmax_xent_fwd probs, {cols} cols", probs, want_probs, bound=16 if cols <= 10 else 64)
        record(f"softmax_xent_fwd loss, {cols} cols", loss, want_loss, bound=16)
        g, bwd = np.asarray(1.7, F), kernels.softmax_xent_backward
        record("softmax_xent_bwd", bwd(XP, Arr(want_probs), _wrap(y), Arr(g), sparse, _wrap(weights)),
               bwd(np, want_probs, y, g, sparse, weights))


def test_guard_loss(emulate):
    emulate()
    host = [np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, F)]      # halt, bad_step, bad_loss
    dev = [Arr(a.copy()) for a in host]
    for step, loss in enumerate([1.5, -2.0, np.nan, 3.0, np.inf, -np.inf], start=10):
        kernels.guard_loss(np, np.asarray(loss, F), *host, step)
        kernels.guard_loss(XP, Arr(np.asarray(loss, F)), *dev, step)
        assert all(np.array_equal(a.__cuda_host__, b, equal_nan=True) for a, b in zip(dev, host))
    assert host[0][0] == 1 and host[1][0] == 12


OPTIMIZERS = {"sgd": lambda: SGD(0.1), "sgd-momentum": lambda: SGD(0.1, momentum=0.9),
              "sgd-nesterov": lambda: SGD(0.1, momentum=0.9, nesterov=True),
              "sgd-tiny-momentum": lambda: SGD(0.1, momentum=1e-46),
              "adam": lambda: Adam(), "amsgrad": lambda: Adam(amsgrad=True),
              "rmsprop": lambda: RMSprop(), "rmsprop-tiny-lr": lambda: RMSprop(1e-30),
              "rmsprop-pytorch": lambda: RMSprop(eps_inside_sqrt=False),
              "rmsprop-centered-momentum": lambda: RMSprop(centered=True, momentum=0.5)}


def run_optimizer(name, n, decay, halt, gpu, steps=3):
    """``steps`` updates by the kernel (``gpu``) or the twin; returns the weights and slots."""
    opt, w = OPTIMIZERS[name](), data(n, 4)
    slots = {k: np.abs(data(n, 5 + i, special=False)) * F(0.1) for i, k in enumerate(opt.slot_names)}
    for t in range(steps):
        opt.iterations = t + 1
        g = data(n, 10 + t)
        if gpu:
            opt.update_core_gpu(Arr(g), Arr(w), {k: Arr(v) for k, v in slots.items()},
                                None if halt is None else Arr(np.array([halt], np.int32)), decay=decay)
        elif not halt:
            with flushing():        # the twin as the kernel computes: float32 subnormals flushed
                opt.update_core_cpu(np, g, w, slots, np.empty_like(w), decay=decay)
    return {"w": w, **slots}


@pytest.mark.parametrize("launch", LAUNCH_SHAPES)
@pytest.mark.parametrize("n", [0, 1, 1000, 4099])
@pytest.mark.parametrize("halt", [None, 0, 1])
@pytest.mark.parametrize("decay", [0.0, 0.004])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_kernels(emulate, name, decay, halt, n, launch):
    emulate(shape=LAUNCH_SHAPES[launch])
    got, want = run_optimizer(name, n, decay, halt, True), run_optimizer(name, n, decay, halt, False)
    for k in want:
        record(f"{name} {k}", got[k], want[k])


def test_fma_build_gives_the_same_bits(emulate, monkeypatch):
    """gpunet's kernels round each operation on its own (__f*_rn), so a build that contracts a*b + c into
    FMA gives the same bits; a plain ``a*b + c`` does change there (where the CPU has FMA)."""
    results = []
    for fma in (False, True):
        emulate(fma=fma)
        z, g, two = data((40, 300), 20), data((40, 300), 21), Arr(np.asarray(2, F))
        out = [kernels.bias_act(XP, Arr(z.copy()), Arr(z[0].copy()), "relu"),
               kernels.act_backward(XP, Arr(g), Arr(z), "relu")]
        for y in (np.arange(40), np.eye(300, dtype=F)[:40]):
            loss, probs = kernels.softmax_xent_forward(XP, Arr(z), Arr(y), y.ndim == 1, Arr(g[:, 0].copy()))
            out += [loss, probs, kernels.softmax_xent_backward(XP, probs, Arr(y), two, y.ndim == 1)]
        results.append(out + [a for k in OPTIMIZERS for a in run_optimizer(k, 4099, 0.004, None, True).values()])
    for i, (a, b) in enumerate(zip(*results)):
        assert same_bits(a, b), f"result {i} differs with FMA contraction"
    probe = ('extern "C" __global__ void f(const float* a, float* y, float* z, long long n) {\n'
             '  for (long long i = 0; i < n; ++i) {\n    y[i] = a[i] * a[i+n] + a[i+2*n];\n'
             '    z[i] = __fadd_rn(__fmul_rn(a[i], a[i+n]), a[i+2*n]); } }')
    a, out = data(3000, 22, special=False), [(np.zeros(1000, F), np.zeros(1000, F)) for _ in range(2)]
    for fma, (y, z) in zip((False, True), out):
        raw.RawKernel(probe, "f", fma=fma)(1, 1, (Arr(a), Arr(y), Arr(z), 1000))
    assert same_bits(out[0][1], out[1][1]) and same_bits(out[0][0], out[0][1])
    if "-mfma" in raw.fma_flags() or not raw.platform.machine().lower().startswith(("x86", "amd64")):
        assert not same_bits(out[0][0], out[1][0]), "the FMA build did not contract a*b + c"
    for env, kw, contract in [("", {}, "off"), ("1", {}, "fast"), ("1", {"fma": False}, "off"),
                              ("", {"fma": True}, "fast"), ("", {"options": ("--fmad=true",)}, "fast")]:
        monkeypatch.setenv("GPUNET_EMULATED_FMA", env)           # the default build follows $GPUNET_EMULATED_FMA
        assert f"-ffp-contract={contract}" in raw.RawModule(code=probe, **kw).flags


# -- the runner itself ------------------------------------------------------------------------
PROBE = """
extern "C" __global__ void probe(const float* x, float* y, double* d, long long* q, float f, int k, long long n,
                                 double v, bool flag, const void* any) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        y[0] = x ? x[0] + f : f; d[0] = v; q[0] = n + k + flag * 1000 + !!any * 100000; }
}
extern "C" __global__ void hits(int* h) {   // every thread of a 3-D grid once: h[its global index] += 1
    unsigned b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    h[(b * blockDim.z + threadIdx.z) * blockDim.y * blockDim.x + threadIdx.y * blockDim.x + threadIdx.x] += 1;
}
"""


def probe_args(gpu=0):
    return [Arr(np.array([9, 1.5], F)[::-1], gpu), Arr(np.zeros(1, F), gpu), Arr(np.zeros(1), gpu),
            Arr(np.zeros(1, np.int64), gpu), F(2), np.int32(3), 4, 0.25, True, np.uint64(0)]


def test_arguments_pass_by_cupys_rules():
    probe, args = raw.RawModule(code=PROBE).get_function("probe"), probe_args()
    probe((2,), (32,), args)      # int -> long long, float -> double, bool; uint64(0) -> NULL; x: a reversed view
    assert args[1].__cuda_host__[0] == 3.5 and args[2].__cuda_host__[0] == 0.25 and args[3].__cuda_host__[0] == 1007
    args[0], args[9] = np.uint64(0), args[2]           # NULL for a float*, any array for a void*
    probe(1, 1, args)
    assert args[1].__cuda_host__[0] == 2 and args[3].__cuda_host__[0] == 101007
    h = np.zeros(2 * 3 * 4 * 2 * 2 + 1, np.int32)
    raw.RawKernel(PROBE, "hits")((2, 3), (4, 2, 2), (Arr(h),))
    assert (h[:-1] == 1).all() and h[-1] == 0


@pytest.mark.parametrize("index,value,error,match", [
    (4, 2.0, TypeError, r"probe: argument 4 \(float f\) got a Python float .*C double.*wants float"),
    (4, np.float64(2), TypeError, r"argument 4 \(float f\) got a numpy.float64 scalar"),
    (5, 3, TypeError, r"argument 5 \(int k\) got a Python int .*C long long.*wants int \(pass numpy.int32"),
    (6, np.int32(4), TypeError, r"argument 6 \(long long n\) got a numpy.int32 scalar"),
    (1, Arr(np.zeros(1)), TypeError, r"argument 1 \(float\* y\) got a float64 array.*pointer to float32"),
    (4, Arr(np.zeros(1, F)), TypeError, r"argument 4 \(float f\) got a float32 array"),
    (1, np.uint64(5), TypeError, r"argument 1 .* got a numpy.uint64 scalar"),
    (1, 0, TypeError, r"argument 1 .* got a Python int"),
    (1, np.zeros(1, F), TypeError, "NumPy array is host memory"),
    (1, None, TypeError, "unsupported kernel argument type NoneType"),
    (1, Arr(np.zeros(1, F), 1), ValueError, r"argument 1 \(float\* y\) is an array on GPU 1.*current device is GPU 0"),
    (10, 1, ValueError, r"probe takes 10 arguments .*got 11"),
])
def test_argument_errors(index, value, error, match):
    args = probe_args()
    args[index:index + 1] = [value]
    with pytest.raises(error, match=match):
        raw.RawModule(code=PROBE).get_function("probe")(1, 1, tuple(args))


def test_devices_launches_and_limits(monkeypatch):
    probe, args = raw.RawKernel(PROBE, "probe"), probe_args(gpu=1)
    with pytest.raises(ValueError, match="GPU 1, but the current device is GPU 0"):
        probe(1, 1, args)
    runtime = types.SimpleNamespace(getDevice=lambda: 1)       # the default lookup: cupy.cuda.runtime.getDevice()
    monkeypatch.setattr(raw, "current_device", _DEFAULT_CURRENT_DEVICE)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    monkeypatch.setitem(sys.modules, "cupy.cuda", sys.modules["cupy"].cuda)
    probe(1, 1, args)
    assert raw.LAUNCHES[-1][:4] == (probe, (1, 1, 1), (1, 1, 1), args)
    with raw.recording(execute=False) as launches:   # as stream capture: recorded, not run
        args[0].__cuda_host__[0] = 10
        probe(1, 1, args)
        assert args[1].__cuda_host__[0] == 3.5 and len(launches) == 1
    launches[0].run()
    assert args[1].__cuda_host__[0] == 12
    for grid, block in [(0, 1), (1, 0), (1, 1025), (1, (32, 33)), (1, (1, 1, 65)), ((1, 2, 3, 4), 1), (2 ** 31, 1)]:
        with pytest.raises((ValueError, TypeError), match="grid|block"):
            probe(grid, block, args)
    with pytest.raises(NotImplementedError, match="shared memory"):
        probe(1, 1, args, shared_mem=16)


@pytest.mark.parametrize("code,options,name,error,match", [
    ("__global__ void k(float* x) { __shared__ float s[32]; }", (), "k", NotImplementedError, "__shared__"),
    ("__global__ void k(float* x) { __syncthreads(); }", (), "k", NotImplementedError, "one after another"),
    ("__global__ void k(float* x) {\n  x[0] = undefined_thing; }", (), "k", raw.CompileException, r"kernel.cu:2"),
    ("__global__ void k(float* x) {}", (), "nope", RuntimeError, r"named symbol not found.*has k"),
    ("__global__ void k(float* x) {}", ["--std=c++14"], "k", TypeError, "options must be a tuple"),
    ("__global__ void k(float* x) {}", ("--use_fast_math",), "k", ValueError, "use_fast_math"),
    ("template<typename T> __global__ void k(T* x) {}", (), "k", NotImplementedError, "T\\* x"),
    ("__global__ void k(float** x) {}", (), "k", NotImplementedError, "pointers to pointers"),
])
def test_sources_the_runner_refuses(code, options, name, error, match):
    with pytest.raises(error, match=match):
        raw.RawModule(code=code, options=options).get_function(name)


# -- the cache --------------------------------------------------------------------------------
FILL = ('extern "C" __global__ void fill(float* y, float v, long long n) {\n'
        '  for (long long i = threadIdx.x; i < n; i += blockDim.x) y[i] = v; }\n// ')
CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); import test_raw_kernels as t; "
         "t.raw.current_device = lambda: 0; print(t.fill(sys.argv[2]))")


def fill(tag):
    """Build FILL (``tag``: a source no cache has seen) and run it: 5 values of 2.5."""
    y = np.zeros(5, F)
    raw.RawModule(code=FILL + tag).get_function("fill")(1, 4, (Arr(y), F(2.5), 5))
    return float(y.sum())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder; the list of compiler runs."""
    monkeypatch.setenv("GPUNET_EMULATED_CUDA_CACHE", str(tmp_path))
    compiled, compile_ = [], raw._compile
    monkeypatch.setattr(raw, "_compile", lambda *a: compiled.append(a) or compile_(*a))
    return tmp_path, compiled


def test_cache_hit_and_corrupted_library(cache, monkeypatch):
    (folder, compiled), tag = cache, str(uuid.uuid4())

    def run():
        monkeypatch.setattr(raw, "_LIBRARIES", {})      # as a new process would: only the disk cache
        return fill(tag), len(compiled)
    assert run() == (12.5, 1) and run() == (12.5, 1)   # the second build: a cache hit
    (lib,) = folder.glob("*.so")
    for corrupt in (lambda b: b[:len(b) // 2], lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:]):
        (folder / "corrupt").write_bytes(corrupt(lib.read_bytes()))
        os.replace(folder / "corrupt", lib)    # a new file: this process keeps its mapping of the old one
        assert not raw._valid(lib) and run()[0] == 12.5 and raw._valid(lib)
    assert run()[1] == 3 and [p.name for p in folder.iterdir()] == [lib.name]


def test_concurrent_builds_share_one_cached_library(cache):
    folder, tag = cache[0], str(uuid.uuid4())
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), tag], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o.strip() for o, _ in outs] == ["12.5"] * 4, outs
    (lib,) = folder.iterdir()                   # one library, no temporary file left behind
    assert lib.suffix == ".so" and raw._valid(lib)


# -- the host's libm against NumPy, and the report ----------------------------------------------
def test_libm_expf_logf_against_numpy(monkeypatch):
    monkeypatch.setenv("GPUNET_EMULATED_FTZ", "0")      # the host libm itself, subnormal results included
    code = ('extern "C" __global__ void explog(const float* x, float* e, float* l, long long n) {\n'
            '  for (long long i = threadIdx.x; i < n; i += blockDim.x) { e[i] = expf(x[i]); l[i] = logf(x[i]); } }')
    bits = np.random.default_rng(8).integers(1, 0x7F800000, 10 ** 6, dtype=np.uint32)     # every positive float
    for what, x, ref in [("expf", np.random.default_rng(7).uniform(-103, 88.7, 10 ** 6).astype(F), np.exp),
                         ("logf", bits.view(F), np.log)]:
        e, lg, exact = np.empty_like(x), np.empty_like(x), ref(x.astype(np.float64)).astype(F)
        raw.RawKernel(code, "explog")(1, 64, (Arr(x), Arr(e), Arr(lg), x.size))
        host = e if what == "expf" else lg
        record(f"{what}: host libm vs NumPy float32", host, ref(x), bound=4)
        record(f"{what}: host libm vs correctly rounded", host, exact, bound=1)
        record(f"{what}: NumPy float32 vs correctly rounded", ref(x), exact, bound=4)


def test_zz_report(capsys):
    with capsys.disabled():
        print("\nlargest ULP difference, emulated kernel vs gpunet's NumPy twin (0: the same bits):")
        for what, u in sorted(MEASURED.items()):
            print(f"  {what:45s} {u}")


def test_relu_reads_a_subnormal_as_zero_without_a_flushing_compare(monkeypatch):
    """Whether a compare flushes is the compiler's choice (on an H200 `y > 0` in relu_bwd did and
    `v > 0 || v != v` in bias_act_fwd did not), so dense.cu compares the bits: built with no flushing
    at all, it still reads a subnormal as zero, as the flushing twin does."""
    monkeypatch.setenv("GPUNET_EMULATED_FTZ", "0")
    source = next(s for s in cuda.SOURCES if s.path.name == "dense.cu")
    mod = raw.RawModule(code=source.code, options=cuda.COMPILE_OPTIONS)
    assert "-DGPUNET_FTZ" not in mod.flags
    v = np.array([1e-40, -1e-40, 1e-45, -1e-45, 2.0, -0.0, np.nan, -np.inf, np.inf, 1.2e-38, -1.2e-38], F)
    y, gz, ones = np.full_like(v, 7), np.full_like(v, 7), np.ones_like(v)
    mod.get_function("bias_act_fwd")((1,), (32,), (Arr(v), cuda.NULL, Arr(y), v.size, v.size, np.int32(1)))
    mod.get_function("relu_bwd")((1,), (32,), (Arr(ones), Arr(v), Arr(gz), v.size))
    with flushing():
        want_y, want_gz = kernels.bias_act(np, v.copy(), None, "relu"), kernels.act_backward(np, ones, v, "relu")
    assert same_bits(y, want_y) and same_bits(gz, want_gz), (y, want_y, gz, want_gz)
    assert same_bits(y, np.array([0, 0, 0, 0, 2, 0, np.nan, 0, np.inf, 1.2e-38, 0], F))
    assert same_bits(gz, np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0], F))
