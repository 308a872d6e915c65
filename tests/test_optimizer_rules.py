"""gpunet's own optimizer tests: trajectories against Keras' closed-form update rules (with weight
decay, clipping and learning-rate schedules), computed independently in float64, and the behaviour
around them (validation, checkpoints, the earlier custom-optimizer interface). Keras' own tests,
ported, are in tests/keras_conformance/test_optimizers.py."""
import math

import numpy as np
import pytest

import gpunet
from gpunet import optimizers
from gpunet.errors import CheckpointError
from gpunet.optimizers import schedules

STEPS = 6
CLASSES = {"sgd": optimizers.SGD, "rmsprop": optimizers.RMSprop, "adam": optimizers.Adam}


def _clip(cfg, grads):
    """Keras' clipping of one step's gradients (all parameters together), float64."""
    if cfg.get("clipnorm"):
        c = cfg["clipnorm"]
        return [g * c / max(np.sqrt(np.sum(g * g)), c) for g in grads]
    if cfg.get("global_clipnorm"):
        c = cfg["global_clipnorm"]
        norm = np.sqrt(sum(np.sum(g * g) for g in grads))
        return [g * c * min(1 / norm, 1 / c) for g in grads]
    if cfg.get("clipvalue"):
        return [np.clip(g, -cfg["clipvalue"], cfg["clipvalue"]) for g in grads]
    return grads


def _learning_rate(lr, step):
    """The learning rate Keras uses at ``step`` (the steps done before this one), in float64."""
    if isinstance(lr, tuple):               # ("exp", initial, decay_steps, rate): ExponentialDecay, by hand
        _, initial, steps, rate = lr
        return initial * rate ** (step / steps)
    return lr


def reference(name, cfg, params0, grads_per_step, excluded=()):
    """Keras 3 formulas, step by step in float64, for several parameters updated together: the
    learning rate at the step count, clipping, decoupled weight decay (not for indices in
    ``excluded``), then the rule."""
    defaults = {"sgd": 0.01, "rmsprop": 1e-3, "adam": 1e-3}
    ws = [w.astype(np.float64).copy() for w in params0]
    state = [dict(m=np.zeros_like(w), v=np.zeros_like(w), a=np.zeros_like(w), mom=np.zeros_like(w),
                  vhat=np.zeros_like(w)) for w in ws]
    out = []
    for t, grads in enumerate(grads_per_step, start=1):
        lr = _learning_rate(cfg.get("learning_rate", defaults[name]), t - 1)
        grads = _clip(cfg, [g.astype(np.float64) for g in grads])
        for i, (w, g, st) in enumerate(zip(ws, grads, state)):
            if cfg.get("weight_decay") and i not in excluded:
                w -= w * cfg["weight_decay"] * lr
            m, v, a, mom = st["m"], st["v"], st["a"], st["mom"]
            if name == "sgd":
                mu = cfg.get("momentum", 0.0)
                if mu == 0:
                    w -= lr * g
                else:
                    m[...] = mu * m - lr * g
                    w += mu * m - lr * g if cfg.get("nesterov") else m
            elif name == "rmsprop":
                rho, eps, mu = cfg.get("rho", 0.9), cfg.get("epsilon", 1e-7), cfg.get("momentum", 0.0)
                v[...] = rho * v + (1 - rho) * g * g
                denom = v
                if cfg.get("centered"):
                    a[...] = rho * a + (1 - rho) * g
                    denom = v - a * a
                if cfg.get("eps_inside_sqrt", True):
                    inc = lr * g / np.sqrt(denom + eps)
                else:
                    inc = lr * g / (np.sqrt(denom) + eps)
                if mu:
                    mom[...] = mu * mom + inc
                    w -= mom
                else:
                    w -= inc
            elif name == "adam":
                b1, b2, eps = cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999), cfg.get("epsilon", 1e-7)
                m[...] = m + (g - m) * (1 - b1)
                v[...] = v + (g * g - v) * (1 - b2)
                vv = v
                if cfg.get("amsgrad"):
                    st["vhat"] = vv = np.maximum(st["vhat"], v)
                alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                w -= alpha * m / (np.sqrt(vv) + eps)
        out.append([w.copy() for w in ws])
    return out


def _make(name, cfg):
    cfg = dict(cfg)
    if isinstance(cfg.get("learning_rate"), tuple):
        _, initial, steps, rate = cfg["learning_rate"]
        cfg["learning_rate"] = schedules.ExponentialDecay(initial, steps, rate)
    return CLASSES[name](**cfg)


