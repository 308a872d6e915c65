"""The arithmetic contract between each CUDA kernel and its NumPy twin.

One contract per fused operation: the same operations in the same order, each rounded to float32 on
its own (no FMA), with every constant computed once on the host (in double, rounded once) and
passed to the kernel. So a kernel and its twin give the same bits, NaNs counted equal whatever their
payload; softmax-cross-entropy's forward uses CUDA's expf/logf and sums in another order, and agrees
within :data:`XENT_ULP`.

Two kinds of tests:

* twin side (always run): each twin against the contract written out below as float32 array
  operations, one line per line of the kernel's comment, on edge inputs (NaN/inf/subnormal
  gradients, a momentum that rounds to 0.0f, out-of-range labels, F-ordered parameters);
* kernel against twin, parametrized with the ``dev`` fixture: the ``cupy`` case runs the real ``.cu``
  kernels (a GPU, or the emulated CuPy) and compares ``dev.xp`` results with the NumPy twin.
"""
import contextlib
import types

import numpy as np
import pytest

import gpunet
from gpunet import kernels, ops, optimizers
from gpunet.kernels import cuda, host
from gpunet.optimizers.optimizer import kernel_ready
from subnormals import flushes, flushing

F = np.float32
F32 = np.dtype("float32")
XENT_ULP = 16        # softmax-xent forward: expf/logf (CUDA: <= 2 ULP each) and sums of 10 terms in another order

EDGE = np.array([0.0, -0.0, 1e-40, -1e-40, 1e-45, -1e-45, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-30, -1e20,
                 1.0, -1.0, 0.5], F)


@pytest.fixture(autouse=True)
def _quiet_float_warnings():
    with np.errstate(all="ignore"):
        yield


def same_bits(a, b) -> bool:
    """Equal float32 bits (so -0 != +0), any NaN equal to any NaN (CUDA's and x86's NaNs differ)."""
    a, b = np.asarray(a, F), np.asarray(b, F)
    assert a.shape == b.shape, (a.shape, b.shape)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


def assert_same_bits(a, b, what=""):
    if not same_bits(a, b):
        a, b = np.asarray(a, F), np.asarray(b, F)
        bad = np.flatnonzero((a.view(np.uint32) != b.view(np.uint32)) & ~(np.isnan(a) & np.isnan(b)))
        pytest.fail(f"{what}: {bad.size} elements differ, first at {bad[:5]}: {a.ravel()[bad[:5]]} vs {b.ravel()[bad[:5]]}")


def ulp_distance(a, b) -> int:
    """The largest distance in float32 steps between ``a`` and ``b`` (finite values)."""
    def ordered(x):
        i = np.asarray(x, F).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return int(np.max(np.abs(ordered(a) - ordered(b)), initial=0))


def gradients(n, steps, seed=0):
    """``steps`` float32 gradients of ``n`` values: every edge value (shifted each step) and random values
    of magnitudes 1e-20 to 1e4."""
    r = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        g = (r.standard_normal(n) * 10.0 ** r.integers(-20, 5, n)).astype(F)
        g[:EDGE.size] = EDGE
        g[EDGE.size:2 * EDGE.size] = np.roll(EDGE, t + 1)
        out.append(g)
    return out


def start_weights(n, seed=1):
    w = np.random.default_rng(seed).standard_normal(n).astype(F)
    w[-EDGE.size:] = EDGE
    return w


# ------------------------------------------------------------------ the optimizer contracts, written out
def sgd_contract(w, g, m, lr, mu, has_momentum, nesterov, decay):
    """sgd.cu, line by line (float32 arrays and scalars: each operation rounds once)."""
    if decay:
        w = w - w * decay
    s = g * lr
    if not has_momentum:
        return w - s, m
    m = m * mu - s
    return (w + (m * mu - s) if nesterov else w + m), m


