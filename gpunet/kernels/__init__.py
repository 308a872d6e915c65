"""Fused kernels: one CUDA source and one NumPy twin per operation, with one signature.

Each function takes the array module ``xp`` first: with CuPy it launches the kernel of its
``.cu`` file (:mod:`gpunet.kernels.cuda`), with NumPy it runs its twin, which is also the
reference the tests compare the kernel with. The optimizer updates follow the same pattern
in :mod:`gpunet.optimizers` (each optimizer's rule, twin and kernel side by side).

* :mod:`~gpunet.kernels.dense` — bias + ReLU, the ReLU backward, the dense products;
* :mod:`~gpunet.kernels.softmax_xent` — softmax-cross-entropy forward and backward;
* :mod:`~gpunet.kernels.conv` — im2col/col2im and max/average pooling with their backwards;
* :mod:`~gpunet.kernels.guard` — the non-finite-loss flag that halts optimizer kernels;
* :mod:`~gpunet.kernels.rescale` — uint8 images to scaled float32 in one pass (``Rescaling`` on the CPU).

All kernels take float32 arrays; element counts are ``long long``. A kernel and its twin follow one
arithmetic contract: the same operations in the same order, each rounded on its own (``__fadd_rn``
and kin: no FMA contraction), with constants computed once on the host and passed in, so they give
the same bits (softmax-xent's forward: within a few ULP, CUDA's expf/logf); see
``tests/test_kernel_contracts.py``.
"""
from __future__ import annotations

import functools

from . import conv, cuda, gemm, rescale
from .conv import (avg_pool2d, avg_pool2d_backward, col2im, conv_geometry, im2col, max_pool2d,
                   max_pool2d_backward)
from .dense import act_backward, bias_act, dense_backward, dense_forward
from .guard import guard_loss
from .philox import dropout_mask, philox4x32_10  # noqa: F401  (Dropout's Philox4x32-10 masks: philox.py)
from .softmax_xent import softmax_xent_backward, softmax_xent_forward

__all__ = ["cuda", "rescale", "act_backward", "bias_act", "dense_backward", "dense_forward", "guard_loss",
           "softmax_xent_backward", "softmax_xent_forward", "scalars", "conv", "conv_geometry", "im2col",
           "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]


@functools.lru_cache(maxsize=256)
def scalars(dtype, *values):
    """``values`` as NumPy scalars of ``dtype`` (cached: building NumPy scalars costs ~0.5 us each)."""
    return tuple(dtype.type(v) for v in values)
