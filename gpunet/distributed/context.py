"""This process's place in an MPI job: joining it, ranks, and collectives on single arrays."""
from __future__ import annotations

import os
import socket
import sys

from .. import backend
from ..errors import DistributedUnavailableError
from .transport import Transport, device_of


INSTALL_HINT = ("install MPI for Python and an MPI library: pip install 'gpunet[distributed]' mpich "
                "(or apt-get install openmpi-bin / mpich for the system MPI), then launch with "
                "mpirun -n 2 python your_script.py")

_ctx = None


class Context:
    """This process's place in the MPI job: the communicator, ranks, and per-device transports."""

    def __init__(self, comm, mpi):
        self.MPI, self.comm = mpi, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self._transports = {}

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def transport(self, device) -> Transport:
        """The all-reduce/broadcast path for buffers on ``device``. A GPU's is made collectively, once per
        set of the ranks' GPUs (asked of every rank on each call, so that all ranks agree on it)."""
        key = device
        if device.is_gpu and self.size > 1:
            key = tuple(self.comm.allgather((socket.gethostname(), backend.gpu_bus_id(device))))
        t = self._transports.get(key)
        if t is None:
            t = self._transports[key] = Transport(self, device, where=key if device.is_gpu else None)
        return t


def init(comm=None, limit_threads: bool = True) -> Context:
    """Join the MPI job (``MPI.COMM_WORLD`` unless ``comm`` is given); idempotent.

    Raises :class:`~gpunet.errors.DistributedUnavailableError` when mpi4py or an MPI library
    is missing. With several ranks per machine, BLAS threads are limited to
    ``cores // local_size`` each (``limit_threads=False`` keeps them). An unhandled exception
    in any rank aborts the whole job (as ``python -m mpi4py`` does) instead of leaving the
    other ranks waiting in a collective forever.
    """
    global _ctx
    if _ctx is not None:
        return _ctx
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedUnavailableError(f"distributed training needs mpi4py ({exc}); {INSTALL_HINT}") from None
    except Exception as exc:     # mpi4py present but no loadable MPI library (RuntimeError: cannot load MPI)
        raise DistributedUnavailableError(f"mpi4py cannot load an MPI library ({type(exc).__name__}: {exc}); "
                                          f"{INSTALL_HINT}") from None
    _ctx = Context(comm if comm is not None else MPI.COMM_WORLD, MPI)
    if _ctx.size > 1:
        _abort_on_uncaught_exception(_ctx)
        if limit_threads and _ctx.local_size > 1:
            _limit_blas_threads(max(1, (os.cpu_count() or 1) // _ctx.local_size))
    return _ctx


def is_initialized() -> bool:
    return _ctx is not None


def rank() -> int:
    """This process's rank in the job (0 before :func:`init`)."""
    return _ctx.rank if _ctx else 0


def size() -> int:
    """Number of processes in the job (1 before :func:`init`)."""
    return _ctx.size if _ctx else 1


def local_rank() -> int:
    """Rank among the processes on this machine (picks the GPU)."""
    return _ctx.local_rank if _ctx else 0


def local_size() -> int:
    return _ctx.local_size if _ctx else 1


def is_root() -> bool:
    """True on rank 0 — the rank that prints and writes files."""
    return rank() == 0


def local_device(kind: str = "gpu"):
    """This rank's device: ``'gpu'`` gives ``gpu:<local rank mod GPUs on this machine>``
    (one rank per GPU), ``'cpu'`` the CPU. Calls :func:`init`."""
    init()
    if str(kind).lower() in ("cpu", "host"):
        return backend.device("cpu")
    count = backend.cuda_device_count()
    return backend.device(f"gpu:{local_rank() % count}")


def barrier() -> None:
    """Wait until every rank gets here."""
    init().comm.Barrier()


def broadcast(array, root: int = 0):
    """``array`` (NumPy or CuPy, same shape and dtype on every rank) replaced in place by rank
    ``root``'s values; returned for convenience."""
    ctx = init()
    ctx.transport(device_of(array)).broadcast(array, root)
    return array


def allreduce(array, average: bool = True):
    """A new array: the sum (``average=False``) or mean of ``array`` over all ranks.

    For custom training loops; ``fit(distributed=True)`` packs all gradients into one buffer instead.
    """
    ctx = init()
    dev = device_of(array)
    out = dev.xp.array(array, copy=True)
    ctx.transport(dev).allreduce_sum(out)
    if average:
        out /= ctx.size
    return out


def root_print(*args, **kwargs) -> None:
    """``print`` on rank 0 only."""
    if is_root():
        print(*args, **kwargs)


# ---------------------------------------------------------------------------- process set-up
def _abort_on_uncaught_exception(ctx) -> None:
    """Make an uncaught exception in one rank end the job (MPI_Abort) rather than hang the others."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        try:
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            ctx.comm.Abort(1 if not issubclass(kind, KeyboardInterrupt) else 130)

    sys.excepthook = hook


def _limit_blas_threads(n: int) -> None:
    """At most ``n`` BLAS/OpenMP threads in this process, unless the user set a thread count."""
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    global _thread_limits
    _thread_limits = threadpool_limits(limits=n)     # kept: the limit lasts for the process


_thread_limits = None

