"""CUDA graphs of fit's step (``compile(jit_compile=True)`` on a GPU; gpunet/trainers/step_graphs.py).

Oracles: the same fit uncaptured (``jit_compile='auto'``) with every product taken from the capture-safe
GEMM kernel, which must give the captured fit's bits (weights, losses, metrics, optimizer steps, fresh
dropout masks per replay); the CPU, within float tolerance, with cuBLAS products. On the emulated CuPy
(tests/emulated_gpu) a capture records what the step launches and a replay re-runs it, refusing host
syncs, host copies and cuBLAS while capturing, as CUDA and CuPy do."""
import warnings

import numpy as np
import pytest

import gpunet
from gpunet import callbacks, kernels, layers, models, optimizers
from gpunet.layers import Layer
from gpunet.utils import to_categorical

BATCH = 32
OPTIMIZERS = {"rmsprop": lambda: optimizers.RMSprop(), "adam": lambda: optimizers.Adam(),
              "sgd-momentum": lambda: optimizers.SGD(0.01, momentum=0.9, nesterov=True),
              "adam-weight-decay": lambda: optimizers.Adam(0.003, weight_decay=0.05),
              "adam-amsgrad": lambda: optimizers.Adam(amsgrad=True)}


@pytest.fixture
def cupy_stats(gpu_dev):
    import cupy
    if not getattr(cupy, "EMULATED", False):
        pytest.skip("reads the emulated CuPy's counts")
    return cupy


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), to_categorical(rng.integers(0, 10, n), 10)


def net(optimizer, jit, dropout=0.25, dropout_seed=None):
    gpunet.random.seed(5)
    stack = [layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(32, activation="relu")]
    stack += [layers.Dropout(dropout, seed=dropout_seed, name="dropout")] if dropout else []
    model = models.Sequential(stack + [layers.Dense(10, activation="softmax")])
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss="categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit)
    return model


def train(model, x, y, epochs=3, **kwargs):
    gpunet.random.seed(9)
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, **kwargs).history
    return model.get_weights(), history, model.optimizer.iterations


def gemm_products_everywhere(monkeypatch):
    """Uncaptured steps take their products from the capture-safe kernel too (as captured steps must)."""
    monkeypatch.setattr(kernels.cuda, "capturing", lambda xp: kernels.cuda.is_gpu(xp))


def assert_same_bits(got, want):
    (w1, h1, it1), (w2, h2, it2) = got, want
    assert it1 == it2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_replayed_graphs_give_the_uncaptured_steps_bits(gpu_dev, monkeypatch, optimizer):
    x, y = data(5 * BATCH + 12)              # 5 full batches and one of 12 per epoch
    gemm_products_everywhere(monkeypatch)
    with gpu_dev:
        captured_net = net(optimizer, True)
        captured = train(captured_net, x, y, epochs=4)
        reference = train(net(optimizer, "auto"), x, y, epochs=4)
    graphs = captured_net._last_fit["graphs"]
    # 20 full batches: 2 ordinary, 1 captured, 17 replayed; 4 small ones: 2 ordinary, 1 captured (right after
    # a replay of the other graph), 1 replayed
    assert (graphs.captures, graphs.replays, graphs.failure) == (2, 18, None)
    assert all(entry.kept == [] for entry in graphs.graphs.values())     # the step allocated nothing
    assert_same_bits(captured, reference)
    assert captured[2] == 24


