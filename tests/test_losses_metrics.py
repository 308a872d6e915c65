"""Losses against NumPy formulas and finite differences; metrics against direct counts."""
import numpy as np
import pytest

import gpunet
from gpunet import losses, metrics
from gradcheck import check_grad

rng = np.random.default_rng(3)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def onehot(labels, k):
    return np.eye(k)[labels]


LAB = rng.integers(0, 4, 6)
Z = rng.standard_normal((6, 4))
P = softmax(Z)
YB = rng.integers(0, 2, (6, 1)).astype(float)
PB = 1 / (1 + np.exp(-Z[:, :1]))
YR, PR = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))

CASES = [
    ("categorical_crossentropy", {}, onehot(LAB, 4), P, -np.log(P[np.arange(6), LAB]).mean()),
    ("categorical_crossentropy", {"from_logits": True}, onehot(LAB, 4), Z, -np.log(P[np.arange(6), LAB]).mean()),
    ("sparse_categorical_crossentropy", {}, LAB.astype(float), P, -np.log(P[np.arange(6), LAB]).mean()),
    ("sparse_categorical_crossentropy", {"from_logits": True}, LAB.astype(float), Z,
     -np.log(P[np.arange(6), LAB]).mean()),
    ("binary_crossentropy", {}, YB, PB, -(YB * np.log(PB) + (1 - YB) * np.log(1 - PB)).mean()),
    ("binary_crossentropy", {"from_logits": True}, YB, Z[:, :1], -(YB * np.log(PB) + (1 - YB) * np.log(1 - PB)).mean()),
    ("mse", {}, YR, PR, ((YR - PR) ** 2).mean()),
    ("mean_absolute_error", {}, YR, PR, np.abs(YR - PR).mean()),
]


@pytest.mark.parametrize("name,kw,y,p,want", CASES)
def test_loss_value_and_gradient(dev, name, kw, y, p, want):
    cls = type(losses.get(name))
    loss = cls(**kw)
    yt = gpunet.tensor(y, dtype="float64", device=dev)
    got = check_grad(dev, lambda t: loss(yt, t), p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_categorical_ce_is_finite_for_confident_wrong_predictions(dev):
    y = gpunet.tensor([[1.0, 0.0]], device=dev)
    for loss in (losses.CategoricalCrossentropy(), losses.CategoricalCrossentropy(from_logits=True)):
        val = loss(y, gpunet.tensor([[0.0, 1.0]] if not loss.from_logits else [[-1e4, 1e4]], device=dev)).item()
        assert np.isfinite(val) and val > 10


def test_fused_softmax_ce_gradient_is_exact(dev):
    """The model's fused path gives (p - y)/n exactly, not the clipped-log gradient."""
    z = rng.standard_normal((5, 3)).astype(np.float32) * 20
    y = onehot(rng.integers(0, 3, 5), 3).astype(np.float32)
    zt = gpunet.tensor(z, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        loss = losses.CategoricalCrossentropy().from_logits_loss(gpunet.tensor(y, device=dev), zt)
    np.testing.assert_allclose(tape.gradient(loss, zt).numpy(), (softmax(z.astype(np.float64)) - y) / 5,
                               rtol=1e-5, atol=1e-7)


def test_callable_loss_and_unknown_name():
    f = losses.get(lambda yt, yp: ((yt - yp) ** 2).sum(axis=-1))
    assert f(gpunet.tensor([[1.0, 2.0]]), gpunet.tensor([[0.0, 0.0]])).item() == 5.0
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid names: binary_crossentropy"):
        losses.get("hinge")


@pytest.mark.parametrize("kind,y,p,want", [
    ("categorical", onehot([0, 1, 2, 1], 3), softmax(np.array([[3., 0, 0], [0, 2, 0], [5, 0, 0], [0, 1, 0]])), 3),
    ("sparse", np.array([0, 1, 2, 1]), softmax(np.array([[3., 0, 0], [0, 2, 0], [5, 0, 0], [0, 0, 1]])), 2),
    ("binary", np.array([[1.], [0.], [1.], [0.]]), np.array([[.9], [.2], [.4], [.7]]), 2),
])
def test_accuracy_kinds(dev, kind, y, p, want):
    m = metrics.Accuracy(kind=kind)
    got = m.batch_sum(gpunet.tensor(y, device=dev), gpunet.tensor(p, device=dev))
    assert int(got) == want


def test_accuracy_kind_is_resolved_like_keras():
    assert metrics.Accuracy().resolve(losses.get("categorical_crossentropy"), (8, 10), (None, 10)) == "categorical"
    assert metrics.Accuracy().resolve(losses.get("sparse_categorical_crossentropy"), (8,), (None, 10)) == "sparse"
    assert metrics.Accuracy().resolve(losses.get("binary_crossentropy"), (8, 1), (None, 1)) == "binary"
    assert metrics.Accuracy().resolve(losses.get("mse"), (8,), (None, 10)) == "sparse"


def test_metric_names():
    assert metrics.get("mae").name == "mae" and metrics.get("acc").name == "acc"
    with pytest.raises(ValueError, match="unknown metric 'f1'; valid names: acc, accuracy"):
        metrics.get("f1")
