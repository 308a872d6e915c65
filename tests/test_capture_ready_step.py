"""The capture-ready training step: after warm-up, one ``fit`` step of the chapter's network on a GPU
makes no host-device transfer, no host synchronisation and no new device array, and launches its
kernels with the same arguments (pointers and scalars) every step, as a CUDA graph would replay them;
its results are the CPU's within float tolerance. Measured on the emulated CuPy (tests/emulated_gpu),
which counts what a real GPU would pay for; the kernels' new pieces (the device step counters, the
bias gradient, the row sums) are checked against their NumPy twins, bit for bit."""
import numpy as np
import pytest

import gpunet
from gpunet import callbacks, kernels, layers, models, optimizers
from gpunet.optimizers.adam import adam_step_size
from gpunet.utils import to_categorical

BATCH, WARM_UP, MEASURED = 128, 2, 5
OPTIMIZERS = {"rmsprop": lambda: optimizers.RMSprop(), "adam": lambda: optimizers.Adam(),
              "sgd-momentum": lambda: optimizers.SGD(0.01, momentum=0.9)}


def emulated_cupy():
    import cupy
    if not getattr(cupy, "EMULATED", False):
        pytest.skip("counts transfers, syncs, allocations and launches on the emulated CuPy only")
    return cupy


def chapter_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), to_categorical(rng.integers(0, 10, n), 10)


def chapter_net(optimizer):
    gpunet.random.seed(7)
    net = models.Sequential([layers.Rescaling(1 / 255, input_shape=(784,)), layers.Dense(512, activation="relu"),
                             layers.Dense(10, activation="softmax")])
    net.compile(optimizer=OPTIMIZERS[optimizer](), loss="categorical_crossentropy", metrics=["accuracy"])
    return net


class StepMeter(callbacks.Callback):
    """At the start of each training batch (its rows already gathered): the emulator's counts and the
    number of kernel launches so far. Overriding only the batch-begin hook reads no logs."""

    def __init__(self, cupy):
        super().__init__()
        from cupy import _raw, _state
        self.cupy, self.raw, self.state, self.marks = cupy, _raw, _state, []

    def on_train_batch_begin(self, batch, logs=None):
        self.marks.append((dict(self.cupy.STATS), list(self.state.allocations), self.raw.LAUNCH_COUNT[0],
                           list(self.raw.LAUNCHES)[-60:]))


