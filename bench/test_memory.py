"""Memory targets (issue #5), measured in fresh processes: ``python -m pytest bench/test_memory.py``.

* the example on its embedded sample (uint8 data): peak host RSS <= 150 MiB;
* uint8 data takes a quarter of float32's host memory during fit;
* on a GPU: the device pool after fit, and that ``gpunet.free_memory()`` returns it.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

import gpunet

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def peak_rss_mib(code):
    out = subprocess.run([sys.executable, "-c", code + "\nimport resource\n"
                          "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr
    return float(re.search(r"PEAK ([0-9.]+)", out.stdout).group(1))


def test_example_peak_host_memory(benchmark):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "mnist.py"), "--dataset", "mnist-sample",
                          "--verbose", "0", "--memory"], capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr
    peak = float(re.search(r"peak host memory: (\d+) MiB", out.stdout).group(1))
    benchmark.extra_info["peak_rss_mib"] = peak
    benchmark.pedantic(lambda: None, rounds=1)
    assert peak <= 150, f"the example peaked at {peak} MiB of host memory (target <= 150 MiB)"


FIT = """
import numpy as np, gpunet
from gpunet import layers, models
from gpunet.utils import to_categorical
x = np.random.default_rng(0).integers(0, 256, (60000, 784), dtype=np.uint8)
{convert}
y = to_categorical(np.arange(60000) % 10)
net = models.Sequential([layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(512, activation='relu'),
                         layers.Dense(10, activation='softmax')])
net.compile(optimizer='rmsprop', loss='categorical_crossentropy', metrics=['accuracy'])
net.fit(x, y, epochs=1, batch_size=128, verbose=0, steps_per_epoch=20)
"""


def test_uint8_data_saves_host_memory(benchmark):
    """60,000 MNIST-shaped images: 45 MiB as uint8, 180 MiB more as float32; fit copies neither."""
    data_only = peak_rss_mib(FIT.split("net =")[0].format(convert=""))
    u8 = peak_rss_mib(FIT.format(convert=""))
    f32 = peak_rss_mib(FIT.format(convert="x = x.astype('float32')"))
    benchmark.extra_info.update(data_only_mib=data_only, uint8_peak_mib=u8, float32_peak_mib=f32)
    benchmark.pedantic(lambda: None, rounds=1)
    assert u8 - data_only < 45, (data_only, u8)       # model, slots, buffers: less than one copy of the data
    assert f32 - data_only >= 0.9 * 180, (data_only, f32)


def test_device_pool_after_fit_and_release(benchmark):
    if not gpunet.gpu_available():
        pytest.skip("needs a CUDA GPU")
    code = FIT.replace("net = models.Sequential(", "net = models.Sequential(device='gpu', layers=").format(
        convert="") + ("\nused = gpunet.memory_info()\ngpunet.free_memory()\nafter = gpunet.memory_info()\n"
                       "print('POOL', used['used_bytes'], used['total_bytes'], after['total_bytes'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr
    used, held, after = map(int, re.search(r"POOL (\d+) (\d+) (\d+)", out.stdout).groups())
    benchmark.extra_info.update(pool_used_mib=used / 2**20, pool_held_mib=held / 2**20,
                                pool_after_free_mib=after / 2**20)
    benchmark.pedantic(lambda: None, rounds=1)
    assert used >= 45 * 2**20          # at least the resident uint8 dataset
    assert after <= used               # free_memory() hands cached blocks back
