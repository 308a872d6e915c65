"""Checkpoints and weights files read as untrusted (issue 15): every crafted or damaged file ends in a
CheckpointError naming the file and the problem, before anything is allocated beyond what the file
holds and before the model, the optimizer or gpunet's RNG changes; saving names the destination and
writes through symbolic links; optimizer hyper-parameters take NumPy numbers and refuse non-finite ones.

Oracles from outside gpunet: NumPy's own ``np.save``/``np.savez``/``zipfile`` write the crafted files,
``numpy.isfinite`` says what is finite, Keras 3 accepts NumPy scalars as hyper-parameters
(``keras.optimizers.SGD(learning_rate=np.float32(0.5))``), the zip format's directory gives sizes.
"""
import errno
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest

import gpunet
from gpunet import fileio, layers, models, optimizers
from gpunet.errors import CheckpointError
from gpunet.optimizers import schedules

from untrusted import run_isolated

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers
def small_net(opt="adam"):
    net = models.Sequential([layers.Dense(5, activation="relu", input_shape=(4,)), layers.Dropout(0.2, seed=1),
                             layers.Dense(3, activation="softmax")])
    net.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["accuracy"])
    return net


def trained(opt="adam"):
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4), dtype=np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 32)]
    net = small_net(opt)
    net.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return net, x, y


def saved(tmp_path, opt="adam", name="ck.npz"):
    net, _, _ = trained(opt)
    path = tmp_path / name
    net.save(path)
    return path


def arrays_of(path) -> dict:
    with np.load(path) as f:          # our own file: trusted here
        return {k: f[k] for k in f.files}


def rewrite(path, out, config=None, arrays=None):
    """A copy of checkpoint ``path`` at ``out`` with ``config(doc)`` / ``arrays(dict)`` applied."""
    a = arrays_of(path)
    if config is not None:
        doc = json.loads(str(a["config"]))
        config(doc)
        a["config"] = np.array(json.dumps(doc))
    if arrays is not None:
        arrays(a)
    np.savez(out, **a)
    return out


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def refused(fn, path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        fn()
    text = str(info.value)
    assert str(path) in text and info.value.path == str(path)
    assert "allow_pickle" not in text
    return info.value


# -------------------------------------------------------------------------- all or nothing: weights
def test_a_string_third_array_changes_no_weight(tmp_path):
    net, _, _ = trained()
    before = net.get_weights()
    values = [w.copy() for w in before]
    values[2] = np.array([["a"] * 3] * 5)
    np.savez(tmp_path / "w.npz", **{f"weight/{i:04d}": v for i, v in enumerate(values)})
    refused(lambda: net.load_weights(tmp_path / "w.npz"), tmp_path / "w.npz", r"weight/0002.*dtype <U1")
    assert same_weights(before, net.get_weights())
    with pytest.raises(TypeError, match="dense.*kernel.*numbers.*<U1"):
        net.set_weights(values)
    assert same_weights(before, net.get_weights())


@pytest.mark.filterwarnings("ignore:overflow")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300], ids=["nan", "inf", "-inf", "float64-overflow"])
def test_non_finite_weights_are_refused_naming_the_array(tmp_path, bad):
    net, _, _ = trained()
    before = net.get_weights()
    values = [w.astype(np.float64) for w in before]
    values[1][3] = bad                                 # the first bias
    assert not np.isfinite(values[1].astype(np.float32)).all()       # NumPy: not finite once float32
    with pytest.raises(ValueError, match=r"'dense[_\d]*/bias'.*non-finite.*index 3"):
        net.set_weights(values)
    assert same_weights(before, net.get_weights())
    np.savez(tmp_path / "w.npz", **{f"weight/{i:04d}": v for i, v in enumerate(values)})
    refused(lambda: net.load_weights(tmp_path / "w.npz"), tmp_path / "w.npz", "non-finite")
    assert same_weights(before, net.get_weights())
    ck = saved(tmp_path)
    bad_ck = rewrite(ck, tmp_path / "nan.npz", arrays=lambda a: a.__setitem__("weight/0001", values[1]))
    refused(lambda: models.load_model(bad_ck), bad_ck, r"array 'weight/0001'.*non-finite")   # before building


