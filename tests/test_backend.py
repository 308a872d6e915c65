"""The device shim: names, defaults, logical CPU devices, GPU errors, and import hygiene."""
import ast
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import gpunet
from conftest import without_cupy
from gpunet import backend

PKG = pathlib.Path(gpunet.__file__).parent


def test_device_names_and_identity():
    assert gpunet.device("cpu") is gpunet.device("cpu:0") is gpunet.device("CPU")
    assert gpunet.device("cpu:1") != gpunet.device("cpu")
    assert repr(gpunet.device("cpu:1")) == "Device('cpu:1')" and str(gpunet.device("cpu")) == "cpu"
    assert gpunet.device("cpu").xp is np and not gpunet.device("cpu").is_gpu
    with pytest.raises(ValueError, match="unknown device 'tpu'.*'cpu', 'cpu:N', 'gpu' or 'gpu:N'"):
        gpunet.device("tpu")
    with pytest.raises(ValueError, match="unknown device"):
        gpunet.device("gpu:x")


def test_default_device_layers(monkeypatch):
    assert gpunet.get_default_device() == gpunet.device("cpu")
    monkeypatch.setenv("GPUNET_DEVICE", "cpu:2")
    assert gpunet.get_default_device() == gpunet.device("cpu:2")
    try:
        gpunet.set_default_device("cpu:3")
        assert gpunet.tensor([1.0]).device == gpunet.device("cpu:3")
        with gpunet.device("cpu:1"):
            assert gpunet.tensor([1.0]).device == gpunet.device("cpu:1")
            with gpunet.use_device("cpu:4"):
                assert gpunet.get_default_device() == gpunet.device("cpu:4")
            assert gpunet.get_default_device() == gpunet.device("cpu:1")
        assert gpunet.get_default_device() == gpunet.device("cpu:3")
    finally:
        gpunet.set_default_device(None)
    assert gpunet.get_default_device() == gpunet.device("cpu:2")
    monkeypatch.setenv("GPUNET_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="GPUNET_DEVICE='nonsense'"):
        gpunet.get_default_device()


def test_ops_across_logical_devices_raise_mismatch():
    a = gpunet.tensor([1.0], device="cpu:0")
    b = gpunet.tensor([1.0], device="cpu:1")
    for op in (lambda: a + b, lambda: a * b, lambda: a @ b, lambda: gpunet.ops.concatenate([a, b]),
               lambda: gpunet.ops.where(a > 0, a, b)):
        with pytest.raises(gpunet.DeviceMismatchError, match=r"cpu and cpu:1.*\.to\("):
            op()
    np.testing.assert_array_equal((a + b.to("cpu")).numpy(), [2.0])


def test_to_moves_and_is_differentiable():
    a = gpunet.tensor([1.0, 2.0], device="cpu", requires_grad=True)
    with gpunet.GradientTape() as tape:
        b = a.to("cpu:1")
        y = (b * b).sum()
    assert b.device == gpunet.device("cpu:1")
    g = tape.gradient(y, a)
    assert g.device == gpunet.device("cpu") and np.allclose(g.numpy(), [2, 4])
    assert a.to("cpu") is a


def test_gpu_request_without_gpu_is_a_clear_error(monkeypatch):
    without_cupy(monkeypatch)
    assert gpunet.gpu_available() is False
    with pytest.raises(gpunet.DeviceUnavailableError, match=r"pip install 'gpunet\[cuda12\]'|no CUDA device"):
        gpunet.device("gpu")
    assert issubclass(gpunet.DeviceUnavailableError, RuntimeError)


def test_cupy_without_cuda_device_is_a_clear_error(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake)
    monkeypatch.setattr(backend, "_cache", {})
    with pytest.raises(gpunet.DeviceUnavailableError, match="no CUDA device can be used.*nvidia-smi"):
        gpunet.device("gpu:0")
    assert gpunet.gpu_available() is False


def test_gpu_index_out_of_range(monkeypatch):
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)))
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake)
    monkeypatch.setattr(backend, "_cache", {})
    with pytest.raises(gpunet.DeviceUnavailableError, match="'gpu:3'.*1 CUDA device.*gpu:0"):
        gpunet.device("gpu:3")


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            yield str(node.args[0].value).split(".")[0]


def test_only_the_shim_imports_numpy_or_cupy():
    offenders = {}
    for path in PKG.rglob("*.py"):
        if path.name == "backend.py" and path.parent == PKG:
            continue
        bad = {m for m in _imports(path) if m in ("numpy", "cupy", "cupyx")}
        if bad:
            offenders[str(path.relative_to(PKG))] = sorted(bad)
    assert offenders == {}, f"only gpunet/backend.py may import numpy/cupy; ask the device for xp: {offenders}"
    assert {"numpy", "cupy"} <= set(_imports(PKG / "backend.py"))


def test_import_is_cheap_and_never_touches_cupy():
    code = ("import sys, time; t = time.perf_counter(); import gpunet; dt = time.perf_counter() - t; "
            "from gpunet import models, layers, optimizers, losses, datasets; "
            "import gpunet.datasets.mnist; gpunet.tensor([1.0]) + 1; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; print(dt)")
    env = dict(os.environ, GPUNET_DEVICE="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=PKG.parent)
    assert out.returncode == 0, out.stderr


def test_memory_helpers_are_safe_without_cupy():
    gpunet.free_memory()
    info = gpunet.memory_info()
    assert set(info) == {"used_bytes", "total_bytes"}
