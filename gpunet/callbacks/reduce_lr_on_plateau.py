""":class:`ReduceLROnPlateau`: lower the learning rate when a monitored value stops improving."""
from __future__ import annotations

import struct
import warnings

from .callback import print_msg
from .monitor_callback import MonitorCallback


def _float32(value) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


class ReduceLROnPlateau(MonitorCallback):
    """Multiply ``model.optimizer.learning_rate`` by ``factor`` after ``patience`` epochs without an
    improvement of ``monitor`` by more than ``min_delta``; then wait ``cooldown`` epochs before
    counting again. The rate never goes below ``min_lr``. The epoch logs (and so the history)
    get ``learning_rate``, the rate the epoch trained with.

    >>> reduce_lr = ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=5, min_lr=0.001)
    """

    logs_added = ("learning_rate",)     # the names it adds to the epoch logs

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.factor = factor
        self.min_lr = min_lr
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.cooldown_counter = 0
        self.wait = 0

    def _reset(self):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs=None):
        self._reset()
        if self.model is not None:
            self.set_monitor_op()        # an impossible 'auto' monitor fails now, not after an epoch

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _reduce_optimizer_lr(self, optimizer, epoch) -> bool:
        old_lr = float(optimizer.learning_rate)
        if old_lr > _float32(self.min_lr):     # as Keras: min_lr rounded to float32
            new_lr = max(old_lr * self.factor, self.min_lr)
            optimizer.learning_rate = float(new_lr)
            if self.verbose > 0:
                print_msg(self, f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
            return True
        return False

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self.set_monitor_op()
        if logs is None:
            logs = {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}.", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce_optimizer_lr(self.model.optimizer, epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0
