"""Issue 15, bad input: fit/evaluate/predict on wrongly shaped data, callbacks that cannot work,
tensor() of things that are not numbers, NumPy scalars and non-finite layer arguments.

Each refusal comes before the first step and leaves the model exactly as it was (built state
included). The oracles: Keras 3's behaviour (its Dense works on the last axis of an N-D input;
its callbacks raise KeyError for a file name field that is not logged, ValueError for an 'auto'
monitor of unknown direction, and only warn for a monitor missing from the logs), NumPy's
arithmetic and Python's str.format.
"""
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gpunet
from gpunet import callbacks, layers, models
from gpunet.callbacks import file_checks

rng = np.random.default_rng(7)
X2 = rng.random((8, 4), dtype=np.float32)
X3 = rng.random((8, 5, 4), dtype=np.float32)
Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
XV, YV = X2[:4], Y[:4]


def net(metrics=("accuracy",), input_shape=None):
    kwargs = {} if input_shape is None else {"input_shape": input_shape}
    m = models.Sequential([layers.Dense(6, activation="relu", **kwargs), layers.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=list(metrics))
    return m


def state(model):
    """What a failed call must not change: built flags, weights (values), optimizer steps."""
    return (model.built, [layer.built for layer in model.layers], [w.copy() for w in model.get_weights()],
            model.optimizer.iterations if model.optimizer is not None else None, model.epochs_completed)


def assert_same(before, after):
    assert before[0] == after[0] and before[1] == after[1] and before[3:] == after[3:]
    assert len(before[2]) == len(after[2]) and all(np.array_equal(a, b) for a, b in zip(before[2], after[2]))


class Counter(callbacks.Callback):
    """Counts training steps (to show that a refused fit ran none)."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.steps += 1


# ---------------------------------------------------------------- 1. fit/evaluate/predict shapes
def test_fit_on_3d_data_into_dense_is_refused_with_the_flatten_fix_and_leaves_the_model_unbuilt():
    m = net()
    before = state(m)
    with pytest.raises(gpunet.ShapeError) as err:
        m.fit(X3, Y, verbose=0, epochs=1)
    msg = str(err.value)
    for part in ("(8, 5, 4)", "(n, 5, 3)", "Dense works on the last axis", "layers.Flatten()", "(n, 20)"):
        assert part in msg, msg
    assert_same(before, state(m))
    assert not m.built and m.weights == []
    m.fit(X2, Y, verbose=0, epochs=1)            # the right data still trains: nothing was built for (5, 4)
    assert m.built and m.input_shape == (None, 4)


def test_dense_on_3d_data_works_on_the_last_axis_as_in_keras():
    """Keras 3's Dense (keras/src/layers/core/dense.py): input ``(batch, d0, d1)`` -> kernel ``(d1, units)``
    applied along the last axis. An unbuilt model predicting on 3-D data does the same, not an error."""
    m = models.Sequential([layers.Dense(3)])
    out = m.predict(X3[:2])
    kernel, bias = m.get_weights()
    assert out.shape == (2, 5, 3)
    np.testing.assert_allclose(out, np.einsum("bij,jk->bik", X3[:2], kernel) + bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call", ["predict", "evaluate"])
def test_predict_and_evaluate_refuse_data_of_another_shape_than_the_model_was_built_for(call):
    m = net()
    m.fit(X2, Y, verbose=0)
    before = state(m)
    args = (X3,) if call == "predict" else (X3, Y)
    with pytest.raises(gpunet.ShapeError, match=r"expects samples of shape \(4,\), got \(5, 4\).*layers.Flatten"):
        getattr(m, call)(*args, verbose=0)
    assert_same(before, state(m))


class Exploding(layers.Layer):
    """A user layer that builds, then fails in its forward pass."""

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1],), "ones")

    def call(self, x, training=False):
        raise RuntimeError("boom")


@pytest.mark.parametrize("call", ["predict", "evaluate", "fit"])
def test_a_failure_after_building_leaves_the_model_unbuilt(call):
    m = models.Sequential([layers.Dense(3), Exploding()])
    m.compile(optimizer="sgd", loss="mse")
    args = {"predict": (X2,), "evaluate": (X2, Y), "fit": (X2, Y)}[call]
    with pytest.raises(RuntimeError, match="boom"):
        getattr(m, call)(*args, verbose=0)
    assert not m.built and [layer.built for layer in m.layers] == [False, False] and m.weights == []
    assert m.optimizer.iterations == 0


class FailsAtTrainBegin(callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise OSError("disk went away")


def test_a_fit_that_fails_before_its_first_step_leaves_the_model_and_the_generator_as_they_were():
    """Building draws the initial weights from gpunet's generator: a failed fit puts its state back too, so
    a failed fit followed by a good one gives the weights of the good one alone."""
    gpunet.random.seed(11)
    m = net()
    counter = Counter()
    with pytest.raises(OSError, match="disk went away"):
        m.fit(X2, Y, verbose=0, callbacks=[counter, FailsAtTrainBegin()])
    assert not m.built and m.weights == [] and counter.steps == 0 and m.history is None
    m.fit(X2, Y, verbose=0, epochs=1, shuffle=False)
    gpunet.random.seed(11)
    fresh = net()
    fresh.fit(X2, Y, verbose=0, epochs=1, shuffle=False)
    for a, b in zip(m.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_failed_fit_of_a_built_model_changes_no_weight_and_no_optimizer_step():
    m = net()
    m.fit(X2, Y, verbose=0)
    before = state(m)
    with pytest.raises(OSError):
        m.fit(X2, Y, verbose=0, callbacks=[FailsAtTrainBegin()])
    assert_same(before, state(m))


# ---------------------------------------------------------------- 2. callbacks, checked before the first step
def refused(m, error, match, **fit_kwargs):
    """fit with these arguments raises ``error`` matching ``match`` before any step or build."""
    counter = Counter()
    fit_kwargs["callbacks"] = [counter] + fit_kwargs.get("callbacks", [])
    before = state(m)
    with pytest.raises(error, match=match) as err:
        m.fit(X2, Y, verbose=0, epochs=2, **fit_kwargs)
    assert counter.steps == 0
    assert_same(before, state(m))
    return str(err.value)


@pytest.mark.parametrize("cls", [callbacks.EarlyStopping, callbacks.ReduceLROnPlateau])
def test_an_auto_monitor_that_fit_never_logs_is_refused_before_the_first_step(cls):
    """Keras raises this ValueError (direction unknown) after the first epoch; gpunet before the first step,
    naming what fit does log."""
    msg = refused(net(), ValueError, "isn't able to automatically determine", callbacks=[cls(monitor="val_acc")])
    assert "fit logs 'accuracy', " in msg and "'loss'" in msg and "validation_data" in msg


def test_a_monitor_missing_from_the_logs_only_warns_as_in_keras():
    """Keras only warns (every epoch) for a known name that is not logged: val_loss without validation data,
    or any name with mode='min'. Training goes on."""
    for cb in (callbacks.EarlyStopping(monitor="val_loss"), callbacks.EarlyStopping(monitor="val_acc", mode="min"),
               callbacks.ReduceLROnPlateau(monitor="val_loss")):
        m = net()
        with pytest.warns(UserWarning, match="not available"):
            m.fit(X2, Y, verbose=0, epochs=2, callbacks=[cb])
        assert m.epochs_completed == 2


def test_a_bad_monitor_type_is_refused():
    refused(net(), TypeError, "monitor must be a logged name", callbacks=[callbacks.EarlyStopping(monitor=3)])


def test_a_checkpoint_name_with_val_loss_without_validation_is_refused_as_keras_refuses_it(tmp_path):
    """Keras raises KeyError 'Failed to format this callback filepath' after the first epoch; here before the
    first step (a KeyError, and a ValueError), saying where val_ values come from."""
    ck = callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.npz"))
    msg = refused(net(), KeyError, "Failed to format this callback filepath", callbacks=[ck])
    assert "{val_loss}" in msg and "validation_data" in msg
    with pytest.raises(ValueError):
        net().fit(X2, Y, verbose=0, callbacks=[ck])
    assert os.listdir(tmp_path) == []
    m = net()                                       # with validation data the same name works
    m.fit(X2, Y, verbose=0, epochs=1, validation_data=(XV, YV), callbacks=[ck])
    assert len(os.listdir(tmp_path)) == 1 and os.listdir(tmp_path)[0].startswith("m-01-")


@pytest.mark.parametrize("name, error, match", [
    ("{}.npz", ValueError, r"positional field '\{\}'"),
    ("{0}.npz", ValueError, r"positional field '\{0\}'"),
    ("ck-{.npz", ValueError, "malformed"),
    ("ck-}.npz", ValueError, "malformed"),
    ("ck-{nope}.npz", KeyError, r"\{nope\} will never be logged"),
    ("ck-{epoch:q}.npz", ValueError, "cannot be filled"),
    ("ck-{loss:d}.npz", ValueError, "cannot be filled"),
    ("ck-{epoch.real.x}.npz", ValueError, "cannot be filled"),
])
def test_checkpoint_name_templates_that_cannot_be_filled_are_refused_before_training(tmp_path, name, error, match):
    refused(net(), error, match, callbacks=[callbacks.ModelCheckpoint(str(tmp_path / name))])
    assert os.listdir(tmp_path) == []


def test_the_template_refusals_are_what_python_would_raise_at_the_epoch_end():
    """The oracle: str.format with the values fit passes ({epoch}: int, logged values: float)."""
    for template in ("{}", "{0}", "{", "{epoch:q}", "{loss:d}"):
        with pytest.raises((ValueError, IndexError, KeyError)):
            template.format(epoch=1, loss=0.5)
    assert "{epoch:02d}-{loss:.3f}".format(epoch=1, loss=0.5) == file_checks.format_sample(
        "{epoch:02d}-{loss:.3f}", {"epoch": 1}, "test")


def test_names_added_by_earlier_callbacks_are_allowed(tmp_path):
    """ReduceLROnPlateau adds learning_rate; a user callback may add any name: neither is refused."""
    class AddsScore(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = 1.25

    m = net()
    cks = [callbacks.ModelCheckpoint(str(tmp_path / "lr-{learning_rate:.2f}.npz")),
           callbacks.ModelCheckpoint(str(tmp_path / "s-{score:.2f}.npz"))]
    m.fit(X2, Y, verbose=0, epochs=1, callbacks=[callbacks.ReduceLROnPlateau(monitor="loss"), cks[0], AddsScore(),
                                                 cks[1]])
    assert sorted(os.listdir(tmp_path)) == ["lr-0.01.npz", "s-1.25.npz"]
    with pytest.raises(KeyError, match=r"\{score\}"):    # but only from a callback before the checkpoint
        net().fit(X2, Y, verbose=0, epochs=1, callbacks=[cks[1], AddsScore()])


def test_a_batch_checkpoint_name_can_use_batch_but_not_val_values(tmp_path):
    m = net()
    m.fit(X2, Y, verbose=0, epochs=1, batch_size=4,
          callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.npz"), save_freq=1)])
    assert sorted(os.listdir(tmp_path)) == ["e1-b1.npz", "e1-b2.npz"]
    ck = callbacks.ModelCheckpoint(str(tmp_path / "x-{val_loss}.npz"), save_freq=1)
    refused(net(), KeyError, "batch logs", callbacks=[ck], validation_data=(XV, YV))
    ck = callbacks.ModelCheckpoint(str(tmp_path / "x-{batch}.npz"))      # save_freq='epoch': no {batch}
    refused(net(), KeyError, r"\{batch\}", callbacks=[ck])


def test_a_missing_checkpoint_folder_is_created_as_keras_does(tmp_path):
    path = tmp_path / "a" / "b" / "ck.npz"
    net().fit(X2, Y, verbose=0, epochs=1, callbacks=[callbacks.ModelCheckpoint(str(path))])
    assert path.is_file()


def test_checkpoint_paths_that_cannot_be_written_are_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    refused(net(), NotADirectoryError, "is a file, not a folder",
            callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "file" / "sub" / "ck.npz"))])
    (tmp_path / "dir.npz").mkdir()
    refused(net(), IsADirectoryError, "is a folder",
            callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "dir.npz"))])


def read_only(monkeypatch, tmp_path, folder):
    """Make ``folder`` read-only: by its mode, or (as root, whom modes do not stop) as os.access sees it."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real = os.access
    monkeypatch.setattr(file_checks.os, "access",
                        lambda p, mode: False if os.path.abspath(p) == str(folder) else real(p, mode))


@pytest.mark.parametrize("make", [lambda p: callbacks.ModelCheckpoint(str(p / "sub" / "ck.npz")),
                                  lambda p: callbacks.ModelCheckpoint(str(p / "ck.npz")),
                                  lambda p: callbacks.CSVLogger(str(p / "log.csv"))], ids=["new-sub", "ckpt", "csv"])
def test_a_read_only_folder_is_refused_before_training(monkeypatch, tmp_path, make):
    folder = tmp_path / "ro"
    read_only(monkeypatch, tmp_path, folder)
    try:
        refused(net(), PermissionError, "is not writable", callbacks=[make(folder)])
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


def test_csv_logger_into_a_missing_folder_is_refused_before_training(tmp_path):
    """Keras' CSVLogger does not create folders either (its open() fails in on_train_begin): here the
    FileNotFoundError comes before anything is built, naming the folder."""
    msg = refused(net(), FileNotFoundError, "does not exist; create it first",
                  callbacks=[callbacks.CSVLogger(str(tmp_path / "nope" / "log.csv"))])
    assert str(tmp_path / "nope") in msg
    assert not (tmp_path / "nope").exists()
    ok = tmp_path / "log.csv"
    net().fit(X2, Y, verbose=0, epochs=1, callbacks=[callbacks.CSVLogger(str(ok))])
    assert ok.read_text().startswith("epoch,")


def test_a_read_only_csv_file_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("")
    real = os.access
    monkeypatch.setattr(file_checks.os, "access", lambda p, mode: False if str(p) == str(path) else real(p, mode))
    refused(net(), PermissionError, "read-only", callbacks=[callbacks.CSVLogger(str(path), append=True)])


# ---------------------------------------------------------------- 3. tensor()
@pytest.mark.parametrize("data, error, match", [
    ("abc", TypeError, "got str"),
    (b"abc", TypeError, "got bytes"),
    (None, TypeError, "got NoneType"),
    ({"a": 1}, TypeError, "got dict"),
    ({1, 2}, TypeError, "got set"),
    ([[1, 2], [3]], ValueError, "ragged"),
    (["1", "2"], TypeError, "strings"),
    ([1, None], TypeError, "Python objects"),
    (np.array([1.0, "a"], dtype=object), TypeError, "Python objects"),
    ([1 + 2j], TypeError, "tensors are real, got complex"),
    (np.complex64(1), TypeError, "tensors are real, got complex"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), TypeError, "datetime64"),
])
def test_tensor_refuses_what_is_not_real_numbers(dev, data, error, match):
    with pytest.raises(error, match=match):
        gpunet.tensor(data, device=dev)


