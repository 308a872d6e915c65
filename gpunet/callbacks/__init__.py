"""Training callbacks, as Keras 3 has them: :class:`Callback`, :class:`CallbackList`, :class:`History`,
:class:`ProgbarLogger`, :class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`TerminateOnNaN`,
:class:`LearningRateScheduler`, :class:`ReduceLROnPlateau` and :class:`CSVLogger`.

A callback overrides any of ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)``,
``on_train_batch_begin/end(batch, logs)`` (and the other hooks of :class:`Callback`); ``fit``
sets ``self.model`` and ``self.params`` (``epochs``, ``steps``, ``batch_size``, ``samples``,
``verbose``, and ``rank``: this process's rank in ``fit(distributed=True)``, else 0) and runs
them all through a :class:`CallbackList`: the user's callbacks in order, then the History, then
the progress bar. Setting ``model.stop_training = True`` ends training after the current step.
Where gpunet differs from Keras, see ``tests/keras_conformance/DIFFERENCES-callbacks.md``.
"""
from __future__ import annotations

from .callback import Callback, FitLogs
from .callback_list import CallbackList
from .csv_logger import CSVLogger
from .early_stopping import EarlyStopping
from .history import History
from .learning_rate_scheduler import LearningRateScheduler
from .model_checkpoint import ModelCheckpoint
from .monitor_callback import MonitorCallback
from .progbar_logger import ProgbarLogger, format_evaluation, format_logs
from .reduce_lr_on_plateau import ReduceLROnPlateau
from .terminate_on_nan import TerminateOnNaN

__all__ = ["Callback", "FitLogs", "CallbackList", "History", "ProgbarLogger", "MonitorCallback", "EarlyStopping",
           "ModelCheckpoint", "TerminateOnNaN", "LearningRateScheduler", "ReduceLROnPlateau", "CSVLogger",
           "format_evaluation", "format_logs"]
