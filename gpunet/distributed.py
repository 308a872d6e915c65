"""Data-parallel training over MPI (mpi4py), with NCCL for GPU arrays.

Launch N copies of one script with MPI. Every copy (a *rank*) holds the whole model and the
whole dataset, computes its shard of every global batch, and the gradients are averaged by
one all-reduce per step, so every rank applies the same update and keeps the same weights::

    mpirun -n 2 python examples/mnist.py --distributed                 # 2 processes, this machine
    mpirun -n 8 python train.py                                        # 8 GPUs: one rank per GPU
    mpirun -n 16 -hosts node1:8,node2:8 python train.py                # two machines x 8 GPUs (MPICH syntax)

In a script one argument is all it takes. As in Keras' ``tf.distribute``, ``batch_size`` is
the *global* batch, split across the ranks, so N ranks train exactly like one process with
the same ``batch_size`` (same data order, same weights up to float32 rounding)::

    from gpunet import distributed, layers, models
    model = models.Sequential(device=distributed.local_device('gpu'))   # gpu:<local rank>; or 'cpu'
    ...
    model.fit(x, y, batch_size=128, epochs=5, distributed=True)     # every rank runs the same line
    loss, acc = model.evaluate(x_test, y_test, distributed=True)    # sharded and reduced: same on every rank
    if distributed.is_root():
        model.save('model.npz')

What ``fit(..., distributed=True)`` does (see :class:`DataParallel`):

* at the start, rank 0's weights, optimizer state and random state are broadcast, and every
  rank is checked to have the same data length and the same model;
* each epoch rank 0 draws the batch order and broadcasts it; the global batch ``[lo, hi)`` is
  cut into ``size`` contiguous shards and rank ``r`` computes shard ``r`` (dropout masks: rank
  ``r``'s rows of the masks one process would draw, see :func:`gpunet.random.batch_uniform`);
* each rank's gradients are scaled by ``n_r / n`` (its share of the batch) and packed, with the
  step's loss, metric sums and control flags, into **one** float buffer; one all-reduce (sum)
  gives every rank the global batch's mean gradient, loss and metrics;
* the non-finite-loss guard, Ctrl-C and ``stop_training`` act on those reduced values, so all
  ranks stop at the same step; progress bars, printing and ``ModelCheckpoint`` run on rank 0.

Transport: NumPy buffers go through MPI (``Allreduce`` in place). CuPy buffers go through
NCCL (``cupy.cuda.nccl``, communicator id shared over MPI) on the current stream, or, when
CuPy has no NCCL, through host memory and MPI. With several ranks on one machine each
rank's BLAS is limited to its share of the cores (threadpoolctl), unless
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` say otherwise.

Before :func:`init` (and in a script not launched by MPI) :func:`rank` is 0, :func:`size` is
1 and :func:`is_root` is True, so the same script runs without MPI.
"""
from __future__ import annotations

import math
import os
import shutil
import sys

from . import backend, random
from .errors import DistributedUnavailableError

np = backend.numpy

__all__ = ["init", "is_initialized", "rank", "size", "local_rank", "local_size", "is_root", "local_device",
           "barrier", "broadcast", "allreduce", "root_print", "mpiexec_command", "shard_bounds", "DataParallel",
           "DistributedUnavailableError"]

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

    def transport(self, device) -> "_Transport":
        """The all-reduce/broadcast path for buffers on ``device`` (made once per device)."""
        t = self._transports.get(device)
        if t is None:
            t = self._transports[device] = _Transport(self, device)
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
    ctx.transport(_device_of(array)).broadcast(array, root)
    return array


def allreduce(array, average: bool = True):
    """A new array: the sum (``average=False``) or mean of ``array`` over all ranks.

    For custom training loops; ``fit(distributed=True)`` packs all gradients into one buffer instead.
    """
    ctx = init()
    dev = _device_of(array)
    out = dev.xp.array(array, copy=True)
    ctx.transport(dev).allreduce_sum(out)
    if average:
        out /= ctx.size
    return out


def root_print(*args, **kwargs) -> None:
    """``print`` on rank 0 only."""
    if is_root():
        print(*args, **kwargs)


def mpiexec_command(n: int, hosts: str | None = "127.0.0.1") -> list:
    """``[mpiexec, -n, N, ...]`` to launch ``n`` ranks (on ``hosts``; ``None``: MPI's default).

    Prefers the ``mpiexec`` next to this Python (a virtual environment with ``pip install
    mpich``), then the one on ``PATH``. Raises DistributedUnavailableError when there is none.
    """
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.access(here, os.X_OK) else shutil.which("mpiexec") or shutil.which("mpirun")
    if exe is None:
        raise DistributedUnavailableError(f"no mpiexec/mpirun found next to {sys.executable} or on PATH; "
                                          f"{INSTALL_HINT}")
    cmd = [exe, "-n", str(int(n))]
    if hosts:
        cmd += _host_args(exe, hosts)
    return cmd


