"""The ``subpath`` operator: a file path that stays under a root directory.

Two readers are in play: a server that percent-decodes once before it opens the path,
and one that opens the text as given (``open()`` decodes nothing). A value is allowed
only if it stays under the root for **both**. Denied outright: an encoded ``/``, ``\\``
or NUL (``%2f %5c %00``, any case: the decoded and the raw text would then have other
segments, so ``R/a%2fb/../../x`` is ``R/x`` decoded but ``dirname(R)/x`` raw), a path
still holding ``%XX`` after one decode (double encoding), NUL, backslash (a separator on
Windows and to some frameworks), any control character, a relative path, invalid UTF-8,
and ``..`` climbing above ``/``. Each reading is normalized as a POSIX filesystem would
(collapse ``//``, drop ``.``, resolve ``..``) and must equal the root or lie below it at
a ``/`` boundary (``/srv/build`` allows ``/srv/build/x`` but not ``/srv/buildx``).
Symlinks are out of reach of an offline check: a backend that follows them must resolve
the path itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from ._operand import OperandError

__all__ = [
    "MAX_PATH",
    "compile_subpath",
    "normalize_subpath",
    "subpath_readings",
    "subpath_root",
    "within",
]

MAX_PATH = 4096
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_ENCODED_SEPARATOR = re.compile(r"%(?:2[Ff]|5[Cc]|00)")


def _resolve(path: str) -> str | None:
    """``path`` (absolute) with ``//`` collapsed, ``.`` dropped and ``..`` resolved;
    None if a ``..`` climbs above ``/``."""
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


def subpath_readings(value: object) -> tuple[str, str] | None:
    """The normalized path ``value`` names once percent-decoded, and as given (raw);
    None if it is denied outright. Equal unless the value holds ``%XX``."""
    if type(value) is not str or len(value) > MAX_PATH:
        return None
    path = value
    if "%" in path:
        if _ENCODED_SEPARATOR.search(path):
            return None  # the two readings would split the path into other segments
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
    if path is value:
        if "/." not in path and "//" not in path and not path.endswith("/"):
            return path, path  # no '%' and already normalized: the common case
        decoded = _resolve(path)
        return None if decoded is None else (decoded, decoded)
    decoded = _resolve(path)
    if decoded is None:
        return None
    # The raw text has the same '/' (no encoded separator) and adds only '%' and hex
    # digits to the decoded text's characters, so the checks above hold for it too;
    # its segments are other names ("%2e%2e" is a name here, ".." decoded).
    raw = _resolve(value)
    return None if raw is None else (decoded, raw)


def normalize_subpath(value: object) -> str | None:
    """The normalized absolute path ``value`` names once percent-decoded, or None if
    it is denied outright (the raw reading may still leave the root: see
    :func:`subpath_readings`)."""
    readings = subpath_readings(value)
    return None if readings is None else readings[0]


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
        readings = subpath_readings(v)
        if readings is None:
            return False
        decoded, raw = readings
        return (decoded == root or decoded.startswith(below)) and (
            raw is decoded or raw == root or raw.startswith(below)
        )

    return holds
