"""Ported from Keras 3: keras/src/losses/losses_test.py (MeanSquaredErrorTest, MeanAbsoluteErrorTest,
BinaryCrossentropyTest, CategoricalCrossentropyTest, SparseCategoricalCrossentropyTest) and
keras/src/losses/loss_test.py, with Keras' inputs, expected numbers and tolerances
(``assertAlmostEqual``: 3 decimals; ``assertAllClose``: atol = rtol = 1e-6).

Adapted: every test runs on each backend (the ``dev`` fixture); ``run_class_serialization_test`` is
:func:`roundtrip` (get_config/from_config through JSON, and gpunet's ``losses.serialize`` /
``deserialize``, which ``model.save`` uses; same attributes after each); ``dtype="bfloat16"`` is
``"float16"`` (NumPy has no bfloat16); a Keras mask set on ``y_pred`` (``backend.set_keras_mask``) is
the loss's ``value_mask`` hook here (gpunet tensors carry no masks); ``losses.get("mse")`` gives a
``MeanSquaredError`` object rather than the function; the TensorFlow/JAX branches of the
"different axis" tests are replaced by their PyTorch branch (gpunet, like Keras on PyTorch,
supports any class axis). Not ported: the DTypePolicy parts of test_dtype_arg / test_default_dtype
(gpunet has no dtype policies or floatx). The last section adds gpunet's own checks of the fused
logits path. Differences: DIFFERENCES-losses.md.
"""
import json
import pickle
import warnings

import numpy as np
import pytest

import gpunet
from gpunet import losses
from gpunet.losses import Loss, squeeze_or_expand_to_same_rank


def host(x):
    return np.asarray(x.numpy() if isinstance(x, gpunet.Tensor) else x)


def almost(actual, desired, decimal=3):
    np.testing.assert_almost_equal(host(actual), host(desired), decimal=decimal)


def allclose(actual, desired, atol=1e-6, rtol=1e-6):
    np.testing.assert_allclose(host(actual), host(desired), atol=atol, rtol=rtol)


def roundtrip(instance):
    """Keras' run_class_serialization_test: config and serialization round trips through JSON."""
    cls = type(instance)
    config = instance.get_config()
    revived = cls.from_config(json.loads(json.dumps(config)))
    assert json.dumps(revived.get_config()) == json.dumps(config)
    assert set(dir(revived)) == set(dir(instance))
    back = losses.deserialize(json.loads(json.dumps(losses.serialize(instance))))
    assert json.dumps(back.get_config()) == json.dumps(config)
    assert set(dir(back)) == set(dir(instance))
    return back


def dtype_of(t):
    return np.dtype(t.dtype).name


Y_TRUE = np.array([[1, 9, 2], [-5, -2, 6]])
Y_PRED = np.array([[4, 8, 12], [8, 1, 3]], dtype="float32")


# ============================================================== losses_test.py: MeanSquaredErrorTest
class TestMeanSquaredError:
    def test_config(self, dev):
        roundtrip(losses.MeanSquaredError(name="mymse"))

    def test_base_function_reduction(self, dev):
        loss = losses.mean_squared_error(np.array([4, 8, 12]), np.array([[3], [0], [1]]))
        assert loss.shape == (3,)

    def test_all_correct_unweighted(self, dev):
        y_true = np.array([[4, 8, 12], [8, 1, 3]])
        almost(losses.MeanSquaredError()(y_true, y_true), 0.0)

    def test_unweighted(self, dev):
        almost(losses.MeanSquaredError()(Y_TRUE, Y_PRED), 49.5)

    def test_scalar_weighted(self, dev):
        almost(losses.MeanSquaredError()(Y_TRUE, Y_PRED, sample_weight=2.3), 113.85)

    def test_sample_weighted(self, dev):
        loss = losses.MeanSquaredError()(Y_TRUE, Y_PRED, sample_weight=np.array([[1.2], [3.4]]))
        almost(loss, 767.8 / 6)

    def test_timestep_weighted(self, dev):
        y_true = np.asarray([1, 9, 2, -5, -2, 6]).reshape(2, 3, 1)
        y_pred = np.asarray([4, 8, 12, 8, 1, 3]).reshape(2, 3, 1)
        sample_weight = np.array([3, 6, 5, 0, 4, 2]).reshape((2, 3))
        almost(losses.MeanSquaredError()(y_true, y_pred, sample_weight=sample_weight), 97.833336)

    def test_zero_weighted(self, dev):
        almost(losses.MeanSquaredError()(Y_TRUE, Y_PRED, sample_weight=0), 0.0)

    def test_no_reduction(self, dev):
        almost(losses.MeanSquaredError(reduction=None)(Y_TRUE, Y_PRED, sample_weight=2.3), [84.3333, 143.3666])

    def test_sum_reduction(self, dev):
        almost(losses.MeanSquaredError(reduction="sum")(Y_TRUE, Y_PRED, sample_weight=2.3), 227.69998)

    def test_mean_with_sample_weight_reduction(self, dev):
        loss = losses.MeanSquaredError(reduction="mean_with_sample_weight")(
            Y_TRUE, Y_PRED, sample_weight=np.array([[1.2], [3.4]]))
        almost(loss, (110 / 3 * 1.2 + 187 / 3 * 3.4) / (1.2 + 3.4))

    def test_dtype_arg(self, dev):
        assert dtype_of(losses.MeanSquaredError(dtype="float16")(Y_TRUE, Y_PRED)) == "float16"