LEAVES = (st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(-1e6, 1e6) | st.text(max_size=2)
          | st.complex_numbers(max_magnitude=10, allow_nan=False))
NESTED = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=1), inner,
                                                                                          max_size=2), max_leaves=8)
REFUSALS = ("a tensor holds numbers", "ragged", "tensors are real")


@settings(derandomize=True, max_examples=150, deadline=None)
@given(NESTED)
def test_tensor_of_any_nested_python_data_is_numpy_s_array_or_a_clear_refusal(data):
    """The oracle is NumPy: where it makes a bool/int/float array of the data, the tensor holds the same
    values (floats as float32); anything else is a TypeError/ValueError that says what is wrong."""
    try:
        want = np.asarray(data)
    except ValueError:
        want = None
    if want is not None and want.dtype.kind in "biuf" and not isinstance(data, (str, dict)):
        got = gpunet.tensor(data)
        np.testing.assert_array_equal(got.numpy(), want.astype(np.float32) if want.dtype.kind == "f" else want)
        return
    with pytest.raises((TypeError, ValueError)) as err:
        gpunet.tensor(data)
    assert any(part in str(err.value) for part in REFUSALS), err.value


def test_tensor_refuses_strings_even_with_a_numeric_dtype():
    """NumPy would parse ['1', '2'] with dtype=float32; a tensor of strings is a mistake either way."""
    assert np.asarray(["1", "2"], dtype=np.float32).tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="strings"):
        gpunet.tensor(["1", "2"], dtype="float32")
    with pytest.raises(TypeError, match="tensors are real, got complex"):
        gpunet.tensor([1.0], dtype="complex64")


