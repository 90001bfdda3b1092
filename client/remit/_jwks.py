"""Load a JWKS from a dict, a file path or an http(s) URL into a :class:`KeySet`."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from typing import Any

from ._encoding import strict_json_loads
from ._errors import KeyLoadError
from ._keys import KeySet

__all__ = ["MAX_JWKS_BYTES", "load_jwks"]

MAX_JWKS_BYTES = 1024 * 1024


def _read_url(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            data: bytes = resp.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise KeyLoadError(f"cannot fetch JWKS from {url}: {exc}") from exc
    return data


def load_jwks(
    source: Mapping[str, Any] | str | os.PathLike[str], *, timeout: float = 5.0
) -> KeySet:
    """``source`` is a JWKS mapping, a path to a JWKS file, or an ``http(s)://`` URL."""
    if isinstance(source, Mapping):
        return KeySet.from_jwks(source)
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        data = _read_url(text, timeout)
    else:
        try:
            with open(text, "rb") as fh:
                data = fh.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise KeyLoadError(f"cannot read JWKS file {text}: {exc}") from exc
    if len(data) > MAX_JWKS_BYTES:
        raise KeyLoadError("JWKS larger than 1 MiB")
    try:
        doc = strict_json_loads(data)
    except ValueError as exc:
        raise KeyLoadError(f"JWKS is not valid JSON: {exc}") from exc
    return KeySet.from_jwks(doc)
