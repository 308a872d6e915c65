"""Optimizers with Keras 3's update rules and defaults, updating parameters in place.

Each optimizer keeps its slots (momentum, moving averages) next to the
parameter on the parameter's device and runs one fused update per parameter
(a CUDA kernel on GPU, its NumPy twin on CPU: see :mod:`gpunet.kernels`).

Usable in a hand-written loop::

    opt = gpunet.optimizers.RMSprop()
    with gpunet.GradientTape() as tape:
        loss = ...
    grads = tape.gradient(loss, params)
    opt.apply_gradients(zip(grads, params))
"""
from __future__ import annotations

import math

from . import kernels
from ._registry import lookup
from .errors import ShapeError
from .tensor import Tensor


def _positive(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _fraction(name, value):
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: subclasses define :meth:`build_slots` and :meth:`update_step`.

    Attributes:
        learning_rate: the step size (a float; may be changed between steps).
        iterations: how many times :meth:`apply_gradients` has run.
    """

    name = "optimizer"
    slot_names: tuple = ()

    def __init__(self, learning_rate: float):
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.iterations = 0
        self._slots = {}      # id(param) -> dict of slot arrays (+ scratch)
        self._halt = None     # fit's device flag: GPU kernels skip updates once a loss was non-finite
        self._params = {}     # id(param) -> param, keeps ids valid

    def build_slots(self, param: Tensor) -> dict:
        """Zero-filled slot arrays for ``param`` (on its device)."""
        xp = param.device.xp
        slots = {name: xp.zeros_like(param.data) for name in self.slot_names}
        if not param.device.is_gpu:
            slots["scratch"] = xp.empty_like(param.data)   # reused every step: no per-step allocation
        return slots

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
                from .errors import DeviceMismatchError
                raise DeviceMismatchError(f"gradient on {g.device} but parameter on {v.device}")
        self._apply(pairs)

    def _apply(self, pairs) -> None:
        """One update of already validated ``(gradient, parameter)`` pairs."""
        self.iterations += 1
        for g, v in pairs:
            slots = self._slots.get(id(v))
            if slots is None:
                slots = self._slots[id(v)] = self.build_slots(v)
                self._params[id(v)] = v
            self.update_step(g.data if isinstance(g, Tensor) else g, v, slots)

    def update_step(self, grad, param: Tensor, slots: dict) -> None:
        raise NotImplementedError

    # -- state for checkpoints --------------------------------------------------
    def get_state(self, params) -> dict:
        """Host copies of the slots of ``params`` (in order) and the iteration count."""
        out = {"iterations": self.iterations}
        for i, p in enumerate(params):
            for k, arr in self._slots.get(id(p), {}).items():
                if k != "scratch":
                    out[f"{i}/{k}"] = p.device.to_host(arr).copy()
        return out

    def set_state(self, params, state: dict) -> None:
        """Restore what :meth:`get_state` returned, onto ``params``' devices."""
        self.iterations = int(state["iterations"])
        for i, p in enumerate(params):
            slots = self._slots[id(p)] = self.build_slots(p)
            self._params[id(p)] = p
            for k in list(slots):
                if f"{i}/{k}" in state:
                    slots[k] = p.device.asarray(state[f"{i}/{k}"]).copy()

    def get_config(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("iterations", "slot_names")}


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum — Keras' formulas::

        m = momentum * m - learning_rate * g
        w = w + m                                  # momentum > 0
        w = w + momentum * m - learning_rate * g   # nesterov=True
        w = w - learning_rate * g                  # momentum == 0
    """

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = _fraction("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def update_step(self, grad, param, slots):
        kernels.sgd_update(param.device.xp, param.data, grad, slots.get("momentum"), self.learning_rate,
                           self.momentum, self.nesterov, slots.get("scratch"), self._halt)


class RMSprop(Optimizer):
    """RMSprop with Keras' defaults and formula (epsilon inside the square root)::

        v = rho * v + (1 - rho) * g**2
        a = rho * a + (1 - rho) * g            # centered=True only; then v_hat = v - a**2
        step = learning_rate * g / sqrt(v_hat + epsilon)      # eps_inside_sqrt=True (Keras)
        step = learning_rate * g / (sqrt(v_hat) + epsilon)    # eps_inside_sqrt=False (PyTorch)
        mom = momentum * mom + step; w -= mom  # momentum > 0
        w -= step                              # momentum == 0

    The velocity is stored scaled, as the slot ``scaled_velocity`` = ``v / (1 - rho)``, which
    saves one pass over the weights per update (see :func:`gpunet.kernels.rmsprop_update`).
    """

    name = "rmsprop"

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, eps_inside_sqrt: bool = True):
        super().__init__(learning_rate)
        self.rho = _fraction("rho", rho)
        self.momentum = _fraction("momentum", momentum)
        self.epsilon = _positive("epsilon", epsilon)
        self.centered = bool(centered)
        self.eps_inside_sqrt = bool(eps_inside_sqrt)
        self.slot_names = ("scaled_velocity",) + (("average_gradient",) if centered else ()) + \
            (("momentum",) if self.momentum else ())

    def update_step(self, grad, param, slots):
        kernels.rmsprop_update(param.device.xp, param.data, grad, slots["scaled_velocity"], slots.get("average_gradient"),
                               slots.get("momentum"), self.learning_rate, self.rho, self.epsilon, self.momentum,
                               self.eps_inside_sqrt, slots.get("scratch"), self._halt)


class Adam(Optimizer):
    """Adam with Keras' defaults and formula (bias correction folded into the step size)::

        t = iterations                      # 1 on the first step
        alpha_t = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g**2 - v) * (1 - beta_2)
        w = w - alpha_t * m / (sqrt(v) + epsilon)
    """

    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _fraction("beta_1", beta_1)
        self.beta_2 = _fraction("beta_2", beta_2)
        self.epsilon = _positive("epsilon", epsilon)

    def update_step(self, grad, param, slots):
        t = self.iterations
        alpha = self.learning_rate * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        kernels.adam_update(param.device.xp, param.data, grad, slots["m"], slots["v"], alpha, self.beta_1,
                            self.beta_2, self.epsilon, slots.get("scratch"), self._halt)


_TABLE = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def get(identifier) -> Optimizer:
    """An optimizer from a name (``'sgd'``, ``'rmsprop'``, ``'adam'``, Keras defaults) or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    cls = lookup("optimizer", identifier, _TABLE, allow_callable=False)
    return cls()
