"""DLPack: gpunet tensors and NumPy / PyTorch arrays share memory without copies, both ways."""
import numpy as np
import pytest

import gpunet


def test_numpy_round_trip_shares_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = gpunet.from_dlpack(a)
    assert t.device == gpunet.device("cpu") and t.shape == (2, 3) and t.dtype == np.float32
    a[0, 0] = 42.0
    assert t.numpy()[0, 0] == 42.0
    back = np.from_dlpack(t)
    back[1, 2] = -1.0
    assert a[1, 2] == -1.0 and t.__dlpack_device__() == (1, 0)


def test_pytorch_round_trip_shares_memory_and_gradients_flow_in_gpunet():
    torch = pytest.importorskip("torch")
    x = torch.arange(4, dtype=torch.float32)
    t = gpunet.from_dlpack(x)
    x[1] = 10.0
    np.testing.assert_array_equal(t.numpy(), [0.0, 10.0, 2.0, 3.0])
    w = gpunet.tensor(np.ones(4, np.float32), requires_grad=True)
    with gpunet.GradientTape() as tape:
        loss = (t * w).sum()
    g = torch.from_dlpack(tape.gradient(loss, w))
    assert torch.equal(g, x)
    y = torch.from_dlpack(t)
    y[0] = -5.0
    assert t.numpy()[0] == -5.0


def test_from_dlpack_refuses_what_has_no_dlpack():
    with pytest.raises(TypeError, match="needs an object with __dlpack__"):
        gpunet.from_dlpack([1.0, 2.0])
