"""``cupy.cuda.nccl`` across emulated GPUs in several processes: collectives run through MPI on the
host buffers (each process's GPUs are its own, as on a real cluster)."""
from __future__ import annotations

import ctypes
import os
import socket

import numpy as np

from .. import _state

available = True
NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT32, NCCL_INT64 = 6, 7, 8, 2, 4
NCCL_SUM = 0
_DTYPES = {NCCL_FLOAT16: np.float16, NCCL_FLOAT32: np.float32, NCCL_FLOAT64: np.float64, NCCL_INT32: np.int32,
           NCCL_INT64: np.int64}


class NcclError(RuntimeError):
    """``cupy_backends.cuda.libs.nccl.NcclError``'s role."""


def get_unique_id():
    return os.urandom(128)


def _buffer(ptr, count, datatype):
    dtype = np.dtype(_DTYPES[datatype])
    raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count)


class NcclCommunicator:
    """One rank of a communicator over ``ndev`` ranks, bound to the device current at creation."""

    def __init__(self, ndev, commId, rank):  # noqa: N803 (CuPy's names)
        from mpi4py import MPI
        self.comm, self.MPI = MPI.COMM_WORLD, MPI
        if self.comm.Get_size() != ndev:
            raise RuntimeError(f"emulated NCCL: {ndev} ranks asked for, the MPI job has {self.comm.Get_size()}")
        self.rank, self.device = rank, _state.current_device()
        from . import Device
        where = self.comm.allgather((socket.gethostname(), Device(self.device).pci_bus_id))
        if where.count(where[rank]) > 1:        # as NCCL: "Duplicate GPU detected"
            raise NcclError("NCCL_ERROR_INVALID_USAGE: invalid usage (two ranks on one GPU)")

    def _check(self, what):
        if _state.current_device() != self.device:
            raise RuntimeError(f"emulated NCCL: {what} on device {_state.current_device()} for a communicator of "
                               f"device {self.device}")

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        self._check("allReduce")
        if op != NCCL_SUM:
            raise NotImplementedError("emulated NCCL implements the sum")
        send, recv = _buffer(sendbuf, count, datatype), _buffer(recvbuf, count, datatype)
        if sendbuf == recvbuf:
            self.comm.Allreduce(self.MPI.IN_PLACE, recv, op=self.MPI.SUM)
        else:
            self.comm.Allreduce(send, recv, op=self.MPI.SUM)

    def bcast(self, buff, count, datatype, root, stream):
        self._check("bcast")
        self.comm.Bcast(_buffer(buff, count, datatype), root=root)

    def destroy(self):
        pass
