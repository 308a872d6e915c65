"""Fuzzing the dataset readers (issue 15): hypothesis mutates small valid IDX files (header bytes, dims,
truncation, appended bytes, gzip corruption) and small ``.npz`` files (members, dtypes, shapes, Fortran
order, pickled objects, lying zip directories, corrupt bytes). Every case must end in a
``DatasetFormatError`` naming the file, or in a load equal to what an independent reference reader
returns.

The references come from outside gpunet: for IDX, a parser written here from the format's spec over
``gzip.decompress``; for ``.npz``, NumPy's own ``np.load(allow_pickle=False)`` plus the zip directory as
``zipfile`` reads it, with gpunet's documented extra strictness (uint8 and the spec's shapes; C order; a
member's declared size equal to its ``.npy`` header plus data).

All cases run in ONE child process (``tests/untrusted.run_isolated``), which reports the number of cases,
the worst time of one case and the peak RSS growth (VmHWM where Linux has it: see
``untrusted.run_isolated``) of the loop alone and of the whole child.
"""
import gzip
import io
import os
import shutil
import struct
import tempfile
import time
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from gpunet.datasets import _loader, read_idx
from gpunet.errors import DatasetFormatError
from test_untrusted_datasets import peak_rss_mb
from untrusted import run_isolated

N_IDX, N_NPZ = 1500, 1200                # hypothesis examples of each kind (derandomized)
MAX_RSS_GROWTH_MB, MAX_SECONDS = 100, 40

CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
ERROR = "error"


