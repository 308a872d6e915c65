"""Keras 3's keras/src/callbacks/model_checkpoint_test.py, ported to gpunet.

Adapted: the models are gpunet ``Sequential`` models (Keras' functional model of
``test_model_checkpoint_loading`` becomes a ``Sequential`` with an ``input_shape``); the data
comes from a copy of Keras' ``test_utils.get_test_data`` (same seed); gpunet writes its ``.npz``
checkpoint format whatever the file name, so Keras' ``.keras``/``.weights.h5`` names are kept as
they are; case 15 watches ``val_acc`` (an accuracy, maximized in 'auto' mode, threshold 1)
where Keras watches ``val_auc`` (gpunet has no AUC metric). Every other case, file name, batch
size, ``save_freq`` and expected file is Keras'. Extra tests (marked below) cover rank 0 and the
fast path.
"""
import os
import warnings

import numpy as np
import pytest

from gpunet import callbacks, layers, metrics, models
from gpunet.callbacks import CallbackList
from gpunet.utils import to_categorical

TRAIN_SAMPLES = 30
TEST_SAMPLES = 30
NUM_CLASSES = 3
INPUT_DIM = 3
NUM_HIDDEN = 5
BATCH_SIZE = 5


def get_test_data(train_samples, test_samples, input_shape, num_classes, random_seed=None):
    """Keras' ``testing.test_utils.get_test_data``: balanced, stratified synthetic classes."""
    rs = np.random.RandomState(random_seed)
    total = train_samples + test_samples
    per_class = total // num_classes
    y = np.array([i for i in range(num_classes) for _ in range(per_class)], dtype=np.int32)
    y = np.concatenate([y, np.array([i % num_classes for i in range(total - len(y))], dtype=np.int64)])
    templates = 2 * num_classes * rs.random_sample((num_classes,) + input_shape)
    x = np.zeros((total,) + input_shape, dtype=np.float32)
    for i in range(total):
        x[i] = templates[y[i]] + rs.normal(loc=0, scale=1.0, size=input_shape)
    indices = np.arange(total)
    rs.shuffle(indices)
    x, y = x[indices], y[indices]
    x_train, y_train, x_test, y_test = [], [], [], []
    for cls in range(num_classes):
        cls_indices = np.where(y == cls)[0]
        rs.shuffle(cls_indices)
        train_count = int(train_samples / num_classes)
        x_train.extend(x[cls_indices[:train_count]])
        y_train.extend(y[cls_indices[:train_count]])
        x_test.extend(x[cls_indices[train_count:]])
        y_test.extend(y[cls_indices[train_count:]])
    x_train, y_train, x_test, y_test = map(np.array, (x_train, y_train, x_test, y_test))
    train_indices, test_indices = np.arange(len(x_train)), np.arange(len(x_test))
    rs.shuffle(train_indices)
    rs.shuffle(test_indices)
    return (x_train[train_indices], y_train[train_indices]), (x_test[test_indices], y_test[test_indices])


def _data():
    (x_train, y_train), (x_test, y_test) = get_test_data(
        random_seed=42, train_samples=TRAIN_SAMPLES, test_samples=TEST_SAMPLES, input_shape=(INPUT_DIM,),
        num_classes=NUM_CLASSES)
    return x_train, to_categorical(y_train, NUM_CLASSES), x_test, to_categorical(y_test, NUM_CLASSES)


