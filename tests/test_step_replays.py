"""Replays of fit's CPU step (gpunet/trainers/step_replays.py, gpunet/kernels/recording.py).

Oracles: the same fit with ordinary steps (replays turned off), and through the GradientTape
(``jit_compile=False``, another implementation of the step): weights, optimizer slots, histories and
step counts must be the same bits. The check a recording must pass before it is trusted is tested with
a layer whose CPU work the recording misses."""
import logging

import numpy as np
import pytest

import gpunet
from gpunet import callbacks, layers, models, optimizers
from gpunet.kernels import host, recording
from gpunet.trainers import step_replays, trainer
from gpunet.utils import to_categorical

BATCH = 32
OPTIMIZERS = {"rmsprop": lambda: optimizers.RMSprop(),
              "rmsprop-centered-momentum": lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
              "sgd": lambda: optimizers.SGD(0.05),
              "sgd-nesterov-decay": lambda: optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
              "adam": lambda: optimizers.Adam(),
              "adam-amsgrad-decay": lambda: optimizers.Adam(0.003, amsgrad=True, weight_decay=0.05)}


@pytest.fixture(autouse=True)
def cpu_kernels(monkeypatch):
    """Replays need the CPU kernels (each test would otherwise test nothing), and these fits are short."""
    monkeypatch.setattr(step_replays, "MIN_STEPS", 0)
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1")
    host.reset()
    yield
    monkeypatch.undo()
    host.reset()


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), to_categorical(rng.integers(0, 10, n), 10)


def net(optimizer="rmsprop", jit="auto", hidden=layers.Dense, loss="categorical_crossentropy"):
    gpunet.random.seed(5)
    model = models.Sequential([layers.Rescaling(1 / 255, input_shape=(784,)), hidden(32, activation="relu"),
                               layers.Dense(10, activation="softmax")], device="cpu")
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss=loss, metrics=["accuracy"], jit_compile=jit)
    return model


def train(model, x, y, epochs=3, **kwargs):
    gpunet.random.seed(9)
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, **kwargs).history
    slots = [s for p in model.trainable_weights for s in model.optimizer.slots_of(p).values()]
    return model.get_weights() + [np.asarray(s) for s in slots], history, model.optimizer.iterations


def assert_same_bits(got, want):
    (w1, h1, it1), (w2, h2, it2) = got, want
    assert it1 == it2 and len(w1) == len(w2)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2


def ordinary(monkeypatch):
    """fit without replays (the ordinary tapeless step at every batch)."""
    monkeypatch.setattr(trainer, "step_replays_for", lambda model, run: None)


def replays_match_ordinary_steps(monkeypatch, make, action, batch=8):
    """A fit of ``make()`` whose callback calls ``action(model)`` after batch ``batch`` (replays under way):
    the same bits as with ordinary steps. Returns the replayed model."""
    x, y = data(6 * BATCH)
    model = make()
    got = train(model, x, y, callbacks=[AtBatch(batch, action)])
    assert model._last_fit["replays"].replays > 0
    with monkeypatch.context() as m:
        ordinary(m)
        assert_same_bits(got, train(make(), x, y, callbacks=[AtBatch(batch, action)]))
    return model


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("shuffle", [True, False])
def test_replayed_steps_give_the_ordinary_steps_bits(monkeypatch, optimizer, shuffle):
    x, y = data(6 * BATCH + 12)                 # 6 full batches and one of 12 per epoch
    model = net(optimizer)
    replayed = train(model, x, y, shuffle=shuffle)
    replays = model._last_fit["replays"]
    assert replays.failure is None and replays.recorded == 2     # the full batches' shape, then the last's
    assert all(e.metrics is not None for e in replays.entries.values() if e.verified)   # accuracy replayed too
    assert replays.replays == 3 * 6 - 3 + 0                      # steps 1-3 of the full shape are not replays
    taped = train(net(optimizer, jit=False), x, y, shuffle=shuffle)
    with monkeypatch.context() as m:
        ordinary(m)
        plain = train(net(optimizer), x, y, shuffle=shuffle)
    assert_same_bits(replayed, plain)
    assert_same_bits(replayed, taped)


