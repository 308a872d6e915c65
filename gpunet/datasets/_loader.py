"""Finding, downloading, verifying and caching dataset files (shared by mnist and fashion_mnist)."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import sys
import urllib.error
import urllib.request
import warnings
import zlib

from .. import backend
from ..errors import DatasetFormatError
from ..fileio import SafeNpz, atomic_write
from .idx import read_idx

np = backend.numpy

ROLES = ("x_train", "y_train", "x_test", "y_test")
DEFAULT_TIMEOUT_S = 30.0


class DatasetUnavailableError(RuntimeError):
    """No source could provide the dataset; the message lists every place tried and why.

    Attributes:
        tried: list of ``(place, reason)`` pairs, in the order they were tried.
    """

    def __init__(self, message, tried=()):
        super().__init__(message)
        self.tried = list(tried)


@dataclasses.dataclass(frozen=True)
class IDXFile:
    """One IDX file: its name and the hashes that identify its content.

    ``md5`` is the hash of the ``.gz`` file as published; ``content_sha256`` the SHA-256 of the
    decompressed bytes (stable when a distribution recompresses the file, as Debian does).
    """
    name: str
    md5: str | None = None
    content_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything a loader needs to know about one dataset."""
    name: str
    shapes: tuple                      # expected shapes of x_train, y_train, x_test, y_test
    npz_name: str | None = None
    npz_sha256: str | None = None
    idx: tuple = ()                    # IDXFile per role, in ROLES order
    system_dirs: tuple = ()
    mirrors: tuple = ()                # ("npz", url) or ("idx", base_url)


