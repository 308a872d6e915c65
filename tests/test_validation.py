"""Every documented bad input is refused early, with the documented error type and a message
that names the problem and the fix, and nothing changes; random inputs never escape as an
unrelated exception."""
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import gpunet
from conftest import without_cupy
from gpunet import layers, models, optimizers
from gpunet.utils import to_categorical

rng = np.random.default_rng(0)
X = rng.random((32, 784), dtype=np.float32)
Y = to_categorical(rng.integers(0, 10, 32), 10)
LABELS = rng.integers(0, 10, 32)


def chapter(loss="categorical_crossentropy", compile=True):
    net = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                             layers.Dense(10, activation="softmax")])
    if compile:
        net.compile(optimizer="rmsprop", loss=loss, metrics=["accuracy"])
    return net


def with_nan(a, value=np.nan):
    a = a.copy()
    a[3, 5] = value
    return a


# (name, call(net), loss, error type, regex the message must match)
BAD = [
    ("lengths differ", lambda n: n.fit(X, Y[:30]), None, ValueError, r"x has 32 samples but y has 30"),
    ("empty x", lambda n: n.fit(X[:0], Y[:0]), None, ValueError, r"x is empty.*at least one sample"),
    ("object x", lambda n: n.fit(np.array([[1, "a"]] * 32, dtype=object), Y), None, TypeError,
     r"dtype object.*np.asarray\(data, dtype='float32'\)"),
    ("ragged x", lambda n: n.fit([[1.0] * 784, [1.0] * 3], Y[:2]), None, TypeError, r"x cannot be turned|dtype object"),
    ("string x", lambda n: n.fit(np.full((32, 784), "a"), Y), None, TypeError, r"x must hold numbers.*astype"),
    ("nan in x", lambda n: n.fit(with_nan(X), Y), None, ValueError, r"x contains NaN or infinite"),
    ("inf in x", lambda n: n.evaluate(with_nan(X, np.inf), Y), None, ValueError, r"evaluate: x contains NaN"),
    ("nan in y", lambda n: n.fit(X, with_nan(Y)), None, ValueError, r"y contains NaN or infinite"),
    ("features", lambda n: n.fit(X[:, :780], Y), None, gpunet.ShapeError,
     r"layer 'dense\w*' expects samples of shape \(784,\), got \(780,\).*reshape.*Flatten"),
    ("images not flattened", lambda n: n.predict(X.reshape(32, 28, 28)), None, gpunet.ShapeError,
     r"predict: .*expects samples of shape \(784,\), got \(28, 28\).*x.reshape\(\(len\(x\), 784\)\).*Flatten"),
    ("one-hot width", lambda n: n.fit(X, Y[:, :9]), None, gpunet.ShapeError,
     r"one-hot targets of shape \(n, 10\), got y of shape \(32, 9\)"),
    ("integer labels for categorical", lambda n: n.fit(X, LABELS), None, gpunet.ShapeError,
     r"to_categorical\(y\).*sparse_categorical_crossentropy"),
    ("label too big", lambda n: n.fit(X, np.where(LABELS == 0, 10, LABELS)), "sparse_categorical_crossentropy",
     ValueError, r"labels must lie in \[0, 10\).*max 10"),
    ("negative label", lambda n: n.evaluate(X, np.where(LABELS == 0, -1, LABELS)), "sparse_categorical_crossentropy",
     ValueError, r"labels must lie in \[0, 10\).*min -1"),
    ("one-hot for sparse", lambda n: n.fit(X, Y), "sparse_categorical_crossentropy", gpunet.ShapeError,
     r"integer labels of shape \(n,\), got y of shape \(32, 10\).*loss='categorical_crossentropy'"),
    ("mse target shape", lambda n: n.fit(X, Y[:, :3]), "mse", gpunet.ShapeError,
     r"loss 'mse' needs one target per output, shape \(n, 10\), got y of shape \(32, 3\)"),
    ("fractional label", lambda n: n.fit(X, LABELS + 0.5), "sparse_categorical_crossentropy", ValueError,
     r"integer class labels"),
    ("batch_size 0", lambda n: n.fit(X, Y, batch_size=0), None, ValueError, r"batch_size must be an integer >= 1, got 0"),
    ("batch_size float", lambda n: n.evaluate(X, Y, batch_size=2.5), None, ValueError, r"batch_size must be an integer"),
    ("negative epochs", lambda n: n.fit(X, Y, epochs=-1), None, ValueError, r"epochs must be an integer >= 0, got -1"),
    ("validation_split 1", lambda n: n.fit(X, Y, validation_split=1.0), None, ValueError,
     r"validation_split must lie in \[0, 1\), got 1.0"),
    ("validation_split negative", lambda n: n.fit(X, Y, validation_split=-0.1), None, ValueError,
     r"validation_split must lie in \[0, 1\)"),
    ("steps_per_epoch 0", lambda n: n.fit(X, Y, steps_per_epoch=0), None, ValueError, r"steps_per_epoch must be"),
    ("bad validation_data", lambda n: n.fit(X, Y, validation_data=X), None, ValueError,
     r"validation_data must be a tuple \(x_val, y_val\)"),
    ("validation_data features", lambda n: n.fit(X, Y, validation_data=(X[:, :10], Y)), None, gpunet.ShapeError,
     r"fit \(validation_data\): .*got \(10,\)"),
    ("verbose 3", lambda n: n.fit(X, Y, verbose=3), None, ValueError, r"verbose must be 0, 1 or 2"),
]


