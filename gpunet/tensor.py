"""The Tensor: one array of a device, plus what autograd needs to know.

A :class:`Tensor` wraps an ``xp`` array (NumPy on CPU devices, CuPy on GPU devices) together
with its :class:`~gpunet.backend.Device`. Operators (``+ - * / @ **``, indexing, ``reshape``
...) run the array functions of :mod:`gpunet.functional` through :func:`apply`, which records
them on any active :class:`~gpunet.GradientTape`. :mod:`gpunet.ops` offers the same operations
as functions.

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

import numbers

from . import autograd, backend, functional as F
from .backend import Device
from .errors import DeviceMismatchError

__all__ = ["Tensor", "tensor", "zeros", "ones", "as_tensor", "apply", "from_dlpack", "true_divide"]

_np = backend.numpy
NUMERIC_KINDS = "biuf"      # the dtype kinds a tensor holds: bool, signed and unsigned integers, floats


def numeric_data(data):
    """``data`` checked to be numbers a tensor can hold: arrays (NumPy, CuPy) as they are, anything else
    (numbers, nested lists) as a NumPy array of its own dtype, so that strings show as strings.

    Raises TypeError for None, strings, bytes, dicts, sets, objects and complex numbers (gpunet's
    tensors are real), ValueError for ragged nested lists; each message says what to pass instead.
    """
    if data is None or isinstance(data, (str, bytes, dict, set, frozenset)):
        raise TypeError(f"a tensor holds numbers, got {type(data).__name__} {str(data)[:40]!r}; pass a number, a "
                        "(nested) list of numbers or a numeric array")
    if not isinstance(getattr(getattr(data, "dtype", None), "kind", None), str):
        try:
            data = _np.asarray(data)
        except ValueError as exc:
            raise ValueError(f"cannot make a tensor of ragged data (nested lists of different lengths: {exc}); "
                             "pad the lists to one length") from None
    check_numeric_dtype(data.dtype)
    return data


def check_numeric_dtype(dtype) -> None:
    """TypeError unless ``dtype`` is bool, an integer or a float (see :func:`numeric_data`)."""
    if dtype.kind == "c":
        raise TypeError(f"gpunet tensors are real, got complex data (dtype {dtype}); pass x.real, x.imag or "
                        "abs(x)")
    if dtype.kind not in NUMERIC_KINDS:
        what = {"U": "strings", "S": "bytes", "O": "Python objects (None, mixed or ragged data)"}.get(
            dtype.kind, f"dtype {dtype}")
        raise TypeError(f"a tensor holds numbers (bool, int or float), got {what} (dtype {dtype}); convert the "
                        "data to numbers first, e.g. np.asarray(data, dtype='float32')")


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
        data = data.data if isinstance(data, Tensor) else numeric_data(data)
        with dev.context:
            arr = dev.asarray(data, dtype=dtype)
            check_numeric_dtype(arr.dtype)
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
    def wrap(cls, array, device: Device) -> "Tensor":
        """Wrap an existing array of ``device`` without copying or checks (the fast path ops use)."""
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
        arr = _np.asarray(self.device.to_host(self.data))     # a 0-d result may be a NumPy scalar
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
        dev = backend.device(device)
        if dev == self.device:
            return self
        src = self.device
        data = dev.asarray(src.to_host(self.data)) if (src.is_gpu and dev.is_gpu) else dev.asarray(self.data)
        out = Tensor.wrap(data, dev)
        if autograd.is_recording():
            autograd.record(out, (self,), lambda g, n: (src.asarray(dev.to_host(g)),))
        return out

    def __dlpack__(self, **kwargs):
        """The DLPack capsule of the data (no copy): ``torch.from_dlpack(t)``, ``np.from_dlpack(t)``,
        ``cupy.from_dlpack(t)``, ``jax.dlpack.from_dlpack(t)``."""
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def detach(self) -> "Tensor":
        """The same values, cut off from gradient tracking (shares memory)."""
        return Tensor.wrap(self.data, self.device)

    def __repr__(self):
        body = repr(self.device.to_host(self.data)).replace("array(", "tensor(", 1)
        extra = f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return body[:-1] + extra + ")" if body.endswith(")") else body

    def __hash__(self):
        return id(self)

    # -- operators (all differentiable except comparisons) -------------------
    def __add__(self, o): return apply(F.add, (self, o))
    def __radd__(self, o): return apply(F.add, (o, self))
    def __sub__(self, o): return apply(F.subtract, (self, o))
    def __rsub__(self, o): return apply(F.subtract, (o, self))
    def __mul__(self, o): return apply(F.multiply, (self, o))
    def __rmul__(self, o): return apply(F.multiply, (o, self))
    def __truediv__(self, o): return true_divide(self, o)
    def __rtruediv__(self, o): return true_divide(o, self)
    def __pow__(self, o): return apply(F.power, (self, o))
    def __rpow__(self, o): return apply(F.power, (o, self))
    def __matmul__(self, o): return apply(F.matmul, (self, o))
    def __rmatmul__(self, o): return apply(F.matmul, (o, self))
    def __neg__(self): return apply(F.negative, (self,))
    def __pos__(self): return self
    def __abs__(self): return apply(F.abs, (self,))

    def __getitem__(self, index):
        return apply(F.getitem, (self,), self._device_index(index))

    def _device_index(self, index):
        """An index with its arrays (Tensors, lists, host arrays) as arrays of this tensor's device."""
        if isinstance(index, tuple):
            return tuple(self._device_index(i) for i in index)
        if isinstance(index, Tensor):
            return index.data
        if isinstance(index, list) or (hasattr(index, "__array__") and getattr(index, "ndim", 0) > 0):
            return self.device.asarray(index)
        return index

    def __lt__(self, o): return compare("less", self, o)
    def __le__(self, o): return compare("less_equal", self, o)
    def __gt__(self, o): return compare("greater", self, o)
    def __ge__(self, o): return compare("greater_equal", self, o)
    def __eq__(self, o): return compare("equal", self, o)
    def __ne__(self, o): return compare("not_equal", self, o)

    # -- methods -------------------------------------------------------------
    def reshape(self, *shape):
        """Same values, new shape (``-1`` infers one axis): ``x.reshape((60000, 784))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply(F.reshape, (self,), shape)

    def transpose(self, *axes):
        """Permute axes (reverse them when none are given)."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return apply(F.transpose, (self,), axes or None)

    @property
    def T(self):
        """The transpose (axes reversed)."""
        return apply(F.transpose, (self,))

    def sum(self, axis=None, keepdims=False): return apply(F.sum, (self,), axis, keepdims)
    def mean(self, axis=None, keepdims=False): return apply(F.mean, (self,), axis, keepdims)
    def max(self, axis=None, keepdims=False): return apply(F.extreme, (self,), axis, keepdims, "max")
    def astype(self, dtype): return apply(F.astype, (self,), dtype)
    def dot(self, other): return apply(F.dot, (self, other))
    def relu(self): return apply(F.relu, (self,))
    def exp(self): return apply(F.exp, (self,))
    def log(self): return apply(F.log, (self,))
    def flatten(self): return apply(F.reshape, (self,), (-1,))

    def argmax(self, axis=None):
        """Indices of the maxima (not differentiable)."""
        return Tensor.wrap(self.data.argmax(axis=axis), self.device)

    def copy(self):
        """A copy of the values; differentiable like the identity."""
        return apply(F.multiply, (self, 1))