def _host_args(exe, hosts):
    """MPICH's hydra takes ``-hosts``; Open MPI takes ``--host`` with slots (and, as root, needs leave)."""
    try:
        import subprocess
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except Exception:
        version = ""
    names = hosts.split(",")
    if "Open MPI" in version or "OpenRTE" in version:
        args = ["--host", ",".join(f"{h}:64" for h in names)]          # slots: allow up to 64 ranks per host
        if all(h in ("127.0.0.1", "localhost") for h in names):
            args += ["--mca", "btl_tcp_if_include", "lo"]               # no other interface
        return args + (["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    return ["-hosts", hosts]


# ---------------------------------------------------------------------------- transports
class _Transport:
    """Sum-all-reduce and broadcast of contiguous buffers on one device."""

    def __init__(self, ctx, device):
        self.ctx, self.device = ctx, device
        self.nccl = self.nccl_comm = None
        if device.is_gpu and ctx.size > 1:
            self.nccl = backend.nccl_module()
            if self.nccl is not None:
                uid = ctx.comm.bcast(self.nccl.get_unique_id() if ctx.is_root else None, root=0)
                with device:
                    self.nccl_comm = self.nccl.NcclCommunicator(ctx.size, uid, ctx.rank)

    @property
    def kind(self) -> str:
        return "nccl" if self.nccl_comm is not None else "mpi" if not self.device.is_gpu else "mpi-host-staged"

    def allreduce_sum(self, buf) -> None:
        """``buf`` (contiguous) replaced in place by its sum over all ranks."""
        ctx = self.ctx
        self._collective(buf, lambda ptr, n, kind, stream: self.nccl_comm.allReduce(ptr, ptr, n, kind,
                                                                                    self.nccl.NCCL_SUM, stream),
                         lambda host: ctx.comm.Allreduce(ctx.MPI.IN_PLACE, host, op=ctx.MPI.SUM))

    def broadcast(self, buf, root=0) -> None:
        """``buf`` (contiguous) replaced in place by rank ``root``'s values."""
        self._collective(buf, lambda ptr, n, kind, stream: self.nccl_comm.bcast(ptr, n, kind, root, stream),
                         lambda host: self.ctx.comm.Bcast(host, root=root))

    def _collective(self, buf, nccl_call, mpi_call) -> None:
        """Run a collective on ``buf``: NCCL on the device's current stream, else MPI on host memory
        (GPU buffers staged through the host when CuPy has no NCCL)."""
        if self.ctx.size == 1:
            return
        if self.nccl_comm is not None:
            with self.device:
                stream = backend.cupy_module().cuda.get_current_stream()
                nccl_call(buf.data.ptr, buf.size, self._nccl_type(buf), stream.ptr)
        elif self.device.is_gpu:
            host = self.device.to_host(buf)
            mpi_call(host)
            buf[...] = self.device.asarray(host)
        else:
            mpi_call(buf)

    def _nccl_type(self, buf):
        names = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
                 "int64": "NCCL_INT64", "int32": "NCCL_INT32"}
        return getattr(self.nccl, names[str(buf.dtype)])


def _device_of(array):
    if backend.array_module_of(array) is np:
        return backend.device("cpu")
    return backend.device(f"gpu:{array.device.id}")


# ---------------------------------------------------------------------------- fit's engine
def shard_bounds(lo: int, hi: int, rank: int, size: int):
    """Rows ``[lo_r, hi_r)`` of ``[lo, hi)`` for ``rank`` of ``size``: contiguous shards in rank
    order that cover the range once, sizes differing by at most 1 (a shard may be empty)."""
    n = hi - lo
    return lo + n * rank // size, lo + n * (rank + 1) // size


class DataParallel:
    """What ``fit(..., distributed=True)`` and ``evaluate(..., distributed=True)`` use.

    One instance per ``fit``: :meth:`start` checks and synchronises the ranks, :meth:`order`
    shares an epoch's batch order, :meth:`shard` says which rows of a global batch are this
    rank's, :meth:`reduce` does the step's single all-reduce.
    """

    # slots of the reduced "extras" after the gradients: loss, control flags, metric sums
    LOSS, INTERRUPT, STOP, METRICS = 0, 1, 2, 3

    def __init__(self, model):
        self.ctx = init()
        self.model = model
        self.device = model.device
        self.transport = self.ctx.transport(self.device)
        self.buffer = self.grads = self.extra = None

    @property
    def rank(self):
        return self.ctx.rank

    @property
    def size(self):
        return self.ctx.size

    # -- start of fit ----------------------------------------------------------
    def start(self, params, n_samples, n_metrics) -> None:
        """Check that every rank has the same data length and model, then give every rank rank 0's
        weights, optimizer state and random state. Raises (on every rank alike) before changing anything."""
        model, comm = self.model, self.ctx.comm
        mine = (int(n_samples), [tuple(p.shape) for p in params], type(model.optimizer).__name__)
        every = comm.allgather(mine)
        for r, theirs in enumerate(every):
            if theirs[0] != every[0][0]:
                raise ValueError(f"fit(distributed=True): rank {r} has {theirs[0]} samples but rank 0 has "
                                 f"{every[0][0]}; give every rank the whole dataset (each trains on its shard "
                                 "of every batch)")
            if theirs[1:] != every[0][1:]:
                raise ValueError(f"fit(distributed=True): rank {r}'s model or optimizer differs from rank 0's "
                                 f"(weights {theirs[1]} / {every[0][1]}, {theirs[2]} / {every[0][2]}); build the "
                                 "same model on every rank")
        dtypes = {str(p.dtype) for p in params}
        if not dtypes <= {"float32", "float64"}:
            raise ValueError(f"fit(distributed=True) supports float32 and float64 weights, got {sorted(dtypes)}")
        state = comm.bcast((model.get_weights(), model.optimizer.get_state(params), random.get_state())
                           if self.ctx.is_root else None, root=0)
        weights, opt_state, rng_state = state
        if not self.ctx.is_root:
            model.set_weights(weights)
            model.optimizer.set_state(params, opt_state)
            random.set_state(rng_state)
        dtype = "float64" if "float64" in dtypes else "float32"
        sizes = [math.prod(p.shape) for p in params]
        xp = self.device.xp
        self.buffer = xp.zeros(sum(sizes) + self.METRICS + n_metrics, dtype=dtype)
        offsets = np.cumsum([0] + sizes)
        self.grads = [self.buffer[o:o + s].reshape(p.shape) for o, s, p in zip(offsets, sizes, params)]
        self.extra = self.buffer[offsets[-1]:]

    # -- per epoch and per step ------------------------------------------------
    def order(self, order):
        """Rank 0's batch order (a host int64 permutation) on every rank."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        self.ctx.comm.Bcast(order, root=0)
        return order

    def shard(self, lo: int, hi: int):
        """This rank's rows of the global batch ``[lo, hi)`` (see :func:`shard_bounds`)."""
        return shard_bounds(lo, hi, self.rank, self.size)

    def reduce(self, grads, loss, metric_sums, n_local: int, n_global: int, interrupt: bool, stop: bool):
        """The step's one all-reduce. ``grads`` (this rank's mean gradients, None for an empty shard)
        are scaled by ``n_local / n_global``; returns the global gradients (views of the buffer) and
        the reduced extras (loss, interrupt, stop, metric sums...)."""
        xp, extra = self.device.xp, self.extra
        if grads is None:
            self.buffer.fill(0)
        else:
            scale = self.buffer.dtype.type(n_local / n_global)
            for g, view in zip(grads, self.grads):
                xp.multiply(g, scale, out=view)
            extra[self.LOSS] = loss * scale
            for i, s in enumerate(metric_sums):
                extra[self.METRICS + i] = s
        extra[self.INTERRUPT] = float(interrupt)
        extra[self.STOP] = float(stop)
        self.transport.allreduce_sum(self.buffer)
        return self.grads, extra

    def flags(self):
        """``(interrupt, stop)`` agreed by all ranks at the last :meth:`reduce` (a host read)."""
        host = self.device.to_host(self.extra[self.INTERRUPT:self.METRICS])
        return bool(host[0] > 0), bool(host[1] > 0)

    @staticmethod
    def check_every(steps: int, deferred: bool) -> int:
        """How often the host reads the agreed flags: every step when the loss guard reads the loss on
        the host anyway (CPU), every 25 steps when it is deferred (GPU: a device read) — the same steps
        on every rank."""
        return max(1, min(25, steps)) if deferred else 1

    def sum_host(self, values) -> list:
        """Element-wise sum over ranks of a few host floats (float64)."""
        arr = np.asarray(values, dtype=np.float64)
        self.ctx.comm.Allreduce(self.ctx.MPI.IN_PLACE, arr, op=self.ctx.MPI.SUM)
        return arr.tolist()


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
