"""Convolution and pooling: gpunet/kernels/conv.py (the array functions), gpunet/functional_conv.py and the ops,
the layers Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, and gpunet.naive's loops.

Oracles from outside: PyTorch CPU (NCHW, TensorFlow's 'same' padding given explicitly), float64 central
differences (tests/gradcheck.py), the naive loops, Keras 3's own layer tests (keras/src/layers/convolutional/
conv_test.py, keras/src/layers/pooling/*_test.py: their cases, numbers and reference padding), and the book's
convnet summary (Keras' parameter counts).
"""
import contextlib
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunet
from gpunet import layers, models, naive, ops
from gpunet.datasets import mnist
from gpunet.kernels import conv as K
from gpunet.utils import to_categorical
from gradcheck import check_grad

SETTINGS = dict(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------------------------ helpers
def torch_nchw(x):
    return torch.tensor(np.asarray(x)).permute(0, 3, 1, 2)


def to_nhwc(t):
    return t.permute(0, 2, 3, 1).detach().numpy()


def keras_same_padding(size, k, s):
    """Keras' tests' total 'same' padding (keras/src/layers/pooling/max_pooling_test.py::_same_padding)."""
    return max(k - s, 0) if size % s == 0 else max(k - size % s, 0)


def tf_pad(t, k, s, padding, value=0.0):
    """TensorFlow's 'same' padding for an NCHW torch tensor: total padding split, the odd one bottom/right."""
    if padding == "valid":
        return t
    (kh, kw), (sh, sw) = k, s
    ph, pw = keras_same_padding(t.shape[2], kh, sh), keras_same_padding(t.shape[3], kw, sw)
    return TF.pad(t, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


def torch_conv(x, k, b, s, padding):
    return to_nhwc(TF.conv2d(tf_pad(torch_nchw(x), k.shape[:2], s, padding), torch.tensor(k).permute(3, 2, 0, 1),
                             None if b is None else torch.tensor(b), stride=s))


def torch_max_pool(x, p, s, padding):
    return to_nhwc(TF.max_pool2d(tf_pad(torch_nchw(x), p, s, padding, -np.inf), p, s))


def torch_avg_pool(x, p, s, padding):
    """The mean over the window's positions inside the image: pooled zero-padded sums over pooled counts."""
    xt = tf_pad(torch_nchw(x), p, s, padding)
    ones = tf_pad(torch.ones_like(torch_nchw(x)), p, s, padding)
    return to_nhwc(TF.avg_pool2d(xt, p, s) / TF.avg_pool2d(ones, p, s))


@st.composite
def windows(draw, max_size=7, max_window=4, max_stride=3):
    """(n, H, W, C, (kh, kw), (sh, sw), padding) with a non-empty output."""
    padding = draw(st.sampled_from(["valid", "same"]))
    kh, kw = draw(st.integers(1, max_window)), draw(st.integers(1, max_window))
    h = draw(st.integers(kh if padding == "valid" else 1, max_size))
    w = draw(st.integers(kw if padding == "valid" else 1, max_size))
    return (draw(st.integers(1, 2)), h, w, draw(st.integers(1, 3)), (kh, kw),
            (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))), padding)


