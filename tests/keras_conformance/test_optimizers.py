"""Ported from Keras 3: keras/src/optimizers/sgd_test.py, rmsprop_test.py, adam_test.py and
optimizer_test.py, with Keras' numbers and tolerances.

Adapted: ``backend.Variable`` is a gpunet Tensor (``requires_grad=True``; a name is set with
``t.name = ...``) on each backend (the ``dev`` fixture); ``optimizer._clip_gradients`` is the public
``clip_gradients``; ``run_class_serialization_test`` is :func:`roundtrip` below (config and
serialize round trips through JSON, same attributes); ``optimizer.variables`` (iterations and
learning rate as variables) and ``set_weights`` are gpunet's ``iterations``/``learning_rate``
attributes and ``get_state``/``set_state``; optimizer names are unique by a process-wide counter, so
the auto-naming test checks the pattern rather than absolute suffixes; gpunet refuses ``momentum=1``
and its error message differs. Not ported (see DIFFERENCES-optimizers.md): EMA (test_ema x2 in
adam_test, test_ema and test_ema_with_model_fit), loss scaling, gradient accumulation (3 tests),
variable constraints, ``overwrite_with_gradient`` (2 tests), AdamW and the other optimizers gpunet
does not have, and the TensorFlow-only tests (tf checkpointing, tf.Variable, IndexedSlices).
"""
import json
import pickle
import warnings

import numpy as np
import pytest

import gpunet
from gpunet import optimizers
from gpunet.optimizers import SGD, Adam, RMSprop, schedules


def variable(value, dev, name=None):
    t = gpunet.tensor(np.asarray(value, np.float32), device=dev, requires_grad=True)
    t.name = name
    return t


def array(value, dev):
    return dev.asarray(np.asarray(value, np.float32))


def roundtrip(instance):
    """Keras' run_class_serialization_test: get_config/from_config and serialize/deserialize round trips
    give the same JSON config and an object with the same attributes."""
    config_json = json.dumps(instance.get_config(), sort_keys=True)
    revived = type(instance).from_config(json.loads(config_json))
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert set(dir(revived)) == set(dir(instance))
    if isinstance(instance, schedules.LearningRateSchedule):
        revived = schedules.deserialize(json.loads(json.dumps(schedules.serialize(instance))))
    else:
        revived = optimizers.deserialize(json.loads(json.dumps(optimizers.serialize(instance))))
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert set(dir(revived)) == set(dir(instance))
    return revived


# ------------------------------------------------------------------------------------------ sgd_test.py
def test_sgd_config():
    roundtrip(SGD(learning_rate=0.5, momentum=0.06, nesterov=True, weight_decay=0.004))


def test_sgd_single_step(dev):
    optimizer = SGD(learning_rate=0.5)
    grads = array([1.0, 6.0, 7.0, 2.0], dev)
    vars = variable([1.0, 2.0, 3.0, 4.0], dev)
    optimizer.apply_gradients(zip([grads], [vars]))
    np.testing.assert_allclose(vars.numpy(), [0.5, -1.0, -0.5, 3.0], rtol=1e-4, atol=1e-4)
    assert optimizer.iterations == 1          # Keras: optimizer.variables == [iterations, learning_rate]
    assert optimizer.learning_rate == 0.5


def test_sgd_invalid_momentum():
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        SGD(momentum=-1.0)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        SGD(momentum=2.0)


@pytest.mark.parametrize("cls", [SGD, RMSprop, Adam])
def test_weight_decay(dev, cls):
    """sgd_test, rmsprop_test and adam_test: test_weight_decay (the same test in each)."""
    grads = array(np.zeros(()), dev)
    var1, var2, var3 = variable(2.0, dev), variable(2.0, dev, name="exclude"), variable(2.0, dev)
    optimizer_1 = cls(learning_rate=1.0, weight_decay=0.004)
    optimizer_1.apply_gradients(zip([grads], [var1]))

    optimizer_2 = cls(learning_rate=1.0, weight_decay=0.004)
    optimizer_2.exclude_from_weight_decay(var_names=["exclude"])
    optimizer_2.apply_gradients(zip([grads, grads], [var1, var2]))

    optimizer_3 = cls(learning_rate=1.0, weight_decay=0.004)
    optimizer_3.exclude_from_weight_decay(var_list=[var3])
    optimizer_3.apply_gradients(zip([grads, grads], [var1, var3]))

    assert var1.item() == pytest.approx(1.9760959, abs=1.5e-6)     # assertAlmostEqual(decimal=6)
    assert var2.item() == pytest.approx(2.0, abs=1.5e-6)
    assert var3.item() == pytest.approx(2.0, abs=1.5e-6)


