"""Metrics by Keras name: ``accuracy``/``acc``, ``binary_accuracy``, ``categorical_accuracy``,
``sparse_categorical_accuracy``, ``mae``, ``mse``, any loss name, or a function ``fn(y_true, y_pred)``.

A metric turns one batch into a *sum* over its samples (a 0-d array left on the device,
:meth:`Metric.batch_sum`); the model adds the sums up and divides by the sample count (by the
sum of the weights for weighted metrics) only when a value is displayed, so nothing crosses to
the host inside a step. A metric's values are averaged over each sample's positions first, so
a ``(n, t, c)`` output's accuracy is the fraction of correct positions, as in Keras.
Standalone, ``update_state(y_true, y_pred, sample_weight=None)`` / ``result()`` /
``reset_state()`` work as Keras' do.

``accuracy`` follows Keras' ``compile``: binary (threshold 0.5) when the output has one unit,
sparse (argmax vs integer label) when the targets have fewer axes or a last axis of 1, else
categorical (argmax vs argmax) — chosen from the shapes of the targets and predictions.

Example:
    >>> from gpunet import metrics
    >>> m = metrics.get("sparse_categorical_accuracy")
    >>> m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])
    >>> float(m.result())
    0.5
"""
from __future__ import annotations

import math

from . import losses as _losses
from ._registry import lookup
from .errors import CheckpointError
from .kernels import recording, softmax_xent
from .losses import squeeze_or_expand_to_same_rank
from .tensor import Tensor, as_tensor


def _pair(y_true, y_pred):
    y_pred = as_tensor(y_pred)
    return as_tensor(y_true, y_pred.device), y_pred


def batch_sums(xp, values, sample_weight=None, batch=None):
    """``(sum, weight)`` of per-position metric ``values`` over one batch, as Keras' ``Mean`` counts them.

    Unweighted: ``sum`` of each sample's mean value, ``weight`` the number of samples. Weighted:
    ``sample_weight`` (scalar, ``(n,)``, ``(n, 1)``, ``(n, t)``...) is aligned with ``values``, the values
    are averaged over the axes the weights lack, and ``sum = sum(values * w)``, ``weight = sum(w)``
    (``w`` broadcast to the values), so ``sum / weight`` is Keras' weighted mean.
    """
    if values.ndim == 0:
        values = xp.broadcast_to(values, (batch or 1,))
    if sample_weight is None:
        if values.ndim > 1:
            values = values.mean(axis=tuple(range(1, values.ndim)))
        return values.sum(), values.shape[0]
    w = xp.asarray(sample_weight.data if isinstance(sample_weight, Tensor) else sample_weight, dtype=values.dtype)
    values, w = squeeze_or_expand_to_same_rank(values, w)
    if values.ndim > w.ndim:
        values = values.mean(axis=tuple(range(w.ndim, values.ndim)))
    w = xp.broadcast_to(w, values.shape)
    return (values * w).sum(), w.sum()


class Metric:
    """``batch_sum(y_true, y_pred, logits=False, sample_weight=None)`` -> the metric summed over the batch.

    ``y_pred`` holds the model's outputs; when ``logits`` is true they are the values before the
    output softmax/sigmoid (the loss was computed on the logits, see :mod:`gpunet.losses`).
    Subclasses implement :meth:`values` (one value per sample or position, a device array).
    """

    needs_probabilities = True
    sums_in_place = False      # batch_sum takes ``ws`` (arrays to compute into; see Accuracy)

    def __init__(self, name=None, dtype=None):
        self.name = name or type(self).__name__.lower()
        self.dtype = dtype or "float32"
        self.reset_state()

    def values(self, y_true, y_pred, logits=False):
        raise NotImplementedError

    def batch_sums(self, y_true, y_pred, logits=False, sample_weight=None):
        """``(weighted sum, sum of the weights)`` of one batch (device 0-d arrays; see :func:`batch_sums`)."""
        y_true, y_pred = _pair(y_true, y_pred)
        v = self.values(y_true, y_pred, logits)
        v = y_pred.device.xp.asarray(v, dtype=self.dtype)
        return batch_sums(y_pred.device.xp, v, sample_weight, y_pred.shape[0] if y_pred.ndim else 1)

    def batch_sum(self, y_true, y_pred, logits=False, sample_weight=None):
        """The metric summed over the batch's samples (weighted by ``sample_weight`` when given)."""
        return self.batch_sums(y_true, y_pred, logits, sample_weight)[0]

    # -- Keras' stateful interface ------------------------------------------------
    def update_state(self, y_true, y_pred, sample_weight=None):
        total, count = self.batch_sums(y_true, y_pred, False, sample_weight)
        self.total, self.count, self.device = self.total + total, self.count + count, as_tensor(y_pred).device

    def result(self) -> Tensor:
        """The mean so far (0 before any update), a 0-d Tensor."""
        if self.device is None:
            return as_tensor(0.0)
        xp = self.device.xp
        count = xp.asarray(self.count, dtype=self.dtype)
        return Tensor.wrap(xp.where(count != 0, xp.asarray(self.total, dtype=self.dtype) /
                                    xp.where(count != 0, count, 1), 0).astype(self.dtype), self.device)

    def reset_state(self):
        self.total, self.count, self.device = 0.0, 0, None

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def resolve_kind(y_true_shape, y_pred_shape) -> str:
    """Keras' choice for ``'accuracy'``: 'binary', 'sparse' or 'categorical', from the shapes."""
    t_last = y_true_shape[-1] if len(y_true_shape) else None
    p_last = y_pred_shape[-1] if len(y_pred_shape) else None
    if p_last == 1:
        return "binary"
    if len(y_true_shape) < len(y_pred_shape) or (t_last == 1 and (p_last is None or p_last > 1)):
        return "sparse"
    return "categorical"


