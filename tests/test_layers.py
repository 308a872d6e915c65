"""Each built-in layer's array-level forward/backward (what the tape and the tapeless step both run)
against float64 central differences; Dropout's seed; Sequential.pop; train_on_batch."""
import numpy as np
import pytest

import gpunet
from gpunet import activations, layers, models
from gpunet.utils import to_categorical

rng = np.random.default_rng(11)


def _numeric(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def check_layer(layer, x, training=False, reset=lambda: None, eps=1e-6):
    """backward(saved, gz) against d sum(forward(x) * gz) / d(x and every weight), in float64."""
    layer.maybe_build(x.shape, "cpu")
    for w in layer.weights:                        # the same math in float64: exact enough to compare
        w.data = w.data.astype(np.float64)
    reset()
    z, saved = layer.forward(np, x, training)
    gz = rng.standard_normal(z.shape)
    gx, weight_grads = layer.backward(saved, gz, True)
    assert len(weight_grads) == len(layer.weights)

    def value():
        reset()
        return float((layer.forward(np, x, training)[0] * gz).sum())
    np.testing.assert_allclose(gx, _numeric(value, x, eps), rtol=1e-6, atol=1e-8, err_msg="input gradient")
    for w, g in zip(layer.weights, weight_grads):
        np.testing.assert_allclose(g, _numeric(value, w.data, eps), rtol=1e-6, atol=1e-8, err_msg=w.name)
    return z


@pytest.mark.parametrize("shape,use_bias", [((5, 4), True), ((2, 3, 4), True), ((5, 4), False)])
def test_dense(shape, use_bias):
    x = rng.standard_normal(shape)
    layer = layers.Dense(3, use_bias=use_bias)
    z = check_layer(layer, x)
    np.testing.assert_allclose(z, x @ layer.kernel.data + (layer.bias.data if use_bias else 0))


def test_flatten_rescaling_activation_input_layers():
    x = rng.standard_normal((3, 2, 4))
    np.testing.assert_array_equal(check_layer(layers.Flatten(), x), x.reshape(3, 8))
    # Rescaling computes in float32 whatever it is given; it is linear, so a wide step is exact
    np.testing.assert_allclose(check_layer(layers.Rescaling(0.5, offset=-1.0), x, eps=0.5), x * 0.5 - 1, rtol=1e-6)
    np.testing.assert_array_equal(check_layer(layers.Activation("tanh"), x), x)     # its activation comes after
    np.testing.assert_array_equal(check_layer(layers.InputLayer(shape=(2, 4)), x), x)


def test_dropout_in_training_and_at_inference():
    x = rng.standard_normal((6, 5))
    layer = layers.Dropout(0.4, seed=3)
    state = layer.get_state()
    z = check_layer(layer, x, training=True, reset=lambda: layer.set_state(state))
    assert 0 < (z == 0).sum() < z.size and np.allclose(z[z != 0], x[z != 0] / 0.6)
    np.testing.assert_array_equal(check_layer(layers.Dropout(0.4), x, training=False), x)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "linear"])
def test_activation_array_pairs(name):
    act = activations.get(name)
    z = rng.standard_normal((4, 5))
    y = act.forward(np, z.copy())
    g = rng.standard_normal(z.shape)
    got = act.backward(np, g, y)
    np.testing.assert_allclose(got, _numeric(lambda: float((act.forward(np, z.copy()) * g).sum()), z),
                               rtol=1e-6, atol=1e-8)


