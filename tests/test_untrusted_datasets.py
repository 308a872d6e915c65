"""Dataset files read as untrusted (issue 15): zip-bomb ``.npz``, gzip IDX bombs, IDX headers declaring
10^12 items, truncated files, wrong magic or dtype codes, object arrays, random bytes.

Oracles: the IDX spec (magic ``00 00 08 03`` = uint8 with 3 axes, then big-endian uint32 dims, then the
values; a raw file is exactly ``4 + 4 * ndim + prod(dims) * itemsize`` bytes), the ``.npy``/zip formats
as NumPy and ``zipfile`` read them, deflate's largest expansion (1032:1, zlib's technical notes), and the
published SHA-256 of Fashion-MNIST's decompressed IDX files. Every crafted file is built here byte by
byte; the bombs are real (a small one of each kind is decompressed by NumPy/gzip to prove the builder),
and the big ones are read in a child process (``tests/untrusted.run_isolated``) whose peak memory growth
and time are asserted.

Peak memory is the child's own ``VmHWM`` (see ``tests/untrusted.py``).
"""
import gzip
import hashlib
import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from gpunet.datasets import DatasetUnavailableError, IDXFormatError, _loader, fashion_mnist, mnist, read_idx
from gpunet.errors import DatasetFormatError, FileFormatError
from untrusted import run_isolated

MIB = 1 << 20
MNIST_SHAPES = mnist.SPEC.shapes
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SMALL = ((6, 28, 28), (6,), (4, 28, 28), (4,))
ROLES = _loader.ROLES


# ------------------------------------------------------------------ measuring a child
def peak_rss_mb():
    """This process's peak resident memory in MB: VmHWM where /proc has it (reset by exec), else None."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return None



# ------------------------------------------------------------------ crafting files byte by byte
def idx_header(shape, code=0x08):
    """The IDX spec's header: 0, 0, dtype code, ndim, then one big-endian uint32 per axis."""
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)


