"""The launches of ``conv.cu``: im2col/col2im and max/average pooling, forward and backward, on CuPy arrays.

Each function takes the arguments of its NumPy twin in :mod:`.conv` (with ``xp`` = CuPy) and gives the
twin's bits (the arithmetic contract is in ``conv.cu``'s comments). Arrays are channels-last:

* ``x`` ``(n, H, W, C)`` float32; window ``(oh, ow)`` covers rows ``oh*sh - pad_top ..`` (``kh``/``ph`` of
  them) and columns ``ow*sw - pad_left ..`` (``kw``/``pw``); positions outside ``x`` are padding;
* im2col's ``cols`` ``(n*out_h*out_w, kh*kw*C)``: row ``(i*out_h + oh)*out_w + ow``, column ``(dy*kw + dx)*C + c``;
* pooling outputs and their gradients ``(n, out_h, out_w, C)``; max pooling's ``arg`` int32, the offset
  ``dy*pw + dx`` of the window's first maximum (strictly-greater replaces: a NaN is kept only when it is
  the window's first position inside ``x``, as the twin and TensorFlow's CPU kernel).

Inputs must be float32 (``arg`` int32) of the stated shapes (``TypeError``/``ValueError`` otherwise: no
silent casts); a strided input is copied to C order first. ``out`` (when given) must be a C-ordered
float32 array of the result's shape: the kernels write it as one flat buffer. Every pooling window must
overlap ``x`` (true of Keras' 'valid' and 'same' geometry), so a maximum and a nonzero count exist.
"""
from __future__ import annotations

from . import cuda

SOURCE = cuda.Source(__file__, "conv.cu")


def _launch(xp, name, n, args, result, fallback):
    """Run kernel ``name`` over ``n`` elements and return ``result``. With NumPy arrays (``xp`` NumPy) it
    runs ``name_px``, the same operations shaped for a CPU, from the CPU build of ``conv.cu`` (:mod:`.host`);
    where that is off or cannot be built: None with ``fallback`` (the caller runs the twin of :mod:`.conv`),
    else a ``RuntimeError`` (nothing here would fill the result)."""
    if SOURCE.launch(name if cuda.is_gpu(xp) else f"{name}_px", n, args):
        return result
    if fallback:
        return None
    raise RuntimeError(f"conv kernel {name}: NumPy arrays and no CPU build of conv.cu; use gpunet.kernels.conv")


_GEOMETRIES = {}        # sizes -> their kernel arguments (see _geometry)


def _geometry(*values):
    """The sizes as ``long long`` kernel arguments, after checking they are integers in range (a training
    step asks for the same few geometries again and again: remembered)."""
    try:
        return _GEOMETRIES[values]
    except (KeyError, TypeError):
        pass
    for v in values:
        if int(v) != v or v < 0:
            raise ValueError(f"conv kernels: sizes, strides and paddings must be integers >= 0; got {values}")
    converted = tuple(cuda.i64(v) for v in values)
    if len(_GEOMETRIES) < 4096:
        _GEOMETRIES[values] = converted
    return converted


def _check_window(k1, k2, s1, s2):
    if min(k1, k2, s1, s2) < 1:
        raise ValueError(f"conv kernels: window {k1}x{k2} and strides {s1}x{s2} must be >= 1")