# ------------------------------------------------------------- running array functions on tensors
def apply(fn, inputs, *args, **kwargs) -> Tensor:
    """``fn(xp, *arrays, *args, **kwargs)`` -> ``(out, backward)`` (a :mod:`gpunet.functional`
    function) on ``inputs``: Tensors, Python numbers (passed as they are), host arrays (moved to
    the Tensors' device) or None. Returns ``out`` as a Tensor, and records ``backward`` when a
    tape is listening (one list check otherwise)."""
    dev, operands = _operands(inputs)
    with dev.context:      # a GPU's arrays are computed with that GPU current (gpu:1 too)
        out, backward = fn(dev.xp, *[o.data if isinstance(o, Tensor) else o for o in operands], *args, **kwargs)
    result = Tensor.wrap(out, dev)
    if autograd.is_recording():
        autograd.record(result, operands, backward, (fn, args, kwargs))
    return result


def true_divide(a, b) -> Tensor:
    """Element-wise ``a / b`` (``Tensor.__truediv__``), by gpunet's float32 policy: integer and boolean
    tensors are divided as float32 (``int / int`` gives float32, where NumPy gives float64), and NumPy
    scalars count as Python numbers (``x / np.float64(2)`` keeps ``x``'s float32, where NumPy 2 would
    give float64). A float64 tensor operand still gives float64."""
    operands = []
    for v in (a, b):
        if isinstance(v, _np.generic):
            v = v.item()                  # a Python number: it takes the tensor's dtype
        elif isinstance(v, Tensor) and v.dtype.kind in "biu":
            v = v.astype("float32")
        elif not isinstance(v, Tensor) and getattr(getattr(v, "dtype", None), "kind", "") in ("b", "i", "u"):
            v = v.astype(_np.float32)     # a host (or CuPy) integer array
        operands.append(v)
    return apply(F.divide, operands)


