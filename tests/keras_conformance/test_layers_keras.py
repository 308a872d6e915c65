"""Ported from Keras 3's layer tests, with Keras' numbers:

* keras/src/layers/core/dense_test.py
* keras/src/layers/core/input_layer_test.py
* keras/src/layers/regularization/dropout_test.py
* keras/src/layers/reshaping/flatten_test.py
* keras/src/layers/preprocessing/rescaling_test.py
* keras/src/layers/activations/activation_test.py

Test names are Keras' (one gpunet test per Keras test method; parametrized cases kept).

Adapted: Keras' ``run_layer_test`` is :func:`run_layer_test` below, translated to direct gpunet checks:
the config round trip (``get_config`` -> JSON -> ``from_config``, and ``layers.serialize``/``deserialize``:
same config, same attributes), ``supports_masking``, a direct ``build(input_shape)`` (built, weight
counts), the "symbolic call" as ``compute_output_shape`` (gpunet has no KerasTensors), an eager call
(output shape and values), and a one-step ``fit`` with the loss ``sum(y_pred)`` (Keras' training check;
gpunet trains on NumPy too). Every array test runs on each backend (the ``dev`` fixture).
Not ported (features gpunet does not have; see DIFFERENCES-layers.md): sparse/ragged tensors,
regularizers (``expected_num_losses``), constraints, LoRA, quantization, seed-generator counts,
mixed precision, KerasTensor inputs, tf.data/grain pipelines, image_data_format.
"""
import json

import numpy as np
import pytest

import gpunet
from gpunet import activations, layers, models, ops

rng = np.random.default_rng(1337)


def _json(value):
    return json.loads(json.dumps(value))


def run_layer_test(layer_cls, init_kwargs, input_shape=None, input_dtype="float32", input_data=None,
                   call_kwargs=None, expected_output_shape=None, expected_output=None,
                   expected_num_trainable_weights=None, expected_num_non_trainable_weights=None,
                   supports_masking=None, assert_built_after_instantiation=False, run_training_check=True):
    """Keras' ``TestCase.run_layer_test``, checked directly on a gpunet layer."""
    call_kwargs = call_kwargs or {}
    if input_data is None:
        input_data = (rng.random(input_shape) * 10).astype(input_dtype) if np.dtype(input_dtype).kind in "iu" \
            else rng.random(input_shape).astype(input_dtype)
    shape = tuple(input_data.shape)

    # serialization: get_config round trip (through JSON, as a checkpoint stores it) and serialize/deserialize
    layer = layer_cls(**init_kwargs)
    config = _json(layer.get_config())
    revived = layer_cls.from_config(config)
    assert _json(revived.get_config()) == config
    assert set(vars(revived)) == set(vars(layer))
    revived = layers.deserialize(_json(layers.serialize(layer)))
    assert type(revived) is layer_cls and _json(revived.get_config()) == config
    assert set(vars(revived)) == set(vars(layer))

    if supports_masking is not None:
        assert layer.supports_masking == supports_masking

    def build_asserts(layer):
        assert layer.built
        if expected_num_trainable_weights is not None:
            assert len(layer.trainable_weights) == expected_num_trainable_weights
        if expected_num_non_trainable_weights is not None:
            assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    def shape_matches(got):
        return len(got) == len(expected_output_shape) and all(
            e is None or e == g for e, g in zip(expected_output_shape, got))

    # build test: a direct build builds (once)
    layer = layer_cls(**init_kwargs)
    layer.build(shape)
    build_asserts(layer)
    if expected_output_shape is not None:
        assert shape_matches(layer.output_shape)

    # "symbolic call": the output shape without data, batch axis known or not
    layer = layer_cls(**init_kwargs)
    if expected_output_shape is not None:
        assert shape_matches(layer.compute_output_shape(shape))
        assert layer.compute_output_shape((None,) + shape[1:])[0] is None
    if assert_built_after_instantiation:      # gpunet builds stateless layers on first use (see DIFFERENCES)
        assert not layer.built and layer.weights == []

    # eager call
    layer = layer_cls(**init_kwargs)
    output = layer(input_data, **call_kwargs)
    build_asserts(layer)
    assert isinstance(output, gpunet.Tensor)
    if expected_output_shape is not None:
        assert shape_matches(output.shape), (output.shape, expected_output_shape)
    if expected_output is not None:
        np.testing.assert_allclose(output.numpy(), expected_output, rtol=1e-6, atol=1e-6)

    # training check: one step of fit with the loss sum(y_pred)
    if run_training_check:
        model = models.Sequential([layer])
        model.compile(optimizer="sgd", loss=lambda y_true, y_pred: ops.sum(y_pred))
        before = model.get_weights()
        model.fit(input_data, output.numpy(), epochs=1, batch_size=len(input_data), verbose=0)
        assert model.optimizer.iterations == 1
        changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
        assert sum(changed) == len(layer.trainable_weights)


