"""Keras 3's keras/src/callbacks/terminate_on_nan_test.py, ported to gpunet.

Adapted: the models are gpunet ``Sequential``/``Dense`` models (Keras' ``Constant(1e5)``
initializer is a callable filling 1e5). gpunet's ``fit`` checks every batch loss itself and stops
*before* applying a non-finite step, without ending that epoch (so no NaN reaches the history or
the CSV; ``model.stop_reason`` says why): where Keras expects one epoch with a NaN/inf loss in the
history (``test_TerminateOnNaN``), gpunet has none and the model keeps finite weights. With
``raise_error=True`` the RuntimeError is raised as in Keras, before any ``on_train_end``.
Keras' ``np.inf`` targets are 1e30 (gpunet's ``fit`` rejects non-finite data up front; the
squared error of 1e30 overflows float32 to inf in the first step all the same).
``test_raise_error_terminate_preserves_backup`` uses a callback whose ``on_train_end`` would
delete the backup (gpunet has no ``BackupAndRestore``).
"""
import os

import numpy as np
import pytest

from gpunet import callbacks, layers, models
from gpunet.callbacks import TerminateOnNaN
from gpunet.utils import to_categorical

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the overflows NumPy reports
BIG = 1e30    # Keras' targets are np.inf; gpunet's fit rejects non-finite data, and (1e30)**2 overflows float32


def _constant(value):
    return lambda shape, dtype="float32": np.full(shape, value, dtype)


def _one_dense():
    model = models.Sequential([layers.Dense(1, input_shape=(1,))])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_TerminateOnNaN():
    rs = np.random.RandomState(1337)
    x_train = rs.random_sample((10, 3))
    y_train = rs.choice(np.arange(2), size=10)
    x_test = rs.random_sample((10, 3))
    y_test = rs.choice(np.arange(2), size=10)
    y_test, y_train = to_categorical(y_test), to_categorical(y_train)
    model = models.Sequential()
    for _ in range(5):
        model.add(layers.Dense(2, activation="relu", kernel_initializer=_constant(1e5)))
    model.add(layers.Dense(2))
    model.compile(loss="mean_squared_error", optimizer="sgd")
    history = model.fit(x_train, y_train, batch_size=4, validation_data=(x_test, y_test),
                        callbacks=[callbacks.TerminateOnNaN()], epochs=20, verbose=0)
    loss = history.history.get("loss", [])
    # Keras: len(loss) == 1 and loss[0] is nan/inf. gpunet stops before the non-finite step is applied:
    assert loss == [] and model.stop_reason.startswith("epoch 1, step 1/3")
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_terminate_on_nan_graceful_stop():
    model = _one_dense()
    x, y = np.array([[1.0], [2.0]]), np.array([[BIG], [BIG]])
    history = model.fit(x, y, epochs=2, batch_size=1, callbacks=[TerminateOnNaN(raise_error=False)], verbose=0)
    assert len(history.history.get("loss", [])) < 4


def test_terminate_on_nan_raise_error_raises_error():
    model = _one_dense()
    x, y = np.array([[1.0], [2.0]]), np.array([[BIG], [BIG]])
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered"):
        model.fit(x, y, epochs=1, batch_size=1, callbacks=[TerminateOnNaN(raise_error=True)], verbose=0)


class TrackingCallback(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.train_end_called = False

    def on_train_end(self, logs=None):
        self.train_end_called = True


def test_raise_error_terminate_does_not_trigger_on_train_end():
    model = _one_dense()
    tracking_callback = TrackingCallback()
    with pytest.raises(RuntimeError):
        model.fit(np.array([[1.0]]), np.array([[BIG]]), epochs=1,
                  callbacks=[tracking_callback, TerminateOnNaN(raise_error=True)], verbose=0)
    assert not tracking_callback.train_end_called


def test_raise_error_terminate_preserves_backup(tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    fake_file = backup_dir / "checkpoint.txt"
    fake_file.write_text("dummy checkpoint")

    class CleanupOnTrainEnd(callbacks.Callback):       # stands for BackupAndRestore's cleanup
        def on_train_end(self, logs=None):
            os.remove(fake_file)

    model = _one_dense()
    with pytest.raises(RuntimeError):
        model.fit(np.array([[1.0]]), np.array([[BIG]]), epochs=1,
                  callbacks=[CleanupOnTrainEnd(), TerminateOnNaN(raise_error=True)], verbose=0)
    assert os.path.exists(backup_dir) and os.path.exists(fake_file)


@pytest.mark.parametrize("raise_error", [False, True], ids=["raise_error_false", "raise_error_true"])
def test_normal_training_does_not_raise(raise_error):
    model = _one_dense()
    x, y = np.array([[1.0], [2.0]]), np.array([[1.0], [2.0]])
    history = model.fit(x, y, epochs=2, callbacks=[TerminateOnNaN(raise_error=raise_error)], verbose=0)
    assert len(history.history["loss"]) == 2


def test_raise_error_terminate_stops_on_later_batch():
    model = _one_dense()
    x, y = np.array([[1.0], [2.0]]), np.array([[1.0], [BIG]])    # a non-finite loss only in the 2nd batch
    with pytest.raises(RuntimeError) as exc:
        model.fit(x, y, epochs=1, batch_size=1, shuffle=False, callbacks=[TerminateOnNaN(raise_error=True)],
                  verbose=0)
    assert any(f"batch {i}" in str(exc.value) for i in [0, 1])


# ----------------------------------------------------------------------------- gpunet
def test_the_batch_hook_stops_or_raises_on_a_non_finite_loss(capsys):
    """The callback itself, as Keras defines it: a NaN/inf ``loss`` in the batch logs."""
    model = _one_dense()
    cb = TerminateOnNaN()
    cb.set_model(model)
    cb.on_train_batch_end(0, {"loss": 1.0})
    assert not model.stop_training
    cb.on_train_batch_end(3, {"loss": float("inf")})
    assert model.stop_training and "Batch 3: Invalid loss, terminating training" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 5"):
        TerminateOnNaN(raise_error=True).on_batch_end(5, {"loss": float("nan")})
