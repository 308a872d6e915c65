"""``Sequential``: a stack of layers with Keras' compile / fit / evaluate / predict.

Example (the chapter's listings 2.2–2.5, with ``keras`` replaced by ``gpunet``):
    >>> from gpunet import models, layers
    >>> from gpunet.utils import to_categorical
    >>> network = models.Sequential()
    >>> network.add(layers.Dense(512, activation='relu', input_shape=(28 * 28,)))
    >>> network.add(layers.Dense(10, activation='softmax'))
    >>> network.compile(optimizer='rmsprop', loss='categorical_crossentropy', metrics=['accuracy'])
    >>> x = gpunet.backend.numpy.random.default_rng(0).random((256, 784), dtype='float32')
    >>> y = to_categorical(gpunet.backend.numpy.arange(256) % 10)
    >>> history = network.fit(x, y, epochs=1, batch_size=128, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    >>> test_loss, test_acc = network.evaluate(x, y, verbose=0)
"""
from __future__ import annotations

import math
import os
import sys
import time

from . import backend, losses as _losses, metrics as _metrics, optimizers as _optimizers, random, saving
from .guards import DeferredInterrupt, LossGuard
from .train_step import FusedStep
from .autograd import GradientTape
from .callbacks import Callback, History, ProgbarLogger
from .errors import NotCompiledError, ShapeError
from .fileio import atomic_write
from .layers import Layer, Rescaling
from .tensor import Tensor

np = backend.numpy

__all__ = ["Sequential", "load_model"]

load_model = saving.load_model


