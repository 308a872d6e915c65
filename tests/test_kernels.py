"""Fused kernels: the NumPy twins against closed forms, the CUDA kernels against their twins
(on a GPU), and every CUDA source compiled for sm_80 and sm_90 on every machine."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import gpunet
from gpunet import kernels, optimizers
from gpunet.kernels import conv_cuda, cuda, host

rng = np.random.default_rng(5)
F = np.float32


def _compiler():
    return shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and "/usr/local/cuda/bin/nvcc")


def test_every_cu_file_is_a_registered_source():
    """Each .cu file in the package is loaded by exactly one module (so the tests below see them all)."""
    on_disk = sorted(p.relative_to(gpunet.__path__[0]).as_posix()
                     for p in __import__("pathlib").Path(gpunet.__path__[0]).rglob("*.cu"))
    registered = sorted(s.path.relative_to(gpunet.__path__[0]).as_posix() for s in cuda.SOURCES)
    assert registered == on_disk and len(on_disk) >= 6


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_sources_compile(tmp_path, arch):
    nvcc = _compiler()
    if not nvcc:
        if os.environ.get("GPUNET_REQUIRE_CUDA_COMPILER"):
            pytest.fail("GPUNET_REQUIRE_CUDA_COMPILER is set but nvcc was not found")
        pytest.skip("nvcc not found: CUDA sources not compile-checked here")
    for source in cuda.SOURCES:
        out = subprocess.run([nvcc, "-ptx", f"-arch={arch}", *cuda.COMPILE_OPTIONS, "-Werror", "all-warnings",
                              str(source.path), "-o", str(tmp_path / "k.ptx")], capture_output=True, text=True)
        assert out.returncode == 0, f"{source.path.name}: {out.stderr}"
        ptx = (tmp_path / "k.ptx").read_text()
        for name in source.kernel_names:
            assert f".entry {name}(" in ptx, f"kernel {name} missing from the compiled {source.path.name}"


def test_numpy_bias_act_twin():
    z, b = rng.standard_normal((6, 5)).astype(F), rng.standard_normal(5).astype(F)
    np.testing.assert_allclose(kernels.bias_act(np, z.copy(), b, "relu"), np.maximum(z + b, 0))
    np.testing.assert_allclose(kernels.bias_act(np, z.copy(), None, None), z)
    np.testing.assert_allclose(kernels.bias_act(np, z, None, "relu", out=np.empty_like(z)), np.maximum(z, 0))
    y = np.maximum(z, 0)
    g = rng.standard_normal(z.shape).astype(F)
    np.testing.assert_array_equal(kernels.act_backward(np, g, y, "relu"), np.where(y > 0, g, 0))


def _closed_form_optimizer_step(name, w, g, state, **h):
    """One step of the Keras formulas in float64, written independently of gpunet (``decay``: Keras'
    decoupled weight decay, ``w -= w * weight_decay * lr``, before the update)."""
    w, g = w.astype(np.float64), g.astype(np.float64)
    w = w - w * h.get("decay", 0.0)
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
        vhat = np.maximum(state["vhat"], v) if h.get("amsgrad") else v
        alpha = h["lr"] * np.sqrt(1 - h["b2"] ** t) / (1 - h["b1"] ** t)
        return w - alpha * m / (np.sqrt(vhat) + h["eps"]), {"m": m, "v": v, "t": t, "vhat": vhat}


def _optimizer(name, **h):
    if name == "sgd":
        return optimizers.SGD(h["lr"], momentum=h["mu"], nesterov=h["nesterov"])
    if name == "rmsprop":
        return optimizers.RMSprop(h["lr"], rho=h["rho"], epsilon=h["eps"])
    opt = optimizers.Adam(h["lr"], beta_1=h["b1"], beta_2=h["b2"], epsilon=h["eps"], amsgrad=h.get("amsgrad", False))
    opt.iterations = 1          # the first step's alpha_t
    return opt


def _run(xp, name, w, g, slots=None, **h):
    """One update of ``w`` by the optimizer's CPU twin (NumPy) or its CUDA kernel (CuPy); ``slots``: host
    arrays to start the slots from (zeros by default)."""
    w = xp.asarray(w).copy()
    g = xp.asarray(g)
    opt = _optimizer(name, **h)
    slots = {k: xp.asarray(slots[k]).copy() if slots else xp.zeros_like(w) for k in opt.slot_names}
    decay = h.get("decay", 0.0)
    if cuda.is_gpu(xp):
        opt.update_core_gpu(g, w, slots, None, decay=decay)
    else:
        opt.update_core_cpu(xp, g, w, slots, np.empty_like(w), decay=decay)
    return w


OPT = [("sgd", dict(lr=0.1, mu=0.9, nesterov=False)), ("sgd", dict(lr=0.1, mu=0.9, nesterov=True)),
       ("sgd", dict(lr=0.1, mu=0.0, nesterov=False, decay=0.01)),
       ("sgd", dict(lr=0.1, mu=0.9, nesterov=True, decay=0.004)),
       ("rmsprop", dict(lr=1e-3, rho=0.9, eps=1e-7)), ("rmsprop", dict(lr=1e-3, rho=0.9, eps=1e-7, decay=4e-6)),
       ("adam", dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-7)),
       ("adam", dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, decay=4e-6)),
       ("adam", dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, amsgrad=True, decay=4e-3))]


@pytest.mark.parametrize("name,h", OPT)
def test_numpy_optimizer_twins_match_closed_form(name, h):
    w, g = rng.standard_normal(50).astype(F), rng.standard_normal(50).astype(F)
    state = {"m": 0.0, "v": 0.0, "t": 0, "vhat": 0.0}
    want, _ = _closed_form_optimizer_step(name, w, g, state, **h)
    np.testing.assert_allclose(_run(np, name, w, g, **h), want, rtol=1e-5, atol=1e-7)


def test_amsgrad_twin_keeps_the_largest_velocity():
    """From a v_hat above the new v, AMSGrad steps with v_hat (and keeps it); below, with v."""
    h = dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, amsgrad=True)
    w, g = rng.standard_normal(50).astype(F), rng.standard_normal(50).astype(F)
    vhat = np.where(np.arange(50) % 2, 1.0, 0.0).astype(F)
    slots = {"momentum": np.zeros(50, F), "velocity": np.zeros(50, F), "velocity_hat": vhat}
    want, _ = _closed_form_optimizer_step("adam", w, g, {"m": 0.0, "v": 0.0, "t": 0, "vhat": vhat}, **h)
    np.testing.assert_allclose(_run(np, "adam", w, g, slots=slots, **h), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,h", OPT)
def test_cuda_optimizer_kernels_match_twins(gpu_dev, name, h):
    dev = gpu_dev
    w, g = rng.standard_normal(1000).astype(F), rng.standard_normal(1000).astype(F)
    slots = None
    if h.get("amsgrad"):
        slots = {"momentum": np.zeros(1000, F), "velocity": np.zeros(1000, F),
                 "velocity_hat": np.where(np.arange(1000) % 2, 1.0, 0.0).astype(F)}
    np.testing.assert_allclose(dev.to_host(_run(dev.xp, name, w, g, slots=slots, **h)),
                               _run(np, name, w, g, slots=slots, **h), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_softmax_xent_and_dense_match_twins(gpu_dev, sparse):
    dev = gpu_dev
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
    np.testing.assert_allclose(dev.to_host(kernels.bias_act(xp, xp.asarray(z), xp.asarray(b), "relu")),
                               kernels.bias_act(np, z.copy(), b, "relu"), rtol=1e-6)


def test_guard_loss_flags_the_first_non_finite_loss_and_halts_updates(dev):
    """The loss guard and the optimizers' halt flag (kernel and NumPy twin alike)."""
    xp = dev.xp
    halt, bad, value = xp.zeros(1, np.int32), xp.full(1, -1, np.int64), xp.zeros(1, np.float32)
    for step, loss in [(3, 1.5), (4, np.inf), (5, np.nan)]:
        kernels.guard_loss(xp, xp.asarray(np.float32(loss)), halt, bad, value, step)
    assert (int(halt[0]), int(bad[0]), float(value[0])) == (1, 4, np.inf)
    w = gpunet.tensor(np.ones(10, F), device=dev, requires_grad=True)
    g = xp.full(10, 0.5, F)
    opts = [optimizers.SGD(0.1), optimizers.RMSprop(1e-3), optimizers.Adam(1e-3),
            optimizers.SGD(0.1, weight_decay=0.5, clipnorm=0.1), optimizers.RMSprop(1e-3, weight_decay=0.5),
            optimizers.Adam(1e-3, weight_decay=0.5, amsgrad=True, global_clipnorm=1.0)]
    for opt in opts:
        opt.apply([g], [w], halt=halt)
    np.testing.assert_array_equal(w.numpy(), np.ones(10, F))       # weight decay waits for the flag too
    for opt in opts:
        for slot in opt.slots_of(w).values():
            np.testing.assert_array_equal(dev.to_host(slot), np.zeros(10, F))
    halt[...] = 0
    opts[0].apply([g], [w], halt=halt)
    np.testing.assert_allclose(w.numpy(), np.full(10, 0.95, F))
    opts[3].apply([g], [w], halt=halt)          # decay 0.5 * 0.1, then the gradient clipped to norm 0.1
    np.testing.assert_allclose(w.numpy(), np.full(10, 0.95 * 0.95 - 0.1 * 0.1 / np.sqrt(10), F), rtol=1e-6)


