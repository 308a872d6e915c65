""":class:`Unchanged`: a failed ``fit``/``evaluate``/``predict`` leaves the model exactly as it was.

Before their first step these build the model (when unbuilt), resolve the metrics and set up the
run; any of that, or a callback's check, may fail. :class:`Unchanged` records the attributes of the
model, its layers, its compiled metrics and its optimizer (lists and dicts copied one level deep:
a layer's weight list, a model's layer list) and the host random generator's state (building draws
the initial weights from it), and puts them all back when the block raises. Weight *values* are
not copied: it guards code that builds and checks, and (:meth:`Unchanged.until_changed`) training
up to its first update.
"""
from __future__ import annotations

import contextlib

from .. import random


def _attributes(obj) -> dict:
    return {k: (v.copy() if type(v) in (list, dict, set) else v) for k, v in vars(obj).items()}


class Unchanged:
    """``with Unchanged(model): ...`` -- on an exception (Ctrl-C included), the model is put back."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        model = self.model
        objects = [model, *model.layers, *model.compiled_metrics]
        if getattr(model, "optimizer", None) is not None:
            objects.append(model.optimizer)
        self.saved = [(obj, _attributes(obj)) for obj in objects if hasattr(obj, "__dict__")]
        self.rng = random.generator().bit_generator.state
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.restore()
        return False

    def restore(self) -> None:
        """Put back what was recorded."""
        for obj, attributes in self.saved:
            vars(obj).clear()
            vars(obj).update(attributes)
        random.generator().bit_generator.state = self.rng

    @contextlib.contextmanager
    def until_changed(self, progress):
        """Restore on an exception as long as ``progress()`` (e.g. the optimizer's step count) is what it
        was on entry: a ``fit`` that fails in its first step, before any update, changes nothing either."""
        start = progress()
        try:
            yield self
        except BaseException:
            if progress() == start:
                self.restore()
            raise
