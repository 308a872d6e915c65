"""The dense layer's array math: bias + activation, the ReLU backward, and the matrix products.

``bias_act``, ``act_backward`` and ``bias_grad`` are kernels (``dense.cu``, on a GPU or built for the
CPU: :mod:`.host`) with NumPy twins;
``dense_forward``/``dense_backward`` add the products (BLAS on the CPU, cuBLAS through CuPy; while a
CUDA graph is being captured, which cuBLAS refuses, the capture-safe kernel of :mod:`.gemm`).
All arrays are float32; ``x2`` is the layer input as a matrix ``(n, in)``. Every function can write
into arrays it is given (``out``, ``buffers``), so a training step need allocate nothing.
"""
from __future__ import annotations

from . import cuda, gemm, recording

ACTIVATION_CODES = {None: 0, "linear": 0, "relu": 1}      # the kernels' ``act`` argument
SOURCE = cuda.Source(__file__, "dense.cu")


def matmul(xp, a, b, out=None):
    """``a @ b`` of 2-D arrays into ``out`` (when given): ``xp.matmul``, or :func:`.gemm.matmul` while
    the current CUDA stream is being captured into a graph."""
    if cuda.capturing(xp):
        return gemm.matmul(xp, a, b, out=out)
    out = xp.matmul(a, b, out=out)
    if recording.active() is not None:      # a CPU step being recorded: the product again into ``out``
        recording.record(xp.matmul, a, b, out=out)
    return out


def _flat(*arrays) -> bool:
    """The kernels index memory as one flat C-ordered buffer: strided views take the twin's path."""
    return all(a.flags.c_contiguous for a in arrays)


def _launch_bias_act(xp, z, b, out, code) -> bool:
    """``bias_act_fwd`` on a GPU; on the CPU ``bias_act_rows`` (the same bits, a row per iteration)."""
    cols = z.shape[-1] if z.ndim else 1
    if cuda.is_gpu(xp):
        return SOURCE.launch("bias_act_fwd", z.size, (z, cuda.pointer(b), out, cuda.i64(z.size), cuda.i64(cols),
                                                      cuda.i32(code)))
    return cols > 0 and SOURCE.launch("bias_act_rows", z.size, (z, cuda.pointer(b), out, cuda.i64(z.size // cols),
                                                                cuda.i64(cols), cuda.i32(code)))


def bias_act(xp, z, b, activation, out=None):
    """``act(z + b)`` into ``out`` (default: in place into ``z``); ``b`` ``(cols,)`` or None,
    ``activation`` None/'linear' or 'relu'. Returns the result."""
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"bias_act supports activations None, 'linear', 'relu'; got {activation!r}")
    out = z if out is None else out
    code = ACTIVATION_CODES[activation]
    if cuda.fused(xp) and z.dtype == "float32" and out.dtype == "float32" and out.shape == z.shape and \
            _flat(z, out) and (b is None or (b.dtype == "float32" and b.shape == z.shape[-1:] and _flat(b))) and \
            _launch_bias_act(xp, z, b, out, code):
        return out
    if b is not None:
        z = xp.add(z, b, out=out)
    if code == 1:
        xp.maximum(z, 0, out=out)
    elif z is not out:
        out[...] = z
    return out


def act_backward(xp, g, y, activation, out=None):
    """Gradient through the activation given its output ``y``: ``g * (y > 0)`` for ReLU
    (into ``out`` when given, an array shaped like ``g``); ``g`` itself when linear.

    A multiplication, kernel and twin alike: an inf/NaN gradient gives NaN where ``y <= 0``, a
    negative one -0 (a NaN gradient must reach the loss guard, not vanish)."""
    if ACTIVATION_CODES[activation] == 0:
        return g
    if cuda.fused(xp) and g.dtype == "float32" and y.dtype == "float32" and g.shape == y.shape and _flat(y) and \
            (out is None or (out.dtype == "float32" and out.shape == g.shape and _flat(out))):
        gz = xp.empty(g.shape, dtype="float32") if out is None else out      # C order, as the kernel writes it
        if SOURCE.launch("relu_bwd", g.size, (g if g.flags.c_contiguous else xp.ascontiguousarray(g), y, gz,
                                              cuda.i64(g.size))):
            return gz
    return xp.multiply(g, y > 0, out=out)


def dense_forward(xp, x2, kernel, bias, activation=None, out=None):
    """``act(x2 @ kernel + bias)``: ``x2 (n, in)`` -> ``(n, units)``, into ``out`` when given."""
    return bias_act(xp, matmul(xp, x2, kernel, out=out), bias, activation)


def bias_grad(xp, gz, out=None):
    """``gz.sum(axis=0)`` of a float32 ``(rows, cols)`` gradient, into ``out`` when given: one kernel that adds
    the rows in order, NumPy's order for ``cols > 1`` (the twin's bits, see ``dense.cu``): on a GPU a thread
    per column, on the CPU ``bias_grad_cols`` (each row read once, vectorized)."""
    if gz.dtype == "float32" and gz.ndim == 2 and _flat(gz) and cuda.fused(xp) and \
            (out is None or (out.dtype == "float32" and out.shape == gz.shape[1:] and _flat(out))):
        gb = xp.empty(gz.shape[1:], dtype="float32") if out is None else out
        rows, cols = (cuda.i64(v) for v in gz.shape)
        if cuda.is_gpu(xp):
            SOURCE.launch("bias_grad", gz.shape[1], (gz, gb, rows, cols))
            return gb
        if gz.shape[1] > 1 and SOURCE.launch("bias_grad_cols", gz.size, (gz, gb, rows, cols)):
            return gb                               # (one column: NumPy sums pairwise, its own order)
    return gz.sum(axis=0, out=out)


def dense_backward(xp, gz, x2, kernel, need_x, need_kernel, need_bias, buffers=None):
    """From ``gz (n, units)``, the gradient of ``x2 @ kernel + bias``: ``(grad x2, grad kernel,
    grad bias)``, each None when not needed. ``buffers``: optional ``{'gx', 'gk', 'gb'}`` arrays to
    write into instead of allocating."""
    b = buffers or {}
    return (matmul(xp, gz, kernel.T, out=b.get("gx")) if need_x else None,
            matmul(xp, x2.T, gz, out=b.get("gk")) if need_kernel else None,
            bias_grad(xp, gz, out=b.get("gb")) if need_bias else None)
