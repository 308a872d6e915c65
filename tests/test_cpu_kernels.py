"""The fused CUDA kernels built for the CPU (gpunet/kernels/host.py): the NumPy twins' bits, the build
cache, the fallback and its controls.

Each kernel runs with ``GPUNET_CPU_KERNELS=1`` (the compiled kernel, required: a build failure is an
error, not a silent twin) and ``=0`` (the NumPy twin) on the edge inputs of test_kernel_contracts.py;
the launches are recorded, so a test fails if the kernel did not run. Cache tests use a fresh
``GPUNET_CPU_KERNELS_CACHE`` folder and a fresh :class:`HostModule`, so they really build.
"""
import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gpunet
from gpunet import kernels
from gpunet.kernels import cuda, dense, host, softmax_xent
from gpunet.optimizers import adam, rmsprop, sgd
from test_kernel_contracts import (COLS, EDGE, OPTIMIZERS, XENT_ULP, assert_same_bits, relu_inputs,
                                   run_optimizer, ulp_distance, xent_inputs)

F = np.float32
ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_compiler = pytest.mark.skipif(host.compiler() is None, reason="no C++ compiler")


@pytest.fixture(autouse=True)
def _quiet_float_warnings():
    with np.errstate(all="ignore"):
        yield


@pytest.fixture
def launches(monkeypatch):
    """The names of the kernels launched on the CPU (recorded, then run)."""
    names, launch = [], host.HostModule.launch

    def record(self, name, n, args):
        names.append(name)
        return launch(self, name, n, args)
    monkeypatch.setattr(host.HostModule, "launch", record)
    return names


@pytest.fixture
def both(monkeypatch, launches):
    """``both(fn)``: ``(fn() with the CPU kernels, fn() with the twins)``; the kernels must have run."""
    def run(fn):
        monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
        host.reset()                    # the mode is read at the next launch
        del launches[:]
        with_kernels = fn()
        assert launches, "no CPU kernel ran"
        monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
        host.reset()                    # the mode is read at the next launch
        del launches[:]
        twin = fn()
        assert not launches, "a kernel ran with GPUNET_CPU_KERNELS=0"
        return with_kernels, twin
    return run


# ------------------------------------------------------------------ bits: every kernel and mode
@needs_compiler
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_kernels_give_the_twins_bits_on_the_cpu(both, name):
    """Every optimizer mode (decay, momentum, Nesterov, centered, eps outside, AMSGrad, a momentum that
    rounds to 0.0f, a learning rate that forces RMSprop's general form): weights and slots, every step."""
    cpu = gpunet.device("cpu")
    got, want = both(lambda: run_optimizer(OPTIMIZERS[name], cpu))
    for step, ((w_k, s_k), (w_t, s_t)) in enumerate(zip(got, want)):
        assert_same_bits(w_k, w_t, f"{name} step {step + 1}: weights")
        for k in s_t:
            assert_same_bits(s_k[k], s_t[k], f"{name} step {step + 1}: slot {k}")


@needs_compiler
def test_dense_kernels_give_the_twins_bits_on_the_cpu(both):
    g, y = relu_inputs()
    got, want = both(lambda: kernels.act_backward(np, g, y, "relu"))
    assert_same_bits(got, want, "relu backward")
    b = np.random.default_rng(4).standard_normal(EDGE.size).astype(F)
    b[:4] = [-0.0, 0.0, np.nan, np.inf]
    for bias in (None, b):
        for act in (None, "relu"):
            got, want = both(lambda: kernels.bias_act(np, g.copy(), bias, act, out=np.empty_like(g)))
            assert_same_bits(got, want, f"bias_act {act}, bias {bias is not None}")
    sub = np.array([1e-40, -1e-40, 1e-45], F)          # IEEE subnormals kept, as NumPy keeps them
    assert_same_bits(both(lambda: kernels.bias_act(np, sub.copy(), None, "relu"))[0], [1e-40, 0.0, 1e-45])


@needs_compiler
@pytest.mark.parametrize("scale, offset", [(1 / 255, 0.0), (2.0, -1.0), (1e-40, 0.0), (-1 / 127.5, -0.0),
                                           (3e38, 0.5), (1 / 255, 1e-45), (-1.0, 0.0)])
