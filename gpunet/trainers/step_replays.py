"""Replays of ``fit``'s training step on the CPU: what a CUDA graph is to the GPU, for Python.

With the CPU kernels on, a step of the chapter's network spent ~0.3 ms of its ~1.7 ms in Python
deciding what to run (the layer walk, argument checks, kernel argument conversion) and ~1.2 ms in the
matrix products. The decisions are the same at every step of a batch shape, so the step's array work
is recorded once (:mod:`gpunet.kernels.recording`: each kernel launch with its converted arguments,
each product, each block of NumPy code that writes fixed arrays) in three parts — the gradients, the
metrics' batch sums, the optimizer update — and replayed. Per batch shape::

    step 1      the ordinary step (it makes the optimizer's slots and the work arrays)
    step 2      the ordinary step, recorded (the batch in the replay's input arrays: the iterator's own)
    step 3      on the first later batch whose inputs and targets both differ from step 2's: the ordinary
                step, each part's recording replayed from the state before it and compared bit for bit
                (loss, gradients, outputs, metric sums, every weight and slot); a mismatch ends the
                replays for this fit (ordinary steps go on; the reason is logged at DEBUG level)
    later       the gradients' and metrics' recordings replayed; the loss guard as in any step; the
                update's recording replayed; the step counted on the host

Work a recording misses (a NumPy call outside the recorded ones, a new array each step) shows at step 3.
What a recording fixed on the host is checked before every replay: the batch shapes and dtypes, the
learning rate, the optimizer, loss and metrics objects, every weight and slot array (by identity), and
the attributes of the optimizer, loss, layers and metrics (:class:`_Settings`): a change records again.
Metric sums are replayed only when they are the replay's own work arrays. A model's recordings are kept
from one ``fit`` to the next (which then replays from its first step); a fit of fewer than
:data:`MIN_STEPS` steps without kept recordings runs ordinary steps. Only models built of layers that
declare their CPU work recorded (``Layer.replays_on_host``), with such a loss and optimizer, are replayed,
under the conditions of a CUDA graph (:func:`.step_graphs.capture_obstacle`: no learning-rate schedule,
clipping, sample weights or distributed fit). ``compile(jit_compile=False)`` (the tape) and
``GPUNET_CPU_KERNELS=0`` never replay; the kernels' thread count is the one of the recording.
"""
from __future__ import annotations

import logging
import operator
import weakref

from ..kernels import cuda
from ..kernels.recording import Recording
from ..layers import Workspace
from .step_graphs import capture_obstacle

LOG = logging.getLogger("gpunet.trainers")
WARM_UP = 1          # ordinary steps per batch shape before the recorded one
MAX_ENTRIES = 8      # recordings kept per fit (shapes x learning rates); more start afresh
MIN_STEPS = 32       # shorter fits run ordinary steps (recording and checking cost ~3 steps' time)
_KEPT = weakref.WeakKeyDictionary()     # model -> its recordings, kept from one fit to the next
_IN_USE = weakref.WeakKeyDictionary()   # model -> True while a fit of it uses its kept recordings


def replay_obstacle(model, run) -> str | None:
    """Why ``fit``'s CPU step cannot be replayed, or None when it can."""
    reason = capture_obstacle(model, run)
    if reason:
        return reason
    if not cuda.cpu_kernels():
        return "the CPU kernels are off"
    for layer in model.layers:
        if not layer.replays_on_host:
            return f"layer {layer.name!r} ({type(layer).__name__}) does not record its CPU work"
    if not getattr(model.loss, "replays_on_host", False):
        return f"the loss {type(model.loss).__name__} does not record its CPU work"
    if not model.optimizer.replays_on_host:
        return f"the optimizer {type(model.optimizer).__name__} does not record its CPU work"
    return None


