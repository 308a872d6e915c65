""":class:`LearningRateScheduler`: set the optimizer's learning rate at the start of every epoch."""
from __future__ import annotations

import numbers

from .callback import Callback, print_msg


class LearningRateScheduler(Callback):
    """At the start of every epoch set ``model.optimizer.learning_rate`` (a float) to
    ``schedule(epoch, lr)`` (``epoch`` 0-based, ``lr`` the current rate), or to ``schedule(epoch)``
    for a one-argument schedule; the epoch logs (and so the history) get ``learning_rate``.

    ``schedule`` must return a float (ValueError otherwise). ``verbose=1`` prints every update.

    >>> halve = LearningRateScheduler(lambda epoch, lr: lr / 2)
    """

    logs_added = ("learning_rate",)     # the names it adds to the epoch logs

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def _update_optimizer_lr(self, optimizer, epoch):
        if not hasattr(optimizer, "learning_rate"):
            raise ValueError('Optimizer must have a "learning_rate" attribute.')
        try:                                       # schedule(epoch, lr)
            learning_rate = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:                          # the older one-argument form: schedule(epoch)
            learning_rate = self.schedule(epoch)
        if not isinstance(learning_rate, numbers.Real) or isinstance(learning_rate, numbers.Integral):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {learning_rate}")
        optimizer.learning_rate = float(learning_rate)
        return optimizer.learning_rate

    def on_epoch_begin(self, epoch, logs=None):
        learning_rate = self._update_optimizer_lr(self.model.optimizer, epoch)
        if self.verbose > 0:
            print_msg(self, f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {learning_rate}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)