def test_sparse_labels_and_integer_data_without_rescaling(monkeypatch):
    """Sparse labels (int64: the kernels read them in place) and float inputs; the loss and the network differ
    from the chapter's."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5 * BATCH, 784)).astype(np.float32), rng.integers(0, 10, 5 * BATCH)

    def make():
        gpunet.random.seed(5)
        model = models.Sequential([layers.Dense(16, activation="relu", input_shape=(784,)), layers.Dense(16),
                                   layers.Activation("relu"), layers.Dense(10, activation="softmax")], device="cpu")
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
    model = make()
    replayed = train(model, x, y)
    assert model._last_fit["replays"].replays > 0 and model._last_fit["replays"].failure is None
    ordinary(monkeypatch)
    assert_same_bits(replayed, train(make(), x, y))


class ScaledDense(layers.Dense):
    """A Dense layer that scales its input with NumPy code the recording does not see: a fresh array each
    step, which a replay would read stale."""

    def forward(self, xp, x, training=False, ws=None, activation=None):
        return super().forward(xp, x * np.float32(0.5), training, ws, activation=activation)


def test_a_recording_that_misses_work_is_checked_and_dropped(monkeypatch, caplog):
    x, y = data(6 * BATCH)
    model = net(hidden=ScaledDense)
    with caplog.at_level(logging.DEBUG, logger="gpunet.trainers"):
        got = train(model, x, y)
    replays = model._last_fit["replays"]
    assert replays.failure == "the replay of its gradients did not match the ordinary step"
    assert replays.replays == 0 and "not replayed" in caplog.text
    ordinary(monkeypatch)
    assert_same_bits(got, train(net(hidden=ScaledDense), x, y))


def test_the_check_is_what_catches_it(monkeypatch):
    """Trusted without the check, the recording of ScaledDense trains to other weights: the check is needed."""
    x, y = data(6 * BATCH)
    with monkeypatch.context() as m:
        m.setattr(step_replays.StepReplays, "_verify", lambda self, entry, arrays, n, step:
                  setattr(entry, "verified", True) or self.step(entry.x, entry.y, n, step))
        trusted = train(net(hidden=ScaledDense), x, y)
    ordinary(monkeypatch)
    plain = train(net(hidden=ScaledDense), x, y)
    assert not all(np.array_equal(a, b) for a, b in zip(trusted[0], plain[0]))


class AtBatch(callbacks.Callback):
    def __init__(self, batch, action):
        super().__init__()
        self.batch, self.action, self.seen = batch, action, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.batch:
            self.action(self.model)


@pytest.mark.parametrize("action", ["learning rate", "set_weights", "new slots"])
def test_changes_between_steps(monkeypatch, action):
    """A new learning rate records again; weights written between steps (in place or as new arrays) and
    new optimizer slots are what later replays read."""
    def act(model):
        if action == "learning rate":
            model.optimizer.learning_rate = 0.0005
        elif action == "set_weights":
            model.set_weights([w * np.float32(0.9) for w in model.get_weights()])
        else:
            for p in model.trainable_weights:
                slots = model.optimizer.slots_of(p)
                for name in list(slots):
                    slots[name] = slots[name] * np.float32(0.5)
    replays_match_ordinary_steps(monkeypatch, net, act)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_nan_loss_stops_as_the_ordinary_step_does(monkeypatch):
    def poison(model):                        # a weight made infinite in place, after replays started
        model.layers[2].kernel.data[0, 0] = np.inf
    x, y = data(6 * BATCH)
    model = net()
    got = train(model, x, y, callbacks=[AtBatch(10, poison)])
    assert model._last_fit["replays"].replays > 0 and model.stop_reason.startswith("epoch 2, step 5/6")
    ordinary(monkeypatch)
    plain = net()
    assert_same_bits(got, train(plain, x, y, callbacks=[AtBatch(10, poison)]))
    assert plain.stop_reason == model.stop_reason


@pytest.mark.parametrize("case, reason", [
    ("adagrad", "the optimizer Adagrad does not record its CPU work"),
    ("dropout", "layer 'dropout' (Dropout) does not record its CPU work"),
    ("mse", "a layer or the loss has no array form, so the GradientTape runs the step"),
    ("kernels off", "the CPU kernels are off"),
    ("tape", None), ("gpu-less default", None)])
def test_what_is_not_replayed(monkeypatch, caplog, case, reason):
    gpunet.random.seed(5)
    stack = [layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(16, activation="relu")]
    stack += [layers.Dropout(0.2, name="dropout")] if case == "dropout" else []
    model = models.Sequential(stack + [layers.Dense(10, activation="softmax")], device="cpu")
    model.compile(optimizer=Adagrad() if case == "adagrad" else "rmsprop",
                  loss="mse" if case == "mse" else "categorical_crossentropy", jit_compile=case != "tape")
    if case == "kernels off":
        monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
        host.reset()
    x, y = data(4 * BATCH)
    with caplog.at_level(logging.DEBUG, logger="gpunet.trainers"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    if case == "gpu-less default":
        assert model._last_fit["replays"] is not None and model._last_fit["graphs"] is None
        return
    assert model._last_fit["replays"] is None
    if reason:
        assert f"fit's steps are not replayed: {reason}" in caplog.text


class Adagrad(optimizers.SGD):
    """An optimizer of the user's (here an SGD subclass by another name) that says nothing about replays."""

    replays_on_host = False


