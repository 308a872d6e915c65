"""``Sequential``: a linear stack of layers — structure, weights, config, summary — trained by the
Keras training API it inherits from :class:`gpunet.trainers.Trainer`.

Example (the chapter's listings 2.2–2.5, with ``keras`` replaced by ``gpunet``):
    >>> from gpunet import models, layers
    >>> from gpunet.utils import to_categorical
    >>> network = models.Sequential()
    >>> network.add(layers.Dense(512, activation='relu', input_shape=(28 * 28,)))
    >>> network.add(layers.Dense(10, activation='softmax'))
    >>> network.compile(optimizer='rmsprop', loss='categorical_crossentropy', metrics=['accuracy'])
    >>> x = gpunet.backend.numpy.random.default_rng(0).random((256, 784), dtype='float32')
    >>> y = to_categorical(gpunet.backend.numpy.arange(256) % 10)
    >>> history = network.fit(x, y, epochs=1, batch_size=128, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    >>> test_loss, test_acc = network.evaluate(x, y, verbose=0)
"""
from __future__ import annotations

from . import backend, layers as _layers, saving
from .layers import Layer, assign_weights
from .tensor import Tensor
from .trainers import Trainer

np = backend.numpy

__all__ = ["Sequential", "load_model"]

MEGABYTE = 2 ** 20


class LayerTypeError(TypeError, ValueError):
    """Something that is not a layer was given to ``Sequential.add`` (a TypeError, and Keras' ValueError)."""
SUMMARY_WIDTH = 65


