"""Keras-style layers: ``build(input_shape)`` creates the weights; the math is array-level
``forward``/``backward`` (see :mod:`gpunet.layers.layer`), used by the tape and by the tapeless
training step alike.

Weights are drawn on the host (:mod:`gpunet.initializers`, seeded by
:func:`gpunet.random.seed`) and moved to the layer's device once.

Example (the chapter's network):
    >>> from gpunet import layers, models
    >>> net = models.Sequential()
    >>> net.add(layers.Dense(512, activation='relu', input_shape=(28 * 28,)))
    >>> net.add(layers.Dense(10, activation='softmax'))
    >>> net.count_params()
    407050
"""
from __future__ import annotations

from ..errors import CheckpointError
from .convolutional import Conv2D
from .core import Activation, Dense
from .input_layer import Input, InputLayer
from .layer import Layer, Workspace, assign_weights
from .pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D
from .preprocessing import Rescaling
from .regularization import Dropout
from .reshaping import Flatten

__all__ = ["Layer", "Dense", "Activation", "Flatten", "Dropout", "Rescaling", "InputLayer", "Input",
           "Workspace", "serialize", "deserialize", "Conv2D", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D"]

CLASSES = {cls.__name__: cls for cls in (Dense, Activation, Flatten, Dropout, Rescaling, InputLayer, Conv2D,
                                         MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D)}


def serialize(layer) -> dict:
    """``{'class': ..., 'config': {...}}`` of a built-in layer (CheckpointError for others)."""
    cls = type(layer).__name__
    if CLASSES.get(cls) is not type(layer):
        raise CheckpointError(f"layer {layer.name!r} is a {cls}, not a built-in gpunet layer, so model.save "
                              "cannot rebuild it; save the weights with model.save_weights(path) instead")
    cfg = layer.get_config()
    if "activation" in cfg and cfg["activation"] is None:
        raise CheckpointError(f"layer {layer.name!r} uses a custom activation function, which model.save cannot "
                              "store; use a built-in activation name or model.save_weights(path)")
    return {"class": cls, "config": cfg}


def deserialize(spec: dict):
    """The layer :func:`serialize` described (unbuilt), through the class's ``from_config``: configs of
    earlier gpunet versions (fewer keys) and Keras' ``{'class_name': ..., 'config': ...}`` load too."""
    name = spec.get("class", spec.get("class_name"))
    if name not in CLASSES:
        raise CheckpointError(f"unknown layer class {name!r}; gpunet's layers: {', '.join(sorted(CLASSES))}")
    return CLASSES[name].from_config(spec["config"])
