"""The ``subpath`` operator: a file path that stays under a root directory.

The value is read the way a server that percent-decodes once and then resolves the
path on a POSIX filesystem would: decode ``%XX`` once (UTF-8), then collapse ``//``,
drop ``.``, resolve ``..``. Denied outright: a path still holding ``%XX`` after the
decode (double encoding: a second decoder further on would see other text), NUL,
backslash (a separator on Windows and to some frameworks), any control character,
a relative path, invalid UTF-8, and ``..`` climbing above ``/``. The result is allowed
when it equals the root or lies below it at a ``/`` boundary (``/srv/build`` allows
``/srv/build/x`` but not ``/srv/buildx``). Symlinks are out of reach of an offline
check: a backend that follows them must resolve the path itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from ._operand import OperandError

__all__ = ["MAX_PATH", "compile_subpath", "normalize_subpath", "subpath_root", "within"]

MAX_PATH = 4096
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")


def normalize_subpath(value: object) -> str | None:
    """The normalized absolute path ``value`` names, or None if it is denied outright."""
    if type(value) is not str or len(value) > MAX_PATH:
        return None
    path = value
    if "%" in path:
        try:
            path = unquote_to_bytes(path).decode("utf-8")
        except UnicodeError:  # a lone surrogate, or bytes that are not UTF-8
            return None
        if _ENCODED.search(path):
            return None
    if not path.startswith("/"):
        return None
    if not (path.isascii() and path.isprintable() and "\\" not in path) and _UNSAFE.search(path):
        return None  # (the ASCII test first: C-speed, no regex call in the common case)
    if "/." not in path and "//" not in path and not path.endswith("/"):
        return path  # already normalized: the common case
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not out:
                return None  # climbs above "/"
            out.pop()
        else:
            out.append(seg)
    return "/" + "/".join(out)


def within(path: str, root: str) -> bool:
    """``path`` (normalized) is ``root`` or below it at a segment boundary."""
    return root in ("/", path) or path.startswith(root + "/")


def subpath_root(operand: Any) -> str:
    """Validate a ``subpath`` root: absolute, normalized, no trailing '/' (but "/")."""
    if type(operand) is not str or len(operand) > MAX_PATH:
        raise OperandError(f"must be a string of at most {MAX_PATH} characters")
    if "%" in operand or normalize_subpath(operand) != operand:
        raise OperandError(
            "must be an absolute normalized path without '%', '.', '..', '//' or a "
            "trailing '/' (e.g. '/srv/build')"
        )
    return operand


def compile_subpath(operand: Any) -> Callable[[object], bool]:
    root = subpath_root(operand)
    below = root.rstrip("/") + "/"  # "/" for the root "/": every absolute path

    def holds(v: object) -> bool:
        path = normalize_subpath(v)
        return path is not None and (path == root or path.startswith(below))

    return holds