# ============================================================== losses_test.py: MeanAbsoluteErrorTest
class TestMeanAbsoluteError:
    def test_config(self, dev):
        roundtrip(losses.MeanAbsoluteError(name="myname"))

    def test_all_correct_unweighted(self, dev):
        y_true = np.array([[4, 8, 12], [8, 1, 3]])
        almost(losses.MeanAbsoluteError()(y_true, y_true), 0.0)

    def test_unweighted(self, dev):
        almost(losses.MeanAbsoluteError()(Y_TRUE, Y_PRED), 5.5)

    def test_scalar_weighted(self, dev):
        almost(losses.MeanAbsoluteError()(Y_TRUE, Y_PRED, sample_weight=2.3), 12.65)

    def test_sample_weighted(self, dev):
        almost(losses.MeanAbsoluteError()(Y_TRUE, Y_PRED, sample_weight=np.array([[1.2], [3.4]])), 81.4 / 6)

    def test_timestep_weighted(self, dev):
        y_true = np.asarray([1, 9, 2, -5, -2, 6]).reshape(2, 3, 1)
        y_pred = np.asarray([4, 8, 12, 8, 1, 3]).reshape(2, 3, 1)
        sample_weight = np.array([3, 6, 5, 0, 4, 2]).reshape((2, 3))
        almost(losses.MeanAbsoluteError()(y_true, y_pred, sample_weight=sample_weight), 13.833333)

    def test_zero_weighted(self, dev):
        almost(losses.MeanAbsoluteError()(Y_TRUE, Y_PRED, sample_weight=0), 0.0)

    def test_no_reduction(self, dev):
        almost(losses.MeanAbsoluteError(reduction=None)(Y_TRUE, Y_PRED, sample_weight=2.3), [10.7333, 14.5666])

    def test_sum_reduction(self, dev):
        almost(losses.MeanAbsoluteError(reduction="sum")(Y_TRUE, Y_PRED, sample_weight=2.3), 25.29999)

    def test_mean_with_sample_weight_reduction(self, dev):
        loss = losses.MeanAbsoluteError(reduction="mean_with_sample_weight")(
            Y_TRUE, Y_PRED, sample_weight=np.array([[1.2], [3.4]]))
        almost(loss, (14 / 3 * 1.2 + 19 / 3 * 3.4) / (1.2 + 3.4))

    def test_dtype_arg(self, dev):
        assert dtype_of(losses.MeanAbsoluteError(dtype="float16")(Y_TRUE, Y_PRED)) == "float16"


# ============================================================== losses_test.py: BinaryCrossentropyTest
BCE_LOGITS = np.array([[10.0, -10.0, 10.0], [10.0, 10.0, -10.0]])
BCE_LOGIT_TRUE = np.array([[1, 0, 1], [0, 1, 1]])


