"""Ported from Keras 3, keras/src/trainers/trainer_test.py (and the data-adapter rule for
class_weight, keras/src/trainers/data_adapters/data_adapter_utils.py), with Keras' numbers.

Adapted: Keras' ``ExampleModel`` (a Trainer that is a ``Dense(units, use_bias=False,
kernel_initializer=Ones())``) is ``Sequential([Dense(units, use_bias=False, kernel_initializer='ones',
input_shape=(4,))])``; ``run_eagerly``/``jit_compile`` variants become gpunet's two gradient paths
(``jit_compile=True``: tapeless where possible, ``False``: the tape); ``metrics.MeanSquaredError()`` is
the metric name ``'mean_squared_error'``; TPU tolerances are dropped. Tests of features gpunet does not
have (functional/subclassed models, tf.data/PyDataset/generators, steps_per_execution, nested inputs,
symbolic build, custom train_step/compute_loss overrides, torch/jax specifics) are not ported.
"""
import numpy as np
import pytest

import gpunet
from gpunet import callbacks, layers, models, optimizers

MODES = [True, False]     # jit_compile: gpunet's tapeless step where it applies / always the tape


def example_model(units=3, features=4):
    return models.Sequential([layers.Dense(units, use_bias=False, kernel_initializer="ones",
                                           input_shape=(features,))])


@pytest.mark.filterwarnings("ignore:gpunet. fit.jit_compile=True. trains without CUDA graphs")  # MSE: the tape
@pytest.mark.parametrize("jit", MODES)
@pytest.mark.parametrize("use_steps_per_epoch", [False, True])
def test_fit_flow(dev, jit, use_steps_per_epoch):
    model = example_model()
    epochs, batch_size, steps_per_epoch = 3, 20, 7
    x = np.ones((batch_size * (steps_per_epoch - 2), 4))
    y = np.zeros((batch_size * (steps_per_epoch - 2), 3))
    model.compile(optimizer=optimizers.SGD(), loss="mean_squared_error", metrics=["mean_squared_error"],
                  jit_compile=jit)
    history = model.fit(x, y, batch_size=batch_size, steps_per_epoch=steps_per_epoch if use_steps_per_epoch else None,
                        epochs=epochs, verbose=0).history
    assert "loss" in history and "mean_squared_error" in history
    np.testing.assert_allclose(history["mean_squared_error"], [14.5, 11.5, 8.5], atol=1.0)


@pytest.mark.parametrize("jit", MODES)
def test_on_batch_methods(dev, jit):
    model = example_model()
    x = np.ones((100, 4))
    y = np.zeros((100, 3))
    sw = np.arange(100).reshape((100,)).astype("float32") / 50.0
    model.compile(optimizer=optimizers.SGD(), loss="mean_squared_error", metrics=["mean_squared_error"],
                  jit_compile=jit)
    logs = model.train_on_batch(x, y)
    assert isinstance(logs, list) and len(logs) == 2
    assert logs[0] == pytest.approx(16.0)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert isinstance(logs, dict) and len(logs) == 2
    assert logs["loss"] == pytest.approx(15.158, abs=5e-4)
    logs = model.test_on_batch(x, y)
    assert isinstance(logs, list) and len(logs) == 2
    assert logs[0] == pytest.approx(14.360, abs=5e-4)
    logs = model.test_on_batch(x, y, return_dict=True)
    assert isinstance(logs, dict) and len(logs) == 2
    assert logs["loss"] == pytest.approx(14.360, abs=5e-4)
    output = model.predict_on_batch(x)
    assert isinstance(output, np.ndarray)
    np.testing.assert_allclose(output[0], [3.789511] * 3, rtol=1e-6)
    # with sample weights
    logs = model.train_on_batch(x, y, sw)
    assert logs[0] == pytest.approx(14.217, abs=5e-4)
    logs = model.test_on_batch(x, y, sw)
    assert logs[0] == pytest.approx(13.476, abs=5e-4)
    np.testing.assert_allclose(model.predict_on_batch(x)[0], [3.689468] * 3, rtol=1e-6)
    # with class weights
    logs = model.train_on_batch(x, y, class_weight={1: 0.3, 0: 0.2})
    assert logs[0] == pytest.approx(2.722, abs=5e-4)


