"""Fused kernels: the NumPy twins against closed forms, the CUDA kernels against their twins
(on a GPU), and the CUDA source compiled for sm_80 and sm_90 on every machine."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from gpunet import kernels

rng = np.random.default_rng(5)
F = np.float32


def _compiler():
    return shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and "/usr/local/cuda/bin/nvcc")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_source_compiles(tmp_path, arch):
    nvcc = _compiler()
    if not nvcc:
        if os.environ.get("GPUNET_REQUIRE_CUDA_COMPILER"):
            pytest.fail("GPUNET_REQUIRE_CUDA_COMPILER is set but nvcc was not found")
        pytest.skip("nvcc not found: CUDA sources not compile-checked here")
    src = tmp_path / "gpunet_kernels.cu"
    src.write_text(kernels.CUDA_SOURCE)
    out = subprocess.run([nvcc, "-ptx", f"-arch={arch}", "--std=c++14", "-Werror", "all-warnings", str(src),
                          "-o", str(tmp_path / "k.ptx")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in kernels.KERNEL_NAMES:
        assert f".entry {name}(" in ptx, f"kernel {name} missing from the compiled module"


def test_numpy_bias_act_twin():
    z, b = rng.standard_normal((6, 5)).astype(F), rng.standard_normal(5).astype(F)
    np.testing.assert_allclose(kernels.bias_act_forward(np, z.copy(), b, "relu"), np.maximum(z + b, 0))
    np.testing.assert_allclose(kernels.bias_act_forward(np, z.copy(), None, None), z)
    y = np.maximum(z, 0)
    g = rng.standard_normal(z.shape).astype(F)
    np.testing.assert_array_equal(kernels.act_backward(np, g, y, "relu"), np.where(y > 0, g, 0))


def _closed_form_optimizer_step(name, w, g, state, **h):
    """One step of the Keras formulas in float64, written independently of gpunet."""
    w, g = w.astype(np.float64), g.astype(np.float64)
    if name == "sgd":
        m = h["mu"] * state["m"] - h["lr"] * g
        return w + (h["mu"] * m - h["lr"] * g if h["nesterov"] else m), {"m": m}
    if name == "rmsprop":
        v = h["rho"] * state["v"] + (1 - h["rho"]) * g * g
        return w - h["lr"] * g / np.sqrt(v + h["eps"]), {"v": v}
    if name == "adam":
        t = state["t"] + 1
        m = state["m"] + (g - state["m"]) * (1 - h["b1"])
        v = state["v"] + (g * g - state["v"]) * (1 - h["b2"])
        alpha = h["lr"] * np.sqrt(1 - h["b2"] ** t) / (1 - h["b1"] ** t)
        return w - alpha * m / (np.sqrt(v) + h["eps"]), {"m": m, "v": v, "t": t}


def _run(xp, name, w, g, **h):
    w = xp.asarray(w).copy()
    g = xp.asarray(g)
    z = xp.zeros_like(w)
    if name == "sgd":
        kernels.sgd_update(xp, w, g, z.copy(), h["lr"], h["mu"], h["nesterov"])
    elif name == "rmsprop":
        kernels.rmsprop_update(xp, w, g, z.copy(), None, None, h["lr"], h["rho"], h["eps"], 0.0, True)
    else:
        alpha = h["lr"] * np.sqrt(1 - h["b2"]) / (1 - h["b1"])
        kernels.adam_update(xp, w, g, z.copy(), z.copy(), alpha, h["b1"], h["b2"], h["eps"])
    return w


OPT = [("sgd", dict(lr=0.1, mu=0.9, nesterov=False)), ("sgd", dict(lr=0.1, mu=0.9, nesterov=True)),
       ("rmsprop", dict(lr=1e-3, rho=0.9, eps=1e-7)), ("adam", dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-7))]


@pytest.mark.parametrize("name,h", OPT)
def test_numpy_optimizer_twins_match_closed_form(name, h):
    w, g = rng.standard_normal(50).astype(F), rng.standard_normal(50).astype(F)
    state = {"m": 0.0, "v": 0.0, "t": 0}
    want, _ = _closed_form_optimizer_step(name, w, g, state, **h)
    np.testing.assert_allclose(_run(np, name, w, g, **h), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,h", OPT)
def test_threaded_cpu_update_equals_single_thread(monkeypatch, name, h):
    """GPUNET_NUM_THREADS > 1 splits a large update over threads: the result must be bit-identical."""
    n = kernels.PARALLEL_MIN * 2 + 12345          # uneven split, large enough to be split
    w, g = rng.standard_normal(n).astype(F), rng.standard_normal(n).astype(F)
    monkeypatch.setattr(kernels, "WORKERS", 1)
    one = _run(np, name, w, g, **h)
    monkeypatch.setattr(kernels, "WORKERS", 3)
    three = _run(np, name, w, g, **h)
    np.testing.assert_array_equal(three, one)
    assert not np.array_equal(one, w)


def test_num_threads_env_is_validated(monkeypatch):
    monkeypatch.setenv("GPUNET_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="GPUNET_NUM_THREADS must be an integer"):
        kernels._read_workers()
    monkeypatch.setenv("GPUNET_NUM_THREADS", "2")
    assert kernels._read_workers() == 2


@pytest.mark.parametrize("name,h", OPT)
def test_cuda_optimizer_kernels_match_twins(dev, name, h):
    if not dev.is_gpu:
        pytest.skip("the CUDA kernel needs a GPU; its NumPy twin is tested above")
    w, g = rng.standard_normal(1000).astype(F), rng.standard_normal(1000).astype(F)
    np.testing.assert_allclose(dev.to_host(_run(dev.xp, name, w, g, **h)), _run(np, name, w, g, **h),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_softmax_xent_and_dense_match_twins(dev, sparse):
    if not dev.is_gpu:
        pytest.skip("the CUDA kernel needs a GPU; its NumPy twin is tested in test_ops")
    xp = dev.xp
    z = rng.standard_normal((37, 10)).astype(F) * 5
    lab = rng.integers(0, 10, 37)
    y = lab if sparse else np.eye(10, dtype=F)[lab]
    l_cpu, p_cpu = kernels.softmax_xent_forward(np, z, y, sparse)
    l_gpu, p_gpu = kernels.softmax_xent_forward(xp, xp.asarray(z), xp.asarray(y), sparse)
    np.testing.assert_allclose(float(l_gpu), float(l_cpu), rtol=1e-5)
    np.testing.assert_allclose(dev.to_host(p_gpu), p_cpu, rtol=1e-5, atol=1e-7)
    g = np.asarray(1.0, F)
    np.testing.assert_allclose(
        dev.to_host(kernels.softmax_xent_backward(xp, p_gpu, xp.asarray(y), xp.asarray(g), sparse)),
        kernels.softmax_xent_backward(np, p_cpu, y, g, sparse), rtol=1e-5, atol=1e-7)
    b = rng.standard_normal(10).astype(F)
    np.testing.assert_allclose(dev.to_host(kernels.bias_act_forward(xp, xp.asarray(z), xp.asarray(b), "relu")),
                               kernels.bias_act_forward(np, z.copy(), b, "relu"), rtol=1e-6)


def test_guard_loss_flags_the_first_non_finite_loss_and_halts_updates(dev):
    """The loss guard and the optimizer kernels' halt flag (kernel and NumPy twin alike)."""
    xp = dev.xp
    halt, bad, value = xp.zeros(1, np.int32), xp.full(1, -1, np.int64), xp.zeros(1, np.float32)
    for step, loss in [(3, 1.5), (4, np.inf), (5, np.nan)]:
        kernels.guard_loss(xp, xp.asarray(np.float32(loss)), halt, bad, value, step)
    assert (int(halt[0]), int(bad[0]), float(value[0])) == (1, 4, np.inf)
    w, g, z = xp.ones(10, F), xp.full(10, 0.5, F), xp.zeros(10, F)
    kernels.sgd_update(xp, w, g, None, 0.1, 0.0, False, halt=halt)
    kernels.rmsprop_update(xp, w, g, z, None, None, 1e-3, 0.9, 1e-7, 0.0, True, halt=halt)
    kernels.adam_update(xp, w, g, z, z.copy(), 1e-3, 0.9, 0.999, 1e-7, halt=halt)
    np.testing.assert_array_equal(dev.to_host(w), np.ones(10, F))
    np.testing.assert_array_equal(dev.to_host(z), np.zeros(10, F))
    halt[...] = 0
    kernels.sgd_update(xp, w, g, None, 0.1, 0.0, False, halt=halt)
    np.testing.assert_allclose(dev.to_host(w), np.full(10, 0.95, F))


