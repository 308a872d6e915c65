"""The built-in losses, as Keras 3 defines them: classes and the per-sample functions they wrap.

Each class takes Keras' arguments in Keras' order; its :meth:`~gpunet.losses.Loss.call` aligns
the ranks of ``y_true`` and ``y_pred`` (:func:`~gpunet.losses.loss.squeeze_or_expand_to_same_rank`)
and calls the function of the same name, which returns one loss per sample (per position).

The categorical cross-entropies also have an array form on logits, :meth:`logits_function`,
built on the fused softmax-cross-entropy kernel (:func:`gpunet.functional.softmax_cross_entropy`):
the trainer's tapeless step calls it directly, :meth:`~gpunet.losses.Loss.from_logits_loss`
runs it through the tape — the same function, so the same bits.
"""
from __future__ import annotations

import warnings

from .. import functional as F, ops
from ..kernels.softmax_xent import int64_labels
from ..tensor import as_tensor
from .loss import (EPSILON, Loss, canonical_axis, float_pair, row_weights, squeeze_or_expand_to_same_rank)


def _same_shape(target, output):
    if tuple(target.shape) != tuple(output.shape):
        raise ValueError("Arguments `target` and `output` must have the same shape. Received: "
                         f"target.shape={tuple(target.shape)}, output.shape={tuple(output.shape)}")
    if len(target.shape) < 1:
        raise ValueError("Arguments `target` and `output` must be at least rank 1. Received: "
                         f"target.shape={tuple(target.shape)}, output.shape={tuple(output.shape)}")


# ------------------------------------------------------------------ the per-sample functions
def mean_squared_error(y_true, y_pred):
    """``mean(square(y_true - y_pred), axis=-1)``: shape ``y_pred.shape[:-1]``."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(*float_pair(y_true, y_pred))
    d = y_pred - y_true
    return ops.mean(d * d, axis=-1)


def mean_absolute_error(y_true, y_pred):
    """``mean(abs(y_true - y_pred), axis=-1)``: shape ``y_pred.shape[:-1]``."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(*float_pair(y_true, y_pred))
    return ops.mean(ops.abs(y_pred - y_true), axis=-1)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """``-(y log p + (1 - y) log(1 - p))`` averaged over ``axis``; labels smoothed towards 0.5.
    From logits it is ``max(z, 0) - z y + log(1 + exp(-|z|))``, finite for any ``z``."""
    y_true, y_pred = float_pair(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    _same_shape(y_true, y_pred)
    if from_logits:
        z = y_pred
        per = ops.relu(z) - z * y_true + ops.log(1 + ops.exp(-ops.abs(z)))
    else:
        p = ops.clip(y_pred, EPSILON, 1 - EPSILON)
        per = -(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))
    return ops.mean(per, axis=axis)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """``-sum(y * log(p), axis)`` with ``y`` one-hot (or probabilities) of ``y_pred``'s shape; ``p`` is
    ``y_pred`` normalized and clipped to ``[1e-7, 1 - 1e-7]``, or ``softmax(y_pred)`` from logits.
    ``label_smoothing`` ``s`` uses ``y * (1 - s) + s / classes``."""
    if isinstance(axis, bool):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis} of type {type(axis)}")
    y_true, y_pred = float_pair(y_true, y_pred)
    axis = canonical_axis(axis, y_pred.ndim)
    if y_pred.shape[axis] == 1:
        warnings.warn("In loss categorical_crossentropy, expected y_pred.shape to be (batch_size, num_classes) "
                      f"with num_classes > 1. Received: y_pred.shape={y_pred.shape}. Consider using "
                      "'binary_crossentropy' if you only have 2 classes.", SyntaxWarning, stacklevel=2)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[axis]
    _same_shape(y_true, y_pred)
    if from_logits:
        log_p = ops.log_softmax(y_pred, axis)
    else:
        log_p = ops.log(ops.clip(y_pred / ops.sum(y_pred, axis=axis, keepdims=True), EPSILON, 1 - EPSILON))
    return -ops.sum(y_true * log_p, axis=axis)


