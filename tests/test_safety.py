"""Nothing lost, runs repeatable: checkpoints and exact resume, non-finite losses, Ctrl-C,
kills during saves, repeatable example runs."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gpunet
from gpunet import callbacks, layers, models, optimizers
from gpunet.saving import CheckpointError
from gpunet.utils import to_categorical

ROOT = pathlib.Path(__file__).resolve().parents[1]


def data(n=96, features=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features), dtype=np.float32), to_categorical(rng.integers(0, classes, n), classes)


def small_net(opt="rmsprop", dropout=True, device=None):
    net = models.Sequential([layers.Dense(16, activation="relu", input_shape=(20,))] +
                            ([layers.Dropout(0.25)] if dropout else []) +
                            [layers.Dense(5, activation="softmax")], device=device)
    net.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["accuracy"])
    return net


OPTIMIZERS = {"rmsprop": lambda: "rmsprop", "adam": lambda: "adam",
              "sgd-nesterov": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
              "rmsprop-centered-momentum": lambda: optimizers.RMSprop(centered=True, momentum=0.5)}


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_resume_from_checkpoint_is_bit_identical(tmp_path, opt):
    """Train 5 epochs straight; train 2, save, load, train 3 more: the same weights, bit for bit."""
    x, y = data()
    gpunet.random.seed(7)
    straight = small_net(OPTIMIZERS[opt]())
    straight.fit(x, y, epochs=5, batch_size=16, verbose=0)

    gpunet.random.seed(7)
    first = small_net(OPTIMIZERS[opt]())
    first.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"))])
    gpunet.random.seed(999)           # whatever happens in between, the checkpoint's RNG state wins
    gpunet.random.generator().random(100)
    resumed = models.load_model(tmp_path / "ck-2.npz")
    assert resumed.epochs_completed == 2 and resumed.optimizer.iterations == first.optimizer.iterations
    h = resumed.fit(x, y, epochs=5, batch_size=16, verbose=0, initial_epoch=resumed.epochs_completed)
    assert h.epoch == [2, 3, 4] and resumed.epochs_completed == 5
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first.get_weights(), straight.get_weights()))


def test_checkpoint_round_trip_keeps_everything(dev, tmp_path):
    x, y = data()
    net = small_net(optimizers.Adam(0.003))
    net.fit(x, y, epochs=2, batch_size=32, verbose=0)
    net.save(tmp_path / "m.npz")
    back = models.load_model(tmp_path / "m.npz")
    assert [type(layer).__name__ for layer in back.layers] == ["Dense", "Dropout", "Dense"]
    assert [layer.name for layer in back.layers] == [layer.name for layer in net.layers]
    assert back.layers[1].rate == 0.25 and back.layers[0].activation_name == "relu"
    assert isinstance(back.optimizer, optimizers.Adam) and back.optimizer.learning_rate == 0.003
    assert back.optimizer.iterations == net.optimizer.iterations == 6
    assert back.loss.name == "categorical_crossentropy" and [m.name for m in back.metrics] == ["accuracy"]
    for a, b in zip(back.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    for p, q in zip(back.weights, net.weights):
        for k, slot in net.optimizer._slots[id(q)].items():
            if k != "scratch":
                np.testing.assert_array_equal(dev.to_host(back.optimizer._slots[id(p)][k]), dev.to_host(slot))
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    assert back.evaluate(x, y, verbose=0) == net.evaluate(x, y, verbose=0)


def test_checkpoint_loads_onto_another_device_and_into_load_weights(tmp_path):
    x, y = data()
    net = small_net()
    net.fit(x, y, epochs=1, batch_size=32, verbose=0)
    net.save(tmp_path / "m.npz")
    assert models.load_model(tmp_path / "m.npz", device="cpu").device == gpunet.device("cpu")
    other = small_net()
    other.load_weights(tmp_path / "m.npz")       # the weights of a full checkpoint
    for a, b in zip(other.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_refuses_what_it_cannot_rebuild_before_touching_the_file(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"previous contents")

    class MyDense(layers.Dense):
        pass

    custom_layer = models.Sequential([MyDense(3, input_shape=(4,))])
    with pytest.raises(CheckpointError, match="MyDense, not a built-in gpunet layer.*save_weights"):
        custom_layer.save(path)
    custom_act = models.Sequential([layers.Dense(3, activation=lambda t: t * 2, input_shape=(4,))])
    with pytest.raises(CheckpointError, match="custom activation"):
        custom_act.save(path)
    custom_loss = models.Sequential([layers.Dense(3, input_shape=(4,))])
    custom_loss.compile(optimizer="sgd", loss=lambda yt, yp: gpunet.ops.mean((yt - yp) ** 2))
    with pytest.raises(CheckpointError, match="loss .* custom function"):
        custom_loss.save(path)
    assert path.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]          # no temporary file left behind
    with pytest.raises(ValueError, match="no weights yet"):
        models.Sequential([layers.Dense(3)]).save(path)


def test_load_model_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        models.load_model(tmp_path / "missing.npz")
    net = small_net()
    net.save_weights(tmp_path / "weights.npz")
    with pytest.raises(CheckpointError, match="weights file.*load_weights"):
        models.load_model(tmp_path / "weights.npz")
    net.save(tmp_path / "full.npz")
    whole = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        models.load_model(tmp_path / "cut.npz")
    with np.load(tmp_path / "full.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["config"] = np.array(str(arrays["config"]).replace('"version": 2', '"version": 99'))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        models.load_model(tmp_path / "future.npz")
    assert issubclass(CheckpointError, ValueError)


def test_saved_files_get_normal_permissions(tmp_path):
    net = small_net()
    old = os.umask(0o022)
    try:
        net.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------- non-finite loss
@pytest.mark.filterwarnings("ignore:overflow", "ignore:invalid value")
@pytest.mark.parametrize("deferred", [False, True], ids=["checked-each-step", "device-flag"])
def test_non_finite_loss_stops_at_that_step_keeping_the_last_finite_weights(capsys, deferred):
    """CPU checks each loss at once; a GPU sets a device flag that makes later optimizer kernels no-ops
    and is read at the epoch end (run here through the kernels' NumPy twins)."""
    rng = np.random.default_rng(3)
    x = rng.random((40, 4), dtype=np.float32)
    x[16:24] = 1e25                      # batch 3 (of 8 samples) overflows the squared error
    y = rng.random((40, 1), dtype=np.float32)

    def net():
        gpunet.random.seed(5)
        m = models.Sequential([layers.Dense(1, input_shape=(4,))])
        m.compile(optimizer=optimizers.SGD(0.01, momentum=0.9), loss="mse")
        return m

    clean = net()
    clean.fit(x[:16], y[:16], epochs=1, batch_size=8, shuffle=False, verbose=0)   # the 2 good steps
    broken = net()
    broken._defer_loss_check = deferred
    h = broken.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    assert broken._last_fit["guard"].issued == (5 if deferred else 3)    # the device path ran on to the epoch's end
    assert broken.stop_reason.startswith("epoch 1, step 3/5: the loss is inf")
    assert "epoch 1, step 3/5" in capsys.readouterr().err
    assert h.epoch == [] and broken.epochs_completed == 0 and broken.optimizer.iterations == 2
    for a, b in zip(broken.get_weights(), clean.get_weights()):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:overflow", "ignore:invalid value")
def test_non_finite_loss_in_the_fused_step_with_adam_and_the_device_flag():
    x, y = data(n=64)
    x[40:48] = 3e38                          # step 6 of 8 (batch 8) overflows the logits
    results = []
    for deferred in (None, False, True):     # None: a clean run of the 5 good steps
        gpunet.random.seed(4)
        net = small_net("adam", dropout=False)
        net._defer_loss_check = bool(deferred)
        if deferred is None:
            net.fit(x[:40], y[:40], epochs=1, batch_size=8, shuffle=False, verbose=0)
        else:
            net.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
            assert net._last_fit["tapeless"] and net.stop_reason.startswith("epoch 1, step 6/8: the loss is nan")
        results.append((net.get_weights(), net.optimizer.iterations))
    for weights, iterations in results[1:]:
        assert iterations == 5
        for a, b in zip(weights, results[0][0]):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- Ctrl-C
@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
def test_ctrl_c_inside_an_update_finishes_the_step_then_interrupts(monkeypatch):
    x, y = data(n=64)
    gpunet.random.seed(11)
    want = small_net(dropout=False)
    want.fit(x, y, epochs=1, batch_size=16, verbose=0)           # epoch 1: 4 steps
    want.fit(x, y, epochs=2, batch_size=16, verbose=0, initial_epoch=1, steps_per_epoch=2)

    gpunet.random.seed(11)
    net = small_net(dropout=False)
    calls = []
    original = type(net.optimizer).update_step

    def update_step(self, grad, param, slots):
        calls.append(param.name)
        if len(calls) == 4 * 4 + 2 * 4 - 2:     # epoch 2, step 2, between two parameter updates
            os.kill(os.getpid(), signal.SIGINT)
        original(self, grad, param, slots)

    monkeypatch.setattr(type(net.optimizer), "update_step", update_step)
    with pytest.raises(KeyboardInterrupt, match="last completed step"):
        net.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert net.history.epoch == [0] and len(net.history.history["loss"]) == 1
    assert net.epochs_completed == 1 and net.optimizer.iterations == 6
    for a, b in zip(net.get_weights(), want.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # handler restored


# ------------------------------------------------------------ kill during save
KILL_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from gpunet import layers, models
    net = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)), layers.Dense(10)])
    net.compile(optimizer="rmsprop", loss="mse")
    full, weights = sys.argv[1], sys.argv[2]
    shapes = [w.shape for w in net.weights]
    version = 0
    while True:
        version += 1
        net.set_weights([np.full(s, version, np.float32) for s in shapes])
        net.save(full)
        net.save_weights(weights)
        print(version, flush=True)
