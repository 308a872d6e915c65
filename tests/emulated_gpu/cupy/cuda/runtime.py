"""``cupy.cuda.runtime`` of the emulated GPUs."""
from __future__ import annotations

from .. import _state


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount() -> int:  # noqa: N802 (CuPy's names)
    return _state.COUNT


def getDevice() -> int:  # noqa: N802
    return _state.current_device()


def setDevice(index: int) -> None:  # noqa: N802
    _state.set_device(int(index))


def runtimeGetVersion() -> int:  # noqa: N802
    return 13000


def driverGetVersion() -> int:  # noqa: N802
    return 13000


def getDeviceProperties(index: int) -> dict:  # noqa: N802
    return {"name": f"Emulated GPU {index}".encode(), "major": 9, "minor": 0, "totalGlobalMem": 8 * 2 ** 30}