# ---------------------------------------------------------------- launch arguments vs CUDA signatures
def _signatures():
    """``{kernel: [param type, ...]}`` parsed from CUDA_SOURCE."""
    import re
    out = {}
    code = "\n".join(source.code for source in cuda.SOURCES)
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", code):
        out[name] = [" ".join(p.split()[:-1]).replace("const ", "").replace(" __restrict__", "").replace(" *", "*")
                     for p in params.split(",")]
    return out


_POINTEE = {"unsigned char*": np.uint8, "float*": np.float32, "int*": np.int32, "long long*": np.int64, "unsigned long long*": np.uint64}
_SCALAR = {"float": np.float32, "int": np.int32, "long long": np.int64, "double": np.float64}


def _check_args(name, args, sig):
    assert len(args) == len(sig[name]), f"{name}: {len(args)} arguments for {len(sig[name])} parameters"
    for i, (arg, typ) in enumerate(zip(args, sig[name])):
        where = f"{name} argument {i} ({typ})"
        if typ in _POINTEE:
            if isinstance(arg, np.ndarray):
                assert arg.dtype == _POINTEE[typ], f"{where}: array of {arg.dtype}"
                assert arg.flags.c_contiguous, f"{where}: not contiguous"
            else:
                assert arg is cuda.NULL, f"{where}: {arg!r} is neither an array nor NULL"
        else:
            assert type(arg) is _SCALAR[typ], f"{where}: {type(arg).__name__} instead of {_SCALAR[typ].__name__}"


