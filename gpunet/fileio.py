"""Crash-safe file writes: a file gpunet writes is either the old complete file or the new one.

:func:`atomic_write` writes to a temporary file in the destination's folder,
flushes and fsyncs it, then renames it over the destination (``os.replace`` is
atomic on POSIX and Windows) and fsyncs the folder. The temporary file's name
carries the writer's process id, so that a later successful write can remove
the temporary files that killed writers left behind (never a live one's).
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import zipfile
import zlib

from .backend import numpy as np
from .errors import FileFormatError

NPY_HEADER_LIMIT = 1 << 16       # bytes of an .npy member's header read at most (NumPy writes < 1 KiB)
SAFE_KINDS = "biufU"             # bool, integers, floats, unicode text: never objects (pickles)
NPY_MAGIC = b"\x93NUMPY"         # the first bytes of a plain .npy file


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Context manager yielding a file object (its ``tmp_path`` is where it is being written);
    on success the file replaces ``path`` atomically.

    ``path`` may be a symbolic link: its target is written and the link kept. On any exception the
    temporary file is removed and ``path`` is left untouched; an OSError (a folder given as the file,
    a folder that is not writable, a full disk) is raised again with the same type and errno and a
    message naming ``path`` (never the temporary file).
    """
    path = os.fspath(path)
    target = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: folder {folder!r} does not exist; create it first")
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path!r}: it is a folder; give a file name such as "
                                f"{os.path.join(path, 'model.npz')!r}", path)
    base = os.path.basename(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.pid{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise _destination_error(exc, path, folder) from None
    try:
        if hasattr(os, "fchmod"):       # mkstemp makes 0600 files; keep the usual permissions
            os.fchmod(fd, _file_mode(target))
        with os.fdopen(fd, mode) as f:
            f.tmp_path = tmp
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _destination_error(exc, path, folder) from exc
        raise
    _remove_stale_temporaries(folder, base)
    with contextlib.suppress(OSError):          # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _destination_error(exc: OSError, path: str, folder: str) -> OSError:
    """``exc`` again (same type and errno) with a message naming the destination ``path``."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"folder {folder!r} is not writable ({exc.strerror}); choose another folder or fix its permissions"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk is full ({exc.strerror}); free some space"
    else:
        why = exc.strerror or str(exc)
    return type(exc)(exc.errno, f"cannot write {path!r}: {why}; the previous file (if any) is unchanged", path)


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


RATIO_EXEMPT_BYTES = 1 << 20     # SafeNpz.array's max_ratio spares members this small
READ_CHUNK_BYTES = 1 << 20          # an array is read from the zip in pieces of this size


def _starts_with(source, magic: bytes) -> bool:
    """Does the file (a path or a seekable file object) start with ``magic``?"""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                return f.read(len(magic)) == magic
        source.seek(0)
        return source.read(len(magic)) == magic
    except (OSError, ValueError, AttributeError):
        return False


class SafeNpz:
    """An ``.npz`` file read as untrusted: nothing is decompressed or allocated before it is checked.

    ``with SafeNpz(path, error=CheckpointError, what="checkpoint") as z:`` (``path`` may be a file object,
    named in messages by ``name=``; a plain ``.npy`` file is refused with a hint) then ``z.names`` (the array
    members, without ``.npy``), ``z.declared_bytes(name)`` (the uncompressed size the zip directory
    declares: nothing decompressed), ``z.header(name)`` (``(shape, dtype)`` from the member's ``.npy``
    header: a few hundred bytes decompressed) and ``z.array(name, shape=, max_bytes=)``, which checks the
    declared size, the header (no object dtype, so no pickle ever runs; shape and size agreeing with
    the declared size and with ``shape`` when given) before reading exactly that many bytes (the zip's
    CRC is checked at the end). Every failure is ``error(message naming the file, path)``; members
    never asked for are never decompressed (a zip bomb beside the arrays costs nothing).
    """

    def __init__(self, path, error=FileFormatError, what="file", name=None):
        source = path if hasattr(path, "read") else os.fspath(path)
        self.path = name if name is not None else (source if isinstance(source, str) else "<bytes>")
        self.error, self.what = error, what
        if isinstance(source, str):
            if not os.path.exists(source):
                raise FileNotFoundError(f"no {what} file at {source!r}")
            if os.path.isdir(source):
                raise self._fail("is a folder, not a .npz file")
        try:
            self._zip = zipfile.ZipFile(source)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            if _starts_with(source, NPY_MAGIC):
                raise self._fail(f"is a single NumPy array (.npy), not a {what} (.npz: a zip of named arrays); "
                                 "gpunet reads .npy files never: load your array with numpy.load and pass it to "
                                 "model.set_weights([...])") from None
            raise self._fail(f"not a readable .npz (zip) file: truncated or corrupt ({exc})") from None
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

    def stored_bytes(self, name) -> int:
        """The bytes member ``name`` takes in the file (compressed), from the zip directory."""
        return self._info(name).compress_size

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

    def array(self, name, shape=None, max_bytes=None, max_ratio=None):
        """Array ``name`` as a NumPy array of its own memory, checked before anything is allocated:
        its declared size against ``max_bytes``, its header's shape against ``shape`` (when given), and
        (``max_ratio``) its declared size against ``max_ratio`` times the bytes it takes in the file
        (members under 1 MiB exempt): a deflated member that would expand more is a zip bomb."""
        declared = self.declared_bytes(name)
        if max_bytes is not None and declared > max_bytes + NPY_HEADER_LIMIT:
            raise self._fail(f"array {name!r} declares {declared:,} bytes uncompressed, over the {max_bytes:,} "
                             "this file can need")
        stored = self.stored_bytes(name)
        if max_ratio is not None and declared > max(RATIO_EXEMPT_BYTES, max_ratio * stored):
            raise self._fail(f"array {name!r} would expand from {stored:,} bytes in the file to {declared:,} "
                             f"(more than {max_ratio}x: a zip bomb, not something gpunet writes)")
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
            out = np.empty(count, dtype=dtype)        # read straight into it: the member is held once
            view, done = memoryview(out).cast("B"), 0
            try:
                while done < nbytes:
                    n = f.readinto(view[done:done + READ_CHUNK_BYTES])
                    if not n:
                        break
                    done += n
                f.read(1)                              # reach the end: the zip checks the member's CRC
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise self._fail(f"array {name!r} is corrupt ({exc})") from None
        if done != nbytes:
            raise self._fail(f"array {name!r} is truncated ({done:,} of {nbytes:,} bytes)")
        return out.reshape(got_shape)
