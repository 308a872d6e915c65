"""The base :class:`Callback` (Keras 3's ``keras.callbacks.Callback``) and :func:`overrides`."""
from __future__ import annotations

__all__ = ["Callback", "FitLogs", "overrides", "pythonify_logs", "print_msg"]


class FitLogs:
    """The names one ``fit`` will log, known before its first step (for :meth:`Callback.check_before_fit`).

    ``epoch``: the names of the epoch-end logs (``loss``, the compiled metrics, their ``val_`` forms
    when there is validation data, and what the callbacks before this one add); ``batch``: the names
    of the batch logs (no ``val_`` values); ``validation``: whether ``fit`` has validation data;
    ``certain``: False when a user callback before this one may add names of its own (its
    ``on_epoch_end`` can write any key into the shared logs), so a name not listed may still come.
    """

    def __init__(self, epoch, batch, validation: bool, certain: bool = True):
        self.epoch, self.batch = frozenset(epoch), frozenset(batch)
        self.validation, self.certain = bool(validation), bool(certain)

    def adding(self, names, certain: bool) -> "FitLogs":
        """These logs, with ``names`` added to the epoch logs (and ``certain`` and-ed in)."""
        return FitLogs(self.epoch | set(names), self.batch, self.validation, self.certain and certain)

    def never_logged(self, name: str, batch: bool = False) -> bool:
        """Is ``name`` certainly never in the (batch, else epoch) logs?"""
        return self.certain and name not in (self.batch if batch else self.epoch)

    def describe(self, batch: bool = False) -> str:
        """``"fit logs 'loss', 'val_loss'"``, with a hint about ``val_`` names when there is no validation."""
        names = sorted(self.batch if batch else self.epoch)
        text = f"fit logs {', '.join(map(repr, names))}" if names else "fit logs nothing"
        if batch:
            return text + " in the batch logs (validation values exist only at epoch ends)"
        if not self.validation:
            text += " (val_ values need validation_data=(x_val, y_val) or validation_split=...)"
        return text


class Callback:
    """Base class of the callbacks of ``fit``; every hook does nothing.

    A callback overrides any of ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)``,
    ``on_train_batch_begin/end(batch, logs)`` (or their old aliases ``on_batch_begin/end``),
    ``on_test_*`` and ``on_predict_*``. ``fit`` sets ``self.model`` and ``self.params``
    (``epochs``, ``steps``, ``batch_size``, ``samples``, ``verbose``, and ``rank``: this
    process's rank in ``fit(distributed=True)``, else 0). Setting ``model.stop_training = True``
    ends training after the current step.

    Batch hooks run whenever a callback overrides them. Reading the batch logs costs a
    device-to-host copy every step on a GPU, so ``fit`` reads them only when some callback
    overrides ``on_train_batch_end``/``on_batch_end``. ``wants_batch_logs``: ``None`` (the
    default) decides by that; ``True`` always calls ``on_train_batch_end`` (the opt-in of
    earlier gpunet versions); ``False`` never calls it (for a callback whose batch hook is
    only needed under some settings, such as ``ModelCheckpoint(save_freq='epoch')``).
    """

    model = None
    params: dict = {}
    wants_batch_logs = None
    # the names this callback adds to the epoch logs; None: unknown (a user callback's on_epoch_end
    # may add any), which stops fit from refusing monitors it does not know of
    logs_added = None

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def check_before_fit(self, logs: FitLogs) -> None:
        """Called by ``fit`` before anything changes and before the first step, once ``model`` and
        ``params`` are set: raise (ValueError, or OSError for files) for a configuration that cannot
        work with what ``fit`` will log (``logs``, a :class:`FitLogs`). The base class checks nothing."""

    def on_batch_begin(self, batch, logs=None):
        """The old name of :meth:`on_train_batch_begin` (which calls it)."""

    def on_batch_end(self, batch, logs=None):
        """The old name of :meth:`on_train_batch_end` (which calls it)."""

    def on_epoch_begin(self, epoch, logs=None):
        """At the start of epoch ``epoch`` (0-based); ``logs`` is ``{}``."""

    def on_epoch_end(self, epoch, logs=None):
        """At the end of an epoch; ``logs``: ``{'loss': ..., 'accuracy': ..., 'val_loss': ...}``.
        Callbacks see the same dict, in order: a value one adds (``learning_rate``) reaches the
        next ones and the :class:`History`, which comes after the user's callbacks."""

    def on_train_batch_begin(self, batch, logs=None):
        """Before training batch ``batch`` (0-based, within the epoch)."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        """After training batch ``batch``; ``logs``: the loss and metrics averaged over the epoch's
        batches so far (as Keras 3's batch logs)."""
        self.on_batch_end(batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        """Before a batch of ``evaluate`` (or of the validation in ``fit``)."""

    def on_test_batch_end(self, batch, logs=None):
        """After a batch of ``evaluate`` (or of the validation in ``fit``)."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Before a batch of ``predict``."""

    def on_predict_batch_end(self, batch, logs=None):
        """After a batch of ``predict``."""

    def on_train_begin(self, logs=None):
        """At the start of ``fit``; ``logs`` is ``{}``."""

    def on_train_end(self, logs=None):
        """At the end of ``fit`` (also after an early stop); ``logs``: the last epoch's logs."""

    def on_test_begin(self, logs=None):
        """At the start of ``evaluate`` (or of the validation in ``fit``)."""

    def on_test_end(self, logs=None):
        """At the end of ``evaluate`` (or of the validation in ``fit``); ``logs``: its results."""

    def on_predict_begin(self, logs=None):
        """At the start of ``predict``."""

    def on_predict_end(self, logs=None):
        """At the end of ``predict``."""


def overrides(callback, *hooks: str) -> bool:
    """Does ``callback`` replace any of these :class:`Callback` hooks, in its class or on the instance?

    >>> class Counter(Callback):
    ...     def on_batch_end(self, batch, logs=None): pass
    >>> overrides(Counter(), "on_train_batch_end", "on_batch_end"), overrides(Callback(), "on_batch_end")
    (True, False)
    """
    for hook in hooks:
        method = getattr(callback, hook, None)
        if method is None:
            continue
        if getattr(method, "__func__", method) is not getattr(Callback, hook):
            return True
    return False


def pythonify_logs(logs) -> dict:
    """A new dict of ``logs`` (``None`` -> ``{}``), names sorted, nested dicts flattened, values
    converted with ``float()`` where they allow it (as Keras' ``pythonify_logs``)."""
    result = {}
    for key, value in sorted((logs or {}).items()):
        if isinstance(value, dict):
            result.update(pythonify_logs(value))
            continue
        if not isinstance(value, (float, str)) and getattr(value, "ndim", 0) == 0:
            try:
                value = float(value)
            except (TypeError, ValueError):
                pass
        result[key] = value
    return result



def print_msg(callback, message: str) -> None:
    """Print a callback's message (``verbose``), on rank 0 only in ``fit(distributed=True)``."""
    if (callback.params or {}).get("rank", 0) == 0:
        print(message)
