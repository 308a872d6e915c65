"""Full training checkpoints: ``model.save(path)`` and ``models.load_model(path)``.

A checkpoint is one ``.npz`` file (a zip NumPy reads with ``allow_pickle=False``)
holding everything needed to continue training exactly where it stopped:

* ``config`` — JSON: the architecture (each layer's class and config), the
  compile settings (optimizer with its hyper-parameters, loss, metrics), the
  optimizer's iteration count, the number of completed epochs and the state of
  :mod:`gpunet.random` (which draws shuffles and dropout masks);
* ``weight/NNNN`` — every weight, in model order;
* ``slot/I/NAME`` — the optimizer's slots of weight ``I`` (RMSprop scaled velocity, Adam m and v ...).

The file is written atomically (:func:`gpunet.fileio.atomic_write`): a crash or
a kill during ``save`` leaves the previous file complete. Everything that cannot
be saved (a custom layer, loss or metric) is refused before the file is touched.

Resuming on CPU is bit-exact: a model saved at the end of epoch ``k`` and
trained on with ``fit(..., initial_epoch=model.epochs_completed)`` ends with
exactly the weights of a run that was never interrupted.
"""
from __future__ import annotations

import json
import os
import zipfile

from . import backend, layers as _layers, losses as _losses, metrics as _metrics, optimizers as _optimizers
from . import random
from .fileio import atomic_write

np = backend.numpy

FORMAT = "gpunet.checkpoint"
VERSION = 1

LAYER_CLASSES = {cls.__name__: cls for cls in (_layers.Dense, _layers.Activation, _layers.Flatten,
                                               _layers.Dropout, _layers.Rescaling, _layers.InputLayer)}
LOSS_CLASSES = {cls.__name__: cls for cls in set(_losses._TABLE.values())}


class CheckpointError(ValueError):
    """A file that is not a readable gpunet checkpoint, or a model that cannot be saved as one."""


# ----------------------------------------------------------------------------- save
def model_config(model) -> dict:
    """The JSON-able description of ``model`` (architecture + compile), or CheckpointError naming
    the first part that cannot be described."""
    layer_cfgs = []
    for layer in model.layers:
        cls = type(layer).__name__
        if LAYER_CLASSES.get(cls) is not type(layer):
            raise CheckpointError(f"layer {layer.name!r} is a {cls}, not a built-in gpunet layer, so model.save "
                                  "cannot rebuild it; save the weights with model.save_weights(path) instead")
        cfg = layer.get_config()
        if "activation" in cfg and cfg["activation"] is None:
            raise CheckpointError(f"layer {layer.name!r} uses a custom activation function, which model.save cannot "
                                  "store; use a built-in activation name or model.save_weights(path)")
        layer_cfgs.append({"class": cls, "config": _jsonable(cfg)})
    cfg = {"name": model.name, "built_input_shape": _jsonable(model._input_shape), "layers": layer_cfgs,
           "compile": None}
    if model.compiled:
        cfg["compile"] = {"optimizer": _optimizer_config(model.optimizer), "loss": _loss_config(model.loss),
                          "metrics": [_metric_config(m) for m in model.metrics]}
    return cfg


def _optimizer_config(opt):
    if _optimizers._TABLE.get(opt.name) is not type(opt):
        raise CheckpointError(f"optimizer {type(opt).__name__} is not a built-in gpunet optimizer; model.save cannot "
                              "store it (use model.save_weights(path))")
    return {"name": opt.name, "config": opt.get_config()}


def _loss_config(loss):
    cls = type(loss).__name__
    if LOSS_CLASSES.get(cls) is not type(loss):
        raise CheckpointError(f"loss {getattr(loss, 'name', loss)!r} is a custom function; model.save cannot store "
                              "it (use a built-in loss name, or model.save_weights(path))")
    return {"class": cls, "name": loss.name, "from_logits": bool(loss.from_logits)}


def _metric_config(m):
    if type(m) is _metrics.Accuracy:
        return {"class": "Accuracy", "name": m.name, "kind": m.kind}
    if type(m) is _metrics.LossMetric and type(m.loss) in LOSS_CLASSES.values():
        return {"class": "LossMetric", "name": m.name, "loss": _loss_config(m.loss)}
    raise CheckpointError(f"metric {getattr(m, 'name', m)!r} is a custom function; model.save cannot store it "
                          "(use built-in metric names, or model.save_weights(path))")


