"""Central finite differences in float64: the independent oracle for every op's gradient."""
import numpy as np

import gpunet


def numeric_grad(f, arrays, i, eps=1e-6):
    """d sum(f(arrays) * w) / d arrays[i] by central differences, on the host in float64."""
    x = arrays[i]
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        fp = f(arrays)
        x[idx] = old - eps
        fm = f(arrays)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def check_grad(dev, fn, *arrays, wrt=None, rtol=1e-5, atol=1e-7, seed=0):
    """Compare gpunet's gradients of ``sum(fn(*tensors) * w)`` (w random) with finite differences.

    ``arrays`` are float64 host arrays; ``wrt`` the indices to differentiate (default all).
    Returns the forward value (host) so callers can check it too.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    rng = np.random.default_rng(seed)
    out0 = fn(*[gpunet.tensor(a, dtype="float64", device=dev) for a in arrays])
    w = rng.standard_normal(out0.shape)

    def scalar(arrs):
        with gpunet.no_grad():
            out = fn(*[gpunet.tensor(a, dtype="float64", device=dev) for a in arrs])
        return float((out.numpy() * w).sum())

    ts = [gpunet.tensor(a, dtype="float64", device=dev, requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    with gpunet.GradientTape() as tape:
        out = fn(*ts)
        loss = (out * gpunet.tensor(w, dtype="float64", device=dev)).sum()
    grads = tape.gradient(loss, [ts[i] for i in wrt])
    for i, g in zip(wrt, grads):
        expected = numeric_grad(scalar, arrays, i)
        got = np.zeros_like(expected) if g is None else g.numpy()
        assert got.shape == arrays[i].shape, f"grad {i}: shape {got.shape} != {arrays[i].shape}"
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")
    return out0.numpy()
