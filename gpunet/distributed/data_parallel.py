"""``fit(..., distributed=True)``'s strategy: every rank computes its shard of each global batch,
and one all-reduce per step gives every rank the global gradients, loss, metrics and stop flags."""
from __future__ import annotations

import math

from .. import backend, random
from .context import init

np = backend.numpy

CHECK_EVERY_DEFERRED = 25    # on a GPU the agreed flags are read every this many steps (a device read)


def shard_bounds(lo: int, hi: int, rank: int, size: int):
    """Rows ``[lo_r, hi_r)`` of ``[lo, hi)`` for ``rank`` of ``size``: contiguous shards in rank
    order that cover the range once, sizes differing by at most 1 (a shard may be empty)."""
    n = hi - lo
    return lo + n * rank // size, lo + n * (rank + 1) // size


class DataParallel:
    """The strategy ``fit``/``evaluate(distributed=True)`` use, with the methods of
    :class:`gpunet.trainers.epoch_iterator.SingleProcess`: :meth:`start` checks and synchronises
    the ranks, :meth:`order` shares an epoch's batch order, :meth:`shard` says which rows of a
    global batch are this rank's, :meth:`reduce` is the step's single all-reduce, and
    :meth:`agree` gives every rank the same stop decisions at the same steps.
    """

    is_distributed = True
    # slots of the reduced "extras" after the gradients: loss, control flags, metric sums, then one
    # "has a gradient" count per weight
    LOSS, INTERRUPT, STOP, METRICS = 0, 1, 2, 3

    def __init__(self, device):
        self.ctx = init()
        self.device = device
        self.transport = self.ctx.transport(device)
        self.buffer = self.grads = self.extra = self.local_flags = None
        self.n_metrics = 0
        self.connected = None     # which weights get a gradient (known after the first step)

    @property
    def rank(self):
        return self.ctx.rank

    @property
    def size(self):
        return self.ctx.size

    @property
    def is_root(self) -> bool:
        return self.ctx.is_root

    # -- start of fit ----------------------------------------------------------
    def start(self, model, params, n_samples, n_metrics, local_flags) -> None:
        """Check that every rank has the same data length and model, then give every rank rank 0's
        weights, optimizer state and random state. Raises (on every rank alike) before changing anything.
        ``local_flags()`` gives this rank's ``(interrupt pending, stop_training)`` for each step's reduce."""
        comm = self.ctx.comm
        mine = (int(n_samples), [tuple(p.shape) for p in params], type(model.optimizer).__name__)
        every = comm.allgather(mine)
        for r, theirs in enumerate(every):
            if theirs[0] != every[0][0]:
                raise ValueError(f"fit(distributed=True): rank {r} has {theirs[0]} samples but rank 0 has "
                                 f"{every[0][0]}; give every rank the whole dataset (each trains on its shard "
                                 "of every batch)")
            if theirs[1:] != every[0][1:]:
                raise ValueError(f"fit(distributed=True): rank {r}'s model or optimizer differs from rank 0's "
                                 f"(weights {theirs[1]} / {every[0][1]}, {theirs[2]} / {every[0][2]}); build the "
                                 "same model on every rank")
        dtypes = {str(p.dtype) for p in params}
        if not dtypes <= {"float32", "float64"}:
            raise ValueError(f"fit(distributed=True) supports float32 and float64 weights, got {sorted(dtypes)}")
        state = comm.bcast((model.get_weights(), model.optimizer.get_state(params), random.get_state())
                           if self.ctx.is_root else None, root=0)
        weights, opt_state, rng_state = state
        if not self.ctx.is_root:
            model.set_weights(weights)
            model.optimizer.set_state(params, opt_state)
            random.set_state(rng_state)
        sizes = [math.prod(p.shape) for p in params]
        self.n_metrics, self.local_flags, self.connected = n_metrics, local_flags, None
        self.buffer = self.device.xp.zeros(sum(sizes) + self.METRICS + n_metrics + len(params),
                                           dtype="float64" if "float64" in dtypes else "float32")
        offsets = np.cumsum([0] + sizes)
        self.grads = [self.buffer[o:o + s].reshape(p.shape) for o, s, p in zip(offsets, sizes, params)]
        self.extra = self.buffer[offsets[-1]:]

    # -- per epoch and per step ------------------------------------------------
    def order(self, permutation):
        """Rank 0's batch order (a host int64 permutation) on every rank."""
        order = np.ascontiguousarray(permutation, dtype=np.int64)
        self.ctx.comm.Bcast(order, root=0)
        return order

    def shard(self, lo: int, hi: int):
        """This rank's rows of the global batch ``[lo, hi)`` (see :func:`shard_bounds`)."""
        return shard_bounds(lo, hi, self.rank, self.size)

    def batch_context(self, n_global: int, lo: int, hi: int):
        """Dropout masks are this rank's rows of those one process would draw for the global batch."""
        return random.batch_shard(n_global, lo, hi)

    def reduce(self, loss, grads, metric_sums, n_local: int, n_global: int):
        """The step's one all-reduce. This rank's mean gradients (``grads`` None for an empty shard) are
        scaled by ``n_local / n_global``; returns the global mean loss, the global gradients (views of the
        buffer; None for a weight no rank computed a gradient for) and the global metric sums."""
        xp, extra = self.device.xp, self.extra
        has_grad = extra[self.METRICS + self.n_metrics:]
        if grads is None:
            self.buffer.fill(0)
        else:
            scale = self.buffer.dtype.type(n_local / n_global)
            for i, (g, view) in enumerate(zip(grads, self.grads)):
                if g is None:
                    view.fill(0)
                else:
                    xp.multiply(g, scale, out=view)
                if self.connected is None:
                    has_grad[i] = g is not None
            extra[self.LOSS] = loss * scale
            for i, s in enumerate(metric_sums):
                extra[self.METRICS + i] = s
        extra[self.INTERRUPT], extra[self.STOP] = (float(flag) for flag in self.local_flags())
        self.transport.allreduce_sum(self.buffer)
        if self.connected is None:     # once per fit (the model does not change): a tiny host read
            self.connected = [bool(c > 0) for c in self.device.to_host(has_grad)]
            has_grad.fill(0)           # later reduces carry zeros here
        grads = [g if c else None for g, c in zip(self.grads, self.connected)]
        return extra[self.LOSS], grads, [extra[self.METRICS + i] for i in range(self.n_metrics)]

    def check_every(self, steps: int, deferred: bool) -> int:
        """How often the host reads the agreed flags: every step when the loss guard reads the loss on
        the host anyway (CPU), every ``CHECK_EVERY_DEFERRED`` steps when it is deferred (GPU: a device
        read) — the same steps on every rank."""
        return max(1, min(CHECK_EVERY_DEFERRED, steps)) if deferred else 1

    def agree(self, interrupt: bool, stop: bool):
        """``(interrupt, stop)`` agreed by all ranks at the last :meth:`reduce` (a host read); this rank's
        own flags travel in the next reduce."""
        host = self.device.to_host(self.extra[self.INTERRUPT:self.METRICS])
        return bool(host[0] > 0), bool(host[1] > 0)

    def agree_at_epoch_end(self, interrupt: bool, stop: bool):
        """Any rank's Ctrl-C or stop, on every rank."""
        pending, stopped = self.sum_host([interrupt, stop])
        return pending > 0, stopped > 0

    def sum_host(self, values) -> list:
        """Element-wise sum over ranks of a few host floats (float64)."""
        arr = np.asarray(values, dtype=np.float64)
        self.ctx.comm.Allreduce(self.ctx.MPI.IN_PLACE, arr, op=self.ctx.MPI.SUM)
        return arr.tolist()