def _golden(dev, optimizer, golden):
    x = variable(np.ones([10]), dev)
    grads = array(np.arange(0.1, 1.1, 0.1), dev)
    first_grads = array(np.full((10,), 0.01), dev)
    optimizer.apply_gradients(zip([first_grads], [x]))
    for i in range(5):
        np.testing.assert_allclose(x.numpy(), golden[i], rtol=5e-4, atol=5e-4, err_msg=f"step {i + 1}")
        optimizer.apply_gradients(zip([grads], [x]))


def test_sgd_correctness_with_golden(dev):
    golden = np.array(
        [[0.9999, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999],
         [0.9989, 0.9979, 0.9969, 0.9959, 0.9949, 0.9939, 0.9929, 0.9919, 0.9909, 0.9899],
         [0.9979, 0.9959, 0.9939, 0.9919, 0.9899, 0.9879, 0.9859, 0.9839, 0.9819, 0.9799],
         [0.9969, 0.9939, 0.9909, 0.9879, 0.9849, 0.9819, 0.9789, 0.9759, 0.9729, 0.9699],
         [0.9959, 0.9919, 0.9879, 0.9839, 0.9799, 0.9759, 0.9719, 0.9679, 0.9639, 0.9599]])
    _golden(dev, SGD(nesterov=True), golden)


@pytest.mark.parametrize("cls", [SGD, RMSprop, Adam])
def test_clip_norm(cls):
    """sgd_test, rmsprop_test, adam_test and optimizer_test: test_clip_norm."""
    optimizer = cls(clipnorm=1)
    clipped_grad = optimizer.clip_gradients([np.array([100.0, 100.0])])
    np.testing.assert_allclose(clipped_grad[0], [2**0.5 / 2, 2**0.5 / 2])


@pytest.mark.parametrize("cls", [SGD, RMSprop, Adam])
def test_clip_value(cls):
    """sgd_test, rmsprop_test, adam_test and optimizer_test: test_clip_value."""
    optimizer = cls(clipvalue=1)
    clipped_grad = optimizer.clip_gradients([np.array([100.0, 100.0])])
    np.testing.assert_allclose(clipped_grad[0], [1.0, 1.0])


# -------------------------------------------------------------------------------------- rmsprop_test.py
def test_rmsprop_config():
    roundtrip(RMSprop(learning_rate=0.5, rho=0.8, momentum=0.05, epsilon=1e-6, centered=True))


def test_rmsprop_single_step(dev):
    optimizer = RMSprop(learning_rate=0.5)
    grads = array([1.0, 6.0, 7.0, 2.0], dev)
    vars = variable([1.0, 2.0, 3.0, 4.0], dev)
    optimizer.apply_gradients(zip([grads], [vars]))
    np.testing.assert_allclose(vars.numpy(), [-0.5811, 0.4189, 1.4189, 2.4189], rtol=1e-4, atol=1e-4)


def test_rmsprop_correctness_with_golden(dev):
    golden = np.tile([[0.9967], [0.9933], [0.9908], [0.9885], [0.9864]], (1, 10))
    _golden(dev, RMSprop(centered=True), golden)


# ----------------------------------------------------------------------------------------- adam_test.py
def test_adam_config():
    roundtrip(Adam(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5, amsgrad=True))


