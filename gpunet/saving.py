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

Every file read is untrusted (:class:`gpunet.fileio.SafeNpz`): no pickle ever runs, and nothing is
decompressed or allocated before it is checked. The config (at most ``CONFIG_MAX_BYTES`` = 16 MiB,
JSON nested at most ``JSON_MAX_DEPTH`` = 64 deep, its parts of the types gpunet writes, iteration and
epoch counts non-negative integers) describes the architecture, whose weight shapes are computed
without building it (:meth:`gpunet.models.Sequential.plan_weights`) and compared with the arrays'
``.npy`` headers; each array is then read within exactly the bytes its shape needs (and refused if it
would expand more than ``MAX_EXPANSION`` = 100 times from its bytes in the file: a zip bomb), must hold
numbers that are finite as float32, and optimizer slots must name a weight and a slot of the optimizer
and have that weight's shape; the RNG state is checked (:func:`gpunet.random.check_state`). Members
nobody asks for are never decompressed. Only then is the model built and given its state (gpunet's
RNG is left as it was, or set to the checkpoint's with ``restore_rng``), so a failure costs neither
memory nor state: every failure is a :class:`CheckpointError` (a ValueError; :class:`CheckpointShapeError`
is also a ShapeError) naming the file and the problem. A plain ``.npy`` file is refused with a hint
(load the array with NumPy and pass it to ``set_weights``). Saving names the destination in its
errors (a folder, a folder that is not writable, a full disk) and writes through a symbolic link.

This module knows models only through their public methods; :func:`gpunet.models.load_model`
gives it the model class to rebuild (:func:`load_checkpoint`).
"""
from __future__ import annotations

import io
import json
import os
import re

from . import backend, layers as _layers, losses as _losses, metrics as _metrics, optimizers as _optimizers
from . import random
from .errors import CheckpointError, ShapeError
from .fileio import SafeNpz, atomic_write

np = backend.numpy

FORMAT = "gpunet.checkpoint"
VERSION = 2                   # 2: optimizer slots under Keras' names (RMSprop's velocity is Keras' v)
READABLE_VERSIONS = (1, 2)
CONFIG_MAX_BYTES = 16 * 2 ** 20   # the config member (JSON as a NumPy text scalar), uncompressed
JSON_MAX_DEPTH = 64               # nesting of the config's lists and objects (gpunet writes about 6)
MAX_EXPANSION = 100               # a weight or slot may expand at most this much from its bytes in the file
MAX_ITERATIONS = 2 ** 62          # optimizer iterations and epochs: non-negative ints below this
NUMBER_KINDS = "biuf"             # dtypes a weight or slot may be stored in (converted to float32)

__all__ = ["CheckpointError", "CheckpointShapeError", "save_weights", "load_weights", "save_model",
           "load_checkpoint", "read_checkpoint", "model_config", "to_bytes", "from_bytes"]


class CheckpointShapeError(CheckpointError, ShapeError):
    """A weights file or checkpoint whose arrays have other shapes than the model's (another architecture)."""


def _weight_key(i: int) -> str:
    return f"weight/{i:04d}"


def _require_built(model, what):
    if not model.built:
        raise ValueError(f"the model has no weights yet: build it (give the first layer input_shape, or call "
                         f"fit/predict) before {what}")


def _fail(filepath, problem, error=CheckpointError):
    return error(f"{filepath}: {problem}; nothing was loaded", os.fspath(filepath) if filepath != "<bytes>" else None)


def _open(source, what, name=None) -> SafeNpz:
    """The file (a path, or a file object named ``name``) as a :class:`SafeNpz` raising CheckpointError."""
    return SafeNpz(source, error=CheckpointError, what=what, name=name)


def weight_keys(names) -> list:
    """The members holding weights, in model order (legacy ``wNNNN:name`` keys too)."""
    keys = sorted(k for k in names if k.startswith("weight/"))
    if not keys:
        keys = sorted(k for k in names if k[:1] == "w" and k[1:5].isdigit() and k[5:6] == ":")
    return keys


def _check_headers(z, filepath, specs) -> list:
    """``specs``: ``(member, what, shape)``. Every member's ``.npy`` header is checked (shape, a number
    dtype) before any array is read; returns each member's byte count."""
    sizes = []
    for key, what, shape in specs:
        got, dtype = z.header(key)
        if got != tuple(shape):
            raise _fail(filepath, f"{what} (array {key!r}) expects shape {tuple(shape)}, the file has {got}: "
                        "the file was saved from another architecture", CheckpointShapeError)
        if dtype.kind not in NUMBER_KINDS:
            raise _fail(filepath, f"{what} (array {key!r}) holds dtype {dtype}, not numbers that convert to "
                        "float32")
        sizes.append(int(np.prod(got, dtype=object)) * dtype.itemsize)
    return sizes


def _read_arrays(z, filepath, specs) -> list:
    """The arrays of ``specs`` (see :func:`_check_headers`), all headers checked before the first read."""
    sizes = _check_headers(z, filepath, specs)
    out = []
    for (key, what, shape), size in zip(specs, sizes):
        a = z.array(key, shape=shape, max_bytes=size, max_ratio=MAX_EXPANSION)
        with np.errstate(over="ignore"):
            finite = a.dtype.kind != "f" or np.isfinite(a.astype(np.float32)).all()
        if not finite:
            raise _fail(filepath, f"{what} (array {key!r}) holds non-finite values (NaN or infinity, as float32)")
        out.append(a)
    return out


def _weight_specs(z, filepath, planned) -> list:
    """``(member, what, shape)`` of each weight the model (``planned``: ``(name, shape)``) expects."""
    keys = weight_keys(z.names)
    if len(keys) != len(planned):
        first = f"; first missing: {planned[len(keys)][0]!r} of shape {planned[len(keys)][1]}" \
            if len(keys) < len(planned) else ""
        raise _fail(filepath, f"has {len(keys)} weight arrays but the model has {len(planned)}{first}")
    return [(key, f"weight {name!r}", shape) for key, (name, shape) in zip(keys, planned)]


def _assign(model, values, filepath) -> None:
    """``model.set_weights(values)`` (all checked first: dtypes, finiteness), errors naming the file."""
    try:
        model.set_weights(values)
    except (ValueError, TypeError) as exc:
        raise _fail(filepath, str(exc)) from None


# ----------------------------------------------------------------------------- weights files
def save_weights(model, filepath) -> None:
    """Write all weights to ``filepath`` (``.npz``), atomically."""
    _require_built(model, "save_weights")
    arrays = {_weight_key(i): w.numpy() for i, w in enumerate(model.weights)}
    with atomic_write(filepath) as f:
        np.savez(f, **arrays)


def load_weights(model, filepath) -> None:
    """Load the weights of a weights file or a checkpoint; ``model`` is unchanged if anything does not match.

    Every array's header (count, shapes, number dtypes) is checked before any is read, every array
    read and checked (float32-convertible, finite) before the first weight changes. Raises
    FileNotFoundError, CheckpointError (CheckpointShapeError, also a ShapeError, for other shapes)."""
    if not model.built:
        raise ValueError("build the model before load_weights (give the first layer input_shape, or call "
                         "model.build((None, features)))")
    planned = [(w.name, w.shape) for w in model.weights]
    with _open(filepath, "weights") as z:
        values = _read_arrays(z, filepath, _weight_specs(z, filepath, planned))
    _assign(model, values, filepath)


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
    with _open(io.BytesIO(data), "checkpoint", name="<bytes>") as z:
        return _restore(z, _read_doc(z, "<bytes>"), model_class, device, True, False, "<bytes>")


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
    """``(doc, arrays)`` of a checkpoint file (every array it holds, checked as
    :class:`~gpunet.fileio.SafeNpz` does, at most as large as the file); CheckpointError if it is not one."""
    with _open(filepath, "checkpoint") as z:
        doc = _read_doc(z, filepath)
        cap = os.path.getsize(filepath) * MAX_EXPANSION
        return doc, {k: z.array(k, max_bytes=cap, max_ratio=MAX_EXPANSION) for k in z.names if k != "config"}


def _read_doc(z, filepath) -> dict:
    """The checkpoint's config (format, version, model, state), its size, depth and layout checked."""
    if "config" not in z.names:
        hint = " it looks like a weights file: build the model and call model.load_weights(path)" \
            if weight_keys(z.names) else ""
        raise CheckpointError(f"{filepath}: not a gpunet checkpoint (no config entry);{hint}", z.path)
    shape, dtype = z.header("config")
    if shape != () or dtype.kind != "U":
        raise _fail(filepath, f"the checkpoint's config must be JSON text, found a {dtype} array of shape {shape}")
    text = str(z.array("config", shape=(), max_bytes=CONFIG_MAX_BYTES))
    depth = _json_depth(text)
    if depth > JSON_MAX_DEPTH:
        raise _fail(filepath, f"the checkpoint's config nests {depth} levels deep, over the {JSON_MAX_DEPTH} "
                    "gpunet reads (it writes about 6)")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _fail(filepath, f"the checkpoint's config is damaged ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _fail(filepath, f"not a gpunet checkpoint (format {doc.get('format') if isinstance(doc, dict) else doc!r})")
    if doc.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{filepath}: checkpoint version {doc.get('version')!r} is not supported by this "
                              f"gpunet (reads versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade gpunet",
                              z.path)
    _check_layout(doc, filepath)
    return doc


def _json_depth(text: str) -> int:
    """How deeply ``text``'s lists and objects nest (brackets inside strings not counted), in NumPy: no
    recursion, whatever the depth."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    b = np.frombuffer(stripped.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    if not b.size:
        return 0
    step = ((b == ord("[")) | (b == ord("{"))).astype(np.int64) - ((b == ord("]")) | (b == ord("}")))
    return int(np.cumsum(step).max())


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_ITERATIONS


def _check_layout(doc, filepath) -> None:
    """The config's parts have the types gpunet writes (CheckpointError naming the first that has not)."""
    model, state = doc.get("model"), doc.get("state")
    shape = model.get("built_input_shape") if isinstance(model, dict) else None
    problems = [
        (isinstance(model, dict), "'model' is not an object"),
        (isinstance(model, dict) and isinstance(model.get("layers"), list)
         and all(isinstance(spec, dict) and isinstance(spec.get("config"), dict) for spec in model["layers"]),
         "'model.layers' is not a list of layer objects with a 'config'"),
        (isinstance(model, dict) and isinstance(model.get("name"), str), "'model.name' is not a string"),
        (shape is None or (isinstance(shape, list) and 0 < len(shape) <= 32 and all(
            d is None or (_is_count(d) and 0 < d < 2 ** 31) for d in shape)),
         f"'model.built_input_shape' {shape!r} is not a list of positive sizes (or null)"),
        (isinstance(model, dict) and (model.get("compile") is None or isinstance(model["compile"], dict)),
         "'model.compile' is not an object or null"),
        (isinstance(state, dict), "'state' is not an object"),
        (isinstance(state, dict) and _is_count(state.get("epochs_completed")),
         f"'state.epochs_completed' {state.get('epochs_completed') if isinstance(state, dict) else None!r} is "
         "not a non-negative integer"),
        (isinstance(state, dict) and _is_count(state.get("optimizer_iterations", 0)),
         f"'state.optimizer_iterations' {state.get('optimizer_iterations') if isinstance(state, dict) else None!r}"
         " is not a non-negative integer"),
        (isinstance(state, dict) and isinstance(state.get("rng_state"), dict), "'state.rng_state' is not an object"),
        (isinstance(state, dict) and isinstance(state.get("layer_states", {}), dict) and all(
            isinstance(v, dict) for v in state.get("layer_states", {}).values()),
         "'state.layer_states' is not an object of objects"),
    ]
    for ok, problem in problems:
        if not ok:
            raise _fail(filepath, f"the checkpoint's config is damaged: {problem}")


def load_checkpoint(filepath, model_class, device=None, compile: bool = True, restore_rng: bool = True):  # noqa: A002
    """Rebuild a ``model_class`` saved by ``model.save(filepath)``: use :func:`gpunet.models.load_model`."""
    with _open(filepath, "checkpoint") as z:
        return _restore(z, _read_doc(z, filepath), model_class, device, compile, restore_rng, filepath)


REBUILD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, NotImplementedError)


