"""The Tensor: one array of a device, plus what autograd needs to know.

A :class:`Tensor` wraps an ``xp`` array (NumPy on CPU devices, CuPy on GPU
devices) together with its :class:`~gpunet.backend.Device`. Operators
(``+ - * / @ **``, indexing, ``reshape`` ...) call :mod:`gpunet.ops`, which
records them on any active :class:`~gpunet.GradientTape`.

Example:
    >>> import gpunet
    >>> x = gpunet.tensor([[0., 1.], [2., 3.], [4., 5.]])
    >>> x.shape, x.dtype
    ((3, 2), dtype('float32'))
    >>> x.reshape((2, 3)).numpy()
    array([[0., 1., 2.],
           [3., 4., 5.]], dtype=float32)
    >>> x.T.shape
    (2, 3)
"""
from __future__ import annotations

from . import backend
from .backend import Device

__all__ = ["Tensor", "tensor", "zeros", "ones", "as_tensor"]

_np = backend.numpy


class Tensor:
    """An n-dimensional array on a device, usable with :class:`gpunet.GradientTape`.

    Attributes:
        data: the underlying ``numpy.ndarray`` or ``cupy.ndarray``.
        device: the :class:`~gpunet.backend.Device` holding ``data``.
        requires_grad: whether every tape tracks this tensor.
    """

    __slots__ = ("data", "device", "requires_grad", "name", "__weakref__")
    __array_priority__ = 1000  # numpy_array + tensor -> Tensor.__radd__

    def __init__(self, data, device: "Device | str | None" = None, requires_grad: bool = False,
                 dtype=None, name: str | None = None):
        dev = backend.device(device)
        if isinstance(data, Tensor):
            data = data.data
        arr = dev.asarray(data, dtype=dtype)
        if dtype is None and arr.dtype == _np.float64:
            arr = arr.astype(_np.float32)    # float32 throughout unless asked otherwise
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {arr.dtype}; "
                            "pass dtype='float32'")
        self.data = arr
        self.device = dev
        self.requires_grad = bool(requires_grad)
        self.name = name

    @classmethod
    def _wrap(cls, array, device: Device) -> "Tensor":
        """Wrap an existing array of ``device`` without copying or checks (internal fast path)."""
        t = object.__new__(cls)
        t.data = array
        t.device = device
        t.requires_grad = False
        t.name = None
        return t

    # -- attributes ------------------------------------------------------
    shape = property(lambda self: self.data.shape, doc="Tuple of axis lengths.")
    ndim = property(lambda self: self.data.ndim, doc="Number of axes (the tensor's rank).")
    dtype = property(lambda self: self.data.dtype, doc="The element dtype (a NumPy dtype).")
    size = property(lambda self: int(self.data.size), doc="Number of elements.")

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def numpy(self):
        """A host NumPy copy of the values (never a view of the tensor's memory)."""
        arr = self.device.to_host(self.data)
        return arr.copy() if arr is self.data else arr

    def __array__(self, dtype=None, copy=None):
        arr = self.device.to_host(self.data)
        return arr if dtype is None else arr.astype(dtype)

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def to(self, device) -> "Tensor":
        """This tensor on ``device`` (itself if already there); differentiable."""
        from . import ops
        return ops.to_device(self, device)

    def detach(self) -> "Tensor":
        """The same values, cut off from gradient tracking (shares memory)."""
        return Tensor._wrap(self.data, self.device)

    def __repr__(self):
        body = repr(self.device.to_host(self.data)).replace("array(", "tensor(", 1)
        extra = f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return body[:-1] + extra + ")" if body.endswith(")") else body

    def __hash__(self):
        return id(self)

    # -- operators (all differentiable except comparisons) -------------------
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().subtract(self, o)
    def __rsub__(self, o): return _ops().subtract(o, self)
    def __mul__(self, o): return _ops().multiply(self, o)
    def __rmul__(self, o): return _ops().multiply(o, self)
    def __truediv__(self, o): return _ops().divide(self, o)
    def __rtruediv__(self, o): return _ops().divide(o, self)
    def __pow__(self, o): return _ops().power(self, o)
    def __rpow__(self, o): return _ops().power(o, self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __neg__(self): return _ops().negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops().abs(self)
    def __getitem__(self, index): return _ops().getitem(self, index)

    def __lt__(self, o): return _ops().compare("less", self, o)
    def __le__(self, o): return _ops().compare("less_equal", self, o)
    def __gt__(self, o): return _ops().compare("greater", self, o)
    def __ge__(self, o): return _ops().compare("greater_equal", self, o)
    def __eq__(self, o): return _ops().compare("equal", self, o)
    def __ne__(self, o): return _ops().compare("not_equal", self, o)

    # -- methods -------------------------------------------------------------
    def reshape(self, *shape):
        """Same values, new shape (``-1`` infers one axis): ``x.reshape((60000, 784))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def transpose(self, *axes):
        """Permute axes (reverse them when none are given)."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops().transpose(self, axes or None)

    @property
    def T(self):
        """The transpose (axes reversed)."""
        return _ops().transpose(self, None)

    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis, keepdims)
    def astype(self, dtype): return _ops().astype(self, dtype)
    def dot(self, other): return _ops().dot(self, other)
    def relu(self): return _ops().relu(self)
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def flatten(self): return _ops().reshape(self, (-1,))

    def argmax(self, axis=None):
        """Indices of the maxima (not differentiable)."""
        return Tensor._wrap(self.data.argmax(axis=axis), self.device)

    def copy(self):
        """A copy of the values; differentiable like the identity."""
        return _ops().multiply(self, 1)


_ops_module = None


def _ops():
    global _ops_module
    if _ops_module is None:
        from . import ops as m
        _ops_module = m
    return _ops_module


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Create a tensor from Python numbers, lists, NumPy/CuPy arrays or another tensor.

    Floating data defaults to float32 (pass ``dtype`` to keep float64); integer
    and boolean data keep their dtype. The data is copied onto ``device``
    (default: :func:`gpunet.get_default_device`).

    Example:
        >>> gpunet.tensor([1, 2, 3]).dtype, gpunet.tensor([1.5]).dtype
        (dtype('int64'), dtype('float32'))
    """
    if isinstance(data, Tensor):
        data = data.data
    t = Tensor(data, device=device, dtype=dtype, requires_grad=requires_grad)
    if t.data is data:   # never alias the caller's array
        t.data = t.data.copy()
    return t


def as_tensor(data, device=None) -> Tensor:
    """``data`` itself when it is a Tensor, else ``tensor(data, device=device)`` without a copy."""
    if isinstance(data, Tensor):
        return data
    return Tensor(data, device=device)


def zeros(shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros."""
    dev = backend.device(device)
    return Tensor(dev.xp.zeros(shape, dtype=dtype), dev, requires_grad)


def ones(shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    """A tensor of ones."""
    dev = backend.device(device)
    return Tensor(dev.xp.ones(shape, dtype=dtype), dev, requires_grad)
