"""Convolution and pooling on channels-last float32 arrays: im2col/col2im and the pooling passes.

Every function takes the array module ``xp`` first and runs on NumPy and CuPy alike (the NumPy
forms are the twins of the CUDA kernels of ``conv_cuda.py``: same operations, same order). float32 runs
``conv.cu``: on a GPU its kernels, on the CPU its ``_px`` kernels built by :mod:`.host` (the same bits;
``GPUNET_CPU_KERNELS=0``, or no compiler: the NumPy forms below). Arrays
are C-contiguous float32 ``(n, height, width, channels)`` (float64 works too, for gradient checks); the
geometry comes from :func:`conv_geometry` (Keras/TensorFlow ``'valid'``/``'same'``).

No loop visits pixels: each function loops over the ``kh * kw`` offsets ``(dy, dx)`` of the window
only, and moves a whole strided slice per offset (the input rows ``oh * sh + dy - pad_top`` for every
output row ``oh`` at once). Padding is never materialised: each offset touches only the output
positions whose input position lies inside the image (:func:`span`), and the rest stays zero (or
-inf for max pooling). That loop order *is* the arithmetic contract: col2im adds the contributions of
one input element in ``(dy, dx)`` row-major order; the pooling backwards in window order (``oh`` then
``ow`` ascending, i.e. ``(dy, dx)`` descending), each addition rounded on its own.

A convolution is then one matrix product per batch (:func:`gpunet.kernels.dense_forward`):
``cols (n*out_h*out_w, kh*kw*C) @ kernel.reshape(kh*kw*C, filters)``.
"""
from __future__ import annotations

from . import conv_cuda, cuda

PADDINGS = ("valid", "same")


def _kernels(xp, a) -> bool:
    """Run ``conv.cu`` for float32 ``a``: on a GPU, or on the CPU when its kernels are on (:mod:`.host`)."""
    return a.dtype.char == "f" and cuda.fused(xp)


