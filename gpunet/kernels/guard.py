"""The loss guard's flag: set on the device by the first non-finite loss (``guard.cu``)."""
from __future__ import annotations

from . import cuda

SOURCE = cuda.Source(__file__, "guard.cu")


def guard_loss(xp, loss, halt, bad_step, bad_loss, step) -> None:
    """Set the flag ``halt`` (int32 ``(1,)``) at the first non-finite ``loss`` (0-d float32), recording
    ``step`` in ``bad_step`` (int64 ``(1,)``) and the loss in ``bad_loss`` (float32 ``(1,)``).
    On a GPU this is one tiny kernel: nothing is read back, the host looks at ``halt`` later."""
    if cuda.is_gpu(xp):
        SOURCE.launch("guard_loss", 1, (xp.ascontiguousarray(loss, dtype="float32"), halt, bad_step, bad_loss,
                                        cuda.i64(step)))
    elif not halt[0] and not xp.isfinite(loss):
        halt[0], bad_step[0], bad_loss[0] = 1, step, loss
