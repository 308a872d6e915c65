"""Ported from Keras 3, keras/src/models/sequential_test.py.

Adapted: symbolic calls (KerasTensor), ``model._functional``, ``model.inputs``/``outputs`` and
sub-models, functional models as layers, dict/list inputs and Lambda layers are not ported (gpunet
has only Sequential and eager calls); ``run_class_serialization_test`` is ``from_config(get_config())``
plus a comparison of the configs; ``test_bad_layer``'s second half (a call signature check) does not
apply: gpunet calls every layer with ``training=`` as a keyword.
"""
import pickle

import numpy as np
import pytest

from gpunet import layers
from gpunet.layers import Input
from gpunet.models import Sequential


def test_basic_flow_with_input():
    model = Sequential(name="seq")
    model.add(Input(shape=(2,), batch_size=3))
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    model.summary(print_fn=lambda *a: None)
    assert len(model.layers) == 2 and model.built and len(model.weights) == 4
    assert model(np.random.random((3, 2))).shape == (3, 5)
    model = Sequential(layers=[Input(shape=(2,), batch_size=3), layers.Dense(4), layers.Dense(5)])
    assert len(model.layers) == 2 and model.built and len(model.weights) == 4
    assert model(np.random.random((3, 2))).shape == (3, 5)
    model.pop()
    assert len(model.layers) == 1 and model.built and len(model.weights) == 2
    assert model(np.random.random((3, 2))).shape == (3, 4)


def test_legacy_flow_with_input_shape():
    for first in (layers.Dense(4, input_shape=(2,)), layers.Dense(4, input_dim=2)):
        model = Sequential(name="seq")
        model.add(first)
        model.add(layers.Dense(5))
        assert len(model.layers) == 2 and model.built and len(model.weights) == 4
    model = Sequential(name="seq")                       # subsequent input_shapes are ignored
    model.add(layers.Dense(4, input_shape=(2,)))
    model.add(layers.Dense(5, input_shape=(3, 4)))
    assert len(model.layers) == 2 and model.built and len(model.weights) == 4


def test_basic_flow_deferred():
    model = Sequential(name="seq")
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    model.summary(print_fn=lambda *a: None)
    assert len(model.layers) == 2
    y = model(np.random.random((3, 2)))
    assert model.built and y.shape == (3, 5)
    model.summary(print_fn=lambda *a: None)
    model = Sequential(layers=[layers.Dense(4), layers.Dense(5)])
    assert model(np.random.random((3, 2))).shape == (3, 5)
    model.pop()
    assert len(model.layers) == 1 and model.built and len(model.weights) == 2
    assert model(np.random.random((3, 2))).shape == (3, 4)


def test_errors():
    model = Sequential()
    model.add(Input(shape=(2,), batch_size=3))
    with pytest.raises(ValueError, match="already been configured"):
        model.add(Input(shape=(2,), batch_size=3))
    with pytest.raises(ValueError, match="already been configured"):
        model.add(layers.InputLayer(shape=(2,), batch_size=3))
    model = Sequential()
    model.add(layers.Dense(2, name="dense"))
    with pytest.raises(ValueError, match="should have unique names"):
        model.add(layers.Dense(2, name="dense"))
    model = Sequential()
    with pytest.raises(ValueError, match="no layers"):
        model(np.random.random((3, 2)))
    model = Sequential()
    model.add(Input(shape=(2,), batch_size=3))
    model.add(layers.Dense(2))
    with pytest.raises(ValueError, match="already been configured"):
        model.build((3, 4))
    model.build((3, 2))                                  # but this works


def test_shape_inference_failure():
    class DynamicLayer(layers.Layer):
        def call(self, inputs, training=False):
            return inputs + 1.0

    model = Sequential([DynamicLayer()])
    x = np.random.random((3, 2)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), x + 1, rtol=1e-6)
    model.summary(print_fn=lambda *a: None)


def _round_trip(model):
    revived = Sequential.from_config(model.get_config())
    assert revived.get_config() == model.get_config()
    return revived


def test_serialization():
    model = Sequential(name="seq")
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    assert len(_round_trip(model).layers) == 2            # unbuilt deferred
    model.build((2, 3))
    assert len(_round_trip(model).layers) == 2            # built deferred
    model = Sequential(name="seq")
    model.add(Input(shape=(2,), batch_size=3))
    model.add(layers.Dense(4))
    model.add(layers.Dense(5))
    model.add(layers.Dense(6))
    assert len(_round_trip(model).layers) == 3


def test_functional_properties():
    model = Sequential(name="seq")
    model.add(Input(shape=(2,)))
    model.add(layers.Dense(4))
    assert model.input_shape == (None, 2) and model.output_shape == (None, 4)


def test_training_arg():
    class CustomLayer(layers.Layer):
        def call(self, inputs, training=False):
            return inputs * 0.0 if training else inputs

    model = Sequential([CustomLayer()])
    np.testing.assert_allclose(model(np.ones((4, 20))).numpy(), 1.0)
    np.testing.assert_allclose(model(np.ones((4, 20)), training=False).numpy(), 1.0)
    np.testing.assert_allclose(model(np.ones((4, 20)), training=True).numpy(), 0.0)


def test_pickleable():
    model = Sequential(name="seq")
    model.add(layers.Dense(4))
    assert len(pickle.loads(pickle.dumps(model)).layers) == 1


def test_pickled_trained_model_keeps_weights_and_optimizer_state():     # gpunet's own addition
    model = Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(8) % 3]
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    back = pickle.loads(pickle.dumps(model))
    assert back.optimizer.iterations == 4 and [m.name for m in back.metrics] == ["accuracy"]
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    for m in (back, model):                               # the optimizer state came along: same next steps
        m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_layer():
    model = Sequential(name="seq")
    with pytest.raises(ValueError, match="Only instances of"):
        model.add({})


def test_compute_output_shape():
    assert Sequential([layers.Dense(4), layers.Dense(8)]).compute_output_shape((1, 2)) == (1, 8)


def test_hasattr():
    model = Sequential()
    assert not hasattr(model, "input_shape") and not hasattr(model, "output_shape")
    model = Sequential([layers.Input((4,)), layers.Dense(8)])
    assert hasattr(model, "input_shape") and hasattr(model, "output_shape")


def test_layers_setter():
    model = Sequential()
    with pytest.raises(AttributeError, match=r"Use `add\(\)` and `pop\(\)`"):
        model.layers = [layers.Dense(4)]