EXP = ("exp", 0.05, 2, 0.5)
CASES = [
    ("sgd", {}), ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.5, "nesterov": True}),
    ("rmsprop", {}), ("rmsprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.9}),
    ("rmsprop", {"centered": True}), ("rmsprop", {"eps_inside_sqrt": False, "epsilon": 1e-8}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "eps_inside_sqrt": False}),
    ("adam", {}), ("adam", {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}),
    # Keras' common arguments: weight decay, clipping, schedules, AMSGrad
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.05, "clipnorm": 1.0}),
    ("sgd", {"learning_rate": EXP, "global_clipnorm": 1.5, "weight_decay": 0.1}),
    ("rmsprop", {"learning_rate": 0.01, "weight_decay": 0.2, "clipvalue": 0.5}),
    ("rmsprop", {"learning_rate": EXP, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("rmsprop", {"learning_rate": EXP, "global_clipnorm": 0.5}),
    ("adam", {"learning_rate": 0.01, "amsgrad": True, "weight_decay": 0.1, "global_clipnorm": 2.0}),
    ("adam", {"learning_rate": EXP, "clipnorm": 0.3, "weight_decay": 0.004}),
]


@pytest.mark.parametrize("name,cfg", CASES)
def test_trajectory_matches_closed_form(dev, name, cfg):
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    b0 = rng.standard_normal(3).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(STEPS)]
    bgrads = [rng.standard_normal(3).astype(np.float32) for _ in range(STEPS)]
    opt = optimizers.get(name) if not cfg else _make(name, cfg)
    w = gpunet.tensor(w0, device=dev, requires_grad=True)
    b = gpunet.tensor(b0, device=dev, requires_grad=True)
    want = reference(name, cfg, [w0, b0], list(zip(grads, bgrads)))
    data_before = w.data
    for t in range(STEPS):
        opt.apply_gradients(zip([gpunet.tensor(grads[t], device=dev), gpunet.tensor(bgrads[t], device=dev)], [w, b]))
        np.testing.assert_allclose(w.numpy(), want[t][0], rtol=2e-5, atol=2e-6, err_msg=f"step {t + 1}")
        np.testing.assert_allclose(b.numpy(), want[t][1], rtol=2e-5, atol=2e-6)
    assert w.data is data_before, "updates must happen in place"
    assert opt.iterations == STEPS


def test_defaults_are_keras():
    r, s, a = optimizers.RMSprop(), optimizers.SGD(), optimizers.Adam()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    assert (s.learning_rate, s.momentum, s.nesterov) == (0.01, 0.0, False)
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert isinstance(optimizers.get("rmsprop"), optimizers.RMSprop)


