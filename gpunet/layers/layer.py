"""The layer base class: weights, building, and the array-level forward/backward protocol.

A layer is ``build(input_shape)`` (create weights) plus its math on arrays of its device:

* ``forward(xp, x, training, ws) -> (z, saved)`` — the layer's output *before* its
  activation, and whatever ``backward`` needs (``ws.array(key, shape)`` lends an array to write
  a result into, reused from step to step in the tapeless step; None on the tape);
* ``backward(saved, gz, need_input=True) -> (gx, weight_grads)`` — from the gradient of ``z``,
  the gradient of ``x`` (None when not needed) and one gradient per weight, in :attr:`weights`
  order.

``layer.activation`` (Keras' attribute) follows ``forward``: ``call`` records forward and backward
on the tape as one op (:meth:`Layer.call_without_activation`), then applies the activation, so a
layer with these two methods works on the tape and in the tapeless training step alike, and the
trainer can stop before the last activation to compute the loss on its logits. A layer that
overrides ``call`` (with Tensor ops, as in Keras) is the whole of its math, activation included:
it is trained with the tape, and nothing is applied after its ``call``.
"""
from __future__ import annotations

from .. import activations, backend, initializers
from ..errors import ShapeError
from ..tensor import Tensor, apply

np = backend.numpy

_counts: dict = {}


def _auto_name(prefix: str) -> str:
    n = _counts.get(prefix, 0)
    _counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Workspace:
    """Arrays a layer reuses from step to step in the tapeless training step, one per
    ``(key, shape, dtype)`` (the last batch of an epoch may be smaller: it gets its own)."""

    def __init__(self, xp):
        self.xp = xp
        self._arrays = {}

    def array(self, key, shape, dtype="float32"):
        shape = tuple(shape)
        arr = self._arrays.get((key, shape, dtype))
        if arr is None:
            arr = self._arrays[(key, shape, dtype)] = self.xp.empty(shape, dtype=dtype)
        return arr


class NoWorkspace:
    """The taped path's workspace: every ``array`` is None, so each op allocates a fresh result."""

    @staticmethod
    def array(key, shape, dtype="float32"):
        return None


NO_WORKSPACE = NoWorkspace()


def assign_weights(weights, values, owner: str) -> None:
    """Write host ``values`` into the Tensors ``weights``: every count, shape and dtype conversion is
    checked before the first weight changes."""
    values = list(values)
    if len(values) != len(weights):
        raise ValueError(f"{owner} has {len(weights)} weight arrays, got {len(values)}")
    converted = []
    for w, v in zip(weights, values):
        a = np.asarray(v)
        if a.shape != w.shape:
            raise ShapeError(f"{owner}: weight {w.name!r} expects shape {w.shape}, got {a.shape}")
        try:
            converted.append(w.device.asarray(a, dtype=w.dtype))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{owner}: weight {w.name!r} cannot take values of dtype {a.dtype} ({exc})") from None
    for w, a in zip(weights, converted):
        w.data[...] = a


class Layer:
    """Base layer. Subclasses implement :meth:`build` (optional) and either the array pair
    :meth:`forward`/:meth:`backward` or :meth:`call`.

    Args:
        input_shape: the shape of one sample (without the batch axis); lets a model build
            the layer before seeing data (the chapter's ``input_shape=(28 * 28,)``).
        name: a unique name (default: derived from the class).
    """

    activation = None            # the output activation (gpunet.activations), applied after forward
    accepts_integers = False     # True: integer data reaches forward as it is (else float32 first)
    activation_in_place = False  # True: forward's output is the layer's own array, which backward does not
                                 # read, so the tapeless step may apply the activation in place

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
        """Replace the weights with host arrays of the same shapes (all checked before any change)."""
        assign_weights(self._weights, values, f"layer {self.name!r}")

    def count_params(self) -> int:
        return sum(w.size for w in self._weights)

    # -- building ------------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create weights for inputs of ``input_shape`` (batch axis first, may be None)."""

    def compute_output_shape(self, input_shape):
        return input_shape

    def maybe_build(self, input_shape, device) -> None:
        """Build on ``device`` for ``input_shape`` unless already built."""
        if not self.built:
            self.device = backend.device(device)
            self.build(tuple(input_shape))
            self.built = True
            self.output_shape = self.compute_output_shape(tuple(input_shape))

    # -- computing -----------------------------------------------------------------
    @property
    def has_array_math(self) -> bool:
        """Whether :meth:`forward`/:meth:`backward` are this layer's math (so it can train tapeless): they
        are defined, and no subclass overrides :meth:`call` more specifically than them."""
        defined_forward, defined_call = (next(k for k in type(self).__mro__ if name in vars(k))
                                         for name in ("forward", "call"))
        return defined_forward is not Layer and issubclass(defined_forward, defined_call)

    def output_activation(self):
        """The activation that follows :meth:`forward`, or None: the identity, or a layer that overrides
        ``call`` (its ``call`` applies whatever it applies)."""
        act = self.activation
        return None if act is None or act is activations.linear or not self.has_array_math else act

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        """``(z, saved)``: the output before the activation, and what :meth:`backward` needs; ``ws``
        (a :class:`Workspace`) lends arrays to write results into."""
        raise NotImplementedError(f"{type(self).__name__} defines call() only")

    def backward(self, saved, gz, need_input=True):
        """``(gx, [one gradient per weight])`` from ``gz``, the gradient of :meth:`forward`'s output."""
        raise NotImplementedError(f"{type(self).__name__} defines call() only")

    def call(self, x: Tensor, training: bool = False) -> Tensor:
        """The layer on a Tensor (Keras' ``call``): :meth:`call_without_activation`, then the activation."""
        y = self.call_without_activation(x, training)
        act = self.activation
        return y if act is None or act is activations.linear else act(y)

    def call_without_activation(self, x: Tensor, training: bool = False) -> Tensor:
        """The layer before its activation on a Tensor: :meth:`forward`/:meth:`backward` as one taped op."""
        return apply(self._taped_forward, (x, *self._weights), training=training)

    def _taped_forward(self, xp, x, *weights, training=False):
        z, saved = self.forward(xp, x, training)

        def backward(g, needs):
            gx, weight_grads = self.backward(saved, g, needs[0])
            return (gx, *weight_grads)
        return z, backward

    def prepare_input(self, x):
        """``x`` (an array or Tensor) as this layer takes it: integer data as float32 unless it accepts integers."""
        if x.dtype.kind in "biu" and not self.accepts_integers:
            return x.astype("float32")
        return x

    def __call__(self, x, training: bool = False) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor(x, device=self.device)
        self.maybe_build(x.shape, x.device)
        return self.call(self.prepare_input(x), training=training)

    # -- state and config ------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-able state beyond the weights that a checkpoint keeps (e.g. a seeded generator)."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned."""

    def get_config(self) -> dict:
        return {"name": self.name, "input_shape": self.input_shape}

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"
