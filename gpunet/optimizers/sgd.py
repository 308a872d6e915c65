"""Stochastic gradient descent, with optional (Nesterov) momentum."""
from __future__ import annotations

from ..kernels import cuda, scalars
from .optimizer import Optimizer, check_fraction, decay_weights

SOURCE = cuda.Source(__file__, "sgd.cu")


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum — Keras' formulas::

        m = momentum * m - learning_rate * g
        w = w + m                                  # momentum > 0
        w = w + momentum * m - learning_rate * g   # nesterov=True
        w = w - learning_rate * g                  # momentum == 0

    The other arguments (``weight_decay``, clipping, ``name``...) are :class:`Optimizer`'s.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 loss_scale_factor=None, gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, use_ema=use_ema, ema_momentum=ema_momentum,
                         ema_overwrite_frequency=ema_overwrite_frequency, loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.momentum = check_fraction("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def update_core_cpu(self, xp, g, w, slots, scratch, decay=0.0):
        if decay:
            decay_weights(xp, w, decay, scratch)
        lr, mu = scalars(w.dtype, self.lr_t, self.momentum)
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

    def update_core_gpu(self, g, w, slots, halt, decay=0.0):
        SOURCE.launch("sgd_update", w.size, (w, g, cuda.pointer(slots.get("momentum")), cuda.f32(self.lr_t),
                                             cuda.f32(self.momentum), cuda.i32(self.nesterov), cuda.f32(decay),
                                             cuda.i64(w.size), cuda.pointer(halt)))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