def test_dropout_seed_gives_its_own_repeatable_masks_and_survives_a_checkpoint(tmp_path):
    x = gpunet.tensor(np.ones((50, 20), np.float32))
    a, b = layers.Dropout(0.5, seed=7), layers.Dropout(0.5, seed=7)
    gpunet.random.seed(1)
    first = a(x, training=True).numpy()
    gpunet.random.seed(2)                              # gpunet's generator does not matter to a seeded layer
    np.testing.assert_array_equal(b(x, training=True).numpy(), first)
    assert not np.array_equal(a(x, training=True).numpy(), first)     # the stream goes on
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        layers.Dropout(0.5, seed=-1)
    net = models.Sequential([layers.Dense(4, input_shape=(3,)), layers.Dropout(0.5, seed=5),
                             layers.Dense(2, activation="softmax")])
    net.compile(optimizer="sgd", loss="categorical_crossentropy")
    xs, ys = rng.random((32, 3), dtype=np.float32), to_categorical(rng.integers(0, 2, 32), 2)
    net.fit(xs, ys, epochs=1, batch_size=8, verbose=0)
    net.save(tmp_path / "m.npz")
    net.fit(xs, ys, epochs=2, batch_size=8, verbose=0, initial_epoch=1)
    back = models.load_model(tmp_path / "m.npz")
    assert back.layers[1].seed == 5
    back.fit(xs, ys, epochs=2, batch_size=8, verbose=0, initial_epoch=1)
    for u, v in zip(back.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_pop_removes_the_last_layer():
    net = models.Sequential([layers.Dense(4, input_shape=(3,)), layers.Dense(2)])
    last = net.pop()
    assert last.units == 2 and [layer.units for layer in net.layers] == [4] and net.count_params() == 16
    net.pop()
    assert net.layers == [] and not net.built
    with pytest.raises(IndexError, match="no layers"):
        net.pop()


@pytest.mark.parametrize("jit", [True, False])
def test_train_on_batch_is_one_fit_step_and_returns_the_loss_before_it(jit):
    x, y = rng.random((16, 6), dtype=np.float32), to_categorical(rng.integers(0, 3, 16), 3)

    def net():
        gpunet.random.seed(4)
        m = models.Sequential([layers.Dense(5, activation="relu", input_shape=(6,)), layers.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
        return m

    a, b = net(), net()
    before = a.evaluate(x, y, batch_size=16, verbose=0)
    got = a.train_on_batch(x, y)
    b.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(got, before, rtol=1e-6)
    assert a.optimizer.iterations == b.optimizer.iterations == 1
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert set(a.train_on_batch(x, y, return_dict=True)) == {"loss", "accuracy"}


class SimpleDense(layers.Layer):
    """The book's next chapter's hand-written Dense: it applies its own activation inside call."""

    def __init__(self, units, activation=None):
        super().__init__()
        self.units, self.activation = units, activation

    def build(self, input_shape):
        self.W = self.add_weight("W", (input_shape[-1], self.units), "glorot_uniform")
        self.b = self.add_weight("b", (self.units,), "zeros")

    def call(self, x, training=False):
        y = gpunet.ops.matmul(x, self.W) + self.b
        return self.activation(y) if self.activation is not None else y


class DoubledDense(layers.Dense):
    def call(self, x, training=False):
        return super().call(x, training) * 2


def test_a_layer_that_overrides_call_is_its_whole_math():
    """Nothing is applied after a user's call (Keras semantics): its own activation runs once, and a
    Dense subclass's super().call() is the activated output."""
    x = rng.random((4, 5), dtype=np.float32)
    custom = models.Sequential([SimpleDense(3, activations.softmax)])
    out = custom.predict(x)
    z = x @ custom.layers[0].W.numpy() + custom.layers[0].b.numpy()
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    doubled = models.Sequential([DoubledDense(3, activation="relu", input_shape=(5,))])
    kernel = doubled.layers[0].kernel.numpy()
    np.testing.assert_allclose(doubled.predict(x), 2 * np.maximum(x @ kernel, 0), rtol=1e-6)
    custom.compile(optimizer="sgd", loss="categorical_crossentropy")
    h = custom.fit(x, to_categorical([0, 1, 2, 0], 3), epochs=1, verbose=0)
    assert not custom._last_fit["tapeless"] and np.isfinite(h.history["loss"][0])


def test_softmax_takes_its_axis_by_position_or_name():
    x = gpunet.tensor(rng.random((3, 4), dtype=np.float32))
    np.testing.assert_allclose(activations.softmax(x, 0).numpy().sum(axis=0), np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(activations.softmax(x, axis=0).numpy(), activations.softmax(x, 0).numpy())