def compare(name: str, a, b) -> Tensor:
    """Element-wise comparison (``'less'``, ``'equal'`` ...): a boolean tensor, not differentiable."""
    dev, (a, b) = _operands((a, b))
    with dev.context:
        return Tensor.wrap(getattr(dev.xp, name)(*(v.data if isinstance(v, Tensor) else v for v in (a, b))), dev)


def _operands(xs):
    """Common device of the tensor operands; host arrays become tensors of it; numbers and None stay."""
    dev = None
    for x in xs:
        if isinstance(x, Tensor):
            if dev is None:
                dev = x.device
            elif x.device is not dev and x.device != dev:
                raise DeviceMismatchError(
                    f"operands live on different devices: {dev} and {x.device}; "
                    f"move one with .to('{dev}') before combining them")
    if dev is None:
        raise TypeError("at least one operand must be a gpunet Tensor")
    return dev, [x if x is None or isinstance(x, (Tensor, numbers.Number)) else Tensor(x, device=dev) for x in xs]


# ------------------------------------------------------------- constructors
def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Create a tensor from Python numbers, lists, NumPy/CuPy arrays or another tensor.

    Floating data defaults to float32 (pass ``dtype`` to keep float64); integer
    and boolean data keep their dtype. The data is copied onto ``device``
    (default: :func:`gpunet.get_default_device`). Dividing tensors follows the same float32
    policy: ``int / int`` gives float32 (see :func:`true_divide`).

    Raises TypeError for what is not real numbers (None, strings, bytes, dicts, sets, objects,
    complex numbers: even with a numeric ``dtype``) and ValueError for ragged nested lists.

    Example:
        >>> gpunet.tensor([1, 2, 3]).dtype, gpunet.tensor([1.5]).dtype
        (dtype('int64'), dtype('float32'))
    """
    if isinstance(data, Tensor):
        data = data.data
    t = Tensor(data, device=device, dtype=dtype, requires_grad=requires_grad)
    if t.data is data:   # never alias the caller's array
        with t.device.context:
            t.data = t.data.copy()
    return t


def from_dlpack(obj) -> Tensor:
    """A Tensor sharing the memory of ``obj`` (a PyTorch, JAX, CuPy or NumPy array: anything with
    ``__dlpack__``), without a copy, on the matching device (``'cpu'`` or ``'gpu:N'``).

    Example:
        >>> a = np.arange(3.0, dtype=np.float32)
        >>> t = gpunet.from_dlpack(a)
        >>> a[0] = 7.0
        >>> t.numpy()
        array([7., 1., 2.], dtype=float32)
    """
    array, device = backend.from_dlpack(obj)
    return Tensor.wrap(array, device)


def as_tensor(data, device=None) -> Tensor:
    """``data`` itself when it is a Tensor, else ``tensor(data, device=device)`` without a copy."""
    if isinstance(data, Tensor):
        return data
    return Tensor(data, device=device)


def zeros(shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros."""
    dev = backend.device(device)
    with dev.context:
        return Tensor(dev.xp.zeros(shape, dtype=dtype), dev, requires_grad)


def ones(shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    """A tensor of ones."""
    dev = backend.device(device)
    with dev.context:
        return Tensor(dev.xp.ones(shape, dtype=dtype), dev, requires_grad)
