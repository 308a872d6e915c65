"""The optimizer base class: Keras 3's arguments, per-parameter slots, one update per step, state.

A subclass states its rule once, as Chainer's optimizers do: ``update_core_cpu`` (the NumPy
twin, in place) and ``update_core_gpu`` (one CUDA kernel from the ``.cu`` file beside it),
both given the gradient, the weight array, the slots and ``decay`` (``weight_decay *
learning_rate`` for this weight, 0.0 without weight decay: both apply Keras' decoupled decay
``w -= w * decay`` before the update, the kernel behind the loss guard's halt flag; decay applies
where its float32 value is not 0). Kernel and twin follow one arithmetic contract: the same
operations in the same order, each rounded on its own, with the scalars computed once on the host
(each optimizer's ``constants(dtype)``) and the flags decided there, so they give the same bits
(``tests/test_kernel_contracts.py``). :meth:`Optimizer.update_step` picks one per parameter (the
kernel only for flat C-ordered float32 buffers, :func:`kernel_ready`; on the CPU ``update_core_host``, the
same kernel built for the CPU, where a subclass provides it). A custom optimizer may instead override
``build_slots(param)`` and ``update_step(grad, param, slots)`` (gpunet's earlier interface),
which still works (without weight decay).

Per step, on the host: the learning rate (a float, a schedule or a callable, evaluated once at the
step count before the step, as Keras does; a non-finite rate is refused before the step), gradient
clipping (device array operations), then the fused updates. Hyper-parameters may be Python or NumPy
numbers; non-finite ones are refused (ValueError) at construction and by the ``learning_rate`` setter.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import re
import warnings

from .. import backend
from ..errors import DeviceMismatchError, ShapeError
from ..kernels import cuda
from ..tensor import Tensor
from . import clipping, schedules
from .schedules import (LearningRateSchedule, check_fraction, check_iterations, check_optional,  # noqa: F401
                        check_positive, is_number)

FLOAT32 = backend.numpy.dtype("float32")     # what the CUDA update kernels take
_names: dict = {}                            # Keras' auto names: prefix -> instances named so far


def auto_name(cls_name: str) -> str:
    """Keras' default optimizer name: the class name in snake case, ``_1``, ``_2``... for later ones."""
    prefix = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", cls_name)))
    prefix = prefix.lower()
    n = _names.get(prefix, 0)
    _names[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def decay_weights(xp, w, decay, scratch) -> None:
    """Keras' decoupled weight decay in place, ``w -= w * decay`` (the kernels' arithmetic)."""
    w -= xp.multiply(w, w.dtype.type(decay), out=scratch)


def kernel_ready(g, w, slots) -> bool:
    """Can an update kernel run: it indexes ``w``, ``g`` and every slot as one flat C-ordered float32
    buffer, so all must be C-contiguous float32 arrays of ``w``'s shape (an F-ordered weight would be
    updated with a transposed gradient)."""
    return w.dtype == FLOAT32 and g.dtype == FLOAT32 and g.shape == w.shape and w.flags.c_contiguous and \
        g.flags.c_contiguous and all(s.dtype == FLOAT32 and s.shape == w.shape and s.flags.c_contiguous
                                     for s in slots.values())


def _takes_step(fn) -> bool:
    """Does the learning-rate callable take the step as its (first) argument?"""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params)


