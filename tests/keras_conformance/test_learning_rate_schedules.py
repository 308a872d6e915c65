"""Ported from Keras 3: keras/src/optimizers/schedules/learning_rate_schedule_test.py, every test
method, with Keras' numbers and tolerances.

Adapted: the step given to a schedule is a Python number (Keras also passes ``backend.Variable``s,
whose ``assign`` calls become new values of a local); ``run_class_serialization_test`` is the
config/serialize round trip through JSON below; ``assertAllClose(a, b, 1e-6)`` (whose third argument
is ``atol``) is ``pytest.approx(b, abs=1e-6)``; the fit test builds Keras' ``Dense(2)`` with
``input_shape=(2,)`` and counts the optimizer's steps with ``iterations`` (Keras:
``optimizer.variables[0]``); TPU tolerances are dropped.
"""
import json
import math

import numpy as np
import pytest

from gpunet import layers, models, optimizers
from gpunet.optimizers import schedules


def roundtrip(instance):
    config_json = json.dumps(instance.get_config(), sort_keys=True)
    revived = type(instance).from_config(json.loads(config_json))
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert set(dir(revived)) == set(dir(instance))
    revived = schedules.deserialize(json.loads(json.dumps(schedules.serialize(instance))))
    assert type(revived) is type(instance)
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert set(dir(revived)) == set(dir(instance))


def close(value, expected, atol=1e-6):
    assert value == pytest.approx(expected, abs=atol)


# ------------------------------------------------------------------------------- TestFitLRSchedulesFlow
def test_fit_lr_correctness():
    model = models.Sequential([layers.Dense(2, kernel_initializer="ones", bias_initializer="ones",
                                            input_shape=(2,))])
    optimizer = optimizers.Adam(learning_rate=schedules.ExponentialDecay(initial_learning_rate=0.05,
                                                                         decay_steps=1, decay_rate=0.9))
    assert optimizer.iterations == 0
    model.compile(optimizer=optimizer, loss="mse")
    x = np.arange(32).reshape((16, 2))
    y = np.arange(32).reshape((16, 2))
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0)
    assert optimizer.iterations == 4 * 3
    np.testing.assert_allclose(history.history["loss"], [230.79457092285156, 128.30319213867188,
                                                         79.33648681640625], rtol=5e-5)


# ----------------------------------------------------------------------------------- ExponentialDecayTest
def test_exponential_decay_config():
    roundtrip(schedules.ExponentialDecay(initial_learning_rate=0.05, decay_steps=10, decay_rate=0.96,
                                         staircase=True, name="my_ed"))


def test_exponential_decay_continuous():
    close(schedules.ExponentialDecay(0.05, 10, 0.96)(5), 0.05 * 0.96 ** (5.0 / 10.0))


