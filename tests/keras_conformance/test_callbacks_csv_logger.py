"""Keras 3's keras/src/callbacks/csv_logger_test.py, ported to gpunet.

Adapted: the models are gpunet ``Sequential``/``Dense`` models (Keras' ``Constant(1e5)``
initializer is a callable filling 1e5). The ``validation_freq=3`` case runs only where gpunet's
``fit`` takes ``validation_freq``. ``test_stop_training_csv``: gpunet's ``fit`` stops *before*
applying a non-finite step and does not end that epoch, so the CSV holds no row (Keras: a last
row with ``nan``); what is kept is Keras' point, that the file stays a valid CSV. Separators,
row and column counts are Keras'.
"""
import csv
import inspect
import os
import re

import numpy as np
import pytest

from gpunet import callbacks, layers, models
from gpunet.utils import to_categorical

TRAIN_SAMPLES = 10
TEST_SAMPLES = 10
INPUT_DIM = 3
BATCH_SIZE = 4


def _data(output_dim=1):
    rs = np.random.RandomState(1337)
    return (rs.random_sample((TRAIN_SAMPLES, INPUT_DIM)), rs.random_sample((TRAIN_SAMPLES, output_dim)),
            rs.random_sample((TEST_SAMPLES, INPUT_DIM)), rs.random_sample((TEST_SAMPLES, output_dim)))


def make_model():
    model = models.Sequential([layers.Dense(2, activation="relu"), layers.Dense(1)])
    model.compile(loss="mse", optimizer="sgd", metrics=["mse"])
    return model


def test_CSVLogger(tmp_path):
    filepath = os.path.join(tmp_path, "log.tsv")
    sep = "\t"
    x_train, y_train, x_test, y_test = _data()
    fit = dict(batch_size=BATCH_SIZE, validation_data=(x_test, y_test), verbose=0)

    # case 1: a new file with the given separator
    model = make_model()
    model.fit(x_train, y_train, callbacks=[callbacks.CSVLogger(filepath, separator=sep)], epochs=1, **fit)
    assert os.path.exists(filepath)
    with open(filepath) as csvfile:
        dialect = csv.Sniffer().sniff(csvfile.read())
    assert dialect.delimiter == sep

    # case 2: append to the existing file, without a second header
    model = make_model()
    cbks = [callbacks.CSVLogger(filepath, separator=sep, append=True)]
    model.fit(x_train, y_train, callbacks=cbks, epochs=1, **fit)

    # case 3: the same CSVLogger reused
    model.fit(x_train, y_train, callbacks=cbks, epochs=2, **fit)
    with open(filepath) as csvfile:
        list_lines = csvfile.readlines()
        for line in list_lines:
            assert line.count(sep) == 4
        assert len(list_lines) == 5
        assert len(re.findall("epoch", " ".join(list_lines))) == 1
    os.remove(filepath)

    # case 4: the validation loss is logged at the validation frequency
    if "validation_freq" not in inspect.signature(models.Sequential.fit).parameters:
        return
    model = make_model()
    cbks = [callbacks.CSVLogger(filepath, separator=sep)]
    hist = model.fit(x_train, y_train, validation_freq=3, callbacks=cbks, epochs=5, **fit)
    assert os.path.exists(filepath)
    with open(filepath) as csvfile:
        for idx, row in enumerate(csv.DictReader(csvfile, delimiter=sep), 1):
            assert "val_loss" in row
            if idx == 3:
                assert row["val_loss"] == str(hist.history["val_loss"][0])
            else:
                assert row["val_loss"] == "NA"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_stop_training_csv(tmp_path):
    csv_logfile = os.path.join(tmp_path, "csv_logger.csv")
    rs = np.random.RandomState(1337)
    x_train = rs.random_sample((TRAIN_SAMPLES, INPUT_DIM))
    y_train = to_categorical(rs.choice(np.arange(2), size=TRAIN_SAMPLES))
    x_test = rs.random_sample((TEST_SAMPLES, INPUT_DIM))
    y_test = to_categorical(rs.choice(np.arange(2), size=TEST_SAMPLES))
    model = models.Sequential()
    for _ in range(5):
        model.add(layers.Dense(2, activation="relu", kernel_initializer=lambda shape, dtype="float32":
                               np.full(shape, 1e5, dtype)))
    model.add(layers.Dense(2))
    model.compile(loss="mean_squared_error", optimizer="sgd")
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, validation_data=(x_test, y_test),
                        callbacks=[callbacks.TerminateOnNaN(), callbacks.CSVLogger(csv_logfile)], epochs=20,
                        verbose=0)
    # Keras: one epoch, a nan/inf loss, and "nan" in the CSV's last row. gpunet stops before that step:
    assert history.history.get("loss", []) == [] and model.stop_reason is not None
    with open(csv_logfile, newline="") as f:
        assert [row for row in csv.reader(f) if row] == []


# ----------------------------------------------------------------------------- gpunet
def test_header_and_na_columns_without_validation(tmp_path):
    """Keras' column rule: sorted names, then ``val_`` twins filled with NA when there is no validation."""
    filepath = tmp_path / "log.csv"
    x_train, y_train, _, _ = _data()
    make_model().fit(x_train, y_train, epochs=2, verbose=0, callbacks=[callbacks.CSVLogger(filepath)])
    with open(filepath, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "mse", "val_loss", "val_mse"]
    assert [r[0] for r in rows[1:]] == ["0", "1"] and all(r[3:] == ["NA", "NA"] for r in rows[1:])


def test_only_rank_0_writes(tmp_path):
    filepath = tmp_path / "log.csv"
    logger = callbacks.CSVLogger(filepath)
    logger.set_params({"rank": 1})
    logger.on_train_begin({})
    logger.on_epoch_end(0, {"loss": 1.0})
    logger.on_train_end({})
    assert not filepath.exists()
