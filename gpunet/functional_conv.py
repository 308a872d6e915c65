"""Convolution and pooling as differentiable array functions: each forward beside its backward.

The same shape as :mod:`gpunet.functional`: ``fn(xp, arrays..., options) -> (out, backward)``,
``backward(g, needs)`` one gradient per array operand. :func:`gpunet.ops.conv2d` and the pooling ops
run them on the tape; the layers (:mod:`gpunet.layers.convolutional`, :mod:`gpunet.layers.pooling`)
call :func:`conv2d_forward`/:func:`conv2d_backward` and the pooling pairs directly, with work arrays
reused from step to step. Channels-last: ``x (n, height, width, channels)``, kernel
``(kh, kw, in_channels, filters)`` (Keras' layout), float32.

A convolution is im2col (:func:`gpunet.kernels.conv.im2col`) and one matrix product with the bias
added (:func:`gpunet.kernels.dense_forward`); its backward is the dense layer's backward on the
unfolded columns, then col2im for the input's gradient. On the CPU a large unfolding goes by blocks of
images (:func:`block_images`): each block's columns are made, multiplied and (backward: made again,
multiplied, folded back) while they are in the cache, instead of one buffer that leaves it.
"""
from __future__ import annotations

from .errors import ShapeError
from .kernels import conv as K
from .kernels import cuda, dense_backward, dense_forward
from .kernels.dense import bias_grad, matmul

BLOCK_BYTES = 2 << 20       # the CPU's unfolded columns per block (~L2/L3-resident): 2 MiB


def pair(value, name: str) -> tuple:
    """``3`` -> ``(3, 3)``; ``(2, 1)`` -> ``(2, 1)`` (Keras' ``standardize_tuple``): two positive
    integers, ValueError otherwise."""
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2 or not all(hasattr(v, "__index__") and not isinstance(v, bool) and int(v) > 0
                                   for v in values):
        raise ValueError(f"The `{name}` argument must be a tuple of 2 positive integers. Received {name}={value!r}")
    return tuple(int(v) for v in values)


def geometry(x_shape, window, strides, padding, what="input"):
    """``(out_h, out_w, pad_top, pad_left)`` for inputs ``x_shape (n, H, W, C)``; ShapeError when the
    input is not 4-D or smaller than a 'valid' window."""
    if len(x_shape) != 4:
        raise ShapeError(f"expected channels-last images (batch, height, width, channels), got {what} of shape "
                         f"{tuple(x_shape)}")
    out_h, out_w, pad_top, pad_left = K.conv_geometry(x_shape[1], x_shape[2], *window, *strides, padding)
    if out_h <= 0 or out_w <= 0:
        raise ShapeError(f"{what} of shape {tuple(x_shape)} is smaller than the {window[0]}x{window[1]} window with "
                         f"padding='valid': the output would be empty; use padding='same' or larger inputs")
    return out_h, out_w, pad_top, pad_left