class Sequential:
    """A linear stack of layers.

    Args:
        layers: optional list of layers to add.
        device: where weights live and training runs (``'cpu'``, ``'gpu'``, ``'gpu:1'`` ...;
            default: :func:`gpunet.get_default_device` at construction).
        name: the model's name (shown by :meth:`summary`).
    """

    def __init__(self, layers=None, device=None, name: str | None = None):
        self.device = backend.device(device)
        self.name = name or "sequential"
        self.layers: list[Layer] = []
        self.built = False
        self.optimizer = self.loss = None
        self.metrics = []
        self.compiled = False
        self.jit_compile = "auto"
        self.stop_training = False
        self.stop_reason = None     # why the last fit stopped early (non-finite loss), else None
        self.history = None
        self.epochs_completed = 0   # epochs finished by fit (saved by model.save; resume with initial_epoch=)
        self._input_shape = None
        self._dp = None             # the DataParallel engine during fit(distributed=True)
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------ structure
    def add(self, layer: Layer) -> None:
        """Append a layer; a first layer with ``input_shape`` builds the model right away."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a gpunet layer (e.g. layers.Dense(...)), got {type(layer).__name__}")
        if any(layer is l for l in self.layers):
            raise ValueError(f"layer {layer.name!r} is already in this model")
        if layer.built and layer.device != self.device:
            raise ValueError(f"layer {layer.name!r} lives on {layer.device} but the model is on {self.device}")
        self.layers.append(layer)
        if self.built:
            layer._ensure_built(self.layers[-2].output_shape if len(self.layers) > 1 else self._input_shape,
                                self.device)
        elif len(self.layers) == 1 and layer.input_shape is not None:
            self.build((None,) + layer.input_shape)

    def build(self, input_shape) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (batch axis first)."""
        shape = tuple(input_shape)
        self._input_shape = shape
        for layer in self.layers:
            layer._ensure_built(shape, self.device)
            shape = layer.output_shape
        self.built = True

    @property
    def weights(self) -> list[Tensor]:
        return [w for layer in self.layers for w in layer.weights]

    trainable_weights = weights

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self) -> list:
        """Host NumPy copies of all weights, layer by layer."""
        return [w.numpy() for w in self.weights]

    def set_weights(self, values) -> None:
        """Replace all weights with host arrays (shapes checked for all before any change)."""
        values = [np.asarray(v) for v in values]
        ws = self.weights
        if len(values) != len(ws):
            raise ValueError(f"model has {len(ws)} weight arrays, got {len(values)}")
        for w, v in zip(ws, values):
            if v.shape != w.shape:
                raise ShapeError(f"weight {w.name!r}: expected shape {w.shape}, got {v.shape}")
        for w, v in zip(ws, values):
            w.data[...] = w.device.asarray(v, dtype=w.dtype)

    def summary(self, print_fn=print) -> None:
        """Print a table of layers, output shapes and parameter counts."""
        rule, thick = "_" * 65, "=" * 65
        lines = [f'Model: "{self.name}"', rule, f" {'Layer (type)':<28}{'Output Shape':<26}{'Param #'}", thick]
        for i, layer in enumerate(self.layers):
            shape = str(layer.output_shape) if layer.built else "(unbuilt)"
            lines.append(f" {layer.name + ' (' + type(layer).__name__ + ')':<28}{shape:<26}{layer.count_params():,}")
            if i == len(self.layers) - 1:
                lines.append(thick)
        total = self.count_params()
        lines += [f"Total params: {total:,} ({total * 4 / 2 ** 20:.2f} MB)", f"Trainable params: {total:,}",
                  "Non-trainable params: 0", rule]
        print_fn("\n".join(lines))

    # ------------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, jit_compile="auto") -> None:
        """Choose the optimizer, loss and metrics by Keras name or object (validated now).

        ``jit_compile``: ``'auto'``/``True`` let ``fit`` train plain Dense stacks with the fused
        step of :mod:`gpunet.train_step` (bit-identical results, less overhead); ``False``
        always uses the GradientTape.
        """
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}")
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='categorical_crossentropy'")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list such as ['accuracy'], got {metrics!r}")
        opt = _optimizers.get(optimizer)
        loss_obj = _losses.get(loss)
        mets = [_metrics.get(m, loss_obj) for m in metrics or []]
        self.optimizer, self.loss, self.metrics = opt, loss_obj, mets
        self.jit_compile = jit_compile
        self.compiled = True

    def _fused(self) -> bool:
        """Train on logits with a fused loss when the last layer is softmax/sigmoid and the loss matches."""
        last = self.layers[-1] if self.layers else None
        act = getattr(last, "activation_name", None)
        return (self.loss.fused_activation is not None and not self.loss.from_logits
                and act == self.loss.fused_activation)

    # -------------------------------------------------------------------- forward
    def _forward(self, x: Tensor, training: bool, logits: bool = False) -> Tensor:
        """The layers on ``x``; ``logits=True`` stops before the last layer's softmax/sigmoid."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            layer._ensure_built(x.shape, self.device)
            x = layer.call(x, training=training, logits=True) if i == last and logits else \
                layer.call(x, training=training)
        return x

    def __call__(self, x, training: bool = False) -> Tensor:
        """Run the layers on ``x`` (a Tensor or array); differentiable under a GradientTape."""
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x), device=self.device)
        if x.dtype.kind != "f":
            x = x.astype("float32")
        if not self.built:
            self.build((None,) + x.shape[1:])
        return self._forward(x, training)

    # ------------------------------------------------------------------- data
    def _check_data(self, x, y=None, where="fit"):
        """Validate and convert inputs before anything changes; returns host/device arrays."""
        x = _as_array(x, "x", where)
        if x.ndim == 0:
            raise ValueError(f"{where}: x is a single number; pass an array of samples, shape (n, features)")
        if len(x) == 0:
            raise ValueError(f"{where}: x is empty (shape {x.shape}); pass at least one sample")
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{where}: x must hold numbers, got dtype {x.dtype}; convert it with x.astype('float32')")
        if x.dtype.kind == "f" and not _all_finite(x):
            raise ValueError(f"{where}: x contains NaN or infinite values; clean or impute the data first")
        expected = self._expected_sample_shape()
        if expected is not None and tuple(x.shape[1:]) != expected:
            hint = (f"reshape the data, e.g. x.reshape((len(x), {math.prod(expected)})), or start the model with "
                    "layers.Flatten()") if len(expected) == 1 else "reshape the data to match"
            raise ShapeError(f"{where}: layer {self.layers[0].name!r} expects samples of shape {expected}, got "
                             f"{tuple(x.shape[1:])} (x has shape {tuple(x.shape)}); {hint}")
        if y is None:
            return x, None
        y = _as_array(y, "y", where)
        if y.ndim == 0:
            raise ValueError(f"{where}: y is a single number; pass one target per sample, shape (n,) or (n, units)")
        if len(y) != len(x):
            raise ValueError(f"{where}: x has {len(x)} samples but y has {len(y)}; they must have the same length")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{where}: y must hold numbers, got dtype {y.dtype}")
        if y.dtype.kind == "f" and not _all_finite(y):
            raise ValueError(f"{where}: y contains NaN or infinite values; clean the targets first")
        self._check_targets(y, where)
        return x, y

    def _expected_sample_shape(self):
        first = self.layers[0] if self.layers else None
        if first is not None and first.input_shape is not None:
            return tuple(first.input_shape)
        if self.built and self._input_shape is not None and None not in self._input_shape[1:]:
            return tuple(self._input_shape[1:])
        return None

    def _check_targets(self, y, where):
        last = self.layers[-1] if self.layers else None
        units = getattr(last, "units", None)
        if units is None:
            return
        sparse = isinstance(self.loss, _losses.SparseCategoricalCrossentropy)
        if sparse:
            if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
                raise ShapeError(f"{where}: sparse_categorical_crossentropy needs integer labels of shape (n,), got "
                                 f"y of shape {tuple(y.shape)}; for one-hot targets use "
                                 "loss='categorical_crossentropy'")
            if y.dtype.kind == "f" and y.size and not np.all(np.mod(y, 1) == 0):
                raise ValueError(f"{where}: sparse_categorical_crossentropy needs integer class labels, "
                                 f"got non-integer values in y")
            lo, hi = (int(y.min()), int(y.max())) if y.size else (0, 0)
            if lo < 0 or hi >= units:
                raise ValueError(f"{where}: labels must lie in [0, {units}) for the {units}-unit output layer "
                                 f"{last.name!r}; found min {lo}, max {hi}")
        elif isinstance(self.loss, _losses.CategoricalCrossentropy):
            if y.ndim != 2 or y.shape[1] != units:
                hint = ("integer labels: one-hot encode them with gpunet.utils.to_categorical(y) or use "
                        "loss='sparse_categorical_crossentropy'") if y.ndim == 1 else \
                    f"the output layer {last.name!r} has {units} units"
                raise ShapeError(f"{where}: categorical_crossentropy needs one-hot targets of shape (n, {units}), "
                                 f"got y of shape {tuple(y.shape)}; {hint}")
        elif isinstance(self.loss, (_losses.MeanSquaredError, _losses.MeanAbsoluteError, _losses.BinaryCrossentropy)):
            out = tuple(last.output_shape[1:]) if last.output_shape else None
            if out is not None and tuple(y.shape[1:]) != out and not (out == (1,) and y.ndim == 1):
                raise ShapeError(f"{where}: loss {self.loss.name!r} needs one target per output, shape (n, "
                                 f"{', '.join(map(str, out))}), got y of shape {tuple(y.shape)}; the output layer "
                                 f"{last.name!r} has {units} units")

    def _to_device(self, a):
        """One host-to-device transfer of a whole array (float64 -> float32; uint8 stays uint8)."""
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        return self.device.asarray(a)

    # ---------------------------------------------------------------------- fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, steps_per_epoch=None,
            distributed=False) -> History:
        """Train for ``epochs`` passes over ``(x, y)``; returns a :class:`~gpunet.callbacks.History`.

        x: array ``(n, *sample_shape)`` (uint8 or float); y: targets ``(n, ...)``. The data is
        moved to the model's device once; each step gathers a batch from a per-epoch permutation
        drawn on the host (so one seed gives the same batch order on every device).
        ``steps_per_epoch`` caps the batches per epoch; ``initial_epoch`` resumes a run (e.g.
        ``initial_epoch=model.epochs_completed`` after :func:`load_model`).

        Safety: a NaN/infinite batch loss stops training before that step is applied (the model
        keeps the last finite weights; ``model.stop_reason`` says which epoch and step); Ctrl-C
        takes effect after the step in flight (KeyboardInterrupt, weights of the last completed
        step, ``model.history`` so far).

        ``distributed=True``: data-parallel training over MPI (launch the script with ``mpirun -n N``;
        see :mod:`gpunet.distributed`). ``batch_size`` is then the global batch, split across the
        ranks; every rank must call ``fit`` with the whole dataset and ends with the same weights.
        """
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else batch_size
        _check_int("batch_size", batch_size, 1)
        _check_int("epochs", epochs, 0)
        _check_int("initial_epoch", initial_epoch, 0)
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must lie in [0, 1), got {validation_split!r}")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        verbose = 1 if verbose == "auto" else verbose
        x, y = self._check_data(x, y, "fit")
        dp = self._data_parallel(distributed, "fit")
        if dp is not None and not dp.ctx.is_root:
            verbose = 0              # rank 0 shows the progress
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            vx, vy = self._check_data(*validation_data, where="fit (validation_data)")
        elif validation_split:
            split = int(len(x) * (1 - validation_split))
            if split == 0 or split == len(x):
                raise ValueError(f"validation_split={validation_split} leaves no training or no validation "
                                 f"samples out of {len(x)}")
            x, vx, y, vy = x[:split], x[split:], y[:split], y[split:]
        else:
            vx = vy = None
        if not self.built:
            self.build((None,) + tuple(x.shape[1:]))
        self._fused_flag = self._fused()
        self._step = FusedStep.build(self) if self.jit_compile else None

        n = len(x)
        steps = -(-n // batch_size)
        if steps_per_epoch is not None:
            _check_int("steps_per_epoch", steps_per_epoch, 1)
            steps = min(steps, steps_per_epoch)
        params = self.trainable_weights
        if dp is not None:   # same data length and model on every rank, then rank 0's weights everywhere
            dp.start(params, n, len(self.metrics))
        xd, yd = self._to_device(x), self._to_device(y)
        if vx is not None:   # moved once per fit, not at every epoch's validation
            vx, vy = self._to_device(vx), self._to_device(vy)
        for m in self.metrics:
            if isinstance(m, _metrics.Accuracy):
                m.resolve(self.loss, y.shape, (None,) + tuple(self.layers[-1].output_shape[1:]))

        history = History()
        cbs = [history] + list(callbacks or [])
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be gpunet.callbacks.Callback instances, got {type(cb).__name__}")
        progress = ProgbarLogger(verbose) if verbose else None
        if progress:
            cbs.insert(1, progress)
        batch_logs = any(cb.wants_batch_logs for cb in cbs)
        self._fit_params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": n}
        history.params = dict(self._fit_params)
        for cb in cbs:
            cb.set_model(self)
        self.history = history
        self.stop_training = False
        self.stop_reason = None
        self._dp = dp
        try:
            with DeferredInterrupt() as interrupt, LossGuard(self, steps, initial_epoch) as self._guard:
                for cb in cbs:
                    cb.on_train_begin()
                for epoch in range(initial_epoch, epochs):
                    for cb in cbs:
                        cb.on_epoch_begin(epoch)
                    if not self._fit_epoch(epoch, xd, yd, batch_size, steps, shuffle, params, cbs, progress,
                                           batch_logs, vx, vy, interrupt):
                        break
                for cb in cbs:
                    cb.on_train_end()
        finally:
            self._dp = None
        return history

    def _data_parallel(self, distributed, where):
        """The :class:`~gpunet.distributed.DataParallel` engine for ``distributed=True`` (None otherwise)."""
        if distributed not in (True, False):
            raise ValueError(f"{where}: distributed must be True or False, got {distributed!r}")
        if not distributed:
            return None
        if self._dp is not None:          # evaluate called by fit for validation
            return self._dp
        from .distributed import DataParallel
        return DataParallel(self)

    def _fit_epoch(self, epoch, xd, yd, batch_size, steps, shuffle, params, cbs, progress, batch_logs, vx, vy,
                   interrupt) -> bool:
        """One epoch of :meth:`fit`; False when training must stop."""
        if self._dp is not None:
            return self._fit_epoch_distributed(self._dp, epoch, xd, yd, batch_size, steps, shuffle, params, cbs,
                                               progress, batch_logs, vx, vy, interrupt)
        n = len(xd)
        order = random.generator().permutation(n) if shuffle else None
        order_d = self.device.asarray(order) if shuffle else None
        sums = _Sums(self.device.xp, len(self.metrics))
        for step in range(steps):
            lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
            xb, yb = _gather(xd, yd, order_d, lo, hi)
            if self._train_step(xb, yb, params, sums, epoch * steps + step) or \
                    ((batch_logs or progress is not None and progress.wants_refresh(step + 1))
                     and self._guard.tripped()):     # deferred (GPU) check, when the loss is read anyway
                return self._stop_at_non_finite_loss()
            interrupt.check()
            self._report_step(step, sums, cbs, progress, batch_logs)
            if self.stop_training:
                break
        if self._guard.tripped():
            return self._stop_at_non_finite_loss()
        return self._end_epoch(epoch, sums, batch_size, cbs, vx, vy, interrupt)

    def _report_step(self, step, sums, cbs, progress, batch_logs) -> None:
        """Batch-end callbacks (when some want them) and the progress bar (when due) after a step."""
        if batch_logs:
            logs = sums.logs(self, last_loss=True)
            for cb in cbs:
                cb.on_train_batch_end(step, logs)
        if progress is not None and progress.wants_refresh(step + 1):
            progress.refresh(step + 1, sums.logs(self))

    def _end_epoch(self, epoch, sums, batch_size, cbs, vx, vy, interrupt) -> bool:
        """Validation, epoch count and callbacks at the end of an epoch; False when training must stop."""
        logs = sums.logs(self)
        if vx is not None:
            vals = self.evaluate(vx, vy, batch_size=batch_size, verbose=0, _checked=True,
                                 distributed=self._dp is not None)
            vals = vals if isinstance(vals, list) else [vals]
            logs.update({"val_" + k: v for k, v in zip(["loss"] + [m.name for m in self.metrics], vals)})
        if not self.stop_training:
            self.epochs_completed = epoch + 1   # before the callbacks, so a checkpoint saved now records it
        for cb in cbs:
            cb.on_epoch_end(epoch, logs)
        if self._dp is not None:              # every rank takes the same decision: any rank's Ctrl-C or stop
            pending, stop = self._dp.sum_host([interrupt.pending, self.stop_training])
            interrupt.pending, self.stop_training = pending > 0, stop > 0
        interrupt.check()
        return not self.stop_training

    def _fit_epoch_distributed(self, dp, epoch, xd, yd, batch_size, steps, shuffle, params, cbs, progress,
                               batch_logs, vx, vy, interrupt) -> bool:
        """:meth:`_fit_epoch` for ``fit(distributed=True)``: this rank computes its shard of every global
        batch; one all-reduce per step gives every rank the global gradient, loss and metrics, and every
        decision to stop (non-finite loss, Ctrl-C, ``stop_training``) is taken from those reduced values,
        at the same step on every rank."""
        n = len(xd)
        order_d = None
        if shuffle:   # every rank draws (keeping the generators in step), rank 0's order is used
            order_d = self.device.asarray(dp.order(random.generator().permutation(n)))
        sums = _Sums(self.device.xp, len(self.metrics))
        every = dp.check_every(steps, self._guard.deferred)
        for step in range(steps):
            glo, ghi = step * batch_size, min(n, (step + 1) * batch_size)
            lo, hi = dp.shard(glo, ghi)
            xb, yb = _gather(xd, yd, order_d, lo, hi)
            with random.batch_shard(ghi - glo, lo - glo, hi - glo):     # dropout masks: one process's rows
                stopped = self._distributed_train_step(dp, xb, yb, params, sums, epoch * steps + step, ghi - glo,
                                                       interrupt.pending)
            if stopped:
                return self._stop_at_non_finite_loss()
            agreed_stop = False
            if (step + 1) % every == 0 or step + 1 == steps:
                if self._guard.tripped():
                    return self._stop_at_non_finite_loss()
                agreed_interrupt, agreed_stop = dp.flags()
                if agreed_interrupt:
                    interrupt.pending = True
                    interrupt.check()
            self._report_step(step, sums, cbs, progress, batch_logs)
            if agreed_stop:
                self.stop_training = True
                break
        if self._guard.tripped():
            return self._stop_at_non_finite_loss()
        return self._end_epoch(epoch, sums, batch_size, cbs, vx, vy, interrupt)

    def _stop_at_non_finite_loss(self) -> bool:
        """Stop fit after the loss guard tripped; the weights are those of the last finite step."""
        epoch, step, value = self._guard.stop()
        self.stop_reason = (f"epoch {epoch + 1}, step {step + 1}/{self._guard.steps}: the loss is {value}; training "
                            "stopped and the model keeps the weights of the last step with a finite loss. "
                            "Try a lower learning rate, or check the data for extreme values")
        if self._dp is None or self._dp.ctx.is_root:      # every rank stops here; rank 0 says so
            print(f"gpunet: {self.stop_reason}", file=sys.stderr)
        self.stop_training = True
        return False

    def _train_step(self, xb, yb, params, sums, step_id=0) -> bool:
        """One optimizer step on a device batch; the running sums stay on the device.

        Returns True when the loss was NaN/infinite and the step was not applied (see
        :class:`~gpunet.guards.LossGuard`: checked at once on CPU, later on a GPU).
        """
        if self._step is not None:
            return self._fused_train_step(xb, yb, params, sums, step_id)
        tape, y, out, loss, fused = self._taped_loss(xb, yb)
        if self._guard.check(loss.data, step_id):
            return True
        grads = tape.gradient(loss, params)
        self.optimizer._apply([(g, p) for g, p in zip(grads, params) if g is not None])  # shapes hold by construction
        sums.add(loss.data, len(xb), self._metric_sums(y, out, fused))
        return False

    def _distributed_train_step(self, dp, xb, yb, params, sums, step_id, n_global, interrupt) -> bool:
        """One step of ``fit(distributed=True)`` on this rank's shard ``xb`` of a global batch of
        ``n_global`` samples (the shard may be empty); True when the global loss was non-finite."""
        n = len(xb)
        if n:
            loss, grads, metric_sums = self._loss_and_gradients(xb, yb, params)
        else:    # no rows here (a last batch smaller than the ranks): still draw what the layers draw (dropout)
            loss, grads, metric_sums = None, None, ()
            if self._step is None:
                self._forward(Tensor._wrap(self._as_float(xb), self.device), training=True)
        grads, extra = dp.reduce(grads, loss, metric_sums, n, n_global, interrupt, self.stop_training)
        loss = extra[dp.LOSS]
        if self._guard.check(loss, step_id):
            return True
        self.optimizer._apply(list(zip(grads, params)))
        sums.add(loss, n_global, [extra[dp.METRICS + i] for i in range(len(self.metrics))])
        return False

    def _loss_and_gradients(self, xb, yb, params):
        """``(loss, gradient arrays in params order, metric sums)`` of one batch; nothing applied."""
        if self._step is not None:
            loss, logits = self._step.forward(self._as_float(xb), yb)
            grads = self._step.backward()
            return loss, grads, self._metric_sums(Tensor._wrap(yb, self.device), Tensor._wrap(logits, self.device),
                                                  True)
        tape, y, out, loss, fused = self._taped_loss(xb, yb)
        grads = [p.device.xp.zeros_like(p.data) if g is None else g.data if isinstance(g, Tensor) else g
                 for g, p in zip(tape.gradient(loss, params), params)]
        return loss.data, grads, self._metric_sums(y, out, fused)

    def _taped_loss(self, xb, yb):
        """The training forward pass of a batch under a GradientTape: ``(tape, y, out, loss, on_logits)``;
        ``out`` are logits when the loss is fused with the last layer's softmax/sigmoid."""
        x = Tensor._wrap(self._as_float(xb), self.device)
        y = Tensor._wrap(yb, self.device)
        fused = self._fused_flag
        with GradientTape() as tape:
            out = self._forward(x, training=True, logits=fused)
            loss = self.loss.from_logits_loss(y, out) if fused else self.loss(y, out)
        return tape, y, out, loss, fused

    def _fused_train_step(self, xb, yb, params, sums, step_id):
        """:meth:`_train_step` through :class:`~gpunet.train_step.FusedStep` (same arithmetic, no tape)."""
        loss, logits = self._step.forward(self._as_float(xb), yb)
        if self._guard.check(loss, step_id):
            return True
        self.optimizer._apply(list(zip(self._step.backward(), params)))
        sums.add(loss, len(xb), self._metric_sums(Tensor._wrap(yb, self.device), Tensor._wrap(logits, self.device),
                                                  True))
        return False

    def _batches(self, xd, yd, batch_size):
        """``(x, y)`` Tensors of consecutive device batches (``y`` None when ``yd`` is None)."""
        for lo in range(0, len(xd), batch_size):
            xt = Tensor._wrap(self._as_float(xd[lo:lo + batch_size]), self.device)
            yield xt, None if yd is None else Tensor._wrap(yd[lo:lo + batch_size], self.device)

    def _as_float(self, xb):
        """Integer batches become float32 here, unless a first Rescaling layer converts them in one pass."""
        if xb.dtype.kind == "f" or (self.layers and isinstance(self.layers[0], Rescaling)):
            return xb
        return xb.astype(np.float32)

    def _metric_sums(self, y, out, logits):
        if not self.metrics:
            return ()
        probs = None
        res = []
        for m in self.metrics:
            if m.needs_probabilities and logits:
                if probs is None:
                    probs = self.layers[-1].activation(out)
                res.append(m.batch_sum(y, probs, logits=False))
            else:
                res.append(m.batch_sum(y, out, logits=logits))
        return res

    # ------------------------------------------------------------- evaluate / predict
    def evaluate(self, x=None, y=None, batch_size=None, verbose=1, distributed=False, _checked=False):
        """Loss (and metrics) on ``(x, y)``: a float, or ``[loss, *metrics]`` when metrics were compiled.

        ``distributed=True`` (every rank of an MPI job calls it with the whole data): each rank
        evaluates its part and the sums are reduced, so every rank returns the same values.
        """
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else batch_size
        _check_int("batch_size", batch_size, 1)
        if not _checked:
            x, y = self._check_data(x, y, "evaluate")
        dp = self._data_parallel(distributed, "evaluate")
        if dp is not None:
            lo, hi = dp.shard(0, len(x))
            x, y = x[lo:hi], y[lo:hi]
            verbose = verbose if dp.ctx.is_root else 0
        if not self.built:
            self.build((None,) + tuple(x.shape[1:]))
        fused = self._fused()
        for m in self.metrics:
            if isinstance(m, _metrics.Accuracy):
                m.resolve(self.loss, y.shape, (None,) + tuple(self.layers[-1].output_shape[1:]))
        xd, yd = self._to_device(x), self._to_device(y)
        sums = _Sums(self.device.xp, len(self.metrics))
        n = len(xd)
        t0 = time.perf_counter()
        for xt, yt in self._batches(xd, yd, batch_size):
            out = self._forward(xt, training=False, logits=fused)
            loss = self.loss.from_logits_loss(yt, out) if fused else self.loss(yt, out)
            sums.add(loss.data, len(xt), self._metric_sums(yt, out, fused))
        if dp is not None:
            sums.reduce_with(dp)
            n = sums.count
        logs = sums.logs(self)
        if verbose:
            steps = -(-n // batch_size)
            dt = time.perf_counter() - t0
            from .callbacks import _fmt_step, _fmt_time, format_logs
            print(f"{steps}/{steps} - {_fmt_time(dt)} {_fmt_step(dt / steps)} - {format_logs(logs)}")
        values = [logs["loss"]] + [logs[m.name] for m in self.metrics]
        return values if self.metrics else values[0]

    def predict(self, x, batch_size=None, verbose=0):
        """Model outputs for ``x`` as a host NumPy array (final activations applied)."""
        batch_size = 32 if batch_size is None else batch_size
        _check_int("batch_size", batch_size, 1)
        x, _ = self._check_data(x, None, "predict")
        if not self.built:
            self.build((None,) + tuple(x.shape[1:]))
        xd = self._to_device(x)
        outs = [self._forward(xt, training=False).data for xt, _ in self._batches(xd, None, batch_size)]
        return self.device.to_host(self.device.xp.concatenate(outs))   # concatenate made a fresh array

    # --------------------------------------------------------------- save / load
    def save(self, filepath) -> None:
        """Write a full training checkpoint (architecture, weights, optimizer state, epochs
        completed, RNG state) to ``filepath`` atomically; read it with :func:`load_model`.
        See :mod:`gpunet.saving`."""
        saving.save_model(self, filepath)

    def save_weights(self, filepath) -> None:
        """Write all weights to ``filepath`` (NumPy ``.npz``), atomically: a crash leaves the
        previous file intact."""
        if not self.built:
            raise ValueError("the model has no weights yet: build it (give the first layer input_shape, "
                             "or call fit/predict) before save_weights")
        arrays = {_weight_key(i, w): w.numpy() for i, w in enumerate(self.weights)}
        with atomic_write(filepath) as f:
            np.savez(f, **arrays)

    def load_weights(self, filepath) -> None:
        """Load weights saved by :meth:`save_weights` (or the weights of a :meth:`save` checkpoint);
        the model is unchanged if anything does not match."""
        if not self.built:
            raise ValueError("build the model before load_weights (give the first layer input_shape, or call "
                             "model.build((None, features)))")
        arrays = _read_npz(filepath)
        prefix = "weight/" if "config" in arrays else "w"     # a full checkpoint (model.save) or save_weights
        keys = sorted(k for k in arrays if k.startswith(prefix))
        ws = self.weights
        for i, w in enumerate(ws):
            if i >= len(keys):
                raise ValueError(f"{filepath}: has {len(keys)} weight arrays but the model has {len(ws)}; "
                                 f"first missing: {w.name!r} of shape {w.shape}")
            found = arrays[keys[i]].shape
            if found != w.shape:
                raise ShapeError(f"{filepath}: weight {w.name!r} (layer {w.name.split('/')[0]!r}) expects shape "
                                 f"{w.shape}, the file has {found}; the file was saved from another architecture")
        if len(keys) != len(ws):
            raise ValueError(f"{filepath}: has {len(keys)} weight arrays but the model has {len(ws)}")
        self.set_weights([arrays[k] for k in keys])

    def _require_compiled(self, where):
        if not self.compiled:
            raise NotCompiledError(f"call model.compile(optimizer=..., loss=..., metrics=[...]) before {where}()")
        if not self.layers:
            raise ValueError(f"the model has no layers; add some with model.add(...) before {where}()")


class _Sums:
    """Running per-epoch sums of loss and metrics, kept on the device until displayed."""

    def __init__(self, xp, n_metrics):
        self.xp = xp
        self.loss = 0.0
        self.last = None
        self.metrics = [0.0] * n_metrics
        self.count = 0

    def add(self, loss, n, metric_sums):
        self.loss = self.loss + loss * n
        self.last = loss
        for i, s in enumerate(metric_sums):
            self.metrics[i] = self.metrics[i] + s
        self.count += n

    def reduce_with(self, dp) -> None:
        """Replace the sums by their totals over all ranks (host floats)."""
        totals = dp.sum_host([float(self.loss), *(float(m) for m in self.metrics), self.count])
        self.loss, self.metrics, self.count = totals[0], totals[1:-1], int(totals[-1])

    def logs(self, model, last_loss=False) -> dict:
        if not self.count:
            return {"loss": math.nan, **{m.name: math.nan for m in model.metrics}}
        out = {"loss": float(self.last) if last_loss else float(self.loss) / self.count}
        for m, s in zip(model.metrics, self.metrics):
            out[m.name] = float(s) / self.count
        return out


def _gather(xd, yd, order_d, lo, hi):
    """Rows ``lo:hi`` of the epoch's order (``order_d`` a device permutation, or None: no shuffle)."""
    if order_d is None:
        return xd[lo:hi], yd[lo:hi]
    idx = order_d[lo:hi]
    return xd.take(idx, axis=0), yd.take(idx, axis=0)


def _weight_key(i, w):
    return f"w{i:04d}:{w.name}"


def _as_array(a, name, where):
    if isinstance(a, Tensor):
        return a.numpy()
    if a is None:
        raise ValueError(f"{where}: {name} is missing")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{where}: {name} cannot be turned into a numeric array ({exc})") from None
    if arr.dtype == object:
        raise TypeError(f"{where}: {name} has dtype object (ragged or mixed data); pass a numeric array, "
                        "e.g. np.asarray(data, dtype='float32')")
    return arr


def _all_finite(a) -> bool:
    """No NaN or inf in the float array ``a``: min and max propagate both, and unlike
    ``isfinite(a).all()`` they allocate no array as large as the data."""
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _read_npz(filepath):
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"no weights file at {filepath!r}")
    import zipfile
    try:
        with np.load(filepath, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        raise ValueError(f"{filepath}: not a readable gpunet weights file (truncated or corrupt: {exc}); "
                         "the model was left unchanged") from None