def get_model(input_shape=None):
    model = models.Sequential([layers.Dense(NUM_HIDDEN, activation="relu", input_shape=input_shape),
                               layers.Dense(NUM_CLASSES, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=[metrics.Accuracy("acc")])
    return model


def test_model_checkpoint_options(tmp_path):
    model = get_model()
    x_train, y_train, x_test, y_test = _data()
    fit = dict(x=x_train, y=y_train, batch_size=BATCH_SIZE, validation_data=(x_test, y_test), epochs=1, verbose=0)

    # save to a subdir inside the temp dir: the folder is created
    filepath = os.path.join(tmp_path, "subdir", "checkpoint.keras")

    # Case 1
    monitor, save_best_only, mode = "val_loss", False, "auto"
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode)]
    model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)
    os.remove(filepath)

    # Case 2
    mode = "min"
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode)]
    model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)
    os.remove(filepath)

    # Case 3
    mode, monitor = "max", "val_acc"
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode)]
    model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)
    os.remove(filepath)

    # Case 4
    save_best_only = True
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode)]
    model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)
    os.remove(filepath)

    # Case 5: metric not available
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="unknown", save_best_only=True, mode="min")]
    with pytest.warns(UserWarning):
        model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)

    # Case 6
    with warnings.catch_warnings(record=True) as warning_logs:
        warnings.simplefilter("always")
        callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, mode="unknown")
        assert "ModelCheckpoint mode 'unknown' is unknown" in str(warning_logs[-1].message)

    # Case 8a: an integer save_freq
    filepath = os.path.join(tmp_path, "checkpoint.epoch{epoch:02d}.keras")
    save_best_only = False
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode,
                                      save_freq=15)]
    assert not os.path.exists(filepath.format(epoch=3))
    model.fit(x_train, y_train, batch_size=6,        # 5 batches / epoch: a save every 3 epochs
              validation_data=(x_test, y_test), callbacks=cbks, epochs=10, verbose=0)
    for epoch in range(1, 10):
        assert os.path.exists(filepath.format(epoch=epoch)) == (epoch in (3, 6, 9)), epoch
    for epoch in (3, 6, 9):
        os.remove(filepath.format(epoch=epoch))

    # Case 8b: an integer save_freq and save_weights_only
    filepath = os.path.join(tmp_path, "checkpoint.epoch{epoch:02d}.weights.h5")
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_freq=15, save_weights_only=True)]
    assert not os.path.exists(filepath.format(epoch=3))
    model.fit(x_train, y_train, batch_size=6, validation_data=(x_test, y_test), callbacks=cbks, epochs=10, verbose=0)
    for epoch in range(1, 10):
        assert os.path.exists(filepath.format(epoch=epoch)) == (epoch in (3, 6, 9)), epoch

    # Case 9: valid and invalid save_freq
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, save_weights_only=True,
                                  mode=mode, save_freq="invalid_save_freq")
    callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, save_weights_only=True,
                              mode=mode, save_freq="epoch")
    callbacks.ModelCheckpoint(filepath, monitor=monitor, save_best_only=save_best_only, save_weights_only=True,
                              mode=mode, save_freq=3)

    # Case 10a: batch in the file name
    filepath = os.path.join(tmp_path, "checkpoint.epoch{epoch:02d}batch{batch:02d}.keras")
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_freq=1)]
    model.fit(x_train, y_train, batch_size=15, validation_data=(x_test, y_test), callbacks=cbks, epochs=5, verbose=1)
    for epoch in range(1, 6):
        for batch in (1, 2):
            assert os.path.exists(filepath.format(epoch=epoch, batch=batch))

    # Case 10b: weights, batch in the file name
    filepath = os.path.join(tmp_path, "checkpoint.epoch{epoch:02d}batch{batch:02d}.weights.h5")
    cbks = [callbacks.ModelCheckpoint(filepath, monitor=monitor, save_freq=1, save_weights_only=True)]
    model.fit(x_train, y_train, batch_size=15, validation_data=(x_test, y_test), callbacks=cbks, epochs=5, verbose=1)
    for epoch in range(1, 6):
        for batch in (1, 2):
            assert os.path.exists(filepath.format(epoch=epoch, batch=batch))

    # Case 11: initial_value_threshold below every accuracy: saved
    filepath = os.path.join(tmp_path, "checkpoint.keras")
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_acc", save_best_only=True, initial_value_threshold=-0.01,
                                      mode="max")]
    model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)
    os.remove(filepath)

    # Case 12: no initial_value_threshold: saved
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, initial_value_threshold=None,
                                      mode="auto")]
    model.fit(callbacks=cbks, **fit)
    assert os.path.exists(filepath)
    os.remove(filepath)

    # Case 13: a loss can't beat a threshold of 0 (min): not saved
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, initial_value_threshold=0,
                                      mode="min")]
    model.fit(callbacks=cbks, **fit)
    assert not os.path.exists(filepath)

    # Case 14: the same in auto mode
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, initial_value_threshold=0,
                                      mode="auto")]
    model.fit(callbacks=cbks, **fit)
    assert not os.path.exists(filepath)

    # Case 15: an accuracy can't beat a threshold of 1 (auto mode: max): not saved
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_acc", save_best_only=True, initial_value_threshold=1,
                                      mode="auto")]
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=[metrics.Accuracy("acc")])
    model.fit(callbacks=cbks, **fit)
    assert not os.path.exists(filepath)


