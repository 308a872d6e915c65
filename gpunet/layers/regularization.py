"""``Dropout``."""
from __future__ import annotations

from .. import random
from .layer import NO_WORKSPACE, Layer, np


class Dropout(Layer):
    """Sets a fraction ``rate`` of inputs to 0 during training, scaling the rest by ``1 / (1 - rate)``.

    Inactive at inference (``training=False``). Masks are drawn on the host from
    :mod:`gpunet.random` (or, with ``seed``, from the layer's own generator) so runs are
    repeatable with one seed; a checkpoint keeps the layer generator's state.
    """

    def __init__(self, rate: float, input_shape=None, name=None, seed=None):
        if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must lie in [0, 1), got {rate!r}")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"Dropout seed must be a non-negative integer or None, got {seed!r}")
        super().__init__(input_shape=input_shape, name=name)
        self.rate = float(rate)
        self.seed = None if seed is None else int(seed)
        self._generator = None if seed is None else np.random.default_rng(self.seed)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x                  # inference: the input itself
        return super().call(x, training)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        if not training or self.rate == 0:
            return x, None
        keep = random.batch_uniform(x.shape, self._generator) >= self.rate
        mask = self.device.asarray(keep.astype(np.float32) / np.float32(1 - self.rate))
        return xp.multiply(x, mask, out=ws.array("y", x.shape, np.promote_types(x.dtype, mask.dtype))), mask

    def backward(self, saved, gz, need_input=True):
        return (gz if saved is None else gz * saved), []

    def get_state(self):
        return {} if self._generator is None else {"generator": self._generator.bit_generator.state}

    def set_state(self, state):
        if self._generator is not None and "generator" in state:
            self._generator.bit_generator.state = state["generator"]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