def _class_axis_last(labels_shape, pred_ndim, axis):
    """The class axis's position, after Keras' squeeze of a size-1 label axis (returns the new label shape)."""
    axis = canonical_axis(axis, pred_ndim)
    if len(labels_shape) == pred_ndim and labels_shape[axis] == 1:
        labels_shape = labels_shape[:axis] + labels_shape[axis + 1:]
    return axis, tuple(labels_shape)


def _check_labels(labels_shape, pred_shape_without_axis, pred_shape):
    if tuple(labels_shape) != tuple(pred_shape_without_axis):
        raise ValueError("Arguments `target` and `output` must have the same shape up until the last dimension: "
                         f"target.shape={tuple(labels_shape)}, output.shape={tuple(pred_shape)}")


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """``-log(p[label])`` per position: integer labels ``y_pred.shape`` without the class ``axis``
    (a size-1 class axis is squeezed); positions labelled ``ignore_class`` give 0."""
    y_pred = as_tensor(y_pred)
    if y_pred.dtype.kind != "f":
        y_pred = y_pred.astype("float32")
    xp = y_pred.device.xp
    labels = as_tensor(y_true, y_pred.device).data
    axis, shape = _class_axis_last(tuple(labels.shape), y_pred.ndim, axis)
    if axis != y_pred.ndim - 1:
        y_pred = ops.transpose(y_pred, [i for i in range(y_pred.ndim) if i != axis] + [axis])
    _check_labels(shape, y_pred.shape[:-1], y_pred.shape)
    labels = labels.reshape(shape).astype("int64")
    valid = None
    if ignore_class is not None:
        valid = labels != ignore_class
        labels = xp.where(valid, labels, 0)
    if from_logits:
        log_p = ops.log_softmax(y_pred, -1)
    else:
        log_p = ops.log(ops.clip(y_pred / ops.sum(y_pred, axis=-1, keepdims=True), EPSILON, 1 - EPSILON))
    flat = labels.reshape(-1)
    picked = ops.getitem(log_p.reshape((-1, y_pred.shape[-1])), (xp.arange(flat.shape[0]), flat))
    out = -picked.reshape(shape)
    return out if valid is None else ops.where(valid, out, 0.0)


def mse(y_true, y_pred):
    """Alias of :func:`mean_squared_error`."""
    return mean_squared_error(y_true, y_pred)


def mae(y_true, y_pred):
    """Alias of :func:`mean_absolute_error`."""
    return mean_absolute_error(y_true, y_pred)


# ------------------------------------------------------------------ the classes
class MeanSquaredError(Loss):
    """``mean(square(y_true - y_pred))`` over the last axis, per sample."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred)


class MeanAbsoluteError(Loss):
    """``mean(abs(y_true - y_pred))`` over the last axis, per sample."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return mean_absolute_error(y_true, y_pred)


class _Crossentropy(Loss):
    def __init__(self, from_logits, axis, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype, from_logits=from_logits)
        self.axis = axis

    def call(self, y_true, y_pred):
        return self._values(y_true, y_pred, self.from_logits)

    def logits_values(self, y_true, logits):
        return self._values(y_true, logits, True)


class BinaryCrossentropy(_Crossentropy):
    """Binary cross-entropy of probabilities (or logits, ``from_logits=True``), averaged over ``axis``."""

    logits_activation = "sigmoid"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_crossentropy", dtype=None):
        super().__init__(from_logits, axis, reduction, name, dtype)
        self.label_smoothing = label_smoothing

    def _values(self, y_true, y_pred, from_logits):
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return binary_crossentropy(y_true, y_pred, from_logits, self.label_smoothing, self.axis)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": self.axis}


