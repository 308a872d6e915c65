"""Weights files and full training checkpoints: ``save_weights``/``load_weights``, ``model.save(path)``
and ``models.load_model(path)``.

Both are one ``.npz`` file (a zip NumPy reads with ``allow_pickle=False``) holding ``weight/NNNN``,
every weight in model order. A checkpoint also holds everything needed to continue training
exactly where it stopped:

* ``config`` — JSON (format version 2): the architecture (each layer's class and config), the compile settings
  (optimizer with its hyper-parameters, loss, metrics), the optimizer's iteration count, the
  number of completed epochs, the state of :mod:`gpunet.random` (which draws shuffles and
  dropout masks) and any layer state (a seeded Dropout's generator);
* ``slot/I/NAME`` — the optimizer's slots of weight ``I``, under Keras' names (RMSprop
  velocity, Adam momentum and velocity ...).

Files are written atomically (:func:`gpunet.fileio.atomic_write`): a crash or a kill during a
save leaves the previous file complete. Everything that cannot be saved (a custom layer, loss
or metric) is refused before the file is touched. Weights files of earlier gpunet versions (keys
``wNNNN:name``) still load.

Resuming on CPU is bit-exact: a model saved at the end of epoch ``k`` and trained on with
``fit(..., initial_epoch=model.epochs_completed)`` ends with exactly the weights of a run that
was never interrupted.

Format versions: 1 (slots under gpunet's own names: RMSprop ``scaled_velocity``, Adam ``m``/``v``)
and 2 (Keras' names) both load; this version writes 2, which earlier versions refuse.

This module knows models only through their public methods; :func:`gpunet.models.load_model`
gives it the model class to rebuild (:func:`load_checkpoint`).
"""
from __future__ import annotations

import io
import json
import os
import zipfile

from . import backend, layers as _layers, losses as _losses, metrics as _metrics, optimizers as _optimizers
from . import random
from .errors import CheckpointError, ShapeError
from .fileio import atomic_write

np = backend.numpy

FORMAT = "gpunet.checkpoint"
VERSION = 2                   # 2: optimizer slots under Keras' names (RMSprop's velocity is Keras' v)
READABLE_VERSIONS = (1, 2)

__all__ = ["CheckpointError", "save_weights", "load_weights", "save_model", "load_checkpoint", "read_checkpoint",
           "model_config", "to_bytes", "from_bytes"]


def _weight_key(i: int) -> str:
    return f"weight/{i:04d}"


def _require_built(model, what):
    if not model.built:
        raise ValueError(f"the model has no weights yet: build it (give the first layer input_shape, or call "
                         f"fit/predict) before {what}")


def read_npz(filepath, what: str) -> dict:
    """Every array of the ``.npz`` file (no pickles); FileNotFoundError / CheckpointError naming ``what``."""
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"no {what} file at {filepath!r}")
    return _read_arrays(filepath, filepath, what)