def test_recording_scope():
    calls = []
    recording.record(calls.append, 1)            # no recording active: nothing kept, nothing run
    with recording.Recording() as outer:
        recording.record(calls.append, 2)
        with recording.Recording() as inner:
            recording.record(calls.append, 3, keep=("kept",))
        recording.record(calls.append, 4)
    assert recording.active() is None and calls == []
    outer.replay()
    inner.replay()
    assert calls == [2, 4, 3] and inner.kept == ["kept"] and len(outer) == 2


def test_the_check_waits_for_other_data(monkeypatch):
    """Batches 2 and 3 alike (unshuffled), batch 4 not: a recording that reads its input stale must be checked
    on batch 4, not trusted after batch 3."""
    x, y = data(6 * BATCH)
    x[2 * BATCH:3 * BATCH], y[2 * BATCH:3 * BATCH] = x[BATCH:2 * BATCH], y[BATCH:2 * BATCH]
    model = net(hidden=ScaledDense)
    got = train(model, x, y, shuffle=False)
    assert model._last_fit["replays"].failure is not None
    ordinary(monkeypatch)
    assert_same_bits(got, train(net(hidden=ScaledDense), x, y, shuffle=False))


class DriftingSGD(optimizers.SGD):
    """An SGD that claims recorded updates but scales each gradient by a host number that changes every step."""

    replays_on_host = True

    def update_core_host(self, g, w, slots, decay=0.0):
        return super().update_core_host(g * np.float32(1 / self.iterations), w, slots, decay)