def test_set_weights_refuses_ragged_complex_and_objects_before_any_change():
    net, _, _ = trained()
    before = net.get_weights()
    for third in ([[1.0, 2.0], [3.0]], np.zeros((5, 3), complex), np.array([[None] * 3] * 5)):
        values = [w.copy() for w in before]
        values[2] = third
        with pytest.raises((TypeError, ValueError)):
            net.set_weights(values)
        assert same_weights(before, net.get_weights())


def test_integer_and_float64_weights_still_load(tmp_path):
    """Numbers that convert to float32 exactly load, as NumPy's astype gives them."""
    net, _, _ = trained()
    values = [np.arange(w.size).reshape(w.shape) for w in net.get_weights()]
    np.savez(tmp_path / "w.npz", **{f"weight/{i:04d}": v for i, v in enumerate(values)})
    net.load_weights(tmp_path / "w.npz")
    assert same_weights([v.astype(np.float32) for v in values], net.get_weights())


# ------------------------------------------------------------------------ optimizer state and slots
def test_wrong_shape_slots_are_refused_before_fit_can_half_apply_a_step(tmp_path):
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "slots.npz",
                  arrays=lambda a: a.__setitem__("slot/0/momentum", np.zeros((3, 5), np.float32)))
    refused(lambda: models.load_model(bad), bad, r"slot 'momentum'.*expects shape \(4, 5\).*\(3, 5\)")
    net, x, y = trained()
    state = net.optimizer.get_state(net.weights)
    before, iterations = net.get_weights(), net.optimizer.iterations
    slots_before = {k: v.copy() for k, v in net.optimizer.get_state(net.weights).items() if k != "iterations"}
    state["0/momentum"] = np.zeros((3, 5), np.float32)
    with pytest.raises(gpunet.ShapeError, match="0/momentum"):
        net.optimizer.set_state(net.weights, state)
    assert net.optimizer.iterations == iterations
    after = net.optimizer.get_state(net.weights)
    assert all(np.array_equal(after[k], v) for k, v in slots_before.items())
    net.fit(x, y, epochs=1, batch_size=8, verbose=0)          # the optimizer still works
    assert not same_weights(before, net.get_weights())


@pytest.mark.parametrize("key,value,match", [
    ("slot/0/bogus", np.zeros((4, 5), np.float32), "names no weight|no slot"),
    ("slot/9/momentum", np.zeros((4, 5), np.float32), "names no weight|no slot"),
    ("slot/0/momentum", np.full((4, 5), np.nan, np.float32), "non-finite"),
    ("slot/0/velocity", np.array([["x"] * 5] * 4), "dtype <U1"),
], ids=["unknown-name", "index-out-of-range", "nan", "strings"])
def test_bad_slots_are_refused(tmp_path, key, value, match):
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "bad.npz", arrays=lambda a: a.__setitem__(key, value))
    refused(lambda: models.load_model(bad), bad, match)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_set_state_refuses_non_finite_slots_changing_nothing(bad):
    net, _, _ = trained()
    state = net.optimizer.get_state(net.weights)
    before = {k: np.copy(v) for k, v in state.items()}
    state["2/velocity"] = np.full((5, 3), bad, np.float32)
    with pytest.raises(ValueError, match="'2/velocity' holds NaN or infinite values"):
        net.optimizer.set_state(net.weights, state)
    after = net.optimizer.get_state(net.weights)
    assert all(np.array_equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("iterations", [-1, 1.5, "3", None, True, 2 ** 70])
def test_bad_iteration_counts_are_refused(tmp_path, iterations):
    """Adam with iterations=-1 used to divide by zero (1 - beta_1**0) at the next step."""
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "it.npz",
                  config=lambda d: d["state"].__setitem__("optimizer_iterations", iterations))
    refused(lambda: models.load_model(bad), bad, "optimizer_iterations.*non-negative integer")
    opt = optimizers.Adam()
    w = gpunet.tensor(np.zeros(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="non-negative integer"):
        opt.set_state([w], {"iterations": iterations})
    assert opt.iterations == 0
    opt.set_state([w], {"iterations": np.int64(7)})          # NumPy integers are integers
    assert opt.iterations == 7


# ------------------------------------------------------------------------------------- RNG state
@pytest.mark.parametrize("mutate", [
    lambda s: s.__setitem__("bit_generator", "MT19937"),
    lambda s: s["state"].__setitem__("state", -5),
    lambda s: s.__setitem__("state", "abc"),
    lambda s: s.pop("has_uint32"),
    lambda s: s.__setitem__("philox", {"key": 2 ** 64, "counter": 0}),
    lambda s: s.__setitem__("philox", [1, 2]),
], ids=["mt19937", "negative", "not-a-dict", "missing", "philox-key", "philox-list"])
def test_a_bad_rng_state_is_refused_and_changes_nothing(tmp_path, mutate):
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "rng.npz", config=lambda d: mutate(d["state"]["rng_state"]))
    gpunet.random.seed(5)
    state = gpunet.random.get_state()
    refused(lambda: models.load_model(bad), bad, "gpunet.random state")
    assert gpunet.random.get_state() == state
    doc = json.loads(str(arrays_of(ck)["config"]))
    rng = doc["state"]["rng_state"]
    mutate(rng)
    with pytest.raises(ValueError, match="not a gpunet.random state"):
        gpunet.random.set_state(rng)
    assert gpunet.random.get_state() == state
    models.load_model(bad, restore_rng=False)      # the RNG state is not needed then


