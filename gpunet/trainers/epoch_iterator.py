"""The batches of each epoch, and the single-process strategy that ``fit`` uses by default.

The data is moved to the device once per ``fit`` (float64 becomes float32, uint8 stays uint8);
each epoch draws a permutation on the host (so one seed gives the same batch order on every
device) and each step gathers its rows on the device.
"""
from __future__ import annotations

import contextlib

from .. import random


def to_device(device, a):
    """One host-to-device transfer of a whole array (float64 -> float32; uint8 stays uint8)."""
    if a.dtype == "float64":
        a = a.astype("float32")
    return device.asarray(a)


def count_steps(n: int, batch_size: int, steps_per_epoch=None) -> int:
    """Batches per epoch: ``ceil(n / batch_size)``, at most ``steps_per_epoch``."""
    steps = -(-n // batch_size)
    return steps if steps_per_epoch is None else min(steps, steps_per_epoch)


class SingleProcess:
    """``fit``'s default strategy: this process trains alone. :class:`gpunet.distributed.DataParallel`
    implements the same methods across the ranks of an MPI job; here each is the identity."""

    is_distributed = False
    rank = 0
    is_root = True

    def start(self, model, params, n_samples, n_metrics, local_flags) -> None:
        """Check and synchronise the processes before the first step (nothing to do alone)."""

    def order(self, permutation):
        """The epoch's batch order every process uses."""
        return permutation

    def shard(self, lo: int, hi: int):
        """This process's rows of the global batch ``[lo, hi)``."""
        return lo, hi

    def batch_context(self, n_global: int, lo: int, hi: int):
        """Context for one step: which rows of the global batch random draws (dropout) are for."""
        return contextlib.nullcontext()

    def reduce(self, loss, grads, metric_sums, n_local: int, n_global: int):
        """The global batch's mean loss, mean gradients and metric sums (all-reduced when distributed)."""
        return loss, grads, metric_sums

    def check_every(self, steps: int, deferred: bool) -> int:
        """Every how many steps the host acts on stop flags (1: every step, they are host values here)."""
        return 1

    def agree(self, interrupt: bool, stop: bool):
        """``(interrupt, stop)`` as every process sees them at a check step."""
        return interrupt, stop

    def agree_at_epoch_end(self, interrupt: bool, stop: bool):
        return interrupt, stop

    def sum_host(self, values) -> list:
        """Element-wise sum over processes of a few host numbers."""
        return list(values)


class EpochIterator:
    """The device-resident data of one ``fit`` and its batches, epoch after epoch.

    ``batches()`` yields ``(step, x, y, w, (n_global, lo, hi), last)`` for one epoch: this process's
    rows ``x``/``y`` (and sample weights ``w``, or None) of step ``step``'s global batch of
    ``n_global`` samples, where they lie in it, and whether it ends the epoch. With
    ``steps_per_epoch`` the data continues from epoch to epoch, as in Keras: a pass over the data
    that runs out ends its epoch early, and the next epoch starts a new (reshuffled) pass.
    """

    def __init__(self, x, y, w, batch_size, steps_per_epoch, shuffle, device, strategy):
        self.xd, self.yd = to_device(device, x), to_device(device, y)
        self.wd = None if w is None else to_device(device, w)
        self.n, self.batch_size, self.shuffle = len(x), batch_size, shuffle
        self.device, self.strategy = device, strategy
        self.batches_per_pass = count_steps(self.n, batch_size)
        self.steps = count_steps(self.n, batch_size, steps_per_epoch)
        self.continues = steps_per_epoch is not None
        self._order, self._next = None, 0     # the current pass: its permutation, its next batch
        self._rows = {}       # (which array, rows) -> the batch array a shuffled batch is gathered into

    def batches(self):
        if self._next == 0 and self.shuffle:   # a new pass. Every process draws (keeping the generators in
            # step); the strategy says whose order is used
            self._order = self.device.asarray(self.strategy.order(random.generator().permutation(self.n)))
        for step in range(self.steps):
            b = self._next
            self._next += 1
            last = step + 1 == self.steps or self._next == self.batches_per_pass
            yield (step, *self._batch(b), last)
            if self._next == self.batches_per_pass:
                break
        if self._next == self.batches_per_pass or not self.continues:
            self._next = 0

    def _batch(self, b):
        glo, ghi = b * self.batch_size, min(self.n, (b + 1) * self.batch_size)
        lo, hi = self.strategy.shard(glo, ghi)
        arrays = (self.xd, self.yd) + (() if self.wd is None else (self.wd,))
        if self._order is None:
            rows = [a[lo:hi] for a in arrays]
        else:
            idx = self._order[lo:hi]
            rows = [self._gather(i, a, idx) for i, a in enumerate(arrays)]
        return rows[0], rows[1], rows[2] if len(rows) == 3 else None, (ghi - glo, lo - glo, hi - glo)

    def lend_batch_array(self, i, array) -> None:
        """Gather array ``i`` (0: x, 1: y, 2: sample weights) of batches of ``len(array)`` rows into ``array``
        from now on (a replayed step's own input array, kept from an earlier ``fit``: step_replays.py), when
        it has their shape and dtype."""
        data = (self.xd, self.yd, self.wd)[i]
        if data is not None and array.shape[1:] == data.shape[1:] and array.dtype == data.dtype and \
                array.flags.c_contiguous and array.flags.owndata:
            self._rows[(i, len(array))] = array

    def _gather(self, i, a, idx):
        """``a``'s rows ``idx`` in the batch array kept for this array and batch size (one per size: the
        last, smaller batch of a pass has its own), overwritten by the next batch of that size: no new
        array per step. A batch array is only read within its step."""
        key = (i, len(idx))
        out = self._rows.get(key)
        if out is None:
            out = self._rows[key] = self.device.xp.empty((len(idx),) + a.shape[1:], dtype=a.dtype)
        if self.device.is_gpu:
            return a.take(idx, axis=0, out=out)
        return a.take(idx, axis=0, out=out, mode="clip")     # the indices are valid: no checking copy
