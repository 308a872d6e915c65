"""``Conv2D``: 2D convolution of channels-last images, Keras 3's arguments, shapes and config.

The math is :func:`gpunet.functional_conv.conv2d_forward`/``conv2d_backward``: im2col into a
``(rows, kh*kw*C)`` buffer, one matrix product with the bias (and a ReLU) added, and in the backward the
dense layer's products plus col2im. In the tapeless training step every one of those arrays is lent by
the layer's :class:`~gpunet.layers.Workspace` and reused from step to step; the unfolded columns cost
``4 * rows*kh*kw*C`` bytes, and their gradient as much again when the input needs one. ``rows`` is
``n*out_h*out_w`` on a GPU; on the CPU a batch whose columns exceed 2 MiB is unfolded by blocks of images
(:func:`~gpunet.functional_conv.block_images`), each multiplied while in the cache. The book's convnet at
batch 64 on the CPU: 1.6 MB, 2.1 MB (+2.1, 15 images a block) and 1.3 MB (+1.3) for its three
convolutions, 8.4 MB in all (22 MB unblocked; a GPU holds the unblocked 1.6, 8.9 (+8.9) and 1.3 (+1.3)).
"""
from __future__ import annotations

from .. import activations
from ..errors import ShapeError
from ..functional_conv import block_images, conv2d_backward, conv2d_forward, geometry, pair
from .core import get_initializer, initializer_name
from .layer import NO_WORKSPACE, Layer

PADDINGS = ("valid", "same")
# CUDA graphs replay the kernels of one captured step; the convolution and pooling array code allocates
# temporaries (pooling outputs, masks) each step, which a replay would not own
CAPTURE_OBSTACLE = "its convolution/pooling array code allocates temporaries each step"
UNSUPPORTED_CONV_ARGS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                         "bias_constraint", "lora_rank", "lora_alpha")


def standardize_padding(padding) -> str:
    """``'valid'`` or ``'same'`` (case-insensitive), ValueError for anything else (Keras' message)."""
    value = str(padding).lower()
    if value not in PADDINGS:
        raise ValueError(f"The `padding` argument must be a list/tuple or one of {set(PADDINGS)}. "
                         f"Received: {padding}")
    return value


def channels_last(data_format) -> str:
    """gpunet's convolutions and pooling are channels-last only; None means that too."""
    value = "channels_last" if data_format is None else str(data_format).lower()
    if value != "channels_last":
        raise ValueError(f"gpunet's convolution and pooling layers take channels-last inputs (batch, height, width, "
                         f"channels) only; got data_format={data_format!r}. Transpose the data with "
                         "x.transpose(0, 2, 3, 1) and leave data_format unset")
    return value


def unit_pair(value, name):
    """Keras' ``dilation_rate``/``groups`` style argument that gpunet supports only as 1."""
    if (pair(value, name) if name == "dilation_rate" else (value,)) not in ((1, 1), (1,)):
        raise ValueError(f"gpunet's Conv2D supports {name}=1 only, got {value!r}")