# ------------------------------------------------------------------ IDX
def idx_reference(data: bytes, want_shape=None, want_dtype=None, max_bytes=None):
    """The IDX spec as an oracle: the array ``data`` holds, or ``ERROR``."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except Exception:
            return ERROR
    if len(data) < 4 or data[0] or data[1] or data[2] not in CODES or data[3] == 0:
        return ERROR
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        return ERROR
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(CODES[data[2]])
    count = 1
    for d in dims:
        count *= d
    if len(data) != 4 + 4 * ndim + count * dtype.itemsize:
        return ERROR
    if want_shape is not None and dims != tuple(want_shape) or \
            want_dtype is not None and dtype.newbyteorder("=") != np.dtype(want_dtype):
        return ERROR
    if max_bytes is not None and count * dtype.itemsize > max_bytes:
        return ERROR
    try:
        return np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(dims)
    except ValueError:                   # a shape NumPy cannot represent (overflowing with a zero axis)
        return ERROR


def _mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for kind, pos, value in muts:
        if kind == "byte" and b:
            b[pos % len(b)] = value
        elif kind == "flip" and b:
            b[pos % len(b)] ^= 1 << (value % 8)
        elif kind == "truncate":
            del b[pos % (len(b) + 1):]
        elif kind == "append":
            b += bytes([value]) * (pos % 7 + 1)
        elif kind == "dim" and len(b) >= 8:
            axis = pos % max(1, min(b[3], (len(b) - 4) // 4))
            b[4 + 4 * axis:8 + 4 * axis] = struct.pack(">I", value)
    return bytes(b)


_byte_mut = st.tuples(st.sampled_from(["byte", "flip", "truncate", "append"]), st.integers(0, 40),
                      st.integers(0, 255))
_dim_mut = st.tuples(st.just("dim"), st.integers(0, 3),
                     st.sampled_from([0, 1, 2, 5, 28, 60000, 10 ** 6, 10 ** 9, 2 ** 31, 2 ** 32 - 1]))
_anywhere_mut = st.tuples(st.sampled_from(["byte", "flip", "truncate"]), st.integers(0, 1 << 16),
                          st.integers(0, 255))


@st.composite
def idx_cases(draw):
    """``(file bytes, expected shape or None, expected dtype or None, max_bytes)``."""
    code = draw(st.sampled_from(sorted(CODES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    count = int(np.prod(shape))
    values = np.frombuffer(draw(st.binary(min_size=count, max_size=count)), np.uint8).astype(CODES[code])
    data = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + values.tobytes()
    data = _mutate(data, draw(st.lists(st.one_of(_byte_mut, _dim_mut, _anywhere_mut), max_size=3)))
    if draw(st.booleans()):
        data = _mutate(gzip.compress(data, mtime=0), draw(st.lists(_anywhere_mut, max_size=2)))
    spec = draw(st.booleans())
    max_bytes = draw(st.sampled_from([None, 1 << 30, 16]))
    return data, (shape if spec else None), (np.dtype(CODES[code]).newbyteorder("=") if spec else None), max_bytes


def check_idx_case(folder, stats, case):
    data, want_shape, want_dtype, max_bytes = case
    path = os.path.join(folder, "case-idx")
    with open(path, "wb") as f:
        f.write(data)
    expected = idx_reference(data, want_shape, want_dtype, max_bytes)
    try:
        got = read_idx(path, shape=want_shape, dtype=want_dtype, max_bytes=max_bytes)
    except DatasetFormatError as exc:
        assert isinstance(expected, str), f"refused a valid file: {exc}"
        assert path in str(exc) and exc.path == path and "allow_pickle" not in str(exc), str(exc)
        stats["refused"] += 1
        return
    assert not isinstance(expected, str), f"loaded an invalid file as {got.shape} {got.dtype}"
    assert got.dtype == expected.dtype.newbyteorder("=") and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    stats["loaded"] += 1


# ------------------------------------------------------------------ npz
SHAPES = ((3, 4, 4), (3,), (2, 4, 4), (2,))
SPEC = _loader.Spec(name="fuzz", shapes=SHAPES, npz_name="fuzz.npz")
DTYPES = ["i1", "u2", "f4", "f8", "?", "<U2", "c8", "O", [("a", "u1")], "V1", "M8[s]"]


def npz_reference(path):
    """NumPy's reading of ``path`` (plus gpunet's documented rules): the four arrays, or ``ERROR``."""
    try:
        out = []
        with np.load(path, allow_pickle=False) as d, zipfile.ZipFile(path) as z:
            for role, shape in zip(_loader.ROLES, SHAPES):
                info = z.getinfo(role + ".npy")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    _, fortran, _ = read_header(f)
                    used = f.tell()
                arr = d[role]
                if arr.shape != shape or arr.dtype != np.uint8 or (fortran and arr.ndim > 1) or \
                        info.file_size != used + arr.nbytes:
                    return ERROR
                out.append(arr)
        return out
    except Exception:
        return ERROR


def _altered(draw, shape):
    """An array that is not the uint8 ``shape`` the spec wants (or, for Fortran order, not stored in C order)."""
    base = np.frombuffer(draw(st.binary(min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))), np.uint8)
    base = base.reshape(shape)
    kind = draw(st.sampled_from(["dtype", "shape", "fortran", "scalar"]))
    if kind == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        if dtype == "O":
            return np.array([1, "a", None][: len(base)] + [0] * max(0, len(base) - 3), dtype=object)
        return base.view("V1") if dtype == "V1" else base.astype(dtype)
    if kind == "shape":
        return np.zeros(tuple(draw(st.lists(st.integers(0, 5), max_size=3))), np.uint8)
    if kind == "fortran":
        return np.asfortranarray(base) if base.ndim > 1 else base
    return np.uint8(7)


@st.composite
def npz_cases(draw):
    """The bytes of a mutated ``.npz``."""
    members = {}
    broken = draw(st.sets(st.sampled_from(_loader.ROLES), max_size=4))
    for role, shape in zip(_loader.ROLES, SHAPES):
        what = draw(st.sampled_from(["drop", "rename", "alter"])) if role in broken else "keep"
        if what == "keep":
            members[role] = np.frombuffer(draw(st.binary(min_size=int(np.prod(shape)),
                                                         max_size=int(np.prod(shape)))), np.uint8).reshape(shape)
        elif what == "rename":
            members[role + "_"] = np.zeros(shape, np.uint8)
        elif what == "alter":
            members[role] = _altered(draw, shape)
    if draw(st.booleans()):
        members["extra"] = np.arange(draw(st.integers(0, 50)))
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **members)
    data = buf.getvalue()
    if draw(st.integers(0, 9)) == 0:                     # rewrite the zip directory's declared sizes
        data = _lie_about_sizes(data, draw(st.sampled_from([0, 1, 10 ** 9, 2 ** 32 - 1])))
    if draw(st.booleans()):                              # corrupt bytes: anywhere, or in the first header
        data = _mutate(data, draw(st.lists(st.one_of(_anywhere_mut, st.tuples(
            st.sampled_from(["byte", "flip"]), st.integers(0, 200), st.integers(0, 255))), min_size=1, max_size=3)))
    return data


def _lie_about_sizes(data: bytes, size: int) -> bytes:
    """Set every central-directory entry's uncompressed size to ``size`` (offset 24 in each entry)."""
    b = bytearray(data)
    start = 0
    while True:
        i = b.find(b"PK\x01\x02", start)
        if i < 0:
            return bytes(b)
        b[i + 24:i + 28] = struct.pack("<I", size)
        start = i + 4