def step_replays_for(model, run):
    """The :class:`StepReplays` of a ``fit`` on the CPU (``jit_compile`` 'auto' or True); None when the
    step cannot be replayed (the reason is logged at DEBUG level)."""
    if model.jit_compile is False or model.device.is_gpu:
        return None
    steps = run.data.steps * (run.callbacks.params.get("epochs", 1) - run.guard.initial_epoch)
    x, y = run.data.xd, run.data.yd          # a kept recording for this fit's full batches: replays cost nothing more
    kept = not _IN_USE.get(model) and all(map(model.optimizer.has_slots, run.params)) and getattr(
        _KEPT.get(model, {}).get(step_key(model, run, (run.batch_size,) + x.shape[1:], x.dtype,
                                          (run.batch_size,) + y.shape[1:], y.dtype)), "verified", False)
    reason = replay_obstacle(model, run) or (f"a fit of {steps} steps (fewer than {MIN_STEPS})"
                                             if steps < MIN_STEPS and not kept else None)
    if reason:
        LOG.debug("fit's steps are not replayed: %s", reason)
        return None
    return StepReplays(model, run)


def step_arrays(model, run):
    """The arrays a recording reads or writes by address: every layer's weights (frozen ones too) and the
    optimizer's slots of the trained ones."""
    opt = model.optimizer
    arrays = [w.data for layer in model.layers for w in layer.weights]
    for p in run.params:
        arrays.extend(opt.slots_of(p).values())
    return arrays


def step_key(model, run, x_shape, x_dtype, y_shape, y_dtype, arrays=None):
    """What a recording is kept under: the batch's shapes and dtypes, the learning rate, the optimizer, loss
    and metrics objects (a compile during fit makes new ones) and the arrays of :func:`step_arrays`."""
    arrays = step_arrays(model, run) if arrays is None else arrays
    return (tuple(x_shape), str(x_dtype), tuple(y_shape), str(y_dtype), model.optimizer.lr_t, id(model.optimizer),
            id(model.loss), id(model.compiled_metrics), tuple(map(id, arrays)))


def _same_bits(a, b) -> bool:
    """Arrays of one shape, dtype and bytes (or both None: a weight without a gradient)."""
    if a is None or b is None:
        return a is b
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.itemsize in (1, 2, 4, 8):          # the bits as unsigned integers (no copies; NaN == NaN, -0 != 0)
        kind = f"u{a.dtype.itemsize}"
        return bool((a.view(kind) == b.view(kind)).all()) if a.ndim else a.view(kind)[()] == b.view(kind)[()]
    return a.tobytes() == b.tobytes()


_SCALARS = (bool, int, float, str, type(None))


class _Settings:
    """The attributes of the objects a step reads on the host (optimizer, loss, layers, metrics) when a
    recording was made: a recording fixes what they said (a momentum, a Rescaling scale, a label smoothing
    ...) as kernel arguments, so a replay is right only while none of them changed (``iterations``, which
    counts the steps, aside). :meth:`same` is a few C-level lookups and identity tests while nothing was
    assigned; a value assigned again equal (a float, a flag) still counts as the same."""

    def __init__(self, objects):
        self.objects = objects              # (kept alive: the step's key holds their ids)
        self.dicts = [vars(o) for o in objects]
        self.sizes = [len(d) for d in self.dicts]
        keys = [tuple(k for k in d if k != "iterations") for d in self.dicts]
        self.getters = [operator.itemgetter(*k) if len(k) > 1 else (lambda d, k=k: tuple(d[n] for n in k))
                        for k in keys]
        self.values = [get(d) for get, d in zip(self.getters, self.dicts)]

    def same(self) -> bool:
        for i, (state, size, get, before) in enumerate(zip(self.dicts, self.sizes, self.getters, self.values)):
            if len(state) != size:
                return False                    # an attribute added or removed
            try:
                now = get(state)
            except KeyError:
                return False
            if all(map(operator.is_, now, before)):
                continue
            if not all(a is b or (type(a) in _SCALARS and type(a) is type(b) and a == b) for a, b in zip(now, before)):
                return False
            self.values[i] = now            # equal values assigned again (a step's apply): identity next time
        return True


