"""The IDX file format of MNIST (raw or gzip-compressed), read and written with validation.

Layout: two zero bytes, a dtype code, the number of axes, one big-endian uint32
per axis, then the values in big-endian C order.

Example:
    >>> import tempfile, os
    >>> from gpunet.datasets import idx
    >>> a = gpunet.backend.numpy.arange(6, dtype='uint8').reshape(2, 3)
    >>> p = os.path.join(tempfile.mkdtemp(), 'a-idx2-ubyte.gz')
    >>> idx.write_idx(p, a); idx.read_idx(p).tolist()
    [[0, 1, 2], [3, 4, 5]]
"""
from __future__ import annotations

import gzip
import os

from .. import backend
from ..fileio import atomic_write

np = backend.numpy

_CODES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_BY_KIND = {(d.kind, d.itemsize): c for c, d in _CODES.items()}


class IDXFormatError(ValueError):
    """A file is not valid IDX: names the file and what is wrong."""


def parse_idx(raw: bytes, name: str = "<bytes>"):
    """Decode IDX bytes (already decompressed) into a NumPy array, validating everything."""
    if len(raw) < 4:
        raise IDXFormatError(f"{name}: only {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(f"{name}: bad magic number {raw[:4].hex()} (an IDX file starts with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _CODES:
        raise IDXFormatError(f"{name}: unknown dtype code 0x{code:02x} (valid: "
                             f"{', '.join(f'0x{c:02x}' for c in _CODES)})")
    if ndim == 0:
        raise IDXFormatError(f"{name}: header declares 0 axes")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{name}: truncated header ({len(raw)} bytes, {header} needed for {ndim} axes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _CODES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise IDXFormatError(f"{name}: size mismatch: header says shape {shape} of {dtype.name} "
                             f"({expected} bytes in all) but the file has {len(raw)} bytes "
                             f"({'truncated' if len(raw) < expected else 'trailing data'})")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read an IDX file (``.gz`` detected by content, not name) into a NumPy array.

    Streams into a preallocated array: peak memory is about the array's own size.
    """
    path = os.fspath(path)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] not in _CODES or head[3] == 0:
                return parse_idx(head + f.read(), path)      # a bad header: let the full check explain
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                return parse_idx(head + dims + f.read(), path)
            shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            dtype = _CODES[head[2]]
            out = np.empty(shape, dtype=dtype)
            got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
            extra = f.read(1)
    except (OSError, EOFError) as exc:
        raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    if got != out.nbytes or extra:
        expected = 4 + 4 * ndim + out.nbytes
        actual = 4 + 4 * ndim + got + (1 if extra else 0)
        raise IDXFormatError(f"{path}: size mismatch: header says shape {shape} of {dtype.name} "
                             f"({expected} bytes in all) but the file has "
                             f"{'only ' + str(actual) + ' bytes (truncated)' if got < out.nbytes else 'trailing data'}")
    return out.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path, array) -> None:
    """Write ``array`` as IDX (gzip-compressed when ``path`` ends in ``.gz``), atomically."""
    path = os.fspath(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _BY_KIND:
        raise TypeError(f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX stores arrays with 1 to 255 axes, got shape {array.shape}")
    code = _BY_KIND[key]
    body = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + \
        np.ascontiguousarray(array, dtype=_CODES[code]).tobytes()
    if path.endswith(".gz"):
        body = gzip.compress(body, mtime=0)
    with atomic_write(path) as f:
        f.write(body)
