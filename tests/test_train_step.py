"""The tapeless training step gives the taped step's results bit for bit, and is used wherever every
layer has array-level forward/backward and the loss an array form."""
import numpy as np
import pytest

import gpunet
from gpunet import layers, losses, models, optimizers
from gpunet.trainers.gradients import TapelessGradients
from gpunet.utils import to_categorical

rng = np.random.default_rng(0)


def chapter(device=None):
    return [layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(512, activation="relu"),
            layers.Dense(10, activation="softmax")], "categorical_crossentropy", "rmsprop"


def deep_images(device=None):
    return [layers.InputLayer(shape=(8, 8)), layers.Rescaling(1 / 127.5, offset=-1), layers.Flatten(),
            layers.Dense(32, activation="relu"), layers.Dense(16, activation="linear", use_bias=False),
            layers.Dense(4, activation="softmax")], "sparse_categorical_crossentropy", "adam"


def float_input(device=None):
    return [layers.Dense(16, activation="relu", input_shape=(12,)), layers.Dense(3, activation="softmax")], \
        losses.CategoricalCrossentropy(), optimizers.SGD(0.1, momentum=0.9, nesterov=True)


def half_precision_input(device=None):
    return [layers.Rescaling(1 / 3, input_shape=(12,)), layers.Dense(8, activation="relu"),
            layers.Dense(3, activation="softmax")], "categorical_crossentropy", "rmsprop"


def dropout_tanh_and_activation_layer(device=None):
    return [layers.Dense(16, activation="tanh", input_shape=(12,)), layers.Dropout(0.3),
            layers.Dense(8), layers.Activation("relu"), layers.Dense(3), layers.Activation("softmax")], \
        "categorical_crossentropy", "adam"


def sigmoid_then_softmax(device=None):
    return [layers.Dense(8, activation="sigmoid", input_shape=(12,)), layers.Dense(3, activation="softmax"),
            layers.Dense(3, activation="softmax")], "categorical_crossentropy", "rmsprop"


def half_precision_into_dropout(device=None):
    return [layers.Dropout(0.3, input_shape=(12,)), layers.Dense(8, activation="relu"),
            layers.Dense(3, activation="softmax")], "sparse_categorical_crossentropy", "sgd"


def loss_from_logits(device=None):
    return [layers.Dense(8, activation="relu", input_shape=(12,)), layers.Dense(3)], \
        losses.SparseCategoricalCrossentropy(from_logits=True), optimizers.SGD(0.05, momentum=0.5)


def data(name, n=96):
    if name == "half_precision_into_dropout":
        return rng.standard_normal((n, 12)).astype(np.float16), rng.integers(0, 3, n)
    if name == "half_precision_input":
        return rng.standard_normal((n, 12)).astype(np.float16), to_categorical(rng.integers(0, 3, n), 3)
    if name == "chapter":
        return rng.integers(0, 256, (n, 784), dtype=np.uint8), to_categorical(rng.integers(0, 10, n), 10)
    if name == "deep_images":
        return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), rng.integers(0, 4, n)
    if name == "loss_from_logits":
        return rng.standard_normal((n, 12)).astype(np.float32), rng.integers(0, 3, (n, 1))
    return rng.standard_normal((n, 12)).astype(np.float32), to_categorical(rng.integers(0, 3, n), 3)


@pytest.mark.parametrize("make", [chapter, deep_images, float_input, half_precision_input,
                                  dropout_tanh_and_activation_layer, sigmoid_then_softmax, loss_from_logits,
                                  half_precision_into_dropout],
                         ids=lambda f: f.__name__)
def test_tapeless_step_equals_the_taped_step(dev, make):
    x, y = data(make.__name__)
    results = []
    for jit in (True, False):
        gpunet.random.seed(3)
        layer_list, loss, opt = make()
        net = models.Sequential(layer_list)
        net.compile(optimizer=opt, loss=loss, metrics=["accuracy"], jit_compile=jit)
        h = net.fit(x, y, epochs=2, batch_size=16, verbose=0)
        assert net._last_fit["tapeless"] == jit
        results.append((net.get_weights(), h.history))
    (w_tapeless, h_tapeless), (w_tape, h_tape) = results
    for a, b in zip(w_tapeless, w_tape):
        if dev.is_gpu:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)
    assert h_tapeless.keys() == h_tape.keys()
    np.testing.assert_allclose(h_tapeless["loss"], h_tape["loss"], rtol=1e-6)
    assert h_tapeless["accuracy"] == h_tape["accuracy"]


class Doubling(layers.Layer):
    """A user layer written with Tensor ops only (no array-level forward/backward)."""

    def call(self, x, training=False):
        return x * 2


class ScaledDense(layers.Dense):
    """A Dense whose call a user changed: its inherited forward/backward are no longer its math."""

    def call(self, x, training=False):
        return super().call(x, training) * 0.5


@pytest.mark.parametrize("layer_list,loss", [
    ([layers.Dense(8, activation="relu", input_shape=(4,)), Doubling(), layers.Dense(3, activation="softmax")],
     "categorical_crossentropy"),
    ([ScaledDense(8, activation="relu", input_shape=(4,)), layers.Dense(3, activation="softmax")],
     "categorical_crossentropy"),
    ([layers.Dense(8, activation=lambda t: t * 0.5, input_shape=(4,)), layers.Dense(3, activation="softmax")],
     "categorical_crossentropy"),
    ([layers.Dense(3, activation="linear", input_shape=(4,))], "mse"),
    ([layers.Dense(3, activation="softmax", input_shape=(4,))], "mae"),
    ([layers.Dense(1, activation="sigmoid", input_shape=(4,))], "binary_crossentropy"),
    ([layers.Dense(3, activation="softmax", input_shape=(4,))], lambda yt, yp: gpunet.ops.mean((yt - yp) ** 2)),
])
def test_other_models_use_the_tape(layer_list, loss):
    """A layer without array math, a custom activation, or a loss without an array form: the tape."""
    net = models.Sequential(layer_list)
    net.compile(optimizer="sgd", loss=loss)
    assert not TapelessGradients.supports(net, net.loss)
    rng_ = np.random.default_rng(1)
    y = rng_.random((8, net.layers[-1].units), dtype=np.float32)
    net.fit(rng_.random((8, 4), dtype=np.float32), y, epochs=1, batch_size=4, verbose=0)
    assert not net._last_fit["tapeless"]


def test_jit_compile_is_validated():
    net = models.Sequential([layers.Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError, match="jit_compile must be 'auto', True or False"):
        net.compile(loss="mse", jit_compile="xla")
