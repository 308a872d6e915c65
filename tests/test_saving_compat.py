"""Files written by the previous gpunet (e1f4b52, before the optimizer slots took Keras' names and
save_weights took the checkpoint's keys) still load, and training on from them gives what that
version gave. ``tests/data/legacy/make_legacy.py``, run with that version, wrote every file here."""
import pathlib

import numpy as np
import pytest

from gpunet import layers, models, optimizers

LEGACY = pathlib.Path(__file__).parent / "data" / "legacy"


def _data():
    with np.load(LEGACY / "data.npz") as f:
        return f["x"], f["y"]


@pytest.mark.parametrize("name", ["rmsprop", "adam", "rmsprop-centered"])
def test_an_old_checkpoint_resumes_exactly_as_the_old_version_did(name):
    x, y = _data()
    model = models.load_model(LEGACY / f"{name}-checkpoint.npz")
    assert model.epochs_completed == 2 and model.optimizer.iterations == 6
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, initial_epoch=2)
    with np.load(LEGACY / f"{name}-resumed-weights.npz") as f:
        want = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
    for got, expected in zip(model.get_weights(), want):
        np.testing.assert_array_equal(got, expected)


def test_old_slot_names_become_keras_names():
    with np.load(LEGACY / "rmsprop-checkpoint.npz") as f:
        scaled = f["slot/0/scaled_velocity"]
    model = models.load_model(LEGACY / "rmsprop-checkpoint.npz")
    state = model.optimizer.get_state(model.weights)
    assert sorted(k.split("/")[1] for k in state if "/" in k) == ["velocity"] * 4
    np.testing.assert_array_equal(state["0/velocity"], scaled.astype(np.float64) * (1 - 0.9))
    adam = models.load_model(LEGACY / "adam-checkpoint.npz")
    with np.load(LEGACY / "adam-checkpoint.npz") as f:
        m = f["slot/2/m"]
    state = adam.optimizer.get_state(adam.weights)
    assert {k.split("/")[1] for k in state if "/" in k} == {"momentum", "velocity"}
    np.testing.assert_array_equal(state["2/momentum"], m)


def test_an_old_weights_file_loads():
    net = models.Sequential([layers.Dense(5, activation="relu", input_shape=(6,)), layers.Dropout(0.25),
                             layers.Dense(3, activation="softmax")])
    net.load_weights(LEGACY / "weights-file.npz")
    with np.load(LEGACY / "weights-file.npz") as f:
        want = [f[k] for k in sorted(f.files)]
    for got, expected in zip(net.get_weights(), want):
        np.testing.assert_array_equal(got, expected)


def test_rmsprop_state_is_keras_velocity_and_converts_back_exactly():
    """get_state gives Keras' v (closed form below, float64); set_state of it restores the stored slot bit for bit."""
    import gpunet
    rng = np.random.default_rng(4)
    w = gpunet.tensor(rng.standard_normal(1000).astype(np.float32), requires_grad=True)
    grads = [rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-15, 15, 1000) for _ in range(3)]
    opt = optimizers.RMSprop(rho=0.7)
    v = np.zeros(1000)
    for g in grads:
        opt.apply_gradients([(gpunet.tensor(g), w)])
        v = 0.7 * v + 0.3 * g.astype(np.float64) ** 2
    state = opt.get_state([w])
    np.testing.assert_allclose(state["0/velocity"], v, rtol=1e-5)
    stored = opt.slots_of(w)["velocity"].copy()
    other = optimizers.RMSprop(rho=0.7)
    other.set_state([w], state)
    np.testing.assert_array_equal(other.slots_of(w)["velocity"], stored)
