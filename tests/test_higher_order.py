"""Higher-order gradients through nested tapes: TensorFlow's own example (d2/dt2 of t**3 at 3 is 18)
and, for compositions of every supported op, the second derivative against float64 central
differences of the first derivative (computed with one tape)."""
import numpy as np
import pytest

import gpunet
from gpunet import ops


def test_tensorflow_second_derivative_example(dev):
    t = gpunet.tensor(3.0, device=dev)
    with gpunet.GradientTape() as outer:
        outer.watch(t)
        with gpunet.GradientTape() as inner:
            inner.watch(t)
            y = t * t * t
        dy = inner.gradient(y, t)
    assert float(dy.numpy()) == 27.0
    assert float(outer.gradient(dy, t).numpy()) == 18.0


def _first_gradient(f, x, dev):
    """df/dx with one tape, float64 (the reference's building block)."""
    xt = gpunet.tensor(x, dtype="float64", device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = f(xt)
    return tape.gradient(y, xt).numpy()


FUNCTIONS = {
    "arithmetic": lambda x: ((x * x - 3 * x) / (1 + x * x) + 2 ** x + x ** 3).sum(),
    "exp-log-sqrt": lambda x: (ops.exp(x * 0.5) * ops.log(x + 3) + ops.sqrt(x + 4) + ops.square(x)).mean(),
    "activations": lambda x: (ops.sigmoid(x) * ops.tanh(2 * x) + ops.relu(x) * x).sum(),
    "shapes": lambda x: (x.reshape((3, 2)).T @ gpunet.tensor(np.arange(9.0).reshape(3, 3), dtype="float64",
                                                           device=x.device)).sum(axis=1).mean() * x.sum(),
    "matmul": lambda x: ops.tanh(x.reshape((2, 3)) @ x.reshape((3, 2))).sum(),
    "broadcast": lambda x: ((x.reshape((6, 1)) - x.reshape((1, 6))) ** 2).sum(axis=0, keepdims=True).sum(),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_second_derivative_matches_central_differences_of_the_first(dev, name):
    f = FUNCTIONS[name]
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1.5, 1.5, 6)
    v = rng.standard_normal(6)                        # Hessian-vector product H v, checked by differences
    xt = gpunet.tensor(x0, dtype="float64", device=dev)
    vt = gpunet.tensor(v, dtype="float64", device=dev)
    with gpunet.GradientTape() as outer:
        outer.watch(xt)
        with gpunet.GradientTape() as inner:
            inner.watch(xt)
            y = f(xt)
        g = inner.gradient(y, xt)
        gv = (g * vt).sum()
    hv = outer.gradient(gv, xt).numpy()
    np.testing.assert_allclose(g.numpy(), _first_gradient(f, x0, dev), rtol=1e-12)
    eps = 1e-5
    want = (_first_gradient(f, x0 + eps * v, dev) - _first_gradient(f, x0 - eps * v, dev)) / (2 * eps)
    np.testing.assert_allclose(hv, want, rtol=1e-6, atol=1e-8)


def test_an_op_without_a_second_derivative_says_so():
    x = gpunet.tensor([1.0, 2.0])
    with gpunet.GradientTape() as outer:
        outer.watch(x)
        with gpunet.GradientTape() as inner:
            inner.watch(x)
            y = ops.softmax(x).sum()
        with pytest.raises(NotImplementedError, match=r"higher-order gradient\) cannot go through softmax"):
            inner.gradient(y, x)


def test_a_gradient_outside_any_other_tape_records_nothing():
    x = gpunet.tensor([1.0, 2.0], requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = (x * x).sum()
    g = tape.gradient(y, x)
    assert not gpunet.is_recording() and not g.requires_grad
    np.testing.assert_array_equal(g.numpy(), [2.0, 4.0])
