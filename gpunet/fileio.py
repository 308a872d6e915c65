"""Crash-safe file writes: a file gpunet writes is either the old complete file or the new one.

:func:`atomic_write` writes to a temporary file in the destination's folder,
flushes and fsyncs it, then renames it over the destination (``os.replace`` is
atomic on POSIX and Windows) and fsyncs the folder. The temporary file's name
carries the writer's process id, so that a later successful write can remove
the temporary files that killed writers left behind (never a live one's).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
import zlib

from .backend import numpy as np
from .errors import FileFormatError

NPY_HEADER_LIMIT = 1 << 16       # bytes of an .npy member's header read at most (NumPy writes < 1 KiB)
SAFE_KINDS = "biufU"             # bool, integers, floats, unicode text: never objects (pickles)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Context manager yielding a file object (its ``tmp_path`` is where it is being written);
    on success the file replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: folder {folder!r} does not exist; create it first")
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.pid{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):       # mkstemp makes 0600 files; keep the usual permissions
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, mode) as f:
            f.tmp_path = tmp
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _remove_stale_temporaries(folder, base)
    with contextlib.suppress(OSError):          # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _file_mode(path) -> int:
    """The existing file's permissions, else 0o666 minus the process umask (what open() would give)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = 0o022
    return 0o666 & ~umask


def _remove_stale_temporaries(folder, base) -> None:
    """Delete ``.{base}.pid<N>.*.tmp`` files whose writer process ``N`` no longer exists (POSIX)."""
    if os.name != "posix":
        return
    prefix = f".{base}.pid"
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)             # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:                 # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


class SafeNpz:
    """An ``.npz`` file read as untrusted: nothing is decompressed or allocated before it is checked.

    ``with SafeNpz(path, error=CheckpointError, what="checkpoint") as z:`` then ``z.names`` (the array
    members, without ``.npy``), ``z.declared_bytes(name)`` (the uncompressed size the zip directory
    declares: nothing decompressed), ``z.header(name)`` (``(shape, dtype)`` from the member's ``.npy``
    header: a few hundred bytes decompressed) and ``z.array(name, shape=, max_bytes=)``, which checks the
    declared size, the header (no object dtype, so no pickle ever runs; shape and size agreeing with
    the declared size and with ``shape`` when given) before reading exactly that many bytes (the zip's
    CRC is checked at the end). Every failure is ``error(message naming the file, path)``; members
    never asked for are never decompressed (a zip bomb beside the arrays costs nothing).
    """

    def __init__(self, path, error=FileFormatError, what="file"):
        self.path, self.error, self.what = os.fspath(path), error, what
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no {what} file at {self.path!r}")
        if os.path.isdir(self.path):
            raise self._fail("is a folder, not a .npz file")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise self._fail(f"not a readable .npz (zip) file ({exc})") from None
        self._members = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
        self.names = tuple(self._members)
        self.other_members = tuple(i.filename for i in infos if not i.filename.endswith(".npy"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self._zip.close()

    def _fail(self, problem: str):
        return self.error(f"{self.path}: {problem}; nothing was loaded", self.path)

    def _info(self, name):
        info = self._members.get(name)
        if info is None:
            raise self._fail(f"the {self.what} has no array {name!r} (it has {', '.join(self.names) or 'none'})")
        return info

    def declared_bytes(self, name) -> int:
        return self._info(name).file_size

    def _open(self, name):
        try:
            return self._zip.open(self._info(name))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise self._fail(f"array {name!r} cannot be read ({exc})") from None

    def _read_header(self, f, name):
        """``(shape, dtype, header bytes)`` of the ``.npy`` member open as ``f``."""
        try:
            major, minor = np.lib.format.read_magic(f)
            if (major, minor) == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=NPY_HEADER_LIMIT)
            elif major in (2, 3):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=NPY_HEADER_LIMIT)
            else:
                raise ValueError(f"unsupported .npy format version {major}.{minor}")
            used = f.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError, TypeError) as exc:
            raise self._fail(f"array {name!r} has no valid .npy header ({exc})") from None
        if dtype.hasobject or dtype.kind not in SAFE_KINDS or dtype.fields is not None or dtype.subdtype:
            raise self._fail(f"array {name!r} has dtype {dtype} (Python objects, which would need a pickle, or "
                             "a structured type): gpunet reads only numbers and text and never runs a pickle")
        if fortran and len(shape) > 1:
            raise self._fail(f"array {name!r} is stored in Fortran order, which gpunet never writes")
        return tuple(int(d) for d in shape), dtype, used

    def header(self, name):
        """``(shape, dtype)`` of array ``name``, from its ``.npy`` header only."""
        with self._open(name) as f:
            shape, dtype, _ = self._read_header(f, name)
        return shape, dtype

    def array(self, name, shape=None, max_bytes=None):
        """Array ``name`` as a NumPy array of its own memory, checked before anything is allocated:
        its declared size against ``max_bytes``, its header's shape against ``shape`` (when given)."""
        declared = self.declared_bytes(name)
        if max_bytes is not None and declared > max_bytes + NPY_HEADER_LIMIT:
            raise self._fail(f"array {name!r} declares {declared:,} bytes uncompressed, over the {max_bytes:,} "
                             "this file can need")
        with self._open(name) as f:
            got_shape, dtype, used = self._read_header(f, name)
            if shape is not None and got_shape != tuple(shape):
                raise self._fail(f"array {name!r} has shape {got_shape}, expected {tuple(shape)}")
            count = 1
            for d in got_shape:
                count *= d
            nbytes = count * dtype.itemsize
            if nbytes != declared - used:
                raise self._fail(f"array {name!r}: its header says {got_shape} {dtype} ({nbytes:,} bytes) but the "
                                 f"zip holds {declared - used:,} bytes for it")
            if max_bytes is not None and nbytes > max_bytes:
                raise self._fail(f"array {name!r} holds {nbytes:,} bytes, over the {max_bytes:,} this file can need")
            try:
                raw = f.read(nbytes)
                f.read(1)                              # reach the end: the zip checks the member's CRC
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise self._fail(f"array {name!r} is corrupt ({exc})") from None
        if len(raw) != nbytes:
            raise self._fail(f"array {name!r} is truncated ({len(raw):,} of {nbytes:,} bytes)")
        return np.frombuffer(raw, dtype=dtype).reshape(got_shape).copy()