def launch_arguments(launches):
    """Each launch as what a graph would freeze: the kernel, its grid, and its C arguments."""
    return [(launch.kernel.name, launch.grid, launch.block, launch.c_args) for launch in launches]


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_a_step_after_warm_up_transfers_syncs_and_allocates_nothing(gpu_dev, optimizer):
    cupy = emulated_cupy()
    steps = WARM_UP + MEASURED + 1
    x, y = chapter_data(BATCH * steps)
    net, meter = chapter_net(optimizer), StepMeter(cupy)
    net.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[meter])
    assert net._last_fit["tapeless"] and len(meter.marks) == steps
    (stats0, alloc0, n0, _), (stats1, alloc1, n1, _) = meter.marks[WARM_UP], meter.marks[WARM_UP + MEASURED]
    assert {k: stats1[k] - stats0[k] for k in stats0} == {"host_syncs": 0, "transfers": 0, "allocations": 0}
    assert [b - a for a, b in zip(alloc0, alloc1)] == [0] * len(alloc0)       # on every emulated GPU

    # the kernels of every measured step: the same launches with the same arguments (pointers included)
    per_step = [b[2] - a[2] for a, b in zip(meter.marks[WARM_UP:], meter.marks[WARM_UP + 1:])]
    assert len(set(per_step)) == 1 and per_step[0] > 0
    k = per_step[0]
    steps_launched = [launch_arguments(mark[3][-k:]) for mark in meter.marks[WARM_UP + 1:WARM_UP + MEASURED + 1]]
    assert all(s == steps_launched[0] for s in steps_launched[1:])
    names = [name for name, *_ in steps_launched[0]]
    assert "guard_loss" in names and "sum_rows" in names and names.count("bias_grad") == 2
    if optimizer == "adam":
        assert names.count("adam_step_size") == 1 and names.count("adam_update") == 4


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_capture_ready_step_gives_the_cpu_results(gpu_dev, optimizer):
    """Two epochs (shuffled, a last smaller batch) on the GPU and on the CPU: the same weights, losses and
    accuracies within float tolerance; a second fit resumes on both from the optimizer's state."""
    x, y = chapter_data(5 * BATCH + 40, seed=1)
    results = []
    for device in (gpu_dev, gpunet.device("cpu")):
        with device:
            net = chapter_net(optimizer)
            gpunet.random.seed(11)
            first = net.fit(x, y, batch_size=BATCH, epochs=2, verbose=0).history
            second = net.fit(x[:3 * BATCH], y[:3 * BATCH], batch_size=BATCH, epochs=1, verbose=0).history
            results.append((net.get_weights(), first, second, net.optimizer.iterations))
    (w_gpu, h_gpu, h2_gpu, it_gpu), (w_cpu, h_cpu, h2_cpu, it_cpu) = results
    assert it_gpu == it_cpu == 2 * 6 + 3
    for a, b in zip(w_gpu, w_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for got, want in ((h_gpu, h_cpu), (h2_gpu, h2_cpu)):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
        np.testing.assert_allclose(got["accuracy"], want["accuracy"], atol=1e-6)


def test_adam_resumes_from_a_checkpoint_with_its_device_step_counter(gpu_dev, tmp_path):
    """The host's ``iterations`` is what a checkpoint keeps; the device counter follows it after a load
    (and after ``iterations`` is set): a resumed run gives an uninterrupted run's weights."""
    x, y = chapter_data(4 * BATCH, seed=2)
    straight = chapter_net("adam")
    gpunet.random.seed(3)
    straight.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    first = chapter_net("adam")
    gpunet.random.seed(3)
    first.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    first.save(tmp_path / "adam.npz")
    state = gpunet.random.get_state()
    resumed = models.load_model(tmp_path / "adam.npz")
    gpunet.random.set_state(state)
    resumed.fit(x, y, batch_size=BATCH, epochs=3, initial_epoch=1, verbose=0)
    assert resumed.optimizer.iterations == straight.optimizer.iterations == 12
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:overflow", "ignore:invalid value")
def test_the_loss_guard_names_the_step_from_its_device_counter(gpu_dev):
    """The deferred guard records the step id its device counter holds (set at each epoch's start,
    advanced by the kernel): the right epoch and step, also when a pass over the data ends an epoch early
    (``steps_per_epoch``: the data continues from epoch to epoch)."""
    x, y = chapter_data(5 * 16, seed=4)
    x = x.astype(np.float32)
    x[4 * 16:] = 3e38                         # batch 5 of each pass overflows (the first kernel all ones)
    net = chapter_net("rmsprop")
    net.build((None, 784))
    weights = net.get_weights()
    weights[0][...] = 1
    net.set_weights(weights)
    net.fit(x, y, batch_size=16, epochs=3, steps_per_epoch=3, shuffle=False, verbose=0)
    # epoch 1: batches 1-3; epoch 2: batches 4, 5 (the pass ends); the guard trips at epoch 2's step 2
    assert net.stop_reason.startswith("epoch 2, step 2/3: the loss is nan"), net.stop_reason
    assert net.optimizer.iterations == 4 and net.epochs_completed == 1
    guard = net._last_fit["guard"]
    assert int(guard.bad_step[0]) == 4 and int(guard.counter[0]) == 5


# -- the kernels' new pieces against their twins (the same bits) ----------------------------------------
def test_guard_counter_kernel_and_twin(gpu_dev):
    xp = gpu_dev.xp
    host = [np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, np.float32), np.full(1, 40, np.int64)]
    dev = [xp.asarray(a) for a in host]
    for loss in (1.0, 2.0, np.nan, np.inf, 3.0):
        kernels.guard_loss(np, np.asarray(loss, np.float32), *host)
        kernels.guard_loss(xp, xp.asarray(np.float32(loss)), *dev)
    for a, b in zip(dev, host):
        np.testing.assert_array_equal(gpu_dev.to_host(a), b)
    assert host[0][0] == 1 and host[1][0] == 42 and np.isnan(host[2][0]) and host[3][0] == 45