class Conv2D(Layer):
    """2D convolution: ``activation(conv2d(inputs, kernel) + bias)``, inputs ``(batch, height, width,
    channels)`` -> ``(batch, out_h, out_w, filters)``, kernel ``(kh, kw, channels, filters)``.

    ``kernel_size`` and ``strides`` are ints or pairs; ``padding`` 'valid' or 'same' (TensorFlow's rule);
    Glorot's fans are ``kh*kw*channels`` and ``kh*kw*filters`` (Keras). Keras' dilation/groups are
    accepted as 1, its regularizers and constraints as None, ``data_format`` as channels-last only.

    >>> from gpunet import layers, models
    >>> net = models.Sequential([layers.Conv2D(32, 3, activation='relu', input_shape=(28, 28, 1))])
    >>> net.layers[0].output_shape, net.count_params()
    ((None, 26, 26, 32), 320)
    """

    activation_in_place = True      # forward's output is the layer's own array; backward reads cols, not z
    fused_activations = ("relu",)   # forward(..., activation='relu'): the bias and ReLU in one pass

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, lora_rank=None, lora_alpha=None, **kwargs):
        if not hasattr(filters, "__index__") or isinstance(filters, bool) or int(filters) <= 0:
            raise ValueError("Invalid value for argument `filters`. Expected a strictly positive value. "
                             f"Received filters={filters}.")
        given = dict(zip(UNSUPPORTED_CONV_ARGS, (kernel_regularizer, bias_regularizer, activity_regularizer,
                                                 kernel_constraint, bias_constraint, lora_rank, lora_alpha)))
        for arg, value in given.items():
            if value is not None:
                raise ValueError(f"gpunet's Conv2D does not implement {arg} (got {value!r}); leave it None")
        unit_pair(dilation_rate, "dilation_rate")
        unit_pair(groups, "groups")
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.padding = standardize_padding(padding)
        self.data_format = channels_last(data_format)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = get_initializer(kernel_initializer, "glorot_uniform")
        self.bias_initializer = get_initializer(bias_initializer, "zeros")
        self.kernel = self.bias = None

    @property
    def activation_name(self) -> str | None:
        return activations.name_of(self.activation)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ShapeError(f"Conv2D layer {self.name!r} needs inputs (batch, height, width, channels) with known "
                             f"channels, got shape {input_shape}")
        self.compute_output_shape(input_shape)          # refuses inputs smaller than the window
        self.kernel = self.add_weight("kernel", self.kernel_size + (input_shape[-1], self.filters),
                                      self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer) if self.use_bias else None

    def capture_obstacle(self):
        return CAPTURE_OBSTACLE

    def compute_output_shape(self, input_shape):
        n, h, w = tuple(input_shape)[:3]
        if h is None or w is None:
            return (n, None, None, self.filters)
        oh, ow, _, _ = geometry((n, h, w, input_shape[-1]), self.kernel_size, self.strides, self.padding)
        return (n, oh, ow, self.filters)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE, activation=None):
        n, h, w, c = x.shape if x.ndim == 4 else (None,) * 4
        if x.ndim != 4 or c != self.kernel.shape[2]:
            raise ShapeError(f"Input 0 of layer {self.name!r} is incompatible with the layer: expected images "
                             f"(batch, height, width, {self.kernel.shape[2]}), got shape {x.shape}")
        kh, kw = self.kernel_size
        oh, ow, _, _ = geometry(x.shape, self.kernel_size, self.strides, self.padding)
        block = block_images(xp, n, oh, ow, kh * kw * c)     # CPU: unfolded by blocks of images (cache-sized)
        buffers = {"cols": ws.array("cols", ((block or n) * oh * ow, kh * kw * c)),
                   "z": ws.array("z", (n * oh * ow, self.filters))}
        z, saved = conv2d_forward(xp, x, self.kernel.data, None if self.bias is None else self.bias.data,
                                  self.strides, self.padding, buffers, activation, block)
        return z, (xp, saved, ws)

    def backward(self, saved, gz, need_input=True):
        xp, conv_saved, ws = saved
        cols, x_shape = conv_saved[0], conv_saved[1]
        train = self.trainable
        need_bias = train and self.use_bias
        buffers = {"gcols": ws.array("gcols", cols.shape) if need_input else None,
                   "gx": ws.array("gx", x_shape) if need_input else None,
                   "gk": ws.array("gk", self.kernel.shape) if train else None,
                   "gb": ws.array("gb", (self.filters,)) if need_bias else None}
        gx, gk, gb = conv2d_backward(xp, conv_saved, gz, need_input, train, need_bias, buffers)
        return gx, [g for g in (gk, gb) if g is not None]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": (1, 1), "groups": 1, "activation": self.activation_name, "use_bias": self.use_bias,
                "kernel_initializer": initializer_name(self.kernel_initializer),
                "bias_initializer": initializer_name(self.bias_initializer), "kernel_regularizer": None,
                "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
                "bias_constraint": None}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for key in ("kernel_size", "strides", "dilation_rate"):
            if isinstance(config.get(key), list):
                config[key] = tuple(config[key])
        return super().from_config(config)
