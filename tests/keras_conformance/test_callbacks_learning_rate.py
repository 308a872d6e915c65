"""Keras 3's keras/src/callbacks/learning_rate_scheduler_test.py and reduce_lr_on_plateau_test.py,
ported to gpunet.

Adapted: the models are gpunet ``Sequential([Dense(5), Dense(2)])`` on data from a copy of Keras'
``test_utils.get_test_data``; ``model.optimizer.learning_rate`` is a plain float (Keras: a
float32 variable, read with ``.value``), so results that are not exact in binary (0.1 * 0.1) are
compared with ``pytest.approx`` where Keras' float32 equality holds; the verbose messages are
printed to stdout (checked with ``capsys``) where Keras logs them (``assertLogs``). The two
``test_throws_when_optimizer_has_schedule`` tests run only where gpunet's optimizers take a
``LearningRateSchedule`` (``gpunet.optimizers.schedules``). All schedules, factors, patiences,
cooldowns and expected rates are Keras'.
"""
import numpy as np
import pytest

from gpunet import callbacks, layers, models, optimizers
from gpunet.utils import to_categorical


def get_test_data(train_samples, test_samples, input_shape, num_classes, random_seed=None):
    """Keras' ``testing.test_utils.get_test_data`` (shortened: the same class templates and noise)."""
    rs = np.random.RandomState(random_seed)
    total = train_samples + test_samples
    y = np.array([i % num_classes for i in range(total)])
    templates = 2 * num_classes * rs.random_sample((num_classes,) + input_shape)
    x = (templates[y] + rs.normal(size=(total,) + input_shape)).astype("float32")
    order = rs.permutation(total)
    x, y = x[order], y[order]
    return (x[:train_samples], y[:train_samples]), (x[train_samples:], y[train_samples:])


@pytest.fixture
def data():
    (x_train, y_train), (x_test, y_test) = get_test_data(train_samples=10, test_samples=10, input_shape=(3,),
                                                         num_classes=2, random_seed=1337)
    return x_train, to_categorical(y_train), x_test, to_categorical(y_test)


def _model(optimizer="sgd"):
    model = models.Sequential([layers.Dense(5), layers.Dense(2)])
    model.compile(loss="mse", optimizer=optimizer)
    return model


def _schedules():
    return getattr(optimizers, "schedules", None)


# ----------------------------------------------------------------------------- learning_rate_scheduler_test.py
def test_updates_learning_rate(data):
    x_train, y_train, _, _ = data
    model = _model()
    lr_scheduler = callbacks.LearningRateScheduler(lambda step: 1.0 / (2.0 + step), verbose=1)
    model.fit(x_train, y_train, callbacks=[lr_scheduler], epochs=1)
    assert model.optimizer.learning_rate == 0.5


def test_verbose_logging(data, capsys):
    x_train, y_train, _, _ = data
    model = _model()
    lr_scheduler = callbacks.LearningRateScheduler(lambda step: 1.0 / (1.0 + step), verbose=1)
    model.fit(x_train, y_train, callbacks=[lr_scheduler], epochs=1)
    assert "LearningRateScheduler setting learning rate to 1.0" in capsys.readouterr().out


def test_schedule_dependent_on_previous_learning_rate(data):
    x_train, y_train, _, _ = data
    lr_scheduler = callbacks.LearningRateScheduler(lambda step, lr: lr / 2)
    initial_lr = 0.03
    model = _model(optimizers.Adam(initial_lr))
    model.fit(x_train, y_train, callbacks=[lr_scheduler], epochs=2)
    assert model.optimizer.learning_rate == initial_lr / 4.0


@pytest.mark.skipif(_schedules() is None, reason="this gpunet has no optimizers.schedules")
def test_throws_when_optimizer_has_schedule(data):
    x_train, y_train, _, _ = data
    lr_scheduler = callbacks.LearningRateScheduler(lambda step, lr: lr / 2)
    model = _model(optimizers.Adam(_schedules().PolynomialDecay(initial_learning_rate=0.1, decay_steps=10)))
    with pytest.raises(TypeError, match="This optimizer was created with a `LearningRateSchedule`"):
        model.fit(x_train, y_train, callbacks=[lr_scheduler], epochs=2)


