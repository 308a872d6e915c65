"""The main job, examples/mnist.py, run end to end as a user would (subprocess, no network)."""
import errno
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

import gpunet
from conftest import REAL_GPU
from gpunet import layers, models

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist.py"
USAGE_LINE = re.compile(r"mnist\.py: error: [^\n]+\n\Z")      # exactly one line, nothing before or after


def env_for(tmp_path):
    return dict(os.environ, GPUNET_DATA=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))


def run(*args, tmp_path, **kwargs):
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True,
                          env=env_for(tmp_path), timeout=300, **kwargs)


def run_patched(code, *args, tmp_path):
    """Run the example as __main__ after ``code`` (which patches gpunet in the child)."""
    main = f"import sys, runpy; sys.argv = ['mnist.py', *{list(args)!r}]; runpy.run_path({str(EXAMPLE)!r}, " \
           "run_name='__main__')"
    return subprocess.Popen([sys.executable, "-c", code + "\n" + main], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))


OFFLINE = ("import dataclasses; from gpunet.datasets import mnist\n"
           "mnist.SPEC = dataclasses.replace(mnist.SPEC, mirrors=(('npz', 'http://127.0.0.1:9/mnist.npz'),))")


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
    assert f"wrote {png}\n" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 400 and height > 300


def test_auto_falls_back_to_the_sample_and_says_why(tmp_path):
    # point the mirrors nowhere by running offline: the cache is empty and downloads fail
    proc = run_patched(OFFLINE, "--epochs", "1", "--verbose", "0", tmp_path=tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "because full MNIST is not in the cache and could not be downloaded" in stdout, stdout + stderr
    assert "127.0.0.1:9" not in stdout or "network error" in stdout


@pytest.mark.skipif(REAL_GPU, reason="this machine has a GPU")
def test_gpu_without_gpu_is_one_clear_line(tmp_path):            # the child process sees no (emulated) CuPy
    out = run("--device", "gpu", "--dataset", "mnist-sample", tmp_path=tmp_path)
    assert out.returncode == 2
    assert USAGE_LINE.fullmatch(out.stderr) and out.stderr.startswith("mnist.py: error: --device gpu: ")
    assert "gpunet[cuda12]" in out.stderr and "--device cpu" in out.stderr and out.stdout == ""


def test_save_then_resume_continues_where_it_stopped(tmp_path):
    ck = tmp_path / "ck.npz"
    first = run("--dataset", "mnist-sample", "--epochs", "1", "--verbose", "0", "--save", str(ck), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run("--dataset", "mnist-sample", "--epochs", "2", "--verbose", "2", "--resume", str(ck),
                 tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"Resuming from {ck} after epoch 1." in second.stdout
    assert "Epoch 2/2" in second.stdout and "Epoch 1/2" not in second.stdout
    ck.write_bytes(ck.read_bytes()[:1000])                  # a damaged checkpoint: one clear line, status 2
    bad = run("--dataset", "mnist-sample", "--resume", str(ck), tmp_path=tmp_path)
    assert bad.returncode == 2 and USAGE_LINE.fullmatch(bad.stderr), bad.stderr
    assert bad.stderr.startswith(f"mnist.py: error: --resume {ck}: ") and "corrupt" in bad.stderr
    assert "allow_pickle" not in bad.stderr and bad.stdout == ""


# ------------------------------------------------------------------ bad flags: one line, status 2, before any data
def checkpoint(path, network, compile_with=None, epochs_completed=0):
    if compile_with:
        network.compile(optimizer=compile_with[0], loss=compile_with[1], metrics=["accuracy"])
    network.epochs_completed = epochs_completed
    network.save(path)


def the_example_network():
    return models.Sequential([layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(512, activation="relu"),
                              layers.Dense(10, activation="softmax")])


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root writes anywhere a mode allows nothing: use /sys)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder)
    return "/sys" if os.path.isdir("/sys") else None


# (args, what the one line must contain). Files named here are made in the working folder by `bad_flag_runs`.
BAD_FLAGS = [
    (["--epochs", "-1"], ["argument --epochs: got -1;", "1 or more", "e.g. --epochs 5"]),
    (["--epochs", "0"], ["argument --epochs: got 0;", "1 or more"]),
    (["--epochs", "two"], ["argument --epochs: got 'two';", "an integer"]),
    (["--epochs", "2.5"], ["argument --epochs: got '2.5';", "an integer"]),
    (["--batch-size", "0"], ["argument --batch-size: got 0;", "1 or more", "e.g. --batch-size 128"]),
    (["--batch-size", "-5"], ["argument --batch-size: got -5;", "1 or more"]),
    (["--seed", "-1"], ["argument --seed: got -1;", "0 or more", "e.g. --seed 0"]),
    (["--epochs"], ["argument --epochs: expected one argument", "--help"]),
    (["--frobnicate", "3"], ["unrecognized arguments: --frobnicate 3", "see mnist.py --help"]),
    (["--optimizer", "adamw"], ["argument --optimizer: invalid choice: 'adamw'", "'rmsprop', 'sgd', 'adam'"]),
    (["--dataset", "cifar"], ["argument --dataset: invalid choice: 'cifar'", "'mnist-sample'"]),
    (["--verbose", "3"], ["argument --verbose: invalid choice: 3"]),
    (["--device", "tpu"], ["--device tpu: unknown device 'tpu'", "--device cpu"]),
    (["--plot", "missing/curves.png"], ["--plot missing/curves.png: the folder missing does not exist",
                                        "mkdir -p missing"]),
    (["--save", "missing/ck.npz"], ["--save missing/ck.npz: the folder missing does not exist", "mkdir -p missing"]),
    (["--plot", "UNWRITABLE/curves.png"], ["--plot UNWRITABLE/curves.png: cannot write in the folder UNWRITABLE",
                                           "choose a folder you can write to"]),
    (["--save", "UNWRITABLE/ck.npz"], ["--save UNWRITABLE/ck.npz: cannot write in the folder UNWRITABLE"]),
    (["--plot", "plots"], ["--plot plots: is a folder, not a file name", "e.g. --plot plots/mnist.png"]),
    (["--plot", "plots/"], ["--plot plots/: is a folder", "e.g. --plot plots/mnist.png"]),
    (["--save", "plots"], ["--save plots: is a folder", "e.g. --save plots/ckpt.npz"]),
    (["--save", ""], ["--save '': the file name is empty", "e.g. --save ckpt.npz"]),
    (["--plot", "curves.xyz"], ["--plot curves.xyz: unknown image format '.xyz'", "e.g. --plot curves.png"]),
    (["--plot", "same.png", "--save", "same.png"], ["--plot same.png: is also the --save file"]),
    (["--resume", "nothing-here.npz"], ["--resume nothing-here.npz: no such file", "written by --save"]),
    (["--resume", "plots"], ["--resume plots: is a folder"]),
    (["--resume", "truncated.npz"], ["--resume truncated.npz: ", "corrupt", "--resume needs a checkpoint"]),
    (["--resume", "noise.npz"], ["--resume noise.npz: ", "--resume needs a checkpoint"]),
    (["--resume", "other.npz"], ["--resume other.npz: its model maps inputs of shape (4,) to (3,), not MNIST's "
                                 "784 pixels to 10 classes"]),
    (["--resume", "uncompiled.npz"], ["--resume uncompiled.npz: its model was saved before compile"]),
    (["--resume", "sparse.npz"], ["--resume sparse.npz: its model cannot train on MNIST", "integer labels"]),
    (["--resume", "three.npz", "--epochs", "2"], ["--epochs 2: the checkpoint three.npz has already completed 3 "
                                                  "epochs", "pass --epochs 4 or more"]),
    (["--resume", "three.npz", "--optimizer", "sgd"], ["--optimizer sgd: the checkpoint three.npz continues with "
                                                       "its own optimizer, rmsprop", "drop --optimizer"]),
]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every BAD_FLAGS case run at once, each in its own process in one prepared folder: {index: outcome}."""
    work = tmp_path_factory.mktemp("bad-flags")
    (work / "plots").mkdir()
    checkpoint(work / "other.npz", models.Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))]),
               ("rmsprop", "categorical_crossentropy"))
    checkpoint(work / "uncompiled.npz", the_example_network())
    checkpoint(work / "sparse.npz", the_example_network(), ("rmsprop", "sparse_categorical_crossentropy"))
    checkpoint(work / "three.npz", the_example_network(), ("rmsprop", "categorical_crossentropy"), 3)
    (work / "truncated.npz").write_bytes((work / "three.npz").read_bytes()[:1000])
    (work / "noise.npz").write_bytes(os.urandom(4000))
    unwritable = unwritable_folder(work)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    procs = {}
    for i, (args, _) in enumerate(BAD_FLAGS):
        if unwritable is None and any("UNWRITABLE" in a for a in args):
            continue
        args = [a.replace("UNWRITABLE", unwritable or "") for a in args]
        procs[i] = (time.perf_counter(), subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--dataset", "mnist-sample", *args], cwd=work, env=env_for(work),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outcomes = {}
    for i, (start, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        outcomes[i] = (proc.returncode, stdout, stderr, time.perf_counter() - start)
    after = sorted(p.relative_to(work) for p in work.rglob("*"))
    yield outcomes, before, after, unwritable


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)), ids=[" ".join(a) or "''" for a, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_and_status_2_before_any_data(case, bad_flag_runs):
    outcomes, before, after, unwritable = bad_flag_runs
    if case not in outcomes:
        pytest.skip("no unwritable folder on this machine")
    returncode, stdout, stderr, seconds = outcomes[case]
    assert returncode == 2, stderr
    assert USAGE_LINE.fullmatch(stderr), stderr
    for part in BAD_FLAGS[case][1]:
        assert part.replace("UNWRITABLE", unwritable or "") in stderr, stderr
    assert stdout == ""                                    # no "Training on ...": the data was never loaded
    assert after == before                                 # nothing written (no plot, checkpoint or probe file)
    assert seconds < 30, f"took {seconds:.1f} s"            # (all cases at once; one epoch alone takes longer)


def test_a_plot_name_without_suffix_gets_png_and_says_the_exact_path(tmp_path):
    out = run("--dataset", "mnist-sample", "--epochs", "1", "--verbose", "0", "--plot", "curves", tmp_path=tmp_path,
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--plot curves has no suffix: the plot will be written to curves.png" in out.stdout
    assert "wrote curves.png\n" in out.stdout and "wrote curves\n" not in out.stdout
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "curves").exists()


# ------------------------------------------------------------------ Ctrl-C and other failures
def interrupt_after_first_epoch(tmp_path, *args):
    """Start a long run, send SIGINT once its first epoch is reported; returns (status, stderr)."""
    proc = subprocess.Popen([sys.executable, "-u", str(EXAMPLE), "--dataset", "mnist-sample", "--epochs", "500",
                             "--verbose", "2", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(tmp_path), cwd=tmp_path)
    for line in proc.stdout:
        if re.match(r"\d+/\d+ - ", line):                 # the line verbose=2 prints at the end of an epoch
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_is_one_line_naming_the_last_checkpoint_and_status_130(tmp_path):
    status, stderr = interrupt_after_first_epoch(tmp_path, "--save", "ck.npz")
    assert status == 130 and "Traceback" not in stderr, stderr
    m = re.fullmatch(r"mnist\.py: interrupted \(Ctrl-C\) during epoch (\d+); the last complete checkpoint is "
                     r"ck\.npz \(after epoch (\d+)\): continue with --resume ck\.npz\n", stderr)
    assert m, stderr
    assert int(m.group(2)) == int(m.group(1)) - 1 >= 1
    assert models.load_model(tmp_path / "ck.npz", restore_rng=False).epochs_completed == int(m.group(2))
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["ck.npz"]     # no temporary file left


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_without_save_says_no_checkpoint_was_saved(tmp_path):
    status, stderr = interrupt_after_first_epoch(tmp_path)
    assert status == 130, stderr
    assert re.fullmatch(r"mnist\.py: interrupted \(Ctrl-C\) during epoch \d+; no checkpoint was saved "
                        r"\(--save FILE\.npz writes one after every epoch\)\n", stderr), stderr


DISK_FULL_ON_SECOND_SAVE = """
import errno, os
from gpunet import models
original, calls = models.Sequential.save, []
def save(self, path, *args, **kwargs):
    calls.append(path)
    if len(calls) == 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return original(self, path, *args, **kwargs)
models.Sequential.save = save
"""


def test_expected_failures_that_are_not_flags_are_one_line_and_status_1(tmp_path):
    ck = tmp_path / "ck.npz"
    offline = run_patched(OFFLINE, "--dataset", "mnist", tmp_path=tmp_path)
    disk_full = run_patched(DISK_FULL_ON_SECOND_SAVE, "--dataset", "mnist-sample", "--epochs", "3", "--verbose", "0",
                            "--save", str(ck), tmp_path=tmp_path)
    out, err = offline.communicate(timeout=120)
    assert offline.returncode == 1 and USAGE_LINE.fullmatch(err), err
    assert err.startswith("mnist.py: error: --dataset mnist: ") and "--dataset mnist-sample" in err
    assert "Training on" not in out
    out, err = disk_full.communicate(timeout=120)
    assert disk_full.returncode == 1 and USAGE_LINE.fullmatch(err), err
    assert err == (f"mnist.py: error: --save {ck}: could not write the checkpoint after epoch 2 "
                   f"({os.strerror(errno.ENOSPC)}); the last complete one: {ck} (after epoch 1)\n")
    assert models.load_model(ck, restore_rng=False).epochs_completed == 1
