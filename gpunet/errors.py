"""Errors raised by gpunet.

Every error is a subclass of a built-in exception (``ValueError``,
``TypeError`` or ``RuntimeError``) so that existing ``except`` clauses keep
working; the message always names the problem, the offending value or shape,
and how to fix it.
"""


class DeviceUnavailableError(RuntimeError):
    """A device was asked for that this machine cannot provide (no CuPy, no CUDA GPU, bad index)."""


class DeviceMismatchError(ValueError):
    """An operation mixed tensors that live on two different devices."""


class ShapeError(ValueError):
    """Operands or data have shapes that the operation cannot accept."""


class NotCompiledError(RuntimeError):
    """``fit``/``evaluate`` was called on a model that has not been compiled."""


class DistributedUnavailableError(RuntimeError):
    """Distributed training was asked for but mpi4py or an MPI library is missing."""


class CheckpointError(ValueError):
    """A file that is not a readable gpunet checkpoint, or a model that cannot be saved as one."""
