"""``InputLayer`` and Keras' ``Input(shape=...)``: declare the shape of the samples a model takes."""
from __future__ import annotations

from .layer import NO_WORKSPACE, Layer, np


def _shape(shape, what):
    """``shape`` as a tuple of positive ints and None (an int alone is a 1-tuple)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0) for d in shape):
        raise ValueError(f"`{what}` must be a tuple of positive integers or None, got {shape!r}")
    return tuple(None if d is None else int(d) for d in shape)


class InputLayer(Layer):
    """Declares the sample shape (Keras' ``InputLayer``); passes the data through unchanged, integers
    too (so uint8 images reach a ``Rescaling`` as they are).

    Args:
        shape: one sample's shape, no batch axis (``input_shape=`` is the same, without Keras'
            deprecation warning: gpunet's checkpoints use it).
        batch_size: an optional fixed batch size (recorded in :attr:`batch_shape`).
        dtype: the input dtype name (default ``'float32'``); recorded only.
        batch_shape: the shape with the batch axis, instead of ``shape`` and ``batch_size``.
        sparse, ragged, input_tensor, optional: Keras' arguments for symbolic inputs, which gpunet
            does not have: only their defaults are accepted.
    """

    accepts_integers = True
    replays_on_host = True

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, ragged=None, batch_shape=None,
                 input_tensor=None, optional=False, name=None, input_shape=None, batch_input_shape=None, **kwargs):
        shape = input_shape if shape is None else shape
        batch_shape = batch_input_shape if batch_shape is None else batch_shape
        if input_tensor is not None:
            raise ValueError("Argument `input_tensor` must be a KerasTensor; gpunet has no symbolic tensors "
                             f"(got {type(input_tensor).__name__}): pass shape=... instead")
        if shape is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `shape` and `batch_shape` at the same time.")
        if batch_size is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `batch_size` and `batch_shape` at the same time.")
        if shape is None and batch_shape is None:
            raise ValueError("You must pass a `shape` argument.")
        for flag, value in (("sparse", sparse), ("ragged", ragged), ("optional", optional)):
            if value:
                raise ValueError(f"`{flag}=True` is not supported with the gpunet backend")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size <= 0):
            raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}")
        if shape is not None:
            batch_shape = (None if batch_size is None else int(batch_size),) + _shape(shape, "shape")
        else:
            batch_shape = _shape(batch_shape, "batch_shape")
            if not batch_shape:
                raise ValueError("`batch_shape` needs a batch axis, got ()")
        super().__init__(name=name, **kwargs)
        self.input_shape = batch_shape[1:]
        self.batch_shape = batch_shape
        self.dtype = "float32" if dtype is None else np.dtype(dtype).name
        self.sparse = self.ragged = self.optional = False

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        return x, None

    def backward(self, saved, gz, need_input=True):
        return gz, []

    def get_config(self):
        """Keras' keys: ``batch_shape``, ``dtype``, ``sparse``, ``ragged``, ``name``, ``optional``."""
        return {"batch_shape": self.batch_shape, "dtype": self.dtype, "sparse": False, "ragged": False,
                "name": self.name, "optional": False}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for key in ("batch_shape", "batch_input_shape", "shape"):
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        return super().from_config(config)


def Input(shape=None, batch_size=None, dtype=None, sparse=None, ragged=None, batch_shape=None,  # noqa: N802
          name=None, tensor=None, optional=False):
    """Keras' ``Input(shape=...)``: here an :class:`InputLayer` (gpunet has no symbolic tensors), to use as
    the first entry of ``Sequential([...])``."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse, ragged=ragged,
                      batch_shape=batch_shape, input_tensor=tensor, optional=optional, name=name)
