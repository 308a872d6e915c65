"""pytest-benchmark suite, per backend: ``python -m pytest bench -q`` (add ``--benchmark-json FILE``).

GPU timings synchronize the device after every call and exclude the first calls (kernel compilation).
"""
import numpy as np
import pytest

import gpunet
from gpunet import layers, models, ops, optimizers
from gpunet.utils import to_categorical

rng = np.random.default_rng(0)
B, D, H, C = 128, 784, 512, 10


def t(dev, *shape, grad=False):
    return gpunet.tensor(rng.standard_normal(shape).astype(np.float32), device=dev, requires_grad=grad)


def test_matmul_forward(timed, dev):
    x, w = t(dev, B, D), t(dev, D, H)
    timed(lambda: x @ w)


def test_matmul_forward_backward(timed, dev):
    x, w = t(dev, B, D), t(dev, D, H, grad=True)

    def step():
        with gpunet.GradientTape() as tape:
            y = (x @ w).sum()
        return tape.gradient(y, w)
    timed(step)


@pytest.mark.parametrize("activation", ["relu", None])
def test_dense_forward_backward(timed, dev, activation):
    x, w, b = t(dev, B, D), t(dev, D, H, grad=True), t(dev, H, grad=True)

    def step():
        with gpunet.GradientTape() as tape:
            y = ops.dense(x, w, b, activation).sum()
        return tape.gradient(y, [w, b])
    timed(step)


def test_softmax_cross_entropy_forward_backward(timed, dev):
    z = t(dev, B, C, grad=True)
    y = gpunet.tensor(to_categorical(rng.integers(0, C, B), C), device=dev)

    def step():
        with gpunet.GradientTape() as tape:
            loss = ops.softmax_cross_entropy(z, y)
        return tape.gradient(loss, z)
    timed(step)


@pytest.fixture(params=["kernels", "twins"])
def cpu_path(request, monkeypatch, dev):
    """On the CPU, the fused kernels built for it or the NumPy twins (``GPUNET_CPU_KERNELS=1``/``0``): the
    before/after of gpunet/kernels/host.py. On a GPU only 'kernels'."""
    if dev.is_gpu and request.param == "twins":
        pytest.skip("a GPU runs its CUDA kernels")
    from gpunet.kernels import host
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "1" if request.param == "kernels" else "0")
    host.reset()                            # gpunet reads the setting at its next launch
    yield request.param
    monkeypatch.undo()
    host.reset()


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum", "rmsprop", "adam"])
def test_optimizer_step(timed, dev, name, cpu_path):
    opt = optimizers.SGD(momentum=0.9) if name == "sgd_momentum" else optimizers.get(name)
    params = [t(dev, D, H, grad=True), t(dev, H, grad=True), t(dev, H, C, grad=True), t(dev, C, grad=True)]
    grads = [gpunet.tensor(np.ones(p.shape, np.float32) * 1e-3, device=dev) for p in params]
    timed(lambda: opt.apply_gradients(zip(grads, params)), rounds=50)


def chapter_model(dev):
    gpunet.random.seed(0)
    net = models.Sequential(device=dev)
    net.add(layers.Rescaling(1 / 255, input_shape=(D,)))
    net.add(layers.Dense(H, activation="relu"))
    net.add(layers.Dense(C, activation="softmax"))
    net.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return net


@pytest.mark.parametrize("path", ["tapeless", "taped"])
def test_training_step(timed, dev, path, cpu_path):
    """One optimizer step of the chapter's network (``train_on_batch``: tapeless, or through the tape;
    includes its input checks and reading the loss back)."""
    net = chapter_model(dev)
    net.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"],
                jit_compile=path == "tapeless")
    x = rng.integers(0, 256, (B, D), dtype=np.uint8)
    y = to_categorical(rng.integers(0, C, B), C)
    timed(lambda: net.train_on_batch(x, y), rounds=100)


@pytest.mark.parametrize("jit_compile", ["auto", True, "auto, no replays"])
def test_epoch_of_the_chapter_network(timed, dev, jit_compile, monkeypatch):
    """One epoch, 60,000 x 784 uint8 MNIST-shaped images, batch 128, RMSprop; ``jit_compile=True``: the
    step replayed from a CUDA graph (GPU only; the products from gpunet's GEMM kernel, not cuBLAS); on the
    CPU 'auto' replays the recorded step (gpunet/trainers/step_replays.py), 'auto, no replays' is the
    ordinary step at every batch (the before/after of the replays)."""
    if jit_compile is True and not dev.is_gpu:
        pytest.skip("CUDA graphs: GPU only (on the CPU jit_compile=True trains as 'auto')")
    if jit_compile == "auto, no replays":
        if dev.is_gpu:
            pytest.skip("CPU step replays: CPU only")
        from gpunet.trainers import trainer
        monkeypatch.setattr(trainer, "step_replays_for", lambda model, run: None)
        jit_compile = "auto"
    net = chapter_model(dev)
    net.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)
    x = rng.integers(0, 256, (60000, D), dtype=np.uint8)
    y = to_categorical(rng.integers(0, C, 60000), C)
    timed(lambda: net.fit(x, y, epochs=1, batch_size=128, verbose=0), rounds=3)