# ------------------------------------------------------------------------------------------------ Dense
def test_dense_basics(dev):
    # 2D case, no bias.
    run_layer_test(layers.Dense, init_kwargs={"units": 4, "activation": "relu", "kernel_initializer": "random_uniform",
                                              "bias_initializer": "ones", "use_bias": False},
                   input_shape=(2, 3), expected_output_shape=(2, 4), expected_num_trainable_weights=1,
                   expected_num_non_trainable_weights=0, supports_masking=True)
    # 3D case (Keras adds l2 regularizers here: gpunet has none, see DIFFERENCES-layers.md)
    run_layer_test(layers.Dense, init_kwargs={"units": 5, "activation": "sigmoid"},
                   input_shape=(2, 3, 4), expected_output_shape=(2, 3, 5), expected_num_trainable_weights=2,
                   expected_num_non_trainable_weights=0, supports_masking=True)


@pytest.mark.parametrize("units", [0, -3, 2.5, None, "64"], ids=["zero", "negative", "float", "none", "string"])
def test_dense_invalid_units_raises(units):
    with pytest.raises(ValueError, match="positive integer"):
        layers.Dense(units)


def test_dense_correctness(dev):
    # With bias and activation.
    layer = layers.Dense(units=2, activation="relu")
    layer.build((1, 2))
    layer.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]]), np.array([5.0, -6.0])])
    inputs = np.array([[-1.0, 2.0]])
    np.testing.assert_allclose(layer(inputs).numpy(), [[10.0, 0.0]])
    assert len(layer.weights) == 2        # the call did not build again

    # Just a kernel matmul.
    layer = layers.Dense(units=2, use_bias=False)
    layer.build((1, 2))
    layer.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]])])
    assert layer.bias is None
    np.testing.assert_allclose(layer(inputs).numpy(), [[5.0, -6.0]])


def test_dense_errors(dev):
    layer = layers.Dense(units=2, activation="relu")
    layer(np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="incompatible with the layer"):
        layer(np.ones((1, 3), np.float32))


def test_dense_no_activation(dev):
    layer = layers.Dense(units=2, use_bias=False, activation=None)
    layer.build((1, 2))
    layer.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]])])
    assert layer.bias is None
    np.testing.assert_allclose(layer(np.array([[-1.0, 2.0]])).numpy(), [[5.0, -6.0]])


def test_dense_without_activation_set(dev):
    layer = layers.Dense(units=2, use_bias=False)
    layer.build((1, 2))
    layer.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]])])
    layer.activation = None
    assert layer.bias is None
    np.testing.assert_allclose(layer(np.array([[-1.0, 2.0]])).numpy(), [[5.0, -6.0]])


def test_dense_with_activation(dev):
    layer = layers.Dense(units=2, use_bias=False, activation="relu")
    layer.build((1, 2))
    layer.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]])])
    np.testing.assert_allclose(layer(np.array([[-1.0, 2.0]])).numpy(), np.array([[5.0, 0.0]]))


@pytest.mark.parametrize("arg", ["kernel_constraint", "bias_constraint", "kernel_regularizer", "lora_rank"])
def test_dense_constraints(arg):
    """Keras checks the constraint objects; gpunet has no constraints, regularizers or LoRA: it refuses them
    clearly instead of ignoring them."""
    with pytest.raises(ValueError, match=f"does not implement {arg}"):
        layers.Dense(units=2, **{arg: "non_neg" if "constraint" in arg else 2})


# ------------------------------------------------------------------------------------------- InputLayer
@pytest.mark.parametrize("sparse,ragged", [(False, False), (True, False), (False, True)],
                         ids=["dense", "sparse", "ragged"])