class TestBinaryCrossentropy:
    def test_config(self, dev):
        roundtrip(losses.BinaryCrossentropy(name="bce", axis=-1))

    def test_all_correct_unweighted(self, dev):
        y_true = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
        almost(losses.BinaryCrossentropy()(y_true, y_true), 0.0)
        logits = np.array([[10.0, -10.0, -10.0], [-10.0, 10.0, -10.0], [-10.0, -10.0, 10.0]])
        almost(losses.BinaryCrossentropy(from_logits=True)(y_true, logits), 0.0)

    def test_unweighted(self, dev):
        y_true = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
        y_pred = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], dtype="float32")
        allclose(losses.BinaryCrossentropy()(y_true, y_pred), 0.20046903)
        y_true = np.array([1, 0, 1, 0]).reshape([2, 2])
        y_pred = np.array([1, 1, 1, 0], dtype=np.float32).reshape([2, 2])
        almost(losses.BinaryCrossentropy()(y_true, y_pred), 3.98559)
        almost(losses.BinaryCrossentropy(from_logits=True)(BCE_LOGIT_TRUE, BCE_LOGITS), 3.3333)

    def test_scalar_weighted(self, dev):
        y_true = np.array([1, 0, 1, 0]).reshape([2, 2])
        y_pred = np.array([1, 1, 1, 0], dtype="float32").reshape([2, 2])
        almost(losses.BinaryCrossentropy()(y_true, y_pred, sample_weight=2.3), 9.1668)
        almost(losses.BinaryCrossentropy(from_logits=True)(BCE_LOGIT_TRUE, BCE_LOGITS, sample_weight=2.3), 7.666)

    def test_sample_weighted(self, dev):
        y_true = np.array([1, 0, 1, 0]).reshape([2, 2])
        y_pred = np.array([1, 1, 1, 0], dtype="float32").reshape([2, 2])
        sample_weight = np.array([1.2, 3.4]).reshape((2, 1))
        almost(losses.BinaryCrossentropy()(y_true, y_pred, sample_weight=sample_weight), 4.7827)
        loss = losses.BinaryCrossentropy(from_logits=True)(BCE_LOGIT_TRUE, BCE_LOGITS, sample_weight=np.array([4, 3]))
        almost(loss, 10.0)

    def test_no_reduction(self, dev):
        loss = losses.BinaryCrossentropy(from_logits=True, reduction=None)(BCE_LOGIT_TRUE, BCE_LOGITS)
        allclose(loss, [0.0, 6.666], atol=1e-3)

    def test_label_smoothing(self, dev):
        logits = np.array([[10.0, -10.0, -10.0]])
        y_true = np.array([[1, 0, 1]])
        loss = losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)(y_true, logits)
        almost(loss, (10.0 + 5.0 * 0.1) / 3.0)

    def test_shape_mismatch(self, dev):
        y_true = np.array([[0], [1], [2]])
        y_pred = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]])
        with pytest.raises(ValueError, match="must have the same shape"):
            losses.BinaryCrossentropy()(y_true, y_pred)

    def test_dtype_arg(self, dev):
        y_true = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
        y_pred = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], dtype="float32")
        assert dtype_of(losses.BinaryCrossentropy(dtype="float16")(y_true, y_pred)) == "float16"


# ============================================================== losses_test.py: CategoricalCrossentropyTest
CCE_TRUE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
CCE_PRED = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]], dtype="float32")
CCE_LOGITS = np.array([[8.0, 1.0, 1.0], [0.0, 9.0, 1.0], [2.0, 3.0, 5.0]])
ONE_HOT_PRED = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype="float32")
ALL_CORRECT_LOGITS = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])