@pytest.mark.parametrize("data", [True, 3, 2.5, [1, 2], np.uint8(7), np.float16([1, 2]), np.arange(3, dtype=np.int8)])
def test_tensor_takes_numbers(dev, data):
    t = gpunet.tensor(data, device=dev)
    np.testing.assert_array_equal(t.numpy(), np.asarray(data).astype(t.dtype))


def test_integer_true_division_gives_float32_with_numpy_s_values(dev):
    a, b = np.array([7, -3, 1, 2 ** 20]), np.array([2, 4, 3, 7])
    ta, tb = gpunet.tensor(a, device=dev), gpunet.tensor(b, device=dev)
    want = (a / b).astype(np.float32)             # NumPy's float64 quotient, rounded
    for got in (ta / tb, ta / b, a / tb, gpunet.ops.divide(ta, tb), gpunet.ops.divide(a, tb)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.numpy(), want)
    assert (ta / 2).dtype == np.float32 and (2 / ta).dtype == np.float32
    assert (gpunet.tensor([True, False], device=dev) / 2).dtype == np.float32


def test_numpy_scalars_in_a_division_count_as_python_numbers(dev):
    x = gpunet.tensor([1.0, 3.0], device=dev)
    assert (x / np.float64(2)).dtype == np.float32          # NumPy 2 alone: float64
    assert (x.astype("float32") / np.int64(2)).dtype == np.float32
    assert (gpunet.tensor([3, 4], device=dev) / np.int64(2)).dtype == np.float32
    np.testing.assert_array_equal((x / np.float64(2)).numpy(), np.float32([0.5, 1.5]))
    wide = gpunet.tensor(np.array([1.0, 3.0]), dtype="float64", device=dev)
    assert (wide / 2).dtype == np.float64                    # asked for float64: kept