# ----------------------------------------------------------------------- config: structure and depth
@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["model"].pop("layers"), "model.layers"),
    (lambda d: d["model"].__setitem__("layers", "Dense"), "model.layers"),
    (lambda d: d["model"]["layers"][0].pop("config"), "model.layers"),
    (lambda d: d["model"]["layers"][0].__setitem__("class", "Conv3D"), "unknown layer class 'Conv3D'"),
    (lambda d: d["model"]["layers"][0]["config"].__setitem__("units", "5"), "units"),
    (lambda d: d["model"]["layers"][0]["config"].__setitem__("activation", 3), "rebuilt"),
    (lambda d: d["model"].__setitem__("compile", {"optimizer": 1}), "rebuilt"),
    (lambda d: d["model"]["compile"]["optimizer"].__setitem__("name", "nadam"), "nadam"),
    (lambda d: d["model"]["compile"]["optimizer"]["config"].__setitem__("learning_rate", float("nan")),
     "learning_rate"),
    (lambda d: d["model"].__setitem__("built_input_shape", [None, -4]), "built_input_shape"),
    (lambda d: d["state"].__setitem__("epochs_completed", -2), "epochs_completed"),
    (lambda d: d["state"].__setitem__("layer_states", [1]), "layer_states"),
    (lambda d: d["state"]["layer_states"].__setitem__("dropout", {"philox": {"key": "k"}}), "restored"),
    (lambda d: d.__setitem__("state", None), "'state'"),
    (lambda d: d.__setitem__("model", []), "'model'"),
], ids=["no-layers", "layers-not-list", "layer-without-config", "unknown-class", "units-string",
        "activation-int", "compile-junk", "unknown-optimizer", "nan-learning-rate", "negative-shape",
        "negative-epochs", "layer-states-list", "dropout-state", "state-null", "model-list"])
def test_malformed_configs_give_checkpoint_errors(tmp_path, mutate, match):
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "bad.npz", config=mutate)
    if "dropout" in match or match == "restored":
        def mutate_dropout(d):
            name = d["model"]["layers"][1]["config"]["name"]
            d["state"]["layer_states"] = {name: {"philox": {"key": "k"}}}
        bad = rewrite(ck, tmp_path / "bad.npz", config=mutate_dropout)
    gpunet.random.seed(3)
    rng = gpunet.random.get_state()
    refused(lambda: models.load_model(bad), bad, match)
    assert gpunet.random.get_state() == rng          # building the model drew initial weights: undone