def _input(xp, a, shape, dtype, what):
    """``a`` checked (dtype, shape) and C-ordered (copied when strided)."""
    if a.dtype != dtype:
        raise TypeError(f"{what} must be {dtype}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def _output(xp, out, shape, dtype="float32", what="out"):
    """``out``, checked, or a new C-ordered array."""
    if out is None:
        return xp.empty(shape, dtype=dtype)
    if out.dtype != dtype or tuple(out.shape) != tuple(shape) or not out.flags.c_contiguous:
        raise ValueError(f"{what} must be a C-ordered {dtype} array of shape {tuple(shape)}; got "
                         f"{out.dtype} {tuple(out.shape)}{'' if out.flags.c_contiguous else ' (strided)'}")
    return out


def _pool_windows_overlap(H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w):
    """Refuse geometry where a pooling window lies wholly in the padding (no maximum, a count of 0)."""
    _check_window(ph, pw, sh, sw)
    if out_h and out_w and (pad_top >= ph or pad_left >= pw or (out_h - 1) * sh - pad_top >= H
                            or (out_w - 1) * sw - pad_left >= W):
        raise ValueError(f"pooling: a window lies wholly in the padding (input {H}x{W}, window {ph}x{pw}, "
                         f"strides {sh}x{sw}, padding top {pad_top} left {pad_left}, output {out_h}x{out_w})")


def im2col(xp, x, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w, out=None, fallback=False):
    """``x`` ``(n, H, W, C)`` float32 -> its windows as rows, ``(n*out_h*out_w, kh*kw*C)`` float32 (into ``out``)."""
    _check_window(kh, kw, sh, sw)
    if x.ndim != 4:
        raise ValueError(f"im2col: x must be (n, H, W, C), got shape {tuple(x.shape)}")
    n, H, W, C = x.shape
    x = _input(xp, x, x.shape, "float32", "im2col: x")
    cols = _output(xp, out, (n * out_h * out_w, kh * kw * C))
    return _launch(xp, "im2col", cols.size, (x, cols, *_geometry(n, H, W, C, kh, kw, sh, sw, pad_top, pad_left,
                                                            out_h, out_w)),
                   cols, fallback)


def col2im(xp, cols, n, H, W, C, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w, out=None, fallback=False):
    """The adjoint of :func:`im2col`: ``cols`` ``(n*out_h*out_w, kh*kw*C)`` -> ``(n, H, W, C)`` float32, each
    element the sum of its copies (offsets ``(dy, dx)`` in row-major order, from +0)."""
    _check_window(kh, kw, sh, sw)
    cols = _input(xp, cols, (n * out_h * out_w, kh * kw * C), "float32", "col2im: cols")
    x = _output(xp, out, (n, H, W, C))
    return _launch(xp, "col2im", x.size, (cols, x, *_geometry(n, H, W, C, kh, kw, sh, sw, pad_top, pad_left,
                                                         out_h, out_w)),
                   x, fallback)


def max_pool2d(xp, x, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, fallback=False):
    """``x`` ``(n, H, W, C)`` float32 -> ``(y, arg)``, each ``(n, out_h, out_w, C)``: the window maxima (float32,
    copies of ``x``'s elements) and their offsets ``dy*pw + dx`` (int32; padding skipped)."""
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: x must be (n, H, W, C), got shape {tuple(x.shape)}")
    n, H, W, C = x.shape
    _pool_windows_overlap(H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w)
    x = _input(xp, x, x.shape, "float32", "max_pool2d: x")
    y = xp.empty((n, out_h, out_w, C), dtype="float32")
    arg = xp.empty((n, out_h, out_w, C), dtype="int32")
    return _launch(xp, "max_pool_fwd", y.size, (x, y, arg, *_geometry(n, H, W, C, ph, pw, sh, sw, pad_top, pad_left,
                                                                 out_h, out_w)),
                   (y, arg), fallback)


def max_pool2d_backward(xp, gy, arg, n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, fallback=False,
                        gate=None):
    """``gy`` ``(n, out_h, out_w, C)`` float32 and ``arg`` (from :func:`max_pool2d`) -> ``gx`` ``(n, H, W, C)``:
    each window's gradient goes to its maximum; an element's windows summed with ``oh``, then ``ow``, ascending.
    ``gate``: the pooled input as a ReLU's output ``(n, H, W, C)``; the ReLU's backward in the same pass
    (``gx * (gate > 0)``, as ``relu_bwd``)."""
    _pool_windows_overlap(H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w)
    gy = _input(xp, gy, (n, out_h, out_w, C), "float32", "max_pool2d_backward: gy")
    arg = _input(xp, arg, (n, out_h, out_w, C), "int32", "max_pool2d_backward: arg")
    gate = None if gate is None else _input(xp, gate, (n, H, W, C), "float32", "max_pool2d_backward: gate")
    gx = xp.empty((n, H, W, C), dtype="float32")
    geometry = _geometry(n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w)
    return _launch(xp, "max_pool_bwd", gx.size, (gy, arg, cuda.pointer(gate), gx, *geometry), gx, fallback)


def avg_pool2d(xp, x, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, fallback=False):
    """``x`` ``(n, H, W, C)`` float32 -> ``(n, out_h, out_w, C)``: each window's sum over its positions inside
    ``x`` (row-major, from +0) divided once by their count (padding not counted)."""
    if x.ndim != 4:
        raise ValueError(f"avg_pool2d: x must be (n, H, W, C), got shape {tuple(x.shape)}")
    n, H, W, C = x.shape
    _pool_windows_overlap(H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w)
    x = _input(xp, x, x.shape, "float32", "avg_pool2d: x")
    y = xp.empty((n, out_h, out_w, C), dtype="float32")
    return _launch(xp, "avg_pool_fwd", y.size, (x, y, *_geometry(n, H, W, C, ph, pw, sh, sw, pad_top, pad_left,
                                                            out_h, out_w)),
                   y, fallback)


def avg_pool2d_backward(xp, gy, n, H, W, C, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w, fallback=False):
    """``gy`` ``(n, out_h, out_w, C)`` float32 -> ``gx`` ``(n, H, W, C)``: the sum over the windows covering each
    element (``oh``, then ``ow``, ascending, from +0) of ``gy / count`` (one division per window)."""
    _pool_windows_overlap(H, W, ph, pw, sh, sw, pad_top, pad_left, out_h, out_w)
    gy = _input(xp, gy, (n, out_h, out_w, C), "float32", "avg_pool2d_backward: gy")
    gx = xp.empty((n, H, W, C), dtype="float32")
    return _launch(xp, "avg_pool_bwd", gx.size, (gy, gx, *_geometry(n, H, W, C, ph, pw, sh, sw, pad_top, pad_left,
                                                               out_h, out_w)),
                   gx, fallback)
