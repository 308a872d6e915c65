"""Optimizers with Keras 3's update rules, arguments and defaults, updating parameters in place.

Each optimizer keeps its slots (momentum, moving averages; Keras' names) next to the
parameter on the parameter's device and runs one fused update per parameter: a CUDA kernel
on a GPU (the ``.cu`` file beside its module), its NumPy twin on the CPU. Keras' common
arguments work: ``weight_decay`` (decoupled, inside the fused update), ``clipnorm`` /
``global_clipnorm`` / ``clipvalue``, and a ``learning_rate`` that is a float, a callable or a
schedule from :mod:`gpunet.optimizers.schedules`.

Usable in a hand-written loop::

    opt = gpunet.optimizers.RMSprop()
    with gpunet.GradientTape() as tape:
        loss = ...
    grads = tape.gradient(loss, params)
    opt.apply_gradients(zip(grads, params))
"""
from __future__ import annotations

from .._registry import lookup
from ..errors import CheckpointError
from . import schedules
from .adam import Adam
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "schedules", "get", "serialize", "deserialize"]

CLASSES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}
KEYS = {cls: key for key, cls in CLASSES.items()}


def get(identifier) -> Optimizer:
    """An optimizer from a name (``'sgd'``, ``'rmsprop'``, ``'adam'``, Keras defaults), a config dict
    (Keras' ``{'class_name': ..., 'config': ...}`` or :func:`serialize`'s) or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    return lookup("optimizer", identifier, CLASSES, allow_callable=False)()


def serialize(optimizer) -> dict:
    """``{'name': ..., 'config': {...}}`` of a built-in optimizer (CheckpointError for others, and for a
    learning rate that is a callable or a schedule of your own: they cannot be written to a file)."""
    if type(optimizer) not in KEYS:
        raise CheckpointError(f"optimizer {type(optimizer).__name__} is not a built-in gpunet optimizer; model.save "
                              "cannot store it (use model.save_weights(path))")
    config = optimizer.get_config()
    lr = config["learning_rate"]
    if callable(lr) or (isinstance(lr, dict) and lr.get("class_name") not in schedules.BUILT_IN):
        what = lr.get("class_name") if isinstance(lr, dict) else getattr(lr, "__name__", type(lr).__name__)
        raise CheckpointError(f"the optimizer's learning rate {what} is a callable or a schedule of your own; "
                              "model.save cannot store it (use a schedule from gpunet.optimizers.schedules, or "
                              "model.save_weights(path))")
    return {"name": KEYS[type(optimizer)], "config": config}


def deserialize(config: dict, custom_objects: dict | None = None) -> Optimizer:
    """The optimizer :func:`serialize` described (its slots and iteration count start empty); Keras'
    form ``{'class_name': 'Adam', 'config': {...}}`` is read too."""
    key = config["name"] if "name" in config and "class_name" not in config else config["class_name"]
    cls = lookup("optimizer", key, CLASSES, allow_callable=False)
    return cls.from_config(config.get("config", {}), custom_objects)
