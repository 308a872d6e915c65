"""A model on gpu:1 trains, evaluates and predicts with everything it allocates on GPU 1: weights,
optimizer slots, the loss guard's flags, work arrays, kernel launches (CuPy allocates and launches on
the *current* GPU, so gpunet must make the model's GPU current). Runs on the emulated CuPy in CI and on
any machine with two GPUs."""
import gc

import numpy as np
import pytest

import gpunet
from gpunet import layers, models
from gpunet.utils import to_categorical


def _two_gpus():
    try:
        return gpunet.gpu_available() and gpunet.backend.cuda_device_count() >= 2
    except gpunet.DeviceUnavailableError:
        return False


pytestmark = pytest.mark.skipif(not _two_gpus(), reason="needs two GPUs (real or emulated)")


def _allocations_on(index):
    """New buffers ever made on GPU ``index`` (the emulator counts them; None on a real GPU)."""
    import cupy
    return cupy._state.allocations[index] if getattr(cupy, "EMULATED", False) else None


def _net(device, optimizer):
    gpunet.random.seed(5)
    net = models.Sequential([layers.Rescaling(1 / 255, input_shape=(20,)), layers.Dense(16, activation="relu"),
                             layers.Dropout(0.2), layers.Dense(4, activation="softmax")], device=device)
    net.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return net


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam", "sgd"])
def test_a_model_on_gpu_1_lives_and_computes_there(optimizer):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 20), dtype=np.uint8)
    y = to_categorical(rng.integers(0, 4, 96), 4)
    cpu = _net("cpu", optimizer)
    h_cpu = cpu.fit(x, y, epochs=2, batch_size=16, verbose=0)
    gc.collect()
    before = gpunet.memory_info("gpu:0")["used_bytes"], _allocations_on(0)
    with gpunet.device("gpu:0"):                 # whatever is current, the model's GPU does the work
        gpu = _net("gpu:1", optimizer)
        h_gpu = gpu.fit(x, y, epochs=2, batch_size=16, verbose=0)
        evaluated = gpu.evaluate(x, y, verbose=0)
        predicted = gpu.predict(x)
    gc.collect()
    assert gpunet.memory_info("gpu:0")["used_bytes"] <= before[0], "something stayed allocated on GPU 0"
    assert _allocations_on(0) in (before[1], None), "something was allocated on GPU 0"
    for w in gpu.weights:
        assert w.data.device.id == 1
    for slots in gpu.optimizer._slots.values():
        assert all(s.device.id == 1 for s in slots.values())
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(evaluated, cpu.evaluate(x, y, verbose=0), rtol=1e-5)
    np.testing.assert_allclose(predicted, cpu.predict(x), rtol=1e-4, atol=1e-6)


def test_tensors_move_between_gpus_and_ops_run_on_their_gpu():
    a = gpunet.tensor([1.0, 2.0, 3.0], device="gpu:1", requires_grad=True)
    assert a.data.device.id == 1
    with gpunet.GradientTape() as tape:
        b = a.to("gpu:0")
        y = (b * b).sum().to("gpu:1") + (a * 3).sum()
    assert b.data.device.id == 0
    g = tape.gradient(y, a)
    assert g.data.device.id == 1
    np.testing.assert_allclose(g.numpy(), [5.0, 7.0, 9.0])
    with pytest.raises(gpunet.DeviceMismatchError, match="gpu and gpu:1|gpu:1 and gpu"):
        a + b


def test_a_hand_written_loop_on_gpu_1_keeps_its_optimizer_state_there():
    w = gpunet.tensor(np.ones(4, np.float32), device="gpu:1", requires_grad=True)
    opt = gpunet.optimizers.Adam(0.1, global_clipnorm=1.0)
    for _ in range(3):
        with gpunet.GradientTape() as tape:
            loss = (w * w).sum()
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))
    assert all(s.device.id == 1 for s in opt._slots[id(w)].values()) and w.data.device.id == 1
    ref = gpunet.tensor(np.ones(4, np.float32), requires_grad=True)
    ref_opt = gpunet.optimizers.Adam(0.1, global_clipnorm=1.0)
    for _ in range(3):
        with gpunet.GradientTape() as tape:
            loss = (ref * ref).sum()
        ref_opt.apply_gradients(zip(tape.gradient(loss, [ref]), [ref]))
    np.testing.assert_allclose(w.numpy(), ref.numpy(), rtol=1e-6)