class TestCategoricalCrossentropy:
    def test_config(self, dev):
        roundtrip(losses.CategoricalCrossentropy(name="cce", axis=-1))

    def test_all_correct_unweighted(self, dev):
        y_true = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="int64")
        almost(losses.CategoricalCrossentropy()(y_true, ONE_HOT_PRED), 0.0)
        almost(losses.CategoricalCrossentropy(from_logits=True)(y_true, ALL_CORRECT_LOGITS), 0.0)

    def test_unweighted(self, dev):
        almost(losses.CategoricalCrossentropy()(CCE_TRUE, CCE_PRED), 0.3239)
        almost(losses.CategoricalCrossentropy(from_logits=True)(CCE_TRUE, CCE_LOGITS), 0.0573)

    def test_scalar_weighted(self, dev):
        almost(losses.CategoricalCrossentropy()(CCE_TRUE, CCE_PRED, sample_weight=2.3), 0.7449)
        almost(losses.CategoricalCrossentropy(from_logits=True)(CCE_TRUE, CCE_LOGITS, sample_weight=2.3), 0.1317)

    def test_warning_for_invalid_shape(self, dev):
        y = np.array([[1], [1]], dtype="float32")
        with pytest.warns(SyntaxWarning, match=r"expected y_pred.shape to be \(batch_size, num_classes\)"):
            losses.categorical_crossentropy(y, np.array([[0.5], [0.5]], dtype="float32"))
        y = np.ones((2, 1, 4), dtype="float32")
        with pytest.warns(SyntaxWarning, match=r"expected y_pred.shape to be \(batch_size, num_classes\)"):
            losses.categorical_crossentropy(y, y, axis=1)
        y = np.ones((2, 4, 1), dtype="float32")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            losses.categorical_crossentropy(y, y, axis=1)
            assert not [x for x in w if issubclass(x.category, SyntaxWarning)]

    def test_sample_weighted(self, dev):
        sample_weight = np.array([[1.2], [3.4], [5.6]]).reshape((3, 1))
        almost(losses.CategoricalCrossentropy()(CCE_TRUE, CCE_PRED, sample_weight=sample_weight), 1.0696)
        loss = losses.CategoricalCrossentropy(from_logits=True)(CCE_TRUE, CCE_LOGITS, sample_weight=sample_weight)
        almost(loss, 0.31829)

    def test_no_reduction(self, dev):
        loss = losses.CategoricalCrossentropy(from_logits=True, reduction=None)(CCE_TRUE, CCE_LOGITS)
        allclose(loss, (0.001822, 0.000459, 0.169846))

    @pytest.mark.parametrize("as_array", [np.array, np.asarray], ids=["label_smoothing", "label_smoothing_ndarray"])
    def test_label_smoothing(self, dev, as_array):
        logits = as_array([[100.0, -100.0, -100.0]])
        loss = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(as_array([[1, 0, 0]]), logits)
        almost(loss, 400.0 * 0.1 / 3.0)

    def test_label_smoothing_with_axis(self, dev):
        y_true = np.array([[[1, 0], [0, 1], [0, 0]], [[0, 1], [1, 0], [0, 0]]], dtype="float32")
        y_pred = np.array([[[0.8, 0.1], [0.1, 0.8], [0.1, 0.1]], [[0.1, 0.8], [0.8, 0.1], [0.1, 0.1]]],
                          dtype="float32")
        loss = losses.CategoricalCrossentropy(label_smoothing=0.1, axis=1)(y_true, y_pred)
        smoothed = y_true * (1.0 - 0.1) + 0.1 / 3
        almost(loss, np.mean(-np.sum(smoothed * np.log(y_pred), axis=1)), decimal=5)

    def test_shape_mismatch(self, dev):
        y_true = np.array([[0], [1], [2]])
        y_pred = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]])
        with pytest.raises(ValueError, match="must have the same shape"):
            losses.CategoricalCrossentropy()(y_true, y_pred)

    def test_dtype_arg(self, dev):
        y_true = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="int64")
        assert dtype_of(losses.CategoricalCrossentropy(dtype="float16")(y_true, ONE_HOT_PRED)) == "float16"


# ============================================================== losses_test.py: SparseCategoricalCrossentropyTest
SEG_TRUE = np.array([[0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]])
SEG_PRED = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
                     [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
SEG_PRED_2 = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.2, 0.8]], [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
                       [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.4]]])
MC_TRUE = np.array([[0, 1, 2, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]])
_A, _B, _C = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
MC_PRED = np.array([[_A, _B, _C, _A], [_B, _A, _B, _A], [_A, _A, _B, _B], [_B, _B, _A, _B]])
MC_PRED_2 = np.array([[_A, _B, _C, [0.2, 0.0, 0.8]], [[0.7, 0.3, 0.0], _A, _B, _A], [_A, _A, _B, _B],
                      [_B, _B, [0.5, 0.5, 0.0], _B]])