def test_hand_written_loop_with_tape(dev):
    """The chapter's mini-batch SGD, by hand: loss goes down on a linear regression."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5], np.float32)
    w = gpunet.tensor(np.zeros(3, np.float32), device=dev, requires_grad=True)
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.5)
    Xt, yt = gpunet.tensor(X, device=dev), gpunet.tensor(y, device=dev)
    losses = []
    for _ in range(100):
        with gpunet.GradientTape() as tape:
            loss = ((Xt @ w - yt) ** 2).mean()
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(w.numpy(), [1.0, -2.0, 0.5], atol=1e-2)


@pytest.mark.parametrize("bad", [0, -1e-3, float("nan"), "fast"])
def test_bad_hyperparameters_are_refused(bad):
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        optimizers.SGD(learning_rate=bad)
    with pytest.raises(ValueError, match="epsilon must be a positive"):
        optimizers.RMSprop(epsilon=bad)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; valid names: adam, rmsprop, sgd"):
        optimizers.get("adamw")


def test_gradient_shape_mismatch_changes_nothing():
    w = gpunet.tensor(np.ones(3, np.float32), requires_grad=True)
    v = gpunet.tensor(np.ones(2, np.float32), requires_grad=True)
    opt = optimizers.SGD(0.1)
    with pytest.raises(gpunet.ShapeError, match=r"gradient of shape \(4,\) does not match .* \(2,\)"):
        opt.apply_gradients([(gpunet.tensor(np.ones(3)), w), (gpunet.tensor(np.ones(4)), v)])
    assert np.all(w.numpy() == 1) and opt.iterations == 0


def test_a_custom_optimizer_with_gpunets_earlier_interface_still_works():
    """build_slots(param) + update_step(grad, param, slots): plain SGD, checked against its formula."""
    class PlainSGD(optimizers.Optimizer):
        def build_slots(self, param):
            return {}

        def update_step(self, grad, param, slots):
            param.data -= self.learning_rate * grad

    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    w = gpunet.tensor(w0, requires_grad=True)
    opt = PlainSGD(0.1)
    opt.apply_gradients([(gpunet.tensor([1.0, 1.0, -1.0]), w)])
    np.testing.assert_allclose(w.numpy(), w0 - 0.1 * np.array([1.0, 1.0, -1.0]), rtol=1e-6)
    from gpunet import layers, models
    net = models.Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    net.compile(optimizer=PlainSGD(0.05), loss="categorical_crossentropy")
    net.fit(np.ones((4, 3), np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]], epochs=2, batch_size=2, verbose=0)
    assert net.optimizer.iterations == 4


# ------------------------------------------------------------------ learning rates, decay, clipping: gpunet's side
def _step(opt, w, g=1.0):
    opt.apply_gradients([(gpunet.tensor(np.full(w.shape, g, np.float32), device=w.device), w)])


def test_schedules_and_callables_see_the_steps_done_before_each_update():
    """Keras' convention: the first update uses the schedule at step 0; ``learning_rate`` is the next step's."""
    seen = []

    def of_step(step):
        seen.append(step)
        return 0.1

    for lr, want in ((schedules.ExponentialDecay(0.1, 1, 0.5), [0.1, 0.05, 0.025]),
                     (schedules.PiecewiseConstantDecay([0, 1], [0.1, 0.05, 0.025]), [0.1, 0.05, 0.025]),
                     (of_step, [0.1, 0.1, 0.1]), (lambda: 0.1, [0.1, 0.1, 0.1])):
        w = gpunet.tensor(np.zeros(2, np.float32), requires_grad=True)
        opt = optimizers.SGD(learning_rate=lr)
        got = []
        for _ in range(3):
            before = w.numpy()[0]
            _step(opt, w)
            got.append(before - w.numpy()[0])
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert seen[-3:] == [0, 1, 2]
    opt = optimizers.Adam(schedules.ExponentialDecay(0.1, 1, 0.5))
    assert opt.learning_rate == 0.1 and opt.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"
    opt.iterations = 2
    assert opt.learning_rate == pytest.approx(0.025)


@pytest.mark.parametrize("cls", [optimizers.SGD, optimizers.RMSprop, optimizers.Adam])
def test_a_schedule_may_reach_zero(dev, cls):
    """CosineDecay's warmup from 0 and decay to 0: a zero learning rate is a step that changes nothing."""
    w = gpunet.tensor(np.ones(3, np.float32), device=dev, requires_grad=True)
    opt = cls(schedules.CosineDecay(0.0, 2, warmup_target=0.1, warmup_steps=1), weight_decay=0.1)
    _step(opt, w)
    np.testing.assert_array_equal(w.numpy(), np.ones(3, np.float32))
    _step(opt, w)
    assert np.all(w.numpy() < 1)
    _step(opt, w)
    after = w.numpy()
    for _ in range(2):
        _step(opt, w)
    np.testing.assert_array_equal(w.numpy(), after)


def test_the_default_step_makes_no_extra_passes(monkeypatch):
    """Without clipping, weight decay or a schedule, apply runs only the update cores."""
    from gpunet.optimizers import clipping, optimizer as base

    def fail(*args, **kwargs):
        raise AssertionError("an extra pass ran")

    for name in ("clip_by_norm", "clip_by_global_norm", "clip_by_value"):
        monkeypatch.setattr(clipping, name, fail)
    monkeypatch.setattr(base, "decay_weights", fail)
    for module in ("sgd", "rmsprop", "adam"):
        monkeypatch.setattr(f"gpunet.optimizers.{module}.decay_weights", fail)
    for name in ("sgd", "rmsprop", "adam"):
        w = gpunet.tensor(np.ones(3, np.float32), requires_grad=True)
        _step(optimizers.get(name), w)
        assert np.all(w.numpy() < 1)


def test_weight_decay_can_leave_out_biases_by_name():
    from gpunet import layers, models
    net = models.Sequential([layers.Dense(2, kernel_initializer="ones", bias_initializer="ones", input_shape=(3,))])
    opt = optimizers.SGD(learning_rate=0.5, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["bias"])
    kernel, bias = net.weights
    opt.apply_gradients([(np.zeros((3, 2), np.float32), kernel), (np.zeros(2, np.float32), bias)])
    np.testing.assert_allclose(kernel.numpy(), np.full((3, 2), 0.95), rtol=1e-6)
    np.testing.assert_array_equal(bias.numpy(), np.ones(2))


def test_clipping_keeps_the_gradients_given_and_their_device(dev):
    g = dev.asarray(np.array([3.0, 4.0], np.float32))
    for opt in (optimizers.SGD(clipnorm=1.0), optimizers.SGD(global_clipnorm=1.0), optimizers.SGD(clipvalue=1.0)):
        (clipped,) = opt.clip_gradients([g])
        assert type(clipped) is type(g) and clipped.dtype == g.dtype
    np.testing.assert_array_equal(dev.to_host(g), [3.0, 4.0])
    assert optimizers.SGD(global_clipnorm=1.0).clip_gradients([None, g])[0] is None
    (nan,) = optimizers.SGD(global_clipnorm=1.0).clip_gradients([dev.asarray(np.array([np.inf, 1.0], np.float32))])
    assert np.isnan(dev.to_host(nan)).all()                  # Keras: a non-finite global norm gives NaN


