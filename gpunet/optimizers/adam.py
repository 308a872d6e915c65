"""Adam with Keras' defaults and formula."""
from __future__ import annotations

import math

from ..kernels import cuda, scalars
from .optimizer import Optimizer, check_fraction, check_positive

SOURCE = cuda.Source(__file__, "adam.cu")


class Adam(Optimizer):
    """Adam with Keras' defaults and formula (bias correction folded into the step size)::

        t = iterations                      # 1 on the first step
        alpha_t = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)      # slot 'momentum'
        v = v + (g**2 - v) * (1 - beta_2)   # slot 'velocity'
        w = w - alpha_t * m / (sqrt(v) + epsilon)
    """

    name = "adam"
    slot_names = ("momentum", "velocity")
    legacy_slot_names = {"m": "momentum", "v": "velocity"}

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1 = check_fraction("beta_1", beta_1)
        self.beta_2 = check_fraction("beta_2", beta_2)
        self.epsilon = check_positive("epsilon", epsilon)

    def step_size(self) -> float:
        """``alpha_t`` of the current step (a host value; computed once per parameter update)."""
        t = self.iterations
        return self.learning_rate * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)

    def update_core_cpu(self, xp, g, w, slots, scratch):
        c1, c2, eps, alpha = scalars(w.dtype, 1 - self.beta_1, 1 - self.beta_2, self.epsilon, self.step_size())
        m, v = slots["momentum"], slots["velocity"]
        s = xp.subtract(g, m, out=scratch)
        s *= c1
        m += s                                        # m += (g - m)(1 - b1)
        xp.multiply(g, g, out=s)
        s -= v
        s *= c2
        v += s                                        # v += (g^2 - v)(1 - b2)
        xp.sqrt(v, out=s)
        s += eps
        xp.divide(m, s, out=s)
        s *= alpha
        w -= s

    def update_core_gpu(self, g, w, slots, halt):
        SOURCE.launch("adam_update", w.size, (w, g, slots["momentum"], slots["velocity"], cuda.f32(self.step_size()),
                                              cuda.f32(self.beta_1), cuda.f32(self.beta_2), cuda.f32(self.epsilon),
                                              cuda.i64(w.size), cuda.pointer(halt)))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