def test_exponential_decay_staircase():
    decayed_lr = schedules.ExponentialDecay(0.1, 3, 0.96, staircase=True)
    close(decayed_lr(1.0), 0.1)                  # no change to learning rate due to staircase
    close(decayed_lr(2), 0.1)
    close(decayed_lr(100), 0.1 * 0.96 ** (100 // 3))


def test_exponential_decay_variables():
    decayed_lr = schedules.ExponentialDecay(0.1, 3, 0.96, staircase=True)
    close(decayed_lr(1), 0.1)
    close(decayed_lr(2), 0.1)
    close(decayed_lr(100), 0.1 * 0.96 ** (100 // 3))


# ---------------------------------------------------------------------------- PiecewiseConstantDecayTest
def test_piecewise_constant_config():
    roundtrip(schedules.PiecewiseConstantDecay(boundaries=[10, 20], values=[1, 2, 3], name="my_pcd"))


def test_piecewise_values():
    decayed_lr = schedules.PiecewiseConstantDecay([100, 110, 120], [1.0, 0.1, 0.01, 0.001])
    for step, expected in ((-999.0, 1.0), (100, 1.0), (105, 0.1), (110, 0.1), (120, 0.01), (999, 0.001)):
        close(decayed_lr(step), expected)


def test_piecewise_boundary_values():
    decayed_lr = schedules.PiecewiseConstantDecay([1, 2, 3], [0.4, 0.5, 0.6, 0.7])
    for step, expected in ((np.int64(0), 0.4), (np.int64(1), 0.4), (np.int64(2), 0.5), (np.int64(3), 0.6),
                           (np.int64(4), 0.7)):
        close(decayed_lr(step), expected)


# ---------------------------------------------------------------------------------------- LinearDecayTest
def test_linear_decay_config():
    roundtrip(schedules.PolynomialDecay(initial_learning_rate=0.1, decay_steps=100, end_learning_rate=0.005,
                                        power=1.0, cycle=False, name="my_ld"))


def test_linear_halfway():
    close(schedules.PolynomialDecay(0.05, 10, 0.0)(5), 0.05 * 0.5)


def test_linear_end():
    close(schedules.PolynomialDecay(0.05, 10, 0.001)(10), 0.001)


def test_linear_halfway_with_end():
    close(schedules.PolynomialDecay(0.05, 10, 0.001)(5), (0.05 + 0.001) * 0.5)


def test_linear_beyond_end():
    close(schedules.PolynomialDecay(0.05, 10, 0.001)(15), 0.001)


def test_linear_beyond_end_with_cycle():
    close(schedules.PolynomialDecay(0.05, 10, 0.001, cycle=True)(15), (0.05 - 0.001) * 0.25 + 0.001)


# ------------------------------------------------------------------------------------------ SqrtDecayTest
def test_sqrt_halfway():
    close(schedules.PolynomialDecay(0.05, 10, 0.0, power=0.5)(5), 0.05 * 0.5**0.5)


def test_sqrt_end():
    close(schedules.PolynomialDecay(0.05, 10, 0.001, power=0.5)(10), 0.001)


def test_sqrt_halfway_with_end():
    close(schedules.PolynomialDecay(0.05, 10, 0.001, power=0.5)(5), (0.05 - 0.001) * 0.5**0.5 + 0.001)


def test_sqrt_beyond_end():
    close(schedules.PolynomialDecay(0.05, 10, 0.001, power=0.5)(15), 0.001)


def test_sqrt_beyond_end_with_cycle():
    close(schedules.PolynomialDecay(0.05, 10, 0.001, power=0.5, cycle=True)(15), (0.05 - 0.001) * 0.25**0.5 + 0.001)


def test_sqrt_begin_with_cycle():
    close(schedules.PolynomialDecay(0.001, 10, cycle=True)(0), 0.001)


# ------------------------------------------------------------------------------------ InverseTimeDecayTest
def test_inverse_time_config():
    roundtrip(schedules.InverseTimeDecay(initial_learning_rate=0.05, decay_steps=10, decay_rate=0.96,
                                         staircase=True, name="my_itd"))


def test_inverse_time_decay():
    initial_lr, k, decay_rate = 0.1, 10, 0.96
    decayed_lr = schedules.InverseTimeDecay(initial_lr, k, decay_rate)
    for i in range(k + 1):
        close(decayed_lr(float(i)), initial_lr / (1 + i / k * decay_rate))


def test_inverse_time_staircase():
    initial_lr, k, decay_rate = 0.1, 10, 0.96
    decayed_lr = schedules.InverseTimeDecay(initial_lr, k, decay_rate, staircase=True)
    for i in range(k + 1):
        close(decayed_lr(float(i)), initial_lr / (1 + decay_rate * (i // k)))


# ------------------------------------------------------------------------------------------ CosineDecayTest
def np_cosine_decay(step, decay_steps, alpha=0.0):
    step = min(step, decay_steps)
    completed_fraction = step / decay_steps
    decay = 0.5 * (1.0 + math.cos(math.pi * completed_fraction))
    return (1.0 - alpha) * decay + alpha


def linear_warmup(step, warmup_steps, initial_lr, target_lr):
    return step / warmup_steps * (target_lr - initial_lr)


def test_cosine_config():
    roundtrip(schedules.CosineDecay(initial_learning_rate=0.05, decay_steps=10, alpha=0.1, warmup_target=0.2,
                                    warmup_steps=2, name="my_cd"))


@pytest.mark.parametrize("initial_lr", [1.0, np.float64(1.0)], ids=["decay", "float64"])
def test_cosine_decay(initial_lr):
    for step in range(0, 1500, 250):
        close(schedules.CosineDecay(initial_lr, 1000)(step), np_cosine_decay(step, 1000))


def test_cosine_warmup():
    for step in range(0, 1500, 250):
        lr = schedules.CosineDecay(0.0, 10, warmup_target=10.0, warmup_steps=1500)
        np.testing.assert_allclose(lr(step), linear_warmup(step, 1500, 0.0, 10.0), rtol=1e-6, atol=1e-6)


def test_cosine_alpha():
    for step in range(0, 1500, 250):
        close(schedules.CosineDecay(1.0, 1000, 0.1)(step), np_cosine_decay(step, 1000, 0.1))


def test_cosine_warmup_decay():
    warmup_steps, decay_steps, initial_lr, target_lr = 2000, 1000, 0.0, 10.0
    for step in range(0, 3000, 250):
        lr = schedules.CosineDecay(initial_lr, decay_steps, warmup_target=target_lr, warmup_steps=warmup_steps)
        if step < warmup_steps + 1:
            expected = linear_warmup(step, warmup_steps, initial_lr, target_lr)
        else:
            expected = target_lr * np_cosine_decay(step - warmup_steps, decay_steps)
        np.testing.assert_allclose(lr(step), expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------- CosineDecayRestartsTest
def np_cosine_decay_restarts(step, decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    fac = 1.0
    while step >= decay_steps:
        step -= decay_steps
        decay_steps *= t_mul
        fac *= m_mul
    completed_fraction = step / decay_steps
    decay = fac * 0.5 * (1.0 + math.cos(math.pi * completed_fraction))
    return (1.0 - alpha) * decay + alpha


def test_cosine_restarts_config():
    roundtrip(schedules.CosineDecayRestarts(initial_learning_rate=0.05, first_decay_steps=10, alpha=0.1, t_mul=3.0,
                                            m_mul=4.0, name="my_cdr"))


@pytest.mark.parametrize("initial_lr", [1.0, np.float64(1.0)], ids=["decay", "float64"])
def test_cosine_restarts_decay(initial_lr):
    for step in range(0, 1500, 250):
        close(schedules.CosineDecayRestarts(initial_lr, 1000)(step), np_cosine_decay_restarts(step, 1000))


@pytest.mark.parametrize("kwargs", [{"alpha": 0.1}, {"m_mul": 0.9}, {"t_mul": 1.0}], ids=["alpha", "mmul", "tmul"])
def test_cosine_restarts_variants(kwargs):
    for step in range(0, 1500, 250):
        close(schedules.CosineDecayRestarts(1.0, 1000, **kwargs)(step), np_cosine_decay_restarts(step, 1000, **kwargs))
