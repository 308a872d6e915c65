"""Softmax + cross-entropy in one op (``softmax_xent.cu`` on a GPU or built for the CPU, with NumPy twins).

The loss is computed on the logits, so it is finite for any finite logits, and the backward
is exactly ``(softmax(z) - y) * (g / rows)``. Kernel and twin do the same operations in the same
order (``m = max(z)``, ``probs = exp(z - m) / s``, ``logp = (z - m) - log(s)``); the sums run in
another order and CUDA's expf/logf are not NumPy's, so the forward agrees within a few ULP, the
backward bit for bit. A sparse label outside ``[0, cols)`` gives its row a NaN loss and NaN
gradients on both sides (``gpunet.ops.softmax_cross_entropy`` does not validate labels; the NaN
loss stops training at the loss guard), never an out-of-bounds read or an IndexError.

On a GPU the batch's mean loss is :func:`sum_rows` of the row losses (one thread, float64, into a
0-d device array), and inside a :func:`workspace` block nothing is allocated: a training step
reuses its loss, probabilities and gradient arrays (capture-ready: no allocation, no host sync,
no host scalar that changes between steps of one batch size).
"""
from __future__ import annotations

import contextlib
import threading

from . import cuda, recording

SOURCE = cuda.Source(__file__, "softmax_xent.cu")
_scope = threading.local()     # the workspace lent by :func:`workspace` (per thread)


@contextlib.contextmanager
def workspace(ws):
    """Within the block, the GPU forward and backward write their results (loss, probabilities, row
    losses, gradient) into arrays lent by ``ws`` (``ws.array(key, shape, dtype)``, e.g. a
    :class:`gpunet.layers.Workspace`) instead of new arrays: the tapeless training step reuses them from
    step to step, through the loss functions that call this module. Each result then lives until the next
    call in such a block. ``None`` lends nothing. The NumPy twins allocate as before."""
    previous = getattr(_scope, "ws", None)
    _scope.ws = ws
    try:
        yield ws
    finally:
        _scope.ws = previous


def _array(xp, key, shape, dtype="float32"):
    ws = getattr(_scope, "ws", None)
    return xp.empty(shape, dtype=dtype) if ws is None else ws.array(f"softmax_xent.{key}", shape, dtype)


def argmax_hits(xp, p, t, sparse, hits) -> bool:
    """``hits = float32(argmax(p, axis=1) == argmax(t, axis=1))`` (``sparse``: ``== t``, int64 labels) into ``hits``,
    NumPy's argmax (the first maximum; a NaN counts as the maximum): the ``argmax_hits`` kernel on the CPU (one
    pass instead of three NumPy calls on small arrays). False where it does not apply: on a GPU (CuPy's argmax
    runs there), other dtypes or layouts, or the CPU kernels off — the caller then computes with NumPy."""
    rows, cols = p.shape
    if cuda.is_gpu(xp) or cols == 0 or p.dtype != "float32" or hits.dtype != "float32" or \
            not (p.flags.c_contiguous and hits.flags.c_contiguous and hits.shape == (rows,)):
        return False
    if sparse and not (t.dtype == "int64" and t.size == rows and t.flags.c_contiguous):
        return False
    if not sparse and not (t.dtype == "float32" and t.shape == p.shape and t.flags.c_contiguous):
        return False
    return SOURCE.launch("argmax_hits", rows, (p, cuda.NULL if sparse else t, t if sparse else cuda.NULL, hits,
                                               cuda.i64(rows), cuda.i64(cols)))


def int64_labels(xp, y):
    """Integer class labels ``y`` as int64: ``y`` itself when it is already; inside a :func:`workspace` block
    converted into a lent array (the same one each step, the conversion recorded for fit's CPU step replays)."""
    if y.dtype == "int64" or getattr(_scope, "ws", None) is None:
        return y.astype("int64", copy=False)
    labels = _array(xp, "labels", y.shape, "int64")
    xp.copyto(labels, y, casting="unsafe")
    recording.record(xp.copyto, labels, y, casting="unsafe")
    return labels


