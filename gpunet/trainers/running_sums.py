"""Running sums of an epoch's loss and metrics, kept on the device until a value is shown."""
from __future__ import annotations

import math

from ..tensor import Tensor


class RunningSums:
    """The loss summed over samples, each metric's batch sums, and the sample count.

    The sums are 0-d device arrays: adding costs no host-device transfer; :meth:`logs` reads
    them (progress refreshes, epoch ends).
    """

    def __init__(self, metrics):
        self.metrics = list(metrics)
        self.loss = 0.0
        self.last = None
        self.totals = [0.0] * len(self.metrics)
        self.count = 0

    def add(self, loss, n, metric_sums) -> None:
        self.loss = self.loss + loss * n
        self.last = loss
        for i, s in enumerate(metric_sums):
            self.totals[i] = self.totals[i] + s
        self.count += n

    def reduce_with(self, strategy) -> None:
        """Replace the sums by their totals over all processes (host floats)."""
        totals = strategy.sum_host([float(self.loss), *(float(t) for t in self.totals), self.count])
        self.loss, self.totals, self.count = totals[0], totals[1:-1], int(totals[-1])

    def logs(self, last_loss=False) -> dict:
        """``{'loss': mean, metric name: mean ...}`` (``last_loss``: the last batch's loss instead)."""
        if not self.count:
            return {"loss": math.nan, **{m.name: math.nan for m in self.metrics}}
        out = {"loss": float(self.last) if last_loss else float(self.loss) / self.count}
        for m, s in zip(self.metrics, self.totals):
            out[m.name] = float(s) / self.count
        return out


def metric_sums(metrics, device, y, outputs, on_logits, output_activation):
    """Each metric summed over one batch (device 0-d arrays). ``outputs`` are logits when ``on_logits``;
    a metric that needs probabilities then gets ``output_activation(outputs)`` (computed once)."""
    if not metrics:
        return ()
    yt, out = Tensor.wrap(y, device), Tensor.wrap(outputs, device)
    probs = None
    sums = []
    for m in metrics:
        if m.needs_probabilities and on_logits:
            if probs is None:
                probs = output_activation(out)
            sums.append(m.batch_sum(yt, probs, logits=False))
        else:
            sums.append(m.batch_sum(yt, out, logits=on_logits))
    return sums
