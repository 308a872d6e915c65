"""Metrics by Keras name: ``accuracy``/``acc``, ``mae``, ``mse``, and any loss name.

A metric turns one batch into a *sum* over its samples (a 0-d array left on
the device); the model adds the sums up and divides by the sample count only
when a value is displayed, so nothing crosses to the host inside a step.

``accuracy`` follows Keras: categorical (argmax vs argmax), sparse (argmax vs
integer label) or binary (threshold 0.5) — chosen from the loss and from the
shapes of the targets and predictions.
"""
from __future__ import annotations

from . import losses as _losses
from ._registry import lookup
from .errors import CheckpointError


class Metric:
    """``batch_sum(y_true, y_pred, logits)`` -> the metric summed over the batch (device 0-d array).

    ``y_pred`` is a Tensor of the model's outputs; when ``logits`` is true they are the
    values before the output softmax/sigmoid (the loss was computed on the logits, see :mod:`gpunet.losses`).
    """

    needs_probabilities = True

    def __init__(self, name):
        self.name = name

    def batch_sum(self, y_true, y_pred, logits=False):
        raise NotImplementedError


class Accuracy(Metric):
    """Fraction of correct predictions; ``kind`` is 'categorical', 'sparse', 'binary' or None (auto)."""

    needs_probabilities = False

    def __init__(self, name="accuracy", kind=None):
        super().__init__(name)
        self.kind = kind

    def resolve(self, loss, y_true_shape, y_pred_shape):
        if self.kind is None:
            if isinstance(loss, _losses.BinaryCrossentropy) or y_pred_shape[-1:] == (1,):
                self.kind = "binary"
            elif isinstance(loss, _losses.SparseCategoricalCrossentropy) or len(y_true_shape) < len(y_pred_shape) \
                    or y_true_shape[-1:] == (1,):
                self.kind = "sparse"
            else:
                self.kind = "categorical"
        return self.kind

    def batch_sum(self, y_true, y_pred, logits=False):
        xp = y_pred.device.xp
        p, t = y_pred.data, y_true.data
        if self.kind == "binary":
            hit = (p > (0 if logits else 0.5)) == (t.reshape(p.shape) > 0.5)
            return hit.mean(axis=-1).sum() if hit.ndim > 1 else hit.sum()
        pred = p.argmax(axis=-1)
        true = t.argmax(axis=-1) if self.kind == "categorical" else t.reshape(pred.shape)
        return xp.count_nonzero(pred == true)


class LossMetric(Metric):
    """A loss function used as a metric (e.g. ``'mae'``): its batch mean times the batch size."""

    def __init__(self, name, loss):
        super().__init__(name)
        self.loss = loss

    def batch_sum(self, y_true, y_pred, logits=False):
        return self.loss(y_true, y_pred).data * y_pred.shape[0]


def get(identifier) -> Metric:
    """A :class:`Metric` from a name (``'accuracy'``, ``'acc'``, a loss name) or a callable."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        return Accuracy(name=identifier)
    if isinstance(identifier, str) and identifier.lower() in ("categorical_accuracy", "sparse_categorical_accuracy",
                                                              "binary_accuracy"):
        return Accuracy(name=identifier, kind=identifier.lower().split("_")[0])
    names = dict(_losses.CLASSES)
    names.update(accuracy=None, acc=None)
    lookup("metric", identifier, names)     # raises with the list of valid names
    fn = _losses.get(identifier)
    return LossMetric(identifier if isinstance(identifier, str) else fn.name, fn)


def serialize(metric) -> dict:
    """A JSON-able description of a built-in metric (CheckpointError for a custom one)."""
    if type(metric) is Accuracy:
        return {"class": "Accuracy", "name": metric.name, "kind": metric.kind}
    if type(metric) is LossMetric and type(metric.loss) in _losses.CLASSES.values():
        return {"class": "LossMetric", "name": metric.name, "loss": _losses.serialize(metric.loss)}
    raise CheckpointError(f"metric {getattr(metric, 'name', metric)!r} is a custom function; model.save cannot "
                          "store it (use built-in metric names, or model.save_weights(path))")


def deserialize(config: dict) -> Metric:
    """The metric :func:`serialize` described."""
    if config["class"] == "Accuracy":
        return Accuracy(name=config["name"], kind=config["kind"])
    return LossMetric(config["name"], _losses.deserialize(config["loss"]))
