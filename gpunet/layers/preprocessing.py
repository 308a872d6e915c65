"""``Rescaling``: ``x * scale + offset`` in float32, taking integer images directly."""
from __future__ import annotations

from ..kernels import cuda
from .layer import NO_WORKSPACE, Layer


class Rescaling(Layer):
    """``x * scale + offset``, computed in float32 (e.g. ``Rescaling(1 / 255)`` for uint8 images).

    Takes integer data as it is, so a dataset can stay uint8 (4x smaller) on the device and be
    converted batch by batch: on a GPU in one fused multiply; on the CPU cast, then scaled in place.
    """

    accepts_integers = True

    def __init__(self, scale: float, offset: float = 0.0, input_shape=None, name=None):
        super().__init__(input_shape=input_shape, name=name)
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        if x.dtype.kind == "f":
            y = (x if x.dtype == "float32" else x.astype("float32")) * self.scale
        elif cuda.is_gpu(xp):
            y = xp.multiply(x, xp.float32(self.scale), out=ws.array("y", x.shape), dtype=xp.float32)
        else:                                    # NumPy: cast, then scale in place (faster than one
            y = ws.array("y", x.shape)     # mixed-type multiply)
            if y is None:
                y = x.astype(xp.float32)
            else:
                y[...] = x
            y *= xp.float32(self.scale)
        if self.offset:
            y = y + self.offset
        return y, x.dtype

    def backward(self, saved, gz, need_input=True):
        return ((gz * self.scale).astype(saved, copy=False) if need_input and saved.kind == "f" else None), []

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}