def test_input_basic(sparse, ragged):
    input_shape, batch_size, dtype = (2, 3), 4, "float32"
    init_kwargs = {"shape": input_shape, "batch_size": batch_size, "dtype": dtype, "sparse": sparse, "ragged": ragged}
    if sparse or ragged:            # Keras' answer on a backend without sparse/ragged tensors
        with pytest.raises(ValueError, match=f"`{'sparse' if sparse else 'ragged'}=True` is not supported"):
            layers.InputLayer(**init_kwargs)
        return
    values = layers.InputLayer(**init_kwargs)
    assert values.dtype == dtype
    assert values.batch_shape[0] == batch_size
    assert values.batch_shape[1:] == input_shape
    assert values.sparse is False and values.ragged is False
    assert values.trainable is True
    assert values.input_shape == input_shape          # gpunet: the sample shape a Sequential builds from


def test_input_error1():
    with pytest.raises(ValueError, match="cannot pass both `shape` and `batch_shape`"):
        layers.InputLayer(shape=(2, 3), batch_shape=(2, 3))


def test_input_error2():
    with pytest.raises(ValueError, match="cannot pass both `batch_size` and `batch_shape`"):
        layers.InputLayer(batch_size=4, batch_shape=(2, 3))


def test_input_error3():
    with pytest.raises(ValueError, match="pass a `shape` argument."):
        layers.InputLayer(shape=None, batch_shape=None)


def test_input_tensor_error():
    with pytest.raises(ValueError, match="Argument `input_tensor` must be a KerasTensor"):
        layers.InputLayer(shape=(2, 3), batch_size=4, input_tensor=np.zeros((2, 3)))


def test_input_shape_deprecated(recwarn):
    """Keras warns that ``input_shape`` is deprecated; gpunet's checkpoints and the book use it: no warning."""
    layer = layers.InputLayer(input_shape=(2, 3), batch_size=4, dtype="float32")
    assert layer.batch_shape[0] == 4 and layer.batch_shape[1:] == (2, 3) and layer.dtype == "float32"
    assert not [w for w in recwarn if "deprecated" in str(w.message)]


def test_call_method(dev):
    """Keras' ``InputLayer.call()`` returns None (it is a symbolic placeholder); gpunet's passes data through."""
    layer = layers.InputLayer(shape=(32,))
    x = np.arange(64, dtype=np.uint8).reshape(2, 32)
    out = layer(x)
    assert out.dtype == np.uint8 and np.array_equal(out.numpy(), x)


def test_numpy_shape():
    # non-python int type shapes should be ok
    layer = layers.InputLayer(shape=(np.int64(32),))
    assert layer.batch_shape == (None, 32) and type(layer.batch_shape[1]) is int
    assert layers.Input(shape=(np.int64(32),)).input_shape == (32,)


