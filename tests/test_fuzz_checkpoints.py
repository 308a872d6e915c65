"""Fuzzing checkpoints (issue 15): hypothesis mutates a real small checkpoint (its keys, dtypes, shapes,
values, config JSON values and structure, and its bytes) and every case must end in a CheckpointError
(a ValueError naming the file) or a correct load, leaving an existing model and gpunet's RNG unchanged
when it fails.

The whole loop runs in one child process (:func:`untrusted.run_isolated`), which measures its peak
memory growth and time; the test prints the number of cases, the worst growth and the worst case's
time. "A correct load" is checked against NumPy: the loaded weights are the file's arrays as float32
(read back with ``numpy.load``), finite, and the model predicts finite numbers.
"""
import io
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from untrusted import run_isolated

HERE = pathlib.Path(__file__).resolve().parent
MAX_EXAMPLES = 1200

ODD_NAMES = ["weight/0007", "weight/0000", "slot/0/momentum", "slot/1/velocity_hat", "slot/7/velocity",
             "slot/x/momentum", "w0000:kernel", "config2", "config", "../evil", "slot/0/", "bomb"]
ODD_DTYPES = ["float64", "float16", "int8", "uint64", "bool", "complex64", "U3", "S2", "object", "<f4", ">f4"]
JSON_VALUES = [None, True, -1, 0, 1, 3, 2 ** 31, 2 ** 70, 10 ** 9, 60_000_000, -0.5, 1e308, float("nan"),
               float("inf"), "", "relu", "Dense", [], {}, [None, 4], [[[[]]]], {"class": "Dense"},
               {"key": -1, "counter": 0}]


def strategies():
    """The hypothesis strategy of one case: 1 to 3 mutations (each a JSON-able tuple)."""
    from hypothesis import strategies as st
    index = st.integers(0, 40)
    array_op = st.one_of(
        st.tuples(st.just("drop"), index),
        st.tuples(st.just("rename"), index, st.sampled_from(ODD_NAMES)),
        st.tuples(st.just("add"), st.sampled_from(ODD_NAMES), st.sampled_from(ODD_DTYPES),
                  st.lists(st.integers(0, 6), max_size=3)),
        st.tuples(st.just("dtype"), index, st.sampled_from(ODD_DTYPES)),
        st.tuples(st.just("shape"), index, st.lists(st.integers(0, 6), max_size=3)),
        st.tuples(st.just("value"), index, st.sampled_from([float("nan"), float("inf"), 1e38, -0.0])))
    json_op = st.one_of(
        st.tuples(st.just("json-set"), index, st.sampled_from(JSON_VALUES)),
        st.tuples(st.just("json-delete"), index),
        st.tuples(st.just("json-wrap"), index, st.integers(1, 80)),
        st.tuples(st.just("json-text"), st.sampled_from(["", "{", "[]", "null", "1", '"x"', "[" * 5000])))
    byte_op = st.one_of(
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1,
                                            max_size=8)))
    return st.lists(st.one_of(array_op, json_op, byte_op), min_size=1, max_size=3)


# -------------------------------------------------------------------------------- mutations
def _paths(obj, prefix=()):
    """Every path (a tuple of keys) inside the JSON ``obj``, parents before children."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


def _json_op(doc, op):
    paths = _paths(doc)
    if not paths:
        return doc
    path = paths[op[1] * 7919 % len(paths)]
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if op[0] == "json-set":
        parent[path[-1]] = op[2]
    elif op[0] == "json-delete":
        del parent[path[-1]]
    else:
        value = parent[path[-1]]
        for _ in range(op[2]):
            value = [value]
        parent[path[-1]] = value
    return doc


def _new_array(dtype, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if dtype == "object":
        return a.astype(object)
    return a.astype(dtype)


def mutate(arrays: dict, ops) -> bytes:
    """The bytes of the checkpoint ``arrays`` (a dict) after ``ops``."""
    arrays = dict(arrays)
    byte_ops = []
    for op in ops:
        keys = sorted(arrays)
        key = keys[op[1] % len(keys)] if keys and isinstance(op[1], int) and op[0] in (
            "drop", "rename", "dtype", "shape", "value") else None
        if op[0] == "drop" and key:
            del arrays[key]
        elif op[0] == "rename" and key:
            arrays[op[2]] = arrays.pop(key)
        elif op[0] == "add":
            arrays[op[1]] = _new_array(op[2], op[3])
        elif op[0] == "dtype" and key:
            try:
                arrays[key] = arrays[key].astype(object if op[2] == "object" else op[2])
            except (ValueError, TypeError):       # text that is not a number: a new array of that dtype
                arrays[key] = _new_array(op[2], arrays[key].shape)
        elif op[0] == "shape" and key:
            arrays[key] = _new_array(arrays[key].dtype if arrays[key].dtype.kind in "biuf" else "float32", op[2])
        elif op[0] == "value" and key and arrays[key].dtype.kind == "f" and arrays[key].size:
            arrays[key] = arrays[key].copy()
            arrays[key].flat[0] = op[2]
        elif op[0].startswith("json") and "config" in arrays and arrays["config"].dtype.kind == "U" \
                and arrays["config"].shape == ():
            if op[0] == "json-text":
                arrays["config"] = np.array(op[1])
            else:
                try:
                    doc = json.loads(str(arrays["config"]))
                except (ValueError, RecursionError):
                    continue
                arrays["config"] = np.array(json.dumps(_json_op(doc, op)))
        elif op[0] in ("truncate", "flip"):
            byte_ops.append(op)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = bytearray(buffer.getvalue())
    for op in byte_ops:
        if op[0] == "truncate":
            data = data[:int(op[1] * len(data))]
        else:
            for where, value in op[1]:
                if data:
                    data[min(int(where * len(data)), len(data) - 1)] = value
    return bytes(data)


# --------------------------------------------------------------------------- the loop (child)
def _model():
    import gpunet
    from gpunet import layers, models
    net = models.Sequential([layers.Dense(5, activation="relu", input_shape=(4,)), layers.Dropout(0.2, seed=1),
                             layers.Dense(3, activation="softmax")])
    net.compile(optimizer=gpunet.optimizers.RMSprop(centered=True, momentum=0.5),
                loss="categorical_crossentropy", metrics=["accuracy"])
    return net


def _check_load(path, model, x):
    """A load that succeeded must be correct: its weights are the file's arrays as float32 (NumPy), finite."""
    from gpunet.saving import weight_keys
    with np.load(path, allow_pickle=False) as f:
        want = [f[k].astype(np.float32) for k in weight_keys(f.files)]
    got = model.get_weights()
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want)), "weights differ"
    assert all(np.isfinite(w).all() for w in got), "non-finite weights loaded"
    if model.built and model.input_shape == (None, 4):
        assert np.isfinite(model.predict(x, verbose=0)).all(), "non-finite predictions"