def cache_dir() -> str:
    """The dataset cache: ``$GPUNET_DATA``, else ``$XDG_CACHE_HOME/gpunet``, else ``~/.cache/gpunet``."""
    if os.environ.get("GPUNET_DATA"):
        return os.environ["GPUNET_DATA"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpunet")


# ------------------------------------------------------------------- reading
def _check_shapes(spec, arrays, where):
    for role, arr, shape in zip(ROLES, arrays, spec.shapes):
        if arr.shape != tuple(shape) or arr.dtype != np.uint8:
            raise DatasetFormatError(f"{where}: {role} has shape {arr.shape} and dtype {arr.dtype}, "
                                     f"expected {tuple(shape)} uint8", where)
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


def read_npz_arrays(path, shapes, what="dataset"):
    """The uint8 arrays ``ROLES`` of the ``.npz`` at ``path``, read as untrusted through :class:`SafeNpz`.

    ``shapes`` are the shapes they must have. Each member's header is checked (shape, uint8) and its
    size from the zip directory against ``prod(shape)`` bytes before anything is decompressed; members
    not in ``ROLES`` are never decompressed. Raises :class:`DatasetFormatError` naming the file.
    """
    arrays = []
    with SafeNpz(path, error=DatasetFormatError, what=what) as z:
        for role, shape in zip(ROLES, shapes):
            shape = tuple(shape)
            got_shape, dtype = z.header(role)
            if got_shape != shape or dtype != np.uint8:
                raise DatasetFormatError(f"{path}: {role} has shape {got_shape} and dtype {dtype}, expected {shape} "
                                         f"uint8: not the {what} (nothing was loaded)", path)
            arrays.append(z.array(role, shape=shape, max_bytes=_count(shape)))
    return arrays


def read_npz(spec, path):
    """``(x_train, y_train), (x_test, y_test)`` from Keras' ``.npz`` of ``spec`` (see :func:`read_npz_arrays`)."""
    return _check_shapes(spec, read_npz_arrays(path, spec.shapes, f"{spec.name} dataset"), path)


def read_idx_folder(spec, folder, verify=False):
    """The four IDX files of ``spec`` in ``folder`` (``.gz``, else the raw file without ``.gz``).

    Each header must declare the spec's shape as uint8 (checked before anything is allocated); with
    ``verify`` each file must also match its published hash. Raises :class:`DatasetFormatError`."""
    arrays = []
    for entry, shape in zip(spec.idx, spec.shapes):
        path = os.path.join(folder, entry.name)
        if not os.path.exists(path) and path.endswith(".gz") and os.path.exists(path[:-3]):
            path = path[:-3]
        if not os.path.isfile(path):
            raise DatasetFormatError(f"{folder}: {entry.name} is missing; the folder must hold the four IDX files "
                                     f"{', '.join(e.name for e in spec.idx)}", path)
        if verify and not _idx_file_ok(entry, path, _idx_size(shape)):
            raise DatasetFormatError(f"{path}: checksum mismatch (corrupt or truncated)", path)
        try:
            arrays.append(read_idx(path, shape=shape, dtype=np.uint8))
        except OSError as exc:
            raise DatasetFormatError(f"{path}: cannot read ({exc})", path) from None
    return _check_shapes(spec, arrays, folder)


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _idx_size(shape) -> int:
    """Bytes of a uint8 IDX file of ``shape``, decompressed: header plus values."""
    return 4 + 4 * len(shape) + _count(shape)


def _idx_file_ok(entry, path, limit=None) -> bool:
    """Whether ``path`` has the published ``.gz`` MD5 or the known decompressed SHA-256 (streamed; a
    decompressed stream longer than ``limit`` bytes is a mismatch, found without reading further)."""
    if not entry.md5 and not entry.content_sha256:
        return True
    try:
        if entry.md5 and _digest(open, path, "md5") == entry.md5:
            return True
        if entry.content_sha256:
            with open(path, "rb") as f:
                opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
            return _digest(opener, path, "sha256", limit) == entry.content_sha256
    except (OSError, EOFError, zlib.error):
        return False
    return False


def _digest(opener, path, algorithm, limit=None) -> str | None:
    """The hex digest of what ``opener(path)`` reads, 1 MiB at a time; ``None`` past ``limit`` bytes."""
    h, total = hashlib.new(algorithm), 0
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            total += len(chunk)
            if limit is not None and total > limit:
                return None
            h.update(chunk)
    return h.hexdigest()


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ the search
def load(spec: Spec, path=None, verbose: bool = True, timeout: float | None = None):
    """Return ``(x_train, y_train), (x_test, y_test)`` for ``spec``, searching as the module docs say."""
    tried = []
    if path is not None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{spec.name}: no file or folder at {path!r}; pass Keras' {spec.npz_name or 'npz'} "
                                    "or a folder holding the four IDX .gz files")
        try:
            return read_idx_folder(spec, path) if os.path.isdir(path) else read_npz(spec, path)
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetFormatError(f"{spec.name}: {path} is not a valid copy of the dataset: {exc}. Replace it "
                                     f"with a fresh copy, or call load_data() without path to download a verified "
                                     f"one", path) from None

    folder = os.path.join(cache_dir(), spec.name)
    found = _from_cache(spec, folder, tried)
    if found is not None:
        return found
    for sysdir in spec.system_dirs:
        if spec.idx and all(os.path.exists(os.path.join(sysdir, e.name)) for e in spec.idx):
            try:
                return read_idx_folder(spec, sysdir, verify=True)
            except (ValueError, OSError, EOFError) as exc:
                tried.append((sysdir, str(exc)))
        else:
            tried.append((sysdir, "not installed"))

    timeout = float(os.environ.get("GPUNET_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S)) if timeout is None else timeout
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        tried.append((folder, f"cannot create the cache folder ({exc})"))
        _give_up(spec, folder, tried)
    with _lock(os.path.join(folder, ".lock")):
        found = _from_cache(spec, folder, [])       # another process may have finished meanwhile
        if found is not None:
            return found
        for kind, url in spec.mirrors:
            try:
                if kind == "npz":
                    target = os.path.join(folder, spec.npz_name)
                    _download(url, target, timeout, verbose, lambda p: _sha256_file(p) == spec.npz_sha256)
                    return read_npz(spec, target)
                for entry in spec.idx:
                    target = os.path.join(folder, entry.name)
                    if os.path.exists(target) and _idx_file_ok(entry, target):
                        continue
                    _download(url.rstrip("/") + "/" + entry.name, target, timeout, verbose,
                              lambda p, e=entry: _idx_file_ok(e, p))
                return read_idx_folder(spec, folder, verify=True)
            except Exception as exc:   # network, HTTP, checksum, format: try the next mirror
                tried.append((url, _reason(exc)))
    _give_up(spec, folder, tried)


def _from_cache(spec, folder, tried):
    if spec.npz_name:
        p = os.path.join(folder, spec.npz_name)
        if os.path.exists(p):
            if _sha256_file(p) == spec.npz_sha256:
                try:
                    return read_npz(spec, p)
                except ValueError as exc:
                    tried.append((p, str(exc)))
            else:
                tried.append((p, "cached file is corrupt or truncated (checksum mismatch)"))
            _discard(p)
    if spec.idx and all(os.path.exists(os.path.join(folder, e.name)) for e in spec.idx):
        try:
            return read_idx_folder(spec, folder, verify=True)
        except (ValueError, OSError, EOFError) as exc:
            tried.append((folder, f"cached IDX files are corrupt: {exc}"))
            for e in spec.idx:
                p = os.path.join(folder, e.name)
                if not _idx_file_ok(e, p):
                    _discard(p)
    else:
        tried.append((folder, "not in the cache"))
    return None


def _discard(path):
    warnings.warn(f"gpunet: discarding corrupt cached file {path}; it will be downloaded again", stacklevel=3)
    with contextlib.suppress(OSError):
        os.unlink(path)


def _reason(exc) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _give_up(spec, folder, tried):
    lines = "\n".join(f"  - {where}: {why}" for where, why in tried)
    offline = (f"To proceed offline, copy {spec.npz_name or 'the IDX files'} into {folder} "
               f"(or set GPUNET_DATA), or pass load_data(path=...)")
    if spec.name == "mnist":
        offline += "; or train on the 10,000 real digits shipped with gpunet: mnist.load_sample()"
    if spec.name == "fashion_mnist":
        offline += "; on Debian/Ubuntu: apt-get install dataset-fashion-mnist"
    raise DatasetUnavailableError(f"{spec.name} could not be loaded from any source:\n{lines}\n{offline}", tried)


@contextlib.contextmanager
def _lock(path):
    """An exclusive inter-process lock (POSIX flock; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:   # Windows: atomic renames still keep the cache consistent
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download(url, target, timeout, verbose, verify):
    """Stream ``url`` into a temporary file beside ``target``; rename it into place only if ``verify`` passes."""
    req = urllib.request.Request(url, headers={"User-Agent": "gpunet"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = _progress(total, os.path.basename(target), verbose)
        try:
            with atomic_write(target) as f:
                got = 0
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bar(len(chunk))
                if total is not None and got != total:
                    raise ValueError(f"truncated download: {got} of {total} bytes")
                f.flush()
                if not verify(f.tmp_path):
                    raise ValueError("checksum mismatch: the file is corrupt or not the expected dataset")
        finally:
            bar(None)


def _progress(total, name, verbose):
    if not verbose:
        return lambda n: None
    try:
        from tqdm import tqdm
    except ImportError:
        print(f"Downloading {name} ...", file=sys.stderr)
        return lambda n: None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {name}", file=sys.stderr, leave=False)
    return lambda n: bar.close() if n is None else bar.update(n)
