"""Decision events are written out by hand for speed: they must equal the `rfc8785` package's
output for the same event object, whatever the strings and arguments (docs/audit.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from remit._audit import DecisionAudit, Who, _canonical_args, chain_hash
from remit_service._audit_read import parse_entry

text = st.text(max_size=12)  # every code point, incl. controls, astral and lone surrogates
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
value = st.recursive(
    scalar, lambda v: st.lists(v, max_size=3) | st.dictionaries(text, v, max_size=3), max_leaves=6
)
args = st.one_of(st.none(), st.dictionaries(text, value, max_size=5), st.just([1, 2]))


def _reference_args(snap: Any) -> bytes | None:
    if snap is None:
        return None
    try:
        return rfc8785.dumps(snap if isinstance(snap, dict) else json.loads(snap))
    except Exception:
        return b""


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(text, scalar, max_size=6))
def test_flat_arguments_canonicalize_like_rfc8785(snap: dict[str, Any]) -> None:
    assert _canonical_args(snap) == _reference_args(snap)


@settings(max_examples=150, deadline=None)
@given(
    action=st.one_of(text, st.none(), st.integers()),
    call_args=args,
    who=st.one_of(st.none(), st.tuples(text, text, text, text, st.lists(text, max_size=2))),
    allowed=st.booleans(),
    arg=st.one_of(st.none(), text),
    audience=text.filter(lambda a: a != ""),
    record_values=st.booleans(),
)
def test_decision_event_is_the_rfc8785_form_of_the_event_object(
    action: Any,
    call_args: Any,
    who: tuple[str, str, str, str, list[str]] | None,
    allowed: bool,
    arg: str | None,
    audience: str,
    record_values: bool,
) -> None:
    audit = DecisionAudit(
        None,
        "s",
        mode="sync",
        audience=audience,
        record_args=[action] if record_values and isinstance(action, str) and action else (),
    )
    claims = Who(who[0], who[1], who[2], who[3], tuple(who[4])) if who else None
    # What record() snapshots (a flat copy, or JSON text for nested values), then the event.
    snap: Any
    if call_args is None:
        snap = {}
    elif not isinstance(call_args, dict):
        snap = None
    elif all(type(v) in (str, int, float, bool, type(None)) for v in call_args.values()):
        snap = dict(call_args)
    else:
        snap = json.dumps(call_args, ensure_ascii=False)
    ev = audit._event((1767225600123, allowed, "ok", claims, action, snap, arg))
    assert audit._event((1767225600123, allowed, "ok", claims, action, snap, arg)) == ev  # cached
    event = json.loads(ev)
    # canonical (ints read as floats: an argument 2.0**53 is written "9007199254740992",
    # which rfc8785 takes back as a float but refuses as an int)
    assert ev == rfc8785.dumps(json.loads(ev, parse_int=float))
    pre = _reference_args(snap)
    assert event["argh"] == (hashlib.sha256(pre).hexdigest() if pre else None)
    assert event["allowed"] is allowed and event["ts"] == 1767225600123
    assert event["type"] == "decision" and event["code"] == "ok"
    assert ("args" in event) == bool(pre and record_values and isinstance(action, str) and action)
    if claims is None:
        assert [event[k] for k in ("gid", "jti", "agent", "sub")] == [None] * 4
    if isinstance(action, str) and not any("\ud800" <= c <= "\udfff" for c in action):
        assert event["action"] == action  # verbatim (lone surrogates become U+FFFD)
    elif not isinstance(action, str):
        assert event["action"] is None


def test_chain_hash_is_sha256_of_previous_hash_lf_event() -> None:
    first = chain_hash("", b'{"a":1}')
    assert first == hashlib.sha256(b'\n{"a":1}').hexdigest()
    assert chain_hash(first, b"{}") == hashlib.sha256(first.encode() + b"\n{}").hexdigest()


VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "audit_chain.json").read_text(encoding="utf-8")
)


def test_audit_chain_vectors() -> None:
    """tests/vectors/audit_chain.json: the exact fields a writer must produce."""
    prev = ""
    for case in VECTORS["cases"]:
        fields, event = case["fields"], case["event"]
        ev = fields["ev"].encode("utf-8")
        assert ev == rfc8785.dumps(event), case["name"]
        assert fields["h"] == chain_hash(prev, ev), case["name"]
        entry = parse_entry("1-1", {k.encode(): v.encode() for k, v in fields.items()})
        assert not isinstance(entry, str) and entry.event == event
        prev = fields["h"]
        if event["type"] != "decision":
            continue
        audit = DecisionAudit(
            None,
            "s",
            mode="sync",
            audience=event["aud"],
            record_args=[event["action"]] if "args" in event else (),
        )
        who = Who(event["gid"], event["jti"], event["agent"], event["sub"], ())
        snap = event.get("args", {"amount": 50, "to": "DE89"})
        item = (
            event["ts"],
            event["allowed"],
            event["code"],
            who,
            event["action"],
            snap,
            event.get("arg"),
        )
        assert audit._event(item) == ev, case["name"]
