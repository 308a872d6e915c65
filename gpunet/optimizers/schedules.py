"""Learning-rate schedules with Keras 3's formulas, names, arguments and configs.

A schedule is a callable of the optimizer's step count (0 on the first update, as in Keras)
that returns the learning rate of that step. Optimizers evaluate it on the host once per
step, in float64 (Keras computes in the dtype of ``initial_learning_rate``, float32 for a
Python float), so nothing waits for a GPU::

    lr = gpunet.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96)
    opt = gpunet.optimizers.SGD(learning_rate=lr)

>>> from gpunet.optimizers import schedules
>>> schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])(15)
0.5
"""
from __future__ import annotations

import math
import numbers

from .. import backend

__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay",
           "InverseTimeDecay", "CosineDecay", "CosineDecayRestarts", "serialize", "deserialize"]


# -- number checks, shared with the optimizers' hyper-parameters --------------------------------------
def is_number(value) -> bool:
    """A real number (Python's or NumPy's, e.g. ``np.float32(0.5)``, ``np.int64(3)``), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, backend.numpy.bool_))


def check_positive(name, value) -> float:
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_fraction(name, value) -> float:
    if not is_number(value) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


def check_optional(name, value):
    """``None`` or a finite number >= 0 (as a float)."""
    if value is not None and (not is_number(value) or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be None or a finite number >= 0, got {value!r}")
    return None if value is None else float(value)


def check_iterations(value) -> int:
    """A non-negative integer below 2**62 (NumPy's too) as an int, else ValueError."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value < 2 ** 62:
        raise ValueError(f"optimizer iterations must be a non-negative integer, got {value!r}")
    return int(value)


class LearningRateSchedule:
    """Base class: subclasses define ``__call__(step)`` (and ``get_config`` to be saved)."""

    def __call__(self, step):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  "`__call__(self, step)`.")

    def get_config(self) -> dict:
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override `get_config()` "
                                  "in order to be serializable.")

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"


def _check_steps(name, value):
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value}")
    return value


def _finite(name, value):
    """``value`` unchanged when it is a finite number (NumPy's too), else a ValueError naming ``name``."""
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f"Argument `{name}` must be a finite number. Received: {name}={value!r}")
    return value


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (integer division with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        self.initial_learning_rate = _finite("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.decay_rate = _finite("decay_rate", decay_rate)
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = float(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return float(self.initial_learning_rate) * float(self.decay_rate) ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while ``boundaries[i-1] < step <=
    boundaries[i]``, ``values[-1]`` after ``boundaries[-1]`` (Keras' sum of indicator terms)."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError("The length of boundaries should be 1 less than the length of values. Received: "
                             f"boundaries={boundaries} of length {len(boundaries)}, and values={values} of length "
                             f"{len(values)}.")
        for name_, numbers_ in (("boundaries", boundaries), ("values", values)):
            for value in numbers_:
                _finite(name_, value)
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        step, b, v = float(step), self.boundaries, self.values
        lr = (step <= b[0]) * float(v[0]) + (step > b[-1]) * float(v[-1])
        for low, high, value in zip(b[:-1], b[1:], v[1:-1]):
            lr += (low < step <= high) * float(value)
        return float(lr)

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step / decay_steps) ** power + end``, ``step`` capped at ``decay_steps``
    (with ``cycle``: ``decay_steps`` times the first multiple of it reaching ``step`` instead)."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
                 name="PolynomialDecay"):
        self.initial_learning_rate = _finite("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.end_learning_rate = _finite("end_learning_rate", end_learning_rate)
        self.power = _finite("power", power)
        self.cycle = cycle
        self.name = name

    def __call__(self, step):
        step, steps = float(step), float(self.decay_steps)
        if self.cycle:
            steps *= 1.0 if step == 0 else math.ceil(step / self.decay_steps)
        else:
            step = min(step, steps)
        end = float(self.end_learning_rate)
        return (float(self.initial_learning_rate) - end) * (1 - step / steps) ** float(self.power) + end

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (floored ratio with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        self.initial_learning_rate = _finite("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.decay_rate = _finite("decay_rate", decay_rate)
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = float(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return float(self.initial_learning_rate) / (1.0 + float(self.decay_rate) * p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


def _cosine(fraction, alpha):
    return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * fraction)) + alpha


class CosineDecay(LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` (or, after a linear warmup of ``warmup_steps`` to
    ``warmup_target``, from ``warmup_target``) to ``alpha`` times it over ``decay_steps``."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        self.initial_learning_rate = _finite("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _check_steps("decay_steps", decay_steps)
        self.alpha = _finite("alpha", alpha)
        self.name = name
        self.warmup_steps = _finite("warmup_steps", warmup_steps)
        self.warmup_target = None if warmup_target is None else _finite("warmup_target", warmup_target)

    def __call__(self, step):
        step, steps, initial = float(step), float(self.decay_steps), float(self.initial_learning_rate)
        if self.warmup_target is None:
            return initial * _cosine(min(step, steps) / steps, float(self.alpha))
        target, warmup = float(self.warmup_target), float(self.warmup_steps)
        step = min(step, steps + warmup)
        if step < warmup:
            return (target - initial) * (step / warmup) + initial
        return target * _cosine((step - warmup) / steps, float(self.alpha))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): periods of ``first_decay_steps * t_mul**i`` steps, the
    i-th starting from ``initial_learning_rate * m_mul**i``; ``alpha`` is the floor's fraction."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        self.initial_learning_rate = _finite("initial_learning_rate", initial_learning_rate)
        self.first_decay_steps = _check_steps("first_decay_steps", first_decay_steps)
        self.t_mul = _finite("t_mul", t_mul)
        self.m_mul = _finite("m_mul", m_mul)
        self.alpha = _finite("alpha", alpha)
        self.name = name

    def __call__(self, step):
        fraction = float(step) / self.first_decay_steps
        t_mul = float(self.t_mul)
        if t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:
            restart = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
            fraction = (fraction - (1.0 - t_mul ** restart) / (1.0 - t_mul)) / t_mul ** restart
        alpha = float(self.alpha)
        decayed = (1 - alpha) * 0.5 * float(self.m_mul) ** restart * (1.0 + math.cos(math.pi * fraction)) + alpha
        return float(self.initial_learning_rate) * decayed

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "first_decay_steps": self.first_decay_steps,
                "t_mul": self.t_mul, "m_mul": self.m_mul, "alpha": self.alpha, "name": self.name}


BUILT_IN = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, PolynomialDecay,
                                          InverseTimeDecay, CosineDecay, CosineDecayRestarts)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """Keras' form: ``{'module', 'class_name', 'config', 'registered_name'}`` (JSON-able for the built-ins)."""
    return {"module": "gpunet.optimizers.schedules", "class_name": type(schedule).__name__,
            "config": schedule.get_config(), "registered_name": None}


def deserialize(config: dict, custom_objects: dict | None = None) -> LearningRateSchedule:
    """The schedule :func:`serialize` (or Keras' ``keras.optimizers.schedules.serialize``) described."""
    table = {**BUILT_IN, **(custom_objects or {})}
    name = config.get("class_name")
    if name not in table:
        raise ValueError(f"unknown learning rate schedule {name!r}; valid names: {', '.join(sorted(table))} "
                         "(pass custom_objects={name: class} for your own)")
    return table[name].from_config(dict(config.get("config", {})))
