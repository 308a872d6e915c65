"""What keeps ``fit`` from losing work: the non-finite-loss guard and the deferred Ctrl-C.

:class:`LossGuard` stops training at the first NaN/infinite batch loss before that step is
applied; :class:`DeferredInterrupt` lets the step in flight finish when Ctrl-C arrives.
"""
from __future__ import annotations

import math
import signal
import threading

from .. import kernels

__all__ = ["LossGuard", "DeferredInterrupt"]


class LossGuard:
    """Stops ``fit`` at the first NaN/infinite batch loss without applying that step.

    On the CPU the loss is checked on the host at every step (free). On a GPU (``deferred``) a
    one-thread kernel (:func:`gpunet.kernels.guard_loss`) sets the device flag :attr:`halt`,
    which the trainer passes to every optimizer update: once set, the update kernels do
    nothing. The host reads the flag only where it reads the loss anyway — progress refreshes
    and epoch ends — so no step waits for the device. The step's id comes from the device
    counter :attr:`counter`, which the kernel advances (set once per epoch by :meth:`start_epoch`):
    a step passes the kernel nothing that changes from step to step. Either way the weights stay
    those of the last finite step, and :meth:`stop` names it.
    """

    def __init__(self, device, steps, initial_epoch, deferred):
        xp = device.xp
        self.xp, self.steps, self.initial_epoch, self.deferred = xp, steps, initial_epoch, deferred
        self.flag = xp.zeros(1, dtype="int32")
        self.bad_step = xp.full(1, -1, dtype="int64")
        self.bad_loss = xp.zeros(1, dtype="float32")
        self.counter = xp.full(1, initial_epoch * steps, dtype="int64")   # deferred: the next step's id
        self.halt = self.flag if deferred else None    # what the optimizer updates are given
        self.issued = 0

    def start_epoch(self, epoch) -> None:
        """Point the device step counter at ``epoch``'s first step (between steps: a fill, no transfer)."""
        if self.deferred:
            self.counter.fill(epoch * self.steps)

    def check(self, loss, step_id) -> bool:
        """Record a step's loss; True when the step must not be applied (CPU only; a GPU says later).
        ``step_id`` is the host's count, what the CPU records; deferred, the device counter (the same
        number, advanced on the device) is recorded instead."""
        self.issued += 1
        if not self.deferred and math.isfinite(float(loss)):     # CPU: reading the 0-d loss is free
            return False
        kernels.guard_loss(self.xp, loss, self.flag, self.bad_step, self.bad_loss,
                           self.counter if self.deferred else step_id)
        return not self.deferred

    def tripped(self) -> bool:
        """Has a non-finite loss been seen? (On a GPU: one small device-to-host read.)"""
        return self.deferred and bool(int(self.flag[0]))

    def stop(self):
        """Called once when fit stops at the guard: ``(epoch, step, loss, skipped)`` of the first
        non-finite loss; ``skipped`` counts the updates the flag turned into no-ops (the bad step and
        any issued after it), which the optimizer's iteration count must not include."""
        step_id, value = int(self.bad_step[0]), float(self.bad_loss[0])
        skipped = self.issued - (step_id - self.initial_epoch * self.steps) if self.deferred else 0
        return step_id // self.steps, step_id % self.steps, value, skipped


class DeferredInterrupt:
    """Ctrl-C during ``fit`` takes effect between steps, never inside an optimizer update.

    The step in flight completes, then KeyboardInterrupt is raised: the model keeps the
    weights of that last completed step and ``model.history`` the epochs completed so far.
    A second Ctrl-C interrupts at once. Only installed in the main thread, and only when
    SIGINT has Python's default handler (a user's own handler is left alone).
    """

    def __init__(self):
        self.pending = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pending:            # pressed twice: the user insists
            signal.signal(signal.SIGINT, self._previous)
            raise KeyboardInterrupt
        self.pending = True

    def check(self):
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt("fit interrupted (Ctrl-C): the model keeps the weights of the last completed "
                                    "step and model.history the epochs completed so far")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
