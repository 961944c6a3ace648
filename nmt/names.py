"""The one validator for names that become part of a path (a study, model, test set, pair, preset, run id),
and the path builder that keeps a result under its root.

A name is 1 to 100 characters of letters, digits, '.', '_', '+' and '-', starting with a letter or digit, with
no '..': no separator, no way up. It is checked where a file is read, whatever wrote it (a study file, a flag,
a committed JSON, a cache entry), and `under` checks the built path once more.
"""
from __future__ import annotations

import re
from pathlib import Path

from nmt.errors import DataError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


def is_name(value) -> bool:
    return isinstance(value, str) and bool(NAME.match(value)) and ".." not in value


def check_name(value, where: str) -> str:
    """`value` if it is a safe name, else a DataError naming `where` and the rule."""
    if not is_name(value):
        raise DataError(f"{where}: {value!r}: expected a name of 1-100 letters, digits, '.', '_', '+' and '-' "
                        f"(no '/' and no '..')")
    return value


def under(root, *parts) -> Path:
    """root / parts..., refused (DataError) unless it resolves to a path inside `root`."""
    root = Path(root)
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{path}: outside {root}")
    return path
