"""Keras 3's keras/src/callbacks/early_stopping_test.py and monitor_callback_test.py, ported to gpunet.

Adapted: the models are gpunet ``Sequential``/``Dense`` models; the compiled metrics are the ones
gpunet has (``mse``, ``acc``, ``accuracy``; Keras' ``hinge`` and ``F1Score`` are dropped);
``monitor_op`` is ``operator.gt``/``operator.lt`` where Keras has ``ops.greater``/``ops.less``;
an ``'auto'`` monitor that names no loss or compiled metric raises the same ValueError, but when
training starts instead of after the first epoch. The loss sequences, patiences, baselines and
expected epochs are Keras' own. Extra tests (marked below) pin the issue's divergences.
"""
import operator

import numpy as np
import pytest

from gpunet import callbacks, layers, models


def _two_dense(loss="mae", optimizer="sgd", metrics=("mse",)):
    model = models.Sequential([layers.Dense(1, activation="relu"), layers.Dense(1, activation="relu")])
    model.compile(loss=loss, optimizer=optimizer, metrics=list(metrics))
    return model


# ----------------------------------------------------------------------------- early_stopping_test.py
def test_early_stopping():
    rng = np.random.default_rng(0)
    x_train, y_train = rng.random((10, 5)), rng.random((10, 1))
    x_test, y_test = rng.random((10, 5)), rng.random((10, 1))
    model = _two_dense(loss="mae", optimizer="adam", metrics=("mse", "acc", "accuracy"))
    cases = [
        ("max", "val_mse", "max"),
        ("min", "val_loss", "min"),
        ("auto", "val_mse", "min"),
        ("auto", "loss", "min"),
        ("auto", "acc", "max"),
        ("auto", "val_accuracy", "max"),
    ]
    for mode, monitor, expected_mode in cases:
        patience = 0
        cbks = [callbacks.EarlyStopping(patience=patience, monitor=monitor, mode=mode)]
        model.fit(x_train, y_train, batch_size=5, validation_data=(x_test, y_test), callbacks=cbks, epochs=2,
                  verbose=0)
        assert cbks[0].monitor_op is (operator.gt if expected_mode == "max" else operator.lt)

    with pytest.raises(ValueError):
        cbks = [callbacks.EarlyStopping(patience=patience, monitor="unknown")]
        model.fit(x_train, y_train, batch_size=5, validation_data=(x_test, y_test), callbacks=cbks, epochs=2,
                  verbose=0)


def test_early_stopping_patience():
    cases = [0, 1, 2, 3]
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    for patience in cases:
        stopper = callbacks.EarlyStopping(monitor="loss", patience=patience)
        stopper.set_model(models.Sequential())
        stopper.model.compile(loss="mse", optimizer="sgd")
        stopper.on_train_begin()
        for epoch, loss in enumerate(losses):
            stopper.on_epoch_end(epoch=epoch, logs={"loss": loss})
            if stopper.model.stop_training:
                break
        assert stopper.stopped_epoch == max(patience, 1) + 2


def test_early_stopping_reuse():
    patience = 3
    data = np.random.default_rng(1).random((100, 1))
    labels = np.where(data > 0.5, 1, 0)
    model = _two_dense(loss="mae", optimizer="sgd", metrics=("mse",))
    stopper = callbacks.EarlyStopping(monitor="mse", patience=patience)
    history1 = model.fit(data, labels, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history1.epoch) >= patience
    history2 = model.fit(data, labels, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history2.epoch) >= patience


def test_state_reset_across_fit_calls():
    stopper = callbacks.EarlyStopping(monitor="loss", patience=3)
    stopper.set_model(models.Sequential())
    stopper.on_train_begin()
    stopper.best = 0.1
    stopper.wait = 3
    stopper.stopped_epoch = 5
    stopper.best_epoch = 5
    stopper.best_weights = object()
    stopper.on_train_begin()
    assert stopper.best is None
    assert stopper.wait == 0
    assert stopper.stopped_epoch == 0
    assert stopper.best_epoch == 0
    assert stopper.best_weights is None


def test_early_stopping_with_baseline():
    rng = np.random.default_rng(2)
    x_train, y_train = rng.random((10, 5)), rng.random((10, 1))
    model = _two_dense(loss="mae", optimizer="sgd", metrics=("mse",))
    patience = 3
    stopper = callbacks.EarlyStopping(monitor="mse", patience=patience, baseline=0.6)
    hist = model.fit(x_train, y_train, callbacks=[stopper], verbose=0, epochs=20)
    assert len(hist.epoch) >= patience


class DummyModel:
    def __init__(self):
        self.stop_training = False
        self.weights = -1

    def get_weights(self):
        return self.weights

    def set_weights(self, weights):
        self.weights = weights

    def set_weight_to_epoch(self, epoch):
        self.weights = epoch


def _drive(early_stop, losses, stop_at=None):
    """Keras' loop of the test: set the weights to the epoch, end the epoch, stop when asked."""
    early_stop.set_model(DummyModel())
    epochs_trained = 0
    early_stop.on_train_begin()
    for epoch in range(len(losses)):
        epochs_trained += 1
        early_stop.model.set_weight_to_epoch(epoch=epoch)
        early_stop.on_epoch_end(epoch, logs={"val_loss": losses[epoch]})
        if epoch == stop_at:
            early_stop.model.stop_training = True
        if early_stop.model.stop_training:
            break
    early_stop.on_train_end()
    return epochs_trained