def rmsprop_contract(w, g, u, a, mom, rho, one_minus_rho, eps, lr, mu, c, e2, fast, eps_inside, decay):
    """rmsprop.cu, line by line."""
    if decay:
        w = w - w * decay
    u = u * rho + g * g
    if fast:
        return w - g / np.sqrt(u * c + e2), u, a, mom
    v = u * one_minus_rho
    if a is not None:
        a = a * rho + g * one_minus_rho
        v = v - a * a
    den = np.sqrt(v + eps) if eps_inside else np.sqrt(v) + eps
    s = (g / den) * lr
    if mom is not None:
        mom = mom * mu + s
        s = mom
    return w - s, u, a, mom


def adam_contract(w, g, m, v, v_hat, c1, c2, eps, alpha_t, decay):
    """adam.cu, line by line (np.maximum(v_hat, v): v_hat where v_hat > v or NaN, else v)."""
    if decay:
        w = w - w * decay
    m = m + (g - m) * c1
    v = v + (g * g - v) * c2
    step_v = v
    if v_hat is not None:
        v_hat = np.where((v_hat > v) | np.isnan(v_hat), v_hat, v)
        step_v = v_hat
    return w - (m / (np.sqrt(step_v) + eps)) * alpha_t, m, v, v_hat


def contract_step(opt, w, g, slots, decay):
    """One step of ``opt``'s contract from host arrays; returns ``(w, slots)``."""
    s = dict(slots)
    dec = F(decay) if decay else None
    if isinstance(opt, optimizers.SGD):
        lr, mu = opt.constants(F32)
        w, m = sgd_contract(w, g, s.get("momentum"), lr, mu, bool(opt.momentum), opt.nesterov, dec)
        if "momentum" in s:
            s["momentum"] = m
    elif isinstance(opt, optimizers.RMSprop):
        rho, one_minus, eps, lr, mu, c, e2, fast = opt.constants(F32)
        w, s["velocity"], a, mom = rmsprop_contract(w, g, s["velocity"], s.get("average_gradient"), s.get("momentum"),
                                                    rho, one_minus, eps, lr, mu, c, e2, fast, opt.eps_inside_sqrt, dec)
        s.update({k: x for k, x in (("average_gradient", a), ("momentum", mom)) if x is not None})
    else:
        c1, c2, eps, alpha = opt.constants(F32)
        w, s["momentum"], s["velocity"], v_hat = adam_contract(w, g, s["momentum"], s["velocity"],
                                                               s.get("velocity_hat"), c1, c2, eps, alpha, dec)
        if v_hat is not None:
            s["velocity_hat"] = v_hat
    return w, s


OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "sgd-momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
    "sgd-nesterov": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "sgd-tiny-momentum": lambda: optimizers.SGD(0.1, momentum=1e-46),          # rounds to 0.0f, still momentum
    "sgd-decay": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.04),
    "rmsprop": lambda: optimizers.RMSprop(),                                    # the plain ("fast") form
    "rmsprop-decay": lambda: optimizers.RMSprop(weight_decay=0.004),
    "rmsprop-centered": lambda: optimizers.RMSprop(centered=True),
    "rmsprop-momentum": lambda: optimizers.RMSprop(momentum=0.9),
    "rmsprop-tiny-momentum": lambda: optimizers.RMSprop(momentum=1e-46),
    "rmsprop-eps-outside": lambda: optimizers.RMSprop(eps_inside_sqrt=False),
    "rmsprop-all": lambda: optimizers.RMSprop(0.01, rho=0.8, centered=True, momentum=0.5, eps_inside_sqrt=False,
                                              weight_decay=0.1),
    "rmsprop-huge-lr": lambda: optimizers.RMSprop(1e20),                       # c, e2 subnormal: general form
    "adam": lambda: optimizers.Adam(),
    "adam-decay": lambda: optimizers.Adam(weight_decay=0.004),
    "adam-amsgrad": lambda: optimizers.Adam(amsgrad=True),
    "adam-amsgrad-decay": lambda: optimizers.Adam(0.01, beta_1=0.5, beta_2=0.75, amsgrad=True, weight_decay=0.1),
}
STEPS = 4


def start_slots(opt, n, seed=2):
    """Slot values to start from: zeros for the first slot, random non-negative values for the others (so
    that AMSGrad's max and the centered variance see both orders)."""
    r = np.random.default_rng(seed)
    return {name: (np.zeros(n, F) if i == 0 else np.abs(r.standard_normal(n)).astype(F) * F(0.01))
            for i, name in enumerate(opt.slot_names)}


