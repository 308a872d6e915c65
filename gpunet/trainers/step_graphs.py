"""CUDA graphs of ``fit``'s training step: ``compile(jit_compile=True)`` on a GPU.

A step of the chapter's network launches some twenty kernels, each costing the host more time in
Python and CuPy than the GPU spends running it. The step allocates nothing after its first steps and
passes its kernels nothing that changes from step to step (``tests/test_capture_ready_step.py``), so
it can be captured once into a CUDA graph and replayed with one launch. Per batch shape::

    steps 1-2   the ordinary step (products by cuBLAS); it makes the slots, work arrays and sums
    step 3      the batch copied into the graph's own input arrays; the step captured (products by the
                capture-safe kernel of gpunet.kernels.gemm, cuBLAS refusing capture); the graph launched
    later       the batch copied in; one graph launch; the step counted on the host

What the captured call did on the host, each replay does again (:meth:`StepGraphs.count_step`: the
optimizer's ``iterations``, the loss guard's issued steps, the running sums' sample count); the
capture checks that this is all it did. A graph is captured afresh when the learning rate (a
number the kernels are given) or a weight's array changes, e.g. by a callback.

Not captured (the ordinary step runs, and ``fit`` warns once, saying why): a model the tapeless
path cannot train (:class:`~gpunet.trainers.gradients.TapelessGradients`), ``fit(distributed=True)``,
sample or class weights, an optimizer with a learning-rate schedule, gradient clipping or its own
``update_step``, a layer that says it cannot be captured (:meth:`Layer.capture_obstacle`). A capture
that fails (a custom layer that reads the device on the host, say) is abandoned with the host's
counts put back: the step then runs uncaptured, as do the rest of that ``fit``'s steps.
"""
from __future__ import annotations

import warnings

from ..kernels import cuda, gemm
from .gradients import TapelessGradients

WARM_UP = 2          # ordinary steps per batch shape before its capture
MAX_GRAPHS = 8       # graphs kept per fit (shapes x learning rates); more start the collection afresh


def capture_obstacle(model, run) -> str | None:
    """Why ``fit``'s step cannot be captured for this model and run, or None when it can."""
    if not isinstance(run.gradients, TapelessGradients):
        return "a layer or the loss has no array form, so the GradientTape runs the step"
    if run.strategy.is_distributed:
        return "fit(distributed=True) reduces the gradients across processes within the step"
    if run.data.wd is not None:
        return "sample or class weights are given"
    reason = model.optimizer.capture_obstacle()
    if reason:
        return f"the optimizer has {reason}"
    for layer in model.layers:
        reason = layer.capture_obstacle()
        if reason:
            return f"layer {layer.name!r}: {reason}"
    return None


def step_graphs_for(model, run):
    """The :class:`StepGraphs` of a ``fit`` with ``jit_compile=True`` on a GPU; None otherwise (warning
    why, when the step cannot be captured)."""
    if model.jit_compile is not True or not model.device.is_gpu:
        return None
    reason = capture_obstacle(model, run)
    if reason:
        warnings.warn(f"gpunet: fit(jit_compile=True) trains without CUDA graphs because {reason}",
                      RuntimeWarning, stacklevel=4)
        return None
    return StepGraphs(model, run)


class _Graph:
    """One batch shape's capture: its warm-up count, input arrays, graph and what it keeps alive."""

    def __init__(self):
        self.warm, self.x, self.y, self.graph, self.kept, self.last_loss = 0, None, None, None, [], None


class StepGraphs:
    """The captured steps of one ``fit``; :meth:`step` takes the place of ``model.train_step``."""

    def __init__(self, model, run):
        self.model, self.run, self.xp = model, run, model.device.xp
        self.graphs = {}
        self.captures = self.replays = 0
        self.failure = None        # why a capture failed (the rest of the fit runs uncaptured)

    def __enter__(self):           # (the span of the fit's epochs, as StepReplays has one)
        return self

    def __exit__(self, *exc):
        return False

    def step(self, x, y, n_global, step_id) -> bool:
        """One training step on device batch ``(x, y)``: ordinary, captured or replayed; True (a GPU's
        loss guard reports later)."""
        opt = self.model.optimizer
        key = (x.shape, x.dtype.str, y.shape, y.dtype.str, opt.lr_t, tuple(id(p.data) for p in self.run.params))
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_GRAPHS:
                self.graphs.clear()
            entry = self.graphs[key] = _Graph()
        if entry.graph is None:
            if entry.warm < WARM_UP or self.failure:
                entry.warm += 1
                return self.model.train_step(self.run, x, y, None, n_global, step_id)
            return self._capture(entry, x, y, n_global, step_id)
        self.xp.copyto(entry.x, x)
        self.xp.copyto(entry.y, y)
        entry.graph.launch()
        self.count_step(entry, n_global)
        self.replays += 1
        return True

    def count_step(self, entry, n_global) -> None:
        """What a replayed step does on the host: the counts the captured call advanced."""
        self.model.optimizer.count_replayed_step()
        self.run.guard.issued += 1
        self.run.sums.count += n_global
        self.run.sums.last = entry.last_loss

    def _host_counts(self):
        """``(iterations, the optimizer's host step state, issued steps, sample count, last loss)``."""
        opt, run = self.model.optimizer, self.run
        return opt.iterations, opt.host_step_state(), run.guard.issued, run.sums.count, run.sums.last

    def _capture(self, entry, x, y, n_global, step_id) -> bool:
        entry.x, entry.y = self.xp.empty_like(x), self.xp.empty_like(y)
        self.xp.copyto(entry.x, x)
        self.xp.copyto(entry.y, y)
        gemm.SOURCE.function("gemm_f32")             # loaded (compiled) before the capture
        before = self._host_counts()
        capture = cuda.GraphCapture()
        try:
            with capture:
                self.model.train_step(self.run, entry.x, entry.y, None, n_global, step_id)
            counts = self._host_counts()
            if (counts[0], counts[2], counts[3]) != (before[0] + 1, before[2] + 1, before[3] + n_global):
                raise RuntimeError("the captured step changed the host's counts in a way a replay would not")
        except Exception as exc:                     # put back the host's counts; this step runs uncaptured
            opt, run = self.model.optimizer, self.run
            opt.restore_host_step_state(before[1])
            run.guard.issued, run.sums.count, run.sums.last = before[2:]
            self.failure = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"gpunet: capturing the training step into a CUDA graph failed ({self.failure}); "
                          "fit continues without CUDA graphs", RuntimeWarning, stacklevel=6)
            return self.model.train_step(self.run, x, y, None, n_global, step_id)
        entry.graph, entry.kept, entry.last_loss = capture.graph, capture.kept, self.run.sums.last
        entry.graph.launch()                          # the capture ran nothing: this step runs now
        self.captures += 1
        return True
