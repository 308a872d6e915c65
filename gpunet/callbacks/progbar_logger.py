"""Keras-style progress display (:class:`ProgbarLogger`) and the log line formats of ``fit``/``evaluate``."""
from __future__ import annotations

import numbers
import shutil
import sys
import time

from .callback import Callback

__all__ = ["ProgbarLogger", "format_logs", "format_evaluation"]


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
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, numbers.Real) else f"{k}: {v}" for k, v in sorted(logs.items()))


class ProgbarLogger(Callback):
    """Keras-style progress: ``469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 4ms/step - accuracy: 0.9273 - loss: 0.2524``.

    verbose=1 redraws one live bar per epoch on a terminal (a few times per second, reading
    the running values from the device only then) and prints just the final line per epoch
    when output is not a terminal; verbose=2 prints one line per epoch.
    """

    logs_added = ()     # the names it adds to the epoch logs

    REFRESH_S = 0.25
    WIDTH = 20

    def __init__(self, verbose: int = 1, stream=None):
        super().__init__()
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