def test_uint8_rescaling_gives_the_twins_and_numpys_bits(both, scale, offset):
    """rescale_u8 (Rescaling of uint8 images in one pass) against its twin and against NumPy's own
    float32(x) * float32(scale) + float32(offset): every uint8 value; subnormal and overflowing products."""
    x = np.arange(256 * 3, dtype=np.uint8).reshape(3, 256)
    got, want = both(lambda: (kernels.rescale.cast_scale(x, y := np.full(x.shape, np.nan, F), scale, offset), y)[1])
    assert_same_bits(got, want, f"scale {scale}, offset {offset}")
    numpy = x.astype(F) * F(scale)
    assert_same_bits(got, numpy + F(offset) if offset else numpy, "NumPy's float32 arithmetic")


@needs_compiler
@pytest.mark.parametrize("cols", [1, 2, 10, 33])
def test_the_accuracy_kernel_is_numpys_argmax(both, cols):
    """argmax_hits (the accuracy's hits in one pass) against NumPy's argmax/argmax/equal: ties (the first wins),
    -0 against +0, infinities, NaN anywhere (NumPy counts the first NaN as the maximum), rows of NaN only, and
    sparse labels out of range or negative; through the metric's own path with the kernels on and off."""
    from gpunet import metrics
    from gpunet.layers import Workspace
    rng = np.random.default_rng(cols)
    p = rng.integers(-2, 3, (300, cols)).astype(F)          # many ties
    t = np.eye(cols, dtype=F)[rng.integers(0, cols, 300)]
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0], F)
    for r in range(0, 300, 3):
        p[r, rng.integers(0, cols)] = specials[r % 6]
    p[1], t[2] = np.nan, np.nan
    t[4] = 0.0
    labels = t.argmax(axis=1)
    labels[:5] = [cols, -1, 10 ** 9, 0, cols - 1]
    for kind, target in (("categorical", t), ("sparse", labels)):
        want = (p.argmax(axis=1) == (target if kind == "sparse" else target.argmax(axis=1))).astype(F)
        got, twin = both(lambda: metrics.accuracy_hits_into(np, kind, target, p, Workspace(np)).copy())
        assert_same_bits(got, want, f"{kind}, {cols} columns")
        assert_same_bits(twin, want, f"{kind} twin, {cols} columns")


@needs_compiler
def test_the_bias_gradient_kernel_gives_numpys_row_sums(monkeypatch):
    """bias_grad adds the rows in order, as NumPy's gz.sum(axis=0) (cols > 1): launched directly (the CPU
    path keeps NumPy's vectorized sum, which is faster)."""
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()                    # the mode is read at the next launch
    gz = np.random.default_rng(3).standard_normal((129, 33)).astype(F)
    gz[0, :EDGE.size] = EDGE
    gb = np.empty(33, F)
    assert dense.SOURCE.launch("bias_grad", 33, (gz, gb, cuda.i64(129), cuda.i64(33)))
    assert_same_bits(gb, gz.sum(axis=0))


