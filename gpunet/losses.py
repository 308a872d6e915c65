"""Loss functions by Keras name; each returns the mean loss over the batch (a 0-d Tensor).

Names: ``categorical_crossentropy``, ``sparse_categorical_crossentropy``,
``binary_crossentropy``, ``mean_squared_error`` (``mse``),
``mean_absolute_error`` (``mae``). Cross-entropies take ``from_logits``.

When a model's last activation is ``softmax`` (``sigmoid``) and its loss is a
categorical (binary) cross-entropy on probabilities, the trainer computes the
loss on the logits instead (:attr:`Loss.logits_activation`,
:meth:`Loss.from_logits_loss`): the value is the same where the clipped form is
finite, and the gradient is exactly ``(p - y) / batch``. The categorical ones
also have an array-level form (:meth:`Loss.logits_function`, the fused
softmax-cross-entropy kernel) that the tapeless training step runs directly.

Example:
    >>> from gpunet import losses
    >>> y = gpunet.tensor([[0., 1.]]); p = gpunet.tensor([[0.25, 0.75]])
    >>> round(losses.get('categorical_crossentropy')(y, p).item(), 6)
    0.287682
"""
from __future__ import annotations

from . import functional as F, ops
from ._registry import lookup
from .errors import CheckpointError
from .tensor import Tensor, apply, as_tensor

EPSILON = 1e-7   # Keras' backend epsilon, used to clip probabilities


