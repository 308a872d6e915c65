"""Keras 3's keras/src/callbacks/callback_test.py (and the rules of callback.py, callback_list.py and
history.py, which have no test file of their own), ported to gpunet.

Adapted: ``test_model_state_is_current_on_epoch_end`` counts the optimizer's ``iterations``
(gpunet's models have no ``add_variable``; Keras' model counts its calls). The other tests are
gpunet's, written from Keras' ``Callback``/``CallbackList``/``History`` code: batch hooks (and
their ``on_batch_*`` aliases) run whenever a callback overrides them, with no opt-in flag; the
hooks get dicts, never None; the user's callbacks come before the History and the progress bar,
so what they add to the epoch logs is recorded; a History or ProgbarLogger given by the user is
used instead of a new one. gpunet's own rule: batch logs are read from the device only when some
callback overrides a batch-end hook (or a progress refresh is due).
"""
import inspect

import numpy as np
import pytest

from gpunet import callbacks, layers, models
from gpunet.callbacks import Callback, CallbackList

PARAMS = {"epochs": 1, "steps": 4, "batch_size": 2, "samples": 8, "verbose": 0, "rank": 0}


def _model():
    model = models.Sequential([layers.Dense(1, input_shape=(1,))])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _trainer_calls(name):
    """Does gpunet's fit call ``CallbackList.<name>``? (Its trainer is another module's business.)"""
    from gpunet.trainers import trainer
    return f".{name}(" in inspect.getsource(trainer)


# ----------------------------------------------------------------------------- callback_test.py
def test_model_state_is_current_on_epoch_end():
    seen = []

    class CBK(Callback):
        def on_batch_end(self, batch, logs):
            seen.append(batch)
            assert int(self.model.optimizer.iterations) == batch + 1

    model = _model()
    rng = np.random.default_rng(0)
    model.fit(rng.random((8, 1)), rng.random((8, 1)), callbacks=[CBK()], batch_size=2, verbose=0)
    assert seen == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- Callback / CallbackList rules
class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", logs))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", logs))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs))


def test_hooks_get_dicts_not_none():
    rec = Recorder()
    rng = np.random.default_rng(1)
    _model().fit(rng.random((8, 1)), rng.random((8, 1)), epochs=2, batch_size=4, verbose=0, callbacks=[rec])
    assert [name for name, _ in rec.calls] == ["train_begin", "epoch_begin", "epoch_end", "epoch_begin", "epoch_end",
                                               "train_end"]
    assert all(isinstance(logs, dict) for _, logs in rec.calls)
    assert rec.calls[0][1] == {} and rec.calls[1][1] == {} and "loss" in rec.calls[-1][1]
    cbs = CallbackList([rec], None, PARAMS)           # a caller passing None: still dicts
    rec.calls.clear()
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_train_end()
    assert [logs for _, logs in rec.calls] == [{}, {}, {}]


class BatchRecorder(Callback):
    def __init__(self, hooks):
        super().__init__()
        self.seen = []
        for hook in hooks:
            setattr(self, hook, lambda batch, logs=None, hook=hook: self.seen.append((hook, batch, logs)))


@pytest.mark.parametrize("hook", ["on_batch_end", "on_train_batch_end"])
def test_an_overridden_batch_end_hook_runs_in_fit_without_opt_in(hook):
    rec = BatchRecorder([hook])
    assert rec.wants_batch_logs is None                       # no opt-in flag set
    rng = np.random.default_rng(2)
    _model().fit(rng.random((8, 1)), rng.random((8, 1)), epochs=2, batch_size=4, verbose=0, callbacks=[rec])
    assert [(h, b) for h, b, _ in rec.seen] == [(hook, 0), (hook, 1)] * 2
    assert all(isinstance(logs, dict) and np.isfinite(logs["loss"]) for _, _, logs in rec.seen)


@pytest.mark.parametrize("hook", ["on_batch_begin", "on_train_batch_begin"])
def test_an_overridden_batch_begin_hook_is_called(hook):
    rec = BatchRecorder([hook])
    cbs = CallbackList([rec], None, PARAMS)
    for step in range(3):
        cbs.on_train_batch_begin(step)
    assert [(h, b, logs) for h, b, logs in rec.seen] == [(hook, 0, {}), (hook, 1, {}), (hook, 2, {})]


@pytest.mark.skipif(not _trainer_calls("on_train_batch_begin"), reason="this gpunet's fit has no batch-begin hook")
@pytest.mark.parametrize("hook", ["on_batch_begin", "on_train_batch_begin"])
def test_an_overridden_batch_begin_hook_runs_in_fit(hook):
    rec = BatchRecorder([hook])
    rng = np.random.default_rng(3)
    _model().fit(rng.random((8, 1)), rng.random((8, 1)), epochs=2, batch_size=4, verbose=0, callbacks=[rec])
    assert [(h, b) for h, b, _ in rec.seen] == [(hook, 0), (hook, 1)] * 2


def test_no_batch_logs_are_read_when_no_callback_wants_them():
    """The fast path: epoch-only callbacks (and the History, and verbose=2) read nothing per step."""
    def logs_fn(last):
        raise AssertionError("the batch logs were read")

    cbs = CallbackList([Recorder(), callbacks.EarlyStopping(monitor="loss"), callbacks.CSVLogger("unused.csv"),
                        callbacks.LearningRateScheduler(lambda e, lr: lr), callbacks.ReduceLROnPlateau()],
                       None, dict(PARAMS, verbose=2))
    assert not cbs.wants_batch_logs
    for step in range(4):
        cbs.on_train_batch_begin(step)
        assert not cbs.reads_logs_after(step + 1)
        cbs.on_train_batch_end(step, logs_fn)
        cbs.on_test_batch_end(step, logs_fn)
        cbs.on_predict_batch_end(step, logs_fn)


