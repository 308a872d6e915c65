""":class:`CSVLogger`: stream the epoch logs to a CSV file."""
from __future__ import annotations

import collections.abc
import csv
import os

from .callback import Callback, FitLogs
from .file_checks import check_writable_folder


def _cell(value):
    """A CSV cell: strings and numbers as they are, a 1-D iterable as ``"[a, b, c]"``."""
    if isinstance(value, str):
        return value
    if isinstance(value, collections.abc.Iterable) and getattr(value, "ndim", None) != 0:
        return f'"[{", ".join(map(str, value))}]"'
    return value


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` (0-based) and every logged value.

    The columns are fixed by the first epoch's logs (names sorted; when there is no validation,
    ``val_`` columns of the same names are added, filled with ``NA``).

    Args:
        filename: the CSV file, e.g. ``'run/log.csv'``.
        separator: the field separator.
        append: True: append to an existing file (without repeating its header), e.g. when
            training continues; False: overwrite it.

    In ``fit(distributed=True)`` only rank 0 writes (every rank has the same logs).
    """

    logs_added = ()     # the names it adds to the epoch logs

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.writer = None
        self.keys = None
        self.append_header = True
        self.csv_file = None

    def check_before_fit(self, logs: FitLogs) -> None:
        """Before the first step: the file can be written (its folder exists and is writable, it is not a
        folder itself); OSError naming the fix. (As in Keras, the folder is not created.)"""
        if self._writes():
            check_writable_folder(self.filename, f"CSVLogger(filename={self.filename!r})", create=False)

    def _writes(self) -> bool:
        return (self.params or {}).get("rank", 0) == 0

    def on_train_begin(self, logs=None):
        if not self._writes():
            return
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename) as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "a"
        else:
            mode = "w"
        if self.csv_file and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = open(self.filename, mode, newline="")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        if self.csv_file is None or self.csv_file.closed:
            return
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(key.startswith("val_") for key in self.keys):
                self.keys.extend([f"val_{k}" for k in self.keys])
        if not self.writer:
            class Dialect(csv.excel):
                delimiter = self.sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys, dialect=Dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((key, _cell(logs.get(key, "NA"))) for key in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None