class Loss:
    """Base class: ``loss(y_true, y_pred)`` -> mean over the batch of the per-sample loss."""

    name = "loss"
    logits_activation: str | None = None    # the output activation whose logits this loss can take instead

    def __init__(self, from_logits: bool = False, name: str | None = None):
        self.from_logits = from_logits
        if name:
            self.name = name

    def __call__(self, y_true, y_pred) -> Tensor:
        if self.from_logits:
            return self.from_logits_loss(y_true, y_pred)
        y_pred = as_tensor(y_pred)
        return ops.mean(self.per_sample(as_tensor(y_true, y_pred.device), y_pred))

    def per_sample(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        raise NotImplementedError

    def from_logits_loss(self, y_true, logits) -> Tensor:
        """The mean loss computed from the logits of :attr:`logits_activation` (numerically stable)."""
        if self.logits_function is None:
            raise NotImplementedError(f"{type(self).__name__} cannot be computed from logits")
        return apply(self.logits_function, (as_tensor(logits), y_true))

    # ``logits_function(xp, logits, y_true) -> (loss, backward)``: the array-level loss on the logits
    # (a :mod:`gpunet.functional`-style function), or None where only the Tensor form exists.
    logits_function = None

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class CategoricalCrossentropy(Loss):
    """``-sum(y * log(p))`` per sample; ``y`` one-hot (or probabilities) ``(batch, classes)``."""

    name = "categorical_crossentropy"
    logits_activation = "softmax"

    @staticmethod
    def logits_function(xp, logits, y_true):
        return F.softmax_cross_entropy(xp, logits, y_true, sparse=False)

    def per_sample(self, y_true, y_pred):
        p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        return -ops.sum(y_true * ops.log(ops.clip(p, EPSILON, 1 - EPSILON)), axis=-1)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Like categorical cross-entropy with integer class labels ``(batch,)`` as targets."""

    name = "sparse_categorical_crossentropy"

    @staticmethod
    def logits_function(xp, logits, y_true):
        return F.softmax_cross_entropy(xp, logits, y_true.reshape(-1).astype("int64"), sparse=True)

    def per_sample(self, y_true, y_pred):
        idx = y_true.reshape((-1,)).astype("int64").data
        p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        picked = ops.getitem(p, (y_pred.device.xp.arange(idx.shape[0]), idx))
        return -ops.log(ops.clip(picked, EPSILON, 1 - EPSILON))


class BinaryCrossentropy(Loss):
    """``-(y log p + (1 - y) log(1 - p))`` averaged over the last axis."""

    name = "binary_crossentropy"
    logits_activation = "sigmoid"

    def from_logits_loss(self, y_true, logits):
        z = as_tensor(logits)
        y = as_tensor(y_true, z.device).astype(z.dtype).reshape(z.shape)
        # max(z, 0) - z*y + log(1 + exp(-|z|)): finite for any z
        per = ops.relu(z) - z * y + ops.log(1 + ops.exp(-ops.abs(z)))
        return ops.mean(ops.mean(per, axis=-1))

    def per_sample(self, y_true, y_pred):
        p = ops.clip(y_pred, EPSILON, 1 - EPSILON)
        y = y_true.astype(p.dtype).reshape(p.shape)
        return -ops.mean(y * ops.log(p) + (1 - y) * ops.log(1 - p), axis=-1)


class MeanSquaredError(Loss):
    """``mean((y - p) ** 2)`` over the last axis."""

    name = "mean_squared_error"

    def per_sample(self, y_true, y_pred):
        d = y_pred - y_true.astype(y_pred.dtype).reshape(y_pred.shape)
        return ops.mean(d * d, axis=-1)


class MeanAbsoluteError(Loss):
    """``mean(|y - p|)`` over the last axis."""

    name = "mean_absolute_error"

    def per_sample(self, y_true, y_pred):
        return ops.mean(ops.abs(y_pred - y_true.astype(y_pred.dtype).reshape(y_pred.shape)), axis=-1)


class _FunctionLoss(Loss):
    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def __call__(self, y_true, y_pred):
        y_pred = as_tensor(y_pred)
        out = self.fn(as_tensor(y_true, y_pred.device), y_pred)
        return out if out.ndim == 0 else ops.mean(out)


CLASSES = {
    "categorical_crossentropy": CategoricalCrossentropy, "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy, "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
}


def get(identifier) -> Loss:
    """A :class:`Loss` from a name, a Loss instance, or a callable ``fn(y_true, y_pred)``."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    found = lookup("loss", identifier, CLASSES)
    if isinstance(found, type):
        obj = found()
        if isinstance(identifier, str):
            obj.name = identifier.lower() if identifier.lower() in ("mse", "mae") else obj.name
        return obj
    return _FunctionLoss(found)


def serialize(loss) -> dict:
    """``{'class', 'name', 'from_logits'}`` of a built-in loss (CheckpointError for a custom one)."""
    cls = type(loss)
    if cls not in set(CLASSES.values()):
        raise CheckpointError(f"loss {getattr(loss, 'name', loss)!r} is a custom function; model.save cannot store "
                              "it (use a built-in loss name, or model.save_weights(path))")
    return {"class": cls.__name__, "name": loss.name, "from_logits": bool(loss.from_logits)}


def deserialize(config: dict) -> Loss:
    """The loss :func:`serialize` described."""
    classes = {cls.__name__: cls for cls in CLASSES.values()}
    return classes[config["class"]](from_logits=config["from_logits"], name=config["name"])


# Keras-style function aliases returning per-sample losses
def categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample categorical cross-entropy (shape ``(batch,)``)."""
    y_pred = as_tensor(y_pred)
    y_true = as_tensor(y_true, y_pred.device)
    if from_logits:
        return -ops.sum(y_true * ops.log_softmax(y_pred), axis=-1)
    return CategoricalCrossentropy().per_sample(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    """Per-sample mean squared error."""
    y_pred = as_tensor(y_pred)
    return MeanSquaredError().per_sample(as_tensor(y_true, y_pred.device), y_pred)


def mean_absolute_error(y_true, y_pred):
    """Per-sample mean absolute error."""
    y_pred = as_tensor(y_pred)
    return MeanAbsoluteError().per_sample(as_tensor(y_true, y_pred.device), y_pred)


mse = mean_squared_error
mae = mean_absolute_error