def test_on_batch_methods_without_training(dev):
    model = example_model()
    x = np.ones((100, 4))
    y = np.zeros((100, 3))
    model.compile(loss="mean_squared_error", metrics=["mean_squared_error"])
    output = model.predict_on_batch(x)
    assert isinstance(output, np.ndarray)
    np.testing.assert_allclose(output[0], [4.0, 4.0, 4.0])
    logs = model.test_on_batch(x, y)
    assert isinstance(logs, list) and len(logs) == 2 and logs[0] == pytest.approx(16.0)
    logs = model.test_on_batch(x, y, return_dict=True)
    assert isinstance(logs, dict) and len(logs) == 2 and logs["loss"] == pytest.approx(16.0)


class StepObserver(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begin_count = self.end_count = self.epoch_begin_count = self.epoch_end_count = 0
        self.batch_loss_history = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begin_count += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end_count += 1

    def on_batch_begin(self, batch, logs=None):
        self.begin_count += 1

    def on_batch_end(self, batch, logs=None):
        self.end_count += 1
        self.batch_loss_history.append(logs["mean_squared_error"])


@pytest.mark.parametrize("steps_per_epoch_test", ["match_one_epoch", "match_multi_epoch", "not_match_too_low",
                                                  "not_match_but_high_enough"])
@pytest.mark.parametrize("jit", MODES)
def test_steps_per_epoch(steps_per_epoch_test, jit):
    batch_size, epochs, num_batches = 8, 4, 10
    data_size = num_batches * batch_size
    steps_per_epoch = {"match_one_epoch": num_batches, "match_multi_epoch": num_batches // (epochs // 2),
                       "not_match_too_low": num_batches - 1, "not_match_but_high_enough": num_batches + 1
                       }[steps_per_epoch_test]
    x, y = np.ones((data_size, 4)), np.ones((data_size, 1))
    model = example_model(units=1)
    model.compile(loss="mse", optimizer="sgd", metrics=["mean_squared_error"], jit_compile=jit)
    step_observer = StepObserver()
    model.fit(x=x, y=y, batch_size=batch_size, epochs=epochs, steps_per_epoch=steps_per_epoch,
              callbacks=[step_observer], verbose=0)
    if steps_per_epoch_test != "not_match_too_low":
        training_batch_count = epochs * min(steps_per_epoch, num_batches)
    else:
        complete_epochs = num_batches // steps_per_epoch
        remaining_steps = num_batches % steps_per_epoch
        steps_cycles = [complete_epochs * steps_per_epoch, remaining_steps] * epochs
        training_batch_count = sum(steps_cycles[:epochs])
    assert step_observer.begin_count == training_batch_count
    assert step_observer.end_count == step_observer.begin_count
    assert step_observer.epoch_begin_count == epochs
    assert step_observer.epoch_end_count == step_observer.epoch_begin_count


def test_evaluate_with_different_batch_size_same_loss():
    x = np.random.default_rng(0).random((100, 4))
    y = np.ones((100, 1))
    model = example_model(units=1)
    model.compile(loss="mse")
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=80, verbose=0),
                               model.evaluate(x, y, batch_size=100, verbose=0), rtol=1e-6)


def test_evaluate_return_list_respect_metrics_order():
    def metrics_zero(y_true, y_pred):
        return 0.0

    def metrics_one(y_true, y_pred):
        return 1.0

    model = example_model(units=3, features=2)
    model.compile(optimizer="sgd", loss="mse", metrics=[metrics_zero, metrics_one])
    eval_out = model.evaluate(np.ones((3, 2)), np.ones((3, 3)), verbose=0)
    assert len(eval_out) == 3 and eval_out[1] == 0.0 and eval_out[2] == 1.0
    model.compile(optimizer="sgd", loss="mse", metrics=[metrics_one, metrics_zero])
    eval_out = model.evaluate(np.ones((3, 2)), np.ones((3, 3)), verbose=0)
    assert len(eval_out) == 3 and eval_out[1] == 1.0 and eval_out[2] == 0.0