def test_adam_single_step(dev):
    optimizer = Adam(learning_rate=0.5)
    grads = array([1.0, 6.0, 7.0, 2.0], dev)
    vars = variable([1.0, 2.0, 3.0, 4.0], dev)
    optimizer.apply_gradients(zip([grads], [vars]))
    np.testing.assert_allclose(vars.numpy(), [0.5, 1.5, 2.5, 3.5], rtol=1e-4, atol=1e-4)


def test_adam_correctness_with_golden(dev):
    golden = np.tile([[0.999], [0.9982], [0.9974], [0.9965], [0.9955]], (1, 10))
    _golden(dev, Adam(amsgrad=True), golden)


def test_adam_ema_is_refused():
    """adam_test's test_ema / test_ema_overwrite_frequency: gpunet has no EMA and says so."""
    with pytest.raises(NotImplementedError, match="use_ema"):
        Adam(learning_rate=1.0, use_ema=True, ema_momentum=0.9)


# ------------------------------------------------------------------------------------ optimizer_test.py
def test_iterations_counter(dev):
    v = variable([[1.0, 2.0], [3.0, 4.0]], dev)
    grads = array([[1.0, 1.0], [1.0, 1.0]], dev)
    optimizer = Adam(learning_rate=1.0)
    assert optimizer.iterations == 0
    optimizer.apply_gradients([(grads, v)])
    assert optimizer.iterations == 1
    optimizer.apply_gradients([(grads, v)])
    assert optimizer.iterations == 2


