"""A restricted unpickler for the `refer` annotation files (``refs(unc).p`` and friends).

Those files are plain lists of dicts, but ``pickle.load`` would run any code a tampered file
names. :func:`safe_load` admits only dict, list, tuple, set, str, bytes, int, float, bool and
None; any other global (a class, a function such as ``os.system``) is refused.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, BinaryIO


class UnsafePickleError(pickle.UnpicklingError):
    """Raised when a pickle asks for anything but plain containers and scalars."""


# Globals that old Python 2 pickles (the refer files were written by Python 2) may name for
# plain builtins; everything else is refused.
_ALLOWED_GLOBALS = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "str"), ("builtins", "bytes"), ("builtins", "int"), ("builtins", "float"),
    ("builtins", "bool"), ("__builtin__", "dict"), ("__builtin__", "list"),
    ("__builtin__", "tuple"), ("__builtin__", "set"), ("__builtin__", "unicode"),
    ("__builtin__", "str"), ("__builtin__", "int"), ("__builtin__", "long"),
    ("__builtin__", "float"), ("__builtin__", "bool"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only plain builtin types."""

    def __init__(self, file: BinaryIO, *, source: str = "<stream>"):
        # latin1 decodes Python 2 byte strings losslessly (refer pickles are Python 2 pickles).
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class("builtins", {"unicode": "str", "long": "int"}.get(name, name))
        raise UnsafePickleError(
            f"{self.source}: refused to load global '{module}.{name}'; only dict, list, tuple, str, "
            "int, float, bool and None are allowed in annotation pickles (the file may be tampered with)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in annotation pickles")


def safe_load(path_or_file: str | os.PathLike | BinaryIO | bytes) -> Any:
    """Load a pickle that may hold only plain containers and scalars; raise :class:`UnsafePickleError` otherwise."""
    if isinstance(path_or_file, (bytes, bytearray)):
        return RestrictedUnpickler(io.BytesIO(path_or_file), source="<bytes>").load()
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as f:
            return RestrictedUnpickler(f, source=os.fspath(path_or_file)).load()
    return RestrictedUnpickler(path_or_file).load()
