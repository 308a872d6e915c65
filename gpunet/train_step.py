"""The fused training step ``fit`` uses for plain stacks of Dense layers (Keras' ``jit_compile``).

A model made of an optional ``InputLayer``, ``Rescaling`` of integer images and
``Flatten``, then ``Dense`` layers (ReLU or linear) ending in a softmax trained with
categorical or sparse categorical cross-entropy — the chapter's network — is
trained by :class:`FusedStep`: the same array functions as the taped step
(:func:`gpunet.ops.dense_forward` / :func:`~gpunet.ops.dense_backward`, the fused
softmax-cross-entropy of :mod:`gpunet.kernels`) called in the same order, so both
give bit-identical weights (a test checks), with a fraction of the Python per step:
no Tensor objects, no tape records, no gradient bookkeeping. Every other model uses
the tape. ``compile(jit_compile=False)`` asks for the taped step always.

One step, for the chapter's network (x uint8 ``(n, 784)``, y one-hot ``(n, 10)``)::

    x1 = float32(x) * (1/255)                  # Rescaling
    h  = relu(x1 @ W1 + b1)                    # Dense 512, fused bias + ReLU
    z  = h @ W2 + b2                           # Dense 10, logits
    loss, p = softmax_xent(z, y)               # fused; p = softmax(z)
    dz = (p - y) / n                           # exact backward
    dW2, db2, dh = h.T @ dz, sum(dz), dz @ W2.T
    dh1 = dh * (h > 0);  dW1, db1 = x1.T @ dh1, sum(dh1)
"""
from __future__ import annotations

from . import kernels, layers as _layers, losses as _losses, ops

__all__ = ["FusedStep"]


class FusedStep:
    """Forward and backward of one batch for a supported :class:`~gpunet.models.Sequential`.

    Use :meth:`build` (None when the model is not supported), then per step
    :meth:`forward` (returns the 0-d loss and the logits) and :meth:`backward`
    (returns the gradient arrays in the order of ``model.trainable_weights``). The large arrays of
    a step (scaled batch, layer outputs, their gradients, the kernel gradients) live in buffers reused
    at every step, so they are valid until the next :meth:`forward`.
    """

    def __init__(self, model, plan, sparse):
        self.device = model.device
        self.xp = model.device.xp
        self.plan = plan              # ("rescale", layer) | ("flatten",) | ("dense", W, b, activation)
        self._dense = [step for step in plan if step[0] == "dense"]
        self.sparse = sparse
        self._seed = self.xp.ones((), dtype="float32")    # d(loss)/d(loss), as the tape seeds it
        self._cache = None
        self._buffers = {}     # float32 work arrays reused from step to step: no per-step allocation

    def _buffer(self, key, shape):
        """The work array ``key`` of ``shape`` (allocated once per shape; the last batch may be smaller)."""
        buf = self._buffers.get((key, shape))
        if buf is None:
            buf = self._buffers[(key, shape)] = self.xp.empty(shape, dtype="float32")
        return buf

    @classmethod
    def build(cls, model) -> "FusedStep | None":
        """The fused step for ``model``, or None when some layer or the loss needs the tape."""
        if not model._fused() or not isinstance(model.loss, (_losses.CategoricalCrossentropy,
                                                              _losses.SparseCategoricalCrossentropy)):
            return None
        plan, seen_dense = [], False
        for i, layer in enumerate(model.layers):
            kind = type(layer)
            if kind is _layers.InputLayer:
                continue
            if kind is _layers.Rescaling and not seen_dense:
                plan.append(("rescale", layer))
            elif kind is _layers.Flatten and not seen_dense:
                plan.append(("flatten",))
            elif kind is _layers.Dense:
                last = i == len(model.layers) - 1
                act = layer.activation_name
                if not (last and act == "softmax") and act not in ("relu", "linear"):
                    return None
                plan.append(("dense", layer.kernel, layer.bias, "linear" if last else act))
                seen_dense = True
            else:
                return None
        if not seen_dense or plan[-1][0] != "dense":
            return None
        return cls(model, plan, isinstance(model.loss, _losses.SparseCategoricalCrossentropy))

    def forward(self, xb, yb):
        """Loss (0-d device array) and logits ``(n, classes)`` of the batch; keeps what backward needs."""
        xp, x, saved = self.xp, xb, []
        for step in self.plan:
            if step[0] == "rescale":
                layer = step[1]
                if x.dtype.kind == "f":      # as Rescaling.call: float32 first, then scale
                    x = (x if x.dtype == "float32" else x.astype("float32")) * layer.scale
                else:
                    x = layer.scale_integers(self.device, x, out=self._buffer("x", x.shape))
                if layer.offset:
                    x = x + layer.offset
            elif step[0] == "flatten":
                x = x.reshape(x.shape[0], -1) if x.ndim != 2 else x
            else:
                _, kernel, bias, act = step
                if x.dtype.kind != "f":
                    x = x.astype("float32")
                x2 = x.reshape(-1, x.shape[-1])
                out = ops.dense_forward(xp, x2, kernel.data, None if bias is None else bias.data, act,
                                        out=self._buffer(("z", len(saved)), (x2.shape[0], kernel.shape[1])))
                saved.append((x2, out))
                x = out
        loss, probs = kernels.softmax_xent_forward(xp, x, yb, self.sparse)
        self._cache = (saved, probs, yb)
        return loss, x

    def backward(self) -> list:
        """Gradients of the last :meth:`forward`'s loss, in ``trainable_weights`` order."""
        saved, probs, yb = self._cache
        self._cache = None
        xp = self.xp
        g = kernels.softmax_xent_backward(xp, probs, yb, self._seed, self.sparse)
        dense = self._dense
        grads = []
        for i in range(len(dense) - 1, -1, -1):
            _, kernel, bias, act = dense[i]
            x2, out = saved[i]
            buffers = {"gk": self._buffer(("gk", i), kernel.shape),
                       "gz": self._buffer(("gz", i), out.shape) if act == "relu" else None,
                       "gx": self._buffer(("gx", i), x2.shape) if i > 0 else None}
            gx, gk, gb = ops.dense_backward(xp, g, out, x2, kernel.data, act, i > 0, True, bias is not None,
                                            buffers)
            grads[:0] = [gk] + ([gb] if bias is not None else [])
            g = gx
        return grads
