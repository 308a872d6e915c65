"""The main job, examples/mnist.py, run end to end as a user would (subprocess, no network)."""
import os
import pathlib
import re
import struct
import subprocess
import sys

import pytest

import gpunet
from conftest import REAL_GPU

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist.py"


def run(*args, tmp_path):
    env = dict(os.environ, GPUNET_DATA=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_one_epoch_on_the_embedded_sample_with_plot(tmp_path):
    png = tmp_path / "out.png"
    out = run("--dataset", "mnist-sample", "--epochs", "1", "--plot", str(png), "--verbose", "2", "--memory",
              tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Training on the embedded sample of 10,000 real MNIST digits" in text
    assert "Total params: 407,050" in text and "Epoch 1/1" in text and "time per epoch: median" in text
    acc = float(re.search(r"test_acc: ([0-9.]+)", text).group(1))
    assert acc >= 0.85, text
    assert re.search(r"^peak host memory: \d+ MiB$", text, re.M), text     # (the 150 MiB target: bench/)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 400 and height > 300


def test_auto_falls_back_to_the_sample_and_says_why(tmp_path, monkeypatch):
    # point the mirrors nowhere by running offline: the cache is empty and downloads fail
    code = ("import sys, runpy; from gpunet.datasets import mnist, _loader; import dataclasses; "
            "mnist.SPEC = dataclasses.replace(mnist.SPEC, mirrors=(('npz', 'http://127.0.0.1:9/mnist.npz'),)); "
            f"sys.argv = ['mnist.py', '--epochs', '0']; runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")
    env = dict(os.environ, GPUNET_DATA=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "because full MNIST is not in the cache and could not be downloaded" in out.stdout, out.stdout + out.stderr
    assert "127.0.0.1:9" not in out.stdout or "network error" in out.stdout


@pytest.mark.skipif(REAL_GPU, reason="this machine has a GPU")
def test_gpu_without_gpu_is_one_clear_line(tmp_path):            # the child process sees no (emulated) CuPy
    out = run("--device", "gpu", "--dataset", "mnist-sample", tmp_path=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert "gpunet[cuda12]" in out.stderr or "CUDA" in out.stderr


def test_save_then_resume_continues_where_it_stopped(tmp_path):
    ck = tmp_path / "ck.npz"
    first = run("--dataset", "mnist-sample", "--epochs", "1", "--verbose", "0", "--save", str(ck), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run("--dataset", "mnist-sample", "--epochs", "2", "--verbose", "2", "--resume", str(ck),
                 tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"Resuming from {ck} after epoch 1." in second.stdout
    assert "Epoch 2/2" in second.stdout and "Epoch 1/2" not in second.stdout
    ck.write_bytes(ck.read_bytes()[:1000])                  # a damaged checkpoint: one clear line, status 4
    bad = run("--dataset", "mnist-sample", "--resume", str(ck), tmp_path=tmp_path)
    assert bad.returncode == 4 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert "truncated or corrupt" in bad.stderr
