""":class:`MonitorCallback`: the base of callbacks that watch one logged value (Keras 3's rules)."""
from __future__ import annotations

import operator
import warnings

from .. import metrics as _metrics
from .callback import Callback, FitLogs


def metric_direction(metric) -> str | None:
    """``'up'`` for a metric where higher is better (accuracy), ``'down'`` for one where lower is
    better (a loss used as a metric), else the metric's own ``direction`` attribute (or None)."""
    if isinstance(metric, _metrics.Accuracy):
        return "up"
    if isinstance(metric, _metrics.LossMetric):
        return "down"
    direction = getattr(metric, "direction", None)
    return direction if direction in ("up", "down") else None


class MonitorCallback(Callback):
    """Base of callbacks that watch one logged value.

    Args:
        monitor: the logged name (``'val_loss'``, ``'accuracy'``, ...).
        mode: ``'min'``, ``'max'`` or ``'auto'``: minimize ``loss``/``val_loss`` and the compiled
            metrics that are losses (``'mse'``), maximize accuracy metrics; ``'auto'`` raises
            ValueError (when training starts) for a name that is none of these. An unknown mode
            warns and falls back to ``'auto'``.
        baseline: the initial best value (None: the first value seen is the best).
        min_delta: the least change that counts as an improvement.

    ``monitor_op`` is ``operator.lt`` (minimize) or ``operator.gt`` (maximize) once
    :meth:`set_monitor_op` ran (at the start of training, or at the first epoch end).
    """

    logs_added = ()     # the names it adds to the epoch logs

    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=2)
            mode = "auto"
        self.monitor = monitor
        self.mode = mode
        self.best = baseline
        self.min_delta = abs(min_delta)
        self.monitor_op = None

    def monitor_in_use(self) -> bool:
        """Does this callback read ``monitor`` at all? (ModelCheckpoint: only with ``save_best_only``.)"""
        return True

    def monitors_batch_logs(self) -> bool:
        """Does it read ``monitor`` from the batch logs (no ``val_`` values there) rather than the epoch's?"""
        return False

    def check_before_fit(self, logs: FitLogs) -> None:
        """In ``'auto'`` mode, refuse a ``monitor`` whose direction cannot be told: Keras' ValueError, raised
        now rather than after the first epoch, and naming what ``fit`` logs when the monitor is never
        among it. (A monitor that is a loss or a known metric but is not logged, such as ``'val_loss'``
        without validation data, warns at each epoch end, as in Keras.)"""
        if not isinstance(self.monitor, str):
            raise TypeError(f"{type(self).__name__}: monitor must be a logged name such as 'val_loss', got "
                            f"{self.monitor!r}")
        if self.model is None:
            return
        try:
            self.set_monitor_op()
        except ValueError as exc:
            batch = self.monitors_batch_logs()
            own = logs.adding(self.logs_added or (), True)
            if not own.never_logged(self.monitor, batch):
                raise
            raise ValueError(f"{exc} Besides, fit will never log {self.monitor!r}: {own.describe(batch)}") from None

    def set_monitor_op(self):
        """Choose ``monitor_op`` from ``mode`` (and, for 'auto', from the model's compiled metrics)."""
        if self.mode == "min":
            self.monitor_op = operator.lt
        elif self.mode == "max":
            self.monitor_op = operator.gt
        else:
            name = self.monitor.removeprefix("val_")
            op = operator.lt if name == "loss" else None
            for metric in getattr(self.model, "metrics", None) or []:
                if getattr(metric, "name", None) == name and metric_direction(metric) is not None:
                    op = operator.gt if metric_direction(metric) == "up" else operator.lt
            if op is None:
                raise ValueError(
                    f"{type(self).__name__} callback received monitor={self.monitor}, but gpunet isn't able to "
                    "automatically determine whether that metric should be maximized or minimized. Pass "
                    "`mode='max'` in order to monitor based on the highest metric value, or pass `mode='min'` "
                    "in order to use the lowest value.")
            self.monitor_op = op

    def is_improvement(self, monitor_value, reference_value) -> bool:
        """Is ``monitor_value`` better than ``reference_value`` by more than ``min_delta``?
        (Always, when the reference is None.)"""
        if reference_value is None:
            return True
        if self.monitor_op is None:
            self.set_monitor_op()
        delta = self.min_delta if self.monitor_op is operator.gt else -self.min_delta
        return bool(self.monitor_op(monitor_value - delta, reference_value))

    # Keras' names, for callbacks written against keras.callbacks.MonitorCallback
    def _set_monitor_op(self):
        self.set_monitor_op()

    def _is_improvement(self, monitor_value, reference_value):
        return self.is_improvement(monitor_value, reference_value)

    def get_monitor_value(self, logs):
        """``logs[monitor]``, or None with a warning naming the logged values when it is missing."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"{type(self).__name__} is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}", stacklevel=2)
        return value
