"""gpunet: the Keras code of *Deep Learning with Python*, chapter 2, on NumPy (CPU) or CuPy (GPU).

Example:
    >>> import gpunet
    >>> x = gpunet.tensor([[1., 2.], [3., 4.]], requires_grad=True)
    >>> with gpunet.GradientTape() as tape:
    ...     y = (x @ x).sum()
    >>> tape.gradient(y, x).shape
    (2, 2)
"""
from . import backend
from .autograd import GradientTape, is_recording, no_grad
from .backend import (Device, device, free_memory, get_default_device, gpu_available, memory_info,
                      set_default_device, use_device)
from .errors import (DeviceMismatchError, DeviceUnavailableError, DistributedUnavailableError, NotCompiledError,
                     ShapeError)
from .tensor import Tensor, from_dlpack, ones, tensor, zeros
from . import ops, naive, random, higher_order  # noqa: E402  (light modules)

__version__ = "0.1.0"

_LAZY = ("layers", "models", "losses", "metrics", "optimizers", "activations", "initializers",
         "callbacks", "utils", "datasets", "kernels", "distributed", "trainers", "saving", "functional")


def __getattr__(name):
    """Import the Keras-style modules on first use, keeping ``import gpunet`` cheap."""
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'gpunet' has no attribute {name!r}")


__all__ = ["Device", "DeviceMismatchError", "DeviceUnavailableError", "DistributedUnavailableError", "GradientTape",
           "NotCompiledError", "ShapeError", "Tensor", "backend", "device", "free_memory", "from_dlpack", "get_default_device",
           "gpu_available",
           "is_recording", "memory_info", "naive", "no_grad", "ones", "ops", "random", "set_default_device",
           "tensor", "use_device", "zeros", *_LAZY]
