"""The tape: structure of results, fan-out, persistence, no_grad, deep graphs."""
import numpy as np
import pytest

import gpunet
from gpunet import ops


def test_gradient_structure_follows_sources(dev):
    a = gpunet.tensor([1.0, 2.0], device=dev, requires_grad=True)
    b = gpunet.tensor([3.0], device=dev, requires_grad=True)
    with gpunet.GradientTape(persistent=True) as tape:
        y = (a * b).sum()
    ga = tape.gradient(y, a)
    assert isinstance(ga, gpunet.Tensor) and ga.device == dev
    lst = tape.gradient(y, [a, b])
    tup = tape.gradient(y, (a, b))
    dct = tape.gradient(y, {"a": a, "b": b})
    assert isinstance(lst, list) and isinstance(tup, tuple) and set(dct) == {"a", "b"}
    np.testing.assert_allclose(dct["a"].numpy(), [3, 3])
    np.testing.assert_allclose(tup[1].numpy(), [3])


def test_fan_out_accumulates(dev):
    x = gpunet.tensor(2.0, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = x * x + x * 3 + ops.exp(x)   # x used four times
    np.testing.assert_allclose(tape.gradient(y, x).item(), 2 * 2 + 3 + np.exp(2), rtol=1e-6)


def test_watch_tracks_plain_tensors(dev):
    x = gpunet.tensor([1.0, -1.0], device=dev)
    with gpunet.GradientTape() as tape:
        tape.watch(x)
        y = (x ** 3).sum()
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [3, 3])


def test_untracked_inputs_record_nothing(dev):
    x = gpunet.tensor([1.0], device=dev)
    with gpunet.GradientTape() as tape:
        y = x * 2
    assert tape._records == []
    assert tape.gradient(y, x) is None
    gpunet.tensor([1.0], device=dev, requires_grad=True) * 2   # outside the tape: nothing recorded
    assert tape._records == []


def test_unconnected_zero(dev):
    a = gpunet.tensor([1.0], device=dev, requires_grad=True)
    b = gpunet.tensor([1.0, 2.0], device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = a * 2
    ga, gb = tape.gradient(y, [a, b], unconnected_gradients="zero")
    np.testing.assert_array_equal(gb.numpy(), [0, 0])


def test_non_persistent_tape_is_released(dev):
    x = gpunet.tensor(1.0, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = x * x
    tape.gradient(y, x)
    assert tape._records == []
    with pytest.raises(RuntimeError, match="persistent=True"):
        tape.gradient(y, x)


def test_persistent_tape_allows_several_gradients(dev):
    x = gpunet.tensor(3.0, device=dev)
    with gpunet.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = x * x
        z = y * y
    assert tape.gradient(y, x).item() == 6.0
    assert tape.gradient(z, x).item() == 108.0
    assert tape.gradient(z, y).item() == 18.0   # an intermediate as a source
    assert tape.gradient(z, [x, y])[0].item() == 108.0


def test_no_grad_turns_recording_off(dev):
    w = gpunet.tensor([1.0], device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        assert gpunet.is_recording()
        with gpunet.no_grad():
            assert not gpunet.is_recording()
            y = w * 2
        z = w * 3
        assert len(tape._records) == 1
        total = z + y
    assert tape.gradient(total, w).item() == 3.0


def test_no_tape_no_recording(dev):
    w = gpunet.tensor([1.0], device=dev, requires_grad=True)
    assert not gpunet.is_recording()
    y = w * 2   # outside any tape: nothing kept
    assert y.requires_grad is False


def test_non_scalar_target_sums_or_uses_output_gradients(dev):
    x = gpunet.tensor([1.0, 2.0], device=dev, requires_grad=True)
    with gpunet.GradientTape(persistent=True) as tape:
        y = x * x
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [2, 4])
    np.testing.assert_allclose(tape.gradient(y, x, output_gradients=np.array([1.0, 0.5])).numpy(), [2, 2])
    with pytest.raises(ValueError, match="output_gradients has shape"):
        tape.gradient(y, x, output_gradients=np.ones(3))


def test_deep_chain_without_recursion(dev):
    """100,000 recorded ops: the backward walk is a loop, not recursion."""
    x = gpunet.tensor(1.0, device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = x
        for _ in range(50_000):
            y = y * 1.0
            y = y + 0.0
    assert len(tape._records) == 100_000
    assert tape.gradient(y, x).item() == 1.0


def test_nested_tapes_record_independently(dev):
    x = gpunet.tensor(2.0, device=dev)
    with gpunet.GradientTape() as outer:
        outer.watch(x)
        with gpunet.GradientTape() as inner:
            y = x * x
        z = x * 5
        total = y + z
    assert inner.gradient(y, x) is None       # inner never watched x
    assert outer.gradient(total, x).item() == 9.0


def test_gradient_of_float64_source_keeps_dtype(dev):
    x = gpunet.tensor([1.0], dtype="float64", device=dev, requires_grad=True)
    with gpunet.GradientTape() as tape:
        y = (x * 2).sum()
    assert tape.gradient(y, x).dtype == np.float64


def test_requires_grad_on_int_is_refused(dev):
    with pytest.raises(TypeError, match="floating-point"):
        gpunet.tensor([1, 2], device=dev, requires_grad=True)
