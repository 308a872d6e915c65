"""``Rescaling``: ``x * scale + offset`` in float32, taking integer images directly."""
from __future__ import annotations

from ..kernels import cuda, rescale
from .layer import NO_WORKSPACE, Layer, np


def _factor(value, what):
    """A scale or offset: a float, or (Keras' per-channel form) a float32 vector for the last axis.
    Takes numbers, NumPy values, lists and Keras' serialized arrays ``{'class_name': '__numpy__', ...}``;
    TypeError for anything else (a string, None), ValueError for NaN or infinite values."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        value = value["config"].get("value") if isinstance(value.get("config"), dict) else None
    problem = TypeError(f"Rescaling {what} must be a number or a 1-D list of numbers (one per channel), got "
                        f"{type(value).__name__} {value!r:.60}")
    if value is None or isinstance(value, (str, bytes, dict)):
        raise problem
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise problem from None
    if not np.isfinite(arr).all():
        raise ValueError(f"Rescaling {what} must be finite, got {value!r}; e.g. Rescaling(1 / 255) for images "
                         "of 0..255")
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"Rescaling {what} must be a number or a 1-D list (one value per channel), got {value!r}")
    return arr.astype(np.float32)


class Rescaling(Layer):
    """``x * scale + offset``, computed in float32 (e.g. ``Rescaling(1 / 255)`` for uint8 images).

    Takes integer data as it is, so a dataset can stay uint8 (4x smaller) on the device and be
    converted batch by batch: on a GPU in one fused multiply; on the CPU cast, then scaled in place.
    ``scale`` and ``offset`` may also be vectors, one value per channel of the last axis.
    """

    accepts_integers = True
    replays_on_host = True
    supports_masking = True

    def __init__(self, scale: float, offset: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = _factor(scale, "scale"), _factor(offset, "offset")
        self._on_device = {}            # vector factors as arrays of each array module, made once

    def _value(self, xp, factor):
        if isinstance(factor, float):
            return xp.float32(factor)
        key = (id(xp), id(factor))
        if key not in self._on_device:
            self._on_device[key] = xp.asarray(factor)
        return self._on_device[key]

    def forward(self, xp, x, training=False, ws=NO_WORKSPACE):
        scale = self.scale if isinstance(self.scale, float) else self._value(xp, self.scale)
        if x.dtype.kind == "f":
            y = (x if x.dtype == "float32" else x.astype("float32")) * scale
        elif cuda.is_gpu(xp):
            y = xp.multiply(x, self._value(xp, self.scale), out=ws.array("y", x.shape), dtype=xp.float32)
        else:                                    # NumPy: cast, then scale in place (faster than one
            y = ws.array("y", x.shape)     # mixed-type multiply), into the workspace when there is one
            y = xp.empty(x.shape, dtype=xp.float32) if y is None else y
            offset = self.offset if isinstance(self.offset, float) else self._value(xp, self.offset)
            if xp.broadcast_shapes(x.shape, xp.shape(scale), xp.shape(offset)) == x.shape:
                rescale.cast_scale(x, y, scale, offset)      # (recorded for fit's step replays)
                return y, (xp, x.dtype)
            y[...] = x                           # factors that widen the batch's shape (rare): not in place
            y = y * scale
        if not isinstance(self.offset, float):
            y = y + self._value(xp, self.offset)
        elif self.offset:
            y = y + self.offset
        return y, (xp, x.dtype)

    def backward(self, saved, gz, need_input=True):
        xp, dtype = saved
        if not need_input or dtype.kind != "f":
            return None, []
        scale = self.scale if isinstance(self.scale, float) else self._value(xp, self.scale)
        return (gz * scale).astype(dtype, copy=False), []

    def get_config(self):
        as_json = (lambda v: v if isinstance(v, float) else [float(e) for e in v])
        return {**super().get_config(), "scale": as_json(self.scale), "offset": as_json(self.offset)}
