"""Strict base64url and strict JSON (client/remit/_encoding.py)."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from remit._encoding import b64url_decode, b64url_encode, canonical_json, strict_json_loads

# --- base64url -----------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("", b""),
        ("AA", b"\x00"),
        ("AAA", b"\x00\x00"),
        ("AAAA", b"\x00\x00\x00"),
        ("-_8", b"\xfb\xff"),
    ],
)
def test_b64url_known_values(text: str, data: bytes) -> None:
    assert b64url_decode(text) == data
    assert b64url_encode(data) == text


@pytest.mark.parametrize(
    "text",
    [
        "AA==",  # padding
        "AAA=",
        "AA=",
        "=",
        "====",
        "AAAA====",
        "+_8",  # standard alphabet
        "-/8",
        "+/+/",
        "AA AA",  # whitespace anywhere
        " AAAA",
        "AAAA ",
        "AAAA\n",
        "AA\tAA",
        "AA\r\nAA",
        "AB",  # non-canonical trailing bits: 1 byte uses 8 of 12 bits
        "AAB",  # 2 bytes use 16 of 18 bits
        "-_9",
        "A",  # length % 4 == 1 can't encode whole bytes
        "AAAAA",
        "AAAAAAAAA",
        "AA.A",  # junk characters the standard decoder skips
        "AA!A",
        "AA\x00A",
        "AAé",  # non-ASCII
        "\uff21\uff21\uff21\uff21",  # fullwidth letters
        "AA%3D",
    ],
)
def test_b64url_rejects_non_canonical(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


@given(st.binary(min_size=1, max_size=60))
def test_b64url_one_spelling_per_value(data: bytes) -> None:
    """Flipping the unused trailing bits gives a string the decoder must refuse."""
    text = b64url_encode(data)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}.get(len(text) % 4, 0)  # bits of the last char that carry nothing
    if unused:
        last = alphabet.index(text[-1])
        for flip in range(1, 1 << unused):
            with pytest.raises(ValueError):
                b64url_decode(text[:-1] + alphabet[last ^ flip])
    padded = base64.urlsafe_b64encode(data).decode()
    if padded != text:
        with pytest.raises(ValueError):
            b64url_decode(padded)


def test_b64url_random_bytes_are_rejected_or_canonical() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ ."
    for _ in range(2000):
        text = "".join(alphabet[b % len(alphabet)] for b in os.urandom(os.urandom(1)[0] % 12))
        try:
            raw = b64url_decode(text)
        except ValueError:
            continue
        assert b64url_encode(raw) == text


# --- strict JSON ---------------------------------------------------------------------


def test_strict_json_accepts_ordinary_json() -> None:
    doc = {"a": [1, 2.5, "x", None, True, False, {"b": {}}], "ü": "日本"}
    for data in (json.dumps(doc), json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False)):
        assert strict_json_loads(data) == doc
    assert strict_json_loads(json.dumps(doc, ensure_ascii=False).encode("utf-8")) == doc
    assert strict_json_loads(bytearray(b'{"a": 1}')) == {"a": 1}
    assert strict_json_loads(b"123456789012345678901234567890") == 123456789012345678901234567890


@pytest.mark.parametrize(
    "data",
    [
        '{"a": 1, "a": 1}',
        '{"a": 1, "a": 2}',
        '{"a": 1, "b": 2, "a": 3}',
        '{"x": {"a": 1, "a": 2}}',
        '[{"a": {"b": [{"c": 1, "c": 1}]}}]',
        '{"a": [], "b": {"deep": {"k": 1, "k": {}}}}',
        '{"\\u0061": 1, "a": 2}',  # same key, different spelling
        '{"a\\/": 1, "a/": 2}',
        '{"": 1, "": 2}',
    ],
)
def test_strict_json_rejects_duplicate_keys_at_any_depth(data: str) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json_loads(data)
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json_loads(data.encode())


@pytest.mark.parametrize(
    "data",
    ["NaN", "Infinity", "-Infinity", "[NaN]", '{"a": Infinity}', '{"a": [1, {"b": -Infinity}]}'],
)
def test_strict_json_rejects_non_finite_numbers(data: str) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        strict_json_loads(data)


@pytest.mark.parametrize(
    "data",
    ["nan", "inf", "-inf", "1e999", "-1e999", "[1e400]"],
)
def test_strict_json_rejects_overflowing_and_lowercase_constants(data: str) -> None:
    # "1e999" parses to float('inf') in Python's json: a non-finite value by another door.
    try:
        value = strict_json_loads(data)
    except ValueError:
        return
    pytest.fail(f"{data!r} decoded to {value!r}")


@pytest.mark.parametrize(
    "data",
    ["[" * 100_000, "{\"a\":" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":[' * 50_000],
)
def test_strict_json_deep_nesting_is_value_error(data: str) -> None:
    with pytest.raises(ValueError) as info:
        strict_json_loads(data)
    assert not isinstance(info.value, RecursionError)
    with pytest.raises(ValueError):
        strict_json_loads(data.encode())


@pytest.mark.parametrize(
    "data",
    [
        b'"\xff"',
        b'{"a": "\xc3"}',  # truncated sequence
        b'"\xc0\xaf"',  # overlong encoding of '/'
        b'"\xe0\x80\xaf"',  # overlong, 3 bytes
        b'"\xed\xa0\x80"',  # UTF-8-encoded surrogate (CESU-8): json.loads takes it
        b'"\xed\xa0\xbd\xed\xb8\x80"',  # surrogate pair in CESU-8
        b'"\xf4\x90\x80\x80"',  # above U+10FFFF
        b'"\x80"',  # lone continuation byte
        b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
        '{"a": 1}'.encode("utf-16-le"),  # json.loads detects UTF-16/32 from NUL patterns
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-16-be"),
        '{"a": 1}'.encode("utf-32"),
        '{"a": 1}'.encode("utf-32-le"),
    ],
)
def test_strict_json_rejects_anything_but_utf8(data: bytes) -> None:
    with pytest.raises(ValueError):
        strict_json_loads(data)


@pytest.mark.parametrize(
    "data",
    ["", "   ", "{", '{"a" 1}', "[1,]", '{"a": 1,}', "'a'", "01", "1 2", '"\x01"', "\ufeff{}"],
)
def test_strict_json_rejects_malformed(data: str) -> None:
    with pytest.raises(ValueError):
        strict_json_loads(data)


def test_strict_json_errors_are_plain_value_errors() -> None:
    """Callers catch ValueError; nothing else (UnicodeDecodeError included) should leak."""
    for data in (b'"\xff"', "[" * 100_000, '{"a":1,"a":2}', "NaN", "{"):
        with pytest.raises(ValueError) as info:
            strict_json_loads(data)
        assert type(info.value) is ValueError, type(info.value)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON)
def test_canonical_json_round_trips_through_strict_loads(value: object) -> None:
    encoded = canonical_json(value)
    assert strict_json_loads(encoded) == value
    assert canonical_json(strict_json_loads(encoded)) == encoded


@pytest.mark.parametrize(
    "text",
    [r'{"a":"\ud800"}', r'{"a":"\udc00"}', r'{"a":"\udc00\ud800"}', r'{"a":"\ud83d\\ude00"}',
     r'{"\ud800":1}', r'{"a":"\\\ud800"}'],
)
def test_lone_surrogate_escapes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        strict_json_loads(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(r'{"a":"\ud83d\ude00"}', {"a": "\U0001f600"}), (r'{"a":"\\ud800"}', {"a": "\\ud800"}),
     (r'{"a":"\u00e9"}', {"a": "\u00e9"})],
)
def test_surrogate_pairs_and_escaped_backslashes_are_fine(text: str, expected: object) -> None:
    assert strict_json_loads(text) == expected


def test_huge_integer_literal_is_a_clean_error() -> None:
    with pytest.raises(ValueError, match="number literal too long") as exc:
        strict_json_loads('{"a":' + "9" * 5000 + "}")
    assert "set_int_max_str_digits" not in str(exc.value)