def test_early_stopping_final_weights_when_restoring_model_weights():
    early_stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    _drive(early_stop, [0.2, 0.15, 0.1, 0.11, 0.12])
    assert early_stop.model.get_weights() == 2          # the best epoch (loss 0.1)

    # no epoch beats the baseline: train for `patience` epochs, restore the best of them
    early_stop = callbacks.EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    epochs_trained = _drive(early_stop, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73])
    assert epochs_trained == 5
    assert early_stop.model.get_weights() == 2

    # another callback stops training: the best weights are still restored
    early_stop = callbacks.EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    epochs_trained = _drive(early_stop, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], stop_at=3)
    assert epochs_trained == 4
    assert early_stop.model.get_weights() == 2


def test_early_stopping_with_start_from_epoch():
    rng = np.random.default_rng(3)
    x_train, y_train = rng.random((10, 5)), rng.random((10, 1))
    model = _two_dense(loss="mae", optimizer="sgd", metrics=("mse",))
    start_from_epoch, patience = 2, 3
    stopper = callbacks.EarlyStopping(monitor="mse", patience=patience, start_from_epoch=start_from_epoch)
    history = model.fit(x_train, y_train, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history.epoch) >= patience + start_from_epoch

    start_from_epoch, patience = 2, 0
    stopper = callbacks.EarlyStopping(monitor="mse", patience=patience, start_from_epoch=start_from_epoch)
    history = model.fit(x_train, y_train, callbacks=[stopper], verbose=0, epochs=20)
    assert len(history.epoch) >= start_from_epoch


# ----------------------------------------------------------------------------- monitor_callback_test.py
def test_monitor_op_logic():
    rng = np.random.default_rng(4)
    x_train, y_train = rng.random((10, 5)), rng.random((10, 1))
    x_test, y_test = rng.random((10, 5)), rng.random((10, 1))
    model = _two_dense(loss="mae", optimizer="adam", metrics=("mse", "acc", "accuracy"))
    cases = [
        ("max", "val_mse", "max"),
        ("min", "val_loss", "min"),
        ("auto", "val_mse", "min"),
        ("auto", "loss", "min"),
        ("auto", "acc", "max"),
        ("auto", "val_accuracy", "max"),
    ]
    for mode, monitor, expected_mode in cases:
        monitor_callback = callbacks.MonitorCallback(monitor, mode)
        monitor_callback.set_model(model)
        model.fit(x_train, y_train, batch_size=5, validation_data=(x_test, y_test), epochs=2, verbose=0)
        monitor_callback._set_monitor_op()
        assert monitor_callback.monitor_op is (operator.gt if expected_mode == "max" else operator.lt)

    with pytest.raises(ValueError):
        monitor_callback = callbacks.MonitorCallback("unknown")
        monitor_callback.set_model(model)
        model.fit(x_train, y_train, batch_size=5, validation_data=(x_test, y_test), epochs=2, verbose=0)
        monitor_callback._set_monitor_op()


def test_min_delta():
    monitor_callback = callbacks.MonitorCallback(mode="max", min_delta=0.5)
    monitor_callback._set_monitor_op()
    assert monitor_callback._is_improvement(0.75, 0)
    assert monitor_callback._is_improvement(0.5, None)
    assert not monitor_callback._is_improvement(0.5, 0)
    assert not monitor_callback._is_improvement(0.2, 0.5)


# ----------------------------------------------------------------------------- gpunet: the divergences
def _losses_model():
    """A model whose ``fit`` reports the given epoch losses, for EarlyStopping driven through fit."""
    model = models.Sequential()
    model.compile(loss="mse", optimizer="sgd")
    return model


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_patience_on_a_still_falling_loss_never_stops(patience):
    stopper = callbacks.EarlyStopping(monitor="loss", patience=patience)
    stopper.set_model(_losses_model())
    stopper.on_train_begin({})
    for epoch, loss in enumerate([10.0, 9.0, 8.0, 7.0, 6.0, 5.0]):
        stopper.on_epoch_end(epoch, {"loss": loss})
        assert not stopper.model.stop_training, f"stopped at epoch {epoch} on a falling loss"
    assert stopper.stopped_epoch == 0


def test_missing_monitor_warns_and_training_goes_on():
    rng = np.random.default_rng(5)
    x, y = rng.random((20, 5)), rng.random((20, 1))
    model = _two_dense()
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=0)      # no validation data
    with pytest.warns(UserWarning, match="val_loss"):
        history = model.fit(x, y, epochs=3, batch_size=10, verbose=0, callbacks=[stopper])
    assert history.epoch == [0, 1, 2] and stopper.stopped_epoch == 0


def test_unknown_mode_warns_and_falls_back_to_auto():
    with pytest.warns(UserWarning, match="EarlyStopping mode 'sideways' is unknown"):
        stopper = callbacks.EarlyStopping(monitor="loss", mode="sideways")
    assert stopper.mode == "auto"


def test_restore_best_weights_in_fit_when_another_callback_stops():
    rng = np.random.default_rng(6)
    x, y = rng.random((32, 5)), rng.random((32, 1))
    model = _two_dense(optimizer="sgd")
    seen = []

    class StopAtThree(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["loss"], [w.copy() for w in self.model.get_weights()]))
            if epoch == 3:
                self.model.stop_training = True

    stopper = callbacks.EarlyStopping(monitor="loss", patience=100, restore_best_weights=True, verbose=1)
    history = model.fit(x, y, epochs=10, batch_size=8, verbose=0, callbacks=[StopAtThree(), stopper])
    assert history.epoch == [0, 1, 2, 3] and stopper.stopped_epoch == 0
    best_loss, best_weights = min(seen, key=lambda t: t[0])
    for a, b in zip(model.get_weights(), best_weights):
        np.testing.assert_array_equal(a, b)


def test_verbose_messages(capsys):
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=0, verbose=1, restore_best_weights=True)
    _drive(stopper, [0.5, 0.6])
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out