# ---------------------------------------------------------------- launch arguments vs CUDA signatures
def _signatures():
    """``{kernel: [param type, ...]}`` parsed from CUDA_SOURCE."""
    import re
    out = {}
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", kernels.CUDA_SOURCE):
        out[name] = [" ".join(p.split()[:-1]).replace("const ", "").replace(" *", "*") for p in params.split(",")]
    return out


_POINTEE = {"float*": np.float32, "int*": np.int32, "long long*": np.int64}
_SCALAR = {"float": np.float32, "int": np.int32, "long long": np.int64}


def _check_args(name, args, sig):
    assert len(args) == len(sig[name]), f"{name}: {len(args)} arguments for {len(sig[name])} parameters"
    for i, (arg, typ) in enumerate(zip(args, sig[name])):
        where = f"{name} argument {i} ({typ})"
        if typ in _POINTEE:
            if isinstance(arg, np.ndarray):
                assert arg.dtype == _POINTEE[typ], f"{where}: array of {arg.dtype}"
                assert arg.flags.c_contiguous, f"{where}: not contiguous"
            else:
                assert arg is kernels.NULL, f"{where}: {arg!r} is neither an array nor NULL"
        else:
            assert type(arg) is _SCALAR[typ], f"{where}: {type(arg).__name__} instead of {_SCALAR[typ].__name__}"