def test_checkpoints_keep_schedules_and_the_new_arguments(tmp_path):
    from gpunet import layers, models
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((32, 4)).astype(np.float32), rng.standard_normal((32, 2)).astype(np.float32)

    def net():
        gpunet.random.seed(5)
        model = models.Sequential([layers.Dense(2, input_shape=(4,))])
        model.compile(optimizer=optimizers.Adam(schedules.PolynomialDecay(0.05, 10, 0.001), amsgrad=True,
                                                weight_decay=0.01, global_clipnorm=1.0, name="mine"), loss="mse")
        return model

    straight, saved = net(), net()
    straight.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    saved.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    saved.save(tmp_path / "ckpt.npz")
    resumed = models.load_model(tmp_path / "ckpt.npz")
    assert resumed.optimizer.get_config() == saved.optimizer.get_config()
    assert resumed.optimizer.name == "mine" and resumed.optimizer.iterations == 4
    resumed.fit(x, y, epochs=2, initial_epoch=1, batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_learning_rate_callable_cannot_go_into_a_checkpoint():
    with pytest.raises(CheckpointError, match="callable or a schedule of your own"):
        optimizers.serialize(optimizers.SGD(learning_rate=lambda: 0.1))

    class Mine(schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.1

        def get_config(self):
            return {}

    with pytest.raises(CheckpointError, match="Mine"):
        optimizers.serialize(optimizers.SGD(learning_rate=Mine()))
    assert type(schedules.deserialize(schedules.serialize(Mine()), {"Mine": Mine})) is Mine


def test_configs_of_earlier_gpunet_and_of_keras_load():
    old = optimizers.deserialize({"name": "rmsprop", "config": {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.0,
                                                                 "epsilon": 1e-7, "centered": True,
                                                                 "eps_inside_sqrt": False}})
    assert isinstance(old, optimizers.RMSprop) and (old.centered, old.eps_inside_sqrt, old.rho) == (True, False, 0.8)
    keras_config = {"module": "keras.optimizers", "class_name": "Adam", "registered_name": None, "config": {
        "name": "adam", "learning_rate": {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay",
                                          "config": {"initial_learning_rate": 0.1, "decay_steps": 10,
                                                     "decay_rate": 0.9, "staircase": False,
                                                     "name": "ExponentialDecay"}, "registered_name": None},
        "weight_decay": None, "clipnorm": None, "global_clipnorm": 1.0, "clipvalue": None, "use_ema": False,
        "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
        "gradient_accumulation_steps": None, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False}}
    adam = optimizers.get(keras_config)
    assert isinstance(adam, optimizers.Adam) and adam.global_clipnorm == 1.0
    assert isinstance(adam.get_config()["learning_rate"], dict) and adam.learning_rate == pytest.approx(0.1)
    assert sorted(adam.get_config()) == sorted(keras_config["config"])


@pytest.mark.parametrize("kwargs,match", [
    ({"weight_decay": -0.1}, "weight_decay must be None or a finite number >= 0"),
    ({"clipnorm": float("nan")}, "clipnorm must be None"), ({"clipvalue": "big"}, "clipvalue must be None"),
    ({"weight_decay": False}, "weight_decay must be None")])
def test_bad_new_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimizers.Adam(**kwargs)


def test_rmsprops_eps_inside_sqrt_is_keyword_only():
    """Keras' sixth argument is weight_decay; gpunet's earlier sixth, eps_inside_sqrt, is refused there."""
    with pytest.raises(ValueError, match="weight_decay must be None"):
        optimizers.RMSprop(0.001, 0.9, 0.0, 1e-7, False, False)
    assert optimizers.RMSprop(eps_inside_sqrt=False).get_config()["eps_inside_sqrt"] is False


def test_a_float_learning_rate_can_still_change_between_steps():
    w = gpunet.tensor(np.zeros(1, np.float32), requires_grad=True)
    opt = optimizers.SGD(0.1)
    _step(opt, w)
    opt.learning_rate = 0.5
    _step(opt, w)
    np.testing.assert_allclose(w.numpy(), [-0.6], rtol=1e-6)
    opt.learning_rate = lambda step: 0.25
    _step(opt, w)
    np.testing.assert_allclose(w.numpy(), [-0.85], rtol=1e-6)
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        opt.learning_rate = -1.0
