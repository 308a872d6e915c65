"""Adam (and AMSGrad) with Keras' defaults and formula."""
from __future__ import annotations

import math

from .. import backend
from ..kernels import cuda, recording, scalars
from .optimizer import FLOAT32, Optimizer, check_fraction, check_positive, decay_weights

SOURCE = cuda.Source(__file__, "adam.cu")
FLOAT64 = backend.numpy.float64


def step_size(lr, beta_1, beta_2, t) -> float:
    """Adam's ``alpha_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` in double (what gpunet has always
    computed, rounded once to float32; Keras computes it in float32, which differs in the last bits)."""
    return lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)


def adam_step_size(xp, t, alpha, lr, beta_1, beta_2) -> None:
    """Advance the step counter ``t`` (int64 ``(1,)``: the steps taken) and write the new step's
    :func:`step_size` into ``alpha`` (float32 ``(1,)``). On a GPU one one-thread kernel: the update
    kernels then read their step size on the device, and no value that changes from step to step
    comes from the host. The twin does the same arithmetic (double, rounded once) on NumPy arrays."""
    if cuda.is_gpu(xp):
        _launch_step_size(t, alpha, lr, beta_1, beta_2)
        return
    k = int(t[0]) + 1
    t[0] = k
    alpha[0] = step_size(lr, beta_1, beta_2, k)


def _launch_step_size(t, alpha, lr, beta_1, beta_2) -> None:
    SOURCE.launch("adam_step_size", 1, (t, alpha, FLOAT64(lr), FLOAT64(beta_1), FLOAT64(beta_2)))


def _device_scalar(w, dtype):
    """A new ``(1,)`` array of ``dtype`` on ``w``'s device, made by ``w``'s own array type (CuPy's, or a
    test's stand-in): the sum of ``w``, to be overwritten."""
    return w.reshape(-1).sum(keepdims=True, dtype=dtype)


class Adam(Optimizer):
    """Adam with Keras' defaults and formula (bias correction folded into the step size)::

        t = iterations                      # 1 on the first step
        alpha_t = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)      # slot 'momentum'
        v = v + (g**2 - v) * (1 - beta_2)   # slot 'velocity'
        v_hat = max(v_hat, v); v = v_hat    # amsgrad=True only (slot 'velocity_hat')
        w = w - alpha_t * m / (sqrt(v) + epsilon)

    The other arguments (``weight_decay``, clipping, ``name``...) are :class:`Optimizer`'s.

    On a GPU ``alpha_t`` is computed on the device (:func:`adam_step_size`, once per step and GPU,
    from a device step counter that follows :attr:`iterations`), so the update kernels take no
    host value that changes from step to step; the host's ``iterations`` stays the count that
    checkpoints keep (the device counter is set from it whenever they differ).
    """

    legacy_slot_names = {"m": "momentum", "v": "velocity"}
    replays_on_host = True      # alpha_t is set again at each replay (fit's CPU step replays)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, use_ema=use_ema, ema_momentum=ema_momentum,
                         ema_overwrite_frequency=ema_overwrite_frequency, loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.beta_1 = check_fraction("beta_1", beta_1)
        self.beta_2 = check_fraction("beta_2", beta_2)
        self.epsilon = check_positive("epsilon", epsilon)
        self.amsgrad = bool(amsgrad)
        self.slot_names = ("momentum", "velocity") + (("velocity_hat",) if self.amsgrad else ())
        self._device_steps = {}      # GPU index -> [step counter, alpha_t, the count the counter holds]
        self._host_alpha = backend.numpy.zeros(1, dtype=FLOAT32)    # alpha_t for the CPU kernels

    def step_size(self) -> float:
        """``alpha_t`` of the current step (a host value; what the twin uses and the device computes)."""
        return step_size(self.lr_t, self.beta_1, self.beta_2, self.iterations)

    def constants(self, dtype):
        """``(1 - beta_1, 1 - beta_2, epsilon, alpha_t)`` in ``dtype``, each computed in double and rounded
        once: the scalars of the twin and (float32; alpha_t on the device) of the kernel."""
        return scalars(dtype, 1 - self.beta_1, 1 - self.beta_2, self.epsilon, self.step_size())

    def step_size_on_device(self, w):
        """The float32 ``(1,)`` device array holding this step's ``alpha_t`` on ``w``'s GPU: the first
        update of a step there launches :func:`adam_step_size` (after setting the device counter to the
        steps taken before this one when it holds another count: a checkpoint was loaded, ``iterations``
        was set, or the loss guard's skipped steps were taken back)."""
        key = getattr(getattr(w, "device", None), "id", None)
        state = self._device_steps.get(key)
        if state is None:
            state = self._device_steps[key] = [_device_scalar(w, "int64"), _device_scalar(w, "float32"), None]
        counter, alpha, held = state
        if held != self.iterations:
            if held != self.iterations - 1:
                counter.fill(self.iterations - 1)
            _launch_step_size(counter, alpha, self.lr_t, self.beta_1, self.beta_2)
            state[2] = self.iterations
        return alpha

    def count_replayed_step(self):
        """The replayed step advanced the device counters the captured step advanced: they follow."""
        super().count_replayed_step()
        for state in self._device_steps.values():
            if state[2] == self.iterations - 1:
                state[2] = self.iterations

    def host_step_state(self):
        return self.iterations, {key: state[2] for key, state in self._device_steps.items()}

    def restore_host_step_state(self, state):
        self.iterations, held = state
        for key, value in self._device_steps.items():
            value[2] = held.get(key)

    def update_core_cpu(self, xp, g, w, slots, scratch, decay=0.0):
        if decay:
            decay_weights(xp, w, decay, scratch)     # w = w - w*decay
        c1, c2, eps, alpha = self.constants(w.dtype)
        m, v, v_hat = slots["momentum"], slots["velocity"], slots.get("velocity_hat")
        s = xp.subtract(g, m, out=scratch)
        s *= c1
        m += s                                        # m = m + (g - m)*c1
        xp.multiply(g, g, out=s)
        s -= v
        s *= c2
        v += s                                        # v = v + (g*g - v)*c2
        if v_hat is not None:
            v = xp.maximum(v_hat, v, out=v_hat)       # v_hat = max(v_hat, v); the step uses v_hat
        xp.sqrt(v, out=s)
        s += eps
        xp.divide(m, s, out=s)
        s *= alpha
        w -= s                                        # w = w - (m / (sqrt(v) + eps))*alpha_t

    def update_core_host(self, g, w, slots, decay=0.0):
        self._set_host_alpha()
        recording.record(self._set_host_alpha)      # a replayed step takes the alpha_t of its own count
        return self._launch_update(g, w, slots, None, decay, self._host_alpha)

    def _set_host_alpha(self) -> None:
        """The twin's alpha_t of the current step, into the array the CPU kernels read."""
        self._host_alpha[0] = self.constants(FLOAT32)[3]

    def update_core_gpu(self, g, w, slots, halt, decay=0.0):
        return self._launch_update(g, w, slots, halt, decay, self.step_size_on_device(w))

    def _launch_update(self, g, w, slots, halt, decay, alpha):
        c1, c2, eps = scalars(FLOAT32, 1 - self.beta_1, 1 - self.beta_2, self.epsilon)
        return SOURCE.launch("adam_update", w.size, (w, g, slots["momentum"], slots["velocity"],
                                                     cuda.pointer(slots.get("velocity_hat")), c1, c2, eps, alpha,
                                                     cuda.f32(decay), cuda.i64(w.size), cuda.pointer(halt)))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}
