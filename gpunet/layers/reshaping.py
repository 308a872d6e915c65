"""``Flatten``: each sample to one axis."""
from __future__ import annotations

import math

from .layer import NO_WORKSPACE, Layer

DATA_FORMATS = ("channels_last", "channels_first")


class Flatten(Layer):
    """Flattens each sample: ``(batch, 28, 28)`` -> ``(batch, 784)`` (a view: no copy; integers pass);
    ``(batch,)`` -> ``(batch, 1)``.

    ``data_format='channels_first'`` (Keras' argument) reads ``(batch, channels, ...)`` inputs and
    flattens them in channels-last order (a copy), so that the features line up with a
    channels-last model's; the default is ``'channels_last'``.
    """

    accepts_integers = True
    replays_on_host = True

    def __init__(self, data_format=None, **kwargs):
        data_format = "channels_last" if data_format is None else str(data_format).lower()
        if data_format not in DATA_FORMATS:
            raise ValueError("The `data_format` argument must be one of {'channels_first', 'channels_last'}. "
                             f"Received: data_format={data_format}")
        super().__init__(**kwargs)
        self.data_format = data_format

    def compute_output_shape(self, input_shape):
        rest = tuple(input_shape)[1:]
        return (input_shape[0], math.prod(rest) if all(d is not None for d in rest) else None)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        if self.data_format == "channels_first" and x.ndim > 2:
            moved = x.transpose((0, *range(2, x.ndim), 1))
            return moved.reshape(x.shape[0], math.prod(moved.shape[1:])), (x.shape, moved.shape)
        return (x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.ndim != 2 else x), (x.shape, None)

    def backward(self, saved, gz, need_input=True):
        shape, moved = saved
        if moved is None:
            return gz.reshape(shape), []
        n = len(shape)
        return gz.reshape(moved).transpose((0, n - 1, *range(1, n - 1))), []

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
