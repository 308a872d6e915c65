"""Optimizer trajectories against Keras' closed-form update rules, computed independently in float64."""
import math

import numpy as np
import pytest

import gpunet
from gpunet import optimizers

STEPS = 6


def reference(name, cfg, w0, grads):
    """Keras 3 formulas, step by step in float64."""
    w = w0.astype(np.float64).copy()
    m = np.zeros_like(w); v = np.zeros_like(w); a = np.zeros_like(w); mom = np.zeros_like(w)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if name == "sgd":
            lr, mu = cfg.get("learning_rate", 0.01), cfg.get("momentum", 0.0)
            if mu == 0:
                w = w - lr * g
            else:
                m = mu * m - lr * g
                w = w + (mu * m - lr * g if cfg.get("nesterov") else m)
        elif name == "rmsprop":
            lr, rho, eps = cfg.get("learning_rate", 1e-3), cfg.get("rho", 0.9), cfg.get("epsilon", 1e-7)
            mu = cfg.get("momentum", 0.0)
            v = rho * v + (1 - rho) * g * g
            denom = v
            if cfg.get("centered"):
                a = rho * a + (1 - rho) * g
                denom = v - a * a
            if cfg.get("eps_inside_sqrt", True):
                inc = lr * g / np.sqrt(denom + eps)
            else:
                inc = lr * g / (np.sqrt(denom) + eps)
            if mu:
                mom = mu * mom + inc
                w = w - mom
            else:
                w = w - inc
        elif name == "adam":
            lr, b1, b2, eps = (cfg.get("learning_rate", 1e-3), cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999),
                               cfg.get("epsilon", 1e-7))
            m = m + (g - m) * (1 - b1)
            v = v + (g * g - v) * (1 - b2)
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            w = w - alpha * m / (np.sqrt(v) + eps)
        out.append(w.copy())
    return out


CASES = [
    ("sgd", {}), ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.5, "nesterov": True}),
    ("rmsprop", {}), ("rmsprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.9}),
    ("rmsprop", {"centered": True}), ("rmsprop", {"eps_inside_sqrt": False, "epsilon": 1e-8}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "eps_inside_sqrt": False}),
    ("adam", {}), ("adam", {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}),
]


@pytest.mark.parametrize("name,cfg", CASES)
def test_trajectory_matches_closed_form(dev, name, cfg):
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    b0 = rng.standard_normal(3).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(STEPS)]
    bgrads = [rng.standard_normal(3).astype(np.float32) for _ in range(STEPS)]
    opt = optimizers.get(name) if not cfg else {"sgd": optimizers.SGD, "rmsprop": optimizers.RMSprop,
                                                  "adam": optimizers.Adam}[name](**cfg)
    w = gpunet.tensor(w0, device=dev, requires_grad=True)
    b = gpunet.tensor(b0, device=dev, requires_grad=True)
    want_w = reference(name, cfg, w0, grads)
    want_b = reference(name, cfg, b0, bgrads)
    data_before = w.data
    for t in range(STEPS):
        opt.apply_gradients(zip([gpunet.tensor(grads[t], device=dev), gpunet.tensor(bgrads[t], device=dev)], [w, b]))
        np.testing.assert_allclose(w.numpy(), want_w[t], rtol=2e-5, atol=2e-6, err_msg=f"step {t + 1}")
        np.testing.assert_allclose(b.numpy(), want_b[t], rtol=2e-5, atol=2e-6)
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
