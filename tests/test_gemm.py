"""The capture-safe matrix product (gpunet/kernels/gemm.cu) against its NumPy twin, bit for bit, and
against float64 products."""
import numpy as np
import pytest

from gpunet.kernels import gemm

rng = np.random.default_rng(3)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", [(5, 7, 3), (1, 1, 1), (33, 64, 17)])
def test_kernel_equals_twin_and_is_a_matrix_product(gpu_dev, m, k, n, ta, tb):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    A, B = (a.T if ta else a), (b.T if tb else b)
    twin = gemm.matmul(np, A, B)
    xp = gpu_dev.xp
    da, db = xp.asarray(a), xp.asarray(b)
    got = gemm.matmul(xp, da.T if ta else da, db.T if tb else db)
    np.testing.assert_array_equal(gpu_dev.to_host(got), twin)
    np.testing.assert_allclose(twin, A.astype(np.float64) @ B.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_twin_into_out():
    a, b = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((6, 2)).astype(np.float32)
    out = np.empty((4, 2), np.float32)
    assert gemm.matmul(np, a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)