""")


def _version(arrays):
    values = {float(a.flat[0]) for a in arrays} | {float(a.flat[-1]) for a in arrays}
    assert len(values) == 1 and all((a == a.flat[0]).all() for a in arrays), "a file mixes two saves"
    return values.pop()


def test_killing_a_process_mid_save_never_leaves_a_broken_file(tmp_path):
    full, weights = tmp_path / "full.npz", tmp_path / "weights.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = np.random.default_rng(0)
    probe = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)), layers.Dense(10)])
    seen = set()
    for kill in range(24):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(full), str(weights)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        for _ in range(int(rng.integers(1, 5))):          # let 1-4 saves complete, then kill mid-way
            assert child.stdout.readline().strip()
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        seen.add(_version(models.load_model(full, restore_rng=False).get_weights()))
        probe.load_weights(weights)
        seen.add(_version(probe.get_weights()))
    assert len(seen) > 3, f"the kills all landed at the same point ({seen}); the test proves little"
    probe.save(full)                   # the next successful saves remove what the killed writers left
    probe.save_weights(weights)
    assert sorted(os.listdir(tmp_path)) == ["full.npz", "weights.npz"]


@pytest.mark.skipif(os.name != "posix", reason="process ids checked with POSIX signals")
def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = tmp_path / f".w.npz.pid{int(dead.stdout)}.abc.tmp"
    live_tmp = tmp_path / f".w.npz.pid{os.getppid()}.def.tmp"         # our parent process: alive
    other = tmp_path / f".other.npz.pid{int(dead.stdout)}.ghi.tmp"     # another file's: not ours to judge
    for f in (dead_tmp, live_tmp, other):
        f.write_bytes(b"partial")
    small_net().save_weights(tmp_path / "w.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["w.npz", live_tmp.name, other.name])


# ------------------------------------------------------------------ repeatability
def test_two_runs_of_the_example_with_one_seed_are_bit_identical(tmp_path):
    outs = []
    for run in range(2):
        ck = tmp_path / f"run{run}.npz"
        res = subprocess.run([sys.executable, str(ROOT / "examples" / "mnist.py"), "--dataset", "mnist-sample",
                              "--epochs", "2", "--verbose", "0", "--seed", "3", "--save", str(ck)],
                             capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert res.returncode == 0, res.stderr
        outs.append([line for line in res.stdout.splitlines() if line.startswith("test_loss")])
        with np.load(ck) as f:
            outs.append({k: f[k] for k in f.files if k != "config"})
    assert outs[0] == outs[2] and outs[0][0].startswith("test_loss")
    assert outs[1].keys() == outs[3].keys() and len(outs[1]) >= 4
    for k in outs[1]:
        np.testing.assert_array_equal(outs[1][k], outs[3][k])


# ------------------------------------------------------- checkpoint round trips, property based
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def architectures(draw):
    features = draw(st.integers(1, 6))
    spec = []
    if draw(st.booleans()):
        spec.append(("Rescaling", dict(scale=draw(st.sampled_from([1 / 255, 0.5, 2.0])),
                                       offset=draw(st.sampled_from([0.0, -1.0])))))
    for _ in range(draw(st.integers(0, 2))):
        spec.append(("Dense", dict(units=draw(st.integers(1, 7)),
                                   activation=draw(st.sampled_from(["relu", "tanh", "sigmoid", "linear", None])),
                                   use_bias=draw(st.booleans()))))
        if draw(st.booleans()):
            spec.append(("Dropout", dict(rate=draw(st.sampled_from([0.0, 0.3])))))
    classes = draw(st.integers(2, 5))
    spec.append(("Dense", dict(units=classes, activation="softmax")))
    opt = draw(st.sampled_from(["sgd", "rmsprop", "adam"]))
    loss = draw(st.sampled_from(["categorical_crossentropy", "sparse_categorical_crossentropy"]))
    return features, classes, spec, opt, loss


@settings(max_examples=25, deadline=None)
@given(arch=architectures(), epochs=st.integers(0, 2))
def test_any_saved_model_loads_back_identical(tmp_path_factory, arch, epochs):
    features, classes, spec, opt, loss = arch
    rng = np.random.default_rng(0)
    x = rng.random((24, features), dtype=np.float32)
    labels = rng.integers(0, classes, 24)
    y = labels if loss.startswith("sparse") else to_categorical(labels, classes)
    net = models.Sequential([layers.InputLayer(shape=(features,))] +
                            [getattr(layers, cls)(**kw) for cls, kw in spec])
    net.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    net.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    path = tmp_path_factory.mktemp("ck") / "m.npz"
    net.save(path)
    back = models.load_model(path, restore_rng=False)
    assert [type(a) for a in back.layers] == [type(b) for b in net.layers]
    assert back.count_params() == net.count_params() and back.optimizer.iterations == net.optimizer.iterations
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    # both continue identically from here
    for m in (net, back):
        gpunet.random.seed(1)
        m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(back.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