def test_adam_step_size_kernel_twin_and_host_formula(gpu_dev):
    xp = gpu_dev.xp
    opt = optimizers.Adam(0.01, beta_1=0.8, beta_2=0.995)
    t_h, a_h = np.zeros(1, np.int64), np.zeros(1, np.float32)
    t_d, a_d = xp.zeros(1, "int64"), xp.zeros(1, "float32")
    for step in range(1, 300):
        adam_step_size(np, t_h, a_h, opt.lr_t, opt.beta_1, opt.beta_2)
        adam_step_size(xp, t_d, a_d, opt.lr_t, opt.beta_1, opt.beta_2)
        opt.iterations = step
        assert t_h[0] == step and int(t_d[0]) == step
        assert a_h[0] == gpu_dev.to_host(a_d)[0] == opt.constants(np.dtype("float32"))[3]


def test_bias_grad_and_sum_rows_kernels_give_the_twins_bits(gpu_dev):
    xp, rng = gpu_dev.xp, np.random.default_rng(9)
    for rows, cols in ((128, 512), (128, 10), (37, 3), (1, 5), (0, 4)):
        gz = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
        want = kernels.dense.bias_grad(np, gz)
        np.testing.assert_array_equal(want, gz.sum(axis=0))
        out = xp.empty(cols, "float32")
        got = kernels.dense.bias_grad(xp, xp.asarray(gz), out=out)
        assert got is out and np.array_equal(gpu_dev.to_host(got).view(np.uint32), want.view(np.uint32))
    for n in (0, 1, 128, 1000):
        v, w = rng.standard_normal(n).astype(np.float32), rng.random(n).astype(np.float32)
        for weights in (None, w):
            for divisor in (1, max(n, 1)):
                want = kernels.softmax_xent.sum_rows(np, v, weights, divisor)
                got = kernels.softmax_xent.sum_rows(xp, xp.asarray(v), None if weights is None else xp.asarray(w),
                                                    divisor)
                np.testing.assert_array_equal(gpu_dev.to_host(got), want)
    hits = (rng.random(1000) < 0.3).astype(np.float32)
    assert float(kernels.softmax_xent.sum_rows(np, hits)) == hits.sum()          # counts are exact


def test_softmax_xent_in_a_workspace_allocates_nothing_after_the_first_call(gpu_dev):
    cupy = emulated_cupy()
    xp, ws = gpu_dev.xp, layers.Workspace(gpu_dev.xp)
    z, y = chapter_data(64)[1] * 3, chapter_data(64, seed=5)[1]
    zd, yd, g = xp.asarray(z), xp.asarray(y), xp.ones((), "float32")
    outs = []
    for _ in range(3):
        before = dict(cupy.STATS)
        with kernels.softmax_xent.workspace(ws):
            loss, probs = kernels.softmax_xent_forward(xp, zd, yd, False)
            dz = kernels.softmax_xent_backward(xp, probs, yd, g, False)
        outs.append((loss, probs, dz, {k: cupy.STATS[k] - before[k] for k in before}))
    assert outs[1][3] == outs[2][3] == {"host_syncs": 0, "transfers": 0, "allocations": 0}
    assert all(a is b for a, b in zip(outs[1][:3], outs[2][:3]))            # the same arrays, rewritten
    loss_t, probs_t = kernels.softmax_xent_forward(np, z, y, False)
    np.testing.assert_allclose(float(outs[2][0]), loss_t, rtol=1e-6)
    np.testing.assert_array_equal(gpu_dev.to_host(outs[2][2]),
                                  kernels.softmax_xent_backward(np, gpu_dev.to_host(outs[2][1]), y,
                                                                np.ones((), np.float32), False))