# --- Keras' rules for class_weight and the weighted metrics' names (data_adapter_utils, compile_utils) ---
def test_class_weight_to_sample_weights_and_the_refusals():
    from gpunet.trainers.input_checks import sample_weights
    x = np.zeros((4, 2))
    one_hot = np.eye(3)[[0, 2, 1, 2]]
    np.testing.assert_allclose(sample_weights(x, one_hot, None, {0: 0.5, 2: 3}, "fit"), [0.5, 3, 1, 3])
    np.testing.assert_allclose(sample_weights(x, np.array([[1.0], [0.0], [1.0], [1.0]]), None, {1: 2}, "fit"),
                               [2, 1, 2, 2])
    with pytest.raises(ValueError, match="cannot be given together"):
        sample_weights(x, one_hot, np.ones(4), {0: 1}, "fit")
    with pytest.raises(ValueError, match="integer class indices"):
        sample_weights(x, one_hot, None, {"a": 1}, "fit")


def test_weighted_metrics_are_weighted_means_and_named_as_keras_names_them():
    model = example_model(units=1)
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"], weighted_metrics=["mae"])
    x, y = np.ones((4, 4)), np.array([[4.0], [4.0], [0.0], [0.0]])
    logs = model.evaluate(x, y, sample_weight=np.array([1.0, 1.0, 1.0, 3.0]), return_dict=True, verbose=0)
    assert set(logs) == {"loss", "mae", "weighted_mae"}
    assert logs["mae"] == pytest.approx(2.0)                      # |4-4|, |4-4|, |4-0|, |4-0|
    assert logs["weighted_mae"] == pytest.approx((0 + 0 + 4 + 12) / 6)
    assert logs["loss"] == pytest.approx((16 + 48) / 4)           # sum_over_batch_size: sum(w * l) / n


@pytest.mark.parametrize("freq,want", [(1, [0, 1, 2, 3]), (2, [1, 3]), ([1, 4], [0, 3])])
def test_validation_freq(freq, want):
    model = example_model(units=1)
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 4)), np.zeros((8, 1))
    seen = []
    rec = callbacks.Callback()
    rec.on_epoch_end = lambda epoch, logs: seen.append(epoch) if "val_loss" in logs else None
    model.fit(x, y, epochs=4, validation_data=(x, y), validation_freq=freq, verbose=0, callbacks=[rec])
    assert seen == want
    with pytest.raises(ValueError, match="validation_freq must be a positive integer or a list"):
        model.fit(x, y, validation_freq=0, verbose=0)


def test_sample_weight_keeps_the_tapeless_step_bit_identical_to_the_tape():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, 12), dtype=np.uint8)
    y = rng.integers(0, 3, 64)
    w = rng.random(64).astype(np.float32)
    results = []
    for jit in (True, False):
        gpunet.random.seed(2)
        model = models.Sequential([layers.Rescaling(1 / 255, input_shape=(12,)), layers.Dense(8, activation="relu"),
                                   layers.Dense(3, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      weighted_metrics=["accuracy"], jit_compile=jit)
        h = model.fit(x, y, sample_weight=w, epochs=2, batch_size=16, verbose=0)
        assert model._last_fit["tapeless"] == jit
        results.append((model.get_weights(), h.history))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]


def test_one_optimizer_instance_cannot_train_two_models():
    """Keras 3: BaseOptimizer._check_variables_are_known refuses variables it was not built with."""
    opt = optimizers.Adam()
    a, b = example_model(units=1), example_model(units=1)
    a.compile(optimizer=opt, loss="mse")
    b.compile(optimizer=opt, loss="mse")
    x, y = np.ones((4, 4)), np.zeros((4, 1))
    a.fit(x, y, verbose=0)
    before = b.get_weights()
    with pytest.raises(ValueError, match="give each model its own optimizer"):
        b.fit(x, y, verbose=0)
    assert opt.iterations == 1 and all(np.array_equal(u, v) for u, v in zip(before, b.get_weights()))
