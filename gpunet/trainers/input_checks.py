"""Checks of what ``fit``/``evaluate``/``predict`` are given, before anything changes.

Each error names the argument, the offending value or shape, and the fix.
"""
from __future__ import annotations

import math

from .. import backend, losses
from ..callbacks import FitLogs
from ..errors import ShapeError
from ..layers import Dense, Layer
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
    try:
        check_targets(model, y, where, x.shape)
    except ShapeError as exc:
        raise ShapeError(f"{exc}{flatten_hint(model, x.shape)}") from None
    return x, y


def flatten_hint(model, x_shape) -> str:
    """For samples with several axes (``x`` of shape ``(n, 5, 4)``) giving outputs with several axes: why
    (Dense works on the last axis, as in Keras) and the fix (Flatten, or a reshape); else ``''``."""
    if len(x_shape) <= 2:
        return ""
    out = tuple(model.compute_output_shape((None,) + tuple(x_shape[1:])))
    if len(out) <= 2:
        return ""
    width = math.prod(x_shape[1:])
    why = "Dense works on the last axis of its input (as in Keras)" if any(isinstance(layer, Dense)
                                                                          for layer in model.layers) \
        else "the layers keep the extra axes"
    return (f". x has shape {tuple(x_shape)}, and {why}, so the "
            f"model's outputs have shape {str(('n',) + out[1:]).replace(chr(39), '')}: for one output per sample "
            f"add layers.Flatten() before the first Dense, or reshape x to (n, {width}) with "
            f"x.reshape((len(x), {width}))")


def check_targets(model, y, where, x_shape) -> None:
    """The targets against the loss and the model's output shape (one-hot width, label range, shapes)."""
    last = model.layers[-1] if model.layers else None
    if not all(layer.has_array_math or type(layer).compute_output_shape is not Layer.compute_output_shape
               for layer in model.layers):
        return              # a user layer that does not say its output shape: nothing to check against
    out = tuple(model.compute_output_shape((None,) + tuple(x_shape[1:])))[1:]
    units = out[-1] if out else None
    if not isinstance(units, (int, np.integer)):
        return
    loss = model.loss
    if isinstance(loss, losses.SparseCategoricalCrossentropy):
        if tuple(y.shape[1:]) not in (out[:-1], out[:-1] + (1,)):
            want = str(tuple(["n", *out[:-1]])).replace("'", "")
            raise ShapeError(f"{where}: sparse_categorical_crossentropy needs integer labels of shape {want}, got "
                             f"y of shape {tuple(y.shape)} (one class index per output position); for one-hot "
                             "targets use loss='categorical_crossentropy'")
        if y.dtype.kind == "f" and y.size and not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{where}: sparse_categorical_crossentropy needs integer class labels, "
                             f"got non-integer values in y")
        lo, hi = (int(y.min()), int(y.max())) if y.size else (0, 0)
        if lo < 0 or hi >= units:
            raise ValueError(f"{where}: labels must lie in [0, {units}) for the {units}-unit output layer "
                             f"{last.name!r}; found min {lo}, max {hi}")
    elif isinstance(loss, losses.CategoricalCrossentropy):
        if tuple(y.shape[1:]) != out:
            hint = ("integer labels: one-hot encode them with gpunet.utils.to_categorical(y) or use "
                    "loss='sparse_categorical_crossentropy'") if y.ndim == len(out) else \
                f"the output layer {last.name!r} has {units} units"
            raise ShapeError(f"{where}: categorical_crossentropy needs one-hot targets of shape "
                             f"({', '.join(['n', *map(str, out)])}), got y of shape {tuple(y.shape)}; {hint}")
    elif isinstance(loss, (losses.MeanSquaredError, losses.MeanAbsoluteError, losses.BinaryCrossentropy)):
        if tuple(y.shape[1:]) != out and not (out == (1,) and y.ndim == 1):
            raise ShapeError(f"{where}: loss {loss.name!r} needs one target per output, shape (n, "
                             f"{', '.join(map(str, out))}), got y of shape {tuple(y.shape)}; the output layer "
                             f"{last.name!r} has {units} units")


