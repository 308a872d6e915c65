"""Core layers: ``Dense`` and ``Activation`` (``InputLayer``/``Input`` live in :mod:`.input_layer`)."""
from __future__ import annotations

from .. import activations, initializers, kernels
from ..errors import ShapeError
from .layer import NO_WORKSPACE, Layer, np, snake_case

# Keras' initializer arguments that gpunet's initializers have built in (their Keras defaults)
KERAS_INITIALIZER_DEFAULTS = {"seed": None, "minval": -0.05, "maxval": 0.05, "mean": 0.0, "stddev": 0.05}
# Keras' Dense arguments gpunet does not implement: accepted (and written to configs) only as None
UNSUPPORTED_DENSE_ARGS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                          "bias_constraint", "lora_rank", "lora_alpha", "quantization_config")


def get_initializer(identifier, default: str):
    """An initializer from a name, a callable, None (``default``) or Keras' serialized form
    ``{'class_name': 'GlorotUniform', 'config': {'seed': None}}`` (default arguments only)."""
    if identifier is None:
        return initializers.get(default)
    if isinstance(identifier, dict):
        config = identifier.get("config") or {}
        custom = {k: v for k, v in config.items() if KERAS_INITIALIZER_DEFAULTS.get(k, object()) != v}
        if custom:
            raise ValueError(f"gpunet's initializers take no arguments; {identifier.get('class_name')} with {custom} "
                             "is not supported")
        return initializers.get(snake_case(identifier["class_name"]))
    return initializers.get(identifier)


def initializer_name(fn) -> str | None:
    """The registry name of an initializer, or None for a user callable."""
    name = getattr(fn, "__name__", None)
    try:
        return name if isinstance(name, str) and initializers.get(name) is fn else None
    except ValueError:
        return None


class Dense(Layer):
    """``output = activation(dot(input, kernel) + bias)``: input ``(..., in)`` -> ``(..., units)``, float32.

    Forward: one matrix product into the output and the bias added in place (one fused kernel
    on a GPU); the activation follows (see :class:`~gpunet.layers.Layer`). Backward: the
    products ``gz @ kernel.T`` (only when the input needs a gradient) and ``x.T @ gz`` (only
    while the layer is trainable).

    Keras' regularizer, constraint, LoRA and quantization arguments are accepted as None only.
    """

    activation_in_place = True
    fused_activations = ("relu",)   # forward(..., activation='relu'): the bias and ReLU in one pass
    replays_on_host = True
    supports_masking = True

    def __init__(self, units: int, activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, lora_rank=None, lora_alpha=None,
                 quantization_config=None, **kwargs):
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        given = dict(zip(UNSUPPORTED_DENSE_ARGS, (kernel_regularizer, bias_regularizer, activity_regularizer,
                                                  kernel_constraint, bias_constraint, lora_rank, lora_alpha,
                                                  quantization_config)))
        for arg, value in given.items():
            if value is not None:
                raise ValueError(f"gpunet's Dense does not implement {arg} (got {value!r}); leave it None")
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = get_initializer(kernel_initializer, "glorot_uniform")
        self.bias_initializer = get_initializer(bias_initializer, "zeros")
        self.kernel = self.bias = None

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

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE, activation=None):
        if x.shape[-1] != self.kernel.shape[0]:
            raise ShapeError(f"Input 0 of layer {self.name!r} is incompatible with the layer: expected axis -1 of "
                             f"input shape to have value {self.kernel.shape[0]}, but received input with shape "
                             f"{x.shape}; reshape the data (e.g. x.reshape((len(x), -1))) or add layers.Flatten() first")
        x2 = x.reshape(-1, x.shape[-1])
        z = kernels.dense_forward(xp, x2, self.kernel.data, None if self.bias is None else self.bias.data,
                                  activation, out=ws.array("z", (x2.shape[0], self.units)))
        return z.reshape(x.shape[:-1] + (self.units,)), (xp, x2, x.shape, ws)

    def backward(self, saved, gz, need_input=True):
        xp, x2, shape, ws = saved
        gz2 = gz.reshape(-1, self.units)
        train = self.trainable
        gx, gk, gb = kernels.dense_backward(xp, gz2, x2, self.kernel.data, need_input, train, train and self.use_bias,
                                            {"gx": ws.array("gx", x2.shape) if need_input else None,
                                             "gk": ws.array("gk", self.kernel.shape) if train else None,
                                             "gb": ws.array("gb", (self.units,)) if train and self.use_bias
                                             else None})
        return None if gx is None else gx.reshape(shape), [g for g in (gk, gb) if g is not None]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name,
                "use_bias": self.use_bias, "kernel_initializer": initializer_name(self.kernel_initializer),
                "bias_initializer": initializer_name(self.bias_initializer), "kernel_regularizer": None,
                "bias_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
                "quantization_config": None}


class Activation(Layer):
    """Applies an activation (name or callable) element-wise; the layer itself is the identity."""

    supports_masking = True
    replays_on_host = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
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
