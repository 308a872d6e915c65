""":class:`CallbackList`: the callbacks of one ``fit`` (or ``evaluate``/``predict``), called as one."""
from __future__ import annotations

from .callback import Callback, FitLogs, overrides, pythonify_logs
from .history import History
from .progbar_logger import ProgbarLogger
from .terminate_on_nan import TerminateOnNaN


def _batch_end_wanted(cb) -> bool:
    flag = cb.wants_batch_logs
    return bool(flag) if flag is not None else overrides(cb, "on_train_batch_end", "on_batch_end")


def _logs(logs):
    """A new logs dict: of ``logs``, or of ``logs(False)`` (the running means) when the caller passed
    the function ``logs_fn(last)`` that reads them."""
    return pythonify_logs(logs(False) if callable(logs) else logs)


class CallbackList(Callback):
    """The user's callbacks, then a :class:`History` (unless one was given) and, for ``verbose``
    1 or 2, a :class:`ProgbarLogger` (unless one was given), as Keras orders them; each ``on_*``
    hook calls every one of them in that order, with one shared logs dict.

    Batch hooks: only callbacks that override them (or set ``wants_batch_logs=True``) are called,
    so ``fit`` reads the batch logs from the device only when someone needs them
    (:meth:`reads_logs_after`). The batch-end hooks accept the logs as a dict, or as a function
    ``logs_fn(last)`` called (with ``last=False``: the epoch's running means) only when needed.
    """

    def __init__(self, callbacks=None, model=None, params=None, *, add_history=True, add_progbar=None):
        super().__init__()
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be gpunet.callbacks.Callback instances, got {type(cb).__name__}")
        params = dict(params or {})
        self.callbacks = callbacks
        self.history = next((cb for cb in callbacks if isinstance(cb, History)), None)
        self.progress = next((cb for cb in callbacks if isinstance(cb, ProgbarLogger)), None)
        if self.history is None and add_history:
            self.history = History()
            self.callbacks.append(self.history)
        if add_progbar is None:
            add_progbar = bool(params.get("verbose"))
        if self.progress is None and add_progbar:
            self.progress = ProgbarLogger(params.get("verbose", 1) or 1)
            self.callbacks.append(self.progress)
        self._batch = 0          # the training batch in flight (for the non-finite-loss stop's message)
        self._index_hooks()
        self.set_model(model)
        self.set_params(params)

    def _index_hooks(self):
        """Which callbacks have batch hooks (so the others cost nothing per step)."""
        cbs = self.callbacks
        self._train_batch_begin = [cb for cb in cbs if overrides(cb, "on_train_batch_begin", "on_batch_begin")]
        self._train_batch_end = [cb for cb in cbs if _batch_end_wanted(cb)]
        self._test_batch_begin = [cb for cb in cbs if overrides(cb, "on_test_batch_begin")]
        self._test_batch_end = [cb for cb in cbs if overrides(cb, "on_test_batch_end")]
        self._predict_batch_begin = [cb for cb in cbs if overrides(cb, "on_predict_batch_begin")]
        self._predict_batch_end = [cb for cb in cbs if overrides(cb, "on_predict_batch_end")]
        self._nan_raisers = [cb for cb in cbs if isinstance(cb, TerminateOnNaN)]

    @property
    def wants_batch_logs(self) -> bool:
        """Does some callback read the logs after every training batch?"""
        return bool(self._train_batch_end)

    @property
    def wants_test_batch_logs(self) -> bool:
        """Does some callback read the logs after every ``evaluate`` batch?"""
        return bool(self._test_batch_end)

    def append(self, callback):
        """Add a callback at the end (it gets this list's model and params)."""
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be gpunet.callbacks.Callback instances, got {type(callback).__name__}")
        self.callbacks.append(callback)
        if self.model is not None:
            callback.set_model(self.model)
        if self.params:
            callback.set_params(self.params)
        self._index_hooks()

    def set_model(self, model):
        if model is None:
            return
        super().set_model(model)
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        self.params = params
        if params:
            for cb in self.callbacks:
                cb.set_params(params)

    def check_before_fit(self, logs: FitLogs) -> None:
        """Every callback's :meth:`~Callback.check_before_fit`, in order; each sees the names the
        callbacks before it add to the epoch logs (and, after a user callback that may add names of
        its own, that a name not listed may still come)."""
        for cb in self.callbacks:
            cb.check_before_fit(logs)
            added = cb.logs_added
            logs = logs.adding(added or (), added is not None or not overrides(cb, "on_epoch_end"))

    def reads_logs_after(self, step: int) -> bool:
        """Will the batch-end hooks or a progress refresh read the running logs after ``step`` (1-based)?"""
        return bool(self._train_batch_end) or (self.progress is not None and self.progress.wants_refresh(step))

    # ------------------------------------------------------------------ train
    def on_train_begin(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self._nan_raisers:         # TerminateOnNaN(raise_error=True): raise before any on_train_end
            cb.check_stop_reason(self._batch)
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._batch = 0
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._batch = batch
        if self._train_batch_begin:
            logs = pythonify_logs(logs)
            for cb in self._train_batch_begin:
                cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        """Batch-end hooks (when some want them) and a progress refresh (when due). ``logs`` is a dict
        or a function ``logs_fn(last)`` giving the running logs, called at most once here: the
        epoch's means so far (``last=False``), which is what Keras 3 passes to batch hooks."""
        self._batch = batch + 1
        refresh = self.progress is not None and self.progress.wants_refresh(batch + 1)
        if not (self._train_batch_end or refresh):
            return
        batch_logs = _logs(logs)
        for cb in self._train_batch_end:
            cb.on_train_batch_end(batch, batch_logs)
        if refresh:
            self.progress.refresh(batch + 1, batch_logs)

    def on_batch_begin(self, batch, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_batch_begin(batch, logs)

    def on_batch_end(self, batch, logs=None):
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_batch_end(batch, logs)

    # ------------------------------------------------------------------ evaluate
    def on_test_begin(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_test_begin(logs)

    def on_test_end(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        if self._test_batch_begin:
            logs = pythonify_logs(logs)
            for cb in self._test_batch_begin:
                cb.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if self._test_batch_end:
            logs = _logs(logs)
            for cb in self._test_batch_end:
                cb.on_test_batch_end(batch, logs)

    # ------------------------------------------------------------------ predict
    def on_predict_begin(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_predict_begin(logs)

    def on_predict_end(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_predict_end(logs)

    def on_predict_batch_begin(self, batch, logs=None):
        if self._predict_batch_begin:
            logs = pythonify_logs(logs)
            for cb in self._predict_batch_begin:
                cb.on_predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        if self._predict_batch_end:
            logs = _logs(logs)
            for cb in self._predict_batch_end:
                cb.on_predict_batch_end(batch, logs)
