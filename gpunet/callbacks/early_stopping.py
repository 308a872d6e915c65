""":class:`EarlyStopping`: stop training when a monitored value has stopped improving (Keras 3's rules)."""
from __future__ import annotations

import warnings

from .callback import print_msg
from .monitor_callback import MonitorCallback


class EarlyStopping(MonitorCallback):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: the logged value to watch (default ``'val_loss'``).
        min_delta: the least change that counts as an improvement.
        patience: epochs without improvement after which training stops. The first epoch
            watched sets the best value; with ``patience=0`` training stops at the first epoch
            that does not improve on it (never at epoch 0).
        verbose: 1 prints ``Epoch N: early stopping`` (and the restore) at the end of training.
        mode: 'min', 'max' or 'auto' (see :class:`MonitorCallback`).
        baseline: a value to beat: epochs that improve on the best value so far but not on the
            baseline do not reset the patience count, so training stops after ``patience``
            epochs when the baseline is never beaten.
        restore_best_weights: at the end of training (whatever stopped it) give the model the
            weights of the best epoch watched (even when no epoch beat the ``baseline``).
        start_from_epoch: epochs to wait before watching (a warm-up).

    A missing ``monitor`` value warns and is skipped (as in Keras); ``'auto'`` mode with a name
    that is neither a loss nor a compiled metric raises ValueError when training starts.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.wait = 0
        self.stopped_epoch = 0
        self.restore_best_weights = restore_best_weights
        self.best_weights = None
        self.best_epoch = 0
        self.start_from_epoch = start_from_epoch

    def on_train_begin(self, logs=None):
        # instances may be reused across fit calls
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        if self.model is not None:
            self.set_monitor_op()        # an impossible 'auto' monitor fails now, not after an epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self.set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # nothing better seen yet: the current weights are the best
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self.is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # restart the count only when both the baseline and the previous best are beaten
            if self.baseline is None or self.is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print_msg(self, f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print_msg(self, f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(logs)}", stacklevel=2)
        return value