def npy_header(shape, descr="|u1"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def deflate_with_zeros(prefix: bytes, zeros: int):
    """A raw deflate stream of ``prefix`` then ``zeros`` zero bytes, built in O(output) time: each MiB of
    zeros after a full flush compresses to the same ~1 KB block, which is repeated. Returns
    ``(stream, crc32, uncompressed size)``."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)]
    block = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(zeros, MIB)
    parts.append(block * full)
    parts.append(c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH))
    crc = zlib.crc32(prefix)
    one = bytes(MIB)
    for _ in range(full):
        crc = zlib.crc32(one, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return b"".join(parts), crc, len(prefix) + zeros


def gzip_with_zeros(prefix: bytes, zeros: int) -> bytes:
    """A gzip file (RFC 1952) holding ``prefix`` then ``zeros`` zero bytes."""
    stream, crc, size = deflate_with_zeros(prefix, zeros)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + stream + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zip_file(members) -> bytes:
    """A zip archive (PKWARE APPNOTE) of ``members``: ``(name, deflate stream, crc, size, declared size)``;
    ``declared size`` is what the local header and central directory say (it may lie)."""
    out, central = io.BytesIO(), []
    for name, data, crc, size, declared in members:
        offset = out.tell()
        fields = (20, 0, 8, 0, 0x21, crc, len(data), declared, len(name), 0)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, offset)
                       + name.encode())
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def npz_member(name, array):
    """A zip member for ``array`` as NumPy writes it (``.npy`` v1.0), compressed."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    raw = buf.getvalue()
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(raw) + c.flush()
    return (name + ".npy", data, zlib.crc32(raw), len(raw), len(raw))


def bomb_member(name, shape, zeros=None, declared=None):
    """A member whose ``.npy`` header says ``shape`` uint8, followed by ``zeros`` zero bytes (default: what
    the header says); ``declared`` overrides the size the zip directory states."""
    head = npy_header(shape)
    count = int(np.prod(shape, dtype=np.int64)) if zeros is None else zeros
    data, crc, size = deflate_with_zeros(head, count)
    return (name + ".npy", data, crc, size, size if declared is None else declared)


def zeros_npz_members(shapes):
    return [bomb_member(role, shape) for role, shape in zip(ROLES, shapes)]


def write(path, data):
    path.write_bytes(data)
    return str(path)


def assert_refused(outcome, *words, mb=100, seconds=5.0):
    """The child ended with a DatasetFormatError naming ``words``, within ``mb`` of peak RSS growth."""
    assert outcome.result is not None, outcome.stderr[-3000:]
    assert outcome.result.get("error") in ("DatasetFormatError", "IDXFormatError"), outcome.result
    for w in words:
        assert w in outcome.result["message"], (w, outcome.result["message"])
    assert "allow_pickle" not in outcome.result["message"]
    assert outcome.rss_growth_mb < mb, f"peak RSS grew {outcome.rss_growth_mb:.0f} MB"
    assert outcome.seconds < seconds, f"took {outcome.seconds:.1f} s"


def load_in_child(module, path):
    return run_isolated(f"from gpunet.datasets import {module}\n{module}.load_data(path={str(path)!r})\n"
                        "result = 'loaded'")


# ------------------------------------------------------------------ the builders make what they claim
def test_the_builders_make_files_numpy_and_gzip_read_as_claimed(tmp_path):
    p = write(tmp_path / "z.npz", zip_file(zeros_npz_members(SMALL) + [npz_member("extra", np.arange(3))]))
    with np.load(p, allow_pickle=False) as d:
        assert [d[r].shape for r in ROLES] == list(SMALL) and d["x_train"].dtype == np.uint8
        assert not d["x_train"].any() and d["extra"].tolist() == [0, 1, 2]
    raw = gzip.decompress(gzip_with_zeros(idx_header((3, 2, MIB + 5)), 3 * 2 * (MIB + 5)))
    assert raw[:4] == b"\x00\x00\x08\x03" and len(raw) == 16 + 6 * (MIB + 5) and raw[16:].count(0) == len(raw) - 16
    bomb = gzip_with_zeros(idx_header((1000, 1000, 1000)), 10 ** 9)
    assert len(bomb) < 1.1e6                         # 1 GB of values in about 1 MB: deflate's ~1030:1
    assert zlib.decompressobj(31).decompress(bomb, 10 * MIB)[:4] == b"\x00\x00\x08\x03"


# ------------------------------------------------------------------ zip-bomb npz via load_data(path=)
@pytest.fixture(scope="module")
def mnist_bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    rows = 1_900_000                                  # 1.49 GB of x_train in a ~1.5 MB file
    members = zeros_npz_members(MNIST_SHAPES)
    files = {
        # the npy header and the zip directory both say 1.49 GB
        "big_header": [bomb_member("x_train", (rows, 28, 28))] + members[1:],
        # the header says the spec's shape, the member holds 1.49 GB (the zip directory says so)
        "big_member": [bomb_member("x_train", MNIST_SHAPES[0], zeros=rows * 784)] + members[1:],
        # the zip directory understates: it says the spec's size, the member inflates to 1.49 GB
        "lying_directory": [bomb_member("x_train", MNIST_SHAPES[0], zeros=rows * 784,
                                        declared=members[0][3])] + members[1:],
    }
    paths = {k: write(folder / f"{k}.npz", zip_file(v)) for k, v in files.items()}
    for p in paths.values():
        assert os.path.getsize(p) < 2 * MIB
    return paths


def test_zip_bomb_mnist_npz_is_refused_at_once(mnist_bombs):
    with zipfile.ZipFile(mnist_bombs["big_header"]) as z:        # what np.load would decompress
        assert z.getinfo("x_train.npy").file_size > 1.4e9
    out = load_in_child("mnist", mnist_bombs["big_header"])
    assert_refused(out, mnist_bombs["big_header"], "x_train", "(1900000, 28, 28)", "(60000, 28, 28)", seconds=1.0)


def test_npz_member_larger_than_its_header_is_refused_before_decompressing(mnist_bombs):
    out = load_in_child("mnist", mnist_bombs["big_member"])
    assert_refused(out, mnist_bombs["big_member"], "x_train", "declares", seconds=1.0)


def test_npz_whose_zip_directory_understates_the_size_reads_no_further_than_it(mnist_bombs):
    out = load_in_child("mnist", mnist_bombs["lying_directory"])
    # the 47 MB the directory declares are read into the array (once), then the CRC fails; never the
    # 1.49 GB the member inflates to
    assert_refused(out, mnist_bombs["lying_directory"], "x_train", "corrupt", mb=80, seconds=3.0)
    print(f"lying zip directory: peak RSS growth {out.rss_growth_mb:.1f} MB")


def test_a_bomb_member_beside_the_arrays_is_never_decompressed(tmp_path):
    members = zeros_npz_members(SMALL) + [bomb_member("bomb", (1_900_000, 28, 28))]
    p = write(tmp_path / "tiny.npz", zip_file(members))
    out = run_isolated(
        "import dataclasses\nfrom gpunet.datasets import _loader, mnist\n"
        f"spec = dataclasses.replace(mnist.SPEC, name='tiny', shapes={SMALL!r}, mirrors=())\n"
        f"(a, b), (c, d) = _loader.load(spec, path={p!r})\n"
        "result = [list(a.shape), int(a.sum() + c.sum()), str(a.dtype)]")
    assert out.result == [[6, 28, 28], 0, "uint8"], out
    assert out.rss_growth_mb < 20 and out.seconds < 1.0, out


def test_a_valid_mnist_npz_still_loads(tmp_path):
    p = write(tmp_path / "mnist.npz", zip_file(zeros_npz_members(MNIST_SHAPES)))
    (x, y), (xt, yt) = mnist.load_data(path=p)
    assert [x.shape, y.shape, xt.shape, yt.shape] == list(MNIST_SHAPES) and x.dtype == yt.dtype == np.uint8
    assert not x.any() and x.flags.writeable and x.flags.c_contiguous


# ------------------------------------------------------------------ IDX bombs and huge headers
def write_idx_folder(folder, files):
    """``files``: role -> bytes; the other roles get valid all-zero IDX files of MNIST's shapes."""
    folder.mkdir(exist_ok=True)
    for entry, role, shape in zip(mnist.SPEC.idx, ROLES, MNIST_SHAPES):
        data = files.get(role)
        if data is None:
            data = gzip_with_zeros(idx_header(shape), int(np.prod(shape)))
        (folder / entry.name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def idx_bombs(tmp_path_factory):
    base = tmp_path_factory.mktemp("idxbombs")
    values = 1_900_000 * 784                                          # 1.49 GB
    return {
        # the header says MNIST's shape; 1.49 GB of values follow
        "spec_header": write_idx_folder(base / "spec_header", {
            "x_train": gzip_with_zeros(idx_header(MNIST_SHAPES[0]), values)}),
        # the header says it all: (1900000, 28, 28)
        "big_header": write_idx_folder(base / "big_header", {
            "x_train": gzip_with_zeros(idx_header((1_900_000, 28, 28)), values)}),
    }


def test_gzip_idx_bomb_stops_at_the_size_the_spec_allows(idx_bombs):
    folder = idx_bombs["spec_header"]
    path = folder / mnist.SPEC.idx[0].name
    assert path.stat().st_size < 2 * MIB
    out = load_in_child("mnist", folder)
    assert_refused(out, str(path), "trailing data", "(60000, 28, 28)", mb=100, seconds=3.0)


def test_gzip_idx_bomb_declaring_its_size_is_refused_from_the_header(idx_bombs):
    folder = idx_bombs["big_header"]
    path = str(folder / mnist.SPEC.idx[0].name)
    out = load_in_child("mnist", folder)
    assert_refused(out, path, "(1900000, 28, 28)", "expected (60000, 28, 28)", seconds=1.0)
    # read_idx without a spec: the default 1 GiB budget refuses it from the header alone
    out = run_isolated(f"from gpunet.datasets import read_idx\nread_idx({path!r})")
    assert_refused(out, path, "over the budget of 1,073,741,824 bytes", "max_bytes=None", seconds=1.0)
    out = run_isolated(f"from gpunet.datasets import read_idx\nread_idx({path!r}, max_bytes=10**8)")
    assert_refused(out, path, "over the budget of 100,000,000 bytes", seconds=1.0)


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_header_declaring_10_to_the_12_items_is_refused_before_allocating(tmp_path, compressed):
    data = idx_header((1_000_000, 1_000_000)) + bytes(100)             # 10^12 uint8 declared
    p = write(tmp_path / ("huge.gz" if compressed else "huge"), gzip.compress(data) if compressed else data)
    words = ["more than a", "gzip file can hold"] if compressed else ["size mismatch", "1,000,000,000,012 bytes",
                                                                      "file has 112 bytes", "truncated"]
    out = run_isolated(f"from gpunet.datasets import read_idx\nread_idx({p!r}, max_bytes=None)")
    assert_refused(out, p, "(1000000, 1000000)", *words, mb=20, seconds=0.5)
    with pytest.raises(IDXFormatError, match=words[-1]):                # with the default budget too
        read_idx(p)
    folder = write_idx_folder(tmp_path / "f", {"x_train": open(p, "rb").read()})
    with pytest.raises(DatasetFormatError, match=r"header declares shape \(1000000, 1000000\).*expected "
                                                 r"\(60000, 28, 28\) of uint8"):
        mnist.load_data(path=folder)


# ------------------------------------------------------------------ small crafted IDX files: the spec as oracle
def valid_idx(shape=(2, 3, 4), code=0x08):
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    values = (np.arange(int(np.prod(shape))) % 120).astype(dtype).reshape(shape)
    return idx_header(shape, code) + values.tobytes(), values


@pytest.mark.parametrize("gz", [False, True])
def test_idx_spec_oracle_valid_files_load_exactly(tmp_path, gz):
    for code in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E):
        for shape in ((5,), (2, 3, 4), (1, 1, 1, 7), (0, 3)):
            data, values = valid_idx(shape, code)
            p = write(tmp_path / "v", gzip.compress(data) if gz else data)
            got = read_idx(p)
            assert got.dtype == values.dtype.newbyteorder("=") and got.dtype.isnative
            np.testing.assert_array_equal(got, values)


IDX_CASES = {
    "wrong magic": (lambda d: b"\x01" + d[1:], "bad magic number 01000803"),
    "wrong magic byte 1": (lambda d: d[:1] + b"\x08" + d[2:], "bad magic number 00080803"),
    "dtype code 0x07": (lambda d: d[:2] + b"\x07" + d[3:], "unknown dtype code 0x07"),
    "dtype code 0x0a": (lambda d: d[:2] + b"\x0a" + d[3:], "unknown dtype code 0x0a"),
    "0 axes": (lambda d: d[:3] + b"\x00" + d[4:], "header declares 0 axes"),
    "empty": (lambda d: b"", "only 0 bytes"),
    "3 bytes": (lambda d: d[:3], "only 3 bytes"),
    "truncated header": (lambda d: d[:9], "truncated header (9 bytes, 16 needed for 3 axes)"),
    "truncated body": (lambda d: d[:-1], "truncated"),
    "trailing data": (lambda d: d + b"\x00", "trailing data"),
    "ndim 255, no dims": (lambda d: d[:3] + b"\xff" + d[4:], "truncated header"),
    "dims disagree": (lambda d: d[:4] + struct.pack(">I", 3) + d[8:], "size mismatch"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
@pytest.mark.parametrize("gz", [False, True])
def test_idx_crafted_headers_and_sizes(tmp_path, case, gz):
    mutate, words = IDX_CASES[case]
    data = mutate(valid_idx()[0])
    p = write(tmp_path / f"bad {case}", gzip.compress(data) if gz else data)
    with pytest.raises(IDXFormatError, match=None) as info:
        read_idx(p)
    assert words in str(info.value) and p in str(info.value) and info.value.path == p
    assert isinstance(info.value, DatasetFormatError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("cut", [1, 10, 30, -9, -4, -1])
def test_truncated_or_corrupt_gzip_idx(tmp_path, cut):
    data, _ = valid_idx((40, 28, 28))
    gz = gzip.compress(data)
    p = write(tmp_path / "t.gz", gz[:cut])
    with pytest.raises(IDXFormatError, match="truncated|corrupt") as info:
        read_idx(p)
    assert p in str(info.value)
    flipped = bytearray(gz)
    flipped[-6] ^= 0xFF                                                # the CRC-32 / ISIZE trailer
    p = write(tmp_path / "crc.gz", bytes(flipped))
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip data.*CRC|corrupt or truncated gzip data"):
        read_idx(p)


def test_idx_of_the_wrong_dtype_or_shape_for_the_dataset(tmp_path):
    images_as_int32 = idx_header((6, 28, 28), 0x0C) + bytes(6 * 28 * 28 * 4)
    spec = _loader.Spec(name="tiny", shapes=SMALL, idx=mnist.SPEC.idx)
    folder = tmp_path / "f"
    folder.mkdir()
    for entry, shape in zip(spec.idx, SMALL):
        (folder / entry.name).write_bytes(gzip.compress(idx_header(shape) + bytes(int(np.prod(shape)))))
    (folder / spec.idx[0].name).write_bytes(gzip.compress(images_as_int32))
    with pytest.raises(DatasetFormatError, match=r"shape \(6, 28, 28\) of int32.*expected \(6, 28, 28\) of uint8"):
        _loader.load(spec, path=folder)
    (folder / spec.idx[0].name).write_bytes(gzip.compress(idx_header((6, 28, 27)) + bytes(6 * 28 * 27)))
    with pytest.raises(DatasetFormatError, match=r"\(6, 28, 27\).*expected \(6, 28, 28\)"):
        _loader.load(spec, path=folder)
    (folder / spec.idx[0].name).unlink()
    with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte.gz is missing"):
        _loader.load(spec, path=folder)


# ------------------------------------------------------------------ crafted npz files
def small_spec():
    return _loader.Spec(name="tiny", shapes=SMALL, npz_name="tiny.npz")


def small_members(**replace):
    out = []
    for role, shape in zip(ROLES, SMALL):
        if role in replace:
            if replace[role] is not None:
                out.append(npz_member(role, replace[role]))
        else:
            out.append(npz_member(role, np.ones(shape, np.uint8)))
    return out


NPZ_CASES = {
    "object array": (dict(y_train=np.array([1, "a", None, 2, 3, 4], dtype=object)),
                     "dtype object (Python objects, which would need a pickle"),
    "float64": (dict(x_train=np.zeros((6, 28, 28))), "x_train has shape (6, 28, 28) and dtype float64, expected"),
    "int8": (dict(y_test=np.zeros(4, np.int8)), "y_test has shape (4,) and dtype int8, expected (4,) uint8"),
    "text": (dict(y_test=np.array(["a"] * 4)), "y_test has shape (4,) and dtype <U1"),
    "shape": (dict(x_test=np.zeros((4, 28), np.uint8)), "x_test has shape (4, 28) and dtype uint8, expected "
                                                        "(4, 28, 28)"),
    "missing": (dict(x_test=None), "has no array 'x_test'"),
    "structured": (dict(y_train=np.zeros(6, dtype=[("a", "u1")])), "structured"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_npz_crafted_members(tmp_path, case):
    replace, words = NPZ_CASES[case]
    p = write(tmp_path / "c.npz", zip_file(small_members(**replace)))
    with pytest.raises(DatasetFormatError) as info:
        _loader.load(small_spec(), path=p)
    msg = str(info.value)
    assert words in msg and p in msg and info.value.path == p and "allow_pickle" not in msg, msg
    assert "Replace it with a fresh copy" in msg


def test_object_arrays_never_run_a_pickle(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))
    p = write(tmp_path / "o.npz", zip_file(small_members(x_train=np.array([Boom()] * 6, dtype=object))))
    with pytest.raises(DatasetFormatError, match="never runs a pickle"):
        mnist.load_data(path=p)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"garbage", os.urandom(4096), b"PK\x03\x04" + os.urandom(500),
                                     b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }"
                                     + b" " * 50 + b"\n\x01\x02\x03"])
def test_random_bytes_or_a_plain_npy_as_npz(tmp_path, content):
    p = write(tmp_path / "r.npz", content)
    with pytest.raises(DatasetFormatError) as info:
        mnist.load_data(path=p)
    msg = str(info.value)
    expected = "is a single NumPy array (.npy)" if content.startswith(b"\x93NUMPY") else "not a readable .npz (zip) file"
    assert p in msg and expected in msg and "allow_pickle" not in msg and "context manager" not in msg, msg


@pytest.mark.parametrize("cut", [22, 100, 400, -30, -1])
def test_truncated_npz(tmp_path, cut):
    good = zip_file(small_members())
    assert len(good) > 400
    p = write(tmp_path / "t.npz", good[:cut])
    with pytest.raises(DatasetFormatError, match="t.npz"):
        _loader.load(small_spec(), path=p)


def test_errors_are_one_family():
    assert issubclass(IDXFormatError, DatasetFormatError) and issubclass(DatasetFormatError, FileFormatError)
    assert issubclass(DatasetFormatError, ValueError) and not issubclass(DatasetUnavailableError, ValueError)


# ------------------------------------------------------------------ the real Fashion-MNIST, bit for bit
@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_loads_bit_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "cache"))
    for source in (fashion_mnist.load_data(path=FASHION_DIR), fashion_mnist.load_data()):
        for array, entry in zip((*source[0], *source[1]), fashion_mnist.SPEC.idx):
            digest = hashlib.sha256(idx_header(array.shape) + array.tobytes()).hexdigest()
            assert digest == entry.content_sha256, entry.name          # the published decompressed SHA-256
            raw = gzip.decompress(open(os.path.join(FASHION_DIR, entry.name), "rb").read())
            assert raw[16:] == array.tobytes() if array.ndim == 3 else raw[8:] == array.tobytes()


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_costs_about_its_own_size(tmp_path):
    out = run_isolated(f"from gpunet.datasets import fashion_mnist\n(x, y), (a, b) = fashion_mnist.load_data("
                       f"path={FASHION_DIR!r})\nresult = int(x.nbytes + y.nbytes + a.nbytes + b.nbytes)")
    assert out.result == 70000 * 785, out
    assert out.rss_growth_mb < 100 and out.seconds < 5, out


@pytest.mark.parametrize("gz", [False, True])
def test_idx_shape_numpy_cannot_represent(tmp_path, gz):
    shape = (2 ** 31, 2 ** 31, 2 ** 31, 0)                          # 0 items, but overflowing axes
    with pytest.raises(ValueError):                                  # NumPy's own limit is the oracle
        np.empty(shape, np.uint8)
    data = idx_header(shape)
    p = write(tmp_path / "z", gzip.compress(data) if gz else data)
    with pytest.raises(IDXFormatError, match=r"a shape NumPy cannot represent") as info:
        read_idx(p)
    assert p in str(info.value)
