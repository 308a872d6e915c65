"""Pooling layers on channels-last images: ``MaxPooling2D``, ``AveragePooling2D``,
``GlobalAveragePooling2D`` (Keras 3's arguments, shapes and configs).

The math is :mod:`gpunet.functional_conv` (loops over the window offsets only, see
:mod:`gpunet.kernels.conv`); the layers have no weights, and their array-level forward/backward give
the tapeless training step its fast path.
"""
from __future__ import annotations

from ..errors import ShapeError
from ..functional_conv import (avg_pool2d_backward, avg_pool2d_forward, geometry, max_pool2d_backward,
                               max_pool2d_forward, pair)
from .convolutional import CAPTURE_OBSTACLE, channels_last, standardize_padding
from .layer import NO_WORKSPACE, Layer


class Pooling2D(Layer):
    """The shared part of the 2D pooling layers: ``pool_size``, ``strides`` (None: ``pool_size``),
    ``padding`` ('valid'/'same'), channels-last ``data_format``."""

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        pool = pair(pool_size, "pool_size")
        strides = pool if strides is None else pair(strides, "strides")
        padding = standardize_padding(padding)
        data_format = channels_last(data_format)
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding, self.data_format = pool, strides, padding, data_format

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"{type(self).__name__} layer {self.name!r} needs inputs (batch, height, width, "
                             f"channels), got shape {input_shape}")
        self.compute_output_shape(input_shape)

    def capture_obstacle(self):
        return CAPTURE_OBSTACLE

    def compute_output_shape(self, input_shape):
        n, h, w, c = tuple(input_shape)
        if h is None or w is None:
            return (n, None, None, c)
        oh, ow, _, _ = geometry((n, h, w, c), self.pool_size, self.strides, self.padding)
        return (n, oh, ow, c)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "padding": self.padding,
                "strides": self.strides, "data_format": self.data_format}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for key in ("pool_size", "strides"):
            if isinstance(config.get(key), list):
                config[key] = tuple(config[key])
        return super().from_config(config)


class MaxPooling2D(Pooling2D):
    """The maximum of each ``pool_size`` window: ``(batch, H, W, C)`` -> ``(batch, out_h, out_w, C)``; the
    gradient of a window goes to its first maximum (TensorFlow's choice on ties).

    >>> from gpunet import layers
    >>> layers.MaxPooling2D(2).compute_output_shape((None, 26, 26, 32))
    (None, 13, 13, 32)
    """

    absorbs_relu_gradient = True    # backward(..., relu_output=y): the previous ReLU's backward in the same pass

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        y, saved = max_pool2d_forward(xp, x, self.pool_size, self.strides, self.padding)
        return y, (xp, saved)

    def backward(self, saved, gz, need_input=True, relu_output=None):
        xp, pool_saved = saved
        return (max_pool2d_backward(xp, pool_saved, gz, relu_output) if need_input else None), []


class AveragePooling2D(Pooling2D):
    """The mean of each ``pool_size`` window (with 'same' padding, over its positions inside the image)."""

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        y, saved = avg_pool2d_forward(xp, x, self.pool_size, self.strides, self.padding)
        return y, (xp, saved)

    def backward(self, saved, gz, need_input=True):
        xp, pool_saved = saved
        return (avg_pool2d_backward(xp, pool_saved, gz) if need_input else None), []


class GlobalAveragePooling2D(Layer):
    """The mean over height and width: ``(batch, H, W, C)`` -> ``(batch, C)`` (``keepdims=True``:
    ``(batch, 1, 1, C)``), as Keras 3."""

    def __init__(self, data_format=None, keepdims: bool = False, **kwargs):
        data_format = channels_last(data_format)
        super().__init__(**kwargs)
        self.data_format, self.keepdims = data_format, bool(keepdims)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"GlobalAveragePooling2D layer {self.name!r} needs inputs (batch, height, width, "
                             f"channels), got shape {input_shape}")

    def capture_obstacle(self):
        return CAPTURE_OBSTACLE

    def compute_output_shape(self, input_shape):
        n, c = input_shape[0], input_shape[-1]
        return (n, 1, 1, c) if self.keepdims else (n, c)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        if x.ndim != 4:
            raise ShapeError(f"GlobalAveragePooling2D layer {self.name!r} needs inputs (batch, height, width, "
                             f"channels), got shape {x.shape}")
        return x.mean(axis=(1, 2), keepdims=self.keepdims), (xp, x.shape)

    def backward(self, saved, gz, need_input=True):
        xp, (n, h, w, c) = saved
        if not need_input:
            return None, []
        g = (gz.reshape(n, 1, 1, c) / (h * w)).astype(gz.dtype)
        return xp.broadcast_to(g, (n, h, w, c)).copy(), []

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}
