"""Building a C++ translation unit into a cached shared library: the build cache of :mod:`.host` (the CPU
kernels) and of the test suite's emulated CuPy.

A library is cached under a key of everything that makes it (the text, compiler and version, flags,
machine), written to a temporary file of its builder and renamed into place (concurrent builders never
see half a file), with a trailer and SHA-256 digest that tell a complete file from a damaged one.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import platform
import subprocess
import tempfile


def valid_library(path: pathlib.Path, trailer: bytes) -> bool:
    """Is ``path`` a complete library written by :func:`cached_build` (its trailer's digest matches)?"""
    with contextlib.suppress(OSError):
        data = path.read_bytes()
        n = len(data) - 32 - len(trailer)
        return n > 0 and data[n:-32] == trailer and hashlib.sha256(data[:n]).digest() == data[-32:]
    return False


def user_cache(name: str, override: str) -> pathlib.Path:
    """``$override``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/``name``; else a per-user temporary folder."""
    path = pathlib.Path(os.environ.get(override) or pathlib.Path(
        os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / name)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = pathlib.Path(tempfile.gettempdir()) / f"{name.replace('/', '-')}-{os.getuid()}"
        path.mkdir(exist_ok=True)
    return path


def cached_build(text: str, flags: list, cxx: str, version: str, folder: pathlib.Path, trailer: bytes,
                 compile_) -> tuple:
    """``(path, built)``: the cached library of translation unit ``text``, compiled first (``built``
    True) by ``compile_(cxx, flags, text, out)`` if absent or damaged. Written to a temporary file of
    this builder and renamed into place, so concurrent builders never see half a file."""
    parts = [str(trailer), platform.machine(), cxx, version, *flags, text]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]
    path = folder / f"{key}.so"
    if valid_library(path, trailer):
        return path, False
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")   # this builder's own file
    os.close(fd)
    try:
        compile_(cxx, flags, text, tmp)
        with open(tmp, "r+b") as f:
            f.write(trailer + hashlib.sha256(f.read()).digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                      # atomic: other processes see no file or a whole one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path, True


class BuildError(RuntimeError):
    """The host compiler is missing or rejected a kernel source."""


_VERSIONS = {}   # compiler path -> the first line of its --version

def compiler_version(cxx: str) -> str:
    if cxx not in _VERSIONS:
        try:
            out = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        except OSError as e:
            raise BuildError(f"cannot run the C++ compiler {cxx}: {e}") from e
        _VERSIONS[cxx] = out.partition("\n")[0]
    return _VERSIONS[cxx]


def compile_library(cxx: str, flags: list, text: str, out: str) -> None:
    """Compile the translation unit ``text`` into the shared library ``out``."""
    try:
        result = subprocess.run([cxx, *flags, "-x", "c++", "-", "-o", out], input=text, capture_output=True, text=True)
    except OSError as e:
        raise BuildError(f"cannot run the C++ compiler {cxx}: {e}") from e
    if result.returncode != 0:
        raise BuildError(f"{cxx} rejected the kernel source:\n{result.stderr.strip()[:2000]}")