class Optimizer:
    """Base class: subclasses set :attr:`slot_names` and define the two update cores.

    Arguments (Keras 3's): ``learning_rate`` (a positive float, a ``LearningRateSchedule``, or a
    callable of no arguments or of the step count); ``weight_decay`` (decoupled: ``w -= w *
    weight_decay * learning_rate`` before each update; see :meth:`exclude_from_weight_decay`);
    one of ``clipnorm`` (per gradient), ``global_clipnorm`` (joint), ``clipvalue``; ``name``.
    ``use_ema``, ``loss_scale_factor`` and ``gradient_accumulation_steps`` are accepted at their
    defaults only (they are not implemented).

    Attributes:
        learning_rate: the learning rate of the next step (settable to a float, schedule or callable).
        lr_t: the learning rate of the current step, a host float (what the update cores use).
        iterations: how many update steps have run.
    """

    slot_names: tuple = ()           # Keras' names of the per-parameter slots
    legacy_slot_names: dict = {}     # names older checkpoints used -> Keras' name
    replays_on_host = False          # the CPU update is kernel launches only, with the same arguments each
                                     # step of one learning rate (fit's step replays: step_replays.py)

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.", stacklevel=3)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        for arg, value, default in (("use_ema", use_ema, False), ("loss_scale_factor", loss_scale_factor, None),
                                    ("gradient_accumulation_steps", gradient_accumulation_steps, None)):
            if value != default:
                raise NotImplementedError(f"gpunet's optimizers do not implement {arg} (got {arg}={value!r}); "
                                          f"leave it at {default!r}")
        self.name = name if name is not None else auto_name(type(self).__name__)
        self.weight_decay = check_optional("weight_decay", weight_decay)
        self.clipnorm = check_optional("clipnorm", clipnorm)
        self.clipvalue = check_optional("clipvalue", clipvalue)
        self.global_clipnorm = check_optional("global_clipnorm", global_clipnorm)
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        self.use_ema, self.ema_momentum, self.ema_overwrite_frequency = use_ema, ema_momentum, ema_overwrite_frequency
        self.loss_scale_factor, self.gradient_accumulation_steps = loss_scale_factor, gradient_accumulation_steps
        self.iterations = 0
        self._lr = self._lr_fn = self._lr_takes_step = None
        self.lr_t = None
        self.learning_rate = learning_rate
        self._decay_t = 0.0           # weight_decay * lr_t of the current step (0.0: no decay)
        self._no_decay_ids = set()
        self._no_decay_pattern = None
        self._decay_cache = {}        # id(param) -> does weight decay apply to it?
        self._slots = {}      # id(param) -> {slot name: array on the parameter's device}
        self._scratch = {}    # id(param) -> CPU work array reused every step (no per-step allocation)
        self._params = {}     # id(param) -> param, keeps the ids valid

    # -- learning rate ----------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use (a schedule is evaluated at :attr:`iterations`)."""
        return self._lr if self._lr_fn is None else self._evaluate_lr()

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, LearningRateSchedule) or callable(value):
            self._lr_fn, self._lr = value, None
            self._lr_takes_step = isinstance(value, LearningRateSchedule) or _takes_step(value)
        else:
            if isinstance(self._lr_fn, LearningRateSchedule):
                raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its "
                                "`learning_rate` constructor argument, hence its learning rate is not settable. If "
                                "you need the learning rate to be settable, you should instantiate the optimizer "
                                "with a float `learning_rate` argument.")
            self._lr_fn, self._lr = None, check_positive("learning_rate", value)
        self.lr_t = self.learning_rate

    def _evaluate_lr(self) -> float:
        """The schedule's (callable's) rate at :attr:`iterations`; ValueError, before the step, unless finite."""
        value = self._lr_fn(self.iterations) if self._lr_takes_step else self._lr_fn()
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = math.nan
        if not math.isfinite(rate):
            raise ValueError(f"the learning rate {getattr(self._lr_fn, '__name__', type(self._lr_fn).__name__)} "
                             f"gave {value!r} at step {self.iterations}, not a finite number; no update was applied")
        return rate

    # -- updating ---------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars) -> int:
        """Apply one update to every ``(gradient, parameter)`` pair (Keras' API); returns :attr:`iterations`.

        ``None`` gradients are skipped with a warning (ValueError when all are None, as in Keras).
        All pairs are validated (type, device, shape) before any parameter changes.
        """
        given = list(grads_and_vars)
        pairs = [(g, v) for g, v in given if g is not None]
        if not pairs:
            raise ValueError("No gradients provided for any variable.")
        if len(pairs) < len(given):
            missing = [getattr(v, "name", None) for g, v in given if g is None]
            warnings.warn(f"Gradients do not exist for variables {missing} when minimizing the loss. If using "
                          "`model.compile()`, did you forget to provide a `loss` argument?", stacklevel=2)
        for g, v in pairs:
            if not isinstance(v, Tensor):
                raise TypeError(f"parameters must be gpunet Tensors, got {type(v).__name__}")
            gd = g.data if isinstance(g, Tensor) else g
            if tuple(gd.shape) != v.shape:
                raise ShapeError(f"gradient of shape {tuple(gd.shape)} does not match its parameter of shape "
                                 f"{v.shape}; pass zip(grads, params) in the same order")
            if isinstance(g, Tensor) and g.device != v.device:
                raise DeviceMismatchError(f"gradient on {g.device} but parameter on {v.device}")
        self.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self.iterations

    def apply(self, grads, params, halt=None) -> None:
        """One update step of ``params`` (Tensors) with ``grads`` (arrays or Tensors, None to skip),
        already validated. ``halt``: the loss guard's flag (int32 ``(1,)``); while it is set, the
        updates do nothing (on a GPU the kernels test it on the device, so the host never waits).

        The first step fixes the variables this optimizer updates; a later step with another one is
        refused (Keras: one optimizer instance per model)."""
        if self._params:
            unknown = [getattr(p, "name", None) or f"of shape {p.shape}" for g, p in zip(grads, params)
                       if g is not None and id(p) not in self._params]
            if unknown:
                raise ValueError(f"this optimizer updates other variables already; it was not built for variable "
                                 f"{unknown[0]}: give each model its own optimizer instance (e.g. "
                                 f"optimizer={type(self).__name__}(...) in each compile), or recompile with a new one")
        else:
            self._params.update((id(p), p) for p in params)
        if self._lr_fn is not None:
            self.lr_t = self._evaluate_lr()            # Keras: the schedule sees the steps done before this one
        if self.clipnorm or self.global_clipnorm or self.clipvalue:
            with (params[0].device.context if params else contextlib.nullcontext()):
                grads = self.clip_gradients([g.data if isinstance(g, Tensor) else g for g in grads])
        decay = self.weight_decay * self.lr_t if self.weight_decay else 0.0
        self._decay_t = decay if FLOAT32.type(decay) else 0.0      # decay applies where the kernels' float32 is not 0
        self.iterations += 1
        for g, p in zip(grads, params):
            if g is None:
                continue
            g = g.data if isinstance(g, Tensor) else g
            with p.device.context:                 # slots and kernels on the parameter's GPU
                if halt is None:
                    self.update_step(g, p, self.slots_of(p))
                elif p.device.is_gpu:
                    self.update_step(g, p, self.slots_of(p), halt=halt)
                elif not halt[0]:                  # on the CPU the flag is a host value
                    self.update_step(g, p, self.slots_of(p))

    def update_step(self, grad, param, slots, halt=None) -> None:
        """Update one parameter in place: the CUDA kernel for float32 GPU weights whose weight, gradient
        and slots are flat C-ordered buffers of one shape (:func:`kernel_ready`), else the twin, whose
        array operations take any strides (on a GPU it then reads the halt flag on the host)."""
        decay = self._decay_t if self._decay_t and self._decays(param) else 0.0
        if param.device.is_gpu and kernel_ready(grad, param.data, slots):
            if decay:
                self.update_core_gpu(grad, param.data, slots, halt, decay=decay)
            else:
                self.update_core_gpu(grad, param.data, slots, halt)
        elif halt is None or not halt[0]:
            if cuda.cpu_kernels() and kernel_ready(grad, param.data, slots) and \
                    self.update_core_host(grad, param.data, slots, decay):
                return
            if decay:
                self.update_core_cpu(param.device.xp, grad, param.data, slots, self._scratch.get(id(param)),
                                     decay=decay)
            else:
                self.update_core_cpu(param.device.xp, grad, param.data, slots, self._scratch.get(id(param)))

    def update_core_cpu(self, xp, g, w, slots, scratch, decay=0.0) -> None:
        raise NotImplementedError

    def update_core_gpu(self, g, w, slots, halt, decay=0.0) -> None:
        raise NotImplementedError

    def update_core_host(self, g, w, slots, decay=0.0) -> bool:
        """The update kernel on NumPy arrays (built for the CPU, :mod:`gpunet.kernels.host`); True when it
        ran, False to run :meth:`update_core_cpu` (the default: a subclass opts in)."""
        return False

    # -- CUDA graphs of the training step (gpunet.trainers.step_graphs) ---------------------------
    def capture_obstacle(self) -> str | None:
        """Why a step of this optimizer cannot be replayed from a CUDA graph (what changes from step to
        step on the host), or None when it can."""
        if self._lr_fn is not None:
            return "a learning-rate schedule"
        if self.clipnorm or self.global_clipnorm or self.clipvalue:
            return "gradient clipping"
        if type(self).update_step is not Optimizer.update_step or type(self).apply is not Optimizer.apply:
            return f"its own update step ({type(self).__name__})"
        return None

    def count_replayed_step(self) -> None:
        """A replayed graph applied one step on the device: count it on the host."""
        self.iterations += 1

    def host_step_state(self):
        """The host's record of the steps taken (restored when a capture is abandoned)."""
        return self.iterations

    def restore_host_step_state(self, state) -> None:
        self.iterations = state

    # -- clipping and weight decay --------------------------------------------------------
    def clip_gradients(self, grads) -> list:
        """``grads`` (arrays, None kept) clipped as configured (Keras' ``_clip_gradients``); new arrays."""
        if self.clipnorm and self.clipnorm > 0:
            return clipping.clip_by_norm(grads, self.clipnorm)
        if self.global_clipnorm and self.global_clipnorm > 0:
            return clipping.clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            return clipping.clip_by_value(grads, self.clipvalue)
        return list(grads)

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """No weight decay for the Tensors in ``var_list`` nor for those whose name contains (regex
        search) one of ``var_names``, e.g. ``var_names=['bias']`` (Keras' method; replaces earlier calls)."""
        self._no_decay_ids = {id(v) for v in var_list or ()}
        self._no_decay_pattern = re.compile("|".join(set(var_names))) if var_names else None
        self._decay_cache = {}

    def _decays(self, param) -> bool:
        use = self._decay_cache.get(id(param))
        if use is None:
            use = id(param) not in self._no_decay_ids and not (
                self._no_decay_pattern is not None and self._no_decay_pattern.search(param.name or ""))
            self._decay_cache[id(param)] = use
            self._params.setdefault(id(param), param)
        return use

    # -- slots ------------------------------------------------------------------------
    def build_slots(self, param) -> dict:
        """Zero-filled slot arrays for ``param``, one per :attr:`slot_names` (on its device)."""
        return {name: param.device.xp.zeros_like(param.data) for name in self.slot_names}

    def has_slots(self, param) -> bool:
        """Whether ``param``'s slots exist (:meth:`slots_of` builds them)."""
        return id(param) in self._slots

    def slots_of(self, param) -> dict:
        """``param``'s slots (built at first use)."""
        slots = self._slots.get(id(param))
        if slots is None:
            slots = self._slots[id(param)] = self.build_slots(param)
            self._params[id(param)] = param
            if not param.device.is_gpu:
                self._scratch[id(param)] = param.device.xp.empty_like(param.data)
        return slots

    def export_slot(self, name, array):
        """A slot as checkpoints store it (host array); subclasses undo storage tricks here."""
        return array

    def import_slot(self, name, array):
        """The inverse of :meth:`export_slot`."""
        return array

    def get_state(self, params) -> dict:
        """Host copies of the slots of ``params`` (keys ``'<index>/<slot name>'``) and the iteration count."""
        out = {"iterations": self.iterations}
        for i, p in enumerate(params):
            for name, arr in self._slots.get(id(p), {}).items():
                out[f"{i}/{name}"] = self.export_slot(name, p.device.to_host(arr).copy())
        return out

    def set_state(self, params, state: dict) -> None:
        """Restore what :meth:`get_state` returned (or an older checkpoint's slots), onto ``params``' devices.
        All is checked and converted before anything changes: ``iterations`` a non-negative integer, each
        key ``'<index>/<name>'`` naming one of ``params`` and a slot (or legacy slot) of this optimizer, each
        slot finite numbers of its parameter's shape. ValueError (ShapeError for shapes) naming the slot."""
        iterations, known, new = check_iterations(state.get("iterations")), {*self.slot_names}, {}
        for key, value in state.items():
            index, _, name = str(key).partition("/")
            if key != "iterations" and not (index.isdigit() and int(index) < len(params) and
                                            (name in known or self.legacy_slot_names.get(name) in known)):
                raise ValueError(f"optimizer state {key!r} names no parameter (of {len(params)}) or no slot of "
                                 f"{type(self).__name__} (its slots: {', '.join(self.slot_names) or 'none'})")
            if key != "iterations":
                p = params[int(index)]
                new.setdefault(id(p), {})[self.legacy_slot_names.get(name, name)] = \
                    self._checked_slot(key, name, value, p)
        self.iterations = iterations
        for p in params:
            self._slots.pop(id(p), None)
            self.slots_of(p).update(new.get(id(p), {}))

    def _checked_slot(self, key, name, value, param):
        """Slot ``value`` (a host array) converted for ``param`` (dtype, device), or ValueError/ShapeError."""
        a = backend.numpy.asarray(value)
        if a.shape != param.shape or a.dtype.kind not in "biuf":
            raise (ShapeError if a.shape != param.shape else ValueError)(
                f"optimizer slot {key!r} is a {a.dtype} array of shape {a.shape}; its parameter "
                f"{param.name or ''} needs numbers of shape {param.shape}")
        if name in self.slot_names:             # legacy slots were stored as the optimizer keeps them
            a = self.import_slot(name, a)
        out = param.device.asarray(a, dtype=param.dtype).copy()
        if not bool(param.device.xp.isfinite(out).all()):
            raise ValueError(f"optimizer slot {key!r} holds NaN or infinite values")
        return out

    # -- configuration ------------------------------------------------------------------
    def get_config(self) -> dict:
        """Keras' keys; ``learning_rate`` is a float, a serialized schedule (a dict) or the callable."""
        lr = self._lr if self._lr_fn is None else (
            schedules.serialize(self._lr_fn) if isinstance(self._lr_fn, LearningRateSchedule) else self._lr_fn)
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency, "loss_scale_factor": self.loss_scale_factor,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None):
        """The optimizer ``get_config`` described (a schedule given as a dict is deserialized)."""
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"], custom_objects)
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"