def fuzz(max_examples=MAX_EXAMPLES) -> dict:
    """Run the cases; returns counts, failures (an unexpected exception or a wrong load), the worst
    case's time and the worst per-case growth of the peak RSS (MB)."""
    import resource

    from hypothesis import HealthCheck, given, settings

    import gpunet
    from gpunet.errors import CheckpointError

    gpunet.random.seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 4), dtype=np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
    source = _model()
    source.fit(x, y, epochs=1, batch_size=8, verbose=0)
    folder = tempfile.mkdtemp()
    original = os.path.join(folder, "original.npz")
    source.save(original)
    with np.load(original) as f:
        arrays = {k: f[k] for k in f.files}
    target = _model()
    target.build((None, 4))
    stats = {"cases": 0, "refused": 0, "loaded": 0, "weights_loaded": 0, "failures": [], "worst_case_s": 0.0,
             "worst_case_rss_mb": 0.0}

    @settings(derandomize=True, max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategies())
    def case(ops):
        path = os.path.join(folder, "case.npz")
        with open(path, "wb") as f:
            f.write(mutate(arrays, ops))
        peak, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        rng_before, weights_before = gpunet.random.get_state(), target.get_weights()
        try:
            try:
                loaded = gpunet.models.load_model(path)
            except CheckpointError as exc:
                assert str(path) in str(exc) and exc.path == path and "allow_pickle" not in str(exc), str(exc)
                assert gpunet.random.get_state() == rng_before, "a refused load changed the RNG"
                stats["refused"] += 1
            else:
                _check_load(path, loaded, x)
                stats["loaded"] += 1
            try:
                target.load_weights(path)
            except CheckpointError as exc:
                assert str(path) in str(exc), str(exc)
                got = target.get_weights()
                assert all(np.array_equal(a, b) for a, b in zip(got, weights_before)), "half-loaded weights"
            else:
                _check_load(path, target, x)
                stats["weights_loaded"] += 1
        except Exception as exc:      # noqa: BLE001  (collected: the test reports every one)
            stats["failures"].append({"ops": repr(ops), "error": f"{type(exc).__name__}: {exc}"[:400]})
        stats["cases"] += 1
        stats["worst_case_s"] = max(stats["worst_case_s"], time.perf_counter() - t0)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
        stats["worst_case_rss_mb"] = max(stats["worst_case_rss_mb"], grown)

    case()
    return stats


CHILD = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import test_fuzz_checkpoints
result = test_fuzz_checkpoints.fuzz()
"""


def test_fuzzed_checkpoints_end_in_a_checkpoint_error_or_a_correct_load():
    out = run_isolated(CHILD, timeout=300)
    assert out.result is not None and "error" not in out.result, (out.stderr[-3000:], out.result)
    stats = out.result
    print(f"\nfuzzed checkpoints: {stats['cases']} cases ({stats['refused']} refused, {stats['loaded']} loaded by "
          f"load_model, {stats['weights_loaded']} by load_weights); peak RSS growth {out.rss_growth_mb:.1f} MB "
          f"(worst case {stats['worst_case_rss_mb']:.1f} MB), worst case {stats['worst_case_s'] * 1000:.0f} ms, "
          f"total {out.seconds:.1f} s", file=sys.stderr)
    assert stats["failures"] == [], stats["failures"][:5]
    assert stats["cases"] >= MAX_EXAMPLES * 0.9
    assert stats["refused"] > stats["cases"] // 4 and stats["loaded"] > 0       # both outcomes are exercised
    assert out.rss_growth_mb < 100, out.rss_growth_mb
    assert out.seconds < 60 and stats["worst_case_s"] < 2, stats
