"""The layer base class: weights, building, and the array-level forward/backward protocol.

A layer is ``build(input_shape)`` (create weights) plus its math on arrays of its device:

* ``forward(xp, x, training, ws) -> (z, saved)`` — the layer's output *before* its
  activation, and whatever ``backward`` needs (``ws.array(key, shape)`` lends an array to write
  a result into, reused from step to step in the tapeless step; None on the tape);
* ``backward(saved, gz, need_input=True) -> (gx, weight_grads)`` — from the gradient of ``z``,
  the gradient of ``x`` (None when not needed) and one gradient per *trainable* weight, in
  :attr:`trainable_weights` order (every weight, or none for a frozen layer).

``layer.activation`` (Keras' attribute) follows ``forward``: ``call`` records forward and backward
on the tape as one op (:meth:`Layer.call_without_activation`), then applies the activation, so a
layer with these two methods works on the tape and in the tapeless training step alike, and the
trainer can stop before the last activation to compute the loss on its logits. A layer that
overrides ``call`` (with Tensor ops, as in Keras) is the whole of its math, activation included:
it is trained with the tape, and nothing is applied after its ``call``.

Building happens once, however it is triggered: ``layer.build(shape)`` called directly (as in
Keras), :meth:`Layer.maybe_build`, or the first call. Every ``build`` (a subclass's too) is
wrapped to mark the layer built, place it on a device and record :attr:`Layer.output_shape`.

``layer.trainable = False`` freezes a layer (Keras semantics): its weights move from
``trainable_weights`` to ``non_trainable_weights``, ``backward`` computes no weight gradients, and
on the tape its weights are not inputs of its op.

Keras' API around this: ``compute_output_shape`` on every layer, ``get_config``/``from_config``
with Keras' keys (configs of earlier gpunet versions, with fewer keys, still load).
"""
from __future__ import annotations

import re

import functools

from .. import activations, backend, initializers
from ..errors import ShapeError
from ..tensor import Tensor, apply

np = backend.numpy

_counts: dict = {}


def _auto_name(prefix: str) -> str:
    n = _counts.get(prefix, 0)
    _counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def snake_case(name: str) -> str:
    """``'GlorotUniform'`` -> ``'glorot_uniform'``, ``'Conv2D'`` -> ``'conv2d'``,
    ``'MaxPooling2D'`` -> ``'max_pooling2d'`` (Keras' ``to_snake_case`` rule)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


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

    def owns(self, array) -> bool:      # is ``array`` one this workspace lent (not a copy or a view)?
        return any(array is a for a in self._arrays.values())


class NoWorkspace:
    """The taped path's workspace: every ``array`` is None, so each op allocates a fresh result."""

    @staticmethod
    def array(key, shape, dtype="float32"):
        return None


NO_WORKSPACE = NoWorkspace()


def assign_weights(weights, values, owner: str) -> None:
    """Write host ``values`` into the Tensors ``weights``: every count, shape, dtype (numbers: bool,
    integers or floats, converted to the weight's dtype) and value (finite after the conversion) is
    checked, and every array converted, before the first weight changes. Raises ValueError (count,
    non-finite values), ShapeError, TypeError (not numbers)."""
    values = list(values)
    if len(values) != len(weights):
        raise ValueError(f"{owner} has {len(weights)} weight arrays, got {len(values)}")
    converted = [_converted(w, v, owner) for w, v in zip(weights, values)]
    for w, a in zip(weights, converted):
        w.data[...] = a


def _converted(w, value, owner):
    """``value`` as an array of ``w``'s dtype on ``w``'s device, checked (see :func:`assign_weights`)."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{owner}: weight {w.name!r} needs an array of numbers, got {type(value).__name__} "
                        f"({exc})") from None
    if a.shape != w.shape:
        raise ShapeError(f"{owner}: weight {w.name!r} expects shape {w.shape}, got {a.shape}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: weight {w.name!r} needs numbers (bool, integers or floats), got dtype {a.dtype}")
    try:
        out = w.device.asarray(a, dtype=w.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{owner}: weight {w.name!r} cannot take values of dtype {a.dtype} ({exc})") from None
    xp = w.device.xp
    if out.dtype.kind == "f" and not bool(xp.isfinite(out).all()):
        bad = int(xp.argmin(xp.isfinite(out).reshape(-1)))
        raise ValueError(f"{owner}: weight {w.name!r} holds a non-finite value ({a.reshape(-1)[bad]!r} at flat "
                         f"index {bad}, as {w.dtype}); refusing NaN or infinite weights: nothing was changed")
    return out


def standardize_dtype(dtype) -> str:
    """``'float32'``, the dtype gpunet layers compute in, from ``None``, ``'float32'`` (or the NumPy
    type) or Keras' serialized policy ``{'class_name': 'DTypePolicy', 'config': {'name': 'float32'}}``."""
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    try:
        ok = name is None or np.dtype(name) == np.float32
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"gpunet layers compute in float32; dtype={dtype!r} is not supported")
    return "float32"