# ------------------------------------------------------------------------------------------------ geometry
@settings(max_examples=200, **SETTINGS)
@given(size=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 5), padding=st.sampled_from(["valid", "same"]))
def test_geometry_follows_keras_and_torch(size, k, s, padding):
    oh, ow, pt, pl = K.conv_geometry(size, size + 1, k, k, s, s, padding)
    if padding == "valid":
        assert (pt, pl) == (0, 0)
        want_h = TF.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, k, 1), stride=s).shape[2] if size >= k else 0
        assert oh == want_h
        return
    assert (oh, ow) == (-(-size // s), -(-(size + 1) // s))
    assert pt == keras_same_padding(size, k, s) // 2 and pl == keras_same_padding(size + 1, k, s) // 2
    with pytest.raises(ValueError, match="'valid' or 'same'"):
        K.conv_geometry(size, size, k, k, s, s, "causal")


# ------------------------------------------------------------------------------------------------ forward
@settings(max_examples=40, **SETTINGS)
@given(geo=windows(), filters=st.integers(1, 3), use_bias=st.booleans(), seed=st.integers(0, 999))
def test_conv2d_forward_matches_torch_and_the_naive_loops(dev, geo, filters, use_bias, seed):
    n, h, w, c, ksize, s, padding = geo
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    k = rng.standard_normal(ksize + (c, filters)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32) if use_bias else None
    got = ops.conv2d(gpunet.tensor(x, device=dev), gpunet.tensor(k, device=dev),
                     None if b is None else gpunet.tensor(b, device=dev), s, padding).numpy()
    np.testing.assert_allclose(got, torch_conv(x, k, b, s, padding), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, naive.naive_conv2d(x, k, b, s, padding), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, **SETTINGS)
@given(geo=windows(), seed=st.integers(0, 999), ties=st.booleans())
def test_pooling_forward_matches_torch_and_the_naive_loops(dev, geo, seed, ties):
    n, h, w, c, p, s, padding = geo
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, (n, h, w, c)) if ties else rng.standard_normal((n, h, w, c))).astype(np.float32)
    xt = gpunet.tensor(x, device=dev)
    got_max, got_avg = ops.max_pool2d(xt, p, s, padding).numpy(), ops.avg_pool2d(xt, p, s, padding).numpy()
    np.testing.assert_array_equal(got_max, torch_max_pool(x, p, s, padding))
    np.testing.assert_array_equal(got_max, naive.naive_max_pool2d(x, p, s, padding))
    np.testing.assert_allclose(got_avg, torch_avg_pool(x, p, s, padding), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_avg, naive.naive_avg_pool2d(x, p, s, padding), rtol=1e-6, atol=1e-6)


def test_im2col_layout_and_col2im_is_its_adjoint(dev):
    xp = dev.xp
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4, 3))
    oh, ow, pt, pl = K.conv_geometry(5, 4, 3, 2, 2, 1, "same")
    cols = dev.to_host(K.im2col(xp, dev.asarray(x), 3, 2, 2, 1, pt, pl, oh, ow))
    assert cols.shape == (2 * oh * ow, 3 * 2 * 3)
    for i, o_h, o_w, dy, dx, c in [(1, 2, 3, 2, 1, 2), (0, 0, 0, 0, 0, 0), (1, 1, 2, 1, 0, 1)]:
        r, q = o_h * 2 + dy - pt, o_w + dx - pl
        want = x[i, r, q, c] if 0 <= r < 5 and 0 <= q < 4 else 0.0
        assert cols[(i * oh + o_h) * ow + o_w, (dy * 2 + dx) * 3 + c] == want
    g = rng.standard_normal(cols.shape)
    gx = dev.to_host(K.col2im(xp, dev.asarray(g), 2, 5, 4, 3, 3, 2, 2, 1, pt, pl, oh, ow))
    np.testing.assert_allclose((cols * g).sum(), (x * gx).sum(), rtol=1e-12)


def test_reused_buffers_are_written_whole(dev):
    """im2col/col2im into the same ``out`` twice (the tapeless step's reuse) give fresh results each time."""
    xp = dev.xp
    oh, ow, pt, pl = K.conv_geometry(4, 4, 3, 3, 1, 1, "same")
    buf, gbuf = xp.full((16, 9), 7.0, dtype="float32"), xp.full((1, 4, 4, 1), 7.0, dtype="float32")
    for value in (1.0, 2.0):
        x = xp.full((1, 4, 4, 1), value, dtype="float32")
        cols = dev.to_host(K.im2col(xp, x, 3, 3, 1, 1, pt, pl, oh, ow, out=buf))
        assert cols.sum() == value * 100          # 4 corners x 4 + 8 edges x 6 + 4 inner x 9 valid positions
        ones = xp.ones((16, 9), dtype="float32")
        gx = dev.to_host(K.col2im(xp, ones, 1, 4, 4, 1, 3, 3, 1, 1, pt, pl, oh, ow, out=gbuf))
        np.testing.assert_array_equal(gx[0, :, :, 0], [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])