class TestSparseCategoricalCrossentropy:
    def test_config(self, dev):
        roundtrip(losses.SparseCategoricalCrossentropy(name="scce"))
        scce = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3, axis=0, name="scce")
        config = scce.get_config()
        assert config["from_logits"] is True and config["ignore_class"] == 3 and config["axis"] == 0
        roundtrip(scce)

    def test_all_correct_unweighted(self, dev):
        y_true = np.array([[0], [1], [2]], dtype="int64")
        almost(losses.SparseCategoricalCrossentropy()(y_true, ONE_HOT_PRED), 0.0, 3)
        almost(losses.SparseCategoricalCrossentropy(from_logits=True)(y_true, ALL_CORRECT_LOGITS), 0.0, 3)

    def test_unweighted(self, dev):
        y_true = np.array([0, 1, 2])
        almost(losses.SparseCategoricalCrossentropy()(y_true, CCE_PRED), 0.3239, 3)
        almost(losses.SparseCategoricalCrossentropy(from_logits=True)(y_true, CCE_LOGITS), 0.0573, 3)

    def test_scalar_weighted(self, dev):
        y_true = np.array([[0], [1], [2]])
        almost(losses.SparseCategoricalCrossentropy()(y_true, CCE_PRED, sample_weight=2.3), 0.7449, 3)
        loss = losses.SparseCategoricalCrossentropy(from_logits=True)(y_true, CCE_LOGITS, sample_weight=2.3)
        almost(loss, 0.1317, 3)

    def test_sample_weighted(self, dev):
        y_true = np.array([[0], [1], [2]])
        sample_weight = np.array([[1.2], [3.4], [5.6]]).reshape((3, 1))
        almost(losses.SparseCategoricalCrossentropy()(y_true, CCE_PRED, sample_weight=sample_weight), 1.0696, 3)
        loss = losses.SparseCategoricalCrossentropy(from_logits=True)(y_true, CCE_LOGITS, sample_weight=sample_weight)
        almost(loss, 0.31829, 3)

    def test_no_reduction(self, dev):
        loss = losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(np.array([[0], [1], [2]]),
                                                                                      CCE_LOGITS)
        allclose(loss, (0.001822, 0.000459, 0.169846))

    def test_ignore_class(self, dev):
        logits = np.array([[[0.854, 0.698, 0.598], [0.088, 0.86, 0.018]]])
        for y_true in (np.array([[-1, 2]]), np.array([[[-1], [2]]])):
            loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1, reduction=None)(y_true, logits)
            allclose(loss, [[0.0, 1.480129]])

    def test_binary_segmentation(self, dev):
        allclose(losses.SparseCategoricalCrossentropy()(SEG_TRUE, SEG_PRED), 0.0)
        expected = np.array([-np.log(0.2), -np.log(0.4)])
        allclose(losses.SparseCategoricalCrossentropy()(SEG_TRUE, SEG_PRED_2), expected.sum() / 16.0)

    def test_binary_segmentation_different_axis(self, dev):
        """Keras' PyTorch branch: the class axis may be any axis."""
        allclose(losses.SparseCategoricalCrossentropy(axis=0)(SEG_TRUE, np.moveaxis(SEG_PRED, 2, 0)), 0.0)
        expected = np.array([-np.log(0.2), -np.log(0.4)])
        moved = np.moveaxis(SEG_PRED_2, 2, 0)
        allclose(losses.SparseCategoricalCrossentropy(axis=0)(SEG_TRUE, moved), expected.sum() / 16.0)
        y_true, y_pred = np.array([SEG_TRUE] * 3), np.array([moved] * 3)
        allclose(losses.SparseCategoricalCrossentropy(axis=1)(y_true, y_pred), expected.sum() / 16.0)

    def test_squeezes_singleton_class_dim_on_user_axis(self, dev):
        rng = np.random.default_rng(0)
        y_true = rng.integers(0, 2, size=(2, 1, 4, 4)).astype("float32")
        y_pred = rng.random((2, 2, 4, 4)).astype("float32")
        assert losses.sparse_categorical_crossentropy(y_true, y_pred, axis=1).shape == (2, 4, 4)

    def test_multi_class_segmentation(self, dev):
        allclose(losses.SparseCategoricalCrossentropy()(MC_TRUE, MC_PRED), 0.0)
        expected = np.array([-np.log(0.2), -np.log(0.3), -np.log(0.5)])
        allclose(losses.SparseCategoricalCrossentropy()(MC_TRUE, MC_PRED_2), expected.sum() / 16.0)

    def test_multi_class_segmentation_different_axis(self, dev):
        """Keras' PyTorch branch: the class axis may be any axis."""
        allclose(losses.SparseCategoricalCrossentropy(axis=0)(MC_TRUE, np.moveaxis(MC_PRED, 2, 0)), 0.0)
        expected = np.array([-np.log(0.2), -np.log(0.3), -np.log(0.5)])
        moved = np.moveaxis(MC_PRED_2, 2, 0)
        allclose(losses.SparseCategoricalCrossentropy(axis=0)(MC_TRUE, moved), expected.sum() / 16.0)
        y_true, y_pred = np.array([MC_TRUE] * 3), np.array([moved] * 3)
        allclose(losses.SparseCategoricalCrossentropy(axis=1)(y_true, y_pred), expected.sum() / 16.0)

    def test_dtype_arg(self, dev):
        y_true = np.array([[0], [1], [2]], dtype="int64")
        assert dtype_of(losses.SparseCategoricalCrossentropy(dtype="float16")(y_true, ONE_HOT_PRED)) == "float16"


