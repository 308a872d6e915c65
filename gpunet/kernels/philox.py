"""Dropout masks from Philox4x32-10, a counter-based generator (``philox.cu``, and its NumPy twin here).

Philox4x32-10 (Salmon et al., SC 2011; Random123's ``philox4x32``, cuRAND's ``Philox4_32_10``) maps a
128-bit counter and a 64-bit key to four 32-bit words. A stream is a key and an element counter, kept
as ``state``: a uint64 array ``[key, counter]`` (``k0`` the key's low 32 bits, ``k1`` its high ones)
on the device that draws. Element ``e`` of a stream is word ``e % 4`` of the block with counter
``(lo32(e // 4), hi32(e // 4), 0, 0)``; its uniform number is ``u = (word >> 8) * 2**-24`` (the top 24
bits, exactly a float32 in [0, 1)) and it is kept when ``u >= float32(rate)``.

A draw for the rows ``[row_offset, row_offset + rows)`` of a global batch of ``global_rows`` rows of
``cols`` values takes elements ``counter + r * cols + c`` and then moves the counter on by
``global_rows * cols``: on a GPU a second tiny kernel does that on the device, so a draw needs no host
work and a replayed CUDA graph draws fresh masks; the twin moves the NumPy counter the same way. Every
rank of a distributed run draws its own rows of the masks one process would draw.
"""
from __future__ import annotations

import functools
import math
import threading

from . import cuda

np = cuda.np
SOURCE = cuda.Source(__file__, "philox.cu")

M0, M1 = 0xD2511F53, 0xCD9E8D57          # the round multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85          # the key schedule (Weyl sequence)
ROUNDS = 10
_MULTIPLIERS = np.array([[M1], [M0]], np.uint64)    # row 0 makes c0's next value from c2, row 1 c2's from c0
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
CHUNK = 16384                            # Philox blocks the twin computes at a time (65536 elements)
_WORK = threading.local()                # per thread: the twin's work arrays, reused (fresh ones cost page faults)


def _work_arrays(blocks: int):
    """Five ``(2, blocks)`` uint64 work arrays (``blocks <= CHUNK``) and the lane numbers ``0..blocks-1``."""
    if getattr(_WORK, "arrays", None) is None:
        _WORK.arrays = np.empty((5, 2, CHUNK), np.uint64)
        _WORK.lanes = np.arange(CHUNK, dtype=np.uint64)
    return [w[:, :blocks] for w in _WORK.arrays], _WORK.lanes[:blocks]


@functools.lru_cache(maxsize=64)
def _round_keys(key: int):
    """The ten round keys of the 64-bit ``key`` as ``(2, 1)`` uint64 columns ``[k0, k1]``."""
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    return [np.array([[(k0 + r * W0) & 0xFFFFFFFF], [(k1 + r * W1) & 0xFFFFFFFF]], np.uint64) for r in range(ROUNDS)]


def _rounds(a, b, key: int, product, low0, low1):
    """Philox4x32-10 on blocks held as ``a = [c0, c2]`` and ``b = [c1, c3]`` (``(2, m)`` uint64 arrays of
    32-bit values; ``a`` is overwritten; ``product``, ``low0``, ``low1`` are work arrays of that shape).
    Returns the output as ``(a, b)``: words ``(a[0], b[0], a[1], b[1])`` of each block.

    Each round is five whole-array operations: the two products ``[c2 * M1, c0 * M0]``, their low
    halves (the next ``[c1, c3]``), their high halves xor ``[c1, c3]`` xor the round key (the next ``[c0, c2]``)."""
    for r, round_key in enumerate(_round_keys(key)):
        np.multiply(a[::-1], _MULTIPLIERS, out=product)
        low = (low0, low1)[r & 1]
        np.bitwise_and(product, _LOW, out=low)
        np.right_shift(product, _SHIFT, out=product)
        np.bitwise_xor(product, b, out=a)
        np.bitwise_xor(a, round_key, out=a)
        b = low
    return a, b


def philox4x32_10(counter, key):
    """Philox4x32-10 of each 128-bit ``counter`` (``(..., 4)`` uint32 words c0..c3) under the 64-bit
    ``key`` (``(k0, k1)`` 32-bit words): ``(..., 4)`` uint32 words, as Random123's ``philox4x32_R(10, ...)``."""
    counter = np.asarray(counter, np.uint32)
    flat = counter.reshape(-1, 4).T.astype(np.uint64)
    a, b = _rounds(np.ascontiguousarray(flat[[0, 2]]), np.ascontiguousarray(flat[[1, 3]]),
                   int(key[0]) | int(key[1]) << 32, *(np.empty((2, flat.shape[1]), np.uint64) for _ in range(3)))
    return np.stack([a[0], b[0], a[1], b[1]], axis=-1).astype(np.uint32).reshape(counter.shape)