def test_model_checkpoint_loading(tmp_path):
    x_train, y_train, x_test, y_test = _data()
    fit = dict(x=x_train, y=y_train, batch_size=BATCH_SIZE, validation_data=(x_test, y_test), epochs=1, verbose=0)

    # load the model (default)
    model = get_model(input_shape=(INPUT_DIM,))
    filepath = os.path.join(tmp_path, "checkpoint.model.keras")
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, mode="auto")]
    model.fit(callbacks=cbks, **fit)
    ref_weights = model.get_weights()
    assert os.path.exists(filepath)
    new_weights = models.load_model(filepath).get_weights()
    assert len(ref_weights) == len(new_weights)
    for ref_w, w in zip(ref_weights, new_weights):
        np.testing.assert_allclose(w, ref_w)

    # load the weights
    model = get_model(input_shape=(INPUT_DIM,))
    filepath = os.path.join(tmp_path, "checkpoint.weights.h5")
    cbks = [callbacks.ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, save_weights_only=True,
                                      mode="auto")]
    model.fit(callbacks=cbks, **fit)
    ref_weights = model.get_weights()
    assert os.path.exists(filepath)
    new_model = get_model(input_shape=(INPUT_DIM,))
    new_model.load_weights(filepath)
    new_weights = new_model.get_weights()
    assert len(ref_weights) == len(new_weights)
    for ref_w, w in zip(ref_weights, new_weights):
        np.testing.assert_allclose(w, ref_w)


# ----------------------------------------------------------------------------- gpunet
def test_only_rank_0_writes(tmp_path):
    model = get_model(input_shape=(INPUT_DIM,))
    for rank in (1, 0):
        ck = callbacks.ModelCheckpoint(str(tmp_path / "r{epoch}.npz"), save_freq=1)
        cbs = CallbackList([ck], model, {"epochs": 1, "steps": 1, "verbose": 0, "rank": rank})
        cbs.on_train_begin({})
        cbs.on_epoch_begin(0, {})
        cbs.on_train_batch_end(0, {"loss": 1.0})
        cbs.on_epoch_end(0, {"loss": 1.0})
        assert os.listdir(tmp_path) == ([] if rank else ["r1.npz"])


def test_epoch_checkpoints_read_no_batch_logs(tmp_path):
    """``save_freq='epoch'`` keeps fit's fast path: no batch-end hook, no per-step log reads."""
    model = get_model(input_shape=(INPUT_DIM,))
    params = {"epochs": 1, "steps": 1, "verbose": 0, "rank": 0}
    cbs = CallbackList([callbacks.ModelCheckpoint(str(tmp_path / "c.npz"))], model, params)
    assert not cbs.wants_batch_logs and not cbs.reads_logs_after(1)
    cbs = CallbackList([callbacks.ModelCheckpoint(str(tmp_path / "c.npz"), save_freq=2)], model, params)
    assert cbs.wants_batch_logs


def test_verbose_messages_and_format_errors(tmp_path, capsys):
    model = get_model(input_shape=(INPUT_DIM,))
    x_train, y_train, x_test, y_test = _data()
    path = str(tmp_path / "best-{epoch}-{val_loss:.2f}.npz")
    ck = callbacks.ModelCheckpoint(path, save_best_only=True, verbose=1, initial_value_threshold=1e9)
    model.fit(x_train, y_train, validation_data=(x_test, y_test), epochs=1, verbose=0, callbacks=[ck])
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from 1000000000.00000 to " in out and "finished saving model to" in out
    assert len(os.listdir(tmp_path)) == 1
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        model.fit(x_train, y_train, epochs=1, verbose=0,
                  callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "{nope}.npz"))])
