"""Fused kernels: CUDA sources for CuPy and their NumPy twins.

Each fused operation has two implementations with one signature
``fn(xp, ...)``: a CUDA kernel (compiled by CuPy on first use, launched when
``xp`` is CuPy) and a NumPy twin (used on CPU devices and as the reference in
tests). ``CUDA_SOURCE`` holds every kernel; a CPU-only test compiles it with
NVRTC/nvcc for sm_80 and sm_90, and GPU tests compare each kernel with its twin.

All kernels take float32 arrays; element counts are ``long long``.
"""
from __future__ import annotations

import functools

from . import backend

np = backend.numpy

CUDA_SOURCE = r"""
extern "C" {

// y = act(z + b[col]); b may be null (no bias). act: 0 linear, 1 relu. In place allowed (y == z).
__global__ void bias_act_fwd(const float* z, const float* b, float* y, long long n, long long cols, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = z[i] + (b ? b[i % cols] : 0.0f);
        y[i] = (act == 1 && v < 0.0f) ? 0.0f : v;
    }
}

// gz = g * (y > 0): the ReLU backward in one pass.
__global__ void relu_bwd(const float* g, const float* y, float* gz, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        gz[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

// One thread per row: probs = softmax(z[row]), row_loss = -sum(y * log_softmax(z[row])).
// labels: one-hot/probabilities (float, rows x cols) when sparse == 0, else class indices (int64).
__global__ void softmax_xent_fwd(const float* z, const float* y, const long long* labels, float* probs,
                                 float* row_loss, long long rows, long long cols, int sparse) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        const float* zr = z + r * cols;
        float m = zr[0];
        for (long long c = 1; c < cols; ++c) m = fmaxf(m, zr[c]);
        float s = 0.0f;
        for (long long c = 0; c < cols; ++c) s += expf(zr[c] - m);
        float lse = logf(s);
        float loss = 0.0f;
        for (long long c = 0; c < cols; ++c) {
            float lp = zr[c] - m - lse;
            probs[r * cols + c] = expf(lp);
            if (!sparse) loss -= y[r * cols + c] * lp;
        }
        if (sparse) loss = -(zr[labels[r]] - m - lse);
        row_loss[r] = loss;
    }
}

// dz = (probs - y) * g[0] / rows: the exact softmax-cross-entropy backward.
__global__ void softmax_xent_bwd(const float* probs, const float* y, const long long* labels, const float* g,
                                 float* dz, long long rows, long long cols, int sparse) {
    long long n = rows * cols;
    float scale = g[0] / (float)rows;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float t = sparse ? (labels[i / cols] == i % cols ? 1.0f : 0.0f) : y[i];
        dz[i] = (probs[i] - t) * scale;
    }
}

// One thread: the first non-finite loss sets *halt (and records its step); optimizer kernels given
// that flag then do nothing, so the weights stay those of the last finite step. No host sync needed.
__global__ void guard_loss(const float* loss, int* halt, long long* bad_step, float* bad_loss, long long step) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !*halt && !isfinite(*loss)) {
        *halt = 1; *bad_step = step; *bad_loss = *loss;
    }
}

// Keras SGD: m = mu*m - lr*g; w += m (nesterov: w += mu*m - lr*g). mu == 0: w -= lr*g, m untouched.
// halt (may be null): skip the update when *halt != 0 (see guard_loss); likewise in the kernels below.
__global__ void sgd_update(float* w, const float* g, float* m, float lr, float mu, int nesterov, long long n,
                           const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        if (mu == 0.0f) { w[i] -= lr * g[i]; continue; }
        float mi = mu * m[i] - lr * g[i];
        m[i] = mi;
        w[i] += nesterov ? mu * mi - lr * g[i] : mi;
    }
}

// Keras RMSprop: v = rho*v + (1-rho)*g^2; [a = rho*a + (1-rho)*g; d = v - a^2]; step = lr*g/sqrt(d + eps)
// (eps_inside == 0: lr*g/(sqrt(d) + eps), PyTorch's form); momentum: mom = mu*mom + step; w -= mom.
// The velocity is stored scaled, u = v/(1-rho): u = rho*u + g^2. fast != 0 (plain Keras form): step =
// g/sqrt(u*c + e2) with c = (1-rho)/lr^2, e2 = eps/lr^2 computed on the host, as the NumPy twin does.
__global__ void rmsprop_update(float* w, const float* g, float* u, float* a, float* mom, float lr, float rho,
                               float eps, float mu, int eps_inside, float c, float e2, int fast, long long n,
                               const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float ui = __fadd_rn(__fmul_rn(u[i], rho), __fmul_rn(gi, gi));   // no FMA: round as the twin does
        u[i] = ui;
        float step;
        if (fast) {
            step = gi / sqrtf(__fadd_rn(__fmul_rn(ui, c), e2));
        } else {
            float vi = (1.0f - rho) * ui;
            if (a) { float ai = rho * a[i] + (1.0f - rho) * gi; a[i] = ai; vi -= ai * ai; }
            step = eps_inside ? lr * gi / sqrtf(vi + eps) : lr * gi / (sqrtf(vi) + eps);
            if (mom) { step += mu * mom[i]; mom[i] = step; }
        }
        w[i] -= step;
    }
}

// Keras Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= alpha_t * m / (sqrt(v) + eps).
__global__ void adam_update(float* w, const float* g, float* m, float* v, float alpha_t, float b1, float b2,
                            float eps, long long n, const int* halt) {
    if (halt && *halt) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * (1.0f - b1);
        float vi = v[i] + (gi * gi - v[i]) * (1.0f - b2);
        m[i] = mi; v[i] = vi;
        w[i] -= alpha_t * mi / (sqrtf(vi) + eps);
    }
}

}  // extern "C"
"""

