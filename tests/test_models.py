"""Sequential end to end: the chapter's listing, shapes, summary, save/load, callbacks, repeatability."""
import io
import os

import numpy as np
import pytest

import gpunet
from gpunet import callbacks, layers, models
from gpunet.datasets import mnist
from gpunet.utils import to_categorical


def chapter_network(device=None):
    network = models.Sequential(device=device)
    network.add(layers.Dense(512, activation='relu', input_shape=(28 * 28,)))
    network.add(layers.Dense(10, activation='softmax'))
    network.compile(optimizer='rmsprop', loss='categorical_crossentropy', metrics=['accuracy'])
    return network


def prepared_sample():
    (train_images, train_labels), (test_images, test_labels) = mnist.load_sample()
    train_images = train_images.reshape((8000, 28 * 28)).astype('float32') / 255
    test_images = test_images.reshape((2000, 28 * 28)).astype('float32') / 255
    return (train_images, to_categorical(train_labels)), (test_images, to_categorical(test_labels))


def test_chapter_listing_on_real_digits(dev, capsys):
    """Listings 2.2-2.5 unchanged, 1 epoch on 8,000 real MNIST digits: > 85% test accuracy."""
    (x, y), (xt, yt) = prepared_sample()
    network = chapter_network()
    history = network.fit(x, y, epochs=1, batch_size=128)
    test_loss, test_acc = network.evaluate(xt, yt)
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "63/63" in out and "accuracy:" in out and "loss:" in out
    assert test_acc > 0.85 and test_loss < 0.5
    assert history.history["accuracy"][0] > 0.8 and len(history.history["loss"]) == 1


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_chapter_network_on_full_fashion_mnist(dev):
    from gpunet.datasets import fashion_mnist
    (x, y), (xt, yt) = fashion_mnist.load_data()
    network = chapter_network()
    network.fit(x.reshape(60000, 784).astype("float32") / 255, to_categorical(y), epochs=1, batch_size=128, verbose=0)
    _, acc = network.evaluate(xt.reshape(10000, 784).astype("float32") / 255, to_categorical(yt), verbose=0)
    assert acc > 0.80


