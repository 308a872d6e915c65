""":class:`ModelCheckpoint`: save the model (or its weights) every epoch, every N batches, or when it improves."""
from __future__ import annotations

import os
import warnings

from .callback import FitLogs, print_msg
from .file_checks import TemplateFieldError, check_writable_folder, format_sample, template_fields
from .monitor_callback import MonitorCallback


class ModelCheckpoint(MonitorCallback):
    """Save the model after every epoch (or every ``save_freq`` batches), or only when ``monitor``
    improves (``save_best_only``).

    By default (as in Keras) a full training checkpoint is written with ``model.save``:
    weights, optimizer state, epochs completed and RNG state, so that
    ``models.load_model(path)`` + ``fit(..., initial_epoch=model.epochs_completed)`` resumes
    exactly; ``save_weights_only=True`` writes just the weights (``model.save_weights``).
    Every write is atomic: a crash leaves the previous file complete. The folder of the file is
    created when missing. In ``fit(distributed=True)`` only rank 0 writes (every rank holds the
    same weights).

    Args:
        filepath: the file to write (gpunet's ``.npz`` format whatever the name); it may contain
            ``{epoch}`` (1-based), ``{batch}`` (1-based, with an integer ``save_freq``) and logged
            names, e.g. ``'ckpt/{epoch:02d}-{val_loss:.3f}.npz'``.
        monitor, mode: the value ``save_best_only`` watches (see :class:`MonitorCallback`).
        verbose: 1 prints a line for every save (and every skipped one with ``save_best_only``).
        save_best_only: save only when ``monitor`` improves on the best value so far (a missing
            value warns and saves).
        save_weights_only: write just the weights.
        save_freq: ``'epoch'``, or an integer: save after every that many batches (counted across
            epochs; the logs are then those of the batch).
        initial_value_threshold: the best value to beat at first, with ``save_best_only``.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, initial_value_threshold)
        self.verbose = verbose
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.save_weights_only = bool(save_weights_only)
        self.save_freq = save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0
        if self.save_freq != "epoch" and (not isinstance(self.save_freq, int) or isinstance(self.save_freq, bool)):
            raise ValueError(f"Unrecognized save_freq: {self.save_freq}. Expected save_freq are 'epoch' or "
                             "integer values")

    def monitor_in_use(self) -> bool:
        return bool(self.save_best_only)

    def monitors_batch_logs(self) -> bool:
        return self.save_freq != "epoch"

    def check_before_fit(self, logs: FitLogs) -> None:
        """Before the first step: the monitor (with ``save_best_only``), the file name template (no
        positional ``{}``, no name ``fit`` will never log, format specs that suit the values) and the
        folder (writable, or a writable parent to create it in). ValueError/OSError naming the fix."""
        super().check_before_fit(logs)
        owner = f"ModelCheckpoint(filepath={self.filepath!r})"
        batch = self.monitors_batch_logs()
        fixed = {"epoch", "batch"} if batch else {"epoch"}
        for name in template_fields(self.filepath, owner):
            if name not in fixed and logs.never_logged(name, batch):
                raise TemplateFieldError(f'Failed to format this callback filepath: "{self.filepath}". Reason: '
                                         f"{{{name}}} will never be logged by this fit; {logs.describe(batch)}, "
                                         f"and fills in {' and '.join(sorted(fixed))}")
        check_writable_folder(format_sample(self.filepath, {"epoch": 1, "batch": 1}, owner), owner, create=True)

    @property
    def wants_batch_logs(self):
        """Batch logs are read (and the batch hook called) only with an integer ``save_freq``."""
        return self.save_freq != "epoch"

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model(epoch=self._current_epoch, batch=batch, logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self.set_monitor_op()
        if self.save_freq == "epoch":
            self._save_model(epoch=epoch, batch=None, logs=logs)

    def _should_save_on_batch(self, batch):
        """Count the batches since the last save (across epochs); True every ``save_freq``."""
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            add_batches = batch + 1       # a new epoch
        else:
            add_batches = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add_batches
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save_model(self, epoch, logs, filepath):
        if not self.save_best_only:
            if self.verbose > 0:
                print_msg(self, f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=2)
            return True
        if getattr(current, "ndim", 0) > 0:
            warnings.warn(f"Can save best model only when `monitor` is a scalar value. Received: {current}. "
                          "Falling back to `save_best_only=False`.", stacklevel=2)
            return True
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self.is_improvement(current, self.best):
            if self.verbose > 0:
                print_msg(self, f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, "
                      f"saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            print_msg(self, f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _save_model(self, epoch, batch, logs):
        if (self.params or {}).get("rank", 0) != 0:    # fit(distributed=True): rank 0 writes, the weights are equal
            return
        logs = logs or {}
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IOError(f"Please specify a non-directory filepath for ModelCheckpoint. Filepath used is an "
                          f"existing directory: {filepath}")
        folder = os.path.dirname(filepath)
        if folder:
            os.makedirs(folder, exist_ok=True)
        (self.model.save_weights if self.save_weights_only else self.model.save)(filepath)
        if self.verbose > 0:
            print_msg(self, f"\nEpoch {epoch + 1}: finished saving model to {filepath}")

    def _get_file_path(self, epoch, batch, logs):
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(epoch=epoch + 1, **logs)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e}') from e
