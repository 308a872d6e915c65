"""Shared fixtures: every array test runs once per backend — NumPy, and CuPy on a real GPU or, on a
machine without one, on the emulated CuPy of tests/emulated_gpu (GPUNET_EMULATED_CUPY=1 forces the
emulator, =0 turns it off)."""
import os
import pathlib
import sys

import numpy as np
import pytest

# The emulated CuPy's modules are no test files; --doctest-modules would import them by their CuPy
# names, which clash with a real CuPy's.
collect_ignore = ["emulated_gpu/cupy"]

EMULATOR = str(pathlib.Path(__file__).resolve().parent / "emulated_gpu")


def _real_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _use_emulator() -> bool:
    choice = os.environ.get("GPUNET_EMULATED_CUPY")
    if choice in ("0", "1"):
        return choice == "1"
    return not _real_gpu()


EMULATED = _use_emulator()
REAL_GPU = not EMULATED and _real_gpu()
if EMULATED:                     # `import cupy` finds the emulator here and in child processes
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupy_backends", "cupyx"))]:
        del sys.modules[name]
    sys.path.insert(0, EMULATOR)
    os.environ["PYTHONPATH"] = os.pathsep.join([EMULATOR, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ["GPUNET_EMULATED_CUPY"] = "1"

import gpunet  # noqa: E402

BACKENDS = ["numpy", "cupy-emulated" if EMULATED else "cupy"]


@pytest.fixture(autouse=True)
def _cpu_kernel_settings_read_afresh():
    """gpunet reads $GPUNET_CPU_KERNELS and $OMP_NUM_THREADS at its first CPU-kernel launch and keeps them:
    each test starts and ends (after monkeypatch's undo) reading them again."""
    from gpunet.kernels import host
    host.reset()
    yield
    host.reset()


def pytest_report_header(config):
    return f"cupy backend: {'emulated CuPy (' + EMULATOR + ')' if EMULATED else 'real CuPy where a GPU exists'}"


def _device_for(name):
    if name == "numpy":
        return gpunet.device("cpu")
    if not gpunet.gpu_available():
        pytest.skip("cupy backend: no CUDA GPU with CuPy on this machine")
    return gpunet.device("gpu")


@pytest.fixture(params=BACKENDS)
def dev(request):
    """A gpunet Device for each backend: 'cpu' (NumPy) always, 'gpu' (CuPy) where a CUDA GPU exists."""
    d = _device_for(request.param)
    with d:
        yield d


@pytest.fixture
def gpu_dev():
    """The CuPy backend's device only (a real GPU, or the emulated one): for kernel-versus-twin tests."""
    d = _device_for("cupy")
    with d:
        yield d


def without_cupy(monkeypatch):
    """Make this process look like a machine without CuPy (for the errors gpunet gives there)."""
    from gpunet import backend
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", "ModuleNotFoundError: No module named 'cupy'")
    monkeypatch.setattr(backend, "_cache", {k: v for k, v in backend._cache.items() if k[0] == "cpu"})


@pytest.fixture(autouse=True)
def _seeded():
    gpunet.random.seed(1234)
    yield


def to_host(x):
    """Host NumPy copy of a Tensor / NumPy / CuPy value."""
    if isinstance(x, gpunet.Tensor):
        return x.numpy()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)