# ------------------------------------------------------------------ convolution
def block_images(xp, n, oh, ow, window_size):
    """Images per block of the unfolding: on the CPU as many as fit :data:`BLOCK_BYTES` of columns
    (``oh*ow`` rows of ``window_size = kh*kw*C`` floats each) when that is fewer than ``n``; else None
    (one unfolding of the whole batch: always on a GPU, where one large product is fastest)."""
    if cuda.is_gpu(xp) or n <= 1:
        return None
    per_image = max(oh * ow * window_size * 4, 1)
    block = max(1, BLOCK_BYTES // per_image)
    return block if block < n else None


def conv2d_forward(xp, x, kernel, bias, strides, padding, buffers=None, activation=None, block="auto"):
    """``x (n, H, W, C)`` * ``kernel (kh, kw, C, F)`` + ``bias (F,)`` -> ``(z (n, oh, ow, F), saved)``.

    ``buffers``: optional ``{'cols', 'z'}`` arrays to write into (``(rows, kh*kw*C)`` with ``rows`` the
    block's ``block*oh*ow`` or the batch's ``n*oh*ow``, and ``(n*oh*ow, F)``). ``activation``: None or
    'relu', applied with the bias (:func:`gpunet.kernels.bias_act`). ``block``: images per unfolding
    ('auto': :func:`block_images`; None: the whole batch, whose ``cols`` the backward keeps; else the
    backward keeps ``x`` and unfolds each block again).
    """
    kh, kw, c, f = kernel.shape
    if x.shape[-1:] != (c,):
        raise ShapeError(f"convolution input of shape {tuple(x.shape)} has {x.shape[-1] if x.ndim else None} "
                         f"channels, the kernel {tuple(kernel.shape)} expects {c}")
    oh, ow, pt, pl = geometry(x.shape, (kh, kw), strides, padding)
    b = buffers or {}
    n, window, k2 = x.shape[0], (kh, kw, *strides, pt, pl, oh, ow), kernel.reshape(kh * kw * c, f)
    block = block_images(xp, n, oh, ow, kh * kw * c) if block == "auto" else block
    if block is None or block >= n or kernel.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        # (mixed dtypes: one product, whose result type NumPy's promotion decides, as unblocked)
        cols = K.im2col(xp, x, *window, out=b.get("cols"))
        z = dense_forward(xp, cols, k2, bias, activation, out=b.get("z"))
        return z.reshape(n, oh, ow, f), (cols, x.shape, kernel, strides, (pt, pl, oh, ow), None)
    x = x if x.flags.c_contiguous else xp.ascontiguousarray(x)
    z = b.get("z")
    z = xp.empty((n * oh * ow, f), dtype=x.dtype) if z is None else z
    cols = b.get("cols")
    cols = xp.empty((block * oh * ow, kh * kw * c), dtype=x.dtype) if cols is None else cols
    for i in range(0, n, block):
        rows = (min(i + block, n) - i) * oh * ow
        part = K.im2col(xp, x[i:i + block], *window, out=cols[:rows])
        dense_forward(xp, part, k2, bias, activation, out=z[i * oh * ow:i * oh * ow + rows])
    return z.reshape(n, oh, ow, f), (cols, x.shape, kernel, strides, (pt, pl, oh, ow), (x, block))


def conv2d_backward(xp, saved, gz, need_x, need_kernel, need_bias, buffers=None):
    """``(grad x, grad kernel, grad bias)`` of :func:`conv2d_forward` from ``gz (n, oh, ow, F)``, None
    where not needed. ``buffers``: optional ``{'gcols', 'gk', 'gb', 'gx'}`` arrays to write into (``gcols``
    shaped as the forward's ``cols``). By blocks, the kernel's gradient is the blocks' products summed
    in order."""
    cols, (n, H, W, C), kernel, (sh, sw), (pt, pl, oh, ow), blocked = saved
    kh, kw, _, f = kernel.shape
    b = buffers or {}
    gz2 = gz.reshape(n * oh * ow, f)
    if not gz2.flags.c_contiguous:
        gz2 = xp.ascontiguousarray(gz2)
    gk_out, k2, window = b.get("gk"), kernel.reshape(kh * kw * C, f), (kh, kw, sh, sw, pt, pl, oh, ow)
    gk_out = None if gk_out is None else gk_out.reshape(-1, f)
    if blocked is None:
        gcols, gk, gb = dense_backward(xp, gz2, cols, k2, need_x, need_kernel, need_bias,
                                       {"gx": b.get("gcols"), "gk": gk_out, "gb": b.get("gb")})
        gx = None if gcols is None else K.col2im(xp, gcols, n, H, W, C, *window, out=b.get("gx"))
        return gx, None if gk is None else gk.reshape(kernel.shape), gb
    x, block = blocked
    gx, gcols = b.get("gx"), b.get("gcols")
    if need_x and gx is None:
        gx = xp.empty((n, H, W, C), dtype=gz2.dtype)
    if need_x and gcols is None:
        gcols = xp.empty(cols.shape, dtype=gz2.dtype)
    gk = part_gk = None
    for i in range(0, n, block):
        rows = slice(i * oh * ow, min(i + block, n) * oh * ow)
        g_rows, m = gz2[rows], min(i + block, n) - i
        if need_kernel:                     # the block's columns again, then its share of the kernel's gradient
            part = K.im2col(xp, x[i:i + m], *window, out=cols[:m * oh * ow])
            if gk is None:
                gk = matmul(xp, part.T, g_rows, out=gk_out)
            else:
                part_gk = matmul(xp, part.T, g_rows, out=part_gk)
                xp.add(gk, part_gk, out=gk)
        if need_x:
            K.col2im(xp, matmul(xp, g_rows, k2.T, out=gcols[:m * oh * ow]), m, H, W, C, *window, out=gx[i:i + m])
    gb = bias_grad(xp, gz2, out=b.get("gb")) if need_bias else None
    return gx, None if gk is None else gk.reshape(kernel.shape), gb


def conv2d(xp, x, kernel, *rest, strides=(1, 1), padding="valid"):
    """The taped op: operands ``x, kernel[, bias]`` -> ``(z, backward)``."""
    bias = rest[0] if rest else None
    z, saved = conv2d_forward(xp, x, kernel, bias, pair(strides, "strides"), padding)

    def backward(g, needs):
        gx, gk, gb = conv2d_backward(xp, saved, g, needs[0], needs[1], bias is not None and needs[2])
        return (gx, gk, gb) if rest else (gx, gk)
    return z, backward


# ------------------------------------------------------------------ pooling
def pool_geometry(x_shape, pool_size, strides, padding):
    """``(pool, strides, (pt, pl, oh, ow))`` with ``strides`` None meaning ``pool_size`` (Keras)."""
    pool = pair(pool_size, "pool_size")
    strides = pool if strides is None else pair(strides, "strides")
    oh, ow, pt, pl = geometry(x_shape, pool, strides, padding)
    return pool, strides, (pt, pl, oh, ow)


def max_pool2d_forward(xp, x, pool_size, strides=None, padding="valid"):
    """``(y (n, oh, ow, C), saved)``: the maximum of each window (see :func:`gpunet.kernels.conv.max_pool2d`)."""
    pool, strides, g = pool_geometry(x.shape, pool_size, strides, padding)
    y, arg = K.max_pool2d(xp, x, *pool, *strides, *g)
    return y, (arg, x.shape, pool, strides, g)


def max_pool2d_backward(xp, saved, gy, gate=None):
    """The input's gradient: each window's gradient goes to its first maximum. ``gate``: the input as a
    ReLU's output, whose backward is applied in the same pass."""
    arg, (n, H, W, C), pool, strides, g = saved
    return K.max_pool2d_backward(xp, gy, arg, n, H, W, C, *pool, *strides, *g, gate=gate)


def avg_pool2d_forward(xp, x, pool_size, strides=None, padding="valid"):
    """``(y (n, oh, ow, C), saved)``: each window's mean over its unpadded positions."""
    pool, strides, g = pool_geometry(x.shape, pool_size, strides, padding)
    return K.avg_pool2d(xp, x, *pool, *strides, *g), (x.shape, pool, strides, g)


def avg_pool2d_backward(xp, saved, gy):
    """The input's gradient: each window's gradient shared equally among its unpadded positions."""
    (n, H, W, C), pool, strides, g = saved
    return K.avg_pool2d_backward(xp, gy, n, H, W, C, *pool, *strides, *g)


def max_pool2d(xp, x, pool_size=(2, 2), strides=None, padding="valid"):
    """The taped max-pooling op."""
    y, saved = max_pool2d_forward(xp, x, pool_size, strides, padding)
    return y, lambda g, needs: (max_pool2d_backward(xp, saved, g) if needs[0] else None,)


def avg_pool2d(xp, x, pool_size=(2, 2), strides=None, padding="valid"):
    """The taped average-pooling op."""
    y, saved = avg_pool2d_forward(xp, x, pool_size, strides, padding)
    return y, lambda g, needs: (avg_pool2d_backward(xp, saved, g) if needs[0] else None,)