def check_npz_case(folder, stats, data):
    path = os.path.join(folder, "case.npz")
    with open(path, "wb") as f:
        f.write(data)
    expected = npz_reference(path)
    try:
        (a, b), (c, d) = _loader.load(SPEC, path=path)
    except DatasetFormatError as exc:
        assert isinstance(expected, str), f"refused a valid file: {exc}"
        assert path in str(exc) and exc.path == path and "allow_pickle" not in str(exc), str(exc)
        stats["refused"] += 1
        return
    assert not isinstance(expected, str), "loaded a file NumPy cannot read as the dataset"
    for got, want in zip((a, b, c, d), expected):
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    stats["loaded"] += 1


# ------------------------------------------------------------------ the loop (runs in the child)
def run_fuzz(n_idx=N_IDX, n_npz=N_NPZ) -> dict:
    """Run every case in this process; returns counts, the worst case's seconds and the peak RSS growth."""
    folder = tempfile.mkdtemp(prefix="gpunet-fuzz-")
    base = peak_rss_mb()
    stats = {"idx": {"loaded": 0, "refused": 0}, "npz": {"loaded": 0, "refused": 0}, "worst_case_s": 0.0}

    def timed(check, kind):
        def run(case):
            t0 = time.perf_counter()
            check(folder, stats[kind], case)
            stats["worst_case_s"] = max(stats["worst_case_s"], time.perf_counter() - t0)
        return run

    common = dict(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    try:
        settings(max_examples=n_idx, **common)(given(idx_cases())(timed(check_idx_case, "idx")))()
        settings(max_examples=n_npz, **common)(given(npz_cases())(timed(check_npz_case, "npz")))()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    stats["loop_rss_growth_mb"] = None if base is None else peak_rss_mb() - base
    return stats


def test_fuzz_dataset_files_in_one_child_process():
    here = os.path.dirname(os.path.abspath(__file__))
    out = run_isolated(f"import sys\nsys.path.insert(0, {here!r})\nimport test_fuzz_datasets as F\n"
                       "result = F.run_fuzz()", timeout=300)
    assert out.result is not None and "error" not in out.result, (out.result, out.stderr[-4000:])
    assert out.result["loop_rss_growth_mb"] is None or out.result["loop_rss_growth_mb"] <= out.rss_growth_mb
    s = out.result
    cases = sum(s[k]["loaded"] + s[k]["refused"] for k in ("idx", "npz"))
    print(f"\nfuzzed {cases} dataset files: {s}; peak RSS growth {out.rss_growth_mb:.1f} MB, {out.seconds:.1f} s")
    assert cases >= 0.9 * (N_IDX + N_NPZ)
    for kind in ("idx", "npz"):          # both outcomes are exercised, not just refusals
        assert s[kind]["loaded"] >= 20 and s[kind]["refused"] >= 100, s
    assert out.rss_growth_mb < MAX_RSS_GROWTH_MB and out.seconds <= MAX_SECONDS, out
