"""Reverse-mode automatic differentiation on a tape.

While a :class:`GradientTape` is active, every op whose inputs include a
*tracked* tensor (one with ``requires_grad=True``, one named by
``tape.watch``, or one produced by an earlier recorded op) appends a record
``(output, inputs, backward)`` to the tape. ``tape.gradient`` walks those
records once, newest first — no recursion, so a chain of 100,000 ops is fine —
and sums the gradients that flow into each tensor (fan-out).

When no tape is active, ops check one module-level list and record nothing.

This module sits below :mod:`gpunet.tensor`: it records and differentiates any value with
``data``, ``device`` and ``requires_grad`` (a Tensor), and wraps gradients with the source's
own ``wrap``.

Example:
    >>> import gpunet
    >>> w = gpunet.tensor([1.0, 2.0], requires_grad=True)
    >>> with gpunet.GradientTape() as tape:
    ...     loss = (w * w).sum()
    >>> tape.gradient(loss, w).numpy()
    array([2., 4.], dtype=float32)
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["GradientTape", "no_grad", "is_recording"]


class _State(threading.local):
    def __init__(self):
        self.tapes = []       # active tapes, innermost last
        self.paused = 0       # depth of no_grad blocks


_state = _State()


def is_recording() -> bool:
    """True when an active tape would record an op right now."""
    return bool(_state.tapes) and not _state.paused


# op function -> rule(g, inputs, output, needs, *args, **kwargs) giving the input gradients as *Tensors*
# (so that an outer tape records them: higher-order gradients); filled by gpunet.higher_order.
DIFFERENTIABLE_BACKWARDS: dict = {}


def record(output, inputs, backward, op=None) -> None:
    """Called by ops after computing ``output`` from ``inputs``.

    ``backward(grad_output, needs)`` must return one gradient (an xp array or
    ``None``) per input; ``needs[i]`` says whether input ``i`` wants one, so an
    op can skip work nobody uses (e.g. the gradient with respect to the data).
    Backward functions never modify ``grad_output`` in place. ``op``: ``(function, args,
    kwargs)`` of the op, which a gradient taken under an outer tape differentiates again.
    """
    if _state.paused:
        return
    for tape in _state.tapes:
        tracked = tape._tracked
        needs = tuple([getattr(t, "requires_grad", False) or id(t) in tracked for t in inputs])
        if True in needs:
            tape._records.append((output, inputs, needs, backward, op))
            tracked[id(output)] = output


class GradientTape:
    """Records differentiable ops so that gradients can be computed afterwards.

    Args:
        persistent: keep the records after :meth:`gradient` so it can be called again.
        watch_accessed_variables: accepted for Keras/TensorFlow compatibility; tensors with
            ``requires_grad=True`` are always tracked.

    Example:
        >>> x = gpunet.tensor(3.0)
        >>> with gpunet.GradientTape(persistent=True) as tape:
        ...     tape.watch(x)
        ...     y = x * x
        ...     z = y * y
        >>> float(tape.gradient(y, x).numpy()), float(tape.gradient(z, x).numpy())
        (6.0, 108.0)
    """

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True):
        self.persistent = persistent
        self._records = []
        self._tracked = {}
        self._used = False

    def __enter__(self):
        _state.tapes.append(self)
        return self

    def __exit__(self, *exc):
        _state.tapes.remove(self)
        return False

    def watch(self, tensor) -> None:
        """Track ``tensor`` (or each tensor in a list/tuple/dict) like a ``requires_grad`` one."""
        for t in _flatten(tensor):
            self._tracked[id(t)] = t

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self._records.clear()
        self._tracked.clear()

    def gradient(self, target, sources, output_gradients=None, unconnected_gradients="none"):
        """Gradients of ``target`` with respect to ``sources``.

        Args:
            target: a Tensor. A non-scalar target is treated as its sum (as in TensorFlow)
                unless ``output_gradients`` (same shape as target) is given.
            sources: a Tensor, or a list/tuple/dict of Tensors; the result has the same structure.
            unconnected_gradients: ``'none'`` gives ``None`` for a source the target does not
                depend on, ``'zero'`` gives zeros.

        Returns:
            Tensors (on the sources' devices, dtype of the source) in the structure of ``sources``.
        """
        if self._used and not self.persistent:
            raise RuntimeError(
                "GradientTape.gradient can only be called once on a non-persistent tape; "
                "use GradientTape(persistent=True) to compute several gradients")
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(f"unconnected_gradients must be 'none' or 'zero', got {unconnected_gradients!r}")
        _check_tensor(target, "target must be a gpunet Tensor")
        xp = target.device.xp
        if output_gradients is None:
            with target.device.context:
                seed = xp.ones(target.shape, dtype=target.dtype)
        else:
            values = output_gradients.data if _is_tensor(output_gradients) else output_gradients
            seed = target.device.asarray(values, dtype=target.dtype)
            if seed.shape != target.shape:
                raise ValueError(f"output_gradients has shape {seed.shape} but target has shape {target.shape}")
        # under another active tape the backward pass is itself recorded (on Tensors), so that tape can
        # differentiate the gradient again; otherwise it runs on arrays and records nothing
        differentiable = not _state.paused and any(t is not self for t in _state.tapes)
        if differentiable:
            seed = type(target).wrap(seed, target.device)
        grads = {id(target): seed}
        flat = _flatten(sources)
        keep = {id(t) for t in flat}
        paused = _state.paused
        if not differentiable:
            _state.paused = paused + 1
        try:
            for output, inputs, needs, backward, op in reversed(self._records):
                key = id(output)
                g = grads.get(key) if key in keep else grads.pop(key, None)
                if g is None:
                    continue
                with output.device.context:           # each op's backward runs with its GPU current
                    input_grads = _differentiable(op, g, inputs, output, needs) if differentiable else \
                        backward(g, needs)
                for t, need, gi in zip(inputs, needs, input_grads):
                    if need and gi is not None:
                        key = id(t)
                        prev = grads.get(key)
                        if prev is None:
                            grads[key] = gi
                        else:
                            with t.device.context:    # fan-out: the sum lives with the input
                                grads[key] = prev + gi
        finally:
            _state.paused = paused
        self._used = True
        if not self.persistent:
            self._records = []
            self._tracked = {}

        def result(src):
            _check_tensor(src, "sources must be gpunet Tensors")
            g = grads.get(id(src))
            if g is None:
                if unconnected_gradients == "none":
                    return None
                with src.device.context:
                    g = src.device.xp.zeros(src.shape, dtype=src.dtype)
            if g.shape != src.shape:  # a 0-d result of a reduction, say
                g = g.reshape(src.shape)
            return g if _is_tensor(g) else type(src).wrap(g, src.device)

        if type(sources) is list and len(flat) == len(sources):    # the common case: a flat list
            return [result(src) for src in sources]
        return _map_structure(result, sources)


def _differentiable(op, g, inputs, output, needs):
    """The input gradients of one recorded op as Tensor ops (recorded by the outer tapes)."""
    rule = DIFFERENTIABLE_BACKWARDS.get(op[0]) if op is not None else None
    if rule is None:
        name = getattr(op[0], "__qualname__", op[0]) if op is not None else "this op"
        raise NotImplementedError(f"a gradient taken under another GradientTape (a higher-order gradient) cannot go "
                                  f"through {name}: gpunet differentiates gradients of element-wise arithmetic, exp, "
                                  "log, sqrt, relu/sigmoid/tanh, sums, means, reshapes, transposes and 2-D products")
    return rule(g, inputs, output, needs, *op[1], **op[2])


def _is_tensor(value) -> bool:
    """A gpunet Tensor (this module sits below :mod:`gpunet.tensor`: it knows the class by its shape)."""
    return hasattr(value, "requires_grad") and hasattr(type(value), "wrap")


def _check_tensor(value, requirement) -> None:
    if not _is_tensor(value):
        raise TypeError(f"{requirement}, got {type(value).__name__}")


def _flatten(obj):
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flatten(item)]
    return [obj]


def _map_structure(fn, obj):
    if isinstance(obj, dict):
        return {k: _map_structure(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_structure(fn, v) for v in obj)
    return fn(obj)


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside the block are not recorded by any tape.

    Example:
        >>> w = gpunet.tensor([1.0], requires_grad=True)
        >>> with gpunet.GradientTape() as tape:
        ...     with gpunet.no_grad():
        ...         y = w * 2
        >>> tape.gradient(y, w) is None
        True
    """
    _state.paused += 1
    try:
        yield
    finally:
        _state.paused -= 1