@needs_compiler
@pytest.mark.parametrize("shape", [(129, 33), (43264 // 8, 32), (7, 2), (0, 5), (300, 1)])
def test_the_cpu_bias_gradient_is_numpys_row_sums_on_any_thread_count(both, monkeypatch, shape):
    """dense.bias_grad on the CPU (bias_grad_cols: a thread's share of the columns, the rows in order) gives
    NumPy's gz.sum(axis=0) bits with 1-3 threads; a single column stays NumPy's (pairwise) sum."""
    gz = np.random.default_rng(shape[0]).standard_normal(shape).astype(F)
    gz.ravel()[:min(EDGE.size, gz.size)] = EDGE[:gz.size]
    monkeypatch.setattr(host, "MIN_PER_THREAD", 1)
    def bias_grad_with(threads):
        host.set_threads(threads)           # (after both()'s reset)
        return kernels.dense.bias_grad(np, gz, out=np.full(shape[1], np.nan, F))
    for threads in (1, 2, 3):
        if shape[1] > 1:
            got, want = both(lambda: bias_grad_with(threads))
        else:
            got = want = bias_grad_with(threads)
        assert_same_bits(got, want, f"{shape} with {threads} threads")
        assert_same_bits(got, gz.sum(axis=0), f"{shape} with {threads} threads")


def _xent_forward_kernel(z, y, sparse, w):
    """The forward as the GPU runs it (kernel + float64 row sum) with CPU kernels on; the twin with them off
    (CPU training runs the twin: glibc's expf is not NumPy's exp)."""
    if not cuda.cpu_kernels():
        return kernels.softmax_xent_forward(np, z, y, sparse, w)
    rows, cols = z.shape
    probs, row_loss = np.empty_like(z), np.empty(rows, F)
    y_arg, labels = (cuda.NULL, y.astype(np.int64)) if sparse else (y, cuda.NULL)
    assert softmax_xent.SOURCE.launch("softmax_xent_fwd", rows, (z, y_arg, labels, probs, row_loss, cuda.i64(rows),
                                                                 cuda.i64(cols), cuda.i32(sparse)))
    return softmax_xent.sum_rows(np, row_loss, w, rows), probs


@needs_compiler
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_xent_kernels_match_the_twins_on_the_cpu(both, sparse, weighted):
    """Forward within XENT_ULP (glibc's expf/logf are not NumPy's); backward and the float64 row sum bit
    for bit; out-of-range labels give NaN losses and NaN rows on both sides."""
    for bad in ((False, True) if sparse else (False,)):
        z, labels, w = xent_inputs(bad=bad)
        y = labels if sparse else np.eye(COLS, dtype=F)[labels]
        sw = w if weighted else None
        (loss_k, probs_k), (loss_t, probs_t) = both(lambda: _xent_forward_kernel(z, y, sparse, sw))
        assert ulp_distance(probs_k, probs_t) <= XENT_ULP
        assert np.isnan(loss_k) == np.isnan(loss_t) == bad
        if not bad:
            assert ulp_distance(loss_k, loss_t) <= XENT_ULP
        g = np.asarray(0.75, F)
        got, want = both(lambda: kernels.softmax_xent_backward(np, probs_t, y, g, sparse, sw))
        assert_same_bits(got, want, "softmax-xent backward")
    v = np.random.default_rng(5).standard_normal(1000).astype(F)
    for weights in (None, w[:1] * np.ones(1000, F)):
        got, want = both(lambda: softmax_xent.sum_rows(np, v, weights, 37))
        assert_same_bits(got, want, "sum_rows")


@needs_compiler
def test_the_guard_and_adams_step_size_kernels_on_the_cpu(monkeypatch):
    """The two one-thread kernels (only thread 0 acts: blockIdx.x is the OpenMP thread) give the twins'
    values: the guard flags the first non-finite loss; alpha_t in double, rounded once."""
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()                    # the mode is read at the next launch
    halt, bad_step, bad_loss = np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, F)
    counter = np.array([7], np.int64)
    for loss in (1.5, np.inf, np.nan):
        args = (np.asarray(loss, F), halt, bad_step, bad_loss, cuda.i64(0), counter)
        assert kernels.guard.SOURCE.launch("guard_loss", 1 << 20, args)          # many threads, one acts
    assert (halt[0], bad_step[0], bad_loss[0], counter[0]) == (1, 8, np.inf, 10)
    t, alpha = np.array([4], np.int64), np.zeros(1, F)
    assert adam.SOURCE.launch("adam_step_size", 1 << 20, (t, alpha, np.float64(1e-3), np.float64(0.9),
                                                          np.float64(0.999)))
    assert t[0] == 5 and alpha[0] == F(adam.step_size(1e-3, 0.9, 0.999, 5))


def same_weights_with_and_without_the_cpu_kernels(both, network, x, y, batch_size, seed):
    """Train ``network()`` (a list of layers) two epochs of RMSprop with the kernels, then with the twins:
    the same weights, bit for bit."""
    def train():
        gpunet.random.seed(seed)
        net = gpunet.models.Sequential(network())
        net.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
        net.fit(x, y, batch_size=batch_size, epochs=2, verbose=0)
        return [w.copy() for w in net.get_weights()]
    got, want = both(train)
    for a, b in zip(got, want):
        assert_same_bits(a, b, "weights after training")


@needs_compiler
def test_training_gives_the_same_weights_with_and_without_the_cpu_kernels(both):
    """The chapter's network, two epochs of RMSprop through fit: the same weights, bit for bit."""
    r, L = np.random.default_rng(0), gpunet.layers
    same_weights_with_and_without_the_cpu_kernels(
        both, lambda: [L.Rescaling(1 / 255, input_shape=(784,)), L.Dense(64, activation="relu"),
                       L.Dense(10, activation="softmax")],
        r.integers(0, 256, (256, 784), dtype=np.uint8), r.integers(0, 10, 256), 64, 3)


CONV_CASES = [   # (n, H, W, C, window, strides, padding): the convnet's layers, 'same', strides, C = 1, odd sizes
    (3, 28, 28, 1, (3, 3), (1, 1), "valid"), (2, 13, 13, 32, (3, 3), (1, 1), "valid"),
    (2, 26, 26, 8, (2, 2), (2, 2), "valid"), (2, 11, 11, 16, (2, 2), (2, 2), "valid"),
    (2, 7, 9, 5, (3, 3), (2, 2), "same"), (1, 6, 5, 3, (3, 2), (1, 2), "same"),
    (2, 5, 6, 7, (4, 4), (3, 1), "same"), (1, 4, 4, 2, (2, 3), (1, 1), "valid")]


def conv_values(shape, seed):
    """Normal values with ties (small integers), -0, +-inf, NaN and IEEE subnormals mixed in."""
    r = np.random.default_rng(seed)
    v = r.standard_normal(shape).astype(F)
    pick = r.random(shape)
    v = np.where(pick < 0.25, r.integers(-2, 3, shape).astype(F), v)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e-45], F)
    return np.where(pick > 0.95, specials[r.integers(0, specials.size, shape)], v).astype(F)


