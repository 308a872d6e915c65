"""Softmax + cross-entropy in one op (``softmax_xent.cu``, with NumPy twins).

The loss is computed on the logits, so it is finite for any finite logits, and the backward
is exactly ``(softmax(z) - y) * (g / rows)``. Kernel and twin do the same operations in the same
order (``m = max(z)``, ``probs = exp(z - m) / s``, ``logp = (z - m) - log(s)``); the sums run in
another order and CUDA's expf/logf are not NumPy's, so the forward agrees within a few ULP, the
backward bit for bit. A sparse label outside ``[0, cols)`` gives its row a NaN loss and NaN
gradients on both sides (``gpunet.ops.softmax_cross_entropy`` does not validate labels; the NaN
loss stops training at the loss guard), never an out-of-bounds read or an IndexError.
"""
from __future__ import annotations

from . import cuda

SOURCE = cuda.Source(__file__, "softmax_xent.cu")


def _targets(xp, y, sparse):
    """The kernels' ``(y, labels, sparse)`` arguments: float32 rows of targets, or int64 class indices."""
    if sparse:
        return cuda.NULL, xp.ascontiguousarray(y, dtype="int64"), cuda.i32(1)
    return xp.ascontiguousarray(y, dtype="float32"), cuda.NULL, cuda.i32(0)


def _labels(xp, y, cols):
    """``(lab, bad)``: the class indices as int64 (a fresh array), the ones outside ``[0, cols)`` marked
    in ``bad`` (one unsigned comparison: a negative index is a huge uint64) and replaced by 0."""
    lab = y.astype("int64")
    bad = lab.view("uint64") >= cols
    lab[bad] = 0
    return lab, bad


def softmax_xent_forward(xp, z, y, sparse, w=None):
    """Mean cross-entropy of ``softmax(z)`` against ``y``, and the probabilities.

    z: float32 ``(rows, cols)``; y: same shape (one-hot/probabilities) or, with ``sparse``,
    integer class indices ``(rows,)``; w: optional float32 sample weights ``(rows,)``, giving
    ``sum(w * row_loss) / rows`` (Keras' ``sum_over_batch_size``). Returns ``(loss, probs)``;
    ``loss`` is a 0-d device array (no host sync).
    """
    rows, cols = z.shape
    if cuda.is_gpu(xp) and z.dtype == "float32":
        z = xp.ascontiguousarray(z)
        probs = xp.empty_like(z)
        row_loss = xp.empty(rows, dtype="float32")
        y_arg, labels, flag = _targets(xp, y, sparse)
        SOURCE.launch("softmax_xent_fwd", rows, (z, y_arg, labels, probs, row_loss, cuda.i64(rows), cuda.i64(cols), flag))
        return (row_loss.mean() if w is None else xp.vdot(row_loss, w) / rows), probs
    logp = z - z.max(axis=1, keepdims=True)
    e = xp.exp(logp)
    s = e.sum(axis=1, keepdims=True)
    logp -= xp.log(s)                 # log_softmax, in place (few NumPy calls: these arrays are small)
    e /= s
    if sparse:
        lab, bad = _labels(xp, y, cols)
        row_loss = -logp[xp.arange(rows), lab]
        row_loss[bad] = xp.nan
        loss = row_loss.sum() / rows if w is None else xp.vdot(row_loss, w) / rows
    elif w is not None:
        loss = xp.vdot(-(y * logp).sum(axis=1), w) / rows
    else:
        loss = -xp.vdot(y, logp) / rows
    return xp.asarray(loss, dtype=z.dtype), e


def softmax_xent_backward(xp, probs, y, g, sparse, w=None):
    """``(probs - y) * (g / rows)`` (times ``w[row]`` with sample weights); ``g`` is the upstream
    gradient of the mean loss (0-d), rounded to the probabilities' dtype first as the kernel does."""
    rows, cols = probs.shape
    if cuda.is_gpu(xp) and probs.dtype == "float32":
        probs = xp.ascontiguousarray(probs)
        dz = xp.empty(probs.shape, dtype="float32")
        g = xp.ascontiguousarray(g, dtype="float32").reshape(1)
        y_arg, labels, flag = _targets(xp, y, sparse)
        weights = None if w is None else xp.ascontiguousarray(w, dtype="float32")
        SOURCE.launch("softmax_xent_bwd", probs.size, (probs, y_arg, labels, g, cuda.pointer(weights), dz, cuda.i64(rows),
                                                       cuda.i64(cols), flag))
        return dz
    if sparse:
        lab, bad = _labels(xp, y, cols)
        dz = probs.copy()
        dz[xp.arange(rows), lab] -= 1
        dz[bad] = xp.nan
    else:
        dz = probs - y
    dz *= xp.asarray(g, dtype=probs.dtype) / probs.dtype.type(rows)
    if w is not None:
        dz *= w[:, None]
    return dz.astype(probs.dtype, copy=False)