@pytest.mark.parametrize("name,call,loss,error,pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_early_and_changes_nothing(name, call, loss, error, pattern):
    net = chapter(loss or "categorical_crossentropy")
    before = net.get_weights()
    with pytest.raises(error, match=pattern):
        call(net)
    assert net.optimizer.iterations == 0 and net.history is None
    for a, b in zip(net.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_fit_and_evaluate_before_compile_say_what_to_do():
    net = chapter(compile=False)
    with pytest.raises(gpunet.NotCompiledError, match=r"call model.compile\(optimizer=.*\) before fit\(\)"):
        net.fit(X, Y)
    with pytest.raises(RuntimeError, match=r"before evaluate\(\)"):       # NotCompiledError is a RuntimeError
        net.evaluate(X, Y)


@pytest.mark.parametrize("make,pattern", [
    (lambda: layers.Dense(3, activation="relux"), r"unknown activation 'relux'; valid names: linear, relu, sigmoid"),
    (lambda: layers.Dense(3, kernel_initializer="glorot"), r"unknown initializer 'glorot'; valid names: .*glorot_uniform"),
    (lambda: chapter(compile=False).compile(optimizer="adamw", loss="mse"), r"unknown optimizer 'adamw'; valid names"),
    (lambda: chapter(compile=False).compile(loss="hinge"), r"unknown loss 'hinge'; valid names"),
    (lambda: chapter(compile=False).compile(loss="mse", metrics=["f1"]), r"unknown metric 'f1'; valid names"),
    (lambda: optimizers.RMSprop(learning_rate=0), r"learning_rate must be a positive"),
    (lambda: optimizers.Adam(epsilon=-1e-7), r"epsilon must be a positive"),
    (lambda: layers.Dense(0), r"units must be a positive integer, got 0"),
    (lambda: layers.Dropout(1.0), r"Dropout rate must lie in \[0, 1\)"),
])
def test_bad_names_and_hyper_parameters_list_the_valid_choices(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_a_gpu_model_without_a_gpu_is_a_clear_device_error(monkeypatch):
    without_cupy(monkeypatch)
    with pytest.raises(gpunet.DeviceUnavailableError, match="gpu") as info:
        models.Sequential(device="gpu")
    assert isinstance(info.value, RuntimeError)


# ------------------------------------------------------------------ property based
DOCUMENTED = (ValueError, TypeError)          # ShapeError, CheckpointError ... are ValueErrors

dtypes = st.sampled_from(["float32", "float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64",
                          "U3"])


def _array(draw, shape):
    dtype = np.dtype(draw(dtypes))
    if dtype.kind == "U":
        return np.full(shape, "ab", dtype=dtype)
    elements = None
    if dtype.kind == "f":
        finite = st.floats(-1e3, 1e3, width=dtype.itemsize * 8)
        elements = finite | st.sampled_from([np.nan, np.inf]) if draw(st.integers(0, 3)) == 0 else finite
    elif dtype.kind in "iu":
        elements = st.integers(-1 if dtype.kind == "i" else 0, 4)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def data(draw):
    """Mostly plausible (n samples of 4 features; labels, one-hot or columns), sometimes anything."""
    n = draw(st.integers(0, 7))
    any_shape = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
    plausible = draw(st.integers(0, 3)) > 0
    x_shape = draw(st.sampled_from([(n, 4), (n, 4), (n, 2, 2)]) if plausible else any_shape)
    y_shape = draw(st.sampled_from([(n,), (n, 3), (n, 3), (n, 1), (n + 1, 3)]) if plausible else any_shape)
    return _array(draw, x_shape), _array(draw, y_shape)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xy=data(), loss=st.sampled_from(["categorical_crossentropy", "sparse_categorical_crossentropy",
                                                     "mse", "binary_crossentropy"]),
       batch=st.integers(1, 5) | st.integers(-1, 0), which=st.sampled_from(["fit", "evaluate", "predict"]))
def test_random_inputs_work_or_raise_a_documented_error(xy, loss, batch, which):
    x, y = xy
    gpunet.random.seed(0)
    net = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))])
    net.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    before = net.get_weights()
    try:
        with np.errstate(all="ignore"):
            if which == "fit":
                net.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            elif which == "evaluate":
                net.evaluate(x, y, batch_size=batch, verbose=0)
            else:
                out = net.predict(x, batch_size=batch)
                assert out.shape == (len(x), 3)
        event(f"{which} worked")
    except DOCUMENTED as exc:
        event(f"{which} refused: {type(exc).__name__}")
        for a, b in zip(net.get_weights(), before):
            np.testing.assert_array_equal(a, b)