# ------------------------------------------------------------------------------------------------ gradients
@settings(max_examples=30, **SETTINGS)
@given(geo=windows(max_size=5, max_window=3), filters=st.integers(1, 2), use_bias=st.booleans(),
       seed=st.integers(0, 999))
def test_conv2d_gradients_match_central_differences(dev, geo, filters, use_bias, seed):
    n, h, w, c, ksize, s, padding = geo
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, h, w, c)), rng.standard_normal(ksize + (c, filters))]
    if use_bias:
        arrays.append(rng.standard_normal(filters))
    check_grad(dev, lambda *t: ops.conv2d(*t[:2], t[2] if use_bias else None, s, padding), *arrays, seed=seed)


@settings(max_examples=25, **SETTINGS)
@given(geo=windows(max_size=5, max_window=3), n=st.integers(2, 5), filters=st.integers(1, 2),
       use_bias=st.booleans(), seed=st.integers(0, 999))
def test_blocked_unfolding_matches_the_loops_and_central_differences(monkeypatch, geo, n, filters, use_bias, seed):
    """On the CPU a large unfolding goes by blocks of images (functional_conv.block_images); made tiny here
    (one image per block), the convolution is still the naive loops' and its gradients the differences'."""
    from gpunet import functional_conv
    monkeypatch.setattr(functional_conv, "BLOCK_BYTES", 1)
    _, h, w, c, ksize, s, padding = geo
    assert functional_conv.block_images(np, n, 2, 2, 9) == 1
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, h, w, c)), rng.standard_normal(ksize + (c, filters))]
    if use_bias:
        arrays.append(rng.standard_normal(filters))
    cpu = gpunet.device("cpu")
    out = check_grad(cpu, lambda *t: ops.conv2d(*t[:2], t[2] if use_bias else None, s, padding), *arrays, seed=seed)
    want = naive.naive_conv2d(*(a.astype(np.float32) for a in arrays[:2]),
                              arrays[2].astype(np.float32) if use_bias else None, s, padding)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_blocks_give_the_whole_batchs_results(block):
    """conv2d_forward/backward by blocks of 1-3 images (the last one short) against one unfolding of the
    batch: the same output, input and bias gradients, the kernel gradient within rounding (summed by block);
    the lent buffers are written, the saved input is read again."""
    from gpunet import functional_conv as FC
    rng = np.random.default_rng(block)
    x = rng.standard_normal((7, 6, 5, 3)).astype(np.float32)
    k, bias = rng.standard_normal((3, 2, 3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    gz = rng.standard_normal((7, 6, 3, 4)).astype(np.float32)     # 'same' rows, stride (1, 2)
    results = []
    for b in (None, block):
        rows = (b or 7) * 6 * 3
        fwd = {"cols": np.full((rows, 18), np.nan, np.float32), "z": np.full((7 * 18, 4), np.nan, np.float32)}
        z, saved = FC.conv2d_forward(np, x, k, bias, (1, 2), "same", fwd, "relu", b)
        bwd = {"gcols": np.full((rows, 18), np.nan, np.float32), "gx": np.full(x.shape, np.nan, np.float32),
               "gk": np.full(k.shape, np.nan, np.float32), "gb": np.full(4, np.nan, np.float32)}
        grads = FC.conv2d_backward(np, saved, gz, True, True, True, bwd)
        assert all(g is bwd[name] or g.base is bwd[name] for g, name in zip(grads, ("gx", "gk", "gb")))
        results.append((z, *grads))
    (z0, gx0, gk0, gb0), (z1, gx1, gk1, gb1) = results
    np.testing.assert_array_equal(z1, z0)
    np.testing.assert_array_equal(gx1, gx0)
    np.testing.assert_array_equal(gb1, gb0)
    np.testing.assert_allclose(gk1, gk0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z0, np.maximum(naive.naive_conv2d(x, k, bias, (1, 2), "same"), 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_dtype, k_dtype", [("float32", "float64"), ("float16", "float32"), ("float64", "float32")])
def test_mixed_dtypes_promote_as_numpy_whatever_the_batch(monkeypatch, x_dtype, k_dtype):
    """ops.conv2d of a float32 input and a float64 kernel gives float64 (NumPy's promotion), output and
    gradients, for a batch that would be unfolded by blocks as for one that would not (found by a hostile
    review: the blocked path took the input's dtype)."""
    from gpunet import functional_conv
    monkeypatch.setattr(functional_conv, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(0)
    k = gpunet.tensor(rng.standard_normal((3, 3, 2, 4)).astype(k_dtype), dtype=k_dtype, requires_grad=True)
    dtypes = []
    for n in (1, 5):                # one image: never blocked; five: one image a block
        x = gpunet.tensor(rng.standard_normal((n, 6, 6, 2)).astype(x_dtype), dtype=x_dtype, requires_grad=True)
        with gpunet.GradientTape() as tape:
            y = ops.conv2d(x, k, None, 1, "valid")
            loss = ops.sum(y)
        gx, gk = tape.gradient(loss, [x, k])
        dtypes.append((y.dtype, gx.dtype, gk.dtype))
    assert dtypes[0][0] == np.result_type(x_dtype, k_dtype) and dtypes[1] == dtypes[0], dtypes


def test_a_blocked_convnet_trains_as_an_unblocked_one(monkeypatch):
    """The tapeless step with one image per block (the layer's workspace buffers block-sized) against the
    whole-batch unfolding: the same losses and weights within rounding."""
    from gpunet import functional_conv
    data = np.random.default_rng(5)
    x, y = data.integers(0, 256, (30, 8, 8, 2), dtype=np.uint8), to_categorical(data.integers(0, 3, 30), 3)
    results = []
    for block_bytes in (functional_conv.BLOCK_BYTES, 1):
        monkeypatch.setattr(functional_conv, "BLOCK_BYTES", block_bytes)
        gpunet.random.seed(7)
        net = models.Sequential([layers.Rescaling(1 / 255, input_shape=(8, 8, 2)),
                                 layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2),
                                 layers.Conv2D(3, 2, padding="same", activation="relu"), layers.Flatten(),
                                 layers.Dense(3, activation="softmax")])
        net.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        h = net.fit(x, y, epochs=2, batch_size=8, verbose=0)
        results.append((net.get_weights(), h.history["loss"]))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)


@settings(max_examples=30, **SETTINGS)
@given(geo=windows(max_size=5, max_window=3), seed=st.integers(0, 999))
def test_pooling_gradients_match_central_differences(dev, geo, seed):
    n, h, w, c, p, s, padding = geo
    x = np.random.default_rng(seed).permutation(n * h * w * c).reshape(n, h, w, c) * 0.1   # distinct: no ties
    check_grad(dev, lambda t: ops.max_pool2d(t, p, s, padding), x, seed=seed)
    check_grad(dev, lambda t: ops.avg_pool2d(t, p, s, padding), x, seed=seed)


@settings(max_examples=25, **SETTINGS)
@given(geo=windows(max_size=6, max_window=3), seed=st.integers(0, 999))
def test_gradients_match_torch_autograd_including_max_pool_ties(dev, geo, seed):
    """Ties (small integers): TensorFlow's MaxPoolGrad and PyTorch both send a window's gradient to its first
    maximum in row-major order, once, however many positions tie."""
    n, h, w, c, p, s, padding = geo
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, (n, h, w, c)).astype(np.float32)
    k = rng.standard_normal(p + (c, 2)).astype(np.float32)
    xt = gpunet.tensor(x, device=dev, requires_grad=True)
    kt = gpunet.tensor(k, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        pooled = ops.max_pool2d(xt, p, s, padding)
        weights = np.arange(pooled.size, dtype=np.float32).reshape(pooled.shape)
        loss = ops.conv2d(xt, kt, None, s, padding).sum() * 0.5 + (pooled * gpunet.tensor(weights, device=dev)).sum()
    gx, gk = tape.gradient(loss, [xt, kt])
    xr, kr = torch_nchw(x).requires_grad_(), torch.tensor(k).permute(3, 2, 0, 1).requires_grad_()
    tpool = TF.max_pool2d(tf_pad(xr, p, s, padding, -np.inf), p, s).permute(0, 2, 3, 1)
    tloss = TF.conv2d(tf_pad(xr, p, s, padding), kr, stride=s).sum() * 0.5 + (tpool * torch.tensor(weights)).sum()
    tloss.backward()
    np.testing.assert_allclose(gx.numpy(), to_nhwc(xr.grad), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gk.numpy(), kr.grad.permute(2, 3, 1, 0).numpy(), rtol=1e-5, atol=1e-5)


def test_max_pool_ties_send_the_gradient_to_the_first_maximum(dev):
    x = np.array([[1, 1, 0, 2], [1, 1, 2, 2], [3, 0, 5, 5], [0, 3, 5, 5]], np.float32).reshape(1, 4, 4, 1)
    xt = gpunet.tensor(x, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = ops.max_pool2d(xt, 2)
        loss = y.sum()
    np.testing.assert_array_equal(y.numpy()[0, :, :, 0], [[1, 2], [3, 5]])
    np.testing.assert_array_equal(tape.gradient(loss, xt).numpy()[0, :, :, 0],
                                  [[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    y, arg = K.max_pool2d(dev.xp, dev.asarray(x), 2, 2, 2, 2, 0, 0, 2, 2)
    np.testing.assert_array_equal(dev.to_host(arg)[0, :, :, 0], [[0, 1], [0, 0]])


def test_same_padding_is_never_the_maximum_nor_in_the_average(dev):
    x = np.full((1, 3, 3, 1), -5.0, np.float32)
    xt = gpunet.tensor(x, device=dev)
    assert (ops.max_pool2d(xt, 2, 2, "same").numpy() == -5).all()         # not the zero (or -inf) of the padding
    assert (ops.avg_pool2d(xt, 2, 2, "same").numpy() == -5).all()         # the count leaves the padding out
    assert ops.max_pool2d(xt, 2, 2, "same").shape == (1, 2, 2, 1)


# ------------------------------------------------------------------------------------------------ Keras' tests
@pytest.mark.parametrize("filters, kernel_size, strides, padding, input_shape, output_shape", [
    (5, 2, 1, "valid", (3, 5, 5, 4), (3, 4, 4, 5)),                  # conv_test.py test_conv2d_basic
    (6, 2, 1, "same", (3, 4, 4, 4), (3, 4, 4, 6)),                   # (its dilation 2, groups 2 left out)
    (6, (2, 2), (2, 1), "valid", (3, 5, 5, 4), (3, 2, 4, 6)),        # (its groups 2 left out)
])
def test_keras_conv2d_basic(dev, filters, kernel_size, strides, padding, input_shape, output_shape):
    layer = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding)
    out = layer(gpunet.tensor(np.random.default_rng(0).standard_normal(input_shape), device=dev))
    assert out.shape == output_shape == layer.compute_output_shape(input_shape)
    assert len(layer.trainable_weights) == 2 and layer.non_trainable_weights == []
    k = layer.kernel_size + (input_shape[-1], filters)
    assert layer.kernel.shape == k and layer.count_params() == np.prod(k) + filters


@pytest.mark.parametrize("cls, pool_size, strides, padding, output_shape", [
    (layers.MaxPooling2D, 2, 1, "valid", (3, 4, 4, 4)),              # max_pooling_test.py test_max_pooling2d
    (layers.MaxPooling2D, (2, 3), (2, 2), "valid", (3, 2, 2, 4)),
    (layers.AveragePooling2D, 2, 1, "valid", (3, 4, 4, 4)),          # average_pooling_test.py
    (layers.AveragePooling2D, 2, 1, "same", (3, 5, 5, 4)),
    (layers.AveragePooling2D, (2, 3), (2, 2), "valid", (3, 2, 2, 4)),
    (layers.AveragePooling2D, (2, 3), (2, 2), "same", (3, 3, 3, 4)),
])
def test_keras_pooling_shapes(dev, cls, pool_size, strides, padding, output_shape):
    layer = cls(pool_size=pool_size, strides=strides, padding=padding)
    assert layer(gpunet.tensor(np.zeros((3, 5, 5, 4)), device=dev)).shape == output_shape
    assert layer.compute_output_shape((3, 5, 5, 4)) == output_shape and layer.weights == []


def keras_np_pool(x, pool, strides, padding, mode):
    """Keras' test references np_maxpool2d/np_avgpool2d: 'same' pads bottom/right only (with -inf for max,
    the edge values for average), then takes every window."""
    pool = (pool, pool) if isinstance(pool, int) else pool
    strides = (strides, strides) if isinstance(strides, int) else strides
    if padding == "same":
        pads = [(0, 0), (0, keras_same_padding(x.shape[1], pool[0], strides[0])),
                (0, keras_same_padding(x.shape[2], pool[1], strides[1])), (0, 0)]
        x = np.pad(x, pads, constant_values=-np.inf) if mode == "max" else np.pad(x, pads, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(x, pool, axis=(1, 2))[:, ::strides[0], ::strides[1]]
    return win.max(axis=(-2, -1)) if mode == "max" else win.mean(axis=(-2, -1))


@pytest.mark.parametrize("mode, shape, pool_size, strides, padding", [
    ("max", (1, 5, 5, 4), 2, 1, "valid"), ("max", (1, 5, 5, 4), (2, 3), (3, 3), "same"),
    ("avg", (1, 4, 4, 1), 2, 1, "valid"), ("avg", (1, 4, 4, 1), (2, 3), (2, 2), "valid"),
    ("avg", (1, 4, 4, 1), 2, (2, 1), "same"), ("avg", (1, 4, 4, 1), (2, 2), (2, 2), "same"),
])
def test_keras_pooling_values_on_arange(dev, mode, shape, pool_size, strides, padding):
    x = np.arange(np.prod(shape), dtype="float32").reshape(shape)
    cls = layers.MaxPooling2D if mode == "max" else layers.AveragePooling2D
    got = cls(pool_size=pool_size, strides=strides, padding=padding)(gpunet.tensor(x, device=dev)).numpy()
    np.testing.assert_allclose(got, keras_np_pool(x, pool_size, strides, padding, mode))


@pytest.mark.parametrize("keepdims, output_shape", [(False, (3, 4)), (True, (3, 1, 1, 4))])
def test_keras_global_average_pooling2d(dev, keepdims, output_shape):
    x = np.random.default_rng(1).standard_normal((3, 5, 6, 4))
    layer = layers.GlobalAveragePooling2D(keepdims=keepdims)
    xt = gpunet.tensor(x, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        out = layer(xt)
        loss = (out * 2.0).sum()
    assert out.shape == output_shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out.numpy().reshape(3, 4), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy(), np.full(x.shape, 2 / 30), rtol=1e-6)


def test_layer_arguments_are_checked_as_keras_does():
    assert layers.Conv2D(4, 3).kernel_size == (3, 3) and layers.Conv2D(4, (1, 2), strides=2).strides == (2, 2)
    assert layers.MaxPooling2D().pool_size == (2, 2) and layers.MaxPooling2D(3).strides == (3, 3)
    assert layers.AveragePooling2D(3, strides=1).strides == (1, 1)
    assert layers.Conv2D(2, 3, padding="SAME").padding == "same"
    with pytest.raises(ValueError, match="filters"):
        layers.Conv2D(0, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        layers.Conv2D(4, (3, 0))
    with pytest.raises(ValueError, match="strides"):
        layers.MaxPooling2D(2, strides=(1, 2, 3))
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(4, 3, padding="causal")
    for make in (lambda: layers.Conv2D(4, 3, data_format="channels_first"),
                 lambda: layers.MaxPooling2D(data_format="channels_first"),
                 lambda: layers.GlobalAveragePooling2D(data_format="channels_first")):
        with pytest.raises(ValueError, match="channels-last"):
            make()
    with pytest.raises(ValueError, match="dilation_rate"):
        layers.Conv2D(4, 3, dilation_rate=2)
    with pytest.raises(ValueError, match="groups"):
        layers.Conv2D(4, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_regularizer"):
        layers.Conv2D(4, 3, kernel_regularizer="l2")


def test_shape_errors_name_the_problem(dev):
    conv = layers.Conv2D(2, 3)
    with pytest.raises(gpunet.ShapeError, match="smaller than the 3x3 window"):
        conv(gpunet.tensor(np.zeros((1, 2, 5, 1)), device=dev))
    conv = layers.Conv2D(2, 3)
    conv(gpunet.tensor(np.zeros((1, 5, 5, 1)), device=dev))
    with pytest.raises(gpunet.ShapeError, match=r"incompatible.*\(1, 5, 5, 2\)"):
        conv(gpunet.tensor(np.zeros((1, 5, 5, 2)), device=dev))
    with pytest.raises(gpunet.ShapeError, match="height, width, channels"):
        layers.MaxPooling2D()(gpunet.tensor(np.zeros((5, 5, 1)), device=dev))


def test_glorot_fans_are_keras(dev):
    """Keras' compute_fans for a (kh, kw, in, out) kernel: fan_in = kh*kw*in, fan_out = kh*kw*out."""
    gpunet.random.seed(0)
    layer = layers.Conv2D(64, (3, 5), input_shape=(9, 9, 32))
    layer.build((None, 9, 9, 32))
    limit = np.sqrt(6 / (15 * 32 + 15 * 64))
    k = layer.kernel.numpy()
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.99 * limit
    assert (layer.bias.numpy() == 0).all()


# ------------------------------------------------------------------------------------------------ models
def book_convnet():
    return models.Sequential([
        layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.Flatten(),
        layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])


def test_book_convnet_summary_has_keras_shapes_and_parameter_counts(capsys):
    net = book_convnet()
    net.summary()
    out = capsys.readouterr().out
    for shape, count in [("(None, 26, 26, 32)", "320"), ("(None, 13, 13, 32)", "0"), ("(None, 11, 11, 64)", "18,496"),
                         ("(None, 5, 5, 64)", "0"), ("(None, 3, 3, 64)", "36,928"), ("(None, 576)", "0"),
                         ("(None, 64)", "36,928"), ("(None, 10)", "650")]:
        assert any(shape in line and line.rstrip().endswith(count) for line in out.splitlines()), (shape, out)
    assert "Total params: 93,322" in out and net.count_params() == 93322


@pytest.mark.parametrize("make", [
    lambda: layers.Conv2D(8, (3, 2), strides=(2, 1), padding="same", activation="relu", use_bias=False,
                          kernel_initializer="he_normal", input_shape=(9, 9, 3), name="c"),
    lambda: layers.MaxPooling2D((3, 2), strides=1, padding="same"),
    lambda: layers.AveragePooling2D(3), lambda: layers.GlobalAveragePooling2D(keepdims=True)])
def test_configs_round_trip_through_json(make):
    layer = make()
    spec = json.loads(json.dumps(layers.serialize(layer)))
    again = layers.deserialize(spec)
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_keras_style_conv_config_loads():
    config = {"name": "conv2d", "trainable": True, "dtype": "float32", "filters": 4, "kernel_size": [3, 3],
              "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
              "groups": 1, "activation": "relu", "use_bias": True,
              "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
              "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
              "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
              "bias_constraint": None}
    layer = layers.Conv2D.from_config(config)
    assert (layer.filters, layer.kernel_size, layer.activation_name) == (4, (3, 3), "relu")


def test_convnet_saves_and_loads(dev, tmp_path):
    gpunet.random.seed(1)
    net = models.Sequential([layers.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 2)),
                             layers.MaxPooling2D(2), layers.Conv2D(3, 2, strides=2), layers.AveragePooling2D(1),
                             layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")], device=dev)
    net.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((6, 8, 8, 2)).astype(np.float32)
    net.fit(x, to_categorical([0, 1] * 3, 2), epochs=1, batch_size=3, verbose=0)
    net.save(tmp_path / "convnet.npz")
    other = models.load_model(tmp_path / "convnet.npz", device=dev)
    assert [type(a) for a in other.layers] == [type(a) for a in net.layers]
    np.testing.assert_array_equal(other.predict(x, verbose=0), net.predict(x, verbose=0))


def test_tapeless_step_gives_the_tapes_numbers(dev):
    """The layers' array math in the tapeless step (workspaces reused, activation in place) against the tape."""
    data = np.random.default_rng(2)
    x, y = data.integers(0, 256, (40, 9, 9, 2), dtype=np.uint8), to_categorical(data.integers(0, 3, 40), 3)
    results = []
    for jit in (True, False):
        gpunet.random.seed(3)
        net = models.Sequential([layers.Rescaling(1 / 255, input_shape=(9, 9, 2)),
                                 layers.Conv2D(4, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
                                 layers.Conv2D(5, 2, activation="relu"), layers.AveragePooling2D(2, padding="same"),
                                 layers.Flatten(), layers.Dense(3, activation="softmax")], device=dev)
        net.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=jit)
        with pytest.warns(RuntimeWarning, match="without CUDA graphs because layer .*allocates temporaries") \
                if jit and dev.is_gpu else contextlib.nullcontext():
            h = net.fit(x, y, epochs=2, batch_size=16, verbose=0)
        assert net._last_fit["tapeless"] == jit
        results.append((net.get_weights(), h.history["loss"]))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6) if dev.is_gpu else np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


def test_a_frozen_conv_layer_keeps_its_weights_and_the_next_one_trains(dev):
    gpunet.random.seed(4)
    net = models.Sequential([layers.Conv2D(3, 3, input_shape=(6, 6, 1), trainable=False),
                             layers.Conv2D(2, 2, strides=2, activation="relu"), layers.GlobalAveragePooling2D(),
                             layers.Dense(2, activation="softmax")], device=dev)
    frozen, trained = net.layers[0].get_weights(), net.layers[1].get_weights()
    net.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = np.random.default_rng(1).standard_normal((8, 6, 6, 1)).astype(np.float32)
    net.fit(x, to_categorical([0, 1] * 4, 2), epochs=1, batch_size=4, verbose=0)
    assert net._last_fit["tapeless"] and len(net.trainable_weights) == 4
    for a, b in zip(frozen, net.layers[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(trained[0], net.layers[1].get_weights()[0])


def test_book_convnet_learns_on_embedded_digits():
    (x_train, y_train), _ = mnist.load_sample()
    x, y = x_train[:192].reshape(-1, 28, 28, 1).astype("float32") / 255, to_categorical(y_train[:192])
    gpunet.random.seed(0)
    net = book_convnet()
    net.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    before = net.evaluate(x, y, verbose=0)[0]
    start = time.perf_counter()
    history = net.fit(x, y, epochs=2, batch_size=64, verbose=0).history
    print(f"book convnet: {(time.perf_counter() - start) / 6:.3f} s per step of 64 (CPU)")
    assert net._last_fit["tapeless"]
    assert history["loss"][1] < history["loss"][0] < before
    assert net.evaluate(x, y, verbose=0)[0] < 0.9 * before       # 2.30 -> 1.89 in 6 steps


# ------------------------------------------------------------------------------------------------ naive loops
def test_naive_loops_follow_torch():
    rng = np.random.default_rng(4)
    x, k, b = rng.standard_normal((2, 6, 5, 3)), rng.standard_normal((3, 2, 3, 4)), rng.standard_normal(4)
    for s, padding in [((1, 1), "valid"), ((2, 3), "same")]:
        np.testing.assert_allclose(naive.naive_conv2d(x, k, b, s, padding),
                                   torch_conv(x, k, b, s, padding), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(naive.naive_max_pool2d(x, (2, 3), s, padding),
                                      torch_max_pool(x, (2, 3), s, padding))
        np.testing.assert_allclose(naive.naive_avg_pool2d(x, (2, 3), s, padding),
                                   torch_avg_pool(x, (2, 3), s, padding), rtol=1e-12)
    with pytest.raises(gpunet.ShapeError, match="kernel"):
        naive.naive_conv2d(x, k[:, :, :2], b)
