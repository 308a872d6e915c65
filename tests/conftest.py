"""Shared fixtures: every array test runs once per available backend."""
import numpy as np
import pytest

import gpunet

BACKENDS = ["numpy", "cupy"]


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
