""":class:`History`: the epoch-end logs of one ``fit``, returned by it."""
from __future__ import annotations

import time

from .callback import Callback


class History(Callback):
    """Records the epoch-end logs: ``history.history['loss']``, ``['val_accuracy']`` ...

    Also ``history.epoch`` (epoch indices), ``history.params`` and ``history.epoch_times``
    (seconds per epoch, wall clock). ``fit`` puts it after the user's callbacks (as Keras
    does), so values they add to the epoch logs (``learning_rate``) are recorded too.
    """

    logs_added = ()     # the names it adds to the epoch logs

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.epoch_times = []
        self._t0 = None

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.epoch_times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        self.epoch_times.append(time.perf_counter() - self._t0 if self._t0 is not None else 0.0)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            self.model.history = self       # as Keras: the model's history is the latest state
