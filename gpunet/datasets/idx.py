"""The IDX file format of MNIST (raw or gzip-compressed), read as untrusted and written atomically.

Layout (the format's spec, http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype code
(0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of axes,
one big-endian uint32 per axis, then the values in big-endian C order. MNIST's images are
``00 00 08 03`` (0x00000803: uint8, 3 axes) followed by 60000, 28, 28.

Reading checks the header before anything is allocated: its shape and dtype against what the
caller expects, its declared size against the file's size (exactly, for a raw file; against the
most a gzip file of that size can hold, for a compressed one) and against ``max_bytes``. A gzip
body is then decompressed in bounded chunks straight into the array and reading stops at the
declared size plus one byte, so a gzip bomb costs at most what its header was allowed to declare.
Every failure is an :class:`IDXFormatError` (a :class:`~gpunet.errors.DatasetFormatError`)
naming the file and the problem.

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
import io
import os
import zlib

from .. import backend
from ..errors import DatasetFormatError
from ..fileio import atomic_write

np = backend.numpy

_CODES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_BY_KIND = {(d.kind, d.itemsize): c for c, d in _CODES.items()}

MAX_BYTES = 1 << 30          # default budget of read_idx for the values (1 GiB); max_bytes=None lifts it
GZIP_MAX_RATIO = 1032        # deflate's largest possible expansion (zlib's technical notes): 1032:1
GZIP_SLACK = 1 << 10         # plus this many bytes, for tiny files
CHUNK = 1 << 20              # gzip bodies are decompressed this many bytes at a time


class IDXFormatError(DatasetFormatError):
    """A file that is not valid IDX, or not the IDX file expected: names the file and what is wrong.

    ``path`` is the file (``None`` for bytes given to :func:`parse_idx`)."""


def parse_idx(raw: bytes, name: str = "<bytes>", shape=None, dtype=None):
    """Decode IDX bytes (already decompressed) into a NumPy array of native byte order.

    ``shape``/``dtype``, when given, are what the header must declare. Raises :class:`IDXFormatError`.
    """
    return _read_stream(io.BytesIO(bytes(raw)), name, None, len(raw), False, shape, dtype, None)


def read_idx(path, shape=None, dtype=None, max_bytes: int | None = MAX_BYTES):
    """Read an IDX file (``.gz`` detected by content, not name) into a NumPy array of native byte order.

    Args:
        shape, dtype: what the header must declare (e.g. ``(60000, 28, 28)``, ``uint8``); checked before
            anything is allocated. ``None``: anything the format allows.
        max_bytes: the most bytes of values the header may declare (default 1 GiB); ``None`` for no
            budget beyond the file's own size.

    Peak memory is about the array's own size. Raises :class:`IDXFormatError` for a bad header, a
    header that disagrees with ``shape``/``dtype``/``max_bytes`` or with the file's size, a truncated or
    corrupt body, or trailing data; ``OSError`` when the file cannot be opened.
    """
    path = os.fspath(path)
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        try:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            return _read_stream(stream, path, path, size, gz, shape, dtype, max_bytes)
        except (OSError, EOFError, zlib.error) as exc:
            what = "corrupt or truncated gzip data" if gz else "cannot be read"
            raise IDXFormatError(f"{path}: {what} ({exc}); the file is damaged: delete it and get a fresh copy",
                                 path) from None


def _read_stream(f, name, path, size, gz, want_shape, want_dtype, max_bytes):
    """Header, checks, then the values of the IDX stream ``f`` (``size`` bytes on disk)."""
    dtype, shape, header = _read_header(f, name, path)
    nbytes, declared = _check_declared(name, path, dtype, shape, header, size, gz, want_shape, want_dtype,
                                       max_bytes)
    out = np.empty(nbytes, dtype=np.uint8)
    got = _fill(f, memoryview(out), gz)
    extra = f.read(1)                   # at the end of a gzip stream this also checks its CRC
    if got != nbytes or extra:
        actual = f"only {header + got:,} bytes (truncated)" if got < nbytes else "trailing data"
        raise IDXFormatError(f"{name}: size mismatch: header says {declared} but the file has {actual}", path)
    return out.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _check_declared(name, path, dtype, shape, header, size, gz, want_shape, want_dtype, max_bytes):
    """``(bytes of values, description)`` the header declares, once it passes every check that needs no
    allocation: the expected shape/dtype, the file's size, NumPy's limits, ``max_bytes``."""
    nbytes = nominal = dtype.itemsize
    for d in shape:                                      # Python ints: no overflow, nothing allocated
        nbytes *= d
        nominal *= max(d, 1)                             # NumPy refuses shapes whose non-zero dims overflow
    declared = f"shape {shape} of {dtype.name} ({header + nbytes:,} bytes in all)"
    if want_shape is not None and shape != tuple(want_shape) or \
            want_dtype is not None and dtype.newbyteorder("=") != np.dtype(want_dtype).newbyteorder("="):
        expected = f"{tuple(want_shape) if want_shape is not None else 'any shape'} of " \
                   f"{np.dtype(want_dtype).name if want_dtype is not None else 'any dtype'}"
        raise IDXFormatError(f"{name}: header declares {declared}, expected {expected}: "
                             "not the file this dataset needs", path)
    if not gz and header + nbytes != size:
        raise IDXFormatError(f"{name}: size mismatch: header says {declared} but the file has {size:,} bytes "
                             f"({'truncated' if size < header + nbytes else 'trailing data'})", path)
    if gz and header + nbytes > GZIP_MAX_RATIO * size + GZIP_SLACK:
        raise IDXFormatError(f"{name}: header declares {declared}, more than a {size:,}-byte gzip file can hold "
                             f"(deflate expands at most {GZIP_MAX_RATIO}:1): the file is truncated or crafted", path)
    if nominal > np.iinfo(np.intp).max:
        raise IDXFormatError(f"{name}: header declares {declared}, a shape NumPy cannot represent "
                             f"(over {np.iinfo(np.intp).max:,} bytes before its zero axis): crafted or corrupt", path)
    if max_bytes is not None and nbytes > max_bytes:
        raise IDXFormatError(f"{name}: header declares {declared}, over the budget of {max_bytes:,} bytes; "
                             "pass read_idx(..., max_bytes=None) for a file you trust", path)
    return nbytes, declared


def _read_header(f, name, path):
    """``(dtype, shape, header length)`` from the first ``4 + 4 * ndim`` bytes of ``f`` (at most 1,024)."""
    head = f.read(4)
    if len(head) < 4:
        raise IDXFormatError(f"{name}: only {len(head)} bytes, too short for an IDX header", path)
    if head[0] != 0 or head[1] != 0:
        raise IDXFormatError(f"{name}: bad magic number {head.hex()} (an IDX file starts with two zero bytes): "
                             "not an IDX file", path)
    code, ndim = head[2], head[3]
    if code not in _CODES:
        raise IDXFormatError(f"{name}: unknown dtype code 0x{code:02x} (valid: "
                             f"{', '.join(f'0x{c:02x}' for c in _CODES)})", path)
    if ndim == 0:
        raise IDXFormatError(f"{name}: header declares 0 axes", path)
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise IDXFormatError(f"{name}: truncated header ({4 + len(dims)} bytes, {4 + 4 * ndim} needed for "
                             f"{ndim} axes)", path)
    shape = tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    return _CODES[code], shape, 4 + 4 * ndim


def _fill(f, view, gz) -> int:
    """Read into ``view`` until it is full or ``f`` ends; the number of bytes read.

    A gzip stream is read ``CHUNK`` bytes at a time (never more than ``view`` still needs)."""
    got, total = 0, len(view)
    while got < total:
        if gz:
            chunk = f.read(min(CHUNK, total - got))
            n = len(chunk)
            view[got:got + n] = chunk
        else:
            n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


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