class Sequential(Trainer):
    """A linear stack of layers.

    Args:
        layers: optional list of layers to add.
        device: where weights live and training runs (``'cpu'``, ``'gpu'``, ``'gpu:1'`` ...;
            default: :func:`gpunet.get_default_device` at construction).
        name: the model's name (shown by :meth:`summary`).
    """

    def __init__(self, layers=None, device=None, name: str | None = None, trainable: bool = True):
        super().__init__()
        self.device = backend.device(device)
        self.name = name or "sequential"
        self._layers: list[Layer] = []   # as added, an InputLayer included
        self.built = False
        self.build_input_shape = None    # the input shape (batch axis first) the model was built for
        self._trainable = bool(trainable)
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        """The model's layers, in order (an ``InputLayer``/``Input`` only declares the shape: not listed, as in Keras)."""
        return [layer for layer in self._layers if not isinstance(layer, _layers.InputLayer)]

    @layers.setter
    def layers(self, value):
        raise AttributeError("`model.layers` cannot be assigned. Use `add()` and `pop()` to change the layers")

    # ------------------------------------------------------------------ structure
    def add(self, layer: Layer) -> None:
        """Append a layer; a first layer with ``input_shape`` builds the model right away."""
        if not isinstance(layer, Layer):
            raise LayerTypeError(f"Only instances of gpunet.layers.Layer can be added to a Sequential model "
                                 f"(e.g. layers.Dense(...)), got {type(layer).__name__}")
        if any(layer is other for other in self._layers):
            raise ValueError(f"layer {layer.name!r} is already in this model")
        if any(layer.name == other.name for other in self._layers):
            raise ValueError(f"All layers added to a Sequential model should have unique names: {layer.name!r} is "
                             "already used; pass name=... to one of them")
        if layer.built and layer.weights and layer.device != self.device:
            raise ValueError(f"layer {layer.name!r} lives on {layer.device} but the model is on {self.device}")
        if isinstance(layer, _layers.InputLayer) and self._layers:
            raise ValueError(f"Sequential model {self.name!r} has already been configured to use an input: an "
                             f"InputLayer ({layer.name!r}) can only be its first layer")
        self._layers.append(layer)
        if self.built:
            layer.maybe_build(self._layers[-2].output_shape if len(self._layers) > 1 else self.build_input_shape,
                              self.device)
        elif len(self._layers) == 1 and layer.input_shape is not None:
            self.build((None,) + layer.input_shape)

    def pop(self) -> Layer:
        """Remove and return the last layer (never the InputLayer)."""
        if not self.layers:
            raise IndexError("pop from a Sequential model with no layers")
        layer = self._layers.pop()
        if not self.layers:
            self.built = False
        return layer

    def build(self, input_shape) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (batch axis first)."""
        shape = tuple(input_shape)
        declared = self.sample_shape()
        if declared is not None and tuple(shape[1:]) != declared:
            raise ValueError(f"Sequential model {self.name!r} has already been configured to use input shape "
                             f"{(None,) + declared}; cannot build it for {shape}")
        self.build_input_shape = shape
        for layer in self._layers:
            layer.maybe_build(shape, self.device)
            shape = layer.output_shape
        self.built = True

    @property
    def input_shape(self) -> tuple:
        """The input shape, batch axis first (``None``): known once built or declared by the first layer."""
        if self.built and self.build_input_shape is not None:
            return tuple(self.build_input_shape)
        sample = self.sample_shape()
        if sample is None:
            raise AttributeError(f"model {self.name!r} has no input shape yet: give the first layer input_shape=... "
                                 "(or start with layers.Input(shape=...)), or call build/fit/predict")
        return (None,) + sample

    @property
    def output_shape(self) -> tuple:
        """The output shape, batch axis first."""
        return self.compute_output_shape(self.input_shape)

    def compute_output_shape(self, input_shape) -> tuple:
        """The output shape for inputs of ``input_shape`` (batch axis first), layer by layer."""
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    @property
    def trainable(self) -> bool:
        """False freezes every layer (their weights leave ``trainable_weights``), as in Keras."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        self._trainable = bool(value)
        for layer in self._layers:
            layer.trainable = bool(value)

    def sample_shape(self):
        """The shape of one input sample the model expects (no batch axis), or None while unknown."""
        first = self._layers[0] if self._layers else None
        if first is not None and first.input_shape is not None:
            return tuple(first.input_shape)
        if self.built and self.build_input_shape is not None and None not in self.build_input_shape[1:]:
            return tuple(self.build_input_shape[1:])
        return None

    # -------------------------------------------------------------------- forward
    def call(self, x: Tensor, training: bool = False, final_activation: bool = True) -> Tensor:
        """The layers on the Tensor ``x``; ``final_activation=False`` stops before the last layer's
        activation (its logits: the trainer computes some losses on them)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            layer.maybe_build(x.shape, self.device)
            x = layer.prepare_input(x)
            if i == last and not final_activation and layer.output_activation() is not None:
                x = layer.call_without_activation(x, training=training)
            else:
                x = layer.call(x, training=training)
        return x

    def __call__(self, x, training: bool = False) -> Tensor:
        """Run the layers on ``x`` (a Tensor or array); differentiable under a GradientTape."""
        if not self.layers:
            raise ValueError(f"Sequential model {self.name!r} has no layers: add some with model.add(...) first")
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x), device=self.device)
        if not self.built:
            self.build((None,) + x.shape[1:])
        return self.call(x, training)

    # -------------------------------------------------------------------- weights
    @property
    def weights(self) -> list[Tensor]:
        """Every weight, layer by layer (kernel before bias)."""
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self) -> list[Tensor]:
        """The weights training changes: those of the trainable layers (none when the model is frozen)."""
        return [w for layer in self.layers for w in layer.trainable_weights] if self._trainable else []

    @property
    def non_trainable_weights(self) -> list[Tensor]:
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self) -> list:
        """Host NumPy copies of all weights, layer by layer."""
        return [w.numpy() for w in self.weights]

    def set_weights(self, values) -> None:
        """Replace all weights with host arrays (counts, shapes and dtypes checked for all before any change)."""
        assign_weights(self.weights, values, f"model {self.name!r}")

    # ------------------------------------------------------------------- describe
    def summary(self, print_fn=print) -> None:
        """Print a table of layers, output shapes and parameter counts."""
        names = [f"{layer.name} ({type(layer).__name__})" for layer in self.layers]
        shapes = [str(layer.output_shape) if layer.built else "(unbuilt)" for layer in self.layers]
        w1 = max([28] + [len(n) + 2 for n in names])          # columns widen for long names and shapes
        w2 = max([26] + [len(t) + 2 for t in shapes])
        width = SUMMARY_WIDTH + (w1 - 28) + (w2 - 26)
        rule, thick = "_" * width, "=" * width
        lines = [f'Model: "{self.name}"', rule, f" {'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #'}", thick]
        for i, (layer, name, shape) in enumerate(zip(self.layers, names, shapes)):
            lines.append(f" {name:<{w1}}{shape:<{w2}}{layer.count_params():,}")
            if i == len(self.layers) - 1:
                lines.append(thick)
        total = self.count_params()
        trainable = sum(w.size for w in self.trainable_weights)
        float32_bytes = 4
        lines += [f"Total params: {total:,} ({total * float32_bytes / MEGABYTE:.2f} MB)",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {total - trainable:,}", rule]
        print_fn("\n".join(lines))

    def get_config(self) -> dict:
        """``{'name', 'built_input_shape', 'layers'}``: what :meth:`from_config` rebuilds the model from."""
        return {"name": self.name, "built_input_shape": self.build_input_shape, "trainable": self._trainable,
                "layers": [_layers.serialize(layer) for layer in self._layers]}

    @classmethod
    def from_config(cls, config: dict, device=None) -> "Sequential":
        model = cls(device=device, name=config["name"])
        for spec in config["layers"]:
            model.add(_layers.deserialize(spec))
        if not model.built and config["built_input_shape"] is not None:
            model.build(tuple(config["built_input_shape"]))
        if not config.get("trainable", True):
            model.trainable = False
        return model

    @classmethod
    def plan_weights(cls, config: dict) -> list:
        """``[(name, shape)]`` of the weights the model ``config`` describes would have once built, in
        :attr:`weights` order, computed without building it (nothing allocated: :meth:`Layer.planned_weights`);
        ``[]`` for a model that would not be built. Raises what the layers' ``from_config`` raise."""
        specs = [_layers.deserialize(spec) for spec in config["layers"]]
        shape = config["built_input_shape"]
        if specs and specs[0].input_shape is not None:
            shape = (None,) + tuple(specs[0].input_shape)
        if shape is None:
            return []
        shape, planned = tuple(shape), []
        for layer in specs:
            planned += layer.planned_weights(shape)
            shape = tuple(layer.compute_output_shape(shape))
        return planned

    def __reduce__(self):
        """Pickling writes the model as a checkpoint in memory (architecture, weights, compile state,
        optimizer slots); unpickling rebuilds it on the same device, leaving gpunet's RNG alone."""
        return _unpickle, (saving.to_bytes(self), str(self.device))

    # --------------------------------------------------------------- save / load
    def save(self, filepath) -> None:
        """Write a full training checkpoint (architecture, weights, optimizer state, epochs
        completed, RNG state) to ``filepath`` atomically; read it with :func:`load_model`.
        See :mod:`gpunet.saving`."""
        saving.save_model(self, filepath)

    def save_weights(self, filepath) -> None:
        """Write all weights to ``filepath`` (NumPy ``.npz``), atomically: a crash leaves the
        previous file intact."""
        saving.save_weights(self, filepath)

    def load_weights(self, filepath) -> None:
        """Load weights saved by :meth:`save_weights` (or the weights of a :meth:`save` checkpoint);
        the model is unchanged if anything does not match."""
        saving.load_weights(self, filepath)


def load_model(filepath, device=None, compile: bool = True, restore_rng: bool = True) -> Sequential:  # noqa: A002
    """Rebuild a model saved by ``model.save(filepath)``: architecture, weights, optimizer
    state, ``model.epochs_completed`` and (``restore_rng=True``) the state of
    :mod:`gpunet.random`, so that ``fit(..., initial_epoch=model.epochs_completed)``
    continues the interrupted run exactly.

    Args:
        device: where to put the model (default: the default device); a checkpoint written
            on a GPU loads on the CPU and vice versa.
        compile: also restore the optimizer, loss and metrics (when the model was compiled).

    Raises FileNotFoundError, or :class:`gpunet.errors.CheckpointError` (a ValueError naming the file
    and the problem) for anything that is not a complete, consistent checkpoint: everything is checked
    before the model is built (see :mod:`gpunet.saving`), and gpunet's RNG changes only on success.
    """
    return saving.load_checkpoint(filepath, Sequential, device=device, compile=compile, restore_rng=restore_rng)


def _unpickle(data: bytes, device: str) -> Sequential:
    return saving.from_bytes(data, Sequential, device=device)