@needs_compiler
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-{c[4]}-{c[5]}-{c[6]}")
def test_conv_kernels_give_the_twins_bits_on_the_cpu(both, launches, case):
    """im2col, col2im and max/average pooling forward and backward (conv.cu's ``_px`` kernels) against
    gpunet/kernels/conv.py's NumPy forms: the same bits, the same max-pool argmax (ties, NaN, subnormals)."""
    from gpunet.kernels import conv
    n, H, W, C, (kh, kw), (sh, sw), padding = case
    oh, ow, pt, pl = conv.conv_geometry(H, W, kh, kw, sh, sw, padding)
    window = (kh, kw, sh, sw, pt, pl, oh, ow)
    x, gy = conv_values((n, H, W, C), 1), conv_values((n, oh, ow, C), 2)
    g_cols = conv_values((n * oh * ow, kh * kw * C), 3)
    arg = conv.max_pool2d(np, np.nan_to_num(x), *window)[1]      # a valid argmax for the backward
    runs = {"im2col": lambda: conv.im2col(np, x, *window),
            "col2im": lambda: conv.col2im(np, g_cols, n, H, W, C, *window),
            "max_pool2d": lambda: conv.max_pool2d(np, x, *window),
            "max_pool2d_backward": lambda: conv.max_pool2d_backward(np, gy, arg, n, H, W, C, *window),
            "max_pool2d_backward with the ReLU gate": lambda: conv.max_pool2d_backward(np, gy, arg, n, H, W, C,
                                                                                      *window, gate=x),
            "avg_pool2d": lambda: conv.avg_pool2d(np, x, *window),
            "avg_pool2d_backward": lambda: conv.avg_pool2d_backward(np, gy, n, H, W, C, *window)}
    for what, run in runs.items():
        got, want = both(run)
        if what == "max_pool2d":
            assert np.array_equal(got[1], want[1]), f"max_pool2d argmax {case}"
            got, want = got[0], want[0]
        assert_same_bits(got, want, f"{what} {case}")


@needs_compiler
def test_the_conv_kernels_run_and_keep_ieee_subnormals(launches, monkeypatch):
    """The ``_px`` kernels are what runs on the CPU, and a subnormal is not a zero there: it beats +0 in a
    max-pool window (CuPy's -ftz=true flushes; the CPU build, like NumPy, does not)."""
    from gpunet.kernels import conv
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()                    # the mode is read at the next launch
    x = np.array([0.0, 1e-45, -0.0, -1e-40], F).reshape(1, 2, 2, 1)
    y, arg = conv.max_pool2d(np, x, 2, 2, 2, 2, 0, 0, 1, 1)
    assert y.ravel().view(np.uint32)[0] == np.array(1e-45, F).view(np.uint32) and arg.ravel()[0] == 1
    conv.im2col(np, x, 2, 2, 1, 1, 0, 0, 1, 1)
    conv.avg_pool2d_backward(np, y, 1, 2, 2, 1, 2, 2, 2, 2, 0, 0, 1, 1)
    assert launches == ["max_pool_fwd_px", "im2col_px", "avg_pool_bwd_px"]