# ============================================================== loss_test.py: LossTest
class ExampleLoss(Loss):
    def call(self, y_true, y_pred):
        return (y_true - y_pred) ** 2


class MaskedExampleLoss(ExampleLoss):
    """Keras' ``backend.set_keras_mask(y_pred, mask)``, as gpunet's ``value_mask`` hook."""

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = mask

    def value_mask(self, y_true, y_pred):
        return self.mask


LT_TRUE = np.array([1.0, 0.0, 1.0, 0.0])
LT_PRED = np.array([0.1, 0.2, 0.3, 0.4])
LT_WEIGHT = np.array([0.4, 0.3, 0.2, 0.1])
LT_MASK = np.array([True, False, True, True])
MASKED = dict(w=np.array([0.4, 0.2, 0.1]), y_true=np.array([1.0, 1.0, 0.0]), y_pred=np.array([0.1, 0.3, 0.4]))


class TestLoss:
    def test_squeeze_or_expand(self, dev):
        for a, b, want_a, want_b in [((3,), (3, 1), (3, 1), (3, 1)), ((3, 2), (3, 2, 1), (3, 2), (3, 2)),
                                     ((3, 1), (3,), (3, 1), (3, 1)), ((3, 2, 1), (3, 2), (3, 2), (3, 2))]:
            x1, x2 = squeeze_or_expand_to_same_rank(gpunet.ones(a), gpunet.ones(b))
            assert (x1.shape, x2.shape) == (want_a, want_b)

    def test_reduction(self, dev):
        loss = ExampleLoss(reduction=None)(LT_TRUE, LT_PRED)
        assert dtype_of(loss) == "float32"
        allclose(loss, (LT_TRUE - LT_PRED) ** 2)
        loss = ExampleLoss(reduction="sum")(LT_TRUE, LT_PRED)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum((LT_TRUE - LT_PRED) ** 2))
        loss = ExampleLoss(reduction="sum_over_batch_size")(LT_TRUE, LT_PRED)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum((LT_TRUE - LT_PRED) ** 2) / 4)
        with pytest.raises(ValueError, match="Invalid value for argument"):
            ExampleLoss(reduction="abc")

    def test_mask(self, dev):
        loss = MaskedExampleLoss(LT_MASK)(LT_TRUE, LT_PRED)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum((MASKED["y_true"] - MASKED["y_pred"]) ** 2) / 3)
        loss = MaskedExampleLoss(np.array([False] * 4))(LT_TRUE, LT_PRED)
        assert dtype_of(loss) == "float32"
        allclose(loss, 0)     # no NaN

    def test_sample_weight(self, dev):
        loss = ExampleLoss()(LT_TRUE, LT_PRED, sample_weight=LT_WEIGHT)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum(LT_WEIGHT * (LT_TRUE - LT_PRED) ** 2) / 4)
        loss = ExampleLoss()(LT_TRUE, LT_PRED, sample_weight=np.zeros(4))
        allclose(loss, 0)

    def test_mask_and_sample_weight(self, dev):
        loss = MaskedExampleLoss(LT_MASK)(LT_TRUE, LT_PRED, sample_weight=LT_WEIGHT)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum(MASKED["w"] * (MASKED["y_true"] - MASKED["y_pred"]) ** 2) / 3)

    def test_mask_and_sample_weight_rank2(self, dev):
        rank1 = MaskedExampleLoss(LT_MASK)(LT_TRUE, LT_PRED, sample_weight=LT_WEIGHT)
        tile = lambda a: np.tile(a[None], (2, 1))   # noqa: E731 - duplicate rows
        rank2 = MaskedExampleLoss(tile(LT_MASK))(tile(LT_TRUE), tile(LT_PRED), sample_weight=tile(LT_WEIGHT))
        allclose(rank1, rank2)

    @pytest.mark.parametrize("uprank", ["mask", "sample_weight", "ys"])
    def test_rank_adjustment(self, dev, uprank):
        mask, w, y_true, y_pred = LT_MASK, LT_WEIGHT, LT_TRUE, LT_PRED
        if uprank == "mask":
            mask = mask[:, None]
        elif uprank == "sample_weight":
            w = w[:, None]
        else:
            y_true, y_pred = y_true[:, None], y_pred[:, None]
        loss = MaskedExampleLoss(mask)(y_true, y_pred, sample_weight=w)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum(MASKED["w"] * (MASKED["y_true"] - MASKED["y_pred"]) ** 2) / 3)

    def test_mixed_dtypes(self, dev):
        w = np.array([0.4, 0.3, 0.2, 0.1], dtype="float64")
        y_true = np.array([1.0, 0.0, 1.0, 0.0], dtype="int32")
        y_pred = np.array([0.1, 0.2, 0.3, 0.4], dtype="float32")
        loss = ExampleLoss()(y_true, y_pred, sample_weight=w)
        assert dtype_of(loss) == "float32"
        allclose(loss, np.sum(w * (y_true - y_pred) ** 2) / 4)

    def test_pickle(self, dev):
        loss = pickle.loads(pickle.dumps(losses.get("mse")))
        assert isinstance(loss, losses.MeanSquaredError) and loss.name == "mse"
        allclose(loss(Y_TRUE, Y_PRED), 49.5)

    def test_get_method(self, dev):
        assert isinstance(losses.get("mse"), losses.MeanSquaredError)
        assert losses.get(None) is None
        with pytest.raises(ValueError):
            losses.get("typo")

    def test_dtype_arg(self, dev):
        y_true = np.array([1.0, 0.0, 1.0, 0.0], dtype="float32")
        y_pred = np.array([0.1, 0.2, 0.3, 0.4], dtype="float32")
        loss_fn = ExampleLoss(dtype="float16")
        assert dtype_of(loss_fn(y_true, y_pred)) == "float16"
        with pytest.raises(AttributeError):
            loss_fn.dtype = "bfloat16"

    def test_default_dtype(self, dev):
        """Adapted: no floatx; the default is the predictions' float dtype (float32 for float32 or integers)."""
        y = np.array([1.0, 0.0, 1.0, 0.0], dtype="float32")
        assert dtype_of(ExampleLoss()(y, y)) == "float32"
        assert dtype_of(ExampleLoss()(y.astype("int32"), y.astype("int32"))) == "float32"