def run_optimizer(make, dev, n=257, steps=STEPS, shape=None):
    """``steps`` updates through ``apply`` (the dispatch of real training) of a parameter on ``dev``;
    returns the host weights and slots after each step."""
    opt = make()
    w0 = start_weights(n)
    p = gpunet.tensor(w0 if shape is None else w0.reshape(shape), device=dev, requires_grad=True)
    for name, value in start_slots(opt, n).items():
        opt.slots_of(p)[name][...] = dev.asarray(value.reshape(p.shape))
    out = []
    for g in gradients(n, steps):
        opt.apply([dev.asarray(g.reshape(p.shape))], [p])
        out.append((dev.to_host(p.data).ravel().copy(),
                    {k: dev.to_host(v).ravel().copy() for k, v in opt.slots_of(p).items()}))
    return out


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_twins_follow_the_contract(name):
    """The twin, step by step, gives the bits of the contract written out above (edge gradients included)."""
    make = OPTIMIZERS[name]
    opt, n = make(), 257
    w, slots = start_weights(n), start_slots(make(), n)
    for step, (got_w, got_slots) in enumerate(run_optimizer(make, gpunet.device("cpu"), n)):
        opt.iterations = step + 1
        decay = opt.weight_decay * opt.lr_t if opt.weight_decay else 0.0
        w, slots = contract_step(opt, w, gradients(n, STEPS)[step], slots, decay)
        assert_same_bits(got_w, w, f"{name} step {step + 1}: weights")
        for k in slots:
            assert_same_bits(got_slots[k], slots[k], f"{name} step {step + 1}: slot {k}")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_kernels_give_the_twins_bits(dev, name):
    """The kernel (``dev`` = cupy) and the NumPy twin: the same bits after every step, slots included."""
    make = OPTIMIZERS[name]
    with flushing(flushes(dev)):        # the twin as a kernel computes: float32 subnormals flushed
        twin = list(run_optimizer(make, gpunet.device("cpu")))
    for step, ((w_k, s_k), (w_t, s_t)) in enumerate(zip(run_optimizer(make, dev), twin)):
        assert_same_bits(w_k, w_t, f"{name} step {step + 1}: weights")
        for k in s_t:
            assert_same_bits(s_k[k], s_t[k], f"{name} step {step + 1}: slot {k}")


def test_the_constants_are_computed_in_double_and_rounded_once():
    adam, rms = optimizers.Adam(beta_1=0.9, beta_2=0.999), optimizers.RMSprop(rho=0.9)
    adam.iterations = 1
    c1, c2, eps, alpha = adam.constants(F32)
    assert (c1, c2, eps) == (F(1 - 0.9), F(1 - 0.999), F(1e-7)) and alpha == F(1e-3 * np.sqrt(1 - 0.999) / (1 - 0.9))
    assert c2 != F(1) - F(0.999)                      # what 1.0f - b2 on the device gave (0.00099998713)
    rho, one_minus, *_, fast = rms.constants(F32)
    assert one_minus == F(1 - 0.9) and one_minus != F(1) - rho and fast
    for opt in (optimizers.RMSprop(centered=True), optimizers.RMSprop(momentum=1e-46),
                optimizers.RMSprop(eps_inside_sqrt=False), optimizers.RMSprop(1e20), optimizers.RMSprop(1e-25)):
        assert opt.constants(F32)[-1] is False         # the general form (c, e2 would be 0, subnormal or inf)


def test_a_tiny_momentum_still_updates_its_slot():
    """momentum=1e-46 passes validation and rounds to 0.0f: m = m*0 - g*lr is still written, as the twin
    does (the kernel takes has_momentum from the host instead of testing mu == 0.0f)."""
    opt = optimizers.SGD(0.5, momentum=1e-46)
    assert opt.constants(F32)[1] == 0 and opt.slot_names == ("momentum",)
    p = gpunet.tensor(np.zeros(4, F), requires_grad=True)
    opt.apply([np.array([1.0, -2.0, np.inf, np.nan], F)], [p])
    assert_same_bits(opt.slots_of(p)["momentum"], np.array([-0.5, 1.0, -np.inf, np.nan], F), "momentum slot")
    assert_same_bits(p.numpy(), np.array([-0.5, 1.0, -np.inf, np.nan], F), "weights")


