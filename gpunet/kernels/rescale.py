"""``Rescaling`` of uint8 images in one pass (``rescale.cu``, built for the CPU; a NumPy twin)."""
from __future__ import annotations

from . import cuda, recording

SOURCE = cuda.Source(__file__, "rescale.cu")


def cast_scale(x, y, scale, offset) -> None:
    """``y = float32(x) * scale + offset`` into float32 ``y`` (NumPy arrays of ``x``'s shape; ``scale`` and
    ``offset`` floats or per-channel vectors; ``+ offset`` only where it is not 0.0). uint8 ``x`` with float
    factors: the kernel (one pass); otherwise, or with the CPU kernels off, the twin: cast, then scale and
    shift in place. Either way the call is recorded for fit's step replays."""
    if x.dtype == "uint8" and isinstance(scale, float) and isinstance(offset, float) and y.flags.c_contiguous \
            and x.flags.c_contiguous and SOURCE.launch("rescale_u8", x.size, (
                x, y, cuda.f32(scale), cuda.f32(offset), cuda.i32(offset != 0.0), cuda.i64(x.size))):
        return
    cast_scale_twin(x, y, scale, offset)
    recording.record(cast_scale_twin, x, y, scale, offset)


def cast_scale_twin(x, y, scale, offset) -> None:
    """The twin of ``rescale_u8`` (any integer dtype and per-channel factors too)."""
    y[...] = x
    y *= scale
    if not isinstance(offset, float) or offset:
        y += offset
