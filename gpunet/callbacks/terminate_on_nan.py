""":class:`TerminateOnNaN`: stop (or raise) at a NaN or infinite batch loss."""
from __future__ import annotations

import math

from .callback import Callback, print_msg


class TerminateOnNaN(Callback):
    """Stop training when a batch loss is NaN or infinite: ``model.stop_training = True``, or with
    ``raise_error=True`` a RuntimeError at once (no other callback's ``on_train_end`` runs).

    ``fit`` itself already stops at a non-finite loss, before applying that step, keeping the
    last finite weights (see ``model.stop_reason``); this callback is the Keras way to ask for it,
    and ``raise_error=True`` turns that stop into a RuntimeError.
    """

    logs_added = ()     # the names it adds to the epoch logs

    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                   "Terminating training immediately.")
            print_msg(self, f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True

    def check_stop_reason(self, batch):
        """With ``raise_error``: the RuntimeError for a ``fit`` that its loss guard stopped at a
        non-finite loss of batch ``batch`` (``model.stop_reason``) before any batch hook saw that loss
        (:class:`CallbackList` calls it first thing in ``on_train_end``)."""
        reason = getattr(self.model, "stop_reason", None)
        if self.raise_error and reason:
            raise RuntimeError(f"NaN or Inf loss encountered at batch {batch} ({reason}). "
                               "Terminating training immediately.")