# ============================================================== gpunet: the fused logits path
def _same_bits(a, b):
    np.testing.assert_array_equal(host(a), host(b))


@pytest.mark.parametrize("make,y", [
    (lambda: losses.CategoricalCrossentropy(), np.eye(4)[[0, 3, 1, 2, 2]]),
    (lambda: losses.CategoricalCrossentropy(label_smoothing=0.2), np.eye(4)[[0, 3, 1, 2, 2]]),
    (lambda: losses.SparseCategoricalCrossentropy(), np.array([0, 3, 1, 2, 2])),
    (lambda: losses.SparseCategoricalCrossentropy(), np.array([[0], [3], [1], [2], [2]])),
    (lambda: losses.SparseCategoricalCrossentropy(ignore_class=1), np.array([0, 3, 1, 2, 2])),
], ids=["cce", "cce-smoothing", "scce", "scce-n1", "scce-ignore"])
@pytest.mark.parametrize("weights", [None, np.array([1.0, 0.5, 0.0, 2.0, 1.5])], ids=["unweighted", "weighted"])
def test_taped_and_array_forms_agree_bit_for_bit_and_match_the_generic_formula(dev, make, y, weights):
    """The tapeless step calls ``logits_function``; the tape runs it through ``from_logits_loss``: same bits.
    Both equal Keras' per-sample formula (log-softmax), weighted and reduced."""
    loss = make()
    z = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32) * 3
    zt = gpunet.tensor(z, requires_grad=True)
    yd = gpunet.tensor(y).data
    wd = None if weights is None else gpunet.tensor(weights).data
    with gpunet.GradientTape() as tape:
        taped = loss.from_logits_loss(gpunet.Tensor.wrap(yd, zt.device), zt,
                                      None if wd is None else gpunet.Tensor.wrap(wd, zt.device))
    g_taped = tape.gradient(taped, zt)
    value, backward = loss.logits_function(zt.device.xp, zt.data, yd, wd)
    _same_bits(taped, gpunet.Tensor.wrap(value, zt.device))
    _same_bits(g_taped, gpunet.Tensor.wrap(backward(zt.device.xp.ones((), "float32"), (True, False))[0], zt.device))
    generic = type(loss)(**{**loss.get_config(), "reduction": "sum"})
    with gpunet.GradientTape() as tape:
        per = generic.from_logits_loss(y, zt, weights)
        if loss.get_config().get("ignore_class") is None:
            per = per / 5
        else:
            per = per * (5 / np.sum(y != loss.ignore_class)) / 5
    allclose(taped, host(per), rtol=1e-5)
    allclose(g_taped, host(tape.gradient(per, zt)), atol=1e-6, rtol=1e-4)


