"""``Dropout``."""
from __future__ import annotations

import numbers

from .. import random
from ..errors import ShapeError
from ..kernels import philox
from .layer import NO_WORKSPACE, Layer, np


def _noise_shape(noise_shape):
    """Keras' validation of ``noise_shape``: None, or a tuple of positive ints and None."""
    if noise_shape is None:
        return None
    if isinstance(noise_shape, str):
        raise ValueError("Invalid value received for argument `noise_shape`. Expected a tuple or list of integers. "
                         f"Received: noise_shape={noise_shape}")
    try:
        noise_shape = tuple(noise_shape)
    except TypeError:
        raise ValueError("Invalid value received for argument `noise_shape`. Expected an iterable of integers "
                         f"(e.g., a tuple or list). Received: noise_shape={noise_shape}") from None
    for i, dim in enumerate(noise_shape):
        if dim is None:
            continue
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
            raise ValueError("Invalid value received for argument `noise_shape`. Expected all elements to be "
                             f"integers or None. Received element at index {i}: {dim} (type: {type(dim).__name__})")
        if dim <= 0:
            raise ValueError("Invalid value received for argument `noise_shape`. Expected all dimensions to be "
                             f"positive integers or None. Received negative or zero value at index {i}: {dim}")
    return tuple(None if d is None else int(d) for d in noise_shape)


class Dropout(Layer):
    """Sets a fraction ``rate`` of inputs to 0 during training, scaling the rest by ``1 / (1 - rate)``.

    Inactive at inference (``training=False``). ``noise_shape`` (Keras' argument) is the shape of
    the mask, broadcast over the input: ``(None, 1, None)`` drops the same features at every
    step of a ``(batch, steps, features)`` input; None takes the input's size. Masks come from a
    Philox4x32-10 stream (:mod:`gpunet.kernels.philox`): gpunet's (:func:`gpunet.random.dropout_stream`,
    reseeded by :func:`gpunet.random.seed`) or, with ``seed``, the layer's own. They are drawn where the
    layer computes, with the same bits on every device (on a GPU by a kernel: no host work, and the
    stream's counter advances on the device); a checkpoint keeps the layer stream's state.
    """

    supports_masking = True

    def __init__(self, rate: float, noise_shape=None, seed=None, **kwargs):
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0 <= rate < 1:
            raise ValueError("Invalid value received for argument `rate`. Expected a float value between 0 and 1. "
                             f"Dropout rate must lie in [0, 1) (1 would drop everything); received: rate={rate!r}")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"Dropout seed must be a non-negative integer or None, got {seed!r}")
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.noise_shape = _noise_shape(noise_shape)
        self.seed = None if seed is None else int(seed)
        self._stream = None if seed is None else random.PhiloxStream(self.seed)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x                  # inference: the input itself
        return super().call(x, training)

    def mask_shape(self, shape):
        """The shape of the mask for inputs of ``shape``: ``noise_shape`` with None filled in."""
        if self.noise_shape is None:
            return tuple(shape)
        if len(self.noise_shape) != len(shape) or any(d not in (None, 1, n) for d, n in zip(self.noise_shape, shape)):
            raise ShapeError(f"Dropout layer {self.name!r}: noise_shape {self.noise_shape} does not broadcast to "
                             f"inputs of shape {tuple(shape)}")
        return tuple(n if d is None else d for d, n in zip(self.noise_shape, shape))

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        if not training or self.rate == 0:
            return x, None
        shape = self.mask_shape(x.shape)
        stream = self._stream or random.dropout_stream()
        y_dtype = np.promote_types(x.dtype, np.float32)
        if stream.legacy is not None:
            return self._legacy_forward(xp, x, shape, stream.legacy, ws, y_dtype)
        offset, rows = 0, shape[0]
        shard = random.current_shard()
        if shard is not None and shape[0] == x.shape[0] and (self.noise_shape or (None,))[0] != 1:
            rows, offset = shard[0], shard[1]     # a mask row per sample: this rank's rows of the global draw
        same = shape == tuple(x.shape)
        y, mask = philox.dropout_mask(xp, stream.state_for(xp, x), shape, self.rate, offset, rows,
                                      x=x if same else None, y=ws.array("y", x.shape, y_dtype) if same else None,
                                      mask=ws.array("mask", shape))
        if not same:                              # the mask broadcast over the input
            y = xp.multiply(x, mask, out=ws.array("y", x.shape, y_dtype))
        return y, (xp, mask, ws)

    def capture_obstacle(self):
        stream = self._stream or random.dropout_stream()
        if self.rate and stream.legacy is not None:
            return "its masks come from the host PCG64 generator of an older checkpoint (gpunet.random.seed ends that)"
        return None

    def _legacy_forward(self, xp, x, shape, generator, ws, y_dtype):
        """Masks from a PCG64 generator on the host, as gpunet drew them before Philox (an old checkpoint's
        state was restored: see :class:`gpunet.random.PhiloxStream`)."""
        if shape[0] == x.shape[0]:        # a mask row per sample (drawn for the global batch when distributed)
            draw = random.batch_uniform(shape, generator)
        else:                             # one mask row broadcast over the batch
            draw = generator.random(shape, dtype=np.float32)
        mask = (draw >= self.rate).astype(np.float32) / np.float32(1 - self.rate)
        mask = xp.asarray(mask) if self.device is None else self.device.asarray(mask)
        return xp.multiply(x, mask, out=ws.array("y", x.shape, y_dtype)), (xp, mask, ws)

    def backward(self, saved, gz, need_input=True):
        if saved is None:
            return gz, []
        xp, mask, ws = saved
        return xp.multiply(gz, mask, out=ws.array("gx", gz.shape, np.promote_types(gz.dtype, mask.dtype))), []

    def get_state(self):
        if self._stream is None:
            return {}
        if self._stream.legacy is not None:
            return {"generator": self._stream.legacy.bit_generator.state}
        return {"philox": self._stream.get_state()}

    def set_state(self, state):
        """Restore :meth:`get_state`'s dict; an old checkpoint's ``'generator'`` (PCG64) state keeps drawing
        the masks that version drew."""
        if self._stream is None:
            return
        if "philox" in state:
            self._stream.set_state(state["philox"])
        elif "generator" in state:
            legacy = np.random.default_rng()
            legacy.bit_generator.state = state["generator"]
            self._stream.legacy = legacy

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}
