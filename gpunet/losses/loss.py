"""The :class:`Loss` base class and Keras 3's rules for sample weights and reductions.

A loss computes one value per sample (per position for ``(n, h, ...)`` outputs) in
:meth:`Loss.call`, multiplies them by ``sample_weight`` (scalar, per-sample ``(n,)``/``(n, 1)``
or per-timestep ``(n, t)``, aligned with :func:`squeeze_or_expand_to_same_rank`) and reduces
them as ``reduction`` says:

* ``'sum_over_batch_size'`` (default) and ``'mean'``: ``sum(weighted values) / number of values``;
* ``'sum'``: the sum; ``'mean_with_sample_weight'``: the sum divided by the sum of the weights;
* ``None`` / ``'none'``: the weighted values themselves.

Example:
    >>> import gpunet
    >>> from gpunet import losses
    >>> class Squared(losses.Loss):
    ...     def call(self, y_true, y_pred):
    ...         return (y_true - y_pred) ** 2
    >>> loss = Squared(reduction="sum")
    >>> loss([1., 0.], [0.5, 0.5], sample_weight=[2., 0.]).item()
    0.5
"""
from __future__ import annotations

import re

from .. import backend, ops
from ..tensor import Tensor, apply, as_tensor

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None, "none")
EPSILON = 1e-7   # Keras' backend epsilon, used to clip probabilities


def standardize_reduction(reduction):
    """``reduction`` itself when Keras allows it, else a ValueError naming the allowed values."""
    if not (reduction is None or isinstance(reduction, str)) or reduction not in REDUCTIONS:
        raise ValueError(f"Invalid value for argument `reduction`. Expected one of {set(REDUCTIONS)}. "
                         f"Received: reduction={reduction!r}")
    return reduction


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Keras' rank alignment: where the ranks differ by one and the longer has a last axis of 1,
    that axis is dropped (or, when the shorter is 1-D, a last axis of 1 is added to it).
    Works on Tensors and on arrays."""
    r1, r2 = len(x1.shape), len(x2.shape)
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2.reshape(tuple(x2.shape) + (1,))
        else:
            x1 = x1.reshape(tuple(x1.shape[:-1]))
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1.reshape(tuple(x1.shape) + (1,))
        else:
            x2 = x2.reshape(tuple(x2.shape[:-1]))
    return x1, x2


def canonical_axis(axis, ndim) -> int:
    """``axis`` as a non-negative position (ValueError when out of range or a bool)."""
    if isinstance(axis, bool) or not -ndim <= int(axis) < max(ndim, 1):
        raise ValueError(f"`axis` must be an int in [-{ndim}, {ndim}) for a tensor of rank {ndim}. Received: axis={axis!r}")
    return int(axis) % max(ndim, 1)


def row_weights(xp, sample_weight, values_shape):
    """``sample_weight`` aligned with per-position losses of ``values_shape`` as Keras aligns them,
    broadcast and flattened: a contiguous float32 ``(rows,)`` array for the fused kernel."""
    w = xp.asarray(sample_weight.data if isinstance(sample_weight, Tensor) else sample_weight, dtype="float32")
    if w.ndim == len(values_shape) + 1 and w.shape[-1] == 1:
        w = w.reshape(w.shape[:-1])
    elif len(values_shape) == w.ndim + 1 and values_shape[-1] == 1:
        w = w.reshape(w.shape + (1,))
    return xp.ascontiguousarray(xp.broadcast_to(w, tuple(values_shape))).reshape(-1)


def divide_no_nan(x: Tensor, divisor) -> Tensor:
    """``x / divisor``, or 0 where ``divisor`` is 0 (``divisor``: a constant device array or number)."""
    xp = x.device.xp
    d = xp.asarray(divisor, dtype=x.dtype)
    nonzero = d != 0
    return x * (nonzero / xp.where(nonzero, d, 1)).astype(x.dtype)


def apply_mask(sample_weight, mask, dtype, reduction):
    """Merge a boolean ``mask`` (positions that count) into ``sample_weight``, as Keras does: for the
    averaging reductions the kept positions are scaled by ``total / kept``."""
    if mask is None:
        return sample_weight
    xp = mask.device.xp
    m = mask.data.astype(dtype)
    if reduction in ("mean", "sum_over_batch_size"):
        valid = m.sum()
        m = m * xp.where(valid != 0, m.size / xp.where(valid != 0, valid, 1), 0).astype(dtype)
    m = Tensor.wrap(m, mask.device)
    if sample_weight is None:
        return m
    m, sample_weight = squeeze_or_expand_to_same_rank(m, sample_weight)
    return sample_weight * m


def reduce_values(values: Tensor, sample_weight=None, reduction="sum_over_batch_size") -> Tensor:
    """``values`` (already weighted) reduced per ``reduction``."""
    if reduction is None or reduction == "none" or values.ndim == 0 or values.shape == (0,):
        return values
    if reduction == "sum":
        return ops.sum(values)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return divide_no_nan(ops.sum(values), sample_weight.data.sum())
    return ops.mean(values) if values.size else ops.sum(values)


def reduce_weighted_values(values, sample_weight=None, mask=None, reduction="sum_over_batch_size") -> Tensor:
    """Keras' ``reduce_weighted_values``: ``values * sample_weight`` (ranks aligned), then reduced."""
    reduction = standardize_reduction(reduction)
    values = as_tensor(values)
    if sample_weight is not None:
        sample_weight = as_tensor(sample_weight, values.device)
        if sample_weight.dtype != values.dtype:
            sample_weight = sample_weight.astype(values.dtype)
    if mask is not None:
        mask = as_tensor(mask, values.device)
    sample_weight = apply_mask(sample_weight, mask, values.dtype, reduction)
    if sample_weight is not None:
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        values = values * sample_weight
    return reduce_values(values, sample_weight, reduction)


