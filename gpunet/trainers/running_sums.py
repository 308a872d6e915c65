"""Running sums of an epoch's loss and metrics, kept on the device until a value is shown."""
from __future__ import annotations

import math

from .. import backend
from ..tensor import Tensor

_HOST = (int, float, backend.numpy.ndarray, backend.numpy.generic)     # values summed on the host


class CompiledMetrics:
    """The metrics ``compile`` was given: ``metrics`` (means over samples) and ``weighted_metrics``
    (means weighted by the sample weights; named ``weighted_<name>`` where a name repeats, as Keras
    does). Per batch it gives one sum per metric, then, with weighted metrics, the sum of the weights."""

    def __init__(self, metrics=(), weighted=()):
        self.metrics, self.weighted = list(metrics), list(weighted)
        names = [m.name for m in self.metrics]
        for m in self.weighted:
            names.append(m.name if m.name not in names else f"weighted_{m.name}")
        self.names = names

    def __len__(self) -> int:
        """How many sums a batch gives (what a distributed all-reduce carries)."""
        return len(self.names) + bool(self.weighted)

    def __iter__(self):
        return iter(self.metrics + self.weighted)

    def batch_sums(self, device, y, outputs, on_logits, output_activation, w=None, workspaces=None):
        """Each metric summed over one batch (device 0-d arrays; weighted ones times ``w``), then the sum
        of the weights. ``outputs`` are logits when ``on_logits``: a metric that needs probabilities then
        gets ``output_activation(outputs)`` (computed once). ``workspaces`` (one per metric, as ``fit``
        keeps them): a metric that can (``sums_in_place``) computes into its own, allocating nothing;
        its sum then lives until its next batch."""
        if not self.names:
            return ()
        yt, out = Tensor.wrap(y, device), Tensor.wrap(outputs, device)
        wt = None if w is None else Tensor.wrap(w, device)
        probs = None
        sums = []
        for i, m in enumerate(self.metrics + self.weighted):
            weights = {"sample_weight": wt} if i >= len(self.metrics) and wt is not None else {}
            if workspaces is not None and m.sums_in_place:
                weights["ws"] = workspaces[i]
            if m.needs_probabilities and on_logits:
                if probs is None:
                    probs = output_activation(out)
                sums.append(m.batch_sum(yt, probs, logits=False, **weights))
            else:
                sums.append(m.batch_sum(yt, out, logits=on_logits, **weights))
        if self.weighted:
            sums.append(len(y) if w is None else w.sum())
        return sums


class RunningSums:
    """The loss summed over samples, each metric's batch sums, the sample count and, with weighted
    metrics, the sum of the sample weights.

    On a GPU the sums are 0-d device arrays (made at the first :meth:`add`), added to in place: a
    step costs no host-device transfer and, after the first, no new array; :meth:`reset` zeroes
    them for the next epoch and :meth:`logs` reads them (progress refreshes, epoch ends). On the
    CPU the same float32 operations run as plain expressions (cheaper there); sums given as host
    numbers (a batch's sample count) stay host numbers.
    """

    def __init__(self, metrics: CompiledMetrics):
        self.metrics = metrics
        self.loss = 0.0
        self.totals = [0.0] * len(metrics)
        self._scaled = None          # the work array of loss * n
        self.reset()

    def reset(self) -> None:
        """Zero the sums (in place: the arrays are kept for the next epoch)."""
        self.loss = _zeroed(self.loss)
        self.totals = [_zeroed(t) for t in self.totals]
        self.last = None
        self.count = 0

    def add(self, loss, n, metric_sums) -> None:
        if isinstance(loss, _HOST):
            self.loss = self.loss + loss * n
        else:                        # loss * n, then the sum, in place (the same float32 operations)
            xp = backend.array_module_of(loss)
            if self._scaled is None or self._scaled.dtype != loss.dtype:
                self._scaled = xp.empty((), dtype=loss.dtype)
            self.loss = _accumulate(self.loss, xp.multiply(loss, n, out=self._scaled))
        self.last = loss
        for i, s in enumerate(metric_sums):
            self.totals[i] = _accumulate(self.totals[i], s)
        self.count += n

    def reduce_with(self, strategy) -> None:
        """Replace the sums by their totals over all processes (host floats)."""
        totals = strategy.sum_host([float(self.loss), *(float(t) for t in self.totals), self.count])
        self.loss, self.totals, self.count = totals[0], totals[1:-1], int(totals[-1])

    def logs(self, last_loss=False) -> dict:
        """``{'loss': mean, metric name: mean ...}`` (``last_loss``: the last batch's loss instead)."""
        names = self.metrics.names
        if not self.count:
            return {"loss": math.nan, **{name: math.nan for name in names}}
        out = {"loss": float(self.last) if last_loss else float(self.loss) / self.count}
        n_plain = len(self.metrics.metrics)
        weight_total = float(self.totals[-1]) if self.metrics.weighted else 0.0
        for i, name in enumerate(names):
            denominator = self.count if i < n_plain else weight_total
            out[name] = float(self.totals[i]) / denominator if denominator else math.nan
        return out


def _zeroed(acc):
    """A device accumulator zeroed in place (kept: no new array), else a fresh host 0.0."""
    if isinstance(acc, _HOST):
        return 0.0
    acc.fill(0)
    return acc


def _accumulate(acc, value):
    """``acc + value``: into ``acc`` for a device array value (the first makes a 0-d accumulator of its
    dtype on its device: ``0.0 + value`` keeps a float32 value float32); a plain sum otherwise."""
    if isinstance(value, _HOST):
        return acc + value
    xp = backend.array_module_of(value)
    if isinstance(acc, _HOST):
        acc = xp.full((), acc, dtype=value.dtype if value.dtype.kind == "f" else "float64")
    return xp.add(acc, value, out=acc)