def test_weight_decay_applies_where_its_float32_is_not_zero(dev):
    """weight_decay * lr below float32's range is no decay on either side (an inf weight stays inf)."""
    p = gpunet.tensor(np.array([np.inf, -0.0, 1.0], F), device=dev, requires_grad=True)
    optimizers.SGD(1e-20, weight_decay=1e-30).apply([dev.asarray(np.ones(3, F))], [p])
    assert_same_bits(p.numpy(), np.array([np.inf, -1e-20, 1.0], F), "weights")


# ------------------------------------------------------------------ layouts: only flat C-ordered buffers reach a kernel
@pytest.fixture
def forced_gpu(monkeypatch):
    """The GPU branches run with NumPy arrays standing in for device arrays; launches are recorded (the
    CPU's parameters take the twins: GPUNET_CPU_KERNELS=0)."""
    launched = []
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    host.reset()                    # the mode is read at the next launch
    monkeypatch.setattr(cuda, "is_gpu", lambda xp: True)
    monkeypatch.setattr(cuda.Source, "launch", lambda source, name, n, args: launched.append(name))
    return launched


def stand_in_param(data):
    """A parameter whose device claims to be a GPU, holding exactly ``data`` (its layout kept)."""
    p = gpunet.tensor(data, requires_grad=True)
    p.data = data.copy(order="K")
    p.device = types.SimpleNamespace(is_gpu=True, xp=np, context=contextlib.nullcontext())
    return p


@pytest.mark.parametrize("make", [OPTIMIZERS["sgd-nesterov"], OPTIMIZERS["rmsprop"], OPTIMIZERS["rmsprop-all"],
                                  OPTIMIZERS["adam-amsgrad-decay"]])
def test_an_f_ordered_weight_takes_the_twin_on_the_gpu_branch(forced_gpu, make):
    """``gpunet.tensor(W.T)`` on a GPU is F-ordered: no kernel (it would pair w[i] with the transposed
    gradient's g[i]); the twin's array operations update it, giving the C-ordered parameter's values."""
    W = start_weights(48).reshape(6, 8)
    grads = [g.reshape(6, 8).T for g in gradients(48, 3)]
    f_param, c_param = stand_in_param(np.asfortranarray(W.T)), gpunet.tensor(W.T.copy(), requires_grad=True)
    assert f_param.data.flags.f_contiguous and not f_param.data.flags.c_contiguous
    f_opt, c_opt = make(), make()
    for g in grads:
        f_opt.apply([np.asfortranarray(g)], [f_param])
        c_opt.apply([g.copy()], [c_param])
    assert forced_gpu == []
    assert_same_bits(f_param.data, c_param.data, "F-ordered weights")
    c_param_gpu = stand_in_param(W.T.copy())              # the same weights C-ordered: the kernel runs
    make().apply([grads[0].copy()], [c_param_gpu])
    updates = [name for name in forced_gpu if name != "adam_step_size"]   # Adam computes alpha_t first
    assert len(updates) == 1 and updates[0].endswith("_update")


def test_update_step_launches_only_for_flat_float32_buffers_of_one_shape(forced_gpu):
    w, g = np.zeros((3, 4), F), np.ones((3, 4), F)
    assert kernel_ready(g, w, {"m": np.zeros((3, 4), F)})
    assert not kernel_ready(g, np.asfortranarray(w), {"m": np.zeros((3, 4), F)})       # F-ordered weight
    assert not kernel_ready(np.asfortranarray(g), w, {})                                 # F-ordered gradient
    assert not kernel_ready(g, w, {"m": np.asfortranarray(np.zeros((3, 4), F))})         # F-ordered slot
    assert not kernel_ready(g.astype(np.float64), w, {})                                 # float64 gradient
    assert not kernel_ready(g.reshape(12), w, {})                                        # another shape
    assert not kernel_ready(g, w, {"m": np.zeros((4, 3), F)})
    assert not kernel_ready(np.ones((3, 8), F)[:, ::2], w, {})                           # a strided view
    opt = optimizers.RMSprop()
    p = stand_in_param(w)
    opt.update_step(np.asfortranarray(g), p, opt.slots_of(p))          # the twin, whose ufuncs take any strides
    assert forced_gpu == []
    opt.update_step(g, p, opt.slots_of(p))
    assert forced_gpu == ["rmsprop_update"]