def test_per_position_labels_and_timestep_weights_on_logits(dev):
    """y_true (n, h) against logits (n, h, classes): per-position losses, averaged over all n*h."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, (3, 4))
    w = rng.random((3, 4)).astype(np.float32)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    per = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    for loss in (losses.SparseCategoricalCrossentropy(from_logits=True),
                 losses.CategoricalCrossentropy(from_logits=True)):
        y = labels if isinstance(loss, losses.SparseCategoricalCrossentropy) else np.eye(5)[labels]
        allclose(loss(y, z), per.mean(), rtol=1e-5)
        allclose(loss(y, z, sample_weight=w), (per * w).mean(), rtol=1e-5)
        zt = gpunet.tensor(z, requires_grad=True)
        with gpunet.GradientTape() as tape:
            value = loss(y, zt)
        p = np.exp(logp)
        want = (p - np.eye(5)[labels]) / 12
        allclose(tape.gradient(value, zt), want, atol=1e-6, rtol=1e-4)


def test_categorical_targets_of_the_wrong_shape_are_refused_on_every_path(dev):
    y_true = np.array([[0], [1], [2]])
    for loss in (losses.CategoricalCrossentropy(from_logits=True), losses.CategoricalCrossentropy()):
        with pytest.raises(ValueError, match="must have the same shape"):
            loss(y_true, CCE_LOGITS)
        with pytest.raises(ValueError, match="must have the same shape"):
            loss.from_logits_loss(y_true, CCE_LOGITS)
    with pytest.raises(ValueError, match="same shape up until the last dimension"):
        losses.SparseCategoricalCrossentropy(from_logits=True)(np.eye(3), CCE_LOGITS)


def test_earlier_saved_loss_configs_still_load():
    for old in ({"class": "CategoricalCrossentropy", "name": "categorical_crossentropy", "from_logits": False},
                {"class": "MeanSquaredError", "name": "mse", "from_logits": False},
                {"class": "SparseCategoricalCrossentropy", "name": "scce", "from_logits": True}):
        loss = losses.deserialize(old)
        assert type(loss).__name__ == old["class"] and loss.name == old["name"]
        assert loss.from_logits is old["from_logits"] and loss.reduction == "sum_over_batch_size"


def test_a_function_loss_may_return_a_python_number(dev):
    loss = losses.get(lambda y_true, y_pred: 0.25)
    assert float(loss(np.zeros((2, 3)), np.ones((2, 3)))) == 0.25


@pytest.mark.parametrize("make", [losses.MeanSquaredError, losses.MeanAbsoluteError, losses.BinaryCrossentropy,
                                  losses.CategoricalCrossentropy])
def test_mean_reduction_is_sum_over_batch_size(dev, make):
    """Keras' loss.py treats 'mean' as 'sum_over_batch_size'."""
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
    w = np.array([0.3, 1.7])
    allclose(make(reduction="mean")(y, p, sample_weight=w), make()(y, p, sample_weight=w))
    assert make().reduction == "sum_over_batch_size"