def _cut(threshold, logits):
    """The binary accuracy's threshold on probabilities, or on logits (``log(t / (1 - t))``)."""
    return threshold if not logits else (math.log(threshold / (1 - threshold)) if 0 < threshold < 1
                                         else (-math.inf if threshold <= 0 else math.inf))


def accuracy_values(xp, kind, t, p, threshold=0.5, logits=False):
    """Per-position hits (bool arrays) of the accuracy ``kind`` for targets ``t`` and outputs ``p`` (arrays)."""
    if kind in ("binary", "exact"):
        t, p = squeeze_or_expand_to_same_rank(t, p)
        if kind == "exact":
            return t == p
        return t == (p > _cut(threshold, logits))
    pred = p.argmax(axis=-1)
    if kind == "categorical":
        return t.argmax(axis=-1) == pred
    if t.ndim == p.ndim and t.shape[-1] == 1:
        t = t.reshape(t.shape[:-1])
    if t.shape != pred.shape and t.size == pred.size:
        t = t.reshape(pred.shape)
    return t == pred


def accuracy_hits_into(xp, kind, t, p, ws, threshold=0.5, logits=False):
    """The hits of one sample per row (2-D outputs ``p``) as float32 0/1, computed into arrays lent by
    ``ws`` (``ws.array(key, shape, dtype)``; no new array on a GPU); None where only
    :func:`accuracy_values` applies (other ranks or shapes, ``kind`` 'exact')."""
    if p.ndim != 2 or t.size == 0 or t.size not in (p.shape[0], p.size):
        return None
    n = p.shape[0]
    hits = ws.array("hits", (n,), "float32")
    binary = kind == "binary" and p.shape[1] == 1 and t.size == n
    if not binary and (kind not in ("categorical", "sparse") or (kind == "categorical") != (t.shape == p.shape)):
        return None
    if not binary and softmax_xent.argmax_hits(xp, p, t.reshape(n) if kind == "sparse" else t, kind == "sparse", hits):
        return hits                   # (one CPU kernel; its launch recorded for fit's CPU step replays)
    _hits_into(xp, binary, kind, t, p, ws, hits, threshold, logits)
    recording.record(_hits_into, xp, binary, kind, t, p, ws, hits, threshold, logits)     # (the same, at replays)
    return hits


def _hits_into(xp, binary, kind, t, p, ws, hits, threshold, logits):
    n = p.shape[0]
    if binary:
        above = xp.greater(p.reshape(n), _cut(threshold, logits), out=ws.array("above", (n,), "bool"))
        xp.equal(t.reshape(n), above, out=hits)
        return
    pred = p.argmax(axis=-1, out=ws.array("pred", (n,), "int64"))
    if kind == "categorical":
        t = t.argmax(axis=-1, out=ws.array("true", (n,), "int64"))
    xp.equal(t.reshape(n), pred, out=hits)


class Accuracy(Metric):
    """Fraction of correct predictions. ``kind``: 'categorical', 'sparse', 'binary' (``y_pred > threshold``),
    'exact' (``y_true == y_pred``, Keras' ``keras.metrics.Accuracy``), or None: picked from the shapes as
    Keras' ``compile`` picks for ``'accuracy'`` (:meth:`resolve`, called by ``compile``/``fit``)."""

    needs_probabilities = False
    sums_in_place = True
    kind_default = None
    direction = "up"       # higher is better (what EarlyStopping's mode='auto' reads)

    def __init__(self, name="accuracy", dtype=None, kind=None, threshold=0.5):
        super().__init__(name, dtype)
        self.kind = kind or self.kind_default
        self.threshold = threshold

    def resolve(self, loss, y_true_shape, y_pred_shape):
        """Fix an unset ``kind`` from the target and output shapes (``loss`` is not used, as in Keras 3)."""
        if self.kind is None:
            self.kind = resolve_kind(tuple(y_true_shape), tuple(y_pred_shape))
        return self.kind

    def values(self, y_true, y_pred, logits=False):
        kind = self.kind or resolve_kind(y_true.shape, y_pred.shape)
        return accuracy_values(y_pred.device.xp, kind, y_true.data, y_pred.data, self.threshold, logits)

    def batch_sum(self, y_true, y_pred, logits=False, sample_weight=None, ws=None):
        """The hits summed over the batch; with ``ws`` (a workspace lending arrays, as in ``fit``) and no
        weights, computed into its arrays: a 0-d float32 array that the next call with ``ws`` overwrites
        (no new array and no host value on a GPU; the same number)."""
        if ws is not None and sample_weight is None and self.dtype == "float32":
            y_true, y_pred = _pair(y_true, y_pred)
            xp = y_pred.device.xp
            kind = self.kind or resolve_kind(y_true.shape, y_pred.shape)
            hits = accuracy_hits_into(xp, kind, y_true.data, y_pred.data, ws, self.threshold, logits)
            if hits is not None:
                return softmax_xent.sum_rows(xp, hits, out=ws.array("sum", (), "float32"))
        return super().batch_sum(y_true, y_pred, logits, sample_weight)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "threshold": self.threshold}