def test_deep_json_is_refused_without_recursion(tmp_path):
    ck = saved(tmp_path)
    for text in ("[" * 200_000 + "]" * 200_000, '{"a": ' * 100 + "1" + "}" * 100):
        bad = rewrite(ck, tmp_path / "deep.npz", arrays=lambda a: a.__setitem__("config", np.array(text)))
        refused(lambda: models.load_model(bad), bad, "nests .* levels deep")
    nested = rewrite(ck, tmp_path / "nested.npz",
                     config=lambda d: d["model"]["layers"][0]["config"].__setitem__("name", "[[[{{{" * 50))
    models.load_model(nested)           # brackets inside strings do not count


@pytest.mark.parametrize("config", [np.array(["a", "b"]), np.zeros(3), np.array(b"{}")],
                         ids=["text-vector", "numbers", "bytes"])
def test_a_config_that_is_not_json_text_is_refused(tmp_path, config):
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "cfg.npz", arrays=lambda a: a.__setitem__("config", config))
    refused(lambda: models.load_model(bad), bad, r"config must be JSON text|'config' has dtype \|S2")


# ------------------------------------------------------------------------------- not .npz at all
def test_random_bytes_and_a_plain_npy_give_clear_errors(tmp_path):
    net, _, _ = trained()
    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    for load in (lambda p: models.load_model(p), net.load_weights):
        refused(lambda: load(junk), junk, "not a readable .npz")
    plain = tmp_path / "weights.npy"
    np.save(plain, np.zeros((4, 5), np.float32))
    for load in (lambda p: models.load_model(p), net.load_weights):
        refused(lambda: load(plain), plain, r"single NumPy array \(\.npy\).*set_weights")
    pickled = tmp_path / "pickle.npz"
    values = net.get_weights()
    values[0] = np.array([object()] * 20).reshape(4, 5)
    np.savez(pickled, **{f"weight/{i:04d}": v for i, v in enumerate(values)}, allow_pickle=True)
    refused(lambda: net.load_weights(pickled), pickled, "never runs a pickle")


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        models.load_model(tmp_path)


# ------------------------------------------------------------------------- memory and time budgets
BOMB = """
import zipfile, zlib
path = {path!r}
with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
    with zf.open({member!r}, "w", force_zip64=True) as f:
        header = {{"descr": "<f4", "fortran_order": False, "shape": {shape!r}}}
        np.lib.format.write_array_header_1_0(f, header)
        chunk = bytes(1 << 24)
        for _ in range({chunks}):
            f.write(chunk)
"""


def add_bomb(path, member, shape, gib=1):
    n = int(np.prod(shape)) * 4
    assert n == gib * (1 << 30)
    out = run_isolated(BOMB.format(path=str(path), member=member, shape=tuple(shape), chunks=n >> 24))
    assert out.result is None, out


def test_an_unused_zip_bomb_member_is_never_decompressed(tmp_path):
    ck = saved(tmp_path)
    add_bomb(ck, "bomb.npy", (1 << 28,))
    with zipfile.ZipFile(ck) as zf:
        info = zf.getinfo("bomb.npy")
        assert info.file_size > 1 << 30 and info.compress_size < 10 << 20     # the zip directory says so
    out = run_isolated(f"m = gpunet.models.load_model({str(ck)!r}); result = m.count_params()")
    assert out.result == 43, out
    assert out.rss_growth_mb < 100 and out.seconds < 5, out


def test_a_zip_bomb_weight_of_the_right_shape_is_refused(tmp_path):
    """A deflated weight that would expand over MAX_EXPANSION times is a bomb (gpunet writes stored members)."""
    config = models.Sequential([layers.Dense(1, input_shape=(1,))]).get_config()
    config["layers"][0]["config"].update(units=1 << 16, input_shape=[1 << 12])   # a (4096, 65536) kernel: 1 GiB
    config["built_input_shape"] = [None, 1 << 12]
    doc = {"format": "gpunet.checkpoint", "version": 2, "model": config | {"compile": None},
           "state": {"epochs_completed": 0, "rng_state": gpunet.random.get_state(), "optimizer_iterations": 0}}
    path = tmp_path / "bomb.npz"
    np.savez(path, config=np.array(json.dumps(doc)), **{"weight/0001": np.zeros(1 << 16, np.float32)})
    add_bomb(path, "weight/0000.npy", (1 << 12, 1 << 16))
    out = run_isolated(f"gpunet.models.load_model({str(path)!r})")
    assert out.result["error"] == "CheckpointError" and "zip bomb" in out.result["message"], out
    assert out.rss_growth_mb < 100 and out.seconds < 5, out


