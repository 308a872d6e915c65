"""Convolution and pooling as differentiable array functions: each forward beside its backward.

The same shape as :mod:`gpunet.functional`: ``fn(xp, arrays..., options) -> (out, backward)``,
``backward(g, needs)`` one gradient per array operand. :func:`gpunet.ops.conv2d` and the pooling ops
run them on the tape; the layers (:mod:`gpunet.layers.convolutional`, :mod:`gpunet.layers.pooling`)
call :func:`conv2d_forward`/:func:`conv2d_backward` and the pooling pairs directly, with work arrays
reused from step to step. Channels-last: ``x (n, height, width, channels)``, kernel
``(kh, kw, in_channels, filters)`` (Keras' layout), float32.

A convolution is im2col (:func:`gpunet.kernels.conv.im2col`) and one matrix product with the bias
added (:func:`gpunet.kernels.dense_forward`); its backward is the dense layer's backward on the
unfolded columns, then col2im for the input's gradient.
"""
from __future__ import annotations

from .errors import ShapeError
from .kernels import conv as K
from .kernels import dense_backward, dense_forward


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
def conv2d_forward(xp, x, kernel, bias, strides, padding, buffers=None, activation=None):
    """``x (n, H, W, C)`` * ``kernel (kh, kw, C, F)`` + ``bias (F,)`` -> ``(z (n, oh, ow, F), saved)``.

    ``buffers``: optional ``{'cols', 'z'}`` arrays to write into (``(n*oh*ow, kh*kw*C)`` and
    ``(n*oh*ow, F)``). The unfolded ``cols`` is kept for the backward. ``activation``: None or 'relu',
    applied with the bias (:func:`gpunet.kernels.bias_act`).
    """
    kh, kw, c, f = kernel.shape
    if x.shape[-1:] != (c,):
        raise ShapeError(f"convolution input of shape {tuple(x.shape)} has {x.shape[-1] if x.ndim else None} "
                         f"channels, the kernel {tuple(kernel.shape)} expects {c}")
    oh, ow, pt, pl = geometry(x.shape, (kh, kw), strides, padding)
    b = buffers or {}
    n = x.shape[0]
    cols = K.im2col(xp, x, kh, kw, *strides, pt, pl, oh, ow, out=b.get("cols"))
    z = dense_forward(xp, cols, kernel.reshape(kh * kw * c, f), bias, activation, out=b.get("z"))
    return z.reshape(n, oh, ow, f), (cols, x.shape, kernel, strides, (pt, pl, oh, ow))


def conv2d_backward(xp, saved, gz, need_x, need_kernel, need_bias, buffers=None):
    """``(grad x, grad kernel, grad bias)`` of :func:`conv2d_forward` from ``gz (n, oh, ow, F)``, None
    where not needed. ``buffers``: optional ``{'gcols', 'gk', 'gb', 'gx'}`` arrays to write into."""
    cols, (n, H, W, C), kernel, (sh, sw), (pt, pl, oh, ow) = saved
    kh, kw, _, f = kernel.shape
    b = buffers or {}
    gz2 = gz.reshape(n * oh * ow, f)
    if not gz2.flags.c_contiguous:
        gz2 = xp.ascontiguousarray(gz2)
    gk_out = b.get("gk")
    gcols, gk, gb = dense_backward(xp, gz2, cols, kernel.reshape(kh * kw * C, f), need_x, need_kernel, need_bias,
                                   {"gx": b.get("gcols"), "gk": None if gk_out is None else gk_out.reshape(-1, f),
                                    "gb": b.get("gb")})
    gx = None if gcols is None else K.col2im(xp, gcols, n, H, W, C, kh, kw, sh, sw, pt, pl, oh, ow, out=b.get("gx"))
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


def max_pool2d_backward(xp, saved, gy):
    """The input's gradient: each window's gradient goes to its first maximum."""
    arg, (n, H, W, C), pool, strides, g = saved
    return K.max_pool2d_backward(xp, gy, arg, n, H, W, C, *pool, *strides, *g)


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