def _device(xp, a, dtype):
    """``a`` as a C-ordered ``dtype`` array for a kernel: itself when it is one already (no new array)."""
    return a if a.dtype == dtype and a.flags.c_contiguous else xp.ascontiguousarray(a, dtype=dtype)


def _targets(xp, y, sparse):
    """The kernels' ``(y, labels, sparse)`` arguments: float32 rows of targets, or int64 class indices."""
    if sparse:
        return cuda.NULL, _device(xp, y, "int64"), cuda.i32(1)
    return _device(xp, y, "float32"), cuda.NULL, cuda.i32(0)


def sum_rows(xp, v, w=None, divisor=1, out=None):
    """``sum(v * w) / divisor`` of float32 ``(n,)`` values (``w``: optional float32 weights), as a 0-d
    float32 array (``out`` when given). Added in row order in float64 and rounded once: kernel (one
    thread, ``softmax_xent.cu``) and twin (a float64 cumulative sum) give the same bits."""
    if cuda.fused(xp) and (out is None or (out.dtype == "float32" and out.flags.c_contiguous)):
        result = xp.empty((), dtype="float32") if out is None else out
        if SOURCE.launch("sum_rows", 1, (_device(xp, v, "float32"), cuda.pointer(None if w is None else
                                                                                 _device(xp, w, "float32")),
                                         result, cuda.i64(v.size), cuda.i64(divisor))):
            return result
    terms = v.astype("float64") if w is None else xp.multiply(v, w, dtype="float64")
    total = xp.cumsum(terms)[-1] if terms.size else 0.0
    with xp.errstate(invalid="ignore", divide="ignore"):
        value = xp.float32(xp.float64(total) / divisor)
    if out is None:
        return xp.asarray(value)
    out[...] = value
    return out


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
    if cuda.is_gpu(xp) and z.dtype == "float32":      # (the CPU's twin: NumPy's exp/log, so CPU training
        zc = _device(xp, z, "float32")                # keeps the twins' bits; the CPU kernel is within ULPs)
        probs, row_loss = _array(xp, "probs", z.shape), _array(xp, "row_loss", (rows,))
        y_arg, labels, flag = _targets(xp, y, sparse)
        if SOURCE.launch("softmax_xent_fwd", rows, (zc, y_arg, labels, probs, row_loss, cuda.i64(rows), cuda.i64(cols),
                                                    flag)):
            return sum_rows(xp, row_loss, w, rows, out=_array(xp, "loss", ())), probs
    if getattr(_scope, "ws", None) is None:
        return _twin_forward(xp, z, y, sparse, w)
    loss, probs = _array(xp, "loss", (), z.dtype), _array(xp, "probs", z.shape, z.dtype)
    _twin_forward_into(xp, z, y, sparse, w, loss, probs)
    recording.record(_twin_forward_into, xp, z, y, sparse, w, loss, probs)
    return loss, probs


def _twin_forward_into(xp, z, y, sparse, w, loss, probs) -> None:
    """:func:`_twin_forward` into the arrays ``loss`` (0-d) and ``probs`` (a workspace's: reused)."""
    loss[...], probs[...] = _twin_forward(xp, z, y, sparse, w)


def _twin_forward(xp, z, y, sparse, w):
    """The NumPy twin of ``softmax_xent_fwd`` + :func:`sum_rows`: ``(loss, probs)``, new arrays."""
    rows, cols = z.shape
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
    if cuda.fused(xp) and probs.dtype == "float32":
        pc = _device(xp, probs, "float32")
        dz = _array(xp, "dz", probs.shape)
        gc = _device(xp, xp.asarray(g), "float32").reshape(1)
        y_arg, labels, flag = _targets(xp, y, sparse)
        weights = None if w is None else _device(xp, w, "float32")
        if SOURCE.launch("softmax_xent_bwd", probs.size, (pc, y_arg, labels, gc, cuda.pointer(weights), dz,
                                                          cuda.i64(rows), cuda.i64(cols), flag)):
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
