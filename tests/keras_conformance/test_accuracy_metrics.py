"""Ported from Keras 3: keras/src/metrics/accuracy_metrics_test.py (AccuracyTest, BinaryAccuracyTest,
CategoricalAccuracyTest, SparseCategoricalAccuracyTest), with Keras' inputs, expected numbers and
tolerances, plus the two metric-name tests of keras/src/trainers/compile_utils_test.py
(test_name_conversions, test_custom_metric_function) that decide what ``'accuracy'``/``'acc'`` and a
metric function become.

Adapted: every test runs on each backend (the ``dev`` fixture); Keras' ``keras.metrics.Accuracy``
(exact equality of ``y_true`` and ``y_pred``) is ``metrics.Accuracy(kind="exact")`` — a plain
``metrics.Accuracy()`` picks binary/sparse/categorical from the shapes as compile does for
``'accuracy'``; test_config checks ``dtype`` and ``get_config``/``from_config`` but not
``len(variables) == 2`` (gpunet keeps a metric's running total and count as plain attributes);
``CompileMetrics`` is ``metrics.get`` + ``Accuracy.resolve`` (what ``compile``/``fit`` call). Not
ported: TopKCategoricalAccuracyTest and SparseTopKCategoricalAccuracyTest (gpunet has no top-k
accuracy). The last section adds gpunet's own checks of ``batch_sum`` (the trainer's interface).
Differences: DIFFERENCES-losses.md.
"""
import json

import numpy as np
import pytest

import gpunet
from gpunet import layers, losses, metrics, models


def host(x):
    return np.asarray(x.numpy() if isinstance(x, gpunet.Tensor) else x)


def allclose(actual, desired, atol=1e-6, rtol=1e-6):
    np.testing.assert_allclose(host(actual), desired, atol=atol, rtol=rtol)


def check_config(obj, cls, name, **extra):
    assert obj.name == name and obj.dtype == "float32"
    config = obj.get_config()
    assert config["name"] == name and config["dtype"] == "float32"
    for k, v in extra.items():
        assert config[k] == v
    obj2 = cls.from_config(json.loads(json.dumps(config)))
    assert obj2.name == name and obj2.dtype == "float32" and obj2.get_config() == config


def exact():
    return metrics.Accuracy(name="accuracy", dtype="float32", kind="exact")