class _Entry:
    """One batch shape's replay: warm-up count, input arrays, the recordings (the gradients, the metric
    sums, the update) and the results their calls returned."""

    def __init__(self):
        self.warm, self.x, self.y, self.results, self.sums = 0, None, None, None, None
        self.recorded_x = self.recorded_y = None         # the recorded step's batch (checked on another)
        self.gradients = self.metrics = self.update = None
        self.settings = None               # the host settings the recording fixed (_Settings)
        self.verified = False


class StepReplays:
    """The recorded steps of one ``fit`` on the CPU; :meth:`step` takes the place of ``model.train_step``."""

    def __init__(self, model, run):
        self.model, self.run, self.xp = model, run, model.device.xp
        self.entries, self._shares = {}, False
        self.recorded = self.replays = 0
        self.failure = None        # why a replay did not match its step (the rest of the fit runs ordinarily)
        # the metrics' work arrays (their batch sums into fixed arrays, as on a GPU: recordable)
        self.metric_workspaces = [Workspace(self.xp) for _ in model.compiled_metrics]

    def __enter__(self):
        """The fit's epochs begin. A later fit of the model replays what an earlier one recorded and checked,
        from its first step (the same keys and settings checks hold), its batches gathered into the
        recordings' input arrays; a fit run while another fit of the model is under way (from a callback)
        keeps recordings of its own, touching neither those arrays nor the other fit's batch."""
        if not _IN_USE.get(self.model):
            _IN_USE[self.model] = self._shares = True
            self.entries = _KEPT.setdefault(self.model, {})
            for entry in self.entries.values():
                if entry.x is not None and entry.verified:
                    self.run.data.lend_batch_array(0, entry.x)
                    self.run.data.lend_batch_array(1, entry.y)
        return self

    def __exit__(self, *exc):
        if self._shares:
            _IN_USE.pop(self.model, None)
            self._shares = False
        return False

    def step(self, x, y, n_global, step_id) -> bool:
        """One training step on batch ``(x, y)``: ordinary, recorded, checked or replayed."""
        arrays = step_arrays(self.model, self.run)
        key = step_key(self.model, self.run, x.shape, x.dtype, y.shape, y.dtype, arrays)
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
            entry = self.entries[key] = _Entry()
        if entry.settings is not None and not entry.settings.same():      # a setting changed: record again
            entry = self.entries[key] = _Entry()
            entry.warm = WARM_UP
        if self.failure or entry.warm < WARM_UP or self.model.optimizer.capture_obstacle():
            entry.warm += 1
            return self.model.train_step(self.run, x, y, None, n_global, step_id)
        if entry.x is None:     # the batch arrays the iterator gathers into (its own, reused) are read in place
            entry.x = x if x.flags.owndata else self.xp.empty_like(x)
            entry.y = y if y.flags.owndata else self.xp.empty_like(y)
        if x is not entry.x:
            self.xp.copyto(entry.x, x)
        if y is not entry.y:
            self.xp.copyto(entry.y, y)
        if entry.gradients is None:
            return self._record(entry, n_global, step_id)
        if not entry.verified:      # checked on a batch whose inputs and targets both differ from the recorded one's
            if self.xp.array_equal(entry.x, entry.recorded_x) or self.xp.array_equal(entry.y, entry.recorded_y):
                return self.model.train_step(self.run, x, y, None, n_global, step_id)
            return self._verify(entry, arrays, n_global, step_id)
        return self.model.train_step(self.run, entry.x, entry.y, None, n_global, step_id,
                                     gradients=lambda *_: self._replay(entry.gradients, entry.results),
                                     sums=None if entry.metrics is None else
                                     lambda *_: self._replay(entry.metrics, entry.sums),
                                     apply=lambda *_, **__: self._replay_update(entry))

    @staticmethod
    def _replay(recording, results):
        recording.replay()
        return results

    def _replay_update(self, entry) -> None:
        halt = self.run.guard.halt
        self.model.optimizer.count_replayed_step()      # as apply counts before its updates
        if halt is None or not halt[0]:                  # (on the CPU a set flag means fit is stopping)
            entry.update.replay()
        self.replays += 1

    def _batch_sums(self, *args):
        """The metrics' batch sums, into this replay's work arrays."""
        return self.model.compiled_metrics.batch_sums(*args[:-1], self.metric_workspaces)

    def _settings(self):
        model = self.model
        return _Settings([model.optimizer, model.loss, model.compiled_metrics, *model.layers, *model.compiled_metrics])

    def _record(self, entry, n_global, step_id) -> bool:
        gradients, metrics, update = Recording(), Recording(), Recording()
        entry.recorded_x, entry.recorded_y = entry.x.copy(), entry.y.copy()

        def recorded_gradients(x, y, w):
            with gradients:
                entry.results = self.run.gradients(x, y, w)
            return entry.results

        def recorded_sums(*args):
            with metrics:
                entry.sums = self._batch_sums(*args)
            return entry.sums

        def recorded_apply(grads, params, halt=None):
            with update:
                self.model.optimizer.apply(grads, params, halt=halt)
            # the metric sums are replayed only when each is an array of the replay's work arrays (computed
            # by recorded calls) or the batch's count (a host number fixed by the batch shape)
            owned = all(type(s) is int or any(ws.owns(s) for ws in self.metric_workspaces) for s in entry.sums)
            entry.gradients, entry.metrics, entry.update = gradients, metrics if owned else None, update
            entry.settings = self._settings()
            self.recorded += 1

        return self.model.train_step(self.run, entry.x, entry.y, None, n_global, step_id,
                                     gradients=recorded_gradients, sums=recorded_sums, apply=recorded_apply)

    def _verify(self, entry, arrays, n_global, step_id) -> bool:
        """The ordinary step, each part checked against its recording replayed from the same state."""
        def checked_gradients(x, y, w):
            loss, grads, outputs = ordinary = self.run.gradients(x, y, w)
            results = [loss, *grads, outputs]
            expected = [None if a is None else a.copy() for a in results]
            entry.gradients.replay()
            got = [entry.results[0], *entry.results[1], entry.results[2]]
            if not all(_same_bits(e, g) for e, g in zip(expected, got)) or len(got) != len(expected):
                self._fail(entry, "its gradients")
                for a, e in zip(results, expected):      # the replay may have written the same arrays
                    if a is not None:
                        self.xp.copyto(a, e)
            return ordinary

        def checked_sums(*args):
            ordinary = self.model.compiled_metrics.batch_sums(*args)
            if entry.metrics is None:                   # (not owned, or the gradients' check failed)
                return ordinary
            entry.metrics.replay()
            if len(ordinary) != len(entry.sums) or not all(
                    _same_bits(self.xp.asarray(a), self.xp.asarray(b)) for a, b in zip(ordinary, entry.sums)):
                entry.metrics = None      # a metric computed outside the recording: its sums stay ordinary
            return ordinary

        def checked_apply(grads, params, halt=None):
            before = [a.copy() for a in arrays]
            self.model.optimizer.apply(grads, params, halt=halt)
            after = [a.copy() for a in arrays]
            if self.failure:
                return
            for a, b in zip(arrays, before):
                self.xp.copyto(a, b)
            if halt is None or not halt[0]:
                entry.update.replay()
            if not all(_same_bits(a, e) for a, e in zip(arrays, after)):
                self._fail(entry, "its update")
                for a, e in zip(arrays, after):
                    self.xp.copyto(a, e)
            else:
                entry.verified = True

        return self.model.train_step(self.run, entry.x, entry.y, None, n_global, step_id,
                                     gradients=checked_gradients, sums=checked_sums, apply=checked_apply)

    def _fail(self, entry, what) -> None:
        self.failure = f"the replay of {what} did not match the ordinary step"
        LOG.debug("fit's steps are not replayed: %s", self.failure)
        entry.gradients = entry.metrics = entry.update = None