def test_an_update_that_misses_work_is_checked_and_dropped(monkeypatch):
    x, y = data(6 * BATCH)

    def make():
        model = net("sgd")
        model.compile(optimizer=DriftingSGD(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
        return model
    model = make()
    got = train(model, x, y)
    assert model._last_fit["replays"].failure == "the replay of its update did not match the ordinary step"
    ordinary(monkeypatch)
    assert_same_bits(got, train(make(), x, y))


def test_metrics_outside_the_recording_stay_ordinary(monkeypatch):
    """'mae' (a loss as a metric, computed by NumPy outside any recording) fails the metrics' check: the sums
    are then computed at each step while the gradients and updates are still replayed."""
    x, y = data(6 * BATCH)

    def make():
        model = net()
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy", "mae"])
        return model
    model = make()
    got = train(model, x, y)
    replays = model._last_fit["replays"]
    assert replays.failure is None and replays.replays > 0
    assert [e.metrics for e in replays.entries.values() if e.verified] == [None]
    ordinary(monkeypatch)
    assert_same_bits(got, train(make(), x, y))


# -- what a recording fixes on the host, changed during fit (found by a hostile review) ---------------------
def _set(obj_of, name, value):
    return lambda model: setattr(obj_of(model), name, value)


@pytest.mark.parametrize("optimizer, change", [
    ("sgd-nesterov-decay", _set(lambda m: m.optimizer, "momentum", 0.5)),
    ("sgd-nesterov-decay", _set(lambda m: m.optimizer, "nesterov", False)),
    ("sgd", _set(lambda m: m.optimizer, "weight_decay", 0.1)),
    ("rmsprop", _set(lambda m: m.optimizer, "rho", 0.5)),
    ("rmsprop", _set(lambda m: m.optimizer, "epsilon", 1e-2)),
    ("adam", _set(lambda m: m.optimizer, "beta_1", 0.5)),
    ("sgd", _set(lambda m: m.optimizer, "clipnorm", 0.01)),
    ("sgd", _set(lambda m: m.optimizer, "learning_rate", optimizers.schedules.ExponentialDecay(0.05, 2, 0.5))),
    ("rmsprop", _set(lambda m: m.layers[0], "scale", 1 / 512)),
    ("rmsprop", _set(lambda m: m.layers[1], "trainable", False))])
def test_settings_changed_during_fit(monkeypatch, optimizer, change):
    """Hyper-parameters, a schedule, clipping, a Rescaling scale or a layer frozen from a callback after the
    replays began: the replayed fit follows them as the ordinary one does (recording again, or stepping
    ordinarily where the new setting is not replayed)."""
    replays_match_ordinary_steps(monkeypatch, lambda: net(optimizer), change)


def test_a_layer_frozen_during_fit_stays_as_on_the_tape():
    """trainable=False from a callback: the tapeless step (ordinary or replayed) leaves its weights as the tape does
    (it raised before: the layer's gradients went missing from the list the optimizer zips with its weights)."""
    freeze = _set(lambda m: m.layers[1], "trainable", False)
    x, y = data(6 * BATCH)
    assert_same_bits(train(net(), x, y, callbacks=[AtBatch(8, freeze)]),
                     train(net(jit=False), x, y, callbacks=[AtBatch(8, freeze)]))


@pytest.mark.parametrize("dtype", ["int32", "uint8", "int64"])
def test_labels_converted_each_step_are_recorded(monkeypatch, dtype):
    """Sparse labels of another integer type are converted for the kernels at each step: into a work array, the
    conversion recorded. Batches 2 and 3 have the same labels (the check must not pass on them)."""
    x, y = data(6 * BATCH)
    labels = y.argmax(axis=1).astype(dtype)
    labels[2 * BATCH:3 * BATCH] = labels[BATCH:2 * BATCH]
    model = net(loss="sparse_categorical_crossentropy")
    got = train(model, x, labels, shuffle=False)
    assert model._last_fit["replays"].replays > 0 and model._last_fit["replays"].failure is None
    ordinary(monkeypatch)
    assert_same_bits(got, train(net(loss="sparse_categorical_crossentropy"), x, labels, shuffle=False))


def test_inputs_converted_each_step_are_checked_on_other_inputs(monkeypatch):
    """float32 images through Rescaling (x * scale: a new array each step, not recorded): batches 2 and 3 share
    their images but not their labels; the check waits for a batch where both differ, and fails there."""
    x, y = data(6 * BATCH)
    x = x.astype(np.float32)
    x[2 * BATCH:3 * BATCH] = x[BATCH:2 * BATCH]
    model = net()
    got = train(model, x, y, shuffle=False)
    assert model._last_fit["replays"].failure is not None
    ordinary(monkeypatch)
    assert_same_bits(got, train(net(), x, y, shuffle=False))


def confident(y_true, y_pred):
    """A user's metric in NumPy (new arrays each step, outside any recording): often 0 early in training."""
    return gpunet.tensor((np.asarray(y_pred.data).max(axis=-1) > 0.5).astype(np.float32))


def test_metrics_whose_sums_are_not_the_replays_own_arrays_stay_ordinary(monkeypatch):
    x, y = data(6 * BATCH)

    def make():
        model = net()
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy", confident])
        return model
    model = make()
    got = train(model, x, y, epochs=4)
    replays = model._last_fit["replays"]
    assert replays.replays > 0 and all(e.metrics is None for e in replays.entries.values())
    ordinary(monkeypatch)
    assert_same_bits(got, train(make(), x, y, epochs=4))


def test_the_check_compares_bits():
    """The check's comparison is of bits: NaN matches NaN of the same payload, -0 does not match +0, None only None."""
    same = step_replays._same_bits
    a = np.array([0.0, np.nan, 1.0, -np.inf], np.float32)
    assert same(a, a.copy()) and same(a[::2], a.copy()[::2])
    assert same(np.array(3.0, np.float32), np.array(3.0, np.float32))
    assert not same(a, np.array([-0.0, np.nan, 1.0, -np.inf], np.float32))
    assert not same(a, a.astype(np.float64)) and not same(a, a[:3]) and not same(a, None) and same(None, None)
    assert not same(np.array(1.0, np.float32), np.array(np.nextafter(np.float32(1), np.float32(2))))


def test_short_fits_are_not_replayed(monkeypatch, caplog):
    """Recording and checking cost about three steps: a fit of fewer than MIN_STEPS steps runs ordinary steps."""
    monkeypatch.setattr(step_replays, "MIN_STEPS", 32)
    x, y = data(6 * BATCH)
    model = net()
    with caplog.at_level(logging.DEBUG, logger="gpunet.trainers"):
        model.fit(x, y, batch_size=BATCH, epochs=5, initial_epoch=0, verbose=0)       # 30 steps
    assert model._last_fit["replays"] is None and "a fit of 30 steps (fewer than 32)" in caplog.text
    model.fit(x, y, batch_size=BATCH, epochs=7, initial_epoch=1, verbose=0)          # 36
    assert model._last_fit["replays"].replays > 0
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)           # 6, but the recordings are kept: replayed
    assert model._last_fit["replays"].replays == 6
    model.optimizer.learning_rate = 0.002                             # none kept for this learning rate
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert model._last_fit["replays"] is None


def test_a_frozen_layers_weight_array_replaced_during_fit(monkeypatch):
    """A frozen layer's weights are read by the recording though not trained: a new array is a new recording."""
    def swap(model):
        kernel = model.layers[1].kernel
        kernel.data = kernel.data * np.float32(0.5)

    def make():
        model = net()
        model.layers[1].trainable = False
        return model
    replays_match_ordinary_steps(monkeypatch, make, swap)


@pytest.mark.parametrize("metrics", [["mae"], []])
def test_compile_during_fit_with_the_same_optimizer(monkeypatch, metrics):
    """compile() from a callback keeping the optimizer object but not the metrics: the metric sums follow."""
    def recompile(model):
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=metrics)
    replays_match_ordinary_steps(monkeypatch, net, recompile)


