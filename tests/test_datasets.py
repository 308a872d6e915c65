"""Dataset loading against a local HTTP server on 127.0.0.1 (no network), IDX files, the embedded sample."""
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gpunet.datasets import DatasetUnavailableError, IDXFormatError, _loader, fashion_mnist, mnist, read_idx, write_idx

SHAPES = ((6, 28, 28), (6,), (4, 28, 28), (4,))


def fixture_arrays(seed=0):
    r = np.random.default_rng(seed)
    return [r.integers(0, 256, s, dtype=np.uint8) if len(s) > 1 else r.integers(0, 10, s, dtype=np.uint8)
            for s in SHAPES]


def npz_bytes(arrays):
    buf = io.BytesIO()
    np.savez(buf, **dict(zip(_loader.ROLES, arrays)))
    return buf.getvalue()


def idx_gz(array):
    body = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()
    return gzip.compress(body, mtime=0)


class Server:
    """A tiny HTTP server on 127.0.0.1 with scripted behaviour per path."""

    def __init__(self):
        self.files = {}          # path -> bytes
        self.behaviour = {}      # path -> 'truncate' | 'error' | 'slow'
        self.hits = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                mode = outer.behaviour.get(self.path)
                body = outer.files.get(self.path)
                if body is None or mode == "error":
                    self.send_response(404 if body is None else 500)
                    self.end_headers()
                    return
                if mode == "slow":
                    time.sleep(2)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[: len(body) // 2] if mode == "truncate" else body)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (timeout test)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_spec(server, arrays, mirrors=("npz",), name="tiny"):
    npz = npz_bytes(arrays)
    server.files["/tiny.npz"] = npz
    idx = []
    for role, arr in zip(_loader.ROLES, arrays):
        fname = f"{role}-idx.gz"
        server.files["/idx/" + fname] = data = idx_gz(arr)
        idx.append(_loader.IDXFile(fname, md5=hashlib.md5(data).hexdigest()))
    urls = {"npz": ("npz", server.url + "/tiny.npz"), "idx": ("idx", server.url + "/idx")}
    return _loader.Spec(name=name, shapes=SHAPES, npz_name="tiny.npz", npz_sha256=hashlib.sha256(npz).hexdigest(),
                        idx=tuple(idx), mirrors=tuple(urls[m] for m in mirrors))


def check(result, arrays):
    (a, b), (c, d) = result
    for got, want in zip((a, b, c, d), arrays):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_download_verify_cache_and_reuse(server, cache):
    arrays = fixture_arrays()
    spec = make_spec(server, arrays)
    check(_loader.load(spec, verbose=False), arrays)
    assert server.hits == ["/tiny.npz"] and (cache / "tiny" / "tiny.npz").exists()
    check(_loader.load(spec, verbose=False), arrays)
    assert server.hits == ["/tiny.npz"], "the cache must be reused without a second request"
    assert [p.name for p in (cache / "tiny").iterdir() if not p.name.startswith(".lock")] == ["tiny.npz"]


def test_checksum_mismatch_falls_back_to_the_idx_mirror(server, cache):
    arrays = fixture_arrays()
    spec = make_spec(server, arrays, mirrors=("npz", "idx"))
    server.files["/tiny.npz"] = npz_bytes(fixture_arrays(seed=1))     # wrong content
    check(_loader.load(spec, verbose=False), arrays)
    assert not (cache / "tiny" / "tiny.npz").exists(), "an unverified file must never land in the cache"
    assert server.hits[0] == "/tiny.npz" and len(server.hits) == 5


@pytest.mark.parametrize("mode,reason", [("truncate", "truncated|IncompleteRead"), ("error", "HTTP 500"),
                                         ("slow", "timed out")])
def test_failures_are_listed(server, cache, mode, reason):
    spec = make_spec(server, fixture_arrays())
    server.behaviour["/tiny.npz"] = mode
    with pytest.raises(DatasetUnavailableError) as info:
        _loader.load(spec, verbose=False, timeout=0.5)
    msg = str(info.value)
    assert server.url + "/tiny.npz" in msg and "not in the cache" in msg and "To proceed offline" in msg
    import re
    assert re.search(reason, msg), msg
    assert not os.path.exists(cache / "tiny" / "tiny.npz")
    assert [p for p in os.listdir(cache / "tiny") if p.endswith(".tmp")] == []


def test_missing_everywhere_lists_every_place(cache):
    spec = _loader.Spec(name="tiny", shapes=SHAPES, npz_name="tiny.npz", npz_sha256="0" * 64,
                        system_dirs=("/nonexistent/dir",), mirrors=(("npz", "http://127.0.0.1:9/tiny.npz"),))
    with pytest.raises(DatasetUnavailableError, match=r"(?s)not in the cache.*/nonexistent/dir: not installed.*"
                                                      r"127\.0\.0\.1:9/tiny\.npz: network error"):
        _loader.load(spec, verbose=False, timeout=1)


def test_corrupt_cache_is_reported_and_replaced(server, cache):
    arrays = fixture_arrays()
    spec = make_spec(server, arrays)
    _loader.load(spec, verbose=False)
    target = cache / "tiny" / "tiny.npz"
    target.write_bytes(target.read_bytes()[:100])       # truncated cache file
    with pytest.warns(UserWarning, match="discarding corrupt cached file"):
        check(_loader.load(spec, verbose=False), arrays)
    assert server.hits == ["/tiny.npz", "/tiny.npz"]


def test_concurrent_callers_share_one_download(server, cache):
    arrays = fixture_arrays()
    spec = make_spec(server, arrays)
    server.behaviour["/tiny.npz"] = "slow"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _loader.load(spec, verbose=False, timeout=10), range(4)))
    for r in results:
        check(r, arrays)
    assert server.hits.count("/tiny.npz") <= 2   # threads share one flock-free process; at most a retry
    assert _loader._sha256_file(cache / "tiny" / "tiny.npz") == spec.npz_sha256


