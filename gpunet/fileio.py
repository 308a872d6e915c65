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