def float_pair(y_true, y_pred, dtype=None):
    """``(y_true, y_pred)`` as Tensors of one float dtype (``dtype``, else ``y_pred``'s, float32 for integers)."""
    y_pred = as_tensor(y_pred)
    dtype = dtype or (y_pred.dtype if y_pred.dtype.kind == "f" else "float32")
    if y_pred.dtype != dtype:
        y_pred = y_pred.astype(dtype)
    y_true = as_tensor(y_true, y_pred.device)
    if y_true.dtype != y_pred.dtype:
        y_true = y_true.astype(y_pred.dtype)
    return y_true, y_pred


class Loss:
    """Base class, as Keras' ``keras.losses.Loss``: implement :meth:`call` (per-sample losses).

    ``loss(y_true, y_pred, sample_weight=None)`` -> a 0-d Tensor reduced per :attr:`reduction`
    (the weighted per-sample losses for ``reduction=None``).

    Args:
        name: the loss's name (default: the class name in snake_case).
        reduction: ``'sum_over_batch_size'`` (default), ``'sum'``, ``'mean'``,
            ``'mean_with_sample_weight'``, ``None`` or ``'none'``.
        dtype: the dtype computed in (default: ``y_pred``'s float dtype, float32 for integers).
    """

    logits_activation: str | None = None    # the output activation whose logits this loss can take instead
    from_logits = False
    # ``logits_function(xp, logits, y_true, sample_weight=None) -> (loss, backward)``: the array-level
    # 'sum_over_batch_size' loss on the logits (a :mod:`gpunet.functional`-style function), or None.
    logits_function = None

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None, *, from_logits=None):
        self.name = name or getattr(type(self), "default_name", None) or \
            re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        self.reduction = standardize_reduction(reduction)
        self._dtype = None if dtype is None else backend.numpy.dtype(dtype).name
        if from_logits is not None:
            self.from_logits = bool(from_logits)

    @property
    def dtype(self):
        """The dtype the loss computes in (None: that of ``y_pred``)."""
        return self._dtype

    def __call__(self, y_true, y_pred, sample_weight=None) -> Tensor:
        if self.from_logits and self.logits_activation is not None:
            return self.from_logits_loss(y_true, y_pred, sample_weight)
        y_true, y_pred = float_pair(y_true, y_pred, self._dtype)
        values = self.call(y_true, y_pred)
        return reduce_weighted_values(values, sample_weight, self.value_mask(y_true, y_pred), self.reduction)

    def call(self, y_true, y_pred) -> Tensor:
        """The per-sample losses of two float Tensors (override this; ``per_sample`` is its earlier name)."""
        if type(self).per_sample is not Loss.per_sample:
            return self.per_sample(y_true, y_pred)
        raise NotImplementedError(f"{type(self).__name__} must implement call(y_true, y_pred)")

    def per_sample(self, y_true, y_pred) -> Tensor:
        """Same as :meth:`call` (gpunet's earlier name)."""
        return self.call(y_true, y_pred)

    def value_mask(self, y_true, y_pred):
        """A boolean Tensor of the loss values that count (None: all), as Keras' masks."""
        return None

    def logits_values(self, y_true, logits) -> Tensor:
        """The per-sample losses computed from the logits of :attr:`logits_activation`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be computed from logits")

    def unreduced(self, y_true, y_pred) -> Tensor:
        """The per-sample losses before weights and reduction (from logits when :attr:`from_logits`)."""
        logits = self.from_logits and self.logits_activation is not None
        y_true, y_pred = float_pair(y_true, y_pred, self._dtype)
        return self.logits_values(y_true, y_pred) if logits else self.call(y_true, y_pred)

    def from_logits_loss(self, y_true, logits, sample_weight=None) -> Tensor:
        """The loss computed from the logits of :attr:`logits_activation` (numerically stable).

        With ``reduction`` ``'sum_over_batch_size'``/``'mean'`` and an array form, this runs
        :attr:`logits_function` through :func:`gpunet.tensor.apply` — the same function the
        tapeless training step calls, so both give the same bits."""
        if self.logits_activation is None:
            raise NotImplementedError(f"{type(self).__name__} cannot be computed from logits")
        logits = as_tensor(logits)
        if self._dtype and logits.dtype != self._dtype:
            logits = logits.astype(self._dtype)
        if self.logits_function is not None and self.reduction in ("sum_over_batch_size", "mean"):
            return apply(self.logits_function, (logits, y_true, sample_weight))
        y_true, logits = float_pair(y_true, logits, self._dtype)
        values = self.logits_values(y_true, logits)
        return reduce_weighted_values(values, sample_weight, self.value_mask(y_true, logits), self.reduction)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class LossFunctionWrapper(Loss):
    """A loss from a function ``fn(y_true, y_pred, **kwargs)`` returning per-sample losses (Keras'
    ``LossFunctionWrapper``); a function that returns a number or an array works too."""

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction, dtype=dtype)
        self.fn = fn
        self.fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        out = self.fn(y_true, y_pred, **self.fn_kwargs)
        return out if isinstance(out, Tensor) else as_tensor(out, y_pred.device)

    def get_config(self):
        return {**super().get_config(), "fn": getattr(self.fn, "__name__", repr(self.fn)), **self.fn_kwargs}
