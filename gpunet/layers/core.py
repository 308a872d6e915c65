"""Core layers: ``Dense``, ``Activation``, ``InputLayer`` (and Keras' ``Input``)."""
from __future__ import annotations

from .. import activations, initializers, kernels
from ..errors import ShapeError
from .layer import NO_WORKSPACE, Layer, np


class Dense(Layer):
    """``output = activation(dot(input, kernel) + bias)``: input ``(..., in)`` -> ``(..., units)``, float32.

    Forward: one matrix product into the output and the bias added in place (one fused kernel
    on a GPU); the activation follows (see :class:`~gpunet.layers.Layer`). Backward: the
    products ``gz @ kernel.T`` (only when the input needs a gradient) and ``x.T @ gz``.
    """

    activation_in_place = True

    def __init__(self, units: int, activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", input_shape=None, name=None, input_dim=None):
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        super().__init__(input_shape=input_shape, name=name, input_dim=input_dim)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    @property
    def activation_name(self) -> str | None:
        """The activation's registry name (None for a user callable)."""
        return activations.name_of(self.activation)

    def build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ShapeError(f"Dense layer {self.name!r} needs inputs with a known last axis, got {input_shape}")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.units,), self.bias_initializer) if self.use_bias else None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        if x.shape[-1] != self.kernel.shape[0]:
            raise ShapeError(f"layer {self.name!r} expects inputs with {self.kernel.shape[0]} features on the last "
                             f"axis, got shape {x.shape}; reshape the data (e.g. x.reshape((len(x), -1))) or add "
                             "layers.Flatten() first")
        x2 = x.reshape(-1, x.shape[-1])
        z = kernels.dense_forward(xp, x2, self.kernel.data, None if self.bias is None else self.bias.data,
                                  out=ws.array("z", (x2.shape[0], self.units)))
        return z.reshape(x.shape[:-1] + (self.units,)), (xp, x2, x.shape, ws)

    def backward(self, saved, gz, need_input=True):
        xp, x2, shape, ws = saved
        gz2 = gz.reshape(-1, self.units)
        gx, gk, gb = kernels.dense_backward(xp, gz2, x2, self.kernel.data, need_input, True, self.use_bias,
                                            {"gx": ws.array("gx", x2.shape) if need_input else None,
                                             "gk": ws.array("gk", self.kernel.shape)})
        return None if gx is None else gx.reshape(shape), [gk] if gb is None else [gk, gb]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name,
                "use_bias": self.use_bias}


class Activation(Layer):
    """Applies an activation (name or callable) element-wise; the layer itself is the identity."""

    def __init__(self, activation, input_shape=None, name=None):
        super().__init__(input_shape=input_shape, name=name)
        self.activation = activations.get(activation)

    @property
    def activation_name(self) -> str | None:
        return activations.name_of(self.activation)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        return x, None

    def backward(self, saved, gz, need_input=True):
        return gz, []

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_name}


class InputLayer(Layer):
    """Declares the sample shape; passes the data through unchanged (integers too)."""

    accepts_integers = True

    def __init__(self, input_shape=None, name=None, shape=None):
        super().__init__(input_shape=shape if shape is not None else input_shape, name=name)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        return x, None

    def backward(self, saved, gz, need_input=True):
        return gz, []


def Input(shape, name=None):  # noqa: N802  (Keras spelling)
    """Keras' ``Input(shape=...)``: use as the first entry of ``Sequential([...])``."""
    return InputLayer(shape=shape, name=name)