def sample_weights(x, y, sample_weight, class_weight, where):
    """The per-sample weights ``fit``/``evaluate`` were given, as a float32 ``(n,)`` host array, or None.

    ``class_weight`` ({class index: weight}) becomes a weight per sample from its label (argmax of a
    one-hot row, a sparse label as it is; classes not named weigh 1), as Keras computes it; giving both
    is refused, as in Keras.
    """
    if class_weight is not None:
        if sample_weight is not None:
            raise ValueError(f"{where}: sample_weight and class_weight cannot be given together; multiply the class "
                             "weights into sample_weight")
        if not hasattr(class_weight, "items"):
            raise ValueError(f"{where}: class_weight must be a dict of class index -> weight, got "
                             f"{type(class_weight).__name__}")
        try:
            weights = {int(k): float(v) for k, v in class_weight.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{where}: class_weight must map integer class indices to numbers, got "
                             f"{class_weight!r}") from None
        labels = y if y.ndim == 1 else (y.argmax(axis=-1) if y.shape[-1] != 1 else y.reshape(y.shape[:-1]))
        labels = np.round(labels.reshape(len(y), -1)[:, 0]).astype(np.int64)
        return np.array([weights.get(int(c), 1.0) for c in labels], dtype=np.float32)
    if sample_weight is None:
        return None
    w = as_array(sample_weight, "sample_weight", where)
    if w.ndim != 1 or len(w) != len(x):
        raise ShapeError(f"{where}: sample_weight must hold one weight per sample, shape ({len(x)},), got shape "
                         f"{tuple(w.shape)}")
    if w.dtype.kind not in "biuf" or (w.dtype.kind == "f" and not all_finite(w)):
        raise ValueError(f"{where}: sample_weight must hold finite numbers, got dtype {w.dtype}")
    return w.astype(np.float32)


def check_validation_freq(validation_freq):
    """Keras' ``validation_freq``: a positive int (every N epochs) or a list of 1-based epochs."""
    if isinstance(validation_freq, bool) or not isinstance(validation_freq, (int, list)) or \
            (isinstance(validation_freq, int) and validation_freq < 1):
        raise ValueError(f"validation_freq must be a positive integer or a list of epochs (1-based), got "
                         f"{validation_freq!r}")
    return validation_freq


def validation_due(epoch, validation_freq) -> bool:
    """Validate after ``epoch`` (0-based)? (Keras' rule.)"""
    epoch += 1
    return epoch % validation_freq == 0 if isinstance(validation_freq, int) else epoch in validation_freq


def check_fit_arguments(batch_size, epochs, initial_epoch, steps_per_epoch, validation_split, verbose,
                        validation_freq):
    """``fit``'s scalar arguments checked; returns ``(batch_size, verbose, validation_freq)`` standardized."""
    batch_size = batch_size_or_default(batch_size)
    check_int("epochs", epochs, 0)
    check_int("initial_epoch", initial_epoch, 0)
    if steps_per_epoch is not None:
        check_int("steps_per_epoch", steps_per_epoch, 1)
    if not isinstance(validation_split, (int, float, np.integer, np.floating)) or isinstance(validation_split, bool) \
            or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must lie in [0, 1), got {validation_split!r}")
    return batch_size, check_verbose(verbose), check_validation_freq(validation_freq)


def validation_arrays(model, x, y, w, validation_data, validation_split):
    """``(x, y, w, vx, vy, vw)``: the training arrays and the validation ones (``validation_data``
    checked, or the last ``validation_split`` of the samples, as Keras takes them; None, None, None
    without validation)."""
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight)")
        vx, vy = check_data(model, *validation_data[:2], where="fit (validation_data)")
        vw = sample_weights(vx, vy, validation_data[2], None, "fit (validation_data)") \
            if len(validation_data) == 3 else None
        return x, y, w, vx, vy, vw
    if not validation_split:
        return x, y, w, None, None, None
    split = int(len(x) * (1 - validation_split))
    if split == 0 or split == len(x):
        raise ValueError(f"validation_split={validation_split} leaves no training or no validation "
                         f"samples out of {len(x)}")
    vw = None if w is None else w[split:]
    return x[:split], y[:split], None if w is None else w[:split], x[split:], y[split:], vw


def logged_names(model, validation: bool) -> FitLogs:
    """What ``fit`` will log (a :class:`~gpunet.callbacks.FitLogs`): ``loss`` and the compiled metrics,
    each also as ``val_<name>`` with validation data."""
    names = ["loss", *model.compiled_metrics.names]
    return FitLogs(names + (["val_" + n for n in names] if validation else []), names, validation)
