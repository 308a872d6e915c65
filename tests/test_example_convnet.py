"""examples/mnist_convnet.py, the book's convnet, run end to end as a user would (subprocess, no network).

The flags, checks and messages it shares with examples/mnist.py are tested in test_example.py; here:
that it trains the book's network, that its checkpoints continue, and that its own checks (the
--resume network's image shape) and the shared ones answer with one line and the documented status.
"""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from gpunet import layers, models

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist_convnet.py"
USAGE_LINE = re.compile(r"mnist_convnet\.py: error: [^\n]+\n\Z")     # exactly one line, nothing before or after

# The book's summary of this network (Deep Learning with Python, section 5.1; Keras 3 prints the same shapes
# and counts), after our Rescaling layer, which has no weights.
BOOK_SUMMARY = [("Conv2D", "(None, 26, 26, 32)", "320"), ("MaxPooling2D", "(None, 13, 13, 32)", "0"),
                ("Conv2D", "(None, 11, 11, 64)", "18,496"), ("MaxPooling2D", "(None, 5, 5, 64)", "0"),
                ("Conv2D", "(None, 3, 3, 64)", "36,928"), ("Flatten", "(None, 576)", "0"),
                ("Dense", "(None, 64)", "36,928"), ("Dense", "(None, 10)", "650")]

# One epoch of the embedded 8,000 digits, batch 64: PyTorch 2.13 (CPU) training this network with Keras'
# Glorot-uniform initialisation and RMSprop(1e-3, rho 0.9) reached 0.897, 0.933, 0.911, 0.935, 0.922 and
# 0.925 test accuracy over six seeds; chance is 0.10. Below 0.85 something is broken, not unlucky.
ONE_EPOCH_FLOOR = 0.85


def env_for(tmp_path):
    """One BLAS thread: an epoch takes ~5 s on one core, while OpenBLAS's threads on small products slow
    it several-fold when the cores are busy (other tests, other jobs)."""
    return dict(os.environ, GPUNET_DATA=str(tmp_path / "cache"), PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1",
                OMP_NUM_THREADS="1")


def run(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, cwd=cwd,
                          env=env_for(cwd), timeout=timeout)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """One epoch on the embedded sample, saving a checkpoint: (completed process, folder)."""
    work = tmp_path_factory.mktemp("convnet")
    out = run("--dataset", "mnist-sample", "--epochs", "1", "--verbose", "2", "--save", "ck.npz", "--memory",
              cwd=work)
    return out, work


def test_one_epoch_on_the_embedded_sample_trains_the_book_convnet(one_epoch):
    out, work = one_epoch
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Training on the embedded sample of 10,000 real MNIST digits" in text
    rows = re.findall(r"\((\w+)\)\s*(\(None(?:, \d+)+\))\s+([\d,]+)\n", text)
    assert rows == [("Rescaling", "(None, 28, 28, 1)", "0")] + BOOK_SUMMARY, text
    assert "Total params: 93,322" in text and "Epoch 1/1" in text and "125/125" in text     # 8,000 / 64
    acc = float(re.search(r"test_acc: ([0-9.]+)", text).group(1))
    assert acc >= ONE_EPOCH_FLOOR, text
    assert re.search(r"^time per epoch: median [0-9.]+ s", text, re.M), text
    assert re.search(r"^peak host memory: \d+ MiB$", text, re.M), text
    assert models.load_model(work / "ck.npz", restore_rng=False).epochs_completed == 1


def test_resume_with_the_same_epochs_only_evaluates_the_saved_network(one_epoch):
    out, work = one_epoch
    assert out.returncode == 0, out.stderr
    again = run("--dataset", "mnist-sample", "--resume", "ck.npz", "--epochs", "1", "--verbose", "0", cwd=work)
    assert again.returncode == 0, again.stderr
    assert "Resuming from ck.npz after epoch 1." in again.stdout
    first, second = (re.search(r"test_loss: \S+ - test_acc: \S+", o).group(0) for o in (out.stdout, again.stdout))
    assert second == first                 # the same weights, evaluated on the same test images


BAD_FLAGS = [   # (flags, parts of the one stderr line)
    (["--epochs", "0"], ["argument --epochs: got 0; the number of epochs must be an integer, 1 or more"]),
    (["--batch-size", "x"], ["argument --batch-size: got 'x'; the batch size must be an integer"]),
    (["--dataset", "cifar10"], ["argument --dataset: invalid choice: 'cifar10'"]),
    (["--save", "nofolder/ck.npz"], ["--save nofolder/ck.npz: the folder nofolder does not exist"]),
    (["--resume", "dense.npz"], ["--resume dense.npz: its model maps inputs of shape (784,) to (10,), not MNIST's "
                                 "(28, 28, 1) images to 10 classes"]),
]


def test_bad_flags_are_one_line_and_status_2_before_any_data(tmp_path):
    dense = models.Sequential([layers.Dense(10, activation="softmax", input_shape=(784,))])     # chapter 2's
    dense.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    dense.save(tmp_path / "dense.npz")
    before = sorted(tmp_path.iterdir())
    procs = [subprocess.Popen([sys.executable, str(EXAMPLE), "--dataset", "mnist-sample", *args], cwd=tmp_path,
                              env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args, _ in BAD_FLAGS]
    for (args, parts), proc in zip(BAD_FLAGS, procs):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, stderr)
        assert USAGE_LINE.fullmatch(stderr), (args, stderr)
        assert all(part in stderr for part in parts), (args, stderr)
        assert stdout == "", args                  # no "Training on ...": the data was never loaded
    assert sorted(tmp_path.iterdir()) == before    # nothing written


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_during_training_is_one_line_and_status_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-u", str(EXAMPLE), "--dataset", "mnist-sample", "--epochs", "50",
                             "--verbose", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(tmp_path), cwd=tmp_path)
    for line in proc.stdout:
        if line.startswith("Epoch 1/50"):          # printed when the first epoch begins
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert re.fullmatch(r"mnist_convnet\.py: interrupted \(Ctrl-C\) during epoch 1; no checkpoint was saved "
                        r"\(--save FILE\.npz writes one after every epoch\)\n", stderr), stderr
