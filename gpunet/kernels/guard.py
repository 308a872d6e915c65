"""The loss guard's flag: set on the device by the first non-finite loss (``guard.cu``)."""
from __future__ import annotations

from . import cuda

SOURCE = cuda.Source(__file__, "guard.cu")


def guard_loss(xp, loss, halt, bad_step, bad_loss, step) -> None:
    """Set the flag ``halt`` (int32 ``(1,)``) at the first non-finite ``loss`` (0-d float32), recording
    the step's id in ``bad_step`` (int64 ``(1,)``) and the loss in ``bad_loss`` (float32 ``(1,)``).

    ``step``: the id, a host int; or a step counter, an int64 ``(1,)`` array on the device holding the id,
    which the call advances by one (read and advanced on the device: a training step then passes no host
    value that changes from step to step). On a GPU this is one tiny kernel: nothing is read back, the host
    looks at ``halt`` later."""
    counter = getattr(step, "shape", None) is not None
    if cuda.is_gpu(xp):
        loss = loss if loss.dtype == "float32" and loss.flags.c_contiguous else \
            xp.ascontiguousarray(loss, dtype="float32")
        SOURCE.launch("guard_loss", 1, (loss, halt, bad_step, bad_loss, cuda.i64(0 if counter else step),
                                        step if counter else cuda.NULL))
        return
    if counter:
        step_id = int(step[0])
        step[0] = step_id + 1
    else:
        step_id = step
    if not halt[0] and not xp.isfinite(loss):
        halt[0], bad_step[0], bad_loss[0] = 1, step_id, loss
