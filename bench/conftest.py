import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpunet  # noqa: E402


@pytest.fixture(params=["numpy", "cupy"])
def dev(request):
    if request.param == "cupy" and not gpunet.gpu_available():
        pytest.skip("cupy backend: no CUDA GPU with CuPy on this machine")
    return gpunet.device("cpu" if request.param == "numpy" else "gpu")


@pytest.fixture
def timed(benchmark, dev):
    """benchmark(fn) that synchronizes the device after each call and warms up first (CUDA kernels
    compile on first use, which must not be timed)."""
    def run(fn, rounds=20):
        def synced():
            out = fn()
            dev.synchronize()
            return out
        for _ in range(3):
            synced()
        return benchmark.pedantic(synced, rounds=rounds, iterations=1, warmup_rounds=1)
    return run