def test_empty_gradients(dev):
    v = variable([[3.0, 4.0], [5.0, 6.0]], dev)
    optimizer = SGD(learning_rate=1.0)
    with pytest.raises(ValueError, match="No gradients provided for any variable."):
        optimizer.apply_gradients([(None, v)])

    v2 = variable([[3.0, 4.0], [5.0, 6.0]], dev)
    grads2 = array([[1.0, 1.0], [1.0, 1.0]], dev)
    optimizer = SGD(learning_rate=1.0)
    with pytest.warns(Warning, match="Gradients do not exist for variables"):
        optimizer.apply_gradients([(None, v), (grads2, v2)])
    np.testing.assert_allclose(v.numpy(), [[3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(v2.numpy(), [[2.0, 3.0], [4.0, 5.0]])


def test_clip_args():
    assert SGD(learning_rate=1.0, clipnorm=0.1).clipnorm == 0.1
    assert SGD(learning_rate=1.0, clipvalue=0.1).clipvalue == 0.1
    assert SGD(learning_rate=1.0, global_clipnorm=0.1).global_clipnorm == 0.1
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can"):
        SGD(learning_rate=1.0, clipnorm=0.1, clipvalue=0.1)
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can"):
        SGD(learning_rate=1.0, clipnorm=0.1, global_clipnorm=0.1)


def test_clip_norm_on_device(dev):
    """optimizer_test's test_clip_norm / test_clip_value with the gradient on each backend."""
    clipped = SGD(clipnorm=1).clip_gradients([array([100.0, 100.0], dev)])
    np.testing.assert_allclose(dev.to_host(clipped[0]), [2**0.5 / 2, 2**0.5 / 2], rtol=1e-6)
    clipped = SGD(clipvalue=1).clip_gradients([array([100.0, 100.0], dev)])
    np.testing.assert_allclose(dev.to_host(clipped[0]), [1.0, 1.0])


def test_global_clip_norm(dev):
    optimizer = SGD(global_clipnorm=1)
    grad = np.array([50.0, 100.0], dtype="float32")
    global_norm = np.linalg.norm(grad)
    clipped_grad = optimizer.clip_gradients([array(grad, dev)])
    np.testing.assert_allclose(dev.to_host(clipped_grad[0]), grad / global_norm, rtol=1e-6)


def test_ema_is_refused():
    """optimizer_test's test_ema / test_ema_with_model_fit: not implemented, refused at construction."""
    with pytest.raises(NotImplementedError, match="use_ema"):
        SGD(learning_rate=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)


def test_get_method():
    assert isinstance(optimizers.get("sgd"), SGD)
    with pytest.raises(ValueError):                  # Keras: AdamW; gpunet has no AdamW
        optimizers.get("adamw")
    with pytest.raises(ValueError):
        optimizers.get("typo")
    assert isinstance(optimizers.get({"class_name": "sgd", "config": {"weight_decay": 0.05}}), SGD)


def test_static_loss_scaling_is_refused():
    with pytest.raises(NotImplementedError, match="loss_scale_factor"):
        SGD(learning_rate=1.0, loss_scale_factor=1024.0)


def test_set_weights(dev):
    """Keras' set_weights(other.variables) is gpunet's set_state(params, other.get_state(params))."""
    x = variable([[1.0, 2.0], [3.0, 4.0]], dev)
    optimizer_1 = Adam()
    grads = array([[1.0, 2.0], [3.0, 4.0]], dev)
    optimizer_1.apply_gradients(zip([grads], [x]))
    optimizer_2 = Adam()
    optimizer_2.set_state([x], optimizer_1.get_state([x]))
    state_1, state_2 = optimizer_1.get_state([x]), optimizer_2.get_state([x])
    assert state_1.keys() == state_2.keys() == {"iterations", "0/momentum", "0/velocity"}
    for key in state_1:
        np.testing.assert_allclose(state_2[key], state_1[key])


def test_gradient_accumulation_is_refused():
    with pytest.raises(NotImplementedError, match="gradient_accumulation_steps"):
        SGD(learning_rate=1.0, gradient_accumulation_steps=3)


def test_callable_learning_rate(dev):
    v = variable([[1.0, 2.0], [3.0, 4.0]], dev)
    grads = array([[1.0, 1.0], [1.0, 1.0]], dev)
    optimizer = SGD(learning_rate=lambda: 0.1)
    assert optimizer.iterations == 0
    optimizer.apply_gradients([(grads, v)])
    np.testing.assert_allclose(v.numpy(), [[0.9, 1.9], [2.9, 3.9]], rtol=1e-6)
    assert optimizer.iterations == 1


def test_setting_lr_to_callable(dev):
    """Keras' test_setting_lr_to_callable_untracks_lr_var: the learning rate becomes the schedule's."""
    adam = Adam(learning_rate=0.001)
    adam.learning_rate = schedules.PolynomialDecay(adam.learning_rate, 4)
    assert adam.learning_rate == pytest.approx(0.001)
    v = variable([1.0], dev)
    adam.apply_gradients([(array([1.0], dev), v)])
    assert adam.learning_rate == pytest.approx((0.001 - 0.0001) * 0.75 + 0.0001)
    with pytest.raises(TypeError, match="not settable"):
        adam.learning_rate = 0.1


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_pickleable_optimizers(name):
    optimizer = optimizers.get(name)
    reloaded = pickle.loads(pickle.dumps(optimizer))
    assert optimizer.get_config() == reloaded.get_config()


def test_optimizer_auto_naming():
    adam_1, adam_2, sgd_1, sgd_2 = Adam(), Adam(), SGD(), SGD()
    for first, second, prefix in ((adam_1, adam_2, "adam"), (sgd_1, sgd_2, "sgd")):
        assert first.name == prefix or first.name.startswith(prefix + "_")
        n = 0 if first.name == prefix else int(first.name.rsplit("_", 1)[1])
        assert second.name == f"{prefix}_{n + 1}"
    assert RMSprop().name.startswith("rm_sprop")          # Keras' snake case of the class name
    assert Adam(name="my_adam").name == "my_adam"
    assert optimizers.deserialize(optimizers.serialize(adam_2)).name == adam_2.name
    assert optimizers.deserialize(optimizers.serialize(Adam(name="my_adam"))).name == "my_adam"


def test_decay_argument_is_ignored_with_a_warning():
    """base_optimizer.py: ``decay`` is no longer supported; other unknown arguments are errors."""
    with pytest.warns(UserWarning, match="`decay` is no longer supported"):
        SGD(decay=0.1)
    with pytest.raises(ValueError, match="Argument\\(s\\) not recognized"):
        SGD(lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SGD(decay=None)
