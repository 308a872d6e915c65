"""A matrix product that can run inside a captured CUDA graph (``gemm.cu``), and its NumPy twin.

CuPy's cuBLAS calls refuse to run while a stream is being captured (cupy/cupy#6290), so a training
step captured into a CUDA graph takes its products from this kernel instead: one thread per output
element, the ``k`` products summed in order with every operation rounded (no FMA). It is simple and
deterministic, not fast: cuBLAS serves every uncaptured step. The twin sums in the same order, so the
two give the same bits (and both differ from BLAS's blocked sums in the last bits).
"""
from __future__ import annotations

from . import cuda

SOURCE = cuda.Source(__file__, "gemm.cu")


def _operand(a):
    """``(base, transposed, leading stride)`` of a 2-D float32 matrix that is C-contiguous or the
    transpose of a C-contiguous one; None otherwise."""
    if a.flags.c_contiguous:
        return a, 0, a.shape[1]
    if a.T.flags.c_contiguous:
        return a.T, 1, a.shape[0]
    return None


def matmul(xp, a, b, out=None):
    """``a @ b`` for 2-D float32 matrices, into ``out`` (a C-contiguous ``(m, n)`` array) when given."""
    m, k = a.shape
    n = b.shape[1]
    out = xp.empty((m, n), dtype="float32") if out is None else out
    if cuda.is_gpu(xp):
        pa, pb = _operand(a), _operand(b)
        if pa is None or pb is None:
            pa = pa or _operand(xp.ascontiguousarray(a))
            pb = pb or _operand(xp.ascontiguousarray(b))
        (A, ta, lda), (B, tb, ldb) = pa, pb
        SOURCE.launch("gemm_f32", m * n, (A, B, out, cuda.i64(m), cuda.i64(n), cuda.i64(k), cuda.i64(lda),
                                          cuda.i64(ldb), cuda.i32(ta), cuda.i32(tb)))
        return out
    acc = xp.zeros((m, n), dtype="float32")
    for p in range(k):                      # the kernel's order: one rounded product and sum per k
        acc += xp.multiply.outer(a[:, p], b[p, :]).astype("float32", copy=False)
    out[...] = acc
    return out
