"""Stochastic gradient descent, with optional (Nesterov) momentum."""
from __future__ import annotations

from ..kernels import cuda, scalars
from .optimizer import Optimizer, check_fraction

SOURCE = cuda.Source(__file__, "sgd.cu")


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
        self.momentum = check_fraction("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def update_core_cpu(self, xp, g, w, slots, scratch):
        lr, mu = scalars(w.dtype, self.learning_rate, self.momentum)
        s = xp.multiply(g, lr, out=scratch)          # lr * g
        if not self.momentum:
            w -= s
            return
        m = slots["momentum"]
        m *= mu
        m -= s                                       # m = mu*m - lr*g
        if self.nesterov:
            s *= -1
            s += mu * m
            w += s                                   # w += mu*m - lr*g
        else:
            w += m

    def update_core_gpu(self, g, w, slots, halt):
        SOURCE.launch("sgd_update", w.size, (w, g, cuda.pointer(slots.get("momentum")), cuda.f32(self.learning_rate),
                                             cuda.f32(self.momentum), cuda.i32(self.nesterov), cuda.i64(w.size),
                                             cuda.pointer(halt)))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
