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


class FileFormatError(ValueError):
    """A file gpunet read is not what it must be (corrupt, crafted, or over a size budget): the message
    names the file and the problem, and nothing was changed. ``path`` is the file (or None)."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class CheckpointError(FileFormatError):
    """A file that is not a readable gpunet checkpoint or weights file, or a model that cannot be saved
    as one."""


class DatasetFormatError(FileFormatError):
    """A dataset file (``.npz``, IDX) that is corrupt, crafted or not the dataset it should be."""