def test_division_still_differentiates(dev):
    x = gpunet.tensor([1.0, 2.0], device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = (np.float64(3) / x).sum()
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [-3.0, -0.75])


# ---------------------------------------------------------------- 4. layer arguments
@pytest.mark.parametrize("rate", [np.float32(0.5), np.float64(0.25), np.int64(0), np.float16(0.5)])
def test_dropout_takes_numpy_scalars(rate):
    d = layers.Dropout(rate)
    assert d.rate == float(rate) and isinstance(d.rate, float)
    assert layers.Dropout.from_config(d.get_config()).rate == float(rate)


@pytest.mark.parametrize("rate", [np.float32("nan"), float("inf"), np.float64(1.0), -0.1, "0.5", None])
def test_dropout_refuses_rates_outside_0_1(rate):
    with pytest.raises(ValueError, match="rate"):
        layers.Dropout(rate)


def test_layers_take_numpy_integers_and_floats():
    assert layers.Dense(np.int64(3)).units == 3
    r = layers.Rescaling(np.float32(0.5), offset=np.float64(-1))
    assert (r.scale, r.offset) == (0.5, -1.0)
    out = r(np.array([[0, 4]], dtype=np.uint8)).numpy()
    np.testing.assert_array_equal(out, np.float32([[-1, 1]]))


@pytest.mark.parametrize("value, error, match", [
    ("a", TypeError, "must be a number"), (None, TypeError, "must be a number"), (b"1", TypeError, "must be a number"),
    ({"a": 1}, TypeError, "must be a number"), ([1, "x"], TypeError, "must be a number"),
    (1j, TypeError, "must be a number"),
    (float("nan"), ValueError, "must be finite"), (float("inf"), ValueError, "must be finite"),
    (-np.inf, ValueError, "must be finite"), ([1.0, np.nan], ValueError, "must be finite"),
])
@pytest.mark.parametrize("which", ["scale", "offset"])
def test_rescaling_refuses_what_is_not_a_finite_number(value, error, match, which):
    kwargs = {"scale": 1.0, which: value}
    with pytest.raises(error, match=f"Rescaling {which} {match}"):
        layers.Rescaling(**kwargs)
