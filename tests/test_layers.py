"""Each built-in layer's array-level forward/backward (what the tape and the tapeless step both run)
against float64 central differences; Dropout's seed and noise_shape; building once however it is
triggered; trainable; compute_output_shape and configs (old ones too) of every layer; the tapeless
step bit-identical to the tape with the new features; Sequential.pop; train_on_batch."""
import json

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
    assert len(weight_grads) == len(layer.trainable_weights)

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


# ------------------------------------------------------------------ Keras features: noise_shape, data_format, vectors
def test_dropout_noise_shape_broadcasts_one_mask_and_its_gradient():
    x = rng.standard_normal((6, 3, 5))
    layer = layers.Dropout(0.4, noise_shape=(None, 1, None), seed=3)
    state = layer.get_state()
    z = check_layer(layer, x, training=True, reset=lambda: layer.set_state(state))
    dropped = z == 0
    assert 0 < dropped.sum() < z.size and (dropped == dropped[:, :1, :]).all()     # same mask at every step
    assert layer.mask_shape((6, 3, 5)) == (6, 1, 5)
    shared = layers.Dropout(0.5, noise_shape=(1, 5), seed=1)(np.ones((40, 5), np.float32), training=True).numpy()
    assert (shared == shared[:1]).all()                                                # one row for the whole batch
    with pytest.raises(gpunet.ShapeError, match=r"noise_shape \(4, 1\) does not broadcast"):
        layers.Dropout(0.5, noise_shape=(4, 1))(np.ones((3, 2), np.float32), training=True)


def test_flatten_channels_first_and_vector_rescaling_gradients():
    x = rng.standard_normal((3, 2, 4, 5))
    z = check_layer(layers.Flatten(data_format="channels_first"), x)
    np.testing.assert_array_equal(z, np.moveaxis(x, 1, -1).reshape(3, -1))
    with pytest.raises(ValueError, match="data_format"):
        layers.Flatten(data_format="channels_middle")
    x = rng.standard_normal((4, 3))
    z = check_layer(layers.Rescaling([0.5, -1.0, 2.0], offset=[0.0, 1.0, 2.0]), x, eps=0.5)
    np.testing.assert_allclose(z, x * [0.5, -1, 2] + [0, 1, 2], rtol=1e-6)
    u8 = np.arange(12, dtype=np.uint8).reshape(4, 3)
    np.testing.assert_allclose(layers.Rescaling([0.5, 1.0, 2.0])(u8).numpy(), u8 * [0.5, 1, 2])


# ------------------------------------------------------------------------------------------------ building
ALL_LAYERS = [(lambda: layers.Dense(3), (None, 4), (None, 3)),
              (lambda: layers.Dense(3), (2, 5, 4), (2, 5, 3)),
              (lambda: layers.Activation("relu"), (None, 4), (None, 4)),
              (lambda: layers.Flatten(), (None, 2, 3), (None, 6)),
              (lambda: layers.Flatten(data_format="channels_first"), (2, 2, 3, 4), (2, 24)),
              (lambda: layers.Flatten(), (None,), (None, 1)),
              (lambda: layers.Dropout(0.5, noise_shape=(None, 1)), (None, 4), (None, 4)),
              (lambda: layers.Rescaling(0.5, offset=1), (None, 4), (None, 4)),
              (lambda: layers.InputLayer(shape=(4,)), (None, 4), (None, 4))]


@pytest.mark.parametrize("make,input_shape,output_shape", ALL_LAYERS)
def test_every_layer_builds_once_however_it_is_triggered_and_knows_its_output_shape(dev, make, input_shape,
                                                                                       output_shape):
    layer = make()
    assert layer.compute_output_shape(input_shape) == output_shape
    layer.build(input_shape)                               # a direct build builds, on the default device
    assert layer.built and layer.device == dev and layer.output_shape == output_shape
    before = layer.get_weights()
    x = rng.random(tuple(d or 2 for d in input_shape), dtype=np.float32)
    out = layer(x, training=True)                           # the call does not build again
    assert out.shape == tuple(d or 2 for d in output_shape)
    layer.build(input_shape)                                # nor does a second build
    assert len(layer.weights) == len(before)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_set_weights_after_a_direct_build_are_kept_by_models_too():
    dense = layers.Dense(2, activation="relu")
    dense.build((None, 2))
    dense.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]]), np.array([5.0, -6.0])])
    net = models.Sequential([dense])
    np.testing.assert_allclose(net.predict(np.array([[-1.0, 2.0]], np.float32), verbose=0), [[10.0, 0.0]])
    assert len(net.weights) == 2


class TwoStepDense(layers.Dense):
    """A subclass whose build adds a weight and calls super().build: still one build."""

    def build(self, input_shape):
        super().build(input_shape)
        self.scale = self.add_weight("scale", (self.units,), "ones")


class BrokenBuild(layers.Dense):
    def build(self, input_shape):
        super().build(input_shape)
        raise RuntimeError("disk on fire")


def test_a_subclass_build_runs_once_and_a_failed_build_leaves_nothing():
    layer = TwoStepDense(3)
    layer.build((None, 4))
    layer(np.ones((2, 4), np.float32))
    assert [w.name.split("/")[1] for w in layer.weights] == ["kernel", "bias", "scale"] and layer.output_shape == (None, 3)
    broken = BrokenBuild(3)
    with pytest.raises(RuntimeError, match="disk on fire"):
        broken.build((None, 4))
    assert not broken.built and broken.weights == [] and broken.kernel is None and broken.output_shape is None


