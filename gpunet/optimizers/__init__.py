"""Optimizers with Keras 3's update rules and defaults, updating parameters in place.

Each optimizer keeps its slots (momentum, moving averages; Keras' names) next to the
parameter on the parameter's device and runs one fused update per parameter: a CUDA kernel
on a GPU (the ``.cu`` file beside its module), its NumPy twin on the CPU.

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
from .adam import Adam
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "get", "serialize", "deserialize"]

CLASSES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def get(identifier) -> Optimizer:
    """An optimizer from a name (``'sgd'``, ``'rmsprop'``, ``'adam'``, Keras defaults) or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    return lookup("optimizer", identifier, CLASSES, allow_callable=False)()


def serialize(optimizer) -> dict:
    """``{'name': ..., 'config': {...}}`` of a built-in optimizer (CheckpointError for others)."""
    if CLASSES.get(optimizer.name) is not type(optimizer):
        raise CheckpointError(f"optimizer {type(optimizer).__name__} is not a built-in gpunet optimizer; model.save "
                              "cannot store it (use model.save_weights(path))")
    return {"name": optimizer.name, "config": optimizer.get_config()}


def deserialize(config: dict) -> Optimizer:
    """The optimizer :func:`serialize` described (its slots and iteration count start empty)."""
    return CLASSES[config["name"]](**config["config"])
