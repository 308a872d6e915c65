"""Checks of the files callbacks will write, made before ``fit``'s first step: a
:class:`~gpunet.callbacks.ModelCheckpoint` file-name template against the names ``fit`` will log,
and a folder that exists (or can be created) and can be written to.
"""
from __future__ import annotations

import os
import string

__all__ = ["TemplateFieldError", "template_fields", "format_sample", "check_writable_folder"]

SAMPLE_VALUE = 0.5        # what a logged value looks like to a template (logs hold Python floats)


class TemplateFieldError(KeyError, ValueError):
    """A file name template names a value ``fit`` will never log: a KeyError, as Keras raises when it
    fails to fill the name after an epoch, and a ValueError (a bad argument); shown as its message."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class _AnyName(dict):
    """A mapping that gives :data:`SAMPLE_VALUE` for any name it does not hold."""

    def __missing__(self, key):
        return SAMPLE_VALUE


def template_fields(template: str, owner: str) -> list[str]:
    """The names ``{name...}`` in ``template`` (the part before ``.``/``[``); ValueError for an
    unbalanced brace or a positional field (``'{}'``, ``'{0}'``), which no keyword can fill."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{owner}: the file name template {template!r} is malformed ({exc}); write braces "
                         "as {{ and }} or name a field, e.g. 'ckpt-{epoch:02d}.npz'") from None
    fields = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = field.split(".")[0].split("[")[0]
        if name == "" or name.isdigit():
            raise ValueError(f"{owner}: the file name template {template!r} has a positional field "
                             f"'{{{field}}}'; name what goes there, e.g. {{epoch}} or {{val_loss:.3f}}")
        fields.append(name)
    return fields


def format_sample(template: str, values: dict, owner: str) -> str:
    """``template`` filled with ``values`` (other names: a sample float); ValueError when a format spec
    does not suit the value (``'{loss:d}'``: logged values are floats)."""
    try:
        return string.Formatter().vformat(template, (), _AnyName(values))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{owner}: the file name template {template!r} cannot be filled: {exc}. {{epoch}} and "
                         "{batch} are integers, logged values floats, e.g. 'ckpt-{epoch:02d}-{val_loss:.3f}.npz'"
                         ) from None


def check_writable_folder(path: str, owner: str, create: bool) -> None:
    """OSError unless the file ``path`` can be written: it is not a folder, and its folder is a
    writable folder, or (``create``: it will be created) its nearest existing parent is one."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{owner}: {path!r} is a folder; give a file name inside it, e.g. "
                                f"{os.path.join(path, 'file')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if existing != folder and not create:
        raise FileNotFoundError(f"{owner}: the folder {folder!r} of {path!r} does not exist; create it first "
                                f"(os.makedirs({folder!r}, exist_ok=True))")
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{owner}: cannot write {path!r}: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{owner}: cannot write {path!r}: the folder {existing!r} is not writable; choose "
                              "another folder or change its permissions")
    if existing == folder and os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"{owner}: cannot write {path!r}: the file is read-only")