def test_every_launch_passes_what_the_cuda_signature_expects(monkeypatch):
    """The GPU branches of the wrappers, run with NumPy arrays standing in for device arrays: each launch
    must pass exactly the kernel's parameters, with the right dtypes (the GPU itself is not needed)."""
    sig = _signatures()
    assert set(sig) == {name for source in cuda.SOURCES for name in source.kernel_names}
    launched, calls = [], []

    def fake_launch(source, name, n, args):
        assert name in source.kernel_names, f"{name} launched from {source.path.name}"
        _check_args(name, args, sig)
        launched.append(name)
        calls.append((name, args))
        return True

    monkeypatch.setattr(cuda, "is_gpu", lambda xp: True)
    monkeypatch.setattr(cuda.Source, "launch", fake_launch)
    z, b = np.zeros((4, 3), F), np.zeros(3, F)
    y1h, labels = np.zeros((4, 3), F), np.arange(4) % 3
    w, g = np.zeros(6, F), np.zeros(6, F)
    halt, bad, val = np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, F)
    kernels.bias_act(np, z, b, "relu")
    kernels.bias_act(np, z, None, None)
    kernels.bias_act(np, z, None, "relu", out=np.empty_like(z))
    kernels.act_backward(np, z, z, "relu")
    kernels.act_backward(np, z, z, "relu", out=np.empty_like(z))
    kernels.act_backward(np, np.asfortranarray(z), z, "relu")       # an F-ordered gradient: copied, written in C order
    for sparse, y in ((False, y1h), (True, labels)):
        loss, probs = kernels.softmax_xent_forward(np, z, y, sparse)
        kernels.softmax_xent_backward(np, probs, y, np.ones((), F), sparse)
        kernels.softmax_xent_backward(np, probs, y, np.ones((), F), sparse, np.ones(4, F))   # sample weights
    kernels.guard_loss(np, np.zeros((), F), halt, bad, val, 7)
    kernels.dropout_mask(np, np.zeros(2, np.uint64), (4, 3), 0.5, x=z, y=np.empty_like(z))     # y in the same pass
    kernels.dropout_mask(np, np.zeros(2, np.uint64), (4, 1), 0.5, 2, 8)                       # the mask only
    kernels.gemm.matmul(np, z, z.T)                                                            # capture-safe product
    kernels.guard_loss(np, np.zeros((), F), halt, bad, val, np.zeros(1, np.int64))     # a device step counter
    kernels.dense.bias_grad(np, z)
    kernels.dense.bias_grad(np, z, out=np.empty(3, F))
    kernels.softmax_xent.sum_rows(np, np.ones(4, F), np.ones(4, F), 4, out=np.empty((), F))
    for h in (None, halt):
        for opt in (optimizers.SGD(0.1, momentum=0.9, nesterov=True), optimizers.SGD(0.1),
                    optimizers.RMSprop(), optimizers.RMSprop(centered=True, momentum=0.5, eps_inside_sqrt=False),
                    optimizers.Adam(), optimizers.Adam(amsgrad=True)):
            opt.iterations = 1
            for decay in (0.0, 4e-6):
                opt.update_core_gpu(g, w, {k: np.zeros(6, F) for k in opt.slot_names}, h, decay=decay)
    for opt in (optimizers.SGD(0.1, weight_decay=0.004), optimizers.RMSprop(weight_decay=0.004, clipnorm=1.0),
                optimizers.Adam(weight_decay=0.004, amsgrad=True)):        # through apply: decay and slots
        param = gpunet.tensor(np.ones(6, F), requires_grad=True)
        param.device = __import__("types").SimpleNamespace(is_gpu=True, xp=np, context=__import__("contextlib").nullcontext())     # a stand-in GPU
        opt.apply([np.ones(6, F)], [param], halt=halt)
    x4, window = np.zeros((2, 5, 4, 3), F), (3, 2, 2, 1, 1, 0, 3, 3)        # convolution and pooling

    def convolution_and_pooling():
        cols = conv_cuda.im2col(np, x4, *window)
        conv_cuda.col2im(np, cols, 2, 5, 4, 3, *window)
        y4, arg = conv_cuda.max_pool2d(np, x4, *window)
        conv_cuda.max_pool2d_backward(np, y4, arg, 2, 5, 4, 3, *window)
        conv_cuda.max_pool2d_backward(np, y4, arg, 2, 5, 4, 3, *window, gate=x4)     # with the ReLU gate
        conv_cuda.avg_pool2d(np, x4, *window)
        conv_cuda.avg_pool2d_backward(np, y4, 2, 5, 4, 3, *window)
    convolution_and_pooling()
    monkeypatch.setattr(cuda, "is_gpu", lambda xp: False)           # the kernels shaped for a CPU (host.py)
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()                    # the mode is read at the next launch
    kernels.bias_act(np, z, b, "relu")
    kernels.bias_act(np, z, None, None, out=np.empty_like(z))
    kernels.dense.bias_grad(np, z, out=np.empty(3, F))
    kernels.rescale.cast_scale(np.zeros((4, 3), np.uint8), np.empty((4, 3), F), 0.5, 1.0)    # CPU only
    for sparse, y in ((False, y1h), (True, labels.astype(np.int64))):                            # CPU only
        assert kernels.softmax_xent.argmax_hits(np, z, y, sparse, np.empty(4, F))
    convolution_and_pooling()
    monkeypatch.setattr(cuda, "is_gpu", lambda xp: True)
    assert set(launched) == set(sig)
    before = len(launched)          # strided views are not flat buffers: the twin runs instead of a kernel
    np.testing.assert_array_equal(kernels.bias_act(np, y1h.T, None, "relu", out=np.empty((3, 4), F)), y1h.T)
    np.testing.assert_array_equal(kernels.act_backward(np, y1h.T, y1h.T, "relu"), 0 * y1h.T)
    f_param = gpunet.tensor(np.ones((3, 2), F), requires_grad=True)
    f_param.data = np.asfortranarray(f_param.data)                 # an F-ordered weight: the twin updates it
    f_param.device = __import__("types").SimpleNamespace(is_gpu=True, xp=np, context=__import__("contextlib").nullcontext())
    optimizers.Adam().apply([np.ones((3, 2), F)], [f_param])
    assert len(launched) == before

    # the scalars are the twin's, computed on the host: float32(1 - beta) in double, the host's flags
    del calls[:]
    f32 = np.dtype("float32")
    for opt in (optimizers.SGD(0.1, momentum=0.9, nesterov=True), optimizers.SGD(0.1), optimizers.SGD(0.1, momentum=1e-46),
                optimizers.RMSprop(), optimizers.RMSprop(centered=True, momentum=0.5, eps_inside_sqrt=False),
                optimizers.Adam(beta_2=0.999)):
        opt.iterations = 3
        opt.update_core_gpu(g, w, {k: np.zeros(6, F) for k in opt.slot_names}, None)
    (_, sgd_n), (_, sgd_0), (_, sgd_tiny), (_, rms), (_, rms_c), (_, adam_step), (_, adam) = calls
    assert sgd_n[3:7] == (F(0.1), F(0.9), 1, 1) and sgd_0[2] is cuda.NULL and sgd_0[5] == 0
    assert sgd_tiny[4] == 0 and sgd_tiny[5] == 1            # momentum rounds to 0.0f, yet the slot is updated
    assert rms[5:12] == optimizers.RMSprop().constants(f32)[:7] and rms[12] == 1 and rms[10] > 0
    assert rms[6] == F(1 - 0.9) and rms[6] != F(1) - F(0.9)
    assert rms_c[3] is not cuda.NULL and rms_c[4] is not cuda.NULL and rms_c[12:14] == (0, 0)
    opt = optimizers.Adam(beta_2=0.999)
    opt.iterations = 3
    assert adam[5:8] == opt.constants(f32)[:3] and adam[6] == F(1 - 0.999) and adam[6] != F(1) - F(0.999)
    assert adam[8] is adam_step[1] and adam_step[0][0] == 2     # alpha_t of step 3, computed on the device
    assert adam_step[2:] == (0.001, 0.9, 0.999)                 # ... from constants only (the counter: 2 -> 3)