@pytest.mark.parametrize("between", ["nothing", "compile", "freeze", "set_weights", "learning rate", "unshuffled",
                                     "batch size"])
def test_recordings_kept_from_one_fit_to_the_next(monkeypatch, between):
    """A second fit replays what the first recorded and checked from its first step, unless something the
    recordings fixed changed in between; either way the bits are the ordinary fits'."""
    x, y = data(6 * BATCH)

    def fits(model):
        first = train(model, x, y, epochs=2)
        kwargs = {}
        if between == "compile":
            model.compile(optimizer=optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                          metrics=["accuracy"])
        elif between == "freeze":
            model.layers[1].trainable = False
        elif between == "set_weights":
            model.set_weights([w * np.float32(0.5) for w in model.get_weights()])
        elif between == "learning rate":
            model.optimizer.learning_rate = 0.002
        elif between == "unshuffled":
            kwargs["shuffle"] = False
        gpunet.random.seed(9)
        history = model.fit(x, y, batch_size=BATCH // 2 if between == "batch size" else BATCH, epochs=4,
                            initial_epoch=2, verbose=0, **kwargs).history
        return first, history, model.get_weights(), model.optimizer.iterations
    model = net()
    got = fits(model)
    replays = model._last_fit["replays"]
    if between in ("nothing", "set_weights", "unshuffled"):
        assert replays.recorded == 0 and replays.replays == 2 * 6      # every step of the second fit
    else:
        assert replays.recorded >= 1 and replays.replays > 0
    ordinary(monkeypatch)
    want = fits(net())
    assert_same_bits(got[0], want[0])
    assert got[1] == want[1] and got[3] == want[3]
    for a, b in zip(got[2], want[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hook", ["on_train_batch_begin", "on_train_batch_end"])
def test_a_fit_nested_in_a_callback_of_the_same_model(monkeypatch, hook):
    """A fit run from a callback while a fit of the same model is under way (after its batch was gathered)
    keeps its recordings apart: it neither gathers into the outer fit's batch arrays nor replays its entries."""
    x, y = data(6 * BATCH)
    x2, y2 = data(4 * BATCH, seed=3)

    class Nested(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def run(self, batch):
            self.calls += 1
            if self.calls in (3, 9):
                self.model.fit(x2, y2, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
    setattr(Nested, hook, lambda self, batch, logs=None: self.run(batch))

    def fits(model):
        first = train(model, x, y)                                   # recordings kept after this fit
        return first, train(model, x, y, callbacks=[Nested()])
    got = fits(net())
    ordinary(monkeypatch)
    want = fits(net())
    for a, b in zip(got, want):
        assert_same_bits(a, b)


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_integer_labels_into_a_work_array_on_the_gpu_too(gpu_dev, monkeypatch, dtype):
    """int64_labels converts sparse labels of another integer type into the tapeless step's work array on a
    GPU as well (CuPy's copyto): the same weights as through the tape, and the conversion ran there."""
    from gpunet.kernels import softmax_xent
    converted, convert = [], softmax_xent.int64_labels
    monkeypatch.setattr(softmax_xent, "int64_labels",
                        lambda xp, y: converted.append(y.dtype) or convert(xp, y))
    from gpunet.losses import losses
    monkeypatch.setattr(losses, "int64_labels", softmax_xent.int64_labels)
    x, y = data(4 * BATCH)
    labels = y.argmax(axis=1).astype(dtype)

    def run(jit):
        gpunet.random.seed(5)
        model = models.Sequential([layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(16, activation="relu"),
                                   layers.Dense(10, activation="softmax")], device=gpu_dev)
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", jit_compile=jit)
        gpunet.random.seed(9)
        model.fit(x, labels, batch_size=BATCH, epochs=2, verbose=0)
        return model.get_weights()
    tapeless = run("auto")
    assert converted and all(d == dtype for d in converted)
    for a, b in zip(tapeless, run(False)):
        np.testing.assert_array_equal(a, b)
