"""Crash-safe file writes: a file gpunet writes is either the old complete file or the new one.

:func:`atomic_write` writes to a temporary file in the destination's folder,
flushes and fsyncs it, then renames it over the destination (``os.replace`` is
atomic on POSIX and Windows) and fsyncs the folder.
"""
from __future__ import annotations

import contextlib
import os
import tempfile


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
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
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
