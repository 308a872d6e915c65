"""Each op: forward against NumPy (and the chapter's naive loops), gradient against float64 finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra import numpy as hnp

import gpunet
from gpunet import naive, ops
from gradcheck import check_grad

rng = np.random.default_rng(0)


def R(*shape):
    return rng.standard_normal(shape)


def P(*shape):
    """Positive values away from 0 (for log, sqrt, division)."""
    return rng.uniform(0.5, 2.0, shape)


# --- binary element-wise ops with broadcasting --------------------------------
BROADCAST_PAIRS = [((3, 4), (3, 4)), ((32, 10), (10,)), ((2, 3, 4), (3, 1)), ((4, 1), (1, 5)), ((), (3,)),
                   ((64 // 16, 3, 2, 5), (2, 5))]


@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS)
@pytest.mark.parametrize("name,ref", [("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply),
                                      ("divide", np.divide), ("maximum", np.maximum), ("minimum", np.minimum)])
def test_binary_forward_and_gradient(dev, name, ref, sa, sb):
    a = R(*sa)
    b = P(*sb) if name == "divide" else R(*sb)
    out = check_grad(dev, getattr(ops, name), a, b)
    np.testing.assert_allclose(out, ref(a, b), rtol=1e-12)
    assert out.shape == np.broadcast_shapes(sa, sb)


def test_power_gradient_both_operands(dev):
    a, b = P(3, 4), R(4)
    out = check_grad(dev, ops.power, a, b)
    np.testing.assert_allclose(out, a ** b, rtol=1e-12)


def test_operators_match_ops(dev):
    a, b = gpunet.tensor(P(2, 3), device=dev), gpunet.tensor(P(3), device=dev)
    A, B = a.numpy(), b.numpy()
    for got, want in [(a + b, A + B), (a - b, A - B), (a * b, A * B), (a / b, A / B), (a ** 2, A ** 2),
                      (-a, -A), (2 - a, 2 - A), (1 / a, 1 / A), (a @ b.reshape(3, 1), A @ B.reshape(3, 1)),
                      (abs(-a), A)]:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert (a > 1).dtype == bool and np.array_equal((a > 1).numpy(), A > 1)
    assert np.array_equal((a <= b).numpy(), A <= B) and np.array_equal((a == a).numpy(), np.ones_like(A, bool))


def test_python_scalars_keep_float32(dev):
    x = gpunet.tensor([1.0, 2.0], device=dev)
    for y in (x * 2.5, 2.5 * x, x / 3, x + 1, x ** 2, 1 - x):
        assert y.dtype == np.float32


# --- unary ops ------------------------------------------------------------------
@pytest.mark.parametrize("name,ref,make", [
    ("relu", lambda x: np.maximum(x, 0), R), ("sigmoid", lambda x: 1 / (1 + np.exp(-x)), R),
    ("tanh", np.tanh, R), ("exp", np.exp, R), ("log", np.log, P), ("sqrt", np.sqrt, P),
    ("negative", np.negative, R), ("square", np.square, R), ("abs", np.abs, R)])
def test_unary_forward_and_gradient(dev, name, ref, make):
    x = make(4, 5)
    out = check_grad(dev, getattr(ops, name), x)
    np.testing.assert_allclose(out, ref(x), rtol=1e-12)


def test_relu_matches_naive_loop(dev):
    x = R(6, 7).astype(np.float32)
    np.testing.assert_array_equal(ops.relu(gpunet.tensor(x, device=dev)).numpy(), naive.naive_relu(x))


def test_sigmoid_is_finite_at_extremes(dev):
    y = ops.sigmoid(gpunet.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], device=dev)).numpy()
    assert np.all(np.isfinite(y)) and y[0] == 0 and y[-1] == 1 and y[2] == 0.5


def test_clip(dev):
    x = np.array([[-2.0, -0.5, 0.3, 0.9, 3.0]])
    out = check_grad(dev, lambda t: ops.clip(t, -1.0, 1.0), x)
    np.testing.assert_allclose(out, np.clip(x, -1, 1))


def test_where(dev):
    a, b = R(3, 4), R(4)
    cond = a > 0.1
    out = check_grad(dev, lambda x, y: ops.where(gpunet.tensor(cond, device=dev), x, y), a, b)
    np.testing.assert_allclose(out, np.where(cond, a, b))


# --- softmax family -------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_and_log_softmax(dev, axis):
    x = R(4, 6)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    ref = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(check_grad(dev, lambda t: ops.softmax(t, axis), x), ref, rtol=1e-12)
    np.testing.assert_allclose(check_grad(dev, lambda t: ops.log_softmax(t, axis), x), np.log(ref), rtol=1e-10)


def test_softmax_stable_at_huge_logits(dev):
    z = gpunet.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], device=dev)
    p, lp = ops.softmax(z).numpy(), ops.log_softmax(z).numpy()
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(p[0], [1, 0, 0])
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(lp[0], [0, -1e4, -2e4])


@pytest.mark.parametrize("sparse", [False, True])
def test_softmax_cross_entropy_value_and_gradient(dev, sparse):
    z = R(5, 4) * 3
    labels = rng.integers(0, 4, 5)
    y = labels if sparse else np.eye(4)[labels]
    lp = z - z.max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    want = -lp[np.arange(5), labels].mean()
    yt = gpunet.tensor(y, device=dev, dtype="int64" if sparse else "float64")
    got = check_grad(dev, lambda t: ops.softmax_cross_entropy(t, yt, sparse=sparse), z)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_softmax_cross_entropy_gradient_is_p_minus_y_over_n(dev):
    z = gpunet.tensor([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]], device=dev, requires_grad=True)
    y = gpunet.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], device=dev)
    with gpunet.GradientTape() as tape:
        loss = ops.softmax_cross_entropy(z, y)
    g = tape.gradient(loss, z).numpy()
    np.testing.assert_allclose(loss.item(), (2e4 + np.log(3)) / 2, rtol=1e-6)   # finite, not inf/NaN
    np.testing.assert_allclose(g, (np.array([[1, 0, 0], [1 / 3] * 3]) - y.numpy()) / 2, rtol=1e-6)


# --- reductions ------------------------------------------------------------------
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_reductions(dev, name, axis, keepdims):
    x = R(3, 4, 5)
    out = check_grad(dev, lambda t: getattr(ops, name)(t, axis=axis, keepdims=keepdims), x)
    np.testing.assert_allclose(out, getattr(np, name)(x, axis=axis, keepdims=keepdims), rtol=1e-12)


def test_max_ties_share_gradient(dev):
    x = gpunet.tensor([[1.0, 3.0, 3.0]], device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = x.max()
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [[0, 0.5, 0.5]])


def test_reduction_bad_axis_is_clear(dev):
    with pytest.raises(gpunet.ShapeError, match="axis 3 is out of range"):
        gpunet.tensor(R(2, 2), device=dev).sum(axis=3)


# --- shapes ------------------------------------------------------------------------
def test_reshape_and_transpose_as_in_chapter(dev):
    x = gpunet.tensor([[0., 1.], [2., 3.], [4., 5.]], device=dev)
    assert x.shape == (3, 2)
    np.testing.assert_array_equal(x.reshape((6, 1)).numpy(), np.arange(6.0).reshape(6, 1))
    np.testing.assert_array_equal(x.reshape((2, 3)).numpy(), [[0, 1, 2], [3, 4, 5]])
    assert gpunet.zeros((300, 20), device=dev).transpose().shape == (20, 300)
    check_grad(dev, lambda t: t.reshape((2, -1)), R(3, 4))
    check_grad(dev, lambda t: t.transpose((2, 0, 1)), R(2, 3, 4))
    check_grad(dev, lambda t: t.T, R(2, 3))
    with pytest.raises(gpunet.ShapeError, match=r"cannot reshape .*\(3, 2\).* into \(4, 2\)"):
        x.reshape((4, 2))


CHAPTER_SLICES = [(slice(10, 100),), (slice(10, 100), slice(0, 28), slice(0, 28)),
                  (slice(None), slice(7, -7), slice(7, -7)), (slice(None), slice(14, None), slice(14, None))]


@pytest.mark.parametrize("index", CHAPTER_SLICES)
def test_getitem_chapter_slices(dev, index):
    x = R(120, 28, 28)
    got = gpunet.tensor(x, device=dev)[index].numpy()
    np.testing.assert_allclose(got, x[index].astype(np.float32))
    check_grad(dev, lambda t: t[index], R(16, 20, 20))


@pytest.mark.parametrize("index", [(-1,), (slice(None), -3), (Ellipsis, 2), (None, 1), (np.array([0, 2, 2, 5]),),
                                   (slice(None), np.array([1, 1, 0])), (slice(None, None, -2),)])
def test_getitem(dev, index):
    x = R(6, 5, 4)
    out = check_grad(dev, lambda t: t[index], x)
    np.testing.assert_allclose(out, x[index])


def test_getitem_boolean_mask_and_tensor_index(dev):
    x = R(4, 3)
    mask = x[:, 0] > 0
    check_grad(dev, lambda t: t[gpunet.tensor(mask, device=dev)], x)
    check_grad(dev, lambda t: t[gpunet.tensor([3, 0, 3], device=dev)], x)


def test_concatenate_and_stack(dev):
    a, b, c = R(2, 3), R(4, 3), R(2, 3)
    np.testing.assert_allclose(check_grad(dev, lambda x, y: ops.concatenate([x, y], 0), a, b),
                               np.concatenate([a, b]))
    np.testing.assert_allclose(check_grad(dev, lambda x, y: ops.concatenate([x, y], axis=-1), a, c),
                               np.concatenate([a, c], -1))
    np.testing.assert_allclose(check_grad(dev, lambda x, y: ops.stack([x, y], axis=1), a, c), np.stack([a, c], 1))


def test_astype_gradient_flows_back(dev):
    x = gpunet.tensor([1.5, 2.5], device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = (x.astype("float64") * 3).sum()
    g = tape.gradient(y, x)
    assert g.dtype == np.float32 and np.allclose(g.numpy(), 3)


# --- products ------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((4, 3), (3,)), ((3,), (3, 5)), ((4, 3), (3, 5)),
                                   ((2, 4, 3), (3, 5)), ((2, 4, 3), (2, 3, 5)), ((1, 4, 3), (2, 3, 5)),
                                   ((2, 4, 3), (3,))])
def test_matmul(dev, sa, sb):
    a, b = R(*sa), R(*sb)
    np.testing.assert_allclose(check_grad(dev, ops.matmul, a, b), np.matmul(a, b), rtol=1e-10)


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((4, 3), (3,)), ((4, 3), (3, 5)), ((2, 3, 4, 5), (5,)),
                                   ((2, 3, 4, 5), (5, 6)), ((2, 3), (4, 3, 2)), ((), (3,))])
def test_dot_chapter_shape_rules(dev, sa, sb):
    a, b = R(*sa), R(*sb)
    out = check_grad(dev, ops.dot, a, b)
    np.testing.assert_allclose(out, np.dot(a, b), rtol=1e-10)
    assert out.shape == np.dot(a, b).shape


def test_dot_matches_naive_loops(dev):
    x, y, v = R(5, 4), R(4, 3), R(4)
    t = lambda a: gpunet.tensor(a, dtype="float64", device=dev)
    np.testing.assert_allclose(ops.dot(t(x), t(y)).numpy(), naive.naive_matrix_dot(x, y), rtol=1e-12)
    np.testing.assert_allclose(ops.dot(t(x), t(v)).numpy(), naive.naive_matrix_vector_dot(x, v), rtol=1e-12)
    np.testing.assert_allclose(ops.dot(t(v), t(v)).numpy(), naive.naive_vector_dot(v, v), rtol=1e-12)
    np.testing.assert_allclose((t(x) + t(v)).numpy(), naive.naive_add_matrix_and_vector(x, v))
    np.testing.assert_allclose((t(x) + t(x)).numpy(), naive.naive_add(x, x))


def test_dot_shape_error_names_both_shapes(dev):
    with pytest.raises(gpunet.ShapeError, match=r"\(4, 3\) and \(4,\)"):
        ops.dot(gpunet.tensor(R(4, 3), device=dev), gpunet.tensor(R(4), device=dev))
    with pytest.raises(gpunet.ShapeError, match=r"matmul shapes \(2, 3\) and \(2, 3\)"):
        gpunet.tensor(R(2, 3), device=dev) @ gpunet.tensor(R(2, 3), device=dev)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("xshape", [(5, 4), (2, 3, 4)])
def test_dense_fused_op(dev, activation, xshape):
    x, W, b = R(*xshape), R(4, 3), R(3)
    ref = np.dot(x, W) + b
    ref = np.maximum(ref, 0) if activation else ref
    np.testing.assert_allclose(check_grad(dev, lambda *t: ops.dense(*t, activation=activation), x, W, b), ref)
    np.testing.assert_allclose(check_grad(dev, lambda x_, w_: ops.dense(x_, w_, activation=activation), x, W),
                               np.maximum(np.dot(x, W), 0) if activation else np.dot(x, W))


def test_dense_skips_input_gradient(dev, monkeypatch):
    """The data's gradient is never computed when nothing tracks the data (saves ~1/3 of the matmuls)."""
    x = gpunet.tensor(R(8, 4), device=dev)
    W = gpunet.tensor(R(4, 3), device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = ops.dense(x, W).sum()
    rec = tape._records[0]
    assert rec[2] == (False, True)
    g = rec[3](dev.xp.ones((8, 3), dtype=np.float32), rec[2])
    assert g[0] is None and g[1].shape == (4, 3)
    assert tape.gradient(y, x) is None


# --- property-based: random broadcastable shapes -------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       op=st.sampled_from(["add", "subtract", "multiply", "divide", "maximum"]), seed=st.integers(0, 2 ** 16))
def test_property_broadcast_gradients(dev, shapes, op, seed):
    r = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a = r.uniform(0.5, 2, sa) * r.choice([-1, 1], sa)
    b = r.uniform(0.5, 2, sb)
    out = check_grad(dev, getattr(ops, op), a, b)
    assert out.shape == shapes.result_shape


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data())
def test_property_reductions_and_reshape(dev, shape, data):
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    keep = data.draw(st.booleans())
    check_grad(dev, lambda t: ops.sum(t * t, axis=axis, keepdims=keep), x)
    check_grad(dev, lambda t: ops.mean(t, axis=axis, keepdims=keep), x)
    check_grad(dev, lambda t: t.reshape((-1,)), x)
