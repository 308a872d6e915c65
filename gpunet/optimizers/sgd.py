"""Stochastic gradient descent, with optional (Nesterov) momentum."""
from __future__ import annotations

from ..kernels import cuda, scalars
from .optimizer import FLOAT32, Optimizer, check_fraction, decay_weights

SOURCE = cuda.Source(__file__, "sgd.cu")


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum — Keras' formulas::

        m = momentum * m - learning_rate * g
        w = w + m                                  # momentum > 0
        w = w + momentum * m - learning_rate * g   # nesterov=True
        w = w - learning_rate * g                  # momentum == 0

    The other arguments (``weight_decay``, clipping, ``name``...) are :class:`Optimizer`'s.
    """

    replays_on_host = True

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

    def constants(self, dtype):
        """``(lr, mu)`` in ``dtype``: the scalars of the twin and (float32) of the kernel."""
        return scalars(dtype, self.lr_t, self.momentum)

    def update_core_cpu(self, xp, g, w, slots, scratch, decay=0.0):
        if decay:
            decay_weights(xp, w, decay, scratch)     # w = w - w*decay
        lr, mu = self.constants(w.dtype)
        s = xp.multiply(g, lr, out=scratch)          # s = g*lr
        if not self.momentum:                        # the kernel's has_momentum, decided here on the host
            w -= s                                   # w = w - s
            return
        m = slots["momentum"]
        m *= mu
        m -= s                                       # m = m*mu - s
        if self.nesterov:
            s *= -1
            s += m * mu
            w += s                                   # w = w + (m*mu - s)   (-s + x is x - s exactly)
        else:
            w += m                                   # w = w + m

    def update_core_host(self, g, w, slots, decay=0.0):
        return self.update_core_gpu(g, w, slots, None, decay)

    def update_core_gpu(self, g, w, slots, halt, decay=0.0):
        lr, mu = self.constants(FLOAT32)
        return SOURCE.launch("sgd_update", w.size, (w, g, cuda.pointer(slots.get("momentum")), lr, mu,
                                             cuda.i32(bool(self.momentum)), cuda.i32(self.nesterov), cuda.f32(decay),
                                             cuda.i64(w.size), cuda.pointer(halt)))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
