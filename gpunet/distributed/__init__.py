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

What ``fit(..., distributed=True)`` does (see :class:`~gpunet.distributed.data_parallel.DataParallel`,
the strategy the trainer's one epoch loop and one training step use in place of a single process):

* at the start, rank 0's weights, optimizer state and random state are broadcast, and every
  rank is checked to have the same data length and the same model;
* each epoch rank 0 draws the batch order and broadcasts it; the global batch ``[lo, hi)`` is
  cut into ``size`` contiguous shards and rank ``r`` computes shard ``r`` (dropout masks: rank
  ``r``'s rows of the masks one process would draw: its elements of the Philox stream, see
  :mod:`gpunet.kernels.philox`);
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

from ..errors import DistributedUnavailableError
from .context import (Context, allreduce, barrier, broadcast, init, is_initialized, is_root, local_device,
                      local_rank, local_size, rank, root_print, size)
from .data_parallel import DataParallel, shard_bounds
from .launch import mpiexec_command
from .transport import Transport

__all__ = ["init", "is_initialized", "rank", "size", "local_rank", "local_size", "is_root", "local_device",
           "barrier", "broadcast", "allreduce", "root_print", "mpiexec_command", "shard_bounds", "DataParallel",
           "Transport", "Context", "DistributedUnavailableError"]
