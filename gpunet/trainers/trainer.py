"""``compile``, ``fit``, ``evaluate``, ``predict`` and one training step, for any model that is a
stack of layers (Keras 3's ``Trainer``; :class:`~gpunet.models.Sequential` inherits it).

One training step (:meth:`Trainer.train_step`) reads top to bottom::

    loss, grads, outputs = gradients(x, y, w)       # taped or tapeless (gradients.py); w: sample weights
    metric sums of (y, outputs)                     # left on the device
    loss, grads, sums = strategy.reduce(...)        # identity; the all-reduce under fit(distributed=True)
    if guard.check(loss): stop, nothing applied     # a NaN/inf loss (guards.py)
    optimizer.apply(grads, params, halt=guard.halt) # one fused update per weight, in place
    running sums += loss, metric sums

The model provides ``layers``, ``device``, ``built``/``build``, ``call(x, training,
final_activation)``, ``trainable_weights``, ``get_weights``/``set_weights`` and ``sample_shape()``.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import time

from .. import losses as _losses, metrics as _metrics, optimizers as _optimizers
from ..callbacks import CallbackList, History, format_evaluation
from ..errors import NotCompiledError
from ..layers import Workspace
from ..tensor import Tensor
from . import input_checks as checks
from .epoch_iterator import EpochIterator, SingleProcess, count_steps, to_device
from .gradients import TapelessGradients, compute_loss, loss_on_logits, make_gradients
from .guards import DeferredInterrupt, LossGuard
from .rollback import Unchanged
from .running_sums import CompiledMetrics, RunningSums
from .step_graphs import step_graphs_for
from .step_replays import step_replays_for


class _Run:
    """What one ``fit`` (or ``train_on_batch``) works with, gathered in one place."""

    def __init__(self, model, gradients, strategy, guard, data=None, callbacks=None, validation=None,
                 interrupt=None, batch_size=None):
        self.gradients, self.strategy, self.guard = gradients, strategy, guard
        self.params = model.trainable_weights
        self.output_activation = model.layers[-1].output_activation()
        self.data, self.callbacks, self.validation = data, callbacks, validation
        self.interrupt, self.batch_size = interrupt, batch_size
        self.sums = RunningSums(model.compiled_metrics)
        # the metrics' work arrays, reused from step to step on a GPU (the CPU's allocating path is cheaper)
        self.metric_workspaces = [Workspace(model.device.xp) for _ in model.compiled_metrics] \
            if model.device.is_gpu else None


def _on_the_model_device(method):
    """Run ``method`` with the model's GPU current (CuPy allocates and launches on the current GPU: without
    this a model on ``gpu:1`` would get its slots, flags and kernels on device 0)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.device.context:
            return method(self, *args, **kwargs)
    return run