def test_a_source_compiles_once_per_gpu_and_looks_each_kernel_up_once(monkeypatch):
    """Source.launch with a stand-in for CuPy: one RawModule per GPU, one get_function per kernel and GPU,
    a grid that covers n (capped: the kernels are grid-stride loops)."""
    from types import SimpleNamespace
    modules, lookups, launches, current = [], [], [], [0]

    class RawModule:
        def __init__(self, code, options):
            modules.append((code, options))

        def get_function(self, name):
            lookups.append((current[0], name))
            return lambda grid, block, args: launches.append((name, grid, block, args))

    fake = SimpleNamespace(RawModule=RawModule, cuda=SimpleNamespace(runtime=SimpleNamespace(getDevice=lambda: current[0])))
    monkeypatch.setattr(gpunet.backend, "cupy_module", lambda: fake)
    monkeypatch.setattr(cuda, "SOURCES", [])
    source = cuda.Source(kernels.dense.__file__, "dense.cu")
    source.launch("relu_bwd", 1000, ("args",))
    source.launch("relu_bwd", 10 ** 10, ("args",))
    source.launch("bias_act_fwd", 1, ())
    current[0] = 1
    source.launch("relu_bwd", 0, ())
    assert len(modules) == 2 and modules[0] == (source.code, cuda.COMPILE_OPTIONS)
    assert lookups == [(0, "relu_bwd"), (0, "bias_act_fwd"), (1, "relu_bwd")]
    assert [(g, b) for _, g, b, _ in launches] == [((4,), (256,)), ((cuda.MAX_BLOCKS,), (256,)), ((1,), (256,)),
                                                  ((1,), (256,))]
    with pytest.raises(KeyError, match="dense.cu has no kernel 'nope'"):
        source.launch("nope", 1, ())