class CategoricalCrossentropy(_Crossentropy):
    """Cross-entropy of one-hot (or probability) targets ``y_true`` with ``y_pred`` of the same shape."""

    logits_activation = "softmax"
    replays_on_host = True          # its CPU work is recorded (fit's step replays)

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(from_logits, axis, reduction, name, dtype)
        self.label_smoothing = label_smoothing

    def _values(self, y_true, y_pred, from_logits):
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return categorical_crossentropy(y_true, y_pred, from_logits, self.label_smoothing, self.axis)

    def logits_function(self, xp, logits, y_true, sample_weight=None):
        """The 'sum_over_batch_size' loss on ``logits`` and its backward (array level, one fused kernel)."""
        if sample_weight is None and not self.label_smoothing and logits.ndim == 2 and \
                y_true.shape == logits.shape and self.axis in (-1, 1):      # the common case, at once
            return F.softmax_cross_entropy(xp, logits, y_true, sparse=False)
        axis = canonical_axis(self.axis, logits.ndim)
        moved = axis != logits.ndim - 1
        if moved:
            logits, y_true = xp.moveaxis(logits, axis, -1), xp.moveaxis(y_true, axis, -1)
        y_true, logits = squeeze_or_expand_to_same_rank(y_true, logits)
        _same_shape(y_true, logits)
        if self.label_smoothing:
            s = self.label_smoothing
            y_true = y_true.astype(logits.dtype) * (1.0 - s) + s / logits.shape[-1]
        shape = logits.shape
        w = None if sample_weight is None else row_weights(xp, sample_weight, shape[:-1])
        if len(shape) == 2 and not moved:
            return F.softmax_cross_entropy(xp, logits, y_true, sparse=False, sample_weight=w)
        loss, backward = F.softmax_cross_entropy(xp, logits.reshape(-1, shape[-1]), y_true.reshape(-1, shape[-1]),
                                                 sparse=False, sample_weight=w)
        return loss, _reshaped_backward(xp, backward, shape, axis if moved else None)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": self.axis}


class SparseCategoricalCrossentropy(_Crossentropy):
    """Cross-entropy of integer class labels ``y_true`` (``y_pred``'s shape without the class axis;
    a trailing axis of 1 is allowed) with ``y_pred``; labels equal to ``ignore_class`` do not count."""

    logits_activation = "softmax"
    replays_on_host = True

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size", axis=-1,
                 name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(from_logits, axis, reduction, name, dtype)
        self.ignore_class = ignore_class

    def _values(self, y_true, y_pred, from_logits):
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return sparse_categorical_crossentropy(y_true, y_pred, from_logits, self.ignore_class, self.axis)

    def value_mask(self, y_true, y_pred):
        if self.ignore_class is None:
            return None
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        _, shape = _class_axis_last(tuple(y_true.shape), y_pred.ndim, self.axis)
        return as_tensor(y_true.data.reshape(shape) != self.ignore_class, y_pred.device)

    def logits_function(self, xp, logits, y_true, sample_weight=None):
        """The 'sum_over_batch_size' loss on ``logits`` and its backward (array level, one fused kernel)."""
        axis, shape = _class_axis_last(tuple(y_true.shape), logits.ndim, self.axis)
        moved = axis != logits.ndim - 1
        if moved:
            logits = xp.moveaxis(logits, axis, -1)
        _check_labels(shape, logits.shape[:-1], logits.shape)
        labels = int64_labels(xp, y_true.reshape(-1))      # (int64 labels read in place)
        w = None if sample_weight is None else row_weights(xp, sample_weight, shape)
        if self.ignore_class is not None:       # Keras' mask: kept rows weigh rows / kept, ignored ones 0
            valid = labels != self.ignore_class
            labels = xp.where(valid, labels, 0)
            kept = valid.sum()
            scale = valid * xp.where(kept != 0, labels.size / xp.where(kept != 0, kept, 1), 0)
            w = scale.astype("float32") if w is None else w * scale.astype("float32")
        if logits.ndim == 2 and not moved:
            return F.softmax_cross_entropy(xp, logits, labels, sparse=True, sample_weight=w)
        full = logits.shape
        loss, backward = F.softmax_cross_entropy(xp, logits.reshape(-1, full[-1]), labels, sparse=True,
                                                 sample_weight=w)
        return loss, _reshaped_backward(xp, backward, full, axis if moved else None)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "ignore_class": self.ignore_class,
                "axis": self.axis}


def _reshaped_backward(xp, backward, shape, axis):
    """The fused kernel's backward on 2-D rows, its gradient given back in the logits' shape (and axis order)."""
    def run(g, needs):
        dz = backward(g, needs)[0]
        if dz is not None:
            dz = dz.reshape(shape)
            dz = dz if axis is None else xp.moveaxis(dz, -1, axis)
        return dz, None, None
    return run