def stream_keep(key: int, first: int, n: int, threshold: int):
    """Which of the elements ``[first, first + n)`` of the stream of ``key`` are kept: a bool ``(n,)``
    array, ``word >= threshold`` (see :func:`keep_threshold`). Computed ``CHUNK`` blocks at a time."""
    block0, blocks = first >> 2, ((first + n + 3) >> 2) - (first >> 2) if n else 0
    keep = np.empty((blocks, 4), bool)
    threshold = np.uint64(threshold)
    for start in range(0, blocks, CHUNK):
        m = min(CHUNK, blocks - start)
        (a, b, product, low0, low1), lanes = _work_arrays(m)
        np.add(lanes, np.uint64(block0 + start), out=b[0])      # the block numbers: counter (lo, hi, 0, 0)
        np.bitwise_and(b[0], _LOW, out=a[0])
        np.right_shift(b[0], _SHIFT, out=b[0])
        a[1].fill(0)
        b[1].fill(0)
        a, b = _rounds(a, b, key, product, low0, low1)
        for w, words in enumerate((a[0], b[0], a[1], b[1])):
            np.greater_equal(words, threshold, out=keep[start:start + m, w])
    return keep.reshape(-1)[first & 3:(first & 3) + n]


def keep_threshold(rate) -> int:
    """The smallest 32-bit word that is kept: ``u >= float32(rate)`` with ``u = (word >> 8) * 2**-24``
    is ``word >= ceil(float32(rate) * 2**24) << 8`` (exact: a float32 times a power of two)."""
    return math.ceil(float(np.float32(rate)) * 2 ** 24) << 8


def dropout_mask(xp, state, shape, rate, row_offset=0, global_rows=None, x=None, y=None, mask=None):
    """Draw dropout's float32 mask of ``shape`` (``(rows, ...)``: rows ``[row_offset, row_offset + rows)``
    of a global draw of ``global_rows`` rows, default ``rows``) from the stream ``state`` (a uint64
    ``[key, counter]`` array of ``xp``), and move the counter on by ``global_rows * cols``. The mask is
    ``1 / (1 - rate)`` (float32) where kept, else 0; into ``mask`` when given (float32, C order).

    With ``x`` (shaped like the mask): also ``y = x * mask`` (into ``y`` when given). Returns ``(y, mask)``
    (``y`` None without ``x``). On a GPU one kernel draws the mask (and, for float32 C-ordered ``x`` and
    ``y``, writes ``y`` in the same pass) and a second one advances the counter: no host work."""
    shape = tuple(int(d) for d in shape)
    rows, n = (shape[0], math.prod(shape)) if shape else (1, 1)
    cols = n // rows if rows else math.prod(shape[1:])
    global_rows = rows if global_rows is None else int(global_rows)
    if not (0 <= row_offset and row_offset + rows <= global_rows):
        raise ValueError(f"rows [{row_offset}, {row_offset + rows}) are not rows of a draw of {global_rows}")
    scale = np.float32(1) / np.float32(1 - rate)
    if mask is None:
        mask = xp.empty(shape, dtype="float32")
    if cuda.is_gpu(xp):
        fused = x is not None and x.dtype == "float32" and x.flags.c_contiguous and x.shape == shape and \
            (y is None or (y.dtype == "float32" and y.flags.c_contiguous))
        if fused and y is None:
            y = xp.empty(shape, dtype="float32")
        SOURCE.launch("dropout_mask", (n + 3) // 4 + 1,
                      (state, x if fused else cuda.NULL, y if fused else cuda.NULL, mask, cuda.i64(n),
                       cuda.i64(row_offset * cols), cuda.f32(rate), scale))
        SOURCE.launch("philox_advance", 1, (state, cuda.i64(global_rows * cols)))
        if x is not None and not fused:
            y = xp.multiply(x, mask, out=y)
        return y, mask
    key, counter = int(state[0]), int(state[1])
    keep = stream_keep(key, counter + row_offset * cols, n, keep_threshold(rate))
    np.multiply(keep.reshape(shape), scale, out=mask)
    state[1] = (counter + global_rows * cols) % 2 ** 64
    if x is not None:
        y = np.multiply(x, mask, out=y)
    return y, mask
