"""RMSprop with Keras' defaults and formula (epsilon inside the square root)."""
from __future__ import annotations

import functools

from .. import backend
from ..kernels import cuda, scalars
from .optimizer import FLOAT32, Optimizer, check_fraction, check_positive, decay_weights

SOURCE = cuda.Source(__file__, "rmsprop.cu")
FLOAT32_MAX, FLOAT32_TINY = 3.4e38, 1.2e-38     # (just inside) float32's largest and smallest normal numbers


@functools.lru_cache(maxsize=64)
def _folded(lr, rho, eps, momentum, centered, eps_inside_sqrt):
    """``(c, e2, fast)``; ``c = e2 = 0.0`` when not ``fast``."""
    if not lr > 0:                        # a schedule may reach 0 (or a callable anything): the general form
        return 0.0, 0.0, False
    c, e2 = (1 - rho) / lr ** 2, eps / lr ** 2
    if not centered and not momentum and eps_inside_sqrt and FLOAT32_TINY < min(c, e2) <= max(c, e2) < FLOAT32_MAX:
        return c, e2, True
    return 0.0, 0.0, False


class RMSprop(Optimizer):
    """RMSprop with Keras' defaults and formula (epsilon inside the square root)::

        v = rho * v + (1 - rho) * g**2
        a = rho * a + (1 - rho) * g            # centered=True only; then v_hat = v - a**2
        step = learning_rate * g / sqrt(v_hat + epsilon)      # eps_inside_sqrt=True (Keras)
        step = learning_rate * g / (sqrt(v_hat) + epsilon)    # eps_inside_sqrt=False (PyTorch)
        mom = momentum * mom + step; w -= mom  # momentum > 0
        w -= step                              # momentum == 0

    The ``velocity`` slot is stored scaled, ``u = v / (1 - rho)``, so that ``u = rho*u + g**2``
    and, in the plain Keras form, ``step = g / sqrt(u*c + e2)`` with ``c = (1 - rho)/lr**2`` and
    ``e2 = eps/lr**2``: 8 passes over the weights per update instead of 9 (same formula, rounded
    differently). :meth:`get_state` gives Keras' ``v`` (as float64, so that it converts back exactly).

    ``eps_inside_sqrt`` (keyword only) is gpunet's; the other arguments (``weight_decay``,
    clipping, ``name``...) are :class:`Optimizer`'s.
    """

    legacy_slot_names = {"scaled_velocity": "velocity"}
    replays_on_host = True

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 *, eps_inside_sqrt=True, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, use_ema=use_ema, ema_momentum=ema_momentum,
                         ema_overwrite_frequency=ema_overwrite_frequency, loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.rho = check_fraction("rho", rho)
        self.momentum = check_fraction("momentum", momentum)
        self.epsilon = check_positive("epsilon", epsilon)
        self.centered = bool(centered)
        self.eps_inside_sqrt = bool(eps_inside_sqrt)
        self.slot_names = ("velocity",) + (("average_gradient",) if centered else ()) + \
            (("momentum",) if self.momentum else ())

    def constants(self, dtype):
        """``(rho, 1 - rho, epsilon, lr, momentum, c, e2, fast)``: the scalars in ``dtype`` (each computed in
        double and rounded once) of the twin and (float32) of the kernel, and the host's choice of the plain
        form, which folds lr into ``c = (1 - rho)/lr**2`` and ``e2 = eps/lr**2`` (0.0 when not ``fast``;
        not taken where they would overflow or be subnormal in float32)."""
        c, e2, fast = _folded(self.lr_t, self.rho, self.epsilon, self.momentum, self.centered, self.eps_inside_sqrt)
        return (*scalars(dtype, self.rho, 1 - self.rho, self.epsilon, self.lr_t, self.momentum, c, e2), fast)

    def update_core_cpu(self, xp, g, w, slots, scratch, decay=0.0):
        if decay:
            decay_weights(xp, w, decay, scratch)      # w = w - w*decay
        rho, one_minus, eps, lr, mu, c, e2, fast = self.constants(w.dtype)
        u, a, mom = slots["velocity"], slots.get("average_gradient"), slots.get("momentum")
        u *= rho                                      # u = u*rho + g*g  (u first: measured ~3% faster)
        s = xp.multiply(g, g, out=scratch)
        u += s
        if fast:
            xp.multiply(u, c, out=s)
            s += e2
            xp.sqrt(s, out=s)
            xp.divide(g, s, out=s)
            w -= s                                    # w = w - g / sqrt(u*c + e2)
            return
        xp.multiply(u, one_minus, out=s)              # v = u*one_minus_rho
        if a is not None:
            a *= rho
            a += g * one_minus                        # a = a*rho + g*one_minus_rho
            s -= a * a                                # v = v - a*a
        if self.eps_inside_sqrt:
            s += eps
            xp.sqrt(s, out=s)                         # sqrt(v + eps)
        else:
            xp.sqrt(s, out=s)
            s += eps                                  # sqrt(v) + eps
        xp.divide(g, s, out=s)
        s *= lr                                       # s = (g / den)*lr
        if mom is not None:
            mom *= mu
            mom += s                                  # mom = mom*mu + s
            s = mom
        w -= s                                        # w = w - s

    def update_core_host(self, g, w, slots, decay=0.0):
        return self.update_core_gpu(g, w, slots, None, decay)

    def update_core_gpu(self, g, w, slots, halt, decay=0.0):
        rho, one_minus, eps, lr, mu, c, e2, fast = self.constants(FLOAT32)
        return SOURCE.launch("rmsprop_update", w.size, (
            w, g, slots["velocity"], cuda.pointer(slots.get("average_gradient")), cuda.pointer(slots.get("momentum")),
            rho, one_minus, eps, lr, mu, c, e2, cuda.i32(fast), cuda.i32(self.eps_inside_sqrt), cuda.f32(decay),
            cuda.i64(w.size), cuda.pointer(halt)))

    def export_slot(self, name, array):
        if name != "velocity":
            return array
        return array.astype("float64") * (1 - self.rho)          # Keras' v, exact to convert back

    def import_slot(self, name, array):
        if name != "velocity":
            return array
        with backend.numpy.errstate(over="ignore"):       # an overflow gives inf, which set_state refuses
            return (backend.numpy.asarray(array, dtype="float64") / (1 - self.rho)).astype("float32")

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered, "eps_inside_sqrt": self.eps_inside_sqrt}
