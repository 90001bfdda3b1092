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
import math
import re
from typing import Any

__all__ = [
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "split_compact",
    "strict_json_loads",
]

_PAD = (b"", b"", b"==", b"=")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
# The low bits of the last character that an unpadded segment of length % 4 == 2 / 3
# does not use; canonical encodings have them zero.
_UNUSED_BITS = (0, 0, 0x0F, 0x03)


def split_compact(value: object, max_bytes: int, what: str) -> tuple[str, str, str]:
    """The three segments of a JWS compact string (``what``: "token", "proof"), after the
    checks every such string gets first; ``ValueError`` names what is wrong."""
    if type(value) is not str:
        raise ValueError(f"{what} must be a string")
    if len(value) > max_bytes:
        raise ValueError(f"{what} longer than {max_bytes} bytes")
    if not value.isascii():
        raise ValueError(f"{what} contains non-ASCII characters")
    parts = value.split(".")
    if len(parts) != 3:
        raise ValueError(f"{what} has {len(parts)} segments, expected 3")
    return parts[0], parts[1], parts[2]


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded, canonical base64url; anything else raises ``ValueError``.

    Rejects padding, the standard alphabet's ``+`` and ``/``, whitespace and any other
    character, a length that no encoding has, and non-zero unused trailing bits.
    """
    rest = len(segment) % 4
    if rest == 1:
        raise ValueError("bad base64url length")
    if "=" in segment or "+" in segment or "/" in segment:
        raise ValueError("not unpadded base64url")
    try:
        raw = binascii.a2b_base64(
            segment.encode("ascii").translate(_TO_STANDARD) + _PAD[rest], strict_mode=True
        )
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("bad base64url") from exc
    if rest and _VALUE[segment[-1]] & _UNUSED_BITS[rest]:
        raise ValueError("non-canonical base64url (trailing bits)")
    return raw


class _Rejected(ValueError):
    """Raised by the decoder hooks: a reason of ours, passed through as is."""


# A real \u escape has an even run of backslashes before it (``\\ud800`` is a literal
# backslash followed by the text "ud800").
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u([dD][89a-fA-F][0-9a-fA-F]{2})")


def _has_lone_surrogate(text: str) -> bool:
    """True if a ``\\uD800``-``\\uDFFF`` escape is not half of a proper pair."""
    escapes = [(m.end() - 6, int(m.group(1), 16)) for m in _SURROGATE_ESCAPE.finditer(text)]
    i = 0
    while i < len(escapes):
        pos, unit = escapes[i]
        if 0xD800 <= unit <= 0xDBFF and i + 1 < len(escapes):
            next_pos, next_unit = escapes[i + 1]
            if next_pos == pos + 6 and 0xDC00 <= next_unit <= 0xDFFF:
                i += 2
                continue
        return True
    return False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise _Rejected(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    """A literal too large for a double (``1e999``) would otherwise become ``inf``."""
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"non-finite number {text[:40]}")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float
)


def strict_json_loads(data: bytes | str) -> Any:
    """``json.loads`` that rejects duplicate keys, non-finite numbers and runaway nesting.

    Non-finite: the ``NaN``/``Infinity`` constants, and also float literals that
    overflow a double (``1e999``), which ``json`` would turn into ``inf``.

    Bytes must be UTF-8 (RFC 8259 §8.1): ``json.loads`` itself would also take
    UTF-16/UTF-32, a BOM, and encoded surrogates (it decodes with ``surrogatepass``).
    One decoder is reused: ``json.loads`` with hooks builds a new one per call.
    """
    try:
        if isinstance(data, bytes | bytearray):
            data = bytes(data).decode("utf-8")  # strict: no surrogates; a BOM fails below
        value = _DECODER.decode(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError("JSON is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}") from exc
    except _Rejected as exc:
        raise ValueError(str(exc)) from None
    except ValueError as exc:
        # int() refusing a literal of thousands of digits (CPython's int_max_str_digits)
        raise ValueError("invalid JSON: number literal too long") from exc
    if "\\u" in data and _has_lone_surrogate(data):
        # A "\ud800" escape decodes to a lone surrogate: not Unicode text. Other
        # languages' parsers replace it or fail, so accepting it would let two
        # verifiers read one token differently.
        raise ValueError("invalid JSON: lone surrogate escape")
    return value


def canonical_json(value: Any) -> bytes:
    """Deterministic compact JSON (sorted keys) for hashing and thumbprints."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