def test_every_launch_passes_what_the_cuda_signature_expects(monkeypatch):
    """The GPU branches of the wrappers, run with NumPy arrays standing in for device arrays: each launch
    must pass exactly the kernel's parameters, with the right dtypes (the GPU itself is not needed)."""
    sig = _signatures()
    assert set(sig) == set(kernels.KERNEL_NAMES)
    launched = []

    def fake_launch(name, n, args):
        _check_args(name, args, sig)
        launched.append(name)

    def fake_kernel(name):
        return lambda grid, block, args: fake_launch(name, 0, args)

    monkeypatch.setattr(kernels, "_gpu", lambda xp: True)
    monkeypatch.setattr(kernels, "_launch", fake_launch)
    monkeypatch.setattr(kernels, "_kernel", fake_kernel)
    z, b = np.zeros((4, 3), F), np.zeros(3, F)
    y1h, labels = np.zeros((4, 3), F), np.arange(4) % 3
    w, g, s1, s2, s3 = (np.zeros(6, F) for _ in range(5))
    halt, bad, val = np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, F)
    kernels.bias_act_forward(np, z, b, "relu")
    kernels.bias_act_forward(np, z, None, None)
    kernels.act_backward(np, z, z, "relu")
    kernels.act_backward(np, z, z, "relu", out=np.empty_like(z))
    for sparse, y in ((False, y1h), (True, labels)):
        loss, probs = kernels.softmax_xent_forward(np, z, y, sparse)
        kernels.softmax_xent_backward(np, probs, y, np.ones((), F), sparse)
    kernels.guard_loss(np, np.zeros((), F), halt, bad, val, 7)
    for h in (None, halt):
        kernels.sgd_update(np, w, g, s1, 0.1, 0.9, True, halt=h)
        kernels.sgd_update(np, w, g, None, 0.1, 0.0, False, halt=h)
        kernels.rmsprop_update(np, w, g, s1, None, None, 1e-3, 0.9, 1e-7, 0.0, True, halt=h)
        kernels.rmsprop_update(np, w, g, s1, s2, s3, 1e-3, 0.9, 1e-7, 0.5, False, halt=h)
        kernels.adam_update(np, w, g, s1, s2, 1e-3, 0.9, 0.999, 1e-7, halt=h)
    assert set(launched) == set(kernels.KERNEL_NAMES)