def _builds_once(build):
    """Wrap a layer's ``build`` so that, however it is called, it builds once: it places the layer on
    a device (the default one when called directly), marks it built and records its output shape.
    A second call is a no-op; ``super().build(...)`` inside a subclass's build runs as it is."""
    @functools.wraps(build)
    def wrapper(self, input_shape=None, *args, **kwargs):
        if self.__dict__.get("_building"):
            return build(self, input_shape, *args, **kwargs)
        if self.built:
            return None
        shape = None if input_shape is None else tuple(input_shape)
        if self.device is None:
            self.device = backend.device(None)
        before, weights = dict(self.__dict__), list(self._weights)
        self._building = True
        try:
            build(self, shape, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()               # a failed build leaves the layer as it was: no half-made weights
            self.__dict__.update(before)
            self._weights[:] = weights
            raise
        finally:
            self._building = False
        self.built = True
        self.output_shape = None if shape is None else tuple(self.compute_output_shape(shape))
        return None

    wrapper.builds_once = True
    return wrapper


class Layer:
    """Base layer. Subclasses implement :meth:`build` (optional) and either the array pair
    :meth:`forward`/:meth:`backward` or :meth:`call`.

    Args:
        input_shape: the shape of one sample (without the batch axis); lets a model build
            the layer before seeing data (the chapter's ``input_shape=(28 * 28,)``).
        name: a unique name (default: derived from the class).
        input_dim: ``input_shape=(input_dim,)``.
        trainable: False freezes the layer's weights (see :attr:`trainable`).
        dtype: ``None`` or ``'float32'`` (gpunet computes in float32; Keras' serialized float32
            policy is accepted too).
    """

    activation = None            # the output activation (gpunet.activations), applied after forward
    accepts_integers = False     # True: integer data reaches forward as it is (else float32 first)
    activation_in_place = False  # True: forward's output is the layer's own array, which backward does not
                                 # read, so the tapeless step may apply the activation in place
    fused_activations = ()       # activation names forward(..., activation=name) applies itself (with the bias)
    absorbs_relu_gradient = False  # backward(..., relu_output=y) applies the ReLU gradient of its input y too
    replays_on_host = False      # forward/backward record their CPU work (fit's step replays: step_replays.py)
    supports_masking = False     # Keras' flag, kept for code that reads it (gpunet has no masks)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        build = vars(cls).get("build")
        if build is not None and not getattr(build, "builds_once", False):
            cls.build = _builds_once(build)

    def __init__(self, input_shape=None, name: str | None = None, input_dim: int | None = None,
                 trainable: bool = True, dtype=None, **kwargs):
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}")
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if input_shape is not None:
            input_shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
            if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in input_shape):
                raise ValueError(f"input_shape must be a tuple of positive integers (one sample, no batch axis), "
                                 f"got {input_shape!r}")
            input_shape = tuple(int(d) for d in input_shape)
        if not isinstance(trainable, bool):
            raise ValueError(f"Expected `trainable` to be a boolean. Received: trainable={trainable!r}")
        self.input_shape = input_shape
        self.name = name or _auto_name(snake_case(type(self).__name__))
        self.dtype = standardize_dtype(dtype)
        self.built = False
        self.device = None
        self._trainable = trainable
        self._weights: list[Tensor] = []
        self.output_shape = None

    # -- weights -----------------------------------------------------------------
    def add_weight(self, name: str, shape, initializer) -> Tensor:
        """Create a float32 weight on this layer's device (trainable while the layer is); inside
        :meth:`planned_weights` only record its name and shape (nothing allocated)."""
        plan = self.__dict__.get("_plan")
        if plan is not None:
            plan.append((f"{self.name}/{name}", tuple(int(d) for d in shape)))
            return None
        value = initializers.get(initializer)(tuple(shape), "float32")
        w = Tensor(value, device=self.device, requires_grad=True, name=f"{self.name}/{name}")
        self._weights.append(w)
        return w

    @property
    def weights(self) -> list[Tensor]:
        """The layer's weight tensors, in creation order (kernel before bias)."""
        return list(self._weights)

    @property
    def trainable(self) -> bool:
        """Whether training changes this layer's weights (settable, as in Keras)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        self._trainable = bool(value)

    @property
    def trainable_weights(self) -> list[Tensor]:
        """The weights training changes: all of them, or none when the layer is frozen."""
        return list(self._weights) if self._trainable else []

    @property
    def non_trainable_weights(self) -> list[Tensor]:
        """The weights training leaves alone: none, or all of them when the layer is frozen."""
        return [] if self._trainable else list(self._weights)

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
        """Create weights for inputs of ``input_shape`` (batch axis first, may be None); runs once
        (see the module docstring)."""

    def compute_output_shape(self, input_shape):
        """The output shape for inputs of ``input_shape`` (batch axis first)."""
        return tuple(input_shape)

    def planned_weights(self, input_shape) -> list:
        """``[(name, shape)]`` of the weights :meth:`build` would create for ``input_shape``, found by running
        ``build`` with :meth:`add_weight` recording instead of allocating; the layer is left as it was
        (unbuilt). A checkpoint's sizes are checked this way before anything is allocated."""
        if self.built:
            return [(w.name, w.shape) for w in self._weights]
        before, weights = dict(self.__dict__), list(self._weights)
        self._plan, self._building = [], True
        try:
            self.build(tuple(input_shape))
            return self._plan
        finally:
            self.__dict__.clear()
            self.__dict__.update(before)
            self._weights[:] = weights

    def maybe_build(self, input_shape, device) -> None:
        """Build on ``device`` for ``input_shape`` unless already built."""
        if not self.built:
            self.device = backend.device(device)
            self.build(tuple(input_shape))

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

    def capture_obstacle(self) -> str | None:
        """Why a training step through this layer cannot be replayed from a CUDA graph (``fit`` with
        ``jit_compile=True`` on a GPU), or None. A layer whose :meth:`forward`/:meth:`backward` read the
        device on the host, copy host data or give the kernels values that change from step to step
        says so here (an attempt to capture it would fail, and ``fit`` then trains uncaptured)."""
        return None

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        """``(z, saved)``: the output before the activation, and what :meth:`backward` needs; ``ws``
        (a :class:`Workspace`) lends arrays to write results into."""
        raise NotImplementedError(f"{type(self).__name__} defines call() only")

    def backward(self, saved, gz, need_input=True):
        """``(gx, [one gradient per trainable weight])`` from ``gz``, the gradient of :meth:`forward`'s
        output (no weight gradients for a frozen layer)."""
        raise NotImplementedError(f"{type(self).__name__} defines call() only")

    def call(self, x: Tensor, training: bool = False) -> Tensor:
        """The layer on a Tensor (Keras' ``call``): :meth:`call_without_activation`, then the activation."""
        y = self.call_without_activation(x, training)
        act = self.activation
        return y if act is None or act is activations.linear else act(y)

    def call_without_activation(self, x: Tensor, training: bool = False) -> Tensor:
        """The layer before its activation on a Tensor: :meth:`forward`/:meth:`backward` as one taped op
        (on the input and the trainable weights: a frozen layer's weights get no gradient)."""
        return apply(self._taped_forward, (x, *self.trainable_weights), training=training)

    def _taped_forward(self, xp, x, *weights, training=False):
        z, saved = self.forward(xp, x, training)
        n = len(weights)

        def backward(g, needs):
            gx, weight_grads = self.backward(saved, g, needs[0])
            return (gx, *weight_grads[:n]) if n else (gx,)
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
        """Keras' base keys ``name``, ``trainable``, ``dtype`` (and ``input_shape`` when given)."""
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self.input_shape is not None:
            config["input_shape"] = self.input_shape
        return config

    @classmethod
    def from_config(cls, config: dict):
        """The layer ``config`` (from :meth:`get_config`, JSON lists allowed) describes, unbuilt; a
        TypeError naming the class and config when it cannot be made (as in Keras)."""
        config = dict(config)
        if config.get("input_shape") is not None:
            config["input_shape"] = tuple(config["input_shape"])
        try:
            return cls(**config)
        except Exception as exc:   # noqa: BLE001  (Keras reports every failure this way)
            raise TypeError(f"Error when deserializing class '{cls.__name__}' using config={config}.\n\n"
                            f"Exception encountered: {exc}") from exc

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


Layer.build = _builds_once(Layer.build)