@needs_compiler
def test_a_convnet_trains_to_the_same_weights_with_and_without_the_cpu_kernels(both):
    """Conv2D/ReLU (bias and ReLU in one pass), max pooling (with the ReLU's backward), average pooling,
    Dense: two epochs, bit for bit."""
    r, L = np.random.default_rng(1), gpunet.layers
    same_weights_with_and_without_the_cpu_kernels(
        both, lambda: [L.Rescaling(1 / 255, input_shape=(12, 12, 1)), L.Conv2D(8, 3, activation="relu"),
                       L.MaxPooling2D(2), L.Conv2D(6, 3, activation="relu", padding="same"),
                       L.AveragePooling2D(2, padding="same"), L.Flatten(), L.Dense(16, activation="relu"),
                       L.Dense(10, activation="softmax")],
        r.integers(0, 256, (96, 12, 12, 1), dtype=np.uint8), r.integers(0, 10, 96), 32, 5)


# ------------------------------------------------------------------ the translation unit
def test_every_grid_stride_loop_becomes_an_omp_for_loop():
    for source in (dense.SOURCE, softmax_xent.SOURCE, sgd.SOURCE, rmsprop.SOURCE, adam.SOURCE):
        module = host.HostModule(source.path.name, source.code)
        text = host.translation_unit(source.code, module.kernels)
        loops = source.code.count("i += (long long)gridDim.x * blockDim.x")
        assert loops and text.count('_Pragma("omp for schedule(static)")') >= loops
        assert all(f'cpu_{k}(int gpunet_threads' in text for k in module.kernels)


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_loop_the_rewrite_does_not_match_still_visits_every_element_once(fresh_cache, threads, monkeypatch):
    """A grid-stride loop written another way stays a grid-stride loop over T one-thread blocks."""
    monkeypatch.setattr(host, "MIN_PER_THREAD", 1)
    host.set_threads(threads)
    code = textwrap.dedent("""
        extern "C" __global__ void count(int* hits, long long n) {
            for (long long i = threadIdx.x + blockDim.x * (long long)blockIdx.x; i < n; i += blockDim.x * gridDim.x)
                hits[i] += 1;
        }""")
    hits = np.zeros(1001, np.int32)
    host.HostModule("count.cu", code).launch("count", hits.size, (hits, cuda.i64(hits.size)))
    assert (hits == 1).all()


# ------------------------------------------------------------------ the build cache
@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder; thread count and fallback state restored afterwards."""
    monkeypatch.setenv("GPUNET_CPU_KERNELS_CACHE", str(tmp_path / "cache"))
    host.reset()
    yield tmp_path / "cache"
    host.reset()


def _libraries(folder):
    return sorted(p.name for p in folder.iterdir())


@needs_compiler
def test_concurrent_first_use_from_several_processes_builds_one_library(fresh_cache):
    """Four processes start at once on an empty cache: each builds to its own temporary file and renames it
    into place; all run the kernel, one library is left and no temporary file."""
    child = ("import logging, numpy as np, gpunet; from gpunet import optimizers; logging.basicConfig(level=20); "
             "w = gpunet.tensor(np.ones(4, np.float32), requires_grad=True); "
             "optimizers.SGD(0.5).apply([np.ones(4, np.float32)], [w]); print(w.numpy().tolist())")
    env = dict(os.environ, GPUNET_CPU_KERNELS="1", GPUNET_CPU_KERNELS_CACHE=str(fresh_cache))
    procs = [subprocess.Popen([sys.executable, "-c", child], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    assert {out.strip() for out, _ in results} == {"[0.5, 0.5, 0.5, 0.5]"}
    names = _libraries(fresh_cache)
    assert len(names) == 1 and names[0].endswith(".so") and host.valid_library(fresh_cache / names[0], host.TRAILER)
    assert any("compiled the CPU kernels of sgd.cu" in err for _, err in results)


def _damage(lib, data):
    """Replace ``lib`` by ``data`` (a new file: this process has the old one mapped)."""
    tmp = lib.with_name("damaged.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, lib)


@needs_compiler
def test_a_damaged_library_is_rebuilt(fresh_cache, caplog):
    caplog.set_level(logging.INFO, logger="gpunet.kernels")
    module = host.HostModule(sgd.SOURCE.path.name, sgd.SOURCE.code)
    module.library()
    assert "compiled the CPU kernels of sgd.cu" in caplog.text
    assert host.BUILD_SECONDS["sgd.cu"] < 10
    (lib,) = fresh_cache.iterdir()
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF                              # one flipped byte
    _damage(lib, bytes(data))
    assert not host.valid_library(lib, host.TRAILER)
    host.reset()
    w, g = np.ones(8, F), np.full(8, 2, F)
    host.HostModule(sgd.SOURCE.path.name, sgd.SOURCE.code).launch(
        "sgd_update", 8, (w, g, cuda.NULL, F(0.25), F(0), cuda.i32(0), cuda.i32(0), F(0), cuda.i64(8), cuda.NULL))
    assert (w == 0.5).all() and host.valid_library(lib, host.TRAILER)
    assert caplog.text.count("compiled the CPU kernels of sgd.cu") == 2
    _damage(lib, lib.read_bytes()[:100])                      # truncated: rebuilt too
    host.reset()
    host.HostModule(sgd.SOURCE.path.name, sgd.SOURCE.code).library()
    assert host.valid_library(lib, host.TRAILER)


# ------------------------------------------------------------------ fallback and control
@pytest.fixture
def no_compiler(fresh_cache, monkeypatch):
    """No C++ compiler on PATH; dense.py's source not built yet in this process."""
    monkeypatch.delenv("GPUNET_CXX", raising=False)
    monkeypatch.setenv("PATH", str(fresh_cache))
    monkeypatch.setattr(dense.SOURCE, "_host", None)
    assert host.compiler() is None