def test_an_f_ordered_parameter_on_the_device_matches_the_twin(dev):
    """``gpunet.tensor(W.T, requires_grad=True)`` (F-ordered on a GPU) updated like its C-ordered copy."""
    W = start_weights(48).reshape(6, 8)
    for make in (OPTIMIZERS["sgd-nesterov"], OPTIMIZERS["rmsprop"], OPTIMIZERS["adam-amsgrad-decay"]):
        p = gpunet.tensor(W.T, device=dev, requires_grad=True)
        q = gpunet.tensor(W.T.copy(), device="cpu", requires_grad=True)
        po, qo = make(), make()
        for g in gradients(48, 3):
            po.apply([dev.asarray(g.reshape(6, 8).T)], [p])
            qo.apply([g.reshape(6, 8).T.copy()], [q])
        assert p.data.flags.f_contiguous or not dev.is_gpu
        assert_same_bits(p.numpy(), q.numpy(), "weights")


# ------------------------------------------------------------------ dense: bias + ReLU, the ReLU backward
def relu_inputs():
    r = np.random.default_rng(3)
    g = r.standard_normal((8, EDGE.size)).astype(F)
    y = np.maximum(r.standard_normal((8, EDGE.size)).astype(F), 0)
    g[0], g[1] = EDGE, EDGE[::-1]
    y[0, :] = 0.0
    y[2], y[3] = EDGE, -EDGE
    return g, y


def test_relu_backward_twin_is_a_multiplication():
    """``g * (y > 0)``: where y <= 0 an inf/NaN gradient gives NaN and a negative one -0 (not 0)."""
    g = np.array([np.inf, -np.inf, np.nan, -1.0, 1.0, -0.0, 2.0, -1e-40], F)
    y = np.array([0.0, -1.0, 0.0, 0.0, -0.0, 0.0, np.nan, 0.0], F)
    assert_same_bits(kernels.act_backward(np, g, y, "relu"),
                     np.array([np.nan, np.nan, np.nan, -0.0, 0.0, -0.0, 0.0, -0.0], F), "relu backward")
    assert_same_bits(kernels.act_backward(np, g, np.ones(8, F), "relu"), g, "relu backward, y > 0")


def test_bias_act_twin_follows_np_maximum():
    """relu(v) = np.maximum(v, 0): v where v > 0 or v is NaN, else +0 (-0 gives +0); no bias, no addition."""
    z = np.array([[-0.0, 0.0, np.nan, -1.0, 1e-40, -np.inf]], F)
    assert_same_bits(kernels.bias_act(np, z.copy(), None, "relu"), [[0.0, 0.0, np.nan, 0.0, 1e-40, 0.0]], "relu")
    assert_same_bits(kernels.bias_act(np, z.copy(), None, None), z, "linear, no bias: -0 stays -0")


def test_dense_kernels_give_the_twins_bits(dev):
    xp = dev.xp
    g, y = relu_inputs()
    with flushing(flushes(dev)):
        want = kernels.act_backward(np, g, y, "relu")
    assert_same_bits(dev.to_host(kernels.act_backward(xp, dev.asarray(g), dev.asarray(y), "relu")),
                     want, "relu backward")
    gf = np.asfortranarray(g)                                   # an F-ordered gradient
    assert_same_bits(dev.to_host(kernels.act_backward(xp, dev.asarray(gf), dev.asarray(y), "relu")),
                     want, "relu backward, F-ordered gradient")
    b = np.random.default_rng(4).standard_normal(EDGE.size).astype(F)
    b[:4] = [-0.0, 0.0, np.nan, np.inf]
    for bias in (None, b):
        for act in (None, "relu"):
            got = kernels.bias_act(xp, dev.asarray(g.copy()), None if bias is None else dev.asarray(bias), act)
            with flushing(flushes(dev)):
                want = kernels.bias_act(np, g.copy(), bias, act)
            assert_same_bits(dev.to_host(got), want, f"bias_act {act}")