class BinaryAccuracy(Accuracy):
    """Keras' ``BinaryAccuracy``: how often ``y_pred > threshold`` equals ``y_true``."""

    kind_default = "binary"

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(name, dtype, "binary", threshold)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


class CategoricalAccuracy(Accuracy):
    """Keras' ``CategoricalAccuracy``: how often ``argmax(y_pred)`` equals ``argmax(y_true)``."""

    kind_default = "categorical"

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(name, dtype, "categorical")

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


class SparseCategoricalAccuracy(Accuracy):
    """Keras' ``SparseCategoricalAccuracy``: how often ``argmax(y_pred)`` equals the integer label."""

    kind_default = "sparse"

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(name, dtype, "sparse")

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _accuracy_function(kind):
    def fn(y_true, y_pred, threshold=0.5):
        y_true, y_pred = _pair(y_true, y_pred)
        hits = accuracy_values(y_pred.device.xp, kind, y_true.data, y_pred.data, threshold)
        return Tensor.wrap(hits.astype("float32"), y_pred.device)
    fn.__name__ = f"{kind}_accuracy"
    fn.__doc__ = f"Per-position {kind} accuracy hits (1.0 or 0.0), a float32 Tensor, as Keras' function."
    return fn


binary_accuracy = _accuracy_function("binary")
categorical_accuracy = _accuracy_function("categorical")
sparse_categorical_accuracy = _accuracy_function("sparse")
ACCURACY_CLASSES = {"binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
                    "sparse_categorical_accuracy": SparseCategoricalAccuracy}


class LossMetric(Metric):
    """A loss (or a function ``fn(y_true, y_pred)``) used as a metric, e.g. ``'mae'``: the mean of its
    per-sample values (a function returning one number counts it for every sample of the batch)."""

    direction = "down"     # lower is better

    def __init__(self, name, loss):
        super().__init__(name)
        self.loss = loss

    def values(self, y_true, y_pred, logits=False):
        return self.loss.unreduced(y_true, y_pred).data


def get(identifier) -> Metric:
    """A :class:`Metric` from a name (``'accuracy'``, ``'acc'``, ``'binary_accuracy'``..., a loss name),
    a Metric (instance or class) or a callable."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        return Accuracy(name=identifier)
    if isinstance(identifier, str) and identifier.lower() in ACCURACY_CLASSES:
        return ACCURACY_CLASSES[identifier.lower()](name=identifier)
    names = dict(_losses.CLASSES, **ACCURACY_CLASSES)
    names.update(accuracy=None, acc=None)
    lookup("metric", identifier, names)     # raises with the list of valid names
    fn = _losses.get(identifier)
    return LossMetric(identifier if isinstance(identifier, str) else fn.name, fn)


def serialize(metric) -> dict:
    """A JSON-able description of a built-in metric (CheckpointError for a custom one)."""
    if type(metric) is Accuracy or type(metric) in ACCURACY_CLASSES.values():
        return {"class": type(metric).__name__, "name": metric.name, "kind": metric.kind,
                "threshold": metric.threshold}
    if type(metric) is LossMetric and type(metric.loss) in _losses.CLASSES.values():
        return {"class": "LossMetric", "name": metric.name, "loss": _losses.serialize(metric.loss)}
    raise CheckpointError(f"metric {getattr(metric, 'name', metric)!r} is a custom function; model.save cannot "
                          "store it (use built-in metric names, or model.save_weights(path))")


def deserialize(config: dict) -> Metric:
    """The metric :func:`serialize` described."""
    if config["class"] == "LossMetric":
        return LossMetric(config["name"], _losses.deserialize(config["loss"]))
    threshold = config.get("threshold", 0.5)
    if config["class"] == "Accuracy":
        return Accuracy(name=config["name"], kind=config["kind"], threshold=threshold)
    cls = {c.__name__: c for c in ACCURACY_CLASSES.values()}[config["class"]]
    return cls(name=config["name"], **({"threshold": threshold} if cls is BinaryAccuracy else {}))