# ============================================================== AccuracyTest
class TestAccuracy:
    def test_config(self, dev):
        check_config(exact(), metrics.Accuracy, "accuracy")

    def test_unweighted(self, dev):
        m = exact()
        m.update_state(np.array([[1], [2], [3], [4]]), np.array([[0], [2], [3], [4]]))
        allclose(m.result(), 0.75, atol=1e-3)

    def test_weighted(self, dev):
        m = exact()
        m.update_state(np.array([[1], [2], [3], [4]]), np.array([[0], [2], [3], [4]]),
                       sample_weight=np.array([1, 1, 0, 0]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted_rank_1(self, dev):
        m = exact()
        m.update_state(np.array([1, 2, 3, 4]), np.array([0, 2, 3, 4]), sample_weight=np.array([1, 1, 0, 0]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted_nd_weights(self, dev):
        m = exact()
        m.update_state(np.array([[1, 2], [3, 4]]), np.array([[0, 2], [3, 4]]), sample_weight=np.array([[1, 0], [0, 1]]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted_nd_broadcast_weights(self, dev):
        m = exact()
        m.update_state(np.array([[1, 2], [3, 4]]), np.array([[0, 2], [3, 4]]), sample_weight=np.array([[1, 0]]))
        allclose(m.result(), 0.5, atol=1e-3)


# ============================================================== BinaryAccuracyTest
def binary(**kw):
    return metrics.BinaryAccuracy(name="binary_accuracy", dtype="float32", **kw)


class TestBinaryAccuracy:
    def test_config(self, dev):
        check_config(binary(), metrics.BinaryAccuracy, "binary_accuracy")

    def test_unweighted(self, dev):
        m = binary()
        m.update_state(np.array([[1], [1], [0], [0]]), np.array([[0.98], [1], [0], [0.6]]))
        allclose(m.result(), 0.75, atol=1e-3)
        m = binary()      # broadcasting case
        m.update_state(np.array([1, 1, 0, 0]), np.array([[0.98], [1], [0], [0.6]]))
        allclose(m.result(), 0.75, atol=1e-3)

    def test_weighted(self, dev):
        m = binary()
        m.update_state(np.array([[1], [1], [0], [0]]), np.array([[0.98], [1], [0], [0.6]]),
                       sample_weight=np.array([1, 0, 0, 1]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted_rank_1(self, dev):
        m = binary()
        m.update_state(np.array([1, 1, 0, 0]), np.array([0.98, 1, 0, 0.6]), sample_weight=np.array([1, 0, 0, 1]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted_nd_weights(self, dev):
        m = binary()
        m.update_state(np.array([[1, 1], [0, 0]]), np.array([[0.98, 1], [0, 0.6]]),
                       sample_weight=np.array([[1, 0], [0, 1]]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted_nd_broadcast_weights(self, dev):
        m = binary()
        m.update_state(np.array([[1, 1], [0, 0]]), np.array([[0.98, 1], [0, 0.6]]), sample_weight=np.array([[1, 0]]))
        allclose(m.result(), 1.0, atol=1e-3)

    def test_threshold(self, dev):
        m1, m2 = binary(threshold=0.3), binary(threshold=0.9)
        y_true = np.array([[1], [1], [0], [0]])
        y_pred = np.array([[0.98], [0.5], [0.1], [0.2]])
        m1.update_state(y_true, y_pred)
        m2.update_state(y_true, y_pred)
        allclose(m1.result(), 1.0)     # a higher threshold must give a lower accuracy
        allclose(m2.result(), 0.75)


# ============================================================== CategoricalAccuracyTest
def categorical():
    return metrics.CategoricalAccuracy(name="categorical_accuracy", dtype="float32")


class TestCategoricalAccuracy:
    def test_config(self, dev):
        check_config(categorical(), metrics.CategoricalAccuracy, "categorical_accuracy")

    def test_unweighted(self, dev):
        m = categorical()
        m.update_state(np.array([[0, 0, 1], [0, 1, 0]]), np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted(self, dev):
        m = categorical()
        m.update_state(np.array([[0, 0, 1], [0, 1, 0]]), np.array([[0.1, 0.9, 0.8], [0.05, 0.95, 0]]),
                       sample_weight=np.array([0.7, 0.3]))
        allclose(m.result(), 0.3, atol=1e-3)


# ============================================================== SparseCategoricalAccuracyTest
def sparse():
    return metrics.SparseCategoricalAccuracy(name="sparse_categorical_accuracy", dtype="float32")


class TestSparseCategoricalAccuracy:
    def test_config(self, dev):
        check_config(sparse(), metrics.SparseCategoricalAccuracy, "sparse_categorical_accuracy")

    def test_unweighted(self, dev):
        m = sparse()
        m.update_state(np.array([[2], [1]]), np.array([[0.1, 0.6, 0.3], [0.05, 0.95, 0]]))
        allclose(m.result(), 0.5, atol=1e-3)

    def test_weighted(self, dev):
        m = sparse()
        m.update_state(np.array([[2], [1]]), np.array([[0.1, 0.6, 0.3], [0.05, 0.95, 0]]),
                       sample_weight=np.array([0.7, 0.3]))
        allclose(m.result(), 0.3, atol=1e-3)

    def test_squeeze_y_true(self, dev):
        m = sparse()
        m.update_state(np.array([[0], [1], [2]]), np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]))
        allclose(m.result(), 1.0, atol=1e-4)

    def test_cast_y_pred_dtype(self, dev):
        m = sparse()
        m.update_state(np.array([0, 1], dtype=np.int64), np.array([[0.9, 0.1], [0.1, 0.9]], dtype=np.float32))
        allclose(m.result(), 1.0, atol=1e-4)

    def test_reshape_matches(self, dev):
        m = sparse()
        m.update_state(np.array([[0], [0]], dtype=np.int64), np.array([[[0.9, 0.1, 0.0], [0.8, 0.15, 0.05]]],
                                                                    dtype=np.float32))
        allclose(m.result(), np.array([1.0, 1.0]))

    def test_squeeze_y_true_shape(self, dev):
        m = sparse()
        m.update_state(np.array([[0], [1], [2]]), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        allclose(m.result(), 1.0, atol=1e-4)

    def test_cast_y_pred_to_match_y_true_dtype(self, dev):
        m = sparse()
        m.update_state(np.array([0, 1, 2], dtype=np.int32),
                       np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]], dtype=np.float64))
        allclose(m.result(), 1.0, atol=1e-4)

    def test_reshape_matches_to_original_y_true_shape(self, dev):
        m = sparse()
        m.update_state(np.array([[0], [1]]), np.array([[0.9, 0.1], [0.1, 0.9]]))
        allclose(m.result(), 1.0, atol=1e-4)

    def test_matching_shapes_without_squeeze(self, dev):
        m = sparse()
        m.update_state(np.array([2, 1, 0], dtype=np.int32),
                       np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32))
        allclose(m.result(), 1.0, atol=1e-4)


# ============================================================== compile_utils_test.py: metric names
NAME_TRUE = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
NAME_PRED = np.array([[0.4, 0.1], [0.2, 0.6], [0.6, 0.1]])


def compiled(names, y_true, y_pred):
    out = [metrics.get(n) for n in names]
    for m in out:
        if isinstance(m, metrics.Accuracy):
            m.resolve(None, y_true.shape, y_pred.shape)
        m.update_state(y_true, y_pred)
    return {m.name: host(m.result()) for m in out}


def test_name_conversions(dev):
    result = compiled(["acc", "accuracy", "mse"], NAME_TRUE, NAME_PRED)
    assert len(result) == 3 and "mse" in result
    allclose(result["acc"], 0.333333)
    allclose(result["accuracy"], 0.333333)


def test_custom_metric_function(dev):
    def my_custom_metric(y_true, y_pred):
        return gpunet.ops.mean(gpunet.ops.square(y_true - y_pred), axis=-1)
    result = compiled([my_custom_metric], NAME_TRUE, NAME_PRED)
    assert list(result) == ["my_custom_metric"]


# ============================================================== gpunet: the trainer's interface
@pytest.mark.parametrize("y_true_shape,y_pred_shape,kind", [
    ((8, 10), (None, 10), "categorical"), ((8,), (None, 10), "sparse"), ((8, 1), (None, 10), "sparse"),
    ((8, 1), (None, 1), "binary"), ((8,), (None, 1), "binary"), ((8, 5), (None, 5, 3), "sparse"),
    ((8, 5, 3), (None, 5, 3), "categorical"), ((8, 4), (None, 4), "categorical")])
def test_accuracy_is_resolved_from_the_shapes_as_keras_compile_does(y_true_shape, y_pred_shape, kind):
    """compile_utils.is_binary_or_sparse_categorical; the loss plays no part (a binary cross-entropy with
    4 outputs gets categorical accuracy, as in Keras 3)."""
    assert metrics.Accuracy().resolve(losses.get("binary_crossentropy"), y_true_shape, y_pred_shape) == kind


@pytest.mark.parametrize("kind", ["categorical", "sparse", "binary"])
def test_accuracy_on_3d_outputs_counts_each_position(dev, kind):
    """(n, t, c) outputs: the batch sum is the sum of per-sample means, so all correct -> n, not n * t."""
    rng = np.random.default_rng(0)
    if kind == "binary":
        y = rng.integers(0, 2, (4, 3, 1)).astype(np.float32)
        p = np.where(y > 0, 0.9, 0.1).astype(np.float32)
    else:
        labels = rng.integers(0, 5, (4, 3))
        p = np.eye(5, dtype=np.float32)[labels] * 0.9 + 0.02
        y = labels if kind == "sparse" else np.eye(5, dtype=np.float32)[labels]
    m = metrics.get("accuracy")
    m.resolve(None, y.shape, (None,) + p.shape[1:])
    assert m.kind == kind
    assert float(m.batch_sum(gpunet.tensor(y), gpunet.tensor(p))) == 4.0
    p2 = p.copy()
    p2[0, 0] = p2[0, 0][::-1] if kind != "binary" else 1 - p2[0, 0]          # one position of one sample wrong
    got = float(m.batch_sum(gpunet.tensor(y), gpunet.tensor(p2)))
    assert got == pytest.approx(4.0 - 1 / 3, abs=1e-6)


def test_batch_sum_with_sample_weights_divides_by_the_weights_to_keras_mean(dev):
    y = np.array([[0], [1], [2], [1]])
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]], dtype=np.float32)
    w = np.array([0.5, 2.0, 1.0, 0.25], dtype=np.float32)
    m = metrics.SparseCategoricalAccuracy()
    total = float(m.batch_sum(gpunet.tensor(y), gpunet.tensor(p), sample_weight=gpunet.tensor(w)))
    assert total == pytest.approx(0.5 + 1.0 + 0.25)
    assert total / w.sum() == pytest.approx(1.75 / 3.75)
    mse = metrics.get("mse")
    yr, pr = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    assert float(mse.batch_sum(yr, pr)) == pytest.approx(2.0 + 1.0)
    assert float(mse.batch_sum(yr, pr, sample_weight=np.array([3.0, 1.0]))) == pytest.approx(3 * 2.0 + 1.0)


def test_binary_accuracy_on_logits_uses_the_matching_threshold(dev):
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    z = np.array([[0.3], [-0.2], [-0.1], [2.0]], dtype=np.float32)
    p = 1 / (1 + np.exp(-z))
    for threshold in (0.5, 0.3, 0.6):
        m = metrics.BinaryAccuracy(threshold=threshold)
        want = float(m.batch_sum(gpunet.tensor(y), gpunet.tensor(p)))
        assert float(m.batch_sum(gpunet.tensor(y), gpunet.tensor(z), logits=True)) == want


def test_a_metric_function_returning_a_python_float_is_counted_per_sample(dev):
    m = metrics.get(lambda y_true, y_pred: 0.5)
    assert float(m.batch_sum(gpunet.tensor(np.zeros((6, 2))), gpunet.tensor(np.ones((6, 2))))) == 3.0


def test_a_float_metric_function_trains(dev):
    def half(y_true, y_pred):
        return 0.5
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    net = models.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    net.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[half, "accuracy"])
    history = net.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert history.history["half"] == [pytest.approx(0.5)]


def test_metric_serialization_round_trips_and_reads_the_earlier_format():
    for m in (metrics.get("accuracy"), metrics.get("acc"), metrics.BinaryAccuracy(threshold=0.3),
              metrics.get("categorical_accuracy"), metrics.get("sparse_categorical_accuracy"), metrics.get("mae")):
        back = metrics.deserialize(json.loads(json.dumps(metrics.serialize(m))))
        assert type(back) is type(m) and back.name == m.name and back.get_config() == m.get_config()
    old = metrics.deserialize({"class": "Accuracy", "name": "accuracy", "kind": "categorical"})
    assert type(old) is metrics.Accuracy and old.kind == "categorical" and old.threshold == 0.5
