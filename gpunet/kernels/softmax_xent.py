"""Softmax + cross-entropy in one op (``softmax_xent.cu``, with NumPy twins).

The loss is computed on the logits, so it is finite for any finite logits, and the backward
is exactly ``(softmax(z) - y) * g / rows``.
"""
from __future__ import annotations

from . import cuda

SOURCE = cuda.Source(__file__, "softmax_xent.cu")


def _targets(xp, y, sparse):
    """The kernels' ``(y, labels, sparse)`` arguments: float32 rows of targets, or int64 class indices."""
    if sparse:
        return cuda.NULL, xp.ascontiguousarray(y, dtype="int64"), cuda.i32(1)
    return xp.ascontiguousarray(y, dtype="float32"), cuda.NULL, cuda.i32(0)


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
    if w is not None:
        row_loss = -logp[xp.arange(rows), y.astype("int64")] if sparse else -(y * logp).sum(axis=1)
        loss = xp.vdot(row_loss, w) / rows
    elif sparse:
        loss = -logp[xp.arange(rows), y.astype("int64")].sum() / rows
    else:
        loss = -xp.vdot(y, logp) / rows
    return xp.asarray(loss, dtype=z.dtype), e


def softmax_xent_backward(xp, probs, y, g, sparse, w=None):
    """``(probs - y) * g / rows`` (times ``w[row]`` with sample weights); ``g`` is the upstream
    gradient of the mean loss (0-d)."""
    rows, cols = probs.shape
    if cuda.is_gpu(xp) and probs.dtype == "float32":
        dz = xp.empty_like(probs)
        g = xp.ascontiguousarray(g, dtype="float32").reshape(1)
        y_arg, labels, flag = _targets(xp, y, sparse)
        weights = None if w is None else xp.ascontiguousarray(w, dtype="float32")
        SOURCE.launch("softmax_xent_bwd", probs.size, (probs, y_arg, labels, g, cuda.pointer(weights), dz, cuda.i64(rows),
                                                       cuda.i64(cols), flag))
        return dz
    if sparse:
        dz = probs.copy()
        dz[xp.arange(rows), y.astype("int64")] -= 1
    else:
        dz = probs - y
    dz *= g / rows
    if w is not None:
        dz *= w[:, None]
    return dz.astype(probs.dtype, copy=False)