# ------------------------------------------------------------------------------------------------ trainable
def test_a_frozen_layer_has_no_trainable_weights_and_no_weight_gradients():
    x = rng.standard_normal((5, 4))
    layer = layers.Dense(3, trainable=False)
    z = check_layer(layer, x)                            # the input gradient is still exact; no weight gradients
    np.testing.assert_allclose(z, x @ layer.kernel.data + layer.bias.data)
    assert layer.trainable_weights == [] and layer.non_trainable_weights == layer.weights and len(layer.weights) == 2
    layer.trainable = True
    assert layer.trainable_weights == layer.weights and layer.non_trainable_weights == []
    with pytest.raises(ValueError, match="`trainable` to be a boolean"):
        layers.Dense(3, trainable="no")
    frozen = layers.Dense(2, trainable=False)
    xt = gpunet.tensor(rng.random((3, 4), dtype=np.float32), requires_grad=True)
    with gpunet.GradientTape() as tape:
        loss = frozen(xt).sum()
    gx, gk = tape.gradient(loss, [xt, frozen.kernel])
    assert gk is None
    np.testing.assert_allclose(gx.numpy(), np.broadcast_to(frozen.kernel.numpy().sum(axis=1), (3, 4)), rtol=1e-6)


def _frozen_and_noise_model():
    return models.Sequential([
        layers.InputLayer(shape=(4, 6)), layers.Rescaling([1 / 255] * 5 + [2 / 255], offset=-0.5),
        layers.Dropout(0.3, noise_shape=(None, 1, None), seed=4),
        layers.Dense(8, activation="tanh", trainable=False),
        layers.Flatten(data_format="channels_first"), layers.Dropout(0.2, noise_shape=(1, None)),
        layers.Dense(3, activation="softmax")])


def test_noise_shape_dropout_and_frozen_layers_train_tapeless_bit_identically_to_the_tape(dev):
    data_rng = np.random.default_rng(5)
    x, y = data_rng.integers(0, 256, (96, 4, 6), dtype=np.uint8), to_categorical(data_rng.integers(0, 3, 96), 3)
    results = []
    for jit in (True, False):
        gpunet.random.seed(3)
        net = _frozen_and_noise_model()
        frozen = net.layers[-4].get_weights()
        net.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
        h = net.fit(x, y, epochs=2, batch_size=16, verbose=0)
        assert net._last_fit["tapeless"] == jit
        assert len(net.trainable_weights) == 2
        for a, b in zip(frozen, net.layers[-4].get_weights()):       # the frozen layer did not move
            np.testing.assert_array_equal(a, b)
        results.append((net.get_weights(), h.history))
    (w_tapeless, h_tapeless), (w_tape, h_tape) = results
    for a, b in zip(w_tapeless, w_tape):
        if dev.is_gpu:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(h_tapeless["loss"], h_tape["loss"], rtol=1e-6)
    assert h_tapeless["accuracy"] == h_tape["accuracy"]


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("make", [lambda: layers.Dense(4, activation="tanh", use_bias=False, kernel_initializer="he_normal",
                                                       input_shape=(3,), trainable=False),
                                  lambda: layers.Activation("softmax", name="probabilities"),
                                  lambda: layers.Flatten(data_format="channels_first"),
                                  lambda: layers.Dropout(0.25, noise_shape=(None, 1), seed=9),
                                  lambda: layers.Rescaling(np.float32(1 / 255), offset=[0.0, 1.0]),
                                  lambda: layers.InputLayer(shape=(8, 8), batch_size=32, dtype="uint8")])
def test_every_layer_config_round_trips_through_json(make):
    layer = make()
    config = json.loads(json.dumps(layer.get_config()))
    assert {"name"} <= set(config) and (isinstance(layer, layers.InputLayer) or {"trainable", "dtype"} <= set(config))
    again = layers.deserialize(json.loads(json.dumps(layers.serialize(layer))))
    assert json.loads(json.dumps(again.get_config())) == config
    assert set(vars(again)) == set(vars(layer)) and again.trainable == layer.trainable


@pytest.mark.parametrize("spec,check", [
    ({"class": "Dense", "config": {"name": "dense_2", "input_shape": [6], "units": 5, "activation": "relu",
                                   "use_bias": True}},
     lambda layer: (layer.units, layer.input_shape, layer.trainable) == (5, (6,), True)),
    ({"class": "Dropout", "config": {"name": "dropout_1", "input_shape": None, "rate": 0.25}},
     lambda layer: (layer.rate, layer.seed, layer.noise_shape) == (0.25, None, None)),
    ({"class": "Dropout", "config": {"name": "dropout_2", "input_shape": None, "rate": 0.5, "seed": 5}},
     lambda layer: layer.seed == 5),
    ({"class": "Rescaling", "config": {"name": "rescaling", "input_shape": [784], "scale": 0.00392156862745098,
                                       "offset": 0.0}},
     lambda layer: layer.scale == 1 / 255 and layer.input_shape == (784,)),
    ({"class": "Flatten", "config": {"name": "flatten", "input_shape": None}},
     lambda layer: layer.data_format == "channels_last"),
    ({"class": "Activation", "config": {"name": "activation", "input_shape": None, "activation": "tanh"}},
     lambda layer: layer.activation is activations.tanh),
    ({"class": "InputLayer", "config": {"name": "input_layer", "input_shape": [8, 8]}},
     lambda layer: layer.input_shape == (8, 8) and layer.batch_shape == (None, 8, 8)),
])
def test_configs_written_by_earlier_gpunet_versions_still_load(spec, check):
    assert check(layers.deserialize(spec))
