"""Adam (and AMSGrad) with Keras' defaults and formula."""
from __future__ import annotations

import math

from ..kernels import cuda, scalars
from .optimizer import FLOAT32, Optimizer, check_fraction, check_positive, decay_weights

SOURCE = cuda.Source(__file__, "adam.cu")


class Adam(Optimizer):
    """Adam with Keras' defaults and formula (bias correction folded into the step size)::

        t = iterations                      # 1 on the first step
        alpha_t = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)      # slot 'momentum'
        v = v + (g**2 - v) * (1 - beta_2)   # slot 'velocity'
        v_hat = max(v_hat, v); v = v_hat    # amsgrad=True only (slot 'velocity_hat')
        w = w - alpha_t * m / (sqrt(v) + epsilon)

    The other arguments (``weight_decay``, clipping, ``name``...) are :class:`Optimizer`'s.
    """

    legacy_slot_names = {"m": "momentum", "v": "velocity"}

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

    def step_size(self) -> float:
        """``alpha_t`` of the current step (a host value; computed once per parameter update)."""
        t = self.iterations
        return self.lr_t * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)

    def constants(self, dtype):
        """``(1 - beta_1, 1 - beta_2, epsilon, alpha_t)`` in ``dtype``, each computed in double and rounded
        once: the scalars of the twin and (float32) of the kernel."""
        return scalars(dtype, 1 - self.beta_1, 1 - self.beta_2, self.epsilon, self.step_size())

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

    def update_core_gpu(self, g, w, slots, halt, decay=0.0):
        c1, c2, eps, alpha = self.constants(FLOAT32)
        SOURCE.launch("adam_update", w.size, (w, g, slots["momentum"], slots["velocity"],
                                              cuda.pointer(slots.get("velocity_hat")), c1, c2, eps, alpha,
                                              cuda.f32(decay), cuda.i64(w.size), cuda.pointer(halt)))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}