def test_shapes_of_fit_evaluate_predict(dev):
    rng = np.random.default_rng(0)
    x = rng.random((100, 784), dtype=np.float32)
    y = to_categorical(rng.integers(0, 10, 100), 10)
    net = chapter_network()
    h = net.fit(x, y, epochs=3, batch_size=32, verbose=0, validation_split=0.2)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in h.history.values()) and h.epoch == [0, 1, 2]
    res = net.evaluate(x, y, verbose=0)
    assert isinstance(res, list) and len(res) == 2 and 0 <= res[1] <= 1
    p = net.predict(x, batch_size=7)
    assert isinstance(p, np.ndarray) and p.shape == (100, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_evaluate_matches_direct_computation(dev):
    rng = np.random.default_rng(1)
    x = rng.random((50, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 50)
    net = chapter_network()
    p = net.predict(x).astype(np.float64)
    loss, acc = net.evaluate(x, to_categorical(labels), batch_size=16, verbose=0)
    np.testing.assert_allclose(loss, -np.log(p[np.arange(50), labels]).mean(), rtol=1e-5)
    assert acc == pytest.approx((p.argmax(1) == labels).mean())


def test_summary_counts(capsys):
    net = chapter_network()
    net.summary()
    out = capsys.readouterr().out
    assert "(None, 512)" in out and "401,920" in out and "5,130" in out and "Total params: 407,050" in out
    assert net.count_params() == 401920 + 5130


def test_save_load_round_trip(dev, tmp_path):
    net = chapter_network()
    path = tmp_path / "w.npz"
    net.save_weights(path)
    other = chapter_network()
    assert not np.array_equal(other.get_weights()[0], net.get_weights()[0])
    other.load_weights(path)
    for a, b in zip(net.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [f for f in os.listdir(tmp_path)] == ["w.npz"]   # no temporary files left behind


def test_load_weights_of_another_architecture_changes_nothing(tmp_path):
    small = models.Sequential([layers.Dense(16, activation="relu", input_shape=(784,)), layers.Dense(10)])
    small.save_weights(tmp_path / "small.npz")
    net = chapter_network()
    before = net.get_weights()
    with pytest.raises(gpunet.ShapeError, match=r"'dense_?\d*/kernel'.*expects shape \(784, 512\).*\(784, 16\)"):
        net.load_weights(tmp_path / "small.npz")
    for a, b in zip(before, net.get_weights()):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        net.load_weights(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        net.load_weights(tmp_path / "missing.npz")


def test_flatten_dropout_activation_and_lazy_build(dev):
    rng = np.random.default_rng(2)
    x = rng.random((64, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    net = models.Sequential([layers.Flatten(), layers.Dense(32), layers.Activation("tanh"), layers.Dropout(0.5),
                             layers.Dense(10, activation="softmax")])
    assert not net.built
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"])
    net.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert net.built and net.layers[1].kernel.shape == (784, 32)
    p1, p2 = net.predict(x), net.predict(x)
    np.testing.assert_array_equal(p1, p2)   # dropout inactive at inference


def test_dropout_scales_kept_units():
    d = layers.Dropout(0.25)
    x = gpunet.tensor(np.ones((200, 50), np.float32))
    y = d(x, training=True).numpy()
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8 and np.allclose(y[kept], 1 / 0.75)
    assert d(x, training=False) is x


def test_binary_and_regression_models(dev):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    yb = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    net = models.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(1, activation="sigmoid")])
    net.compile(optimizer=gpunet.optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])
    h = net.fit(x, yb, epochs=20, batch_size=32, verbose=0)
    assert h.history["accuracy"][-1] > 0.9
    yr = x @ np.array([1.0, -1.0, 2.0, 0.0], np.float32)
    reg = models.Sequential([layers.Dense(1, input_shape=(4,))])
    reg.compile(optimizer=gpunet.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    h = reg.fit(x, yr, epochs=30, batch_size=32, verbose=0)
    assert h.history["mae"][-1] < 0.05 and h.history["loss"][-1] < h.history["loss"][0] / 100


def test_one_seed_gives_identical_runs():
    (x, y), _ = prepared_sample()

    def run():
        gpunet.random.seed(42)
        net = chapter_network()
        h = net.fit(x[:2000], y[:2000], epochs=2, batch_size=128, verbose=0)
        return net.get_weights(), h.history

    (w1, h1), (w2, h2) = run(), run()
    assert h1 == h2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_gpu_losses_track_cpu_losses_step_by_step():
    """Same seed -> same initial weights and batch order on CPU and GPU: the first 20 losses agree."""
    if not gpunet.gpu_available():
        pytest.skip("needs a CUDA GPU with CuPy")
    (x, y), _ = prepared_sample()
    per_device = {}
    for dev in ("cpu", "gpu"):
        gpunet.random.seed(7)
        net = chapter_network(device=dev)
        rec = callbacks.Callback()
        rec.losses = []
        rec.wants_batch_logs = True
        rec.on_train_batch_end = lambda b, logs, r=rec: r.losses.append(logs["loss"])
        net.fit(x[:20 * 128], y[:20 * 128], epochs=1, batch_size=128, verbose=0, callbacks=[rec])
        per_device[dev] = rec.losses
    assert len(per_device["cpu"]) == 20
    np.testing.assert_allclose(per_device["gpu"], per_device["cpu"], rtol=2e-3)


def test_verbose_modes(capsys):
    rng = np.random.default_rng(4)
    x, y = rng.random((40, 784), dtype=np.float32), to_categorical(rng.integers(0, 10, 40), 10)
    net = chapter_network()
    net.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert capsys.readouterr().out == ""
    net.fit(x, y, epochs=2, batch_size=8, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[1].startswith("5/5 - ") and "accuracy:" in lines[1] and len(lines) == 4
    net.fit(x, y, epochs=1, batch_size=8, verbose=1)    # not a terminal: no bar spam, one final line
    out = capsys.readouterr().out
    assert "\r" not in out and out.count("\n") == 2 and "5/5 ━━━━━━━━━━━━━━━━━━━━" in out


def test_live_bar_on_a_terminal():
    class TTY(io.StringIO):
        def isatty(self):
            return True
    stream = TTY()
    bar = callbacks.ProgbarLogger(verbose=1, stream=stream)
    bar.set_params({"epochs": 5, "steps": 469})
    bar.on_train_begin()
    bar.on_epoch_begin(0)
    bar.refresh(100, {"loss": 0.5, "accuracy": 0.9})
    bar.on_epoch_end(0, {"loss": 0.25, "accuracy": 0.93})
    text = stream.getvalue()
    assert "Epoch 1/5" in text and "\r100/469 ━━━━" in text and "469/469 ━━━━━━━━━━━━━━━━━━━━" in text
    assert "accuracy: 0.9300 - loss: 0.2500" in text and ("ms/step" in text or "us/step" in text)


def test_callbacks(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.random((64, 784), dtype=np.float32)
    y = to_categorical(rng.integers(0, 10, 64), 10)
    net = chapter_network()
    es = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)   # can never improve by 10
    ck = callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}.npz"))
    best = callbacks.ModelCheckpoint(str(tmp_path / "best.npz"), monitor="val_loss", save_best_only=True)
    h = net.fit(x, y, epochs=10, batch_size=16, verbose=0, validation_data=(x, y), callbacks=[es, ck, best])
    assert len(h.epoch) == 2 and es.stopped_epoch == 1
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "ck-01.npz", "ck-02.npz"]
    other = chapter_network()
    other.load_weights(tmp_path / "ck-02.npz")
    np.testing.assert_array_equal(other.get_weights()[0], net.get_weights()[0])


def test_early_stopping_restores_best_weights():
    rng = np.random.default_rng(6)
    x = rng.random((64, 784), dtype=np.float32)
    y = to_categorical(rng.integers(0, 10, 64), 10)
    net = chapter_network()
    net.compile(optimizer=gpunet.optimizers.SGD(learning_rate=5.0), loss="categorical_crossentropy")
    seen = []
    rec = callbacks.Callback()
    rec.on_epoch_end = lambda e, logs: seen.append((logs["loss"], net.get_weights()))
    es = callbacks.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    net.fit(x, y, epochs=30, batch_size=64, verbose=0, callbacks=[rec, es])
    best_loss, best_w = min(seen, key=lambda t: t[0])
    np.testing.assert_array_equal(net.get_weights()[0], best_w[0])


@pytest.mark.filterwarnings("ignore:overflow")
def test_terminate_on_nan():
    x = np.ones((64, 4), np.float32)
    y = np.ones((64, 1), np.float32) * 1e30
    net = models.Sequential([layers.Dense(1, input_shape=(4,))])
    net.compile(optimizer=gpunet.optimizers.SGD(1.0), loss="mse")
    h = net.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    # fit stops by itself before applying the first non-finite step (the Keras callback is kept for old code)
    assert h.epoch == [] and net.stop_reason.startswith("epoch 1, step ")
    assert all(np.isfinite(w).all() for w in net.get_weights())


def test_uint8_inputs_and_rescaling(dev):
    (x, y), (xt, yt) = mnist.load_sample()
    net = models.Sequential([layers.Rescaling(1 / 255, input_shape=(28, 28)), layers.Flatten(),
                             layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])
    net.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    net.fit(x, y, epochs=1, batch_size=128, verbose=0)
    assert net.evaluate(xt, yt, verbose=0)[1] > 0.85


def test_summary_columns_widen_for_long_layer_names():
    """Keras prints whole layer names; a name longer than the column widens it, and every row's shape
    and parameter count start where the header's do."""
    model = models.Sequential([layers.Conv2D(8, 3, input_shape=(28, 28, 1)), layers.MaxPooling2D(),
                               layers.GlobalAveragePooling2D(name="global_average_pooling2d"), layers.Dense(10)])
    lines = []
    model.summary(print_fn=lines.append)
    table = lines[0].splitlines()
    header = next(line for line in table if "Output Shape" in line)
    rows = [line for line in table if "(None," in line]
    assert len(rows) == 4 and any("global_average_pooling2d (GlobalAveragePooling2D)" in r for r in rows)
    for row, shape, params in zip(rows, ["(None, 26, 26, 8)", "(None, 13, 13, 8)", "(None, 8)", "(None, 10)"],
                                  ["80", "0", "0", "90"]):
        assert row.index(shape) == header.index("Output Shape") and row.rstrip().endswith(params)
        assert row.index(params, row.index(shape) + len(shape)) == header.index("Param #")
