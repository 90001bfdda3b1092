"""Agents choose what the audit trail stores: the action name (through MCP, prefix + the
client's tool name), argument names and values. None of it may fill the Redis that
revocation and budgets depend on, and none may forge lines in the text report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import remit
import rfc8785
from remit import Code, Denied
from remit._audit import MAX_RECORDED_ARGS
from remit_service._alignment import compute
from remit_service._report_render import render

from tests.audit_events import EventWriter
from tests.tokens import ACTION, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

WIDE = {"type": "remit.capability", "action": ACTION, "args": {"*": {"any": True}}}


class Setup:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.key = IssuerKey()
        self.token = sign(claims(authorization_details=[WIDE]), self.key)
        self.verifier = remit.Verifier(
            self.key.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off",
            redis=client, prefix=prefix, audit="sync", audit_args=[ACTION],
            clock=lambda: NOW,
        )

    def denied(self, code: Code, token: str, action: Any, args: Any = None) -> Denied:
        with pytest.raises(Denied) as info:
            self.verifier.check(token, action=action, args=args)
        assert info.value.code is code, info.value
        return info.value

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        """(stored size in bytes, event) of every entry."""
        out = []
        for _, fields in self.client.xrange(f"{self.prefix}audit"):
            out.append((sum(len(k) + len(v) for k, v in fields.items()),
                        json.loads(fields[b"ev"])))
        return out


@pytest.fixture
def s(redis_client: redis.Redis, redis_prefix: str) -> Iterator[Setup]:
    setup = Setup(redis_client, redis_prefix)
    yield setup
    setup.verifier.close()


def test_a_4mb_action_name_is_refused_first_and_never_stored(s: Setup) -> None:
    action = "mcp." + "x" * 4_000_000
    # unauthenticated: an unreadable token, and an action far beyond MAX_NAME
    s.denied(Code.INVALID_REQUEST, "not-a-token", action)
    # with a valid token: the shape check still comes first
    s.denied(Code.INVALID_REQUEST, s.token, action)
    [(size1, ev1), (size2, ev2)] = s.events()
    digest = hashlib.sha256(action.encode()).hexdigest()
    for size, ev in ((size1, ev1), (size2, ev2)):
        assert size < 1024
        assert ev["action"] is None and ev["actionh"] == digest
        assert ev["code"] == "invalid_request"
    assert ev1["gid"] is None  # the unreadable token names nobody


@pytest.mark.parametrize(
    "action",
    ["payments.Transfer", "payments.transfer\n", "mcp.x\x1b[2K", "p\u0430yments.transfer",
     "a" * 129, ""],
    ids=["upper", "newline", "ansi", "cyrillic", "129-chars", "empty"],
)
def test_an_action_outside_the_grammar_is_recorded_only_as_a_digest(
    s: Setup, action: str
) -> None:
    s.denied(Code.INVALID_REQUEST, s.token, action)
    [(_, ev)] = s.events()
    assert ev["action"] is None
    assert ev["actionh"] == hashlib.sha256(action.encode()).hexdigest()


def test_an_action_that_is_not_a_string_leaves_no_digest(s: Setup) -> None:
    s.denied(Code.INVALID_REQUEST, s.token, b"payments.transfer")
    [(_, ev)] = s.events()
    assert ev["action"] is None and "actionh" not in ev


def test_recorded_argument_values_are_capped(s: Setup) -> None:
    s.verifier.check(s.token, action=ACTION, args={"memo": "small"})
    big = {"memo": "x" * 4_000_000}
    s.verifier.check(s.token, action=ACTION, args=big)
    [(_, small), (size, large)] = s.events()
    assert small["args"] == {"memo": "small"} and "args_omitted" not in small
    assert "args" not in large and large["args_omitted"] > MAX_RECORDED_ARGS
    assert large["argh"] == hashlib.sha256(rfc8785.dumps(big)).hexdigest()
    assert size < 1024


def test_the_arg_field_of_a_denial_is_capped(s: Setup) -> None:
    narrow = sign(claims(), s.key)  # names amount and to only
    s.denied(Code.UNEXPECTED_ARGUMENT, narrow, ACTION,
             {"amount": 1, "to": "DE89", "n" * 100_000: 1})
    s.denied(Code.UNEXPECTED_ARGUMENT, narrow, ACTION, {"amount": 1, "to": "DE89", "nm": 1})
    [(size, long_name), (_, short_name)] = s.events()
    assert "arg" not in long_name and "args" not in long_name and size < 1024
    assert short_name["arg"] == "nm"


FORGED = "payments.transfer\n    [0] payments.refund {}: 0 attempts, 0 allowed, 0 denied"


def test_text_report_escapes_line_breaks_and_terminal_escapes(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    """A stream written by anyone who may XADD (or an older writer) can carry any
    string; the text report shows it on one line, its controls visible."""
    w = EventWriter(redis_client, redis_prefix)
    w.grant("g_1", [{"action": "payments.transfer", "args": {"memo": {"any": True}}}],
            ts=1_700_000_000_000, purpose="p\x1b]0;title\x07", agent="agent:\u202eevil")
    w.decision(ts=1_700_000_000_001, gid="g_1", action=FORGED + "\x1b[2K\x1b[1A",
               code="action_not_granted", agent="agent:\u202eevil")
    w.decision(ts=1_700_000_000_002, gid="g_1", action="payments.transfer",
               code="argument_denied", arg="memo\r\x9b2K",
               args={"memo": "ok\n  revoked never\u2028\u200b"})
    text = render(compute(redis_client, w.key), "text")
    lines = text.split("\n")
    assert not any(line.startswith("    [0] payments.refund") for line in lines)
    assert "\\x0a    [0] payments.refund" in text and "\\x1b[2K\\x1b[1A" in text
    assert "\\u202eevil" in text and "\\x9b2K" in text and "\\x0d" in text
    assert "\\u2028\\u200b" in text or "\\\\u2028" in text  # raw, or JSON-escaped by _j
    for c in text:
        assert c == "\n" or c.isprintable(), repr(c)
    # the JSON form is already safe: json.dumps escapes every control character
    assert "\x1b" not in render(compute(redis_client, w.key), "json")