def test_learning_rate_in_history(data):
    x_train, y_train, _, _ = data
    model = _model()
    lr_scheduler = callbacks.LearningRateScheduler(lambda step, lr: 0.5)
    history = model.fit(x_train, y_train, callbacks=[lr_scheduler], epochs=1)
    assert "learning_rate" in history.history
    assert type(history.history["learning_rate"][0]) is float
    assert history.history["learning_rate"][0] == 0.5


def test_schedule_must_return_a_float(data):
    """gpunet: Keras' rule in ``_update_optimizer_lr`` (an int is not a float)."""
    x_train, y_train, _, _ = data
    model = _model()
    with pytest.raises(ValueError, match="should be a float"):
        model.fit(x_train, y_train, callbacks=[callbacks.LearningRateScheduler(lambda epoch: 1)], epochs=1, verbose=0)


# ----------------------------------------------------------------------------- reduce_lr_on_plateau_test.py
def _adam_model():
    return _model(optimizers.Adam(0.1))


def test_reduces_lr_with_model_fit(data):
    x_train, y_train, x_test, y_test = data
    model = _adam_model()
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
    model.fit(x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=2)
    assert model.optimizer.learning_rate == pytest.approx(0.01)


@pytest.mark.skipif(_schedules() is None, reason="this gpunet has no optimizers.schedules")
def test_throws_when_optimizer_has_schedule_on_plateau(data):
    x_train, y_train, x_test, y_test = data
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
    model = _model(optimizers.Adam(_schedules().PolynomialDecay(initial_learning_rate=0.1, decay_steps=10)))
    with pytest.raises(TypeError, match="This optimizer was created with a `LearningRateSchedule`"):
        model.fit(x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=2)


def test_verbose_logging_on_plateau(data, capsys):
    x_train, y_train, x_test, y_test = data
    model = _adam_model()
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100, verbose=1)
    model.fit(x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=2)
    assert "ReduceLROnPlateau reducing learning rate to 0.01" in capsys.readouterr().out


def test_honors_min_lr(data):
    x_train, y_train, x_test, y_test = data
    model = _adam_model()
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=10, min_lr=0.005)
    model.fit(x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=4)
    assert model.optimizer.learning_rate == 0.005


def test_cooldown(data):
    x_train, y_train, x_test, y_test = data
    model = _adam_model()
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100, cooldown=2)
    model.fit(x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=4)
    # with a cooldown of 2 epochs the rate drops every other epoch: twice in 4 epochs
    assert model.optimizer.learning_rate == pytest.approx(0.001)


def test_state_reset_across_fit_calls():
    model = _adam_model()
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.1, monitor="loss", min_delta=0, cooldown=2)
    reduce_lr.set_model(model)
    reduce_lr.on_train_begin()
    reduce_lr.best = 0.5
    reduce_lr.wait = 3
    reduce_lr.cooldown_counter = 2
    reduce_lr.on_train_begin()
    assert reduce_lr.best is None
    assert reduce_lr.wait == 0
    assert reduce_lr.cooldown_counter == 0


def test_factor_of_one_or_more_is_refused():
    """gpunet: Keras' constructor rule."""
    with pytest.raises(ValueError, match="factor >= 1.0"):
        callbacks.ReduceLROnPlateau(factor=1.0)


def test_learning_rate_of_each_epoch_in_history(data):
    """gpunet: the rate each epoch trained with is logged (Keras adds it to the epoch logs)."""
    x_train, y_train, x_test, y_test = data
    model = _adam_model()
    reduce_lr = callbacks.ReduceLROnPlateau(patience=1, factor=0.5, monitor="val_loss", min_delta=100)
    history = model.fit(x_train, y_train, validation_data=(x_test, y_test), callbacks=[reduce_lr], epochs=3,
                        verbose=0)
    assert history.history["learning_rate"] == [0.1, 0.1, 0.05]
