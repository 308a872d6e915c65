"""Datasets in Keras' layout: ``(x_train, y_train), (x_test, y_test)`` as host uint8 arrays.

* :mod:`gpunet.datasets.mnist` — ``load_data()`` (60,000 + 10,000 digits) and
  ``load_sample()`` (10,000 real digits shipped inside gpunet, no network needed).
* :mod:`gpunet.datasets.fashion_mnist` — ``load_data()``, also found in Debian's
  ``dataset-fashion-mnist`` package.

Where a loader looks, in order: an explicit ``path``; the cache folder
(``$GPUNET_DATA``, else ``$XDG_CACHE_HOME/gpunet``, else ``~/.cache/gpunet``);
system folders; then a download from known mirrors, verified and written
atomically into the cache.

Every dataset file is read as untrusted: an ``.npz`` through :class:`gpunet.fileio.SafeNpz` (each
array's header and its size in the zip directory checked against the dataset's shapes, uint8, before
anything is decompressed; no pickles), an IDX file's header checked against the dataset's shape and
against the file's size before anything is allocated, a gzip body decompressed in bounded chunks and
never past the size the header may declare. A file that fails raises
:class:`~gpunet.errors.DatasetFormatError` (a ``ValueError``; :class:`IDXFormatError` for IDX files)
naming the file and the problem; a corrupt cached file is deleted and downloaded again.
"""
from ..errors import DatasetFormatError
from ._loader import DatasetUnavailableError, cache_dir
from .idx import IDXFormatError, read_idx, write_idx

__all__ = ["DatasetFormatError", "DatasetUnavailableError", "IDXFormatError", "cache_dir", "read_idx", "write_idx",
           "mnist", "fashion_mnist"]


def __getattr__(name):
    if name in ("mnist", "fashion_mnist"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'gpunet.datasets' has no attribute {name!r}")