def _read_arrays(source, name, what) -> dict:
    try:
        with np.load(source, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        raise CheckpointError(f"{name}: not a readable gpunet {what} (truncated or corrupt: {exc}); "
                              "nothing was changed") from None


def weight_arrays(arrays: dict) -> list:
    """The weights of a weights file or checkpoint, in model order (legacy ``wNNNN:name`` keys too)."""
    keys = sorted(k for k in arrays if k.startswith("weight/"))
    if not keys:
        keys = sorted(k for k in arrays if k[:1] == "w" and k[1:5].isdigit() and k[5:6] == ":")
    return [arrays[k] for k in keys]


# ----------------------------------------------------------------------------- weights files
def save_weights(model, filepath) -> None:
    """Write all weights to ``filepath`` (``.npz``), atomically."""
    _require_built(model, "save_weights")
    arrays = {_weight_key(i): w.numpy() for i, w in enumerate(model.weights)}
    with atomic_write(filepath) as f:
        np.savez(f, **arrays)


def load_weights(model, filepath) -> None:
    """Load the weights of a weights file or a checkpoint; ``model`` is unchanged if anything does not match."""
    if not model.built:
        raise ValueError("build the model before load_weights (give the first layer input_shape, or call "
                         "model.build((None, features)))")
    found = weight_arrays(read_npz(filepath, "weights"))
    ws = model.weights
    for w, a in zip(ws, found):
        if a.shape != w.shape:
            raise ShapeError(f"{filepath}: weight {w.name!r} (layer {w.name.split('/')[0]!r}) expects shape "
                             f"{w.shape}, the file has {a.shape}; the file was saved from another architecture")
    if len(found) != len(ws):
        missing = f"; first missing: {ws[len(found)].name!r} of shape {ws[len(found)].shape}" if len(found) < len(ws) else ""
        raise ValueError(f"{filepath}: has {len(found)} weight arrays but the model has {len(ws)}{missing}")
    model.set_weights(found)


# ----------------------------------------------------------------------------- checkpoints
def model_config(model) -> dict:
    """The JSON-able description of ``model`` (architecture + compile), or CheckpointError naming
    the first part that cannot be described."""
    cfg = {**model.get_config(), "compile": None}
    if model.compiled:
        cfg["compile"] = {"optimizer": _optimizers.serialize(model.optimizer), "loss": _losses.serialize(model.loss),
                          "metrics": [_metrics.serialize(m) for m in model.metrics],
                          "weighted_metrics": [_metrics.serialize(m) for m in model.weighted_metrics]}
    return _jsonable(cfg)


def save_model(model, filepath) -> None:
    """Write ``model``'s full checkpoint to ``filepath`` (atomically; see the module docstring)."""
    arrays = _checkpoint_arrays(model)
    with atomic_write(filepath) as f:
        np.savez(f, **arrays)


def to_bytes(model) -> bytes:
    """``model``'s full checkpoint as bytes (what pickling a model stores; an unbuilt model too)."""
    buffer = io.BytesIO()
    np.savez(buffer, **_checkpoint_arrays(model, require_built=False))
    return buffer.getvalue()


def from_bytes(data: bytes, model_class, device=None):
    """The model :func:`to_bytes` described (gpunet's RNG state is left as it is)."""
    return _restore(*_parse_checkpoint(_read_arrays(io.BytesIO(data), "<bytes>", "checkpoint"), "<bytes>"),
                    model_class, device, True, False, "<bytes>")


def _checkpoint_arrays(model, require_built=True) -> dict:
    if require_built:
        _require_built(model, "model.save")
    config = model_config(model)                      # refuses unsaveable models before any write
    weights = model.weights
    arrays = {_weight_key(i): w.numpy() for i, w in enumerate(weights)}
    state = {"epochs_completed": int(model.epochs_completed), "rng_state": random.get_state(),
             "optimizer_iterations": 0, "weight_names": [w.name for w in weights],
             "layer_states": {layer.name: layer.get_state() for layer in model.layers if layer.get_state()}}
    if model.compiled:
        opt_state = model.optimizer.get_state(weights)
        state["optimizer_iterations"] = int(opt_state.pop("iterations"))
        arrays.update({f"slot/{k}": v for k, v in opt_state.items()})     # keys "I/NAME", as get_state gives
    doc = {"format": FORMAT, "version": VERSION, "model": config, "state": state}
    arrays["config"] = np.array(json.dumps(doc))
    return arrays


def read_checkpoint(filepath) -> tuple[dict, dict]:
    """``(doc, arrays)`` of a checkpoint file; CheckpointError if it is not one (or is damaged)."""
    return _parse_checkpoint(read_npz(filepath, "checkpoint"), filepath)


def _parse_checkpoint(arrays, filepath) -> tuple[dict, dict]:
    if "config" not in arrays:
        hint = " it looks like a weights file: build the model and call model.load_weights(path)" \
            if weight_arrays(arrays) else ""
        raise CheckpointError(f"{filepath}: not a gpunet checkpoint (no config entry);{hint}")
    try:
        doc = json.loads(str(arrays.pop("config")))
    except ValueError as exc:
        raise CheckpointError(f"{filepath}: the checkpoint's config is damaged ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{filepath}: not a gpunet checkpoint (format {doc.get('format')!r})")
    if doc.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{filepath}: checkpoint version {doc.get('version')!r} is not supported by this "
                              f"gpunet (reads versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade gpunet")
    return doc, arrays


def load_checkpoint(filepath, model_class, device=None, compile: bool = True, restore_rng: bool = True):  # noqa: A002
    """Rebuild a ``model_class`` saved by ``model.save(filepath)``: use :func:`gpunet.models.load_model`."""
    doc, arrays = read_checkpoint(filepath)
    return _restore(doc, arrays, model_class, device, compile, restore_rng, filepath)


def _restore(doc, arrays, model_class, device, compile, restore_rng, filepath):  # noqa: A002
    cfg, state = doc["model"], doc["state"]
    try:
        model = model_class.from_config(cfg, device=device)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{filepath}: the checkpoint's architecture cannot be rebuilt ({exc!r})") from None
    weights = model.weights
    values = weight_arrays(arrays)
    for i, w in enumerate(weights):
        v = values[i] if i < len(values) else None
        if v is None or v.shape != w.shape:
            raise CheckpointError(f"{filepath}: weight {w.name!r} is missing or has the wrong shape "
                                  f"({None if v is None else v.shape}, expected {w.shape})")
    model.set_weights(values[:len(weights)])
    model.epochs_completed = int(state["epochs_completed"])
    for layer in model.layers:
        layer.set_state(state.get("layer_states", {}).get(layer.name, {}))
    comp = cfg.get("compile")
    if compile and comp is not None:
        model.compile(optimizer=_optimizers.deserialize(comp["optimizer"]), loss=_losses.deserialize(comp["loss"]),
                      metrics=[_metrics.deserialize(m) for m in comp["metrics"]],
                      weighted_metrics=[_metrics.deserialize(m) for m in comp.get("weighted_metrics", [])])
        slots = {k[len("slot/"):]: v for k, v in arrays.items() if k.startswith("slot/")}
        model.optimizer.set_state(weights, {"iterations": state["optimizer_iterations"], **slots})
    if restore_rng:
        random.set_state(state["rng_state"])
    return model


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