class Trainer:
    """Keras' training API for a stack of layers: compile state, fit/evaluate/predict, one step."""

    _defer_loss_check = False     # tests set it to run the GPU's deferred loss check on NumPy

    def __init__(self):
        self.optimizer = self.loss = None
        self.metrics, self.weighted_metrics = [], []
        self.compiled_metrics = CompiledMetrics()
        self.compiled = False
        self.jit_compile = "auto"
        self.stop_training = False
        self.stop_reason = None     # why the last fit stopped early (non-finite loss), else None
        self.history = None
        self.epochs_completed = 0   # epochs finished by fit (saved by model.save; resume with initial_epoch=)
        self._batch_run = None      # (key, _Run) reused by train_on_batch
        self._last_fit = {}         # the last fit's gradient path and loss guard (for tests and debugging)

    # ------------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None, jit_compile="auto") -> None:
        """Choose the optimizer, loss and metrics by Keras name or object (validated now).

        ``weighted_metrics`` are averaged with the sample weights given to ``fit``/``evaluate``
        (``sample_weight`` or ``class_weight``); ``metrics`` ignore them, as in Keras.

        ``jit_compile``: ``'auto'``/``True`` let ``fit`` train without the GradientTape when every
        layer has array-level forward/backward and the loss an array form (bit-identical results,
        less Python per step; see :mod:`gpunet.trainers.gradients`); ``False`` always uses the tape.
        ``True`` on a GPU also captures the step into CUDA graphs, one launch per step after three
        steps per batch shape (:mod:`gpunet.trainers.step_graphs`; captured products come from a
        simpler kernel than cuBLAS, so the last bits differ from ``'auto'``); on the CPU either replays
        the recorded step (:mod:`gpunet.trainers.step_replays`; the same bits).
        """
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}")
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='categorical_crossentropy'")
        for name, value in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
            if value is not None and not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list such as ['accuracy'], got {value!r}")
        opt, loss_obj = _optimizers.get(optimizer), _losses.get(loss)
        self.metrics = [_metrics.get(m) for m in metrics or []]
        self.weighted_metrics = [_metrics.get(m) for m in weighted_metrics or []]
        self.compiled_metrics = CompiledMetrics(self.metrics, self.weighted_metrics)
        self.optimizer, self.loss, self.jit_compile = opt, loss_obj, jit_compile
        self.compiled = True
        self._batch_run = None

    # ---------------------------------------------------------------------- fit
    @_on_the_model_device
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_freq=1, distributed=False) -> History:
        """Train for ``epochs`` passes over ``(x, y)``; returns a :class:`~gpunet.callbacks.History`.

        x: array ``(n, *sample_shape)`` (uint8 or float); y: targets ``(n, ...)``. The data is
        moved to the model's device once; each step gathers a batch from a per-epoch permutation
        drawn on the host (so one seed gives the same batch order on every device).
        ``steps_per_epoch`` caps the batches per epoch (the data then continues from epoch to epoch,
        as in Keras); ``initial_epoch`` resumes a run (e.g. ``initial_epoch=model.epochs_completed``
        after :func:`load_model`). ``sample_weight`` (one weight per sample) or ``class_weight``
        ({class: weight}) weight the loss and the ``weighted_metrics``; ``validation_data`` may be
        ``(x, y)`` or ``(x, y, sample_weight)``; ``validation_freq`` (every N epochs, or a list of
        1-based epochs) says when to validate.

        Safety: a NaN/infinite batch loss stops training before that step is applied (the model
        keeps the last finite weights; ``model.stop_reason`` says which epoch and step); Ctrl-C
        takes effect after the step in flight (KeyboardInterrupt, weights of the last completed
        step, ``model.history`` so far).

        ``distributed=True``: data-parallel training over MPI (launch the script with ``mpirun -n N``;
        see :mod:`gpunet.distributed`). ``batch_size`` is then the global batch, split across the
        ranks; every rank must call ``fit`` with the whole dataset and ends with the same weights.
        """
        self._require_compiled("fit")
        batch_size, verbose, validation_freq = checks.check_fit_arguments(
            batch_size, epochs, initial_epoch, steps_per_epoch, validation_split, verbose, validation_freq)
        x, y = checks.check_data(self, x, y, "fit")
        w = checks.sample_weights(x, y, sample_weight, class_weight, "fit")
        strategy = self._strategy(distributed, "fit")
        if not strategy.is_root:
            verbose = 0              # rank 0 shows the progress
        x, y, w, vx, vy, vw = checks.validation_arrays(self, x, y, w, validation_data, validation_split)
        steps = count_steps(len(x), batch_size, steps_per_epoch)
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": len(x),
                  "verbose": verbose, "rank": strategy.rank}
        cbs = CallbackList(callbacks, self, params)
        cbs.check_before_fit(checks.logged_names(self, vx is not None))
        with Unchanged(self) as before:     # a failure before the first step leaves the model as it was
            run = self._start_fit(x, y, w, vx, vy, vw, validation_freq, batch_size, steps_per_epoch, shuffle,
                                  strategy, steps, initial_epoch, cbs)
        with run.interrupt, before.until_changed(lambda: self.optimizer.iterations), \
                run.graphs or contextlib.nullcontext():
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch, {})
                if not self._run_epoch(run, epoch):
                    break
            cbs.on_train_end({name: values[-1] for name, values in self.history.history.items()})
        return self.history

    def _start_fit(self, x, y, w, vx, vy, vw, validation_freq, batch_size, steps_per_epoch, shuffle, strategy,
                   steps, initial_epoch, cbs) -> _Run:
        """Build the model when unbuilt, move the data to the device, set up the run, start the callbacks."""
        if not self.built:
            self.build((None,) + tuple(x.shape[1:]))
        self._resolve_metrics(y.shape)
        interrupt = DeferredInterrupt()
        strategy.start(self, self.trainable_weights, len(x), len(self.compiled_metrics),
                       lambda: (interrupt.pending, self.stop_training))
        data = EpochIterator(x, y, w, batch_size, steps_per_epoch, shuffle, self.device, strategy)
        validation = None if vx is None else (to_device(self.device, vx), to_device(self.device, vy),
                                              None if vw is None else to_device(self.device, vw), validation_freq)
        guard = LossGuard(self.device, steps, initial_epoch, self.device.is_gpu or self._defer_loss_check)
        run = _Run(self, make_gradients(self, self.loss, self.jit_compile), strategy, guard, data, cbs, validation,
                   interrupt, batch_size)
        self.history, self.stop_training, self.stop_reason = cbs.history, False, None
        # CUDA graphs of the step (jit_compile=True on a GPU), or its recorded replays on the CPU
        run.graphs = step_graphs_for(self, run) or step_replays_for(self, run)
        self._last_fit = {"tapeless": isinstance(run.gradients, TapelessGradients), "guard": guard,
                          "graphs": run.graphs if self.device.is_gpu else None,
                          "replays": None if self.device.is_gpu else run.graphs}
        cbs.on_train_begin({})
        return run

    def _run_epoch(self, run, epoch) -> bool:
        """One epoch of :meth:`fit`; False when training must stop."""
        run.sums.reset()
        run.guard.start_epoch(epoch)
        steps = run.data.steps
        every = run.strategy.check_every(steps, run.guard.deferred)
        for step, x, y, w, (n_global, lo, hi), last in run.data.batches():
            run.callbacks.on_train_batch_begin(step)
            with run.strategy.batch_context(n_global, lo, hi):      # dropout masks: this process's rows
                ok = run.graphs.step(x, y, n_global, epoch * steps + step) if run.graphs else \
                    self.train_step(run, x, y, w, n_global, epoch * steps + step)
                if not ok:
                    return self._stop_at_non_finite_loss(run)
            check = (step + 1) % every == 0 or last
            # the deferred (GPU) loss check: where the host reads the logs anyway, or, across processes,
            # at the check steps, which are the same on every rank
            guard_due = check if run.strategy.is_distributed else run.callbacks.reads_logs_after(step + 1)
            if guard_due and run.guard.tripped():
                return self._stop_at_non_finite_loss(run)
            run.callbacks.on_train_batch_end(step, run.sums.logs)
            if check:
                interrupt, stop = run.strategy.agree(run.interrupt.pending, self.stop_training)
                if interrupt:
                    run.interrupt.pending = True
                    run.interrupt.check()
                if stop:
                    self.stop_training = True
                    break
        if run.guard.tripped():
            return self._stop_at_non_finite_loss(run)
        return self._end_epoch(run, epoch)

    def train_step(self, run, x, y, w, n_global, step_id, gradients=None, sums=None, apply=None) -> bool:
        """One optimizer step on a device batch (``w``: its sample weights, or None); False when its loss
        was NaN/infinite and it was not applied (checked at once on the CPU; on a GPU the device flag
        makes the update a no-op). ``gradients``/``sums``/``apply``: stand-ins for ``run.gradients``, the
        metrics' ``batch_sums`` and the optimizer's ``apply`` (the CPU's recorded steps, step_replays.py)."""
        if len(x):
            loss, grads, outputs = (gradients or run.gradients)(x, y, w)
            sums = (sums or self.compiled_metrics.batch_sums)(self.device, y, outputs, run.gradients.on_logits,
                                                              run.output_activation, w, run.metric_workspaces)
        else:   # fit(distributed=True): no rows of this batch here; still draw what the layers draw (dropout)
            self.call(Tensor.wrap(x, self.device), training=True)
            loss, grads, sums = None, None, ()
        loss, grads, sums = run.strategy.reduce(loss, grads, sums, len(x), n_global)
        if run.guard.check(loss, step_id):
            return False
        (apply or self.optimizer.apply)(grads, run.params, halt=run.guard.halt)
        run.sums.add(loss, n_global, sums)
        return True

    def _stop_at_non_finite_loss(self, run) -> bool:
        """Stop fit after the loss guard tripped; the weights are those of the last finite step."""
        epoch, step, value, skipped = run.guard.stop()
        self.optimizer.iterations -= skipped          # updates the device flag turned into no-ops
        self.stop_reason = (f"epoch {epoch + 1}, step {step + 1}/{run.guard.steps}: the loss is {value}; training "
                            "stopped and the model keeps the weights of the last step with a finite loss. "
                            "Try a lower learning rate, or check the data for extreme values")
        if run.strategy.is_root:                      # every rank stops here; rank 0 says so
            print(f"gpunet: {self.stop_reason}", file=sys.stderr)
        self.stop_training = True
        return False

    def _end_epoch(self, run, epoch) -> bool:
        """Validation, epoch count and callbacks at the end of an epoch; False when training must stop."""
        logs = run.sums.logs()
        if run.validation is not None and checks.validation_due(epoch, run.validation[3]):
            values, _, _ = self._evaluate_arrays(*run.validation[:3], run.batch_size, run.strategy)
            logs.update({"val_" + k: v for k, v in values.items()})
        if not self.stop_training:
            self.epochs_completed = epoch + 1   # before the callbacks, so a checkpoint saved now records it
        run.callbacks.on_epoch_end(epoch, logs)
        run.interrupt.pending, self.stop_training = run.strategy.agree_at_epoch_end(run.interrupt.pending,
                                                                                    self.stop_training)
        run.interrupt.check()
        return not self.stop_training

    @_on_the_model_device
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on one batch (Keras' ``train_on_batch``): the loss, ``[loss, *metrics]``
        with metrics, or a dict with ``return_dict``; ``nan`` entries when the loss was not finite
        (the step is then not applied)."""
        self._require_compiled("train_on_batch")
        x, y, w = self._batch_arrays(x, y, sample_weight, class_weight, "train_on_batch")
        key = (tuple(self.layers), self.optimizer, self.loss)
        if self._batch_run is None or self._batch_run[0] != key:
            guard = LossGuard(self.device, 1, 0, False)
            self._batch_run = (key, _Run(self, make_gradients(self, self.loss, self.jit_compile), SingleProcess(),
                                         guard))
        run = self._batch_run[1]
        run.sums.reset()
        if self.train_step(run, x, y, w, len(x), 0):
            logs = run.sums.logs()
        else:
            logs = {"loss": float("nan"), **{name: float("nan") for name in self.compiled_metrics.names}}
            run.guard.flag[...] = 0
        return self._results(logs, return_dict)

    @_on_the_model_device
    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """The loss (and metrics) of one batch, as ``evaluate`` computes them (Keras' ``test_on_batch``)."""
        self._require_compiled("test_on_batch")
        x, y, w = self._batch_arrays(x, y, sample_weight, None, "test_on_batch")
        logs, _, _ = self._evaluate_arrays(x, y, w, len(x), SingleProcess())
        return self._results(logs, return_dict)

    @_on_the_model_device
    def predict_on_batch(self, x):
        """The model's outputs for one batch, a host NumPy array (Keras' ``predict_on_batch``)."""
        return self.predict(x, batch_size=max(len(x), 1) if hasattr(x, "__len__") else None)

    def _batch_arrays(self, x, y, sample_weight, class_weight, where):
        """One checked batch on the device, with the model built and the metrics resolved."""
        x, y = checks.check_data(self, x, y, where)
        w = checks.sample_weights(x, y, sample_weight, class_weight, where)
        with Unchanged(self):
            if not self.built:
                self.build((None,) + tuple(x.shape[1:]))
            self._resolve_metrics(y.shape)
        return (to_device(self.device, x), to_device(self.device, y),
                None if w is None else to_device(self.device, w))

    # ------------------------------------------------------------- evaluate / predict
    @_on_the_model_device
    def evaluate(self, x=None, y=None, batch_size=None, verbose=1, sample_weight=None, distributed=False,
                 return_dict=False):
        """Loss (and metrics) on ``(x, y)``: a float, or ``[loss, *metrics]`` when metrics were compiled
        (a dict with ``return_dict=True``); ``sample_weight`` weighs the loss and the weighted metrics.

        ``distributed=True`` (every rank of an MPI job calls it with the whole data): each rank
        evaluates its part and the sums are reduced, so every rank returns the same values.
        """
        self._require_compiled("evaluate")
        batch_size = checks.batch_size_or_default(batch_size)
        x, y = checks.check_data(self, x, y, "evaluate")
        w = checks.sample_weights(x, y, sample_weight, None, "evaluate")
        strategy = self._strategy(distributed, "evaluate")
        with Unchanged(self):        # a failure leaves the model as it was (unbuilt, if it was)
            if not self.built:
                self.build((None,) + tuple(x.shape[1:]))
            self._resolve_metrics(y.shape)
            lo, hi = strategy.shard(0, len(x))
            logs, n, seconds = self._evaluate_arrays(to_device(self.device, x[lo:hi]), to_device(self.device, y[lo:hi]),
                                                     None if w is None else to_device(self.device, w[lo:hi]),
                                                     batch_size, strategy, sharded=True)
        if verbose and strategy.is_root:
            print(format_evaluation(-(-n // batch_size), seconds, logs))
        return self._results(logs, return_dict)

    def _evaluate_arrays(self, xd, yd, wd, batch_size, strategy, sharded=False):
        """``(logs, samples, seconds)`` of the loss and metrics over device arrays (``wd``: sample weights
        or None; this process's part of them, reduced over all processes)."""
        if not sharded:
            lo, hi = strategy.shard(0, len(xd))
            xd, yd, wd = xd[lo:hi], yd[lo:hi], None if wd is None else wd[lo:hi]
        on_logits = loss_on_logits(self, self.loss)
        output_activation = self.layers[-1].output_activation()
        sums = RunningSums(self.compiled_metrics)
        t0 = time.perf_counter()
        for lo in range(0, len(xd), batch_size):
            xt, yt = Tensor.wrap(xd[lo:lo + batch_size], self.device), Tensor.wrap(yd[lo:lo + batch_size], self.device)
            wb = None if wd is None else wd[lo:lo + batch_size]
            out = self.call(xt, training=False, final_activation=not on_logits)
            loss = compute_loss(self.loss, yt, out, on_logits, wb)
            sums.add(loss.data, len(xt), self.compiled_metrics.batch_sums(self.device, yt.data, out.data, on_logits,
                                                                          output_activation, wb))
        if strategy.is_distributed:
            sums.reduce_with(strategy)
        return sums.logs(), sums.count, time.perf_counter() - t0

    @_on_the_model_device
    def predict(self, x, batch_size=None, verbose=0):
        """Model outputs for ``x`` as a host NumPy array (final activations applied)."""
        batch_size = checks.batch_size_or_default(batch_size)
        x, _ = checks.check_data(self, x, None, "predict")
        with Unchanged(self):        # a failure leaves the model as it was (unbuilt, if it was)
            if not self.built:
                self.build((None,) + tuple(x.shape[1:]))
            xd = to_device(self.device, x)
            outs = [self.call(Tensor.wrap(xd[lo:lo + batch_size], self.device), training=False).data
                    for lo in range(0, len(xd), batch_size)]
        return self.device.to_host(self.device.xp.concatenate(outs))   # concatenate made a fresh array

    # ------------------------------------------------------------------- helpers
    def _results(self, logs, return_dict):
        if return_dict:
            return logs
        values = [logs["loss"]] + [logs[name] for name in self.compiled_metrics.names]
        return values if len(values) > 1 else values[0]

    def _resolve_metrics(self, y_shape):
        """Let 'accuracy' pick categorical, sparse or binary from the shapes of targets and outputs, as Keras 3 does."""
        for m in self.compiled_metrics:
            if isinstance(m, _metrics.Accuracy):
                m.resolve(self.loss, tuple(y_shape), (None,) + tuple(self.layers[-1].output_shape[1:]))

    def _strategy(self, distributed, where):
        """:class:`SingleProcess`, or for ``distributed=True`` the MPI data-parallel strategy."""
        if distributed not in (True, False):
            raise ValueError(f"{where}: distributed must be True or False, got {distributed!r}")
        if not distributed:
            return SingleProcess()
        from ..distributed import DataParallel
        return DataParallel(self.device)

    def _require_compiled(self, where):
        if not self.compiled:
            raise NotCompiledError(f"call model.compile(optimizer=..., loss=..., metrics=[...]) before {where}()")
        if not self.layers:
            raise ValueError(f"the model has no layers; add some with model.add(...) before {where}()")
