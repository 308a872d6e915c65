"""What keeps ``fit`` from losing work: the non-finite-loss guard and the deferred Ctrl-C.

:class:`LossGuard` stops training at the first NaN/infinite batch loss before that step is
applied; :class:`DeferredInterrupt` lets the step in flight finish when Ctrl-C arrives.
"""
from __future__ import annotations

import math
import signal
import threading

from . import backend, kernels

np = backend.numpy

__all__ = ["LossGuard", "DeferredInterrupt"]


class LossGuard:
    """Stops ``fit`` at the first NaN/infinite batch loss without applying that step.

    On the CPU the loss is checked on the host at every step (free). On a GPU a one-thread
    kernel (:func:`gpunet.kernels.guard_loss`) sets a device flag that turns every later
    optimizer kernel into a no-op, and the host reads the flag only where it reads the loss
    anyway — progress refreshes and epoch ends — so no step waits for the device. Either way
    the weights stay those of the last finite step, and :meth:`stop` names it.
    """

    def __init__(self, model, steps, initial_epoch):
        xp = model.device.xp
        self.xp, self.optimizer, self.steps, self.initial_epoch = xp, model.optimizer, steps, initial_epoch
        # the device path; tests also run it on NumPy (model._defer_loss_check) through the kernels' twins
        self.deferred = model.device.is_gpu or getattr(model, "_defer_loss_check", False)
        self.halt = xp.zeros(1, dtype=np.int32)
        self.bad_step = xp.full(1, -1, dtype=np.int64)
        self.bad_loss = xp.zeros(1, dtype=np.float32)
        self.issued = 0

    def __enter__(self):
        self.optimizer._halt = self.halt if self.deferred else None
        return self

    def __exit__(self, *exc):
        self.optimizer._halt = None
        return False

    def check(self, loss, step_id) -> bool:
        """Record a step's loss; True when the step must not be applied (CPU only; a GPU says later)."""
        self.issued += 1
        if not self.deferred and math.isfinite(float(loss)):     # CPU: reading the 0-d loss is free
            return False
        kernels.guard_loss(self.xp, loss, self.halt, self.bad_step, self.bad_loss, step_id)
        return not self.deferred

    def tripped(self) -> bool:
        """Has a non-finite loss been seen? (On a GPU: one small device-to-host read.)"""
        return self.deferred and bool(int(self.halt[0]))

    def stop(self):
        """Called once when fit stops at the guard: returns ``(epoch, step, loss)`` of the first
        non-finite loss, and undoes the iteration count of the steps the GPU kernels skipped
        (the bad one and any issued after it)."""
        step_id, value = int(self.bad_step[0]), float(self.bad_loss[0])
        if self.deferred:
            first = step_id - self.initial_epoch * self.steps        # steps issued before the bad one
            self.optimizer.iterations -= self.issued - first
        return step_id // self.steps, step_id % self.steps, value


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