@pytest.mark.parametrize("units", [60_000_000, 10 ** 9])
def test_huge_units_in_a_small_file_are_refused_at_once(tmp_path, units):
    """The config's weight shapes are compared with the arrays' .npy headers before any layer is built."""
    ck = saved(tmp_path)
    bad = rewrite(ck, tmp_path / "units.npz",
                  config=lambda d: d["model"]["layers"][0]["config"].__setitem__("units", units))
    assert bad.stat().st_size < 20_000
    out = run_isolated(f"gpunet.models.load_model({str(bad)!r})")
    assert out.result["error"] == "CheckpointShapeError", out          # a CheckpointError and a ShapeError
    assert f"(4, {units})" in out.result["message"] and str(bad) in out.result["message"]
    assert out.rss_growth_mb < 100 and out.seconds < 2, out


def test_an_array_whose_header_lies_about_its_size_is_refused(tmp_path):
    ck = saved(tmp_path)
    raw = bytearray(ck.read_bytes())
    at = raw.index(b"'shape': (4, 5)")                   # the first kernel's header: claim (4, 6)
    raw[at:at + len(b"'shape': (4, 5)")] = b"'shape': (4, 6)"
    bad = tmp_path / "lie.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        models.load_model(bad)
    assert str(bad) in str(info.value)


# -------------------------------------------------------------------------------------- saving
def test_save_to_a_folder_names_the_destination(tmp_path):
    net, _, _ = trained()
    folder = tmp_path / "out"
    folder.mkdir()
    for save in (net.save, net.save_weights):
        with pytest.raises(IsADirectoryError, match=f"cannot write '{folder}': it is a folder") as info:
            save(folder)
        assert ".tmp" not in str(info.value)
    assert list(folder.iterdir()) == []


def test_save_to_a_read_only_folder_names_the_destination(tmp_path, monkeypatch):
    net, _, _ = trained()
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.geteuid() == 0:                 # root writes anyway: the refusal the kernel would give
            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".x.tmp"))
            monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
        with pytest.raises(PermissionError, match=f"cannot write '{folder / 'm.npz'}': folder .* not writable") \
                as info:
            net.save(folder / "m.npz")
        assert ".tmp" not in str(info.value) and info.value.errno == errno.EACCES
    finally:
        folder.chmod(0o700)


