"""The convolution and pooling CUDA kernels (gpunet/kernels/conv.cu, launched by conv_cuda.py) on CuPy: a real
GPU or the emulated one.

Three oracles, bit for bit where the arithmetic contract fixes the bits:

* a reference written here as plain loops over pixels in float32 scalars, in the order the contract states
  (independent of both the kernels' index arithmetic and the NumPy twins' stride tricks);
* PyTorch CPU's max/average pooling (values and argmax positions; averages within rounding, since it sums
  in its own order) and the adjoint identity <im2col(x), g> = <x, col2im(g)> in float64;
* the NumPy twins of gpunet/kernels/conv.py (same signatures), when that module has them.

The same conv.cu launched with NumPy arrays runs on the CPU (gpunet/kernels/host.py) and is held to the
reference too, with IEEE subnormals.

Geometry is Keras': 'valid' (no padding, out = (in - k) // s + 1) and 'same' (out = ceil(in / s), padding
total max((out - 1) * s + k - in, 0), top/left total // 2), plus free paddings for im2col/col2im. Inputs mix
random values, ties (small integers), -0, +-inf, NaN and subnormals; the kernels flush subnormals (CuPy's
-ftz=true, the emulator's DAZ/FTZ), so the references run under tests/subnormals.flushing.
"""
import importlib
import math
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunet.kernels import conv_cuda, cuda, host
from subnormals import flushes, flushing

F = np.float32
SETTINGS = dict(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e-45, 3e38, -3e38, 1.0, -1.0], F)


@pytest.fixture(autouse=True)
def _quiet_float_warnings():
    with np.errstate(all="ignore"):
        yield


def same_bits(a, b):
    """Equal float32 bits (-0 != +0), any NaN equal to any NaN."""
    a, b = np.asarray(a, F), np.asarray(b, F)
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


def assert_same_bits(got, want, what):
    got, want = np.asarray(got, F), np.asarray(want, F)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if not same_bits(got, want):
        bad = np.flatnonzero((got.view(np.uint32) != want.view(np.uint32)) & ~(np.isnan(got) & np.isnan(want)))
        pytest.fail(f"{what}: {bad.size} of {got.size} differ, first at {bad[:5]}: {got.ravel()[bad[:5]]} "
                    f"vs {want.ravel()[bad[:5]]}")


