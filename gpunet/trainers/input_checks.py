"""Checks of what ``fit``/``evaluate``/``predict`` are given, before anything changes.

Each error names the argument, the offending value or shape, and the fix.
"""
from __future__ import annotations

import math

from .. import backend, losses
from ..errors import ShapeError
from ..tensor import Tensor

np = backend.numpy

DEFAULT_BATCH_SIZE = 32      # Keras' default for fit, evaluate and predict


def check_int(name, value, minimum) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def batch_size_or_default(batch_size) -> int:
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    check_int("batch_size", batch_size, 1)
    return batch_size


def check_verbose(verbose) -> int:
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    return 1 if verbose == "auto" else verbose


def as_array(a, name, where):
    """``a`` as a host NumPy array (a Tensor's values, a list, an array), or a clear error."""
    if isinstance(a, Tensor):
        return a.numpy()
    if a is None:
        raise ValueError(f"{where}: {name} is missing")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{where}: {name} cannot be turned into a numeric array ({exc})") from None
    if arr.dtype == object:
        raise TypeError(f"{where}: {name} has dtype object (ragged or mixed data); pass a numeric array, "
                        "e.g. np.asarray(data, dtype='float32')")
    return arr


def all_finite(a) -> bool:
    """No NaN or inf in the float array ``a``: min and max propagate both, and unlike
    ``isfinite(a).all()`` they allocate no array as large as the data."""
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def check_data(model, x, y=None, where="fit"):
    """Validate and convert ``x`` (and ``y``) for ``model``; returns host arrays."""
    x = as_array(x, "x", where)
    if x.ndim == 0:
        raise ValueError(f"{where}: x is a single number; pass an array of samples, shape (n, features)")
    if len(x) == 0:
        raise ValueError(f"{where}: x is empty (shape {x.shape}); pass at least one sample")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{where}: x must hold numbers, got dtype {x.dtype}; convert it with x.astype('float32')")
    if x.dtype.kind == "f" and not all_finite(x):
        raise ValueError(f"{where}: x contains NaN or infinite values; clean or impute the data first")
    expected = model.sample_shape()
    if expected is not None and tuple(x.shape[1:]) != expected:
        hint = (f"reshape the data, e.g. x.reshape((len(x), {math.prod(expected)})), or start the model with "
                "layers.Flatten()") if len(expected) == 1 else "reshape the data to match"
        raise ShapeError(f"{where}: layer {model.layers[0].name!r} expects samples of shape {expected}, got "
                         f"{tuple(x.shape[1:])} (x has shape {tuple(x.shape)}); {hint}")
    if y is None:
        return x, None
    y = as_array(y, "y", where)
    if y.ndim == 0:
        raise ValueError(f"{where}: y is a single number; pass one target per sample, shape (n,) or (n, units)")
    if len(y) != len(x):
        raise ValueError(f"{where}: x has {len(x)} samples but y has {len(y)}; they must have the same length")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{where}: y must hold numbers, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not all_finite(y):
        raise ValueError(f"{where}: y contains NaN or infinite values; clean the targets first")
    check_targets(model, y, where)
    return x, y


def check_targets(model, y, where) -> None:
    """The targets against the loss and the output layer (one-hot width, label range, shapes)."""
    last = model.layers[-1] if model.layers else None
    units = getattr(last, "units", None)
    if units is None:
        return
    loss = model.loss
    if isinstance(loss, losses.SparseCategoricalCrossentropy):
        if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise ShapeError(f"{where}: sparse_categorical_crossentropy needs integer labels of shape (n,), got "
                             f"y of shape {tuple(y.shape)}; for one-hot targets use "
                             "loss='categorical_crossentropy'")
        if y.dtype.kind == "f" and y.size and not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{where}: sparse_categorical_crossentropy needs integer class labels, "
                             f"got non-integer values in y")
        lo, hi = (int(y.min()), int(y.max())) if y.size else (0, 0)
        if lo < 0 or hi >= units:
            raise ValueError(f"{where}: labels must lie in [0, {units}) for the {units}-unit output layer "
                             f"{last.name!r}; found min {lo}, max {hi}")
    elif isinstance(loss, losses.CategoricalCrossentropy):
        if y.ndim != 2 or y.shape[1] != units:
            hint = ("integer labels: one-hot encode them with gpunet.utils.to_categorical(y) or use "
                    "loss='sparse_categorical_crossentropy'") if y.ndim == 1 else \
                f"the output layer {last.name!r} has {units} units"
            raise ShapeError(f"{where}: categorical_crossentropy needs one-hot targets of shape (n, {units}), "
                             f"got y of shape {tuple(y.shape)}; {hint}")
    elif isinstance(loss, (losses.MeanSquaredError, losses.MeanAbsoluteError, losses.BinaryCrossentropy)):
        out = tuple(last.output_shape[1:]) if last.output_shape else None
        if out is not None and tuple(y.shape[1:]) != out and not (out == (1,) and y.ndim == 1):
            raise ShapeError(f"{where}: loss {loss.name!r} needs one target per output, shape (n, "
                             f"{', '.join(map(str, out))}), got y of shape {tuple(y.shape)}; the output layer "
                             f"{last.name!r} has {units} units")
