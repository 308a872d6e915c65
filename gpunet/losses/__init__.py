"""Loss functions by Keras name, computed as Keras 3 computes them.

Names: ``categorical_crossentropy``, ``sparse_categorical_crossentropy``,
``binary_crossentropy``, ``mean_squared_error`` (``mse``),
``mean_absolute_error`` (``mae``). The classes take Keras' arguments
(``from_logits``, ``label_smoothing``, ``axis``, ``ignore_class``, ``reduction``,
``name``, ``dtype``); ``loss(y_true, y_pred, sample_weight=None)`` returns a 0-d
Tensor reduced per ``loss.reduction`` (``'sum_over_batch_size'`` by default: the mean
of the weighted per-sample losses), or the per-sample losses for ``reduction=None``.
The functions (``losses.categorical_crossentropy(y_true, y_pred)`` ...) return the
per-sample losses.

When a model's last activation is ``softmax`` (``sigmoid``) and its loss is a
categorical (binary) cross-entropy on probabilities, the trainer computes the
loss on the logits instead (:attr:`Loss.logits_activation`,
:meth:`Loss.from_logits_loss`): the value is the same where the clipped form is
finite, and the gradient is exactly ``(p - y) / batch``. The categorical ones
also have an array-level form (``loss.logits_function(xp, logits, y_true,
sample_weight=None)``, the fused softmax-cross-entropy kernel, Keras'
``'sum_over_batch_size'``) that the tapeless training step runs directly.

Example:
    >>> import gpunet
    >>> from gpunet import losses
    >>> y = gpunet.tensor([[0., 1.]]); p = gpunet.tensor([[0.25, 0.75]])
    >>> round(losses.get('categorical_crossentropy')(y, p).item(), 6)
    0.287682
"""
from __future__ import annotations

import inspect

from .._registry import lookup
from ..errors import CheckpointError
from .loss import (EPSILON, REDUCTIONS, Loss, LossFunctionWrapper, reduce_values, reduce_weighted_values,
                   squeeze_or_expand_to_same_rank, standardize_reduction)
from .losses import (BinaryCrossentropy, CategoricalCrossentropy, MeanAbsoluteError, MeanSquaredError,
                     SparseCategoricalCrossentropy, binary_crossentropy, categorical_crossentropy, mae,
                     mean_absolute_error, mean_squared_error, mse, sparse_categorical_crossentropy)

__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "MeanAbsoluteError", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "mean_squared_error", "mean_absolute_error",
           "mse", "mae", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
           "get", "serialize", "deserialize", "CLASSES", "EPSILON", "REDUCTIONS", "reduce_values",
           "reduce_weighted_values", "squeeze_or_expand_to_same_rank", "standardize_reduction"]

CLASSES = {
    "categorical_crossentropy": CategoricalCrossentropy, "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy, "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
}


def get(identifier) -> Loss | None:
    """A :class:`Loss` from a name, a Loss instance or class, or a callable ``fn(y_true, y_pred)``
    (wrapped in :class:`LossFunctionWrapper`); None for None, as in Keras."""
    if identifier is None or isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    found = lookup("loss", identifier, CLASSES)
    if isinstance(found, type):
        obj = found()
        if isinstance(identifier, str) and identifier.lower() in ("mse", "mae"):
            obj.name = identifier.lower()
        return obj
    return LossFunctionWrapper(found)


def serialize(loss) -> dict:
    """``{'class', 'name', 'from_logits', ...its get_config()}`` of a built-in loss (CheckpointError for a custom one)."""
    cls = type(loss)
    if cls not in set(CLASSES.values()):
        raise CheckpointError(f"loss {getattr(loss, 'name', loss)!r} is a custom function; model.save cannot store "
                              "it (use a built-in loss name, or model.save_weights(path))")
    return {"class": cls.__name__, "from_logits": bool(loss.from_logits), **loss.get_config()}


def deserialize(config: dict) -> Loss:
    """The loss :func:`serialize` described (also the ``{'class', 'name', 'from_logits'}`` of earlier versions)."""
    classes = {cls.__name__: cls for cls in CLASSES.values()}
    cls = classes[config["class"]]
    accepted = inspect.signature(cls.__init__).parameters
    return cls.from_config({k: v for k, v in config.items() if k != "class" and k in accepted})