def _restore(z, doc, model_class, device, compile, restore_rng, filepath):  # noqa: A002
    """Everything is checked before the model is built: the architecture's weight shapes (planned, not
    allocated) against the arrays' headers, the compile settings, the slots, the RNG state; then every
    array is read and checked, and only then is the model built and given its state."""
    cfg, state = doc["model"], doc["state"]
    try:
        planned = model_class.plan_weights(cfg)
        comp = cfg.get("compile") if compile else None
        compiled = None if comp is None else (
            _optimizers.deserialize(comp["optimizer"]), _losses.deserialize(comp["loss"]),
            [_metrics.deserialize(m) for m in comp["metrics"]],
            [_metrics.deserialize(m) for m in comp.get("weighted_metrics", [])])
        if restore_rng:
            random.check_state(state["rng_state"])
    except REBUILD_ERRORS as exc:
        raise _named(exc, filepath, "the checkpoint's architecture or settings cannot be rebuilt") from None
    specs = _weight_specs(z, filepath, planned)
    slot_specs = [] if compiled is None else _slot_specs(z, filepath, compiled[0], planned)
    arrays = _read_arrays(z, filepath, specs + slot_specs)
    values, slots = arrays[:len(specs)], {key[len("slot/"):]: a for (key, _, _), a in zip(slot_specs, arrays[len(specs):])}
    rng_before = random.get_state()                   # building draws initial weights: undone below
    try:
        model = model_class.from_config(cfg, device=device)
        if [w.shape for w in model.weights] != [tuple(s) for _, s in planned]:
            raise ValueError("the model built has other weights than its config describes")
        model.set_weights(values)
        model.epochs_completed = int(state["epochs_completed"])
        for layer in model.layers:
            layer.set_state(state.get("layer_states", {}).get(layer.name, {}))
        if compiled is not None:
            optimizer, loss, metrics, weighted = compiled
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted)
            optimizer.set_state(model.weights, {"iterations": state.get("optimizer_iterations", 0), **slots})
    except REBUILD_ERRORS as exc:
        random.set_state(rng_before)
        raise _named(exc, filepath, "the checkpoint cannot be restored") from None
    random.set_state(state["rng_state"] if restore_rng else rng_before)   # checked above
    return model


def _named(exc, filepath, what):
    """``exc`` as a CheckpointError naming the file (one that already names a file is kept)."""
    if isinstance(exc, CheckpointError) and exc.path is not None:
        return exc
    return _fail(filepath, f"{what} ({exc})")


def _slot_specs(z, filepath, optimizer, planned) -> list:
    """``(member, what, shape)`` of the optimizer slots in the file: each names a weight of the model and a
    slot ``optimizer`` has (or had, in an older format), and must have that weight's shape."""
    known = set(optimizer.slot_names) | set(optimizer.legacy_slot_names)
    specs = []
    for key in sorted(k for k in z.names if k.startswith("slot/")):
        index, _, name = key[len("slot/"):].partition("/")
        if not (index.isdigit() and int(index) < len(planned) and name in known):
            raise _fail(filepath, f"optimizer slot {key!r} names no weight of the model or no slot of "
                        f"{type(optimizer).__name__} (its slots: {', '.join(optimizer.slot_names) or 'none'})")
        specs.append((key, f"optimizer slot {name!r} of weight {planned[int(index)][0]!r}", planned[int(index)][1]))
    return specs


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
