"""Gradient clipping with Keras 3's formulas (``clipnorm``, ``global_clipnorm``, ``clipvalue``).

Each function returns new arrays (the gradients given are left as they are) and works on the
arrays' own device: norms and scales stay device arrays, so on a GPU nothing waits for the
device. ``None`` entries pass through.
"""
from __future__ import annotations

from .. import backend

np = backend.numpy


def _xp(grads):
    return backend.array_module_of(next((g for g in grads if g is not None), None))


def _sum_of_squares(xp, g):
    return xp.sum(xp.square(g))


def clip_by_norm(grads, clipnorm):
    """Each gradient scaled to an L2 norm of at most ``clipnorm``: ``g * clipnorm / max(norm(g), clipnorm)``."""
    out = []
    for g in grads:
        if g is None:
            out.append(None)
            continue
        xp = backend.array_module_of(g)
        norm = xp.sqrt(_sum_of_squares(xp, g))
        out.append(g * (clipnorm / xp.maximum(norm, clipnorm)).astype(g.dtype))
    return out


def clip_by_global_norm(grads, clipnorm):
    """All gradients scaled by one factor so that their joint L2 norm is at most ``clipnorm``; as in
    Keras, a non-finite joint norm makes every gradient NaN."""
    present = [g for g in grads if g is not None]
    if not present:
        return list(grads)
    xp = _xp(present)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        norm = xp.sqrt(sum(_sum_of_squares(xp, g) for g in present))
        scale = clipnorm * xp.minimum(1.0 / norm, 1.0 / clipnorm) + (norm - norm)
        return [None if g is None else g * scale.astype(g.dtype) for g in grads]


def clip_by_value(grads, clipvalue):
    """Each gradient's entries clipped to ``[-clipvalue, clipvalue]``."""
    return [None if g is None else backend.array_module_of(g).clip(g, -clipvalue, clipvalue) for g in grads]