# ------------------------------------------------------------------ geometry and inputs
def axis_geometry(size, k, s, padding):
    """``(out, pad_before)`` along one axis, Keras' rule; None when 'valid' has no window."""
    if padding == "valid":
        return ((size - k) // s + 1, 0) if size >= k else None
    out = -(-size // s)
    return out, max((out - 1) * s + k - size, 0) // 2


@st.composite
def geometries(draw, free_padding=False, max_hw=7):
    """``(n, H, W, C, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w)``."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    kh, kw, sh, sw = (draw(st.integers(1, 3)) for _ in range(4))
    mode = draw(st.sampled_from(["valid", "same", "free"] if free_padding else ["valid", "same"]))
    if mode == "free":      # any padding, windows wholly in it included (im2col/col2im only)
        pads = [draw(st.integers(0, 3)) for _ in range(4)]
        out_h, out_w = (h + pads[0] + pads[1] - kh) // sh + 1, (w + pads[2] + pads[3] - kw) // sw + 1
        if out_h < 1 or out_w < 1:
            mode, pads = "same", None
        else:
            return n, h, w, c, kh, kw, sh, sw, pads[0], pads[2], out_h, out_w
    gh, gw = axis_geometry(h, kh, sh, mode), axis_geometry(w, kw, sw, mode)
    if gh is None or gw is None:
        gh, gw = axis_geometry(h, kh, sh, "same"), axis_geometry(w, kw, sw, "same")
    return n, h, w, c, kh, kw, sh, sw, gh[1], gw[1], gh[0], gw[0]


def values(shape, seed, kind):
    """float32 ``shape``: 'normal' values, 'ties' (integers -2..2, with -0), or 'special' (normal values with
    -0, +-inf, NaN, subnormals and huge values scattered in)."""
    r = np.random.default_rng(seed)
    if kind == "ties":
        v = r.integers(-2, 3, shape).astype(F)
        v[r.random(shape) < 0.2] = -0.0
        return v
    v = r.standard_normal(shape).astype(F)
    if kind == "special":
        mask = r.random(shape) < 0.3
        v[mask] = r.choice(SPECIAL, int(mask.sum()))
    return v


# ------------------------------------------------------------------ the reference: loops over pixels
def ref_im2col(x, kh, kw, sh, sw, pt, pl, oh_n, ow_n):
    n, H, W, C = x.shape
    cols = np.zeros((n * oh_n * ow_n, kh * kw * C), F)
    for i in range(n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                for dy in range(kh):
                    for dx in range(kw):
                        y, xx = oh * sh + dy - pt, ow * sw + dx - pl
                        if 0 <= y < H and 0 <= xx < W:
                            cols[(i * oh_n + oh) * ow_n + ow, (dy * kw + dx) * C:(dy * kw + dx + 1) * C] = x[i, y, xx]
    return cols


def ref_col2im(cols, n, H, W, C, kh, kw, sh, sw, pt, pl, oh_n, ow_n):
    """Every element: +0, then each copy added in float32, offsets (dy, dx) in row-major order."""
    gx = np.zeros((n, H, W, C), F)
    for dy in range(kh):
        for dx in range(kw):
            for i in range(n):
                for oh in range(oh_n):
                    for ow in range(ow_n):
                        y, xx = oh * sh + dy - pt, ow * sw + dx - pl
                        if 0 <= y < H and 0 <= xx < W:
                            row = (i * oh_n + oh) * ow_n + ow
                            gx[i, y, xx] = gx[i, y, xx] + cols[row, (dy * kw + dx) * C:(dy * kw + dx + 1) * C]
    return gx


def windows(H, W, ph, pw, sh, sw, pt, pl, oh, ow):
    """The positions ``(k, y, x)`` of window (oh, ow) inside the input, row-major; k = dy*pw + dx."""
    return [(dy * pw + dx, oh * sh + dy - pt, ow * sw + dx - pl) for dy in range(ph) for dx in range(pw)
            if 0 <= oh * sh + dy - pt < H and 0 <= ow * sw + dx - pl < W]


def below(a, b, flush):
    """``a < b`` of float32 values (False when either is NaN), subnormals read as zero when ``flush`` (as the
    kernel compares)."""
    if flush:
        a, b = (F(0) if v != 0 and abs(v) < np.finfo(F).tiny else v for v in (a, b))
    return a < b


def ref_max_pool(x, ph, pw, sh, sw, pt, pl, oh_n, ow_n, flush):
    """The first maximum of each window, row-major: the first valid position starts, a later one replaces it
    only when strictly greater (so a NaN survives only in first place)."""
    n, H, W, C = x.shape
    y, arg = np.zeros((n, oh_n, ow_n, C), F), np.zeros((n, oh_n, ow_n, C), np.int32)
    for i in range(n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                for c in range(C):
                    best = None
                    for k, yy, xx in windows(H, W, ph, pw, sh, sw, pt, pl, oh, ow):
                        v = x[i, yy, xx, c]
                        if best is None or below(best[1], v, flush):
                            best = (k, v)
                    arg[i, oh, ow, c], y[i, oh, ow, c] = best
    return y, arg


def ref_max_pool_backward(gy, arg, n, H, W, C, ph, pw, sh, sw, pt, pl, oh_n, ow_n):
    gx = np.zeros((n, H, W, C), F)
    for i in range(n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                for c in range(C):
                    k = arg[i, oh, ow, c]
                    dy, dx = divmod(int(k), pw)
                    gx[i, oh * sh + dy - pt, ow * sw + dx - pl, c] += gy[i, oh, ow, c]
    return gx


def ref_avg_pool(x, ph, pw, sh, sw, pt, pl, oh_n, ow_n):
    n, H, W, C = x.shape
    y = np.zeros((n, oh_n, ow_n, C), F)
    for i in range(n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                pos = windows(H, W, ph, pw, sh, sw, pt, pl, oh, ow)
                s = np.zeros(C, F)
                for _, yy, xx in pos:
                    s = s + x[i, yy, xx]
                y[i, oh, ow] = s / F(len(pos))
    return y


def ref_avg_pool_backward(gy, n, H, W, C, ph, pw, sh, sw, pt, pl, oh_n, ow_n):
    gx = np.zeros((n, H, W, C), F)
    for i in range(n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                pos = windows(H, W, ph, pw, sh, sw, pt, pl, oh, ow)
                share = gy[i, oh, ow] / F(len(pos))
                for _, yy, xx in pos:
                    gx[i, yy, xx] = gx[i, yy, xx] + share
    return gx


def test_reference_loops_against_hand_computed_cases():
    """The reference itself on cases worked by hand: a 3x3 input, 2x2 windows, stride 1, 'same' padding
    (bottom/right)."""
    x = np.arange(9, dtype=F).reshape(1, 3, 3, 1)
    x[0, 0, 0, 0] = 9.0                                    # [[9, 1, 2], [3, 4, 5], [6, 7, 8]]
    y, arg = ref_max_pool(x, 2, 2, 1, 1, 0, 0, 3, 3, False)
    assert y[0, :, :, 0].tolist() == [[9, 5, 5], [7, 8, 8], [7, 8, 8]]
    assert arg[0, :, :, 0].tolist() == [[0, 3, 2], [3, 3, 2], [1, 1, 0]]
    avg = ref_avg_pool(x, 2, 2, 1, 1, 0, 0, 3, 3)
    assert avg[0, :, :, 0].tolist() == [[4.25, 3, 3.5], [5, 6, 6.5], [6.5, 7.5, 8]]
    gx = ref_avg_pool_backward(np.ones((1, 3, 3, 1), F), 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 3, 3)
    assert gx[0, :, :, 0].tolist() == [[0.25, 0.5, 0.75], [0.5, 1, 1.5], [0.75, 1.5, 2.25]]
    cols = ref_im2col(x, 2, 2, 1, 1, 0, 0, 3, 3)
    assert cols[0].tolist() == [9, 1, 3, 4] and cols[8].tolist() == [8, 0, 0, 0]
    counts = ref_col2im(np.ones_like(cols), 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 3, 3)
    assert counts[0, :, :, 0].tolist() == [[1, 2, 2], [2, 4, 4], [2, 4, 4]]


# ------------------------------------------------------------------ kernels against the reference
def run_all(dev, x, geometry, seed, kind):
    """Every kernel on ``x``, and the reference; yields ``(what, got, want)``."""
    n, H, W, C, kh, kw, sh, sw, pt, pl, oh_n, ow_n = geometry
    xp, flush = dev.xp, flushes(dev)
    g_pool = values((n, oh_n, ow_n, C), seed + 1, kind)
    g_cols = values((n * oh_n * ow_n, kh * kw * C), seed + 2, kind)
    xd, window = dev.asarray(x), (kh, kw, sh, sw, pt, pl, oh_n, ow_n)
    cols = dev.to_host(conv_cuda.im2col(xp, xd, *window))
    gx_cols = dev.to_host(conv_cuda.col2im(xp, dev.asarray(g_cols), n, H, W, C, *window))
    y_max, arg = (dev.to_host(a) for a in conv_cuda.max_pool2d(xp, xd, *window))
    gx_max = dev.to_host(conv_cuda.max_pool2d_backward(xp, dev.asarray(g_pool), dev.asarray(arg), n, H, W, C, *window))
    gate = values((n, H, W, C), seed + 3, kind)      # the pooled input as a ReLU output: its backward in the pass
    gx_gated = dev.to_host(conv_cuda.max_pool2d_backward(xp, dev.asarray(g_pool), dev.asarray(arg), n, H, W, C,
                                                         *window, gate=dev.asarray(gate)))
    y_avg = dev.to_host(conv_cuda.avg_pool2d(xp, xd, *window))
    gx_avg = dev.to_host(conv_cuda.avg_pool2d_backward(xp, dev.asarray(g_pool), n, H, W, C, *window))
    with flushing(flush):
        want_max, want_arg = ref_max_pool(x, *window, flush)
        yield "im2col", cols, ref_im2col(x, *window)
        yield "col2im", gx_cols, ref_col2im(g_cols, n, H, W, C, *window)
        yield "max_pool2d", y_max, want_max
        assert np.array_equal(arg, want_arg), "max_pool2d arg"
        yield "max_pool2d_backward", gx_max, ref_max_pool_backward(g_pool, want_arg, n, H, W, C, *window)
        yield "max_pool2d_backward gated", gx_gated, np.multiply(ref_max_pool_backward(g_pool, want_arg, n, H, W, C,
                                                                                       *window), gate > 0)
        yield "avg_pool2d", y_avg, ref_avg_pool(x, *window)
        yield "avg_pool2d_backward", gx_avg, ref_avg_pool_backward(g_pool, n, H, W, C, *window)


@settings(max_examples=60, **SETTINGS)
@given(geometry=geometries(), seed=st.integers(0, 2 ** 16), kind=st.sampled_from(["normal", "ties", "special"]))
def test_kernels_give_the_references_bits(gpu_dev, geometry, seed, kind):
    x = values(geometry[:4], seed, kind)
    for what, got, want in run_all(gpu_dev, x, geometry, seed, kind):
        assert_same_bits(got, want, f"{what} {geometry} {kind}")


@settings(max_examples=30, **SETTINGS)
@given(geometry=geometries(free_padding=True), seed=st.integers(0, 2 ** 16))
def test_im2col_col2im_free_padding_and_adjoint(gpu_dev, geometry, seed):
    """Any padding (windows wholly in it included): the reference's bits, and col2im is im2col's adjoint:
    <im2col(x), g> == <x, col2im(g)> (float64 sums of products; within rounding of col2im's float32 sums)."""
    n, H, W, C, kh, kw, sh, sw, pt, pl, oh_n, ow_n = geometry
    window, xp = (kh, kw, sh, sw, pt, pl, oh_n, ow_n), gpu_dev.xp
    x, g = values((n, H, W, C), seed, "normal"), values((n * oh_n * ow_n, kh * kw * C), seed + 1, "normal")
    cols = gpu_dev.to_host(conv_cuda.im2col(xp, gpu_dev.asarray(x), *window))
    gx = gpu_dev.to_host(conv_cuda.col2im(xp, gpu_dev.asarray(g), n, H, W, C, *window))
    assert_same_bits(cols, ref_im2col(x, *window), f"im2col {geometry}")
    assert_same_bits(gx, ref_col2im(g, n, H, W, C, *window), f"col2im {geometry}")
    lhs = float(np.sum(cols.astype(np.float64) * g))
    rhs = float(np.sum(x.astype(np.float64) * gx))
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-4)


def test_grid_stride_loops_cover_every_element(gpu_dev, monkeypatch):
    """A grid of 3 blocks of 32 threads: every kernel's loop runs several rounds, with the same bits."""
    geometry = (2, 9, 8, 3, 3, 2, 2, 1, 1, 0, 5, 7)         # 'same' for H (k 3, s 2), 'valid' for W (k 2, s 1)
    x = values(geometry[:4], 7, "special")
    full = list(run_all(gpu_dev, x, geometry, 7, "special"))
    monkeypatch.setattr(cuda, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(cuda, "MAX_BLOCKS", 3)
    small = list(run_all(gpu_dev, x, geometry, 7, "special"))
    for (what, got, want), (_, got_small, _) in zip(full, small):
        assert_same_bits(got, want, what)
        assert_same_bits(got_small, want, f"{what}, small grid")


HOST = types.SimpleNamespace(xp=np, asarray=np.asarray, to_host=np.asarray, is_gpu=False)   # NumPy arrays


@settings(max_examples=25, **SETTINGS)
@given(geometry=geometries(), seed=st.integers(0, 2 ** 16), kind=st.sampled_from(["normal", "ties", "special"]))
def test_cpu_build_gives_the_references_bits(geometry, seed, kind):
    """Launched with NumPy arrays, the same conv.cu runs on the CPU (gpunet/kernels/host.py: g++, OpenMP,
    IEEE subnormals): the reference's bits without flushing."""
    if not getattr(cuda, "cpu_kernels", lambda: False)():
        pytest.skip("no CPU build of the kernels here (no C++ compiler, or GPUNET_CPU_KERNELS=0)")
    x = values(geometry[:4], seed, kind)
    for what, got, want in run_all(HOST, x, geometry, seed, kind):
        assert_same_bits(got, want, f"{what} on the CPU {geometry} {kind}")


def test_no_cpu_build_is_an_error_not_garbage(monkeypatch):
    """Where a launch on NumPy arrays cannot run (CPU kernels off), the launchers raise instead of returning
    their unfilled buffers."""
    monkeypatch.setattr(cuda.Source, "launch", lambda self, name, n, args: False)
    with pytest.raises(RuntimeError, match="gpunet.kernels.conv"):
        conv_cuda.avg_pool2d(np, np.ones((1, 2, 2, 1), F), 2, 2, 2, 2, 0, 0, 1, 1)


# ------------------------------------------------------------------ PyTorch CPU as an outside oracle
@settings(max_examples=25, **SETTINGS)
@given(geometry=geometries(), seed=st.integers(0, 2 ** 16))
def test_pooling_against_torch(gpu_dev, geometry, seed):
    """Max pooling's values and argmax positions and average pooling (padding not counted) as PyTorch CPU's,
    on geometry torch can express (symmetric padding of at most half the window: 'valid', or 'same' with an
    even padding total)."""
    torch = pytest.importorskip("torch")
    n, H, W, C, ph, pw, sh, sw, pt, pl, oh_n, ow_n = geometry
    if (oh_n - 1) * sh + ph - H - pt != pt or (ow_n - 1) * sw + pw - W - pl != pl or 2 * pt > ph or 2 * pl > pw:
        pt = pl = 0                                    # torch pads both sides alike: use 'valid' geometry
        if H < ph or W < pw:
            return
        oh_n, ow_n = (H - ph) // sh + 1, (W - pw) // sw + 1
    window, xp = (ph, pw, sh, sw, pt, pl, oh_n, ow_n), gpu_dev.xp
    x = values((n, H, W, C), seed, "normal")           # no ties: torch's argmax is then unambiguous
    y, arg = (gpu_dev.to_host(a) for a in conv_cuda.max_pool2d(xp, gpu_dev.asarray(x), *window))
    avg = gpu_dev.to_host(conv_cuda.avg_pool2d(xp, gpu_dev.asarray(x), *window))
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ty, tidx = torch.nn.functional.max_pool2d(tx, (ph, pw), (sh, sw), (pt, pl), return_indices=True)
    tavg = torch.nn.functional.avg_pool2d(tx, (ph, pw), (sh, sw), (pt, pl), count_include_pad=False)
    assert_same_bits(y, ty.permute(0, 2, 3, 1).numpy(), f"max values vs torch {geometry}")
    flat = tidx.permute(0, 2, 3, 1).numpy()           # y*W + x of the maximum
    oh, ow = np.arange(oh_n)[None, :, None, None], np.arange(ow_n)[None, None, :, None]
    assert np.array_equal(arg, (flat // W - (oh * sh - pt)) * pw + (flat % W - (ow * sw - pl))), "argmax vs torch"
    np.testing.assert_allclose(avg, tavg.permute(0, 2, 3, 1).numpy(), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("window, want_y, want_arg", [
    ([1.0, 3.0, 3.0, 2.0], 3.0, 1), ([-0.0, 0.0, -1.0, -2.0], -0.0, 0), ([0.0, -0.0, -1.0, -2.0], 0.0, 0),
    ([1.0, np.nan, 5.0, np.nan], 5.0, 2), ([np.nan, 1.0, 2.0, 3.0], np.nan, 0), ([-1.0, np.nan, -2.0, 0.5], 0.5, 3),
    ([-np.inf] * 4, -np.inf, 0), ([1e-40, 0.0, -1e-40, -1.0], 1e-40, 0), ([0.0, 1e-40, 2e-40, -1.0], 0.0, 0),
    ([-1.0, -1e-40, 1e-45, -0.0], -1e-40, 1)])
def test_max_pool_worked_windows(gpu_dev, window, want_y, want_arg):
    """One 2x2 window: ties -> the first (-0 and +0 tie; a subnormal ties with zero under the kernels'
    flushing); a NaN first is kept, a later NaN skipped (strictly greater replaces); -inf everywhere -> 0."""
    x = np.array(window, F).reshape(1, 2, 2, 1)
    y, arg = (gpu_dev.to_host(a) for a in conv_cuda.max_pool2d(gpu_dev.xp, gpu_dev.asarray(x), 2, 2, 2, 2, 0, 0, 1, 1))
    assert_same_bits(y.ravel(), [want_y], f"max of {window}")
    assert arg.ravel().tolist() == [want_arg], window


# ------------------------------------------------------------------ argument checks
def test_launchers_refuse_bad_arguments(gpu_dev):
    xp, asarray = gpu_dev.xp, gpu_dev.asarray
    x = asarray(values((1, 4, 4, 2), 0, "normal"))
    with pytest.raises(TypeError, match="float32"):
        conv_cuda.im2col(xp, asarray(np.zeros((1, 4, 4, 2), np.float64)), 2, 2, 1, 1, 0, 0, 3, 3)
    with pytest.raises(ValueError, match="shape"):
        conv_cuda.col2im(xp, asarray(np.zeros((9, 7), F)), 1, 4, 4, 2, 2, 2, 1, 1, 0, 0, 3, 3)
    with pytest.raises(ValueError, match="C-ordered"):
        conv_cuda.im2col(xp, x, 2, 2, 1, 1, 0, 0, 3, 3, out=xp.empty((8, 9), dtype="float32").T)
    with pytest.raises(ValueError, match="shape"):
        conv_cuda.im2col(xp, x, 2, 2, 1, 1, 0, 0, 3, 3, out=xp.empty((9, 9), dtype="float32"))
    with pytest.raises(ValueError, match=">= 1"):
        conv_cuda.im2col(xp, x, 2, 2, 0, 1, 0, 0, 3, 3)
    with pytest.raises(ValueError, match=">= 0"):
        conv_cuda.im2col(xp, x, 2, 2, 1, 1, -1, 0, 3, 3)
    with pytest.raises(ValueError, match="wholly in the padding"):
        conv_cuda.max_pool2d(xp, x, 2, 2, 1, 1, 2, 0, 5, 3)         # the first row of windows is all padding
    with pytest.raises(ValueError, match="wholly in the padding"):
        conv_cuda.avg_pool2d(xp, x, 2, 2, 2, 2, 0, 0, 2, 3)         # window (0, 2) starts at column 4
    with pytest.raises(TypeError, match="int32"):
        conv_cuda.max_pool2d_backward(xp, asarray(np.zeros((1, 2, 2, 2), F)), asarray(np.zeros((1, 2, 2, 2), np.int64)),
                                      1, 4, 4, 2, 2, 2, 2, 2, 0, 0, 2, 2)


def test_strided_inputs_are_copied_and_out_is_written(gpu_dev):
    """A transposed (strided) input gives the bits of its C-ordered copy; ``out`` receives the result."""
    xp = gpu_dev.xp
    host = values((1, 5, 4, 3), 3, "special")
    strided = gpu_dev.asarray(np.ascontiguousarray(host.transpose(0, 2, 1, 3))).transpose(0, 2, 1, 3)
    window = (3, 2, 1, 2, 1, 0, 5, 2)
    out = xp.empty((10, 18), dtype="float32")
    got = conv_cuda.im2col(xp, strided, *window, out=out)
    assert got is out
    with flushing(flushes(gpu_dev)):
        assert_same_bits(gpu_dev.to_host(out), ref_im2col(host, *window), "im2col of a strided input")
    back = xp.empty((1, 5, 4, 3), dtype="float32")
    assert conv_cuda.col2im(xp, out, 1, 5, 4, 3, *window, out=back) is back
    avg = gpu_dev.to_host(conv_cuda.avg_pool2d(xp, strided, 2, 2, 2, 2, 0, 0, 2, 2))
    with flushing(flushes(gpu_dev)):
        assert_same_bits(gpu_dev.to_host(back), ref_col2im(gpu_dev.to_host(out), 1, 5, 4, 3, *window), "col2im into out")
        assert_same_bits(avg, ref_avg_pool(host, 2, 2, 2, 2, 0, 0, 2, 2), "avg_pool2d of a strided input")


def test_empty_batches(gpu_dev):
    xp = gpu_dev.xp
    x = gpu_dev.asarray(np.zeros((0, 4, 4, 2), F))
    assert conv_cuda.im2col(xp, x, 2, 2, 2, 2, 0, 0, 2, 2).shape == (0, 8)
    y, arg = conv_cuda.max_pool2d(xp, x, 2, 2, 2, 2, 0, 0, 2, 2)
    assert y.shape == arg.shape == (0, 2, 2, 2)
    assert conv_cuda.avg_pool2d_backward(xp, gpu_dev.asarray(np.zeros((0, 2, 2, 2), F)), 0, 4, 4, 2,
                                         2, 2, 2, 2, 0, 0, 2, 2).shape == (0, 4, 4, 2)


# ------------------------------------------------------------------ kernels against the NumPy twins
TWIN_NAMES = ("im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")


def _twins():
    try:
        conv = importlib.import_module("gpunet.kernels.conv")
    except ImportError as e:
        pytest.skip(f"gpunet/kernels/conv.py (the NumPy twins) is not importable yet: {e}")
    missing = [name for name in TWIN_NAMES if not callable(getattr(conv, name, None))]
    if missing:
        pytest.skip(f"gpunet/kernels/conv.py lacks the twins {missing}")
    return conv


@settings(max_examples=60, **SETTINGS)
@given(geometry=geometries(max_hw=9), seed=st.integers(0, 2 ** 16), kind=st.sampled_from(["normal", "ties", "special"]))
def test_kernels_give_the_twins_bits(gpu_dev, geometry, seed, kind, monkeypatch):
    conv = _twins()
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")      # conv.py's NumPy forms, not the CPU build of conv.cu
    host.reset()                    # the mode is read at the next launch
    n, H, W, C, kh, kw, sh, sw, pt, pl, oh_n, ow_n = geometry
    window, xp, asarray, to_host = (kh, kw, sh, sw, pt, pl, oh_n, ow_n), gpu_dev.xp, gpu_dev.asarray, gpu_dev.to_host
    x, gy = values((n, H, W, C), seed, kind), values((n, oh_n, ow_n, C), seed + 1, kind)
    g_cols = values((n * oh_n * ow_n, kh * kw * C), seed + 2, kind)
    y_max, arg = (to_host(a) for a in conv_cuda.max_pool2d(xp, asarray(x), *window))
    got = {"im2col": to_host(conv_cuda.im2col(xp, asarray(x), *window)),
           "col2im": to_host(conv_cuda.col2im(xp, asarray(g_cols), n, H, W, C, *window)),
           "max_pool2d": y_max, "arg": arg,
           "max_pool2d_backward": to_host(conv_cuda.max_pool2d_backward(xp, asarray(gy), asarray(arg), n, H, W, C, *window)),
           "gated": to_host(conv_cuda.max_pool2d_backward(xp, asarray(gy), asarray(arg), n, H, W, C, *window,
                                                          gate=asarray(x))),
           "avg_pool2d": to_host(conv_cuda.avg_pool2d(xp, asarray(x), *window)),
           "avg_pool2d_backward": to_host(conv_cuda.avg_pool2d_backward(xp, asarray(gy), n, H, W, C, *window))}
    with flushing(flushes(gpu_dev)):
        t_max, t_arg = conv.max_pool2d(np, x, *window)
        want = {"im2col": conv.im2col(np, x, *window), "col2im": conv.col2im(np, g_cols, n, H, W, C, *window),
                "max_pool2d": t_max, "arg": t_arg,
                "max_pool2d_backward": conv.max_pool2d_backward(np, gy, arg, n, H, W, C, *window),
                "gated": conv.max_pool2d_backward(np, gy, arg, n, H, W, C, *window, gate=x),
                "avg_pool2d": conv.avg_pool2d(np, x, *window),
                "avg_pool2d_backward": conv.avg_pool2d_backward(np, gy, n, H, W, C, *window)}
    assert np.array_equal(got.pop("arg"), np.asarray(want.pop("arg"))), f"max_pool2d arg {geometry} {kind}"
    for what in got:
        assert_same_bits(got[what], want[what], f"{what} vs twin {geometry} {kind}")


def test_contract_constants():
    """The geometry rule used above is Keras' (spot checks of keras/src/ops/operation_utils.py's numbers)."""
    assert axis_geometry(28, 3, 1, "valid") == (26, 0) and axis_geometry(26, 2, 2, "valid") == (13, 0)
    assert axis_geometry(5, 3, 2, "same") == (3, 1) and axis_geometry(4, 2, 2, "same") == (2, 0)
    assert axis_geometry(6, 4, 1, "same") == (6, 1) and math.ceil(7 / 3) == axis_geometry(7, 3, 3, "same")[0]