def test_without_a_compiler_the_twins_run_and_one_line_says_why(no_compiler, monkeypatch, capfd):
    monkeypatch.delenv("GPUNET_CPU_KERNELS", raising=False)
    host.reset()                    # the mode is read at the next launch
    z, b = np.array([[-1.0, 2.0]], F), np.array([0.5, 0.5], F)
    for _ in range(3):
        assert_same_bits(kernels.bias_act(np, z.copy(), b, "relu"), [[0.0, 2.5]])
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no C++ compiler" in err[0] and "GPUNET_CPU_KERNELS=0" in err[0], err
    assert not host.enabled() and not cuda.fused(np)


def test_a_failed_build_falls_back_and_forcing_the_kernels_raises(fresh_cache, monkeypatch, capfd):
    monkeypatch.setenv("GPUNET_CXX", str(fresh_cache / "not-a-compiler"))
    monkeypatch.setattr(dense.SOURCE, "_host", None)
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()                    # the mode is read at the next launch
    with pytest.raises(host.BuildError, match="GPUNET_CPU_KERNELS=1.*cannot run the C\\+\\+ compiler"):
        kernels.bias_act(np, np.ones((2, 2), F), None, "relu")
    monkeypatch.delenv("GPUNET_CPU_KERNELS")
    host.reset()                    # the mode is read at the next launch
    assert_same_bits(kernels.bias_act(np, -np.ones((2, 2), F), None, "relu"), np.zeros((2, 2), F))
    assert "the CPU kernels are off" in capfd.readouterr().err


def test_gpunet_cpu_kernels_0_never_builds(no_compiler, monkeypatch, capfd):
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    host.reset()                    # the mode is read at the next launch
    kernels.bias_act(np, np.ones((2, 2), F), None, "relu")
    assert dense.SOURCE._host is None and capfd.readouterr().err == ""


# ------------------------------------------------------------------ threads
def test_threads_follow_omp_num_threads_and_the_blas_limit(monkeypatch):
    """One thread unless OMP_NUM_THREADS asks for more; never more than the BLAS pool (threadpoolctl: a
    rank's share under fit(distributed=True)) or the CPUs."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    cpus = len(os.sched_getaffinity(0))
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        host.set_threads(None)
        assert host.threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "64")
        host.set_threads(None)
        blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert host.threads() == min([cpus, 64, *blas])
        host.set_threads(None)
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert host.threads() == 1
    finally:
        host.set_threads(None)


@needs_compiler
def test_the_thread_count_does_not_change_the_bits(monkeypatch):
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()                    # the mode is read at the next launch
    monkeypatch.setattr(host, "MIN_PER_THREAD", 1)
    results = []
    try:
        for n in (1, 2, 3):
            host.set_threads(n)
            results.append(run_optimizer(OPTIMIZERS["adam-amsgrad-decay"], gpunet.device("cpu"), n=1001))
    finally:
        host.set_threads(None)
    for other in results[1:]:
        for (w_a, _), (w_b, _) in zip(results[0], other):
            assert_same_bits(w_a, w_b, "weights")