class FullDisk:
    """A file object whose writes fail with ENOSPC after ``room`` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_names_the_destination_and_keeps_the_old_file(tmp_path, monkeypatch):
    net, _, _ = trained()
    path = tmp_path / "m.npz"
    net.save(path)
    before = path.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode), 300))
    net.optimizer.iterations += 1
    with pytest.raises(OSError, match=f"cannot write '{path}': the disk is full") as info:
        net.save(path)
    assert info.value.errno == errno.ENOSPC and ".tmp" not in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_saving_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    net, _, _ = trained()
    target = tmp_path / "real" / "model.npz"
    target.parent.mkdir()
    link = tmp_path / "latest.npz"
    link.symlink_to(target)                       # dangling until the first save
    net.save(link)
    assert link.is_symlink() and target.is_file()
    net.save_weights(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    other = small_net()
    other.load_weights(target)
    assert same_weights(net.get_weights(), other.get_weights())


# ----------------------------------------------------------------------- optimizer hyper-parameters
NUMPY_NUMBERS = [np.float32(0.5), np.float64(0.5), np.float16(0.5)]


@pytest.mark.parametrize("value", NUMPY_NUMBERS, ids=lambda v: type(v).__name__)
def test_numpy_numbers_are_accepted_wherever_numbers_are(value):
    """As in Keras 3 (keras.optimizers.SGD(learning_rate=np.float32(0.5), momentum=np.float32(0.5)) works)."""
    opts = [optimizers.SGD(learning_rate=value, momentum=value, weight_decay=value, clipnorm=value),
            optimizers.RMSprop(learning_rate=value, rho=value, momentum=value, epsilon=value, clipvalue=value),
            optimizers.Adam(learning_rate=value, beta_1=value, beta_2=value, epsilon=value, global_clipnorm=value)]
    for opt in opts:
        assert opt.learning_rate == 0.5 and type(opt.learning_rate) is float
    opts[0].learning_rate = np.float32(0.25)
    assert opts[0].learning_rate == 0.25
    assert optimizers.SGD(learning_rate=np.int64(1)).learning_rate == 1.0
    w = gpunet.tensor(np.ones(3, np.float32), requires_grad=True)
    opts[1].apply_gradients([(gpunet.tensor(np.ones(3, np.float32)), w)])
    assert np.isfinite(w.numpy()).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, np.float32("nan"), -np.inf])
@pytest.mark.parametrize("arg", ["learning_rate", "momentum", "weight_decay", "clipnorm"])
def test_non_finite_hyper_parameters_are_refused_at_construction(arg, bad):
    with pytest.raises(ValueError, match=arg):
        optimizers.SGD(**{arg: bad})


@pytest.mark.parametrize("cls,arg", [(optimizers.RMSprop, "rho"), (optimizers.RMSprop, "epsilon"),
                                     (optimizers.Adam, "beta_1"), (optimizers.Adam, "beta_2"),
                                     (optimizers.Adam, "epsilon")])
def test_each_optimizer_refuses_a_nan_argument(cls, arg):
    with pytest.raises(ValueError, match=arg):
        cls(**{arg: float("nan")})


@pytest.mark.parametrize("bad", [float("nan"), np.float32("inf"), -1.0, 0.0, "0.1", None])
def test_setting_a_bad_learning_rate_after_compile_raises_at_once(bad):
    net, x, y = trained("rmsprop")
    with pytest.raises((ValueError, TypeError), match="learning_rate"):
        net.optimizer.learning_rate = bad
    assert net.optimizer.learning_rate == 0.001
    net.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert all(np.isfinite(w).all() for w in net.get_weights())


def test_a_schedule_giving_a_non_finite_rate_stops_before_the_step():
    class Broken(schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.1 if step < 2 else float("nan")

    opt = optimizers.SGD(learning_rate=Broken(), momentum=0.5)
    w = gpunet.tensor(np.ones(3, np.float32), requires_grad=True)
    g = gpunet.tensor(np.ones(3, np.float32))
    opt.apply_gradients([(g, w)])
    opt.apply_gradients([(g, w)])
    before, slots = w.numpy().copy(), opt.get_state([w])
    with pytest.raises(ValueError, match="Broken.*nan.*step 2.*no update"):
        opt.apply_gradients([(g, w)])
    assert np.array_equal(w.numpy(), before) and opt.iterations == 2
    assert np.array_equal(opt.get_state([w])["0/momentum"], slots["0/momentum"])
    with pytest.raises(ValueError, match="lambda.*not a finite number"):
        optimizers.Adam(learning_rate=lambda: float("inf")).apply_gradients([(g, w)])


@pytest.mark.parametrize("make", [
    lambda: schedules.ExponentialDecay(float("nan"), 10, 0.9),
    lambda: schedules.ExponentialDecay(0.1, 10, "0.9"),
    lambda: schedules.InverseTimeDecay(0.1, float("inf"), 0.5),
    lambda: schedules.PolynomialDecay(0.1, 10, end_learning_rate=float("nan")),
    lambda: schedules.PiecewiseConstantDecay([10], [0.1, float("nan")]),
    lambda: schedules.CosineDecay(0.1, 10, warmup_target=float("inf"), warmup_steps=5),
    lambda: schedules.CosineDecayRestarts(0.1, 10, t_mul=float("nan")),
], ids=["exp-nan", "exp-text", "inverse-inf-steps", "poly-nan", "piecewise-nan", "cosine-inf", "restarts-nan"])
def test_schedules_refuse_non_finite_arguments(make):
    with pytest.raises(ValueError, match="must be (a finite number|> 0)"):
        make()


def test_schedules_take_numpy_numbers():
    lr = schedules.ExponentialDecay(np.float32(0.5), np.int64(10), np.float64(0.5))
    assert lr(10) == pytest.approx(0.25)
