"""Strict base64url and JSON decoding for untrusted token bytes.

Hand-written because the standard decoders are lenient in ways an attacker can
use: ``base64.urlsafe_b64decode`` skips stray characters and accepts padding and
non-canonical trailing bits (two spellings of one token, so two cache entries and
a malleable signature input); ``json.loads`` keeps the *last* of duplicate keys
(header/claim smuggling) and accepts ``NaN``/``Infinity``. Both functions here
reject all of that and raise ``ValueError`` with a short reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["b64url_decode", "b64url_encode", "canonical_json", "strict_json_loads"]

_PAD = ("", "", "==", "=")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded, canonical base64url; anything else raises ``ValueError``."""
    if len(segment) % 4 == 1:
        raise ValueError("bad base64url length")
    try:
        raw = base64.urlsafe_b64decode(segment + _PAD[len(segment) % 4])
    except (binascii.Error, ValueError) as exc:
        raise ValueError("bad base64url") from exc
    # Re-encoding is the cheapest complete canonicality check: it fails on padding,
    # '+' '/', whitespace, skipped junk and non-zero trailing bits alike.
    if b64url_encode(raw) != segment:
        raise ValueError("non-canonical base64url")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def strict_json_loads(data: bytes | str) -> Any:
    """``json.loads`` that rejects duplicate keys, NaN/Infinity and runaway nesting."""
    try:
        return json.loads(
            data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError("JSON is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}") from exc


def canonical_json(value: Any) -> bytes:
    """Deterministic compact JSON (sorted keys) for hashing and thumbprints."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
