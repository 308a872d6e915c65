"""The chapter's naive loops: correct values, and clear errors instead of bare asserts."""
import numpy as np
import pytest

import gpunet
from gpunet import naive

rng = np.random.default_rng(1)


def test_naive_functions_agree_with_numpy():
    x, y, v = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(4)
    np.testing.assert_array_equal(naive.naive_relu(x), np.maximum(x, 0))
    np.testing.assert_allclose(naive.naive_add(x, x), 2 * x)
    np.testing.assert_allclose(naive.naive_add_matrix_and_vector(x, v), x + v)
    np.testing.assert_allclose(naive.naive_vector_dot(v, v), v @ v)
    np.testing.assert_allclose(naive.naive_matrix_vector_dot(x, v), x @ v)
    np.testing.assert_allclose(naive.naive_matrix_dot(x, y), x @ y)


def test_naive_does_not_overwrite_input():
    x = -np.ones((2, 2))
    naive.naive_relu(x)
    assert (x == -1).all()


@pytest.mark.parametrize("call,words", [
    (lambda: naive.naive_relu(np.ones(3)), "needs a 2D tensor, got shape (3,)"),
    (lambda: naive.naive_add(np.ones((2, 3)), np.ones((3, 2))), "equal shapes, got (2, 3) and (3, 2)"),
    (lambda: naive.naive_add_matrix_and_vector(np.ones((2, 3)), np.ones(2)), "3 columns but y has 2"),
    (lambda: naive.naive_vector_dot(np.ones(2), np.ones(3)), "different lengths 2 and 3"),
    (lambda: naive.naive_matrix_vector_dot(np.ones((2, 3)), np.ones((3, 1))), "y must be a vector"),
    (lambda: naive.naive_matrix_dot(np.ones((2, 3)), np.ones((2, 3))), "width of x (3) must equal the height of y (2)"),
])
def test_naive_shape_errors_are_clear(call, words):
    with pytest.raises(gpunet.ShapeError) as info:
        call()
    assert words in str(info.value)


def test_naive_accepts_tensors():
    t = gpunet.tensor([[1.0, -1.0]])
    np.testing.assert_array_equal(naive.naive_relu(t), [[1.0, 0.0]])