def test_batch_logs_read_once_per_step_for_the_hooks():
    calls = []

    def logs_fn(last):
        calls.append(last)
        return {"loss": 0.5}

    a, b = BatchRecorder(["on_train_batch_end"]), BatchRecorder(["on_batch_end"])
    cbs = CallbackList([a, b], None, PARAMS)
    assert cbs.wants_batch_logs and cbs.reads_logs_after(1)
    cbs.on_train_batch_end(0, logs_fn)
    assert calls == [False] and a.seen == [("on_train_batch_end", 0, {"loss": 0.5})]
    assert b.seen == [("on_batch_end", 0, {"loss": 0.5})]


def test_batch_logs_are_the_running_means_of_the_epoch():
    """Keras 3: batch-end logs hold the metrics aggregated since the epoch began (the loss tracker is a
    Mean), so the last batch's logs equal the epoch's training logs."""
    rec = BatchRecorder(["on_train_batch_end"])
    rng = np.random.default_rng(8)
    model = _model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    history = model.fit(rng.random((12, 1)), rng.random((12, 1)), epochs=2, batch_size=4, verbose=0, callbacks=[rec])
    for epoch in (0, 1):
        last = rec.seen[3 * epoch + 2][2]
        assert last["loss"] == pytest.approx(history.history["loss"][epoch], rel=1e-6)
        assert last["mae"] == pytest.approx(history.history["mae"][epoch], rel=1e-6)


def test_wants_batch_logs_still_opts_in():
    """gpunet's earlier opt-in keeps working: a plain Callback with the hook set on the instance."""
    rec = Callback()
    rec.losses = []
    rec.wants_batch_logs = True
    rec.on_train_batch_end = lambda b, logs, r=rec: r.losses.append(logs["loss"])
    rng = np.random.default_rng(4)
    _model().fit(rng.random((8, 1)), rng.random((8, 1)), epochs=1, batch_size=2, verbose=0, callbacks=[rec])
    assert len(rec.losses) == 4


def test_test_and_predict_hooks_dispatch():
    rec = BatchRecorder(["on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin",
                         "on_predict_batch_end"])
    ends = []
    rec.on_test_begin = lambda logs=None: ends.append(("test_begin", logs))
    rec.on_test_end = lambda logs=None: ends.append(("test_end", logs))
    rec.on_predict_begin = lambda logs=None: ends.append(("predict_begin", logs))
    rec.on_predict_end = lambda logs=None: ends.append(("predict_end", logs))
    cbs = CallbackList([rec], None, PARAMS, add_history=False)
    assert cbs.wants_test_batch_logs
    cbs.on_test_begin()
    cbs.on_test_batch_begin(0)
    cbs.on_test_batch_end(0, lambda last: {"loss": 2.0})
    cbs.on_test_end({"loss": 2.0})
    cbs.on_predict_begin()
    cbs.on_predict_batch_begin(0)
    cbs.on_predict_batch_end(0, {"outputs": np.zeros((2, 1))})
    cbs.on_predict_end()
    assert [(h, b) for h, b, _ in rec.seen] == [("on_test_batch_begin", 0), ("on_test_batch_end", 0),
                                                ("on_predict_batch_begin", 0), ("on_predict_batch_end", 0)]
    assert rec.seen[1][2] == {"loss": 2.0} and rec.seen[3][2]["outputs"].shape == (2, 1)
    assert ends == [("test_begin", {}), ("test_end", {"loss": 2.0}), ("predict_begin", {}), ("predict_end", {})]


# ----------------------------------------------------------------------------- order, History, ProgbarLogger
def test_user_callbacks_come_before_history_and_progress():
    class AddsAValue(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = float(epoch)

    rng = np.random.default_rng(5)
    history = _model().fit(rng.random((8, 1)), rng.random((8, 1)), epochs=2, verbose=0, callbacks=[AddsAValue()])
    assert history.history["extra"] == [0.0, 1.0]
    cbs = CallbackList([AddsAValue()], None, dict(PARAMS, verbose=1))
    assert [type(cb).__name__ for cb in cbs.callbacks] == ["AddsAValue", "History", "ProgbarLogger"]


def test_a_given_history_or_progbar_is_used():
    history = callbacks.History()
    model = _model()
    rng = np.random.default_rng(6)
    returned = model.fit(rng.random((8, 1)), rng.random((8, 1)), epochs=2, verbose=0, callbacks=[history])
    assert returned is history and model.history is history and history.epoch == [0, 1]
    assert len(history.history["loss"]) == 2
    bar = callbacks.ProgbarLogger(verbose=2)
    cbs = CallbackList([bar], None, dict(PARAMS, verbose=1))
    assert cbs.progress is bar and sum(isinstance(cb, callbacks.ProgbarLogger) for cb in cbs.callbacks) == 1


def test_history_records_every_epoch():
    rng = np.random.default_rng(7)
    x, y = rng.random((8, 1)), rng.random((8, 1))
    model = _model()
    history = model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y))
    assert history.epoch == [0, 1, 2] and len(history.epoch_times) == 3 and model.history is history
    assert sorted(history.history) == ["loss", "val_loss"] and all(len(v) == 3 for v in history.history.values())
    assert history.params["epochs"] == 3 and history.params["steps"] == 1


def test_append_and_type_check():
    cbs = CallbackList([], None, PARAMS)
    rec = BatchRecorder(["on_train_batch_end"])
    cbs.append(rec)
    assert cbs.wants_batch_logs and rec.params == cbs.params
    with pytest.raises(TypeError, match="Callback instances"):
        CallbackList([object()], None, PARAMS)