def test_concurrent_processes_do_not_corrupt_the_cache(server, cache):
    import subprocess
    import sys
    arrays = fixture_arrays()
    spec = make_spec(server, arrays)
    server.behaviour["/tiny.npz"] = "slow"
    code = ("import sys, pickle; from gpunet.datasets import _loader; spec = pickle.loads(bytes.fromhex(sys.argv[1])); "
            "(a, b), (c, d) = _loader.load(spec, verbose=False, timeout=10); print(int(a.sum()))")
    import pickle
    arg = pickle.dumps(spec).hex()
    procs = [subprocess.Popen([sys.executable, "-c", code, arg], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert set(outs) == {str(int(arrays[0].sum()))}
    assert server.hits.count("/tiny.npz") == 1, "the inter-process lock makes the others wait and reuse"


def test_explicit_path_npz_and_idx_folder(tmp_path, cache):
    arrays = fixture_arrays()
    spec = dataclasses.replace(make_spec(_Dummy(), arrays), mirrors=())
    p = tmp_path / "given.npz"
    p.write_bytes(npz_bytes(arrays))
    check(_loader.load(spec, path=p), arrays)
    folder = tmp_path / "idx"
    folder.mkdir()
    for entry, arr in zip(spec.idx, arrays):
        (folder / entry.name).write_bytes(idx_gz(arr))
    check(_loader.load(spec, path=folder), arrays)
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        _loader.load(spec, path=tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid copy"):
        _loader.load(spec, path=tmp_path / "bad.npz")


class _Dummy:
    url = "http://127.0.0.1:9"
    files = {}


def test_idx_round_trip_and_validation(tmp_path):
    for dtype in ("uint8", "int8", "int16", "int32", "float32", "float64"):
        a = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
        for name in ("a.idx", "a.idx.gz"):
            write_idx(tmp_path / name, a)
            got = read_idx(tmp_path / name)
            assert got.dtype == a.dtype and np.array_equal(got, a)
    good = (tmp_path / "a.idx").read_bytes()
    cases = {"magic.idx": b"\x01" + good[1:], "code.idx": good[:2] + b"\x07" + good[3:],
             "short.idx": good[:-3], "long.idx": good + b"\x00", "hdr.idx": good[:6]}
    words = {"magic.idx": "bad magic number", "code.idx": "unknown dtype code 0x07",
             "short.idx": "truncated", "long.idx": "trailing data", "hdr.idx": "truncated header"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(IDXFormatError, match=words[name]) as info:
            read_idx(tmp_path / name)
        assert name in str(info.value)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:20])
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "bad.gz")


def test_embedded_sample_is_real_mnist_layout():
    (x, y), (xt, yt) = mnist.load_sample()
    assert x.shape == (8000, 28, 28) and y.shape == (8000,) and xt.shape == (2000, 28, 28) and yt.shape == (2000,)
    assert x.dtype == y.dtype == np.uint8 and x.max() == 255 and set(np.unique(y)) == set(range(10))
    assert os.path.getsize(mnist.SAMPLE_PATH) < 2.5e6
    assert 25 < x.mean() < 45          # real digits: mostly background, ~33 mean intensity
    assert os.path.exists(os.path.join(os.path.dirname(mnist.SAMPLE_PATH), "README.md"))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(cache):
    (x, y), (xt, yt) = fashion_mnist.load_data()
    assert x.shape == (60000, 28, 28) and yt.shape == (10000,) and x.dtype == np.uint8
    for name, digest in fashion_mnist.DEBIAN_GZ_SHA256.items():
        assert _loader._sha256_file(os.path.join("/usr/share/datasets/fashion-mnist", name)) == digest


def test_mnist_spec_matches_keras():
    assert mnist.SPEC.npz_sha256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    assert mnist.SPEC.mirrors[0] == ("npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz")


def test_corrupt_cached_idx_file_is_reported_and_replaced(server, cache):
    arrays = fixture_arrays()
    spec = make_spec(server, arrays, mirrors=("idx",))
    check(_loader.load(spec, verbose=False), arrays)
    assert len(server.hits) == 4
    target = cache / "tiny" / spec.idx[0].name
    target.write_bytes(target.read_bytes()[:30])                        # a truncated cached .gz
    with pytest.warns(UserWarning, match=f"discarding corrupt cached file {target}"):
        check(_loader.load(spec, verbose=False), arrays)
    assert server.hits[4:] == ["/idx/" + spec.idx[0].name], "only the corrupt file is fetched again"
    target.write_bytes(b"\x00\x00\x08\x03garbage")
    offline = dataclasses.replace(spec, mirrors=(("idx", "http://127.0.0.1:9/idx"),))
    with pytest.warns(UserWarning, match="discarding corrupt cached file"):
        with pytest.raises(DatasetUnavailableError, match=r"(?s)cached IDX files are corrupt: .*"
                                                          f"{spec.idx[0].name}: checksum mismatch.*To proceed offline"):
            _loader.load(offline, verbose=False, timeout=1)
    assert not target.exists(), "the corrupt file is deleted so that the next call downloads it again"


def test_verifying_a_gzip_bomb_stops_at_the_expected_size(tmp_path, monkeypatch):
    """A cached or system IDX file is hashed decompressed; a bomb is given up on past the size the spec allows."""
    head = bytes([0, 0, 8, 3]) + np.asarray((60000, 28, 28), ">u4").tobytes()
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    path = tmp_path / "bomb.gz"
    with open(path, "wb") as f:                                         # 200 MB of values in ~200 KB
        f.write(c.compress(head))
        for _ in range(200):
            f.write(c.compress(bytes(1 << 20)))
        f.write(c.flush())
    read = []

    def counting_open(*args, **kwargs):                                 # counts the decompressed bytes read
        f = gzip.GzipFile(*args, **kwargs)
        real = f.read
        f.read = lambda n=-1: read.append(len(out := real(n))) or out
        return f
    monkeypatch.setattr(_loader.gzip, "open", counting_open)
    entry = _loader.IDXFile("bomb.gz", content_sha256="0" * 64)
    limit = 16 + 60000 * 784
    assert not _loader._idx_file_ok(entry, path, limit=limit)
    assert limit < sum(read) <= limit + (1 << 20)
    read.clear()
    assert not _loader._idx_file_ok(entry, path)                         # without a limit: the whole stream
    assert sum(read) == 16 + (200 << 20)