def conv_geometry(in_h, in_w, kh, kw, sh, sw, padding):
    """``(out_h, out_w, pad_top, pad_left)`` of a ``kh x kw`` window at strides ``(sh, sw)`` over an
    ``in_h x in_w`` image, by Keras/TensorFlow's rules: ``'valid'``: ``out = (in - k) // s + 1`` (0 when
    the window does not fit), no padding; ``'same'``: ``out = ceil(in / s)``, total padding
    ``max((out - 1) * s + k - in, 0)``, half (rounded down) on top/left, the rest bottom/right.

    >>> conv_geometry(28, 28, 3, 3, 1, 1, 'valid'), conv_geometry(5, 6, 3, 3, 2, 2, 'same')
    ((26, 26, 0, 0), (3, 3, 1, 0))
    """
    padding = str(padding).lower()
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if padding == "valid":
        return max((in_h - kh) // sh + 1, 0), max((in_w - kw) // sw + 1, 0), 0, 0
    out_h, out_w = -(-in_h // sh), -(-in_w // sw)
    pad_h = max((out_h - 1) * sh + kh - in_h, 0)
    pad_w = max((out_w - 1) * sw + kw - in_w, 0)
    return out_h, out_w, pad_h // 2, pad_w // 2


def span(d, pad, stride, out_len, in_len):
    """For window offset ``d``: ``(o0, o1, i0)``, the output positions ``o0 <= o < o1`` whose input
    position ``o * stride + d - pad`` lies in ``[0, in_len)``; ``i0`` is the first of them."""
    o0 = max(-(-(pad - d) // stride), 0)
    o1 = min((in_len - 1 + pad - d) // stride + 1, out_len)
    return o0, max(o1, o0), o0 * stride + d - pad


def windows(d_y, d_x, geometry):
    """The slices ``(out_rows, out_cols, in_rows, in_cols)`` that offset ``(d_y, d_x)`` pairs up, or None
    when no output position sees an input element there. ``geometry``: ``(H, W, sh, sw, pad_top,
    pad_left, out_h, out_w)``."""
    H, W, sh, sw, pt, pl, out_h, out_w = geometry
    oy0, oy1, iy0 = span(d_y, pt, sh, out_h, H)
    ox0, ox1, ix0 = span(d_x, pl, sw, out_w, W)
    if oy1 <= oy0 or ox1 <= ox0:
        return None
    return (slice(oy0, oy1), slice(ox0, ox1), slice(iy0, iy0 + (oy1 - oy0 - 1) * sh + 1, sh),
            slice(ix0, ix0 + (ox1 - ox0 - 1) * sw + 1, sw))


def offsets(kh, kw, reverse=False):
    """The window offsets ``(k, dy, dx)``, ``k = dy * kw + dx``, in row-major order (or reversed)."""
    order = [(dy * kw + dx, dy, dx) for dy in range(kh) for dx in range(kw)]
    return order[::-1] if reverse else order


def im2col(xp, x, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w, out=None):
    """Unfold the windows of ``x (n, H, W, C)`` into ``cols (n*out_h*out_w, kh*kw*C)`` float32.

    Row ``(i*out_h + oh)*out_w + ow``, column ``(dy*kw + dx)*C + c`` holds
    ``x[i, oh*sh + dy - pad_top, ow*sw + dx - pad_left, c]``, 0 outside the image. Extra memory: the
    result, ``4 * n*out_h*out_w*kh*kw*C`` bytes (``kh*kw / (sh*sw)`` times the input, about 9x for a
    3x3 stride-1 convolution); pass ``out`` to reuse it from step to step.
    """
    if _kernels(xp, x):     # conv.cu: a CUDA kernel, or its CPU build (None: off)
        result = conv_cuda.im2col(xp, x, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w, out=out, fallback=True)
        if result is not None:
            return result
    n, H, W, C = x.shape
    if out is None:
        out = xp.empty((n * out_h * out_w, kh * kw * C), dtype=x.dtype)
    cols = out.reshape(n, out_h, out_w, kh, kw, C)
    geometry = (H, W, sh, sw, pad_top, pad_left, out_h, out_w)
    for _, dy, dx in offsets(kh, kw):
        win = windows(dy, dx, geometry)
        target = cols[:, :, :, dy, dx, :]
        if win is None:
            target[...] = 0
            continue
        oy, ox, iy, ix = win
        if (oy.stop - oy.start, ox.stop - ox.start) != (out_h, out_w):
            target[...] = 0                 # positions in the padding
        target[:, oy, ox, :] = x[:, iy, ix, :]
    return out


def col2im(xp, cols, n, H, W, C, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w, out=None):
    """The adjoint of :func:`im2col`: ``cols (n*out_h*out_w, kh*kw*C)`` -> ``(n, H, W, C)`` float32,
    each input element 0.0 plus its contributions added in ``(dy, dx)`` row-major order, each addition
    rounded on its own (padding contributions dropped). Extra memory: none beyond the result (``out``)."""
    if _kernels(xp, cols):     # conv.cu: a CUDA kernel, or its CPU build (None: off)
        result = conv_cuda.col2im(xp, cols, n, H, W, C, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w, out=out,
                                  fallback=True)
        if result is not None:
            return result
    gx = out if out is not None else xp.empty((n, H, W, C), dtype=cols.dtype)
    gx[...] = 0
    g6 = cols.reshape(n, out_h, out_w, kh, kw, C)
    geometry = (H, W, sh, sw, pad_top, pad_left, out_h, out_w)
    for _, dy, dx in offsets(kh, kw):
        win = windows(dy, dx, geometry)
        if win is not None:
            oy, ox, iy, ix = win
            gx[:, iy, ix, :] += g6[:, oy, ox, dy, dx, :]
    return gx


def max_pool2d(xp, x, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w):
    """Max pooling of ``x (n, H, W, C)``: ``(y, arg)``, both ``(n, out_h, out_w, C)``; ``y`` float32,
    ``arg`` int32 the index ``dy*pw + dx`` in the window of the first maximum in row-major window order
    (as TensorFlow's and PyTorch's CPU kernels pick it, so a tie sends the gradient to one position).
    Padded positions are never chosen; the window's first valid element starts the search and a later
    one replaces it only when strictly greater (a NaN there is kept, later NaNs are skipped)."""
    if _kernels(xp, x):     # conv.cu: a CUDA kernel, or its CPU build (None: off)
        result = conv_cuda.max_pool2d(xp, x, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, fallback=True)
        if result is not None:
            return result
    n, H, W, C = x.shape
    y = xp.empty((n, out_h, out_w, C), dtype=x.dtype)
    arg = xp.full((n, out_h, out_w, C), -1, dtype="int32")
    geometry = (H, W, sh, sw, pad_top, pad_left, out_h, out_w)
    touched = started = False   # some / every window has seen a valid element
    for k, dy, dx in offsets(ph, pw):
        win = windows(dy, dx, geometry)
        if win is None:
            continue
        oy, ox, iy, ix = win
        v, best, idx = x[:, iy, ix, :], y[:, oy, ox, :], arg[:, oy, ox, :]
        full = (oy.stop - oy.start, ox.stop - ox.start) == (out_h, out_w)
        if full and not touched:            # every window's first valid element: taken as it is
            best[...] = v
            idx[...] = k
        else:
            take = v > best
            if not started:
                take |= idx < 0             # (y is uninitialised there)
            best[...] = xp.where(take, v, best)
            idx[...] = xp.where(take, k, idx)
        touched, started = True, started or full
    return y, arg


def max_pool2d_backward(xp, gy, arg, n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, gate=None):
    """The gradient of :func:`max_pool2d`'s input, ``(n, H, W, C)`` float32: each element 0.0 plus ``gy``
    of every window whose ``arg`` points at it, added in window order (``oh``, then ``ow`` ascending).
    ``gate``: the input as the output of a ReLU, whose backward is applied too, ``gx * (gate > 0)`` (in
    the kernels, in the same pass)."""
    if _kernels(xp, gy) and (gate is None or gate.dtype.char == "f"):     # conv.cu (None: off)
        result = conv_cuda.max_pool2d_backward(xp, gy, arg, n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h,
                                               out_w, fallback=True, gate=gate)
        if result is not None:
            return result
    gx = xp.zeros((n, H, W, C), dtype=gy.dtype)
    geometry = (H, W, sh, sw, pad_top, pad_left, out_h, out_w)
    for k, dy, dx in offsets(ph, pw, reverse=True):     # dy descending = oh ascending for one element
        win = windows(dy, dx, geometry)
        if win is not None:
            oy, ox, iy, ix = win
            gx[:, iy, ix, :] += xp.where(arg[:, oy, ox, :] == k, gy[:, oy, ox, :], 0).astype(gy.dtype, copy=False)
    if gate is not None:                                # the ReLU's backward, as dense.act_backward's twin
        xp.multiply(gx, gate > 0, out=gx)
    return gx


def valid_counts(xp, H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, dtype="float32"):
    """``(out_h, out_w, 1)`` of ``dtype``: the number of valid (unpadded) positions of each window (computed
    on the device: no host data, so a CUDA-graph capture can hold it)."""
    def along(out_len, stride, pad, k, size):
        start = xp.arange(out_len, dtype="int32") * stride - pad
        return xp.minimum(start + k, size) - xp.maximum(start, 0)
    rows, cols = along(out_h, sh, pad_top, ph, H), along(out_w, sw, pad_left, pw, W)
    return (rows.reshape(out_h, 1, 1) * cols.reshape(1, out_w, 1)).astype(dtype)


def avg_pool2d(xp, x, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w):
    """Average pooling of ``x (n, H, W, C)`` -> ``(n, out_h, out_w, C)`` float32: the sum of the window's
    valid positions in row-major order from 0.0, then one division by their count (TensorFlow's
    ``'same'`` average pooling leaves the padding out of the count)."""
    if _kernels(xp, x):     # conv.cu: a CUDA kernel, or its CPU build (None: off)
        result = conv_cuda.avg_pool2d(xp, x, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, fallback=True)
        if result is not None:
            return result
    n, H, W, C = x.shape
    s = xp.zeros((n, out_h, out_w, C), dtype=x.dtype)
    geometry = (H, W, sh, sw, pad_top, pad_left, out_h, out_w)
    for _, dy, dx in offsets(ph, pw):
        win = windows(dy, dx, geometry)
        if win is not None:
            oy, ox, iy, ix = win
            s[:, oy, ox, :] += x[:, iy, ix, :]
    s /= valid_counts(xp, H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, x.dtype)
    return s


def avg_pool2d_backward(xp, gy, n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w):
    """The gradient of :func:`avg_pool2d`'s input, ``(n, H, W, C)`` float32: each element 0.0 plus
    ``gy / count`` (one rounded division per window) of each window covering it, in window order."""
    if _kernels(xp, gy):     # conv.cu: a CUDA kernel, or its CPU build (None: off)
        result = conv_cuda.avg_pool2d_backward(xp, gy, n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w,
                                               fallback=True)
        if result is not None:
            return result
    g = gy / valid_counts(xp, H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, gy.dtype)
    gx = xp.zeros((n, H, W, C), dtype=gy.dtype)
    geometry = (H, W, sh, sw, pad_top, pad_left, out_h, out_w)
    for _, dy, dx in offsets(ph, pw, reverse=True):
        win = windows(dy, dx, geometry)
        if win is not None:
            oy, ox, iy, ix = win
            gx[:, iy, ix, :] += g[:, oy, ox, :]
    return gx