# ------------------------------------------------------------------ softmax-cross-entropy
COLS = 10
BAD_LABELS = {3: -1, 7: COLS, 9: 2 ** 40, 11: -(2 ** 62)}


def xent_inputs(rows=37, bad=False):
    r = np.random.default_rng(6)
    z = (r.standard_normal((rows, COLS)) * 5).astype(F)
    labels = r.integers(0, COLS, rows)
    if bad:
        for row, label in BAD_LABELS.items():
            labels[row] = label
    return z, labels, r.random(rows).astype(F)


@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_twin_gives_nan_rows_for_out_of_range_labels(weighted):
    """Labels -1, cols, 2**40, -2**62: no IndexError (nor -1 silently picking the last class); the loss is
    NaN (the loss guard stops training), the gradient NaN on those rows only."""
    z, labels, w = xent_inputs(bad=True)
    sw = w if weighted else None
    loss, probs = kernels.softmax_xent_forward(np, z, labels, True, sw)
    assert np.isnan(loss)
    dz = kernels.softmax_xent_backward(np, probs, labels, np.asarray(1.0, F), True, sw)
    assert sorted(np.flatnonzero(np.isnan(dz).any(axis=1))) == sorted(BAD_LABELS)
    assert np.isnan(dz[list(BAD_LABELS)]).all()
    good = np.setdiff1d(np.arange(len(labels)), list(BAD_LABELS))
    want = probs.copy()
    want[np.arange(len(labels)), np.clip(labels, 0, COLS - 1)] -= 1
    want *= F(1) / F(len(labels))
    if weighted:
        want *= w[:, None]
    assert_same_bits(dz[good], want[good], "the other rows' gradients")


def test_out_of_range_labels_through_ops_softmax_cross_entropy(dev):
    """``gpunet.ops.softmax_cross_entropy`` does not validate labels: a NaN loss and NaN gradient rows
    (kernel and twin alike), the other rows' gradients finite."""
    z, labels, _ = xent_inputs(bad=True)
    zt = gpunet.tensor(z, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        loss = ops.softmax_cross_entropy(zt, gpunet.tensor(labels, device=dev), sparse=True)
    grad = tape.gradient(loss, zt).numpy()
    assert np.isnan(loss.item())
    assert sorted(np.flatnonzero(np.isnan(grad).any(axis=1))) == sorted(BAD_LABELS)
    assert np.isfinite(np.delete(grad, list(BAD_LABELS), axis=0)).all()


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_xent_kernels_match_the_twins(dev, sparse, weighted):
    """Forward within XENT_ULP (expf/logf, summation order); backward, from the same probabilities, bit for
    bit; out-of-range labels give the same NaN rows."""
    xp = dev.xp
    for bad in ((False, True) if sparse else (False,)):
        z, labels, w = xent_inputs(bad=bad)
        y = labels if sparse else np.eye(COLS, dtype=F)[labels]
        sw = w if weighted else None
        loss_t, probs_t = kernels.softmax_xent_forward(np, z, y, sparse, sw)
        loss_k, probs_k = kernels.softmax_xent_forward(xp, dev.asarray(z), dev.asarray(y), sparse,
                                                       None if sw is None else dev.asarray(sw))
        probs_k, loss_k = dev.to_host(probs_k), float(loss_k)
        assert ulp_distance(probs_k, probs_t) <= XENT_ULP
        if bad:
            assert np.isnan(loss_k) and np.isnan(loss_t)
        else:
            assert ulp_distance(loss_k, loss_t) <= XENT_ULP, (loss_k, float(loss_t))
        g = np.asarray(0.75, F)
        dz_t = kernels.softmax_xent_backward(np, probs_t, y, g, sparse, sw)
        dz_k = kernels.softmax_xent_backward(xp, dev.asarray(probs_t), dev.asarray(y), dev.asarray(g), sparse,
                                             None if sw is None else dev.asarray(sw))
        assert_same_bits(dev.to_host(dz_k), dz_t, f"backward (bad labels: {bad})")