KERNEL_NAMES = ("bias_act_fwd", "relu_bwd", "softmax_xent_fwd", "softmax_xent_bwd", "guard_loss",
                "sgd_update", "rmsprop_update", "adam_update")

_ACT = {None: 0, "linear": 0, "relu": 1}
NULL = np.uint64(0)   # a null device pointer argument (8 bytes, like a pointer)
_module = None


def _kernel(name):
    """The compiled CuPy kernel ``name`` (compiled once per process, cached on disk by CuPy)."""
    global _module
    if _module is None:
        cp = backend.cupy_module()
        _module = cp.RawModule(code=CUDA_SOURCE, options=("--std=c++14",), name_expressions=None)
    return _module.get_function(name)


def _launch(name, n, args):
    threads = 256
    blocks = int(min(max((n + threads - 1) // threads, 1), 65535 * 8))
    _kernel(name)((blocks,), (threads,), args)


def _f(x):
    return np.float32(x)


def _ll(x):
    return np.int64(x)


def _gpu(xp) -> bool:
    return xp is not np


# --- CPU: large updates split over the cores ----------------------------------------------
# An optimizer update makes ~10 element-wise NumPy passes, each on one core. For a large
# parameter, split it into one contiguous part per core and update the parts concurrently
# (NumPy releases the GIL inside each pass). Off by default: on 2-vCPU machines whose vCPUs
# share a core, and with OpenBLAS threads spinning after each matmul, it measured slower;
# opt in with GPUNET_NUM_THREADS=N.
PARALLEL_MIN = 1 << 17   # smaller parameters are updated in one go, on the calling thread
_pool = None


def _read_workers() -> int:
    import os
    try:
        return max(1, min(int(os.environ.get("GPUNET_NUM_THREADS", 1)), 8))
    except ValueError:
        raise ValueError(f"GPUNET_NUM_THREADS must be an integer, got {os.environ['GPUNET_NUM_THREADS']!r}") from None


WORKERS = _read_workers()   # read once at import; tests may assign kernels.WORKERS


def _blocked(fn, arrays, n):
    """Call ``fn(*views)`` on matching flat slices of ``arrays`` (None passes through), one slice per core."""
    global _pool
    workers = WORKERS
    if n < PARALLEL_MIN or workers == 1:
        fn(*arrays)
        return
    flat = [a.reshape(-1) if a is not None else None for a in arrays]
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="gpunet-update")
    cuts = [n * i // workers for i in range(workers + 1)]
    parts = [[a[lo:hi] if a is not None else None for a in flat] for lo, hi in zip(cuts, cuts[1:])]
    futures = [_pool.submit(fn, *p) for p in parts[1:]]
    fn(*parts[0])
    for f in futures:
        f.result()


# ------------------------------------------------------------ dense layer
def bias_act_forward(xp, z, b, activation):
    """``act(z + b)`` computed in place in ``z`` (a fresh matmul result). Returns ``z``."""
    if activation not in _ACT:
        raise ValueError(f"fused dense supports activations None, 'linear', 'relu'; got {activation!r}")
    if _gpu(xp) and z.dtype == np.float32 and (b is None or b.dtype == np.float32):
        _launch("bias_act_fwd", z.size, (z, b if b is not None else NULL, z, _ll(z.size), _ll(z.shape[-1]),
                                         np.int32(_ACT[activation])))
        return z
    if b is not None:
        z += b
    if _ACT[activation] == 1:
        xp.maximum(z, 0, out=z)
    return z


def act_backward(xp, g, y, activation, out=None):
    """Gradient through the activation given its output ``y``: ``g * (y > 0)`` for ReLU
    (into ``out`` when given, an array shaped like ``g``)."""
    if _ACT[activation] == 0:
        return g
    if _gpu(xp) and g.dtype == np.float32:
        gz = xp.empty_like(g) if out is None else out
        _launch("relu_bwd", g.size, (xp.ascontiguousarray(g), y, gz, _ll(g.size)))
        return gz
    return xp.multiply(g, y > 0, out=out)


# ------------------------------------------------------ softmax + cross-entropy
def softmax_xent_forward(xp, z, y, sparse):
    """Mean cross-entropy of ``softmax(z)`` against ``y``, and the probabilities.

    z: float32 ``(rows, cols)``; y: same shape (dense) or int ``(rows,)`` (sparse).
    Returns ``(loss, probs)`` with ``loss`` a 0-d array on the device (no host sync).
    """
    rows, cols = z.shape
    if _gpu(xp) and z.dtype == np.float32:
        z = xp.ascontiguousarray(z)
        probs = xp.empty_like(z)
        row_loss = xp.empty(rows, dtype=np.float32)
        if sparse:
            lab = xp.ascontiguousarray(y, dtype=np.int64)
            args = (z, NULL, lab, probs, row_loss, _ll(rows), _ll(cols), np.int32(1))
        else:
            args = (z, xp.ascontiguousarray(y, dtype=np.float32), NULL, probs, row_loss, _ll(rows), _ll(cols), np.int32(0))
        _launch("softmax_xent_fwd", rows, args)
        return row_loss.mean(), probs
    logp = z - z.max(axis=1, keepdims=True)
    e = xp.exp(logp)
    s = e.sum(axis=1, keepdims=True)
    logp -= xp.log(s)                 # log_softmax, in place (few NumPy calls: these arrays are small)
    e /= s
    if sparse:
        loss = -logp[xp.arange(rows), y.astype(np.int64)].sum() / rows
    else:
        loss = -xp.vdot(y, logp) / rows
    return xp.asarray(loss, dtype=z.dtype), e


def softmax_xent_backward(xp, probs, y, g, sparse):
    """``(probs - y) * g / rows``; ``g`` is the upstream gradient of the mean loss (0-d)."""
    rows, cols = probs.shape
    if _gpu(xp) and probs.dtype == np.float32:
        dz = xp.empty_like(probs)
        g = xp.ascontiguousarray(g, dtype=np.float32).reshape(1)
        if sparse:
            args = (probs, NULL, xp.ascontiguousarray(y, dtype=np.int64), g, dz, _ll(rows), _ll(cols), np.int32(1))
        else:
            args = (probs, xp.ascontiguousarray(y, dtype=np.float32), NULL, g, dz, _ll(rows), _ll(cols), np.int32(0))
        _launch("softmax_xent_bwd", probs.size, args)
        return dz
    if sparse:
        dz = probs.copy()
        dz[xp.arange(rows), y.astype(np.int64)] -= 1
    else:
        dz = probs - y
    dz *= g / rows
    return dz.astype(probs.dtype, copy=False)


# ------------------------------------------------------------- optimizers
def guard_loss(xp, loss, halt, bad_step, bad_loss, step) -> None:
    """Set the flag ``halt`` (int32 ``(1,)``) at the first non-finite ``loss`` (0-d float32), recording
    ``step`` in ``bad_step`` (int64 ``(1,)``) and the loss in ``bad_loss`` (float32 ``(1,)``).
    On a GPU this is one tiny kernel: nothing is read back, the host looks at ``halt`` later."""
    if _gpu(xp):
        _kernel("guard_loss")((1,), (1,), (xp.ascontiguousarray(loss, dtype=np.float32), halt, bad_step, bad_loss,
                                           _ll(step)))
    elif not halt[0] and not np.isfinite(loss):
        halt[0], bad_step[0], bad_loss[0] = 1, step, loss


def _flag(halt):
    return halt if halt is not None else NULL


def sgd_update(xp, w, g, m, lr, momentum, nesterov, scratch=None, halt=None):
    """Keras SGD, in place: ``m = mu*m - lr*g; w += m`` (Nesterov ``w += mu*m - lr*g``).

    ``halt``: the device flag of :func:`guard_loss` (GPU kernels skip the update when it is set;
    on the CPU the caller checks the loss before updating)."""
    if _gpu(xp) and w.dtype == np.float32:
        _launch("sgd_update", w.size, (w, g, m if m is not None else NULL, _f(lr), _f(momentum),
                                       np.int32(bool(nesterov)), _ll(w.size), _flag(halt)))
        return
    if halt is not None and halt[0]:
        return
    lr, mu = _scalars(w.dtype, lr, momentum)

    def block(w, g, m, s):
        s = xp.multiply(g, lr, out=s) if s is not None else g * lr
        if not momentum:
            w -= s
            return
        m *= mu
        m -= s
        if nesterov:
            s *= -1
            s += mu * m
            w += s
        else:
            w += m
    _blocked(block, (w, g, m, scratch), w.size)


@functools.lru_cache(maxsize=256)
def _scalars(dtype, *values):
    """``values`` as NumPy scalars of ``dtype`` (cached: building NumPy scalars costs ~0.5 us each)."""
    return tuple(dtype.type(v) for v in values)


def rmsprop_update(xp, w, g, u, a, mom, lr, rho, eps, momentum, eps_inside, scratch=None, halt=None):
    """Keras RMSprop, in place (see :class:`gpunet.optimizers.RMSprop` for the formula).

    The velocity is kept scaled, ``u = v / (1 - rho)``, so that ``u = rho*u + g**2`` and Keras'
    step ``lr*g/sqrt(v + eps)`` becomes ``g / sqrt(u*c + e2)`` with ``c = (1 - rho)/lr**2`` and
    ``e2 = eps/lr**2``: 8 passes over the arrays instead of 9 (same formula, rounded differently).
    ``a`` (centered average) and ``mom`` (momentum) may be None; they take the general path.
    ``scratch``: an optional float buffer shaped like ``w`` reused across steps.
    """
    c, e2 = (1 - rho) / lr ** 2, eps / lr ** 2          # float32 would overflow for a tiny lr: general path
    fast = a is None and mom is None and eps_inside and max(c, e2) < 1e38
    if _gpu(xp) and w.dtype == np.float32:
        _launch("rmsprop_update", w.size, (w, g, u, a if a is not None else NULL, mom if mom is not None else NULL,
                                           _f(lr), _f(rho), _f(eps), _f(momentum), np.int32(bool(eps_inside)),
                                           *(_scalars(np.dtype(np.float32), c, e2) if fast else (_f(0), _f(0))),
                                           np.int32(fast), _ll(w.size), _flag(halt)))
        return
    if halt is not None and halt[0]:
        return
    rho, one_minus, eps, lr, mu, c, e2 = _scalars(w.dtype, rho, 1 - rho, eps, lr, momentum, c, e2)

    def block(w, g, u, a, mom, s):
        u *= rho                      # u = rho*u + g^2  (u first: measured ~3% faster)
        s = xp.multiply(g, g, out=s) if s is not None else g * g
        u += s
        if fast:                      # s = sqrt(v + eps) / lr
            xp.multiply(u, c, out=s)
            s += e2
            xp.sqrt(s, out=s)
            xp.divide(g, s, out=s)
            w -= s
            return
        xp.multiply(u, one_minus, out=s)          # v
        if a is not None:             # centered: v_hat = v - a^2
            a *= rho
            a += g * one_minus
            s -= a * a
        if eps_inside:
            s += eps
            xp.sqrt(s, out=s)
        else:
            xp.sqrt(s, out=s)
            s += eps
        xp.divide(g, s, out=s)
        s *= lr
        if mom is not None:
            mom *= mu
            mom += s
            s = mom
        w -= s
    _blocked(block, (w, g, u, a, mom, scratch), w.size)


def adam_update(xp, w, g, m, v, alpha_t, b1, b2, eps, scratch=None, halt=None):
    """Keras Adam, in place, with the bias correction folded into ``alpha_t``."""
    if _gpu(xp) and w.dtype == np.float32:
        _launch("adam_update", w.size, (w, g, m, v, _f(alpha_t), _f(b1), _f(b2), _f(eps), _ll(w.size),
                                        _flag(halt)))
        return
    if halt is not None and halt[0]:
        return
    c1, c2, eps, alpha = _scalars(w.dtype, 1 - b1, 1 - b2, eps, alpha_t)

    def block(w, g, m, v, s):
        s = xp.subtract(g, m, out=s) if s is not None else g - m
        s *= c1
        m += s
        xp.multiply(g, g, out=s)
        s -= v
        s *= c2
        v += s
        xp.sqrt(v, out=s)
        s += eps
        xp.divide(m, s, out=s)
        s *= alpha
        w -= s
    _blocked(block, (w, g, m, v, scratch), w.size)
