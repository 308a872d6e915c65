"""Sum-all-reduce and broadcast of one device's buffers: NCCL for CuPy arrays, MPI otherwise."""
from __future__ import annotations

import socket
import warnings

from .. import backend

np = backend.numpy


class Transport:
    """Sum-all-reduce and broadcast of contiguous buffers on one device."""

    def __init__(self, ctx, device, where=None):
        """``where``: every rank's (host name, PCI bus id) of its GPU, when ``device`` is one."""
        self.ctx, self.device = ctx, device
        self.nccl = self.nccl_comm = None
        self.shared_gpu_ranks = []      # ranks that share this rank's GPU (then no NCCL: host-staged MPI)
        if device.is_gpu and ctx.size > 1:
            self.nccl = backend.nccl_module()
            if self.nccl is not None and self._gpu_shared(where):
                self.nccl = None
            if self.nccl is not None:
                uid = ctx.comm.bcast(self.nccl.get_unique_id() if ctx.is_root else None, root=0)
                with device:
                    self.nccl_comm = self.nccl.NcclCommunicator(ctx.size, uid, ctx.rank)

    def _gpu_shared(self, where) -> bool:
        """Do two ranks use this one GPU? NCCL refuses that (invalid usage): warn and stage through MPI."""
        if where is None:
            where = self.ctx.comm.allgather((socket.gethostname(), backend.gpu_bus_id(self.device)))
        shared = self.shared_gpu_ranks = [rank for rank, w in enumerate(where) if where.count(w) > 1]
        if shared:
            warnings.warn(f"ranks {shared} share one GPU ({self.device} of {where[shared[0]][0]}, PCI "
                          f"{where[shared[0]][1]}); NCCL needs a GPU per rank, so gradients are summed through "
                          "host memory with MPI (slower). Start no more ranks per machine than it has GPUs, and "
                          "give each its own with distributed.local_device('gpu').", RuntimeWarning, stacklevel=4)
        return bool(shared)

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


def device_of(array):
    if backend.array_module_of(array) is np:
        return backend.device("cpu")
    return backend.device(f"gpu:{array.device.id}")


