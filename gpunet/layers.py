"""Keras-style layers: ``build(input_shape)`` creates the weights, ``call(x, training)`` is pure ops.

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

import math

from . import activations, backend, initializers, ops, random
from .errors import ShapeError
from .tensor import Tensor

np = backend.numpy

__all__ = ["Layer", "Dense", "Activation", "Flatten", "Dropout", "Rescaling", "InputLayer"]

_counts: dict = {}


def _auto_name(prefix: str) -> str:
    n = _counts.get(prefix, 0)
    _counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


class Layer:
    """Base layer. Subclasses implement :meth:`build` (optional) and :meth:`call`.

    Args:
        input_shape: the shape of one sample (without the batch axis); lets a model build
            the layer before seeing data (the chapter's ``input_shape=(28 * 28,)``).
        name: a unique name (default: derived from the class).
    """

    def __init__(self, input_shape=None, name: str | None = None, input_dim: int | None = None):
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if input_shape is not None:
            input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
            if not all(isinstance(d, (int, np.integer)) and d > 0 for d in input_shape):
                raise ValueError(f"input_shape must be a tuple of positive integers (one sample, no batch axis), "
                                 f"got {input_shape!r}")
        self.input_shape = input_shape
        self.name = name or _auto_name(_snake(type(self).__name__))
        self.built = False
        self.device = None
        self._weights: list[Tensor] = []
        self.output_shape = None

    # -- weights -----------------------------------------------------------------
    def add_weight(self, name: str, shape, initializer) -> Tensor:
        """Create a trainable float32 weight on this layer's device."""
        value = initializers.get(initializer)(tuple(shape), "float32")
        w = Tensor(value, device=self.device, requires_grad=True, name=f"{self.name}/{name}")
        self._weights.append(w)
        return w

    @property
    def weights(self) -> list[Tensor]:
        """The layer's weight tensors, in creation order (kernel before bias)."""
        return list(self._weights)

    trainable_weights = weights

    def get_weights(self) -> list:
        """Host NumPy copies of the weights."""
        return [w.numpy() for w in self._weights]

    def set_weights(self, values) -> None:
        """Replace the weights with host arrays of the same shapes (all checked before any changes)."""
        values = list(values)
        if len(values) != len(self._weights):
            raise ValueError(f"layer {self.name!r} has {len(self._weights)} weights, got {len(values)} arrays")
        arrays = [np.asarray(v) for v in values]
        for w, a in zip(self._weights, arrays):
            if a.shape != w.shape:
                raise ShapeError(f"layer {self.name!r} weight {w.name!r}: expected shape {w.shape}, got {a.shape}")
        for w, a in zip(self._weights, arrays):
            w.data[...] = w.device.asarray(a, dtype=w.dtype)

    def count_params(self) -> int:
        return sum(w.size for w in self._weights)

    # -- building and calling -------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create weights for inputs of ``input_shape`` (batch axis first, may be None)."""

    def compute_output_shape(self, input_shape):
        return input_shape

    def _ensure_built(self, input_shape, device) -> None:
        if not self.built:
            self.device = backend.device(device)
            self.build(tuple(input_shape))
            self.built = True
            self.output_shape = self.compute_output_shape(tuple(input_shape))

    def call(self, x: Tensor, training: bool = False) -> Tensor:
        raise NotImplementedError

    def __call__(self, x, training: bool = False) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x, device=self.device)
        self._ensure_built(x.shape, x.device)
        return self.call(x, training=training)

    def get_config(self) -> dict:
        return {"name": self.name, "input_shape": self.input_shape}

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Dense(Layer):
    """``output = activation(dot(input, kernel) + bias)``: input ``(..., in)`` -> ``(..., units)``.

    The linear part and a ReLU run as one fused op (:func:`gpunet.ops.dense`). A final
    softmax/sigmoid is fused with the cross-entropy loss by the model during training.
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", input_shape=None, name=None, input_dim=None):
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        super().__init__(input_shape=input_shape, name=name, input_dim=input_dim)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.activation_name = activations.name_of(self.activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ShapeError(f"Dense layer {self.name!r} needs inputs with a known last axis, got {input_shape}")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.units,), self.bias_initializer) if self.use_bias else None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training=False, logits=False):
        """Forward. ``logits=True`` skips a final softmax/sigmoid (the model fuses it with the loss)."""
        if x.shape[-1] != self.kernel.shape[0]:
            raise ShapeError(f"layer {self.name!r} expects inputs with {self.kernel.shape[0]} features on the last "
                             f"axis, got shape {x.shape}; reshape the data (e.g. x.reshape((len(x), -1))) or add "
                             "layers.Flatten() first")
        fused = self.activation_name if self.activation_name in ("relu", "linear") else None
        out = ops.dense(x, self.kernel, self.bias, fused)
        if fused is None and not logits:
            out = self.activation(out)
        return out

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name,
                "use_bias": self.use_bias}


class Activation(Layer):
    """Applies an activation (name or callable) element-wise."""

    def __init__(self, activation, input_shape=None, name=None):
        super().__init__(input_shape=input_shape, name=name)
        self.activation = activations.get(activation)
        self.activation_name = activations.name_of(self.activation)

    def call(self, x, training=False, logits=False):
        return x if logits else self.activation(x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_name}


class Flatten(Layer):
    """Flattens each sample: ``(batch, 28, 28)`` -> ``(batch, 784)``."""

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], math.prod(rest) if all(d is not None for d in rest) else None)

    def call(self, x, training=False):
        return ops.reshape(x, (x.shape[0], -1)) if x.ndim != 2 else x


class Rescaling(Layer):
    """``x * scale + offset``, computed in float32 (e.g. ``Rescaling(1 / 255)`` for uint8 images).

    Lets a model take raw uint8 images, so the dataset stays uint8 (4x smaller) on the device.
    """

    def __init__(self, scale: float, offset: float = 0.0, input_shape=None, name=None):
        super().__init__(input_shape=input_shape, name=name)
        self.scale, self.offset = float(scale), float(offset)

    def call(self, x, training=False):
        if x.dtype.kind != "f" and not x.requires_grad:   # integer images -> scaled float32
            y = Tensor._wrap(self.scale_integers(x.device, x.data), x.device)
            return y + self.offset if self.offset else y
        y = x if x.dtype == backend.numpy.float32 else ops.astype(x, "float32")
        y = y * self.scale
        return y + self.offset if self.offset else y

    def scale_integers(self, device, data, out=None):
        """``data * scale`` as float32 for an integer array (the offset is not added), into ``out``
        (float32, shaped like ``data``) when given."""
        xp = device.xp
        if device.is_gpu:                        # one fused kernel
            return xp.multiply(data, xp.float32(self.scale), out=out, dtype=xp.float32)
        if out is None:                          # NumPy: cast, then scale in place (faster than
            out = data.astype(xp.float32)        # one mixed-type multiply)
        else:
            out[...] = data
        out *= xp.float32(self.scale)
        return out

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


class Dropout(Layer):
    """Sets a fraction ``rate`` of inputs to 0 during training, scaling the rest by ``1 / (1 - rate)``.

    Inactive at inference (``training=False``). Masks are drawn on the host from
    :mod:`gpunet.random` so runs are repeatable with one seed.
    """

    def __init__(self, rate: float, input_shape=None, name=None, seed=None):
        if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must lie in [0, 1), got {rate!r}")
        super().__init__(input_shape=input_shape, name=name)
        self.rate = float(rate)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x
        keep = random.batch_uniform(x.shape) >= self.rate
        mask = x.device.asarray(keep.astype(np.float32) / np.float32(1 - self.rate))
        return ops.multiply(x, Tensor._wrap(mask, x.device))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class InputLayer(Layer):
    """Declares the sample shape; does nothing to the data."""

    def __init__(self, input_shape=None, name=None, shape=None):
        super().__init__(input_shape=shape if shape is not None else input_shape, name=name)

    def call(self, x, training=False):
        return x


def Input(shape, name=None):  # noqa: N802  (Keras spelling)
    """Keras' ``Input(shape=...)``: use as the first entry of ``Sequential([...])``."""
    return InputLayer(shape=shape, name=name)