def test_captured_training_gives_the_cpus_results(gpu_dev):
    x, y = data(6 * BATCH, seed=1)
    with gpu_dev:
        gpu = train(net("adam", True, dropout=0), x, y)
    with gpunet.device("cpu"):
        cpu = train(net("adam", True, dropout=0), x, y)
    for a, b in zip(gpu[0], cpu[0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu[1]["loss"], cpu[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(gpu[1]["accuracy"], cpu[1]["accuracy"], atol=1e-6)


class LaunchCounter(callbacks.Callback):
    def __init__(self, cupy):
        super().__init__()
        from cupy import _raw
        self.cupy, self.raw, self.marks = cupy, _raw, []

    def on_train_batch_begin(self, batch, logs=None):
        self.marks.append((dict(self.cupy.STATS), self.raw.LAUNCH_COUNT[0]))


def test_a_replayed_step_is_one_graph_launch(cupy_stats):
    """After capture a step launches no kernel from Python (the graph does) and makes no transfer, host
    sync or allocation; the batch is copied into the graph's input arrays on the device."""
    x, y = data(8 * BATCH, seed=2)
    model, meter = net("rmsprop", True), LaunchCounter(cupy_stats)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[meter])
    (stats0, launches0), (stats1, launches1) = meter.marks[3], meter.marks[7]      # steps 4-7: replays
    assert launches1 - launches0 == 0
    assert {k: stats1[k] - stats0[k] for k in stats0} == {"host_syncs": 0, "transfers": 0, "allocations": 0}
    assert model._last_fit["graphs"].replays == 5


def test_a_new_learning_rate_captures_a_new_graph(gpu_dev, monkeypatch):
    """The learning rate is an argument of the update kernels: a callback that changes it gets its steps
    captured again, with the new rate (validation between epochs leaves the graphs' arrays alone)."""
    x, y = data(4 * BATCH, seed=3)
    halve = callbacks.LearningRateScheduler(lambda epoch: 0.01 / 2 ** epoch)
    gemm_products_everywhere(monkeypatch)
    results, captured_graphs = [], None
    for jit in (True, "auto"):
        with gpu_dev:
            model = net("sgd-momentum", jit)
            results.append(train(model, x, y, callbacks=[halve], validation_data=(x[:40], y[:40])))
            captured_graphs = captured_graphs if jit == "auto" else model._last_fit["graphs"]
    assert model.optimizer.learning_rate == pytest.approx(0.0025)
    assert_same_bits(*results)
    assert captured_graphs.captures == 3 and captured_graphs.replays == 3      # one graph per epoch's rate


def test_the_loss_guard_stops_a_replayed_step(gpu_dev):
    """A NaN loss in a replayed step sets the device flag that the graph's updates test: fit stops there,
    with the weights of the last finite step, the right step named, the skipped updates not counted."""
    x, y = data(5 * 16, seed=4)
    x = x.astype(np.float32)
    x[4 * 16:] = 3e38                          # batch 5 of each pass overflows (the first kernel all ones)
    results = []
    for jit in (True, "auto"):
        with gpu_dev:
            model = net("rmsprop", jit, dropout=0)
            model.build((None, 784))
            weights = model.get_weights()
            weights[0][...] = 1
            model.set_weights(weights)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                model.fit(x, y, batch_size=16, epochs=3, steps_per_epoch=3, shuffle=False, verbose=0)
            results.append((model.stop_reason, model.optimizer.iterations, model.epochs_completed))
    assert results[0] == results[1]
    assert results[0][0].startswith("epoch 2, step 2/3: the loss is nan") and results[0][1:] == (4, 1)


class HostReadingScale(Layer):
    """Multiplies by 1, reading its input's first value on the host (a device sync, which CUDA refuses
    while capturing)."""

    def forward(self, xp, x, training=False, ws=None):
        if float(x[0, 0]) > 1e30:
            raise AssertionError("not reached")
        return x, None

    def backward(self, saved, gz, need_input=True):
        return gz, []


@pytest.mark.parametrize("where", ["layer", "optimizer update"])
def test_a_failed_capture_puts_the_host_counts_back_and_trains_uncaptured(cupy_stats, where):
    """A step that syncs with the host cannot be captured: in a layer's forward (before the optimizer ran),
    or in the update of a weight the kernels cannot take (an F-ordered array: the NumPy-style twin runs
    and reads the loss guard's flag on the host), after other weights' updates advanced the optimizer's
    counts. Either way the host's counts are put back and the fit equals an uncaptured one, bit for bit."""
    x, y = data(6 * BATCH, seed=6)
    results = []
    for jit in (True, "auto"):
        gpunet.random.seed(5)
        stack = [layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(32, activation="relu"),
                 layers.Dense(10, activation="softmax")]
        if where == "layer":
            stack.insert(1, HostReadingScale())
        model = models.Sequential(stack)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
        if where == "optimizer update":
            model.build((None, 784))
            model.layers[-1].kernel.data = cupy_stats.asfortranarray(model.layers[-1].kernel.data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append(train(model, x, y, epochs=2))
        if jit is True:
            graphs = model._last_fit["graphs"]
            assert graphs.captures == 0 and "cudaErrorStreamCaptureUnsupported" in graphs.failure
            assert [str(w.message) for w in caught if "CUDA graph" in str(w.message)] == [
                f"gpunet: capturing the training step into a CUDA graph failed ({graphs.failure}); "
                "fit continues without CUDA graphs"]
            assert caught[0].filename == __file__         # the warning points at the user's fit call
    assert_same_bits(*results)


@pytest.mark.parametrize("case", ["schedule", "clipnorm", "sample_weight", "tape", "legacy dropout"])
def test_what_cannot_be_captured_trains_uncaptured_and_says_why(gpu_dev, case):
    x, y = data(4 * BATCH, seed=7)
    expected = {"schedule": "the optimizer has a learning-rate schedule",
                "clipnorm": "the optimizer has gradient clipping",
                "sample_weight": "sample or class weights are given",
                "tape": "a layer or the loss has no array form",
                "legacy dropout": "layer 'dropout': its masks come from the host PCG64 generator"}[case]
    results = []
    for jit in (True, "auto"):
        with gpu_dev:
            model = net("sgd-momentum", jit, dropout_seed=3 if case == "legacy dropout" else None)
            kwargs = {}
            if case == "schedule":
                model.optimizer.learning_rate = optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)
            elif case == "clipnorm":
                model.optimizer.clipnorm = 1.0
            elif case == "sample_weight":
                kwargs["sample_weight"] = np.linspace(0.5, 1.5, len(x))
            elif case == "tape":
                model.compile(optimizer="sgd", loss=lambda t, p: gpunet.ops.mean((t - p) ** 2), jit_compile=jit)
            elif case == "legacy dropout":
                model.layers[2].set_state({"generator": np.random.default_rng(1).bit_generator.state})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results.append(train(model, x, y, epochs=2, **kwargs))
            said = [str(w.message) for w in caught if "CUDA graphs" in str(w.message)]
            assert model._last_fit["graphs"] is None
            if jit is True:
                assert len(said) == 1 and said[0].startswith(f"gpunet: fit(jit_compile=True) trains without CUDA "
                                                             f"graphs because {expected}"), said
            else:
                assert said == []
    assert_same_bits(*results)


def test_the_cpu_has_no_graphs_and_no_warning():
    x, y = data(4 * BATCH, seed=8)
    with gpunet.device("cpu"), warnings.catch_warnings():
        warnings.simplefilter("error")
        model = net("adam", True)
        train(model, x, y, epochs=1)
    assert model._last_fit["graphs"] is None and model._last_fit["tapeless"]
