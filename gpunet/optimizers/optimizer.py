"""The optimizer base class: validation, per-parameter slots, one update per step, state.

A subclass states its rule once, as Chainer's optimizers do: ``update_core_cpu`` (the NumPy
twin, in place) and ``update_core_gpu`` (one CUDA kernel from the ``.cu`` file beside it),
both given the gradient, the weight array and the slots. :meth:`Optimizer.update_step`
picks one per parameter. A custom optimizer may instead override ``build_slots(param)`` and
``update_step(grad, param, slots)`` (gpunet's earlier interface), which still works.
"""
from __future__ import annotations

import math

from .. import backend
from ..errors import DeviceMismatchError, ShapeError
from ..tensor import Tensor

FLOAT32 = backend.numpy.dtype("float32")     # what the CUDA update kernels take


def check_positive(name, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_fraction(name, value) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: subclasses set :attr:`slot_names` and define the two update cores.

    Attributes:
        learning_rate: the step size (a float; may be changed between steps).
        iterations: how many update steps have run.
    """

    name = "optimizer"
    slot_names: tuple = ()           # Keras' names of the per-parameter slots
    legacy_slot_names: dict = {}     # names older checkpoints used -> Keras' name

    def __init__(self, learning_rate: float):
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.iterations = 0
        self._slots = {}      # id(param) -> {slot name: array on the parameter's device}
        self._scratch = {}    # id(param) -> CPU work array reused every step (no per-step allocation)
        self._params = {}     # id(param) -> param, keeps the ids valid

    # -- updating ---------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars) -> None:
        """Apply one update to every ``(gradient, parameter)`` pair; ``None`` gradients are skipped.

        All pairs are validated (type, device, shape) before any parameter changes.
        """
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
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

    def apply(self, grads, params, halt=None) -> None:
        """One update step of ``params`` (Tensors) with ``grads`` (arrays or Tensors, None to skip),
        already validated. ``halt``: the loss guard's flag (int32 ``(1,)``); while it is set, the
        updates do nothing (on a GPU the kernels test it on the device, so the host never waits)."""
        self.iterations += 1
        for g, p in zip(grads, params):
            if g is None:
                continue
            g = g.data if isinstance(g, Tensor) else g
            if halt is None:
                self.update_step(g, p, self.slots_of(p))
            elif p.device.is_gpu:
                self.update_step(g, p, self.slots_of(p), halt=halt)
            elif not halt[0]:                      # on the CPU the flag is a host value
                self.update_step(g, p, self.slots_of(p))

    def update_step(self, grad, param, slots, halt=None) -> None:
        """Update one parameter in place: the CUDA kernel for float32 GPU weights, else the twin."""
        if param.device.is_gpu and param.data.dtype == FLOAT32:
            self.update_core_gpu(grad, param.data, slots, halt)
        elif halt is None or not halt[0]:
            self.update_core_cpu(param.device.xp, grad, param.data, slots, self._scratch.get(id(param)))

    def update_core_cpu(self, xp, g, w, slots, scratch) -> None:
        raise NotImplementedError

    def update_core_gpu(self, g, w, slots, halt) -> None:
        raise NotImplementedError

    # -- slots ------------------------------------------------------------------------
    def build_slots(self, param) -> dict:
        """Zero-filled slot arrays for ``param``, one per :attr:`slot_names` (on its device)."""
        return {name: param.device.xp.zeros_like(param.data) for name in self.slot_names}

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
        """Restore what :meth:`get_state` returned (or an older checkpoint's slots), onto ``params``' devices."""
        self.iterations = int(state["iterations"])
        for i, p in enumerate(params):
            self._slots.pop(id(p), None)
            slots = self.slots_of(p)
            for name in slots:
                if f"{i}/{name}" in state:
                    slots[name] = p.device.asarray(self.import_slot(name, state[f"{i}/{name}"]), dtype=p.dtype).copy()
            for old, name in self.legacy_slot_names.items():
                if f"{i}/{old}" in state and name in slots:
                    slots[name] = p.device.asarray(state[f"{i}/{old}"], dtype=p.dtype).copy()

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"