# --------------------------------------------------------------------------------------------- Dropout
def test_dropout_basics(dev):
    run_layer_test(layers.Dropout, init_kwargs={"rate": 0.2}, input_shape=(2, 3), call_kwargs={"training": True},
                   expected_output_shape=(2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0, supports_masking=True,
                   assert_built_after_instantiation=True)


def test_dropout_rescaling(dev):
    """Keras' shape and tolerance (atol=0.02 is two standard deviations of the mean at (20, 500)); gpunet's
    Philox masks for seed 1337 are 0.8 deviations off (its earlier PCG64 masks were 2.7 off, which needed
    10x the samples)."""
    inputs = np.ones((20, 500))
    layer = layers.Dropout(0.5, seed=1337)
    outputs = layer(inputs, training=True).numpy()
    np.testing.assert_allclose(np.mean(outputs), 1.0, atol=0.02)
    np.testing.assert_allclose(np.max(outputs), 2.0)


def test_dropout_partial_noise_shape_dynamic(dev):
    inputs = np.ones((20, 5, 10))
    layer = layers.Dropout(0.5, noise_shape=(None, 1, None))
    outputs = layer(inputs, training=True).numpy()
    np.testing.assert_allclose(outputs[:, 0, :], outputs[:, 1, :])


def test_dropout_partial_noise_shape_static(dev):
    inputs = np.ones((20, 5, 10))
    layer = layers.Dropout(0.5, noise_shape=(20, 1, 10))
    outputs = layer(inputs, training=True).numpy()
    np.testing.assert_allclose(outputs[:, 0, :], outputs[:, 1, :])


def test_dropout_negative_rate():
    with pytest.raises(ValueError, match="Invalid value received for argument `rate`. "
                                         "Expected a float value between 0 and 1."):
        layers.Dropout(rate=-0.5)


def test_dropout_rate_greater_than_one():
    with pytest.raises(ValueError, match="Invalid value received for argument `rate`. "
                                         "Expected a float value between 0 and 1."):
        layers.Dropout(rate=1.5)


def test_validate_noise_shape_none():
    assert layers.Dropout(0.5, noise_shape=None).noise_shape is None


def test_validate_noise_shape_integer_tuple():
    assert layers.Dropout(0.5, noise_shape=(20, 1, 10)).noise_shape == (20, 1, 10)


def test_validate_noise_shape_none_values():
    assert layers.Dropout(0.5, noise_shape=(None, 1, None)).noise_shape == (None, 1, None)


def test_validate_noise_shape_cast_to_a_tuple():
    layer = layers.Dropout(0.5, noise_shape=[20, 1, 10])
    assert layer.noise_shape == (20, 1, 10)
    assert isinstance(layer.noise_shape, tuple)


def test_validate_noise_shape_non_iterable():
    with pytest.raises(ValueError, match="Invalid value received for argument `noise_shape`. "
                                         "Expected a tuple or list of integers."):
        layers.Dropout(0.5, noise_shape="Invalid")


def test_validate_noise_shape_invalid_type():
    with pytest.raises(ValueError, match="Invalid value received for argument `noise_shape`. "
                                         "Expected all elements to be integers or None."):
        layers.Dropout(0.5, noise_shape=(20, 1.5, 10))


def test_validate_noise_shape_negative_value():
    with pytest.raises(ValueError, match="Invalid value received for argument `noise_shape`. "
                                         "Expected all dimensions to be positive integers or None."):
        layers.Dropout(0.5, noise_shape=(20, -1, 10))


def test_validate_noise_shape_zero_value():
    with pytest.raises(ValueError, match="Invalid value received for argument `noise_shape`. "
                                         "Expected all dimensions to be positive integers or None."):
        layers.Dropout(0.5, noise_shape=(20, 0, 10))


# --------------------------------------------------------------------------------------------- Flatten
def test_flatten(dev):
    inputs = np.random.default_rng(0).random((10, 3, 5, 5)).astype("float32")
    inputs = np.multiply(inputs, inputs >= 0.8)          # relatively sparse, as Keras makes it
    expected_output_channels_last = np.reshape(inputs, (-1, 5 * 5 * 3))
    expected_output_channels_first = np.reshape(np.transpose(inputs, (0, 2, 3, 1)), (-1, 5 * 5 * 3))
    # default data_format (channels_last: gpunet has no image_data_format setting) and channels_last
    run_layer_test(layers.Flatten, init_kwargs={}, input_data=inputs, expected_output=expected_output_channels_last)
    run_layer_test(layers.Flatten, init_kwargs={"data_format": "channels_last"}, input_data=inputs,
                   expected_output=expected_output_channels_last)
    # channels_first
    run_layer_test(layers.Flatten, init_kwargs={"data_format": "channels_first"}, input_data=inputs,
                   expected_output=expected_output_channels_first)


def test_flatten_with_scalar_channels(dev):
    inputs = np.random.default_rng(1).random((10,)).astype("float32")
    expected_output = np.expand_dims(inputs, -1)
    run_layer_test(layers.Flatten, init_kwargs={}, input_data=inputs, expected_output=expected_output)
    run_layer_test(layers.Flatten, init_kwargs={"data_format": "channels_last"}, input_data=inputs,
                   expected_output=expected_output)
    run_layer_test(layers.Flatten, init_kwargs={"data_format": "channels_first"}, input_data=inputs,
                   expected_output=expected_output)


def test_flatten_symbolic_with_dynamic_batch_size():
    input_layer = layers.Input(batch_shape=(None, 2, 3))
    assert layers.Flatten().compute_output_shape(input_layer.batch_shape) == (None, 2 * 3)


def test_flatten_symbolic_with_dynamic_dimension():
    input_layer = layers.Input(batch_shape=(5, 2, None))
    assert layers.Flatten().compute_output_shape(input_layer.batch_shape) == (5, None)


def test_flatten_with_dynamic_batch_size_and_dynamic_dimenstions(dev):
    """Keras predicts on a generator of differently shaped batches; gpunet's predict takes arrays and checks
    them against the model's sample shape, so the layer itself is called on both batches."""
    layer = layers.Flatten()
    assert layer(np.ones((3, 5, 7), dtype="float32")).shape == (3, 35)
    assert layer(np.ones((2, 7, 5), dtype="float32")).shape == (2, 35)
    model = models.Sequential([layers.Flatten()])
    assert model.predict(np.ones((3, 5, 7), dtype="float32"), verbose=0).shape == (3, 35)


# ------------------------------------------------------------------------------------------- Rescaling
def test_rescaling_basics(dev):
    run_layer_test(layers.Rescaling, init_kwargs={"scale": 1.0 / 255, "offset": 0.5}, input_shape=(2, 3),
                   expected_output_shape=(2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0, supports_masking=True)


@pytest.mark.parametrize("init_kwargs,input_dtype", [({"scale": 2, "offset": 0.5}, "float32"),     # int scale
                                                     ({"scale": 1.0, "offset": 2}, "float32"),     # int offset
                                                     ({"scale": 1.0 / 255, "offset": 0.5}, "int16")],  # int inputs
                         ids=["int_scale", "int_offset", "int_inputs"])
def test_rescaling_dtypes(dev, init_kwargs, input_dtype):
    run_layer_test(layers.Rescaling, init_kwargs=init_kwargs, input_shape=(2, 3), input_dtype=input_dtype,
                   expected_output_shape=(2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0, supports_masking=True)
    out = layers.Rescaling(**init_kwargs)(np.ones((2, 3), dtype=input_dtype))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), init_kwargs["scale"] + init_kwargs["offset"], rtol=1e-6)


def test_rescaling_correctness(dev):
    layer = layers.Rescaling(scale=1.0 / 255, offset=0.5)
    x = np.random.default_rng(2).random((3, 10, 10, 3)) * 255
    out = layer(x)
    np.testing.assert_allclose(out.numpy(), x / 255 + 0.5, rtol=1e-6)


def test_rescaling_with_channels_first_and_vector_scale(dev):
    """Keras reshapes a per-channel scale for channels_first images; gpunet has no image_data_format, so a
    vector scale applies to the last axis (channels_last), and channels-first data is moved there."""
    layer = layers.Rescaling(scale=[1.0 / 255, 1.5 / 255, 2.0 / 255], offset=0.5)
    x = np.random.default_rng(3).random((2, 3, 10, 10)) * 255
    out = layer(np.moveaxis(x, 1, -1)).numpy()
    expected = np.moveaxis(x, 1, -1) * np.array([1.0, 1.5, 2.0]) / 255 + 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_numpy_args(dev):
    # https://github.com/keras-team/keras/issues/20072
    run_layer_test(layers.Rescaling, init_kwargs={"scale": np.array(1.0 / 255.0), "offset": np.array(0.5)},
                   input_shape=(2, 3), expected_output_shape=(2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0, supports_masking=True)


# ------------------------------------------------------------------------------------------ Activation
def test_activation_basics(dev):
    run_layer_test(layers.Activation, init_kwargs={"activation": "relu"}, input_shape=(2, 3),
                   expected_output_shape=(2, 3), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0, supports_masking=True,
                   assert_built_after_instantiation=True)
    # Keras passes activations.gelu (which gpunet lacks): an activation object from the module instead
    run_layer_test(layers.Activation, init_kwargs={"activation": activations.tanh}, input_shape=(2, 2),
                   expected_output_shape=(2, 2), expected_num_trainable_weights=0,
                   expected_num_non_trainable_weights=0, supports_masking=True,
                   assert_built_after_instantiation=True)


# --------------------------------------------------------------------------- configs Keras itself writes
def test_a_keras_dense_config_loads():
    """The config Keras 3 writes for ``Dense(4, activation='relu')`` (dtype policy and initializers as
    serialized objects) builds the same layer in gpunet."""
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    keras_config = {"name": "dense", "trainable": True, "dtype": policy, "units": 4, "activation": "relu",
                    "use_bias": True,
                    "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                           "config": {"seed": None}, "registered_name": None},
                    "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                                         "registered_name": None},
                    "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
                    "bias_constraint": None, "quantization_config": None}
    layer = layers.deserialize({"class_name": "Dense", "config": keras_config})
    assert (layer.units, layer.activation, layer.use_bias) == (4, activations.relu, True)
    config = layer.get_config()
    assert set(config) == set(keras_config)
    assert config["kernel_initializer"] == "glorot_uniform" and config["bias_initializer"] == "zeros"
    with pytest.raises(TypeError, match="Error when deserializing class 'Dense'"):
        layers.Dense.from_config({**keras_config, "dtype": "mixed_float16"})