def save_model(model, filepath) -> None:
    """Write ``model``'s full checkpoint to ``filepath`` (atomically; see the module docstring)."""
    if not model.built:
        raise ValueError("the model has no weights yet: build it (give the first layer input_shape, or call "
                         "fit/predict) before model.save")
    config = model_config(model)                      # refuses unsaveable models before any write
    weights = model.weights
    arrays = {f"weight/{i:04d}": w.numpy() for i, w in enumerate(weights)}
    state = {"epochs_completed": int(model.epochs_completed), "rng_state": random.get_state(),
             "optimizer_iterations": 0, "weight_names": [w.name for w in weights]}
    if model.compiled:
        opt_state = model.optimizer.get_state(weights)
        state["optimizer_iterations"] = int(opt_state.pop("iterations"))
        arrays.update({f"slot/{k}": v for k, v in opt_state.items()})     # keys "I/NAME", as get_state gives
    doc = {"format": FORMAT, "version": VERSION, "model": config, "state": state}
    arrays["config"] = np.array(json.dumps(doc))
    with atomic_write(filepath) as f:
        np.savez(f, **arrays)


# ----------------------------------------------------------------------------- load
def read_checkpoint(filepath) -> tuple[dict, dict]:
    """``(doc, arrays)`` of a checkpoint file; CheckpointError if it is not one (or is damaged)."""
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"no checkpoint file at {filepath!r}")
    try:
        with np.load(filepath, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        raise CheckpointError(f"{filepath}: not a readable gpunet checkpoint (truncated or corrupt: {exc})") from None
    if "config" not in arrays:
        hint = (" it looks like a weights file: build the model and call model.load_weights(path)"
                if any(k.startswith("w") for k in arrays) else "")
        raise CheckpointError(f"{filepath}: not a gpunet checkpoint (no config entry);{hint}")
    try:
        doc = json.loads(str(arrays.pop("config")))
    except ValueError as exc:
        raise CheckpointError(f"{filepath}: the checkpoint's config is damaged ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{filepath}: not a gpunet checkpoint (format {doc.get('format')!r})")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{filepath}: checkpoint version {doc.get('version')!r} is not supported by this "
                              f"gpunet (reads version {VERSION}); upgrade gpunet")
    return doc, arrays


def load_model(filepath, device=None, compile: bool = True, restore_rng: bool = True):  # noqa: A002
    """Rebuild a model saved by ``model.save(filepath)``: architecture, weights, optimizer
    state, ``model.epochs_completed`` and (``restore_rng=True``) the state of
    :mod:`gpunet.random`, so that ``fit(..., initial_epoch=model.epochs_completed)``
    continues the interrupted run exactly.

    Args:
        device: where to put the model (default: the default device); a checkpoint written
            on a GPU loads on the CPU and vice versa.
        compile: also restore the optimizer, loss and metrics (when the model was compiled).
    """
    from .models import Sequential
    doc, arrays = read_checkpoint(filepath)
    cfg, state = doc["model"], doc["state"]
    try:
        model = Sequential(device=device, name=cfg["name"])
        for spec in cfg["layers"]:
            model.add(LAYER_CLASSES[spec["class"]](**_tuples(spec["config"])))
        if not model.built and cfg["built_input_shape"] is not None:
            model.build(tuple(cfg["built_input_shape"]))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{filepath}: the checkpoint's architecture cannot be rebuilt ({exc!r})") from None
    weights = model.weights
    values = [arrays.get(f"weight/{i:04d}") for i in range(len(weights))]
    for w, v in zip(weights, values):
        if v is None or v.shape != w.shape:
            raise CheckpointError(f"{filepath}: weight {w.name!r} is missing or has the wrong shape "
                                  f"({None if v is None else v.shape}, expected {w.shape})")
    model.set_weights(values)
    model.epochs_completed = int(state["epochs_completed"])
    comp = cfg.get("compile")
    if compile and comp is not None:
        opt = comp["optimizer"]
        model.compile(optimizer=_optimizers._TABLE[opt["name"]](**opt["config"]), loss=_loss_from_config(comp["loss"]),
                      metrics=[_metric_from_config(m) for m in comp["metrics"]])
        slots = {k[len("slot/"):]: v for k, v in arrays.items() if k.startswith("slot/")}
        model.optimizer.set_state(weights, {"iterations": state["optimizer_iterations"], **slots})
    if restore_rng:
        random.set_state(state["rng_state"])
    return model


def _loss_from_config(loss):
    return LOSS_CLASSES[loss["class"]](from_logits=loss["from_logits"], name=loss["name"])


def _metric_from_config(m):
    if m["class"] == "Accuracy":
        return _metrics.Accuracy(name=m["name"], kind=m["kind"])
    return _metrics.LossMetric(m["name"], _loss_from_config(m["loss"]))


def _jsonable(obj):
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def _tuples(cfg: dict) -> dict:
    return {k: tuple(v) if k == "input_shape" and v is not None else v for k, v in cfg.items()}
