"""Training callbacks: progress display, History, EarlyStopping, ModelCheckpoint, TerminateOnNaN.

A callback overrides any of ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)``
and ``on_train_batch_end(batch, logs)``; ``fit`` sets ``self.model`` and ``self.params``
(``epochs``, ``steps``, ``batch_size``, ``samples``, ``verbose``, and ``rank``: this process's
rank in ``fit(distributed=True)``, else 0) and runs them all through a :class:`CallbackList`.
Setting ``model.stop_training = True`` ends training after the current step.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "MonitorCallback", "EarlyStopping",
           "ModelCheckpoint", "TerminateOnNaN"]


class Callback:
    """Base class; every hook does nothing."""

    model = None
    params: dict = {}
    wants_batch_logs = False   # True: fit reads the loss back every step for on_train_batch_end

    def set_model(self, model):
        self.model = model

    def set_params(self, params: dict):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


class History(Callback):
    """Records the epoch-end logs: ``history.history['loss']``, ``['val_accuracy']`` ...

    Also ``history.epoch`` (epoch indices), ``history.params`` and ``history.epoch_times``
    (seconds per epoch, wall clock).
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.epoch_times = []
        self.params = {}
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        self.epoch_times.append(time.perf_counter() - self._t0)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _fmt_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


def _fmt_step(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def format_evaluation(steps: int, seconds: float, logs: dict) -> str:
    """``313/313 - 1s 2ms/step - accuracy: 0.9785 - loss: 0.0712``: the line ``evaluate`` prints."""
    return f"{steps}/{steps} - {_fmt_time(seconds)} {_fmt_step(seconds / max(steps, 1))} - {format_logs(logs)}"


def format_logs(logs: dict) -> str:
    """``accuracy: 0.9273 - loss: 0.2524`` (names sorted, as Keras 3 prints them)."""
    return " - ".join(f"{k}: {v:.4f}" for k, v in sorted(logs.items()))


class ProgbarLogger(Callback):
    """Keras-style progress: ``469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 4ms/step - accuracy: 0.9273 - loss: 0.2524``.

    verbose=1 redraws one live bar per epoch on a terminal (a few times per second, reading
    the running values from the device only then) and prints just the final line per epoch
    when output is not a terminal; verbose=2 prints one line per epoch.
    """

    REFRESH_S = 0.25
    WIDTH = 20

    def __init__(self, verbose: int = 1, stream=None):
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.live = verbose == 1 and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.epochs = self.steps = 0
        self._last = 0.0
        self._t0 = 0.0

    def on_train_begin(self, logs=None):
        self.epochs = self.params["epochs"]
        self.steps = self.params["steps"]

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self._last = time.perf_counter()
        if self.verbose:
            self._write(f"Epoch {epoch + 1}/{self.epochs}\n")

    def wants_refresh(self, step: int) -> bool:
        """Cheap check made every step: is it time to redraw the live bar?"""
        return self.live and (time.perf_counter() - self._last >= self.REFRESH_S)

    def refresh(self, step: int, logs: dict) -> None:
        self._last = time.perf_counter()
        elapsed = self._last - self._t0
        per = elapsed / max(step, 1)
        eta = per * (self.steps - step)
        self._write("\r" + self._line(step, f"{_fmt_time(eta)} {_fmt_step(per)}", logs), fit=True)

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose:
            return
        elapsed = time.perf_counter() - self._t0
        per = _fmt_step(elapsed / max(self.steps, 1))
        logs = logs or {}
        if self.verbose == 2:
            self._write(f"{self.steps}/{self.steps} - {_fmt_time(elapsed)} - {per} - {format_logs(logs)}\n")
        else:
            self._write(("\r" if self.live else "") + self._line(self.steps, f"{_fmt_time(elapsed)} {per}", logs)
                        + ("\x1b[K" if self.live else "") + "\n")

    def _line(self, step, timing, logs):
        width = len(str(self.steps))
        filled = self.WIDTH if step >= self.steps else int(self.WIDTH * step / max(self.steps, 1))
        bar = "━" * filled + ("╸" if filled < self.WIDTH else "") + " " * max(self.WIDTH - filled - 1, 0)
        text = f"{step:>{width}}/{self.steps} {bar} {timing}"
        return f"{text} - {format_logs(logs)}" if logs else text

    def _write(self, text, fit=False):
        if fit:
            cols = shutil.get_terminal_size((100, 20)).columns
            text = text[:cols]
        self.stream.write(text)
        self.stream.flush()


class MonitorCallback(Callback):
    """Base of callbacks that watch one logged value: ``monitor``, ``mode`` ('min', 'max', or 'auto':
    max for accuracy-like names) and ``min_delta``, the least change that counts as better."""

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{type(self).__name__} mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.min_delta = abs(float(min_delta))

    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def is_improvement(self, value, best) -> bool:
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta

    def monitored_value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r} but the logs only have "
                           f"{sorted(logs or {})}; pass validation data or monitor one of those")
        return value


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode`` is 'min', 'max' or 'auto' (max for accuracy-like names). With
    ``restore_best_weights=True`` the model gets the weights of the best epoch back.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose = int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.best = self.baseline if self.baseline is not None else self.worst()
        self.best_weights = None
        self.best_epoch = 0
        self.stopped_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        value = self.monitored_value(logs)
        self.wait += 1
        if self.is_improvement(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping (best {self.monitor} {self.best:.4f} "
                      f"at epoch {self.best_epoch + 1})")


class ModelCheckpoint(MonitorCallback):
    """Save the model after every epoch, or only when ``monitor`` improves (``save_best_only``).

    By default (as in Keras) a full training checkpoint is written with ``model.save``:
    weights, optimizer state, epochs completed and RNG state, so that
    ``models.load_model(path)`` + ``fit(..., initial_epoch=model.epochs_completed)`` resumes
    exactly; ``save_weights_only=True`` writes just the weights (``model.save_weights``).
    Every write is atomic: a crash leaves the previous file complete. In ``fit(distributed=True)``
    only rank 0 writes (every rank holds the same weights).

    ``filepath`` may contain ``{epoch}`` and log names, e.g. ``'ckpt-{epoch:02d}-{val_loss:.3f}.npz'``.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, mode="auto",
                 save_weights_only=False):
        super().__init__(monitor, mode)
        self.filepath, self.verbose = os.fspath(filepath), verbose
        self.save_best_only, self.save_weights_only = save_best_only, bool(save_weights_only)
        self.best = self.worst()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.params.get("rank", 0) != 0:     # fit(distributed=True): rank 0 writes, the weights are equal
            return
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = self.monitored_value(logs)
            if not self.is_improvement(value, self.best):
                return
            self.best = value
        (self.model.save_weights if self.save_weights_only else self.model.save)(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved to {path}")


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite.

    Kept for Keras code: ``fit`` itself already stops at a non-finite loss, before applying
    that step (see :meth:`gpunet.models.Sequential.fit`)."""

    wants_batch_logs = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class CallbackList:
    """The callbacks of one ``fit``: :class:`History` first, then the progress bar (``verbose``
    1 or 2), then the user's, in order; each ``on_*`` hook calls every one of them."""

    def __init__(self, callbacks, model, params: dict):
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be gpunet.callbacks.Callback instances, got {type(cb).__name__}")
        self.history = History()
        self.progress = ProgbarLogger(params["verbose"]) if params["verbose"] else None
        self.callbacks = [self.history] + ([self.progress] if self.progress else []) + callbacks
        self.history.params = dict(params)
        self.wants_batch_logs = any(cb.wants_batch_logs for cb in self.callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)

    def reads_logs_after(self, step: int) -> bool:
        """Will the batch-end hooks or a progress refresh read the running logs after ``step`` (1-based)?"""
        return self.wants_batch_logs or (self.progress is not None and self.progress.wants_refresh(step))

    def on_train_begin(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs_fn):
        """Batch-end hooks (when some want them) and a progress refresh (when due); ``logs_fn(last)``
        gives the running logs (``last``: the batch's own loss, as Keras' batch logs)."""
        if self.wants_batch_logs:
            logs = logs_fn(True)
            for cb in self.callbacks:
                cb.on_train_batch_end(batch, logs)
        if self.progress is not None and self.progress.wants_refresh(batch + 1):
            self.progress.refresh(batch + 1, logs_fn(False))
