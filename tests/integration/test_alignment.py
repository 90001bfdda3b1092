"""The alignment report over a real Redis stream written per the audit schema v1."""

from __future__ import annotations

import json
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remit._constraints import parse_capability
from remit._narrowing import is_narrower
from remit_service._alignment import (
    MAX_BUCKETS,
    Alignment,
    Filters,
    GrantInfo,
    allows,
    compute,
    parse_since,
)

from tests.audit_events import EventWriter

IBAN = "DE89 3704 0044 0532 0130 00"
T0 = 1_700_000_000_000
TRANSFER = {
    "action": "payments.transfer",
    "args": {
        "amount": {"le": 100},
        "to": {"eq": IBAN},
        "currency": {"in": ["EUR", "USD", "GBP", "CHF"]},
        "memo": {"max_len": 200, "optional": True},
    },
}
EMAIL = {"action": "email.send", "args": {"to": {"prefix": "mailto:"}}}


@pytest.fixture
def writer(redis_client: redis.Redis, redis_prefix: str) -> EventWriter:
    return EventWriter(redis_client, redis_prefix)


def _scenario(w: EventWriter) -> None:
    w.grant("g_1", [TRANSFER, EMAIL], ts=T0)
    for i, amount in enumerate([10, 20, 30, 40, 50]):
        w.decision(
            ts=T0 + 1000 * i,
            gid="g_1",
            action="payments.transfer",
            args={"amount": amount, "to": IBAN, "currency": "EUR"},
        )
    w.decision(
        ts=T0 + 6000,
        gid="g_1",
        action="payments.transfer",
        args={"amount": 25, "to": IBAN, "currency": "USD", "memo": "rent"},
    )
    w.decision(
        ts=T0 + 7000,
        gid="g_1",
        action="payments.transfer",
        code="argument_denied",
        arg="amount",
        args={"amount": 5000, "to": IBAN, "currency": "EUR"},
    )
    w.decision(ts=T0 + 8000, gid="g_1", action="files.delete", code="action_not_granted")
    w.decision(ts=T0 + 9000, gid="g_1", action="files.delete", code="action_not_granted")
    w.decision(ts=T0 + 9500, gid="g_1", action="payments.transfer", code="replayed")
    w.decision(
        ts=T0 + 9600,
        gid=None,
        action="payments.transfer",
        code="malformed",
        agent=None,
        sub=None,
        jti=None,
    )


def test_report_per_grant(writer: EventWriter, redis_client: redis.Redis) -> None:
    _scenario(writer)
    report = compute(redis_client, writer.key)
    assert report["schema"] == "remit.alignment/v1"
    assert report["stream"]["skipped"] == 0
    (g,) = report["grants"]
    assert (g["attempts"], g["allowed"], g["denied"]) == (10, 6, 4)
    transfer, email = g["capabilities"]
    assert (transfer["attempts"], transfer["allowed"], transfer["denied"]) == (8, 6, 2)
    assert (email["attempts"], email["allowed"]) == (0, 0)
    assert g["actions_outside_grant"] == [{"action": "files.delete", "attempts": 2, "denied": 2}]
    over = {o["code"]: o for o in g["over_reach"]}
    assert over["action_not_granted"]["count"] == 2
    assert over["action_not_granted"]["label"] == "action never granted"
    assert over["argument_denied"]["examples"][0]["arg"] == "amount"
    assert "5000" in over["argument_denied"]["examples"][0]["args"]
    assert over["replayed"]["count"] == 1
    assert [c["action"] for c in g["unused"]["capabilities"]] == ["email.send"]
    used = {r["arg"]: r for r in g["unused"]["arguments"]}
    assert (used["amount"]["used"]["min"], used["amount"]["used"]["max"]) == (10, 50)
    assert used["amount"]["granted"] == {"le": 100}
    assert used["memo"]["used"]["calls"] == 1
    # transfer: (1 + amount 50/100 + to 1 + currency 2/4) / 4; email unused: 0
    assert g["least_privilege"]["capabilities"] == [0.75, 0.0]
    assert g["least_privilege"]["score"] == 0.375
    assert report["unattributed"] == {"denied": 1, "by_code": {"malformed": 1}}
    (agent,) = [a for a in report["agents"] if a["agent"] == "agent:a"]
    assert (agent["attempts"], agent["denied"]) == (10, 4)
    assert sum(b["attempts"] for b in agent["buckets"]) == 10


def test_suggestion_is_narrow_and_covers(writer: EventWriter, redis_client: redis.Redis) -> None:
    _scenario(writer)
    (g,) = compute(redis_client, writer.key)["grants"]
    (cap,) = g["suggested"]
    assert cap["action"] == "payments.transfer"
    assert cap["args"]["amount"] == {"in": [10, 20, 30, 40, 50, 25]}
    assert cap["args"]["to"] == {"eq": IBAN}
    assert cap["args"]["currency"] == {"in": ["EUR", "USD"]}
    assert cap["args"]["memo"] == {"eq": "rent", "optional": True}
    assert is_narrower(parse_capability(cap, token_form=True), [parse_capability(TRANSFER)])


def test_many_values_give_bounds_and_prefix(writer: EventWriter, redis_client: redis.Redis) -> None:
    files = {"action": "files.*", "args": {"path": {"prefix": "/home/"}, "n": {"ge": 0}}}
    writer.grant("g_2", [files], ts=T0)
    for i in range(20):
        writer.decision(
            ts=T0 + i,
            gid="g_2",
            action="files.read",
            args={"path": f"/home/alice/doc{i}.txt", "n": i + 3},
        )
    (g,) = compute(redis_client, writer.key)["grants"]
    (cap,) = g["suggested"]
    assert cap["action"] == "files.read"  # the wildcard narrowed to the action used
    assert cap["args"]["path"] == {
        "prefix": "/home/alice/doc",
        "max_len": len("/home/alice/doc19.txt"),
    }
    assert cap["args"]["n"] == {"ge": 3, "le": 22}


def test_unrecorded_values_keep_the_granted_constraints(
    writer: EventWriter, redis_client: redis.Redis
) -> None:
    writer.grant("g_3", [{"action": "files.*", "args": {"path": {"prefix": "/tmp/"}}}], ts=T0)
    writer.decision(ts=T0, gid="g_3", action="files.read")  # no "args": not opted in
    (g,) = compute(redis_client, writer.key)["grants"]
    assert g["suggested"] == [
        {"type": "remit.capability", "action": "files.read", "args": {"path": {"prefix": "/tmp/"}}}
    ]
    assert g["least_privilege"]["score"] == 1.0  # used, nothing measurable


GARBAGE: list[dict[str, str]] = [
    {"hello": "world"},  # foreign entry
    {"v": "2", "w": "x", "n": "1", "h": "0", "ev": "{}"},  # future version
    {"v": "1", "w": "x", "n": "1", "h": "0", "ev": "{not json"},
    {"v": "1", "w": "x", "n": "1", "ev": '{"type":"decision","ts":1}'},  # no h
    {"v": "1", "w": "x", "n": "1", "h": "0", "ev": "[1,2]"},
    {"v": "1", "w": "x", "n": "1", "h": "0", "ev": '{"type":"decision","ts":"yesterday"}'},
    {
        "v": "1",
        "w": "x",
        "n": "1",
        "h": "0",
        "ev": '{"type":"decision","ts":1,"allowed":"yes","code":"ok","action":"a"}',
    },
    {
        "v": "1",
        "w": "x",
        "n": "1",
        "h": "0",
        "ev": '{"type":"decision","ts":1,"allowed":true,"code":"<b>","action":"a","gid":"g"}',
    },
    {
        "v": "1",
        "w": "x",
        "n": "1",
        "h": "0",
        "ev": '{"type":"decision","ts":1,"allowed":true,"code":"ok","action":"a","gid":7}',
    },
    {
        "v": "1",
        "w": "x",
        "n": "1",
        "h": "0",
        "ev": '{"type":"grant.created","ts":1,"gid":"g","app":"a","sub":"s","agent":"x",'
        '"aud":[],"capabilities":[{"action":"BAD ACTION"}]}',
    },
    {"v": "1", "w": "x", "n": "1", "h": "0", "ev": "\xff\xfe"},
    {"v": "1", "w": "x", "n": "1", "h": "0", "ev": "[" * 100000},
    {"v": "1", "w": "x", "n": "1", "h": "0", "ev": '{"type":"limit.used","ts":1}'},  # ignored
]


def test_garbage_is_counted_and_skipped(writer: EventWriter, redis_client: redis.Redis) -> None:
    _scenario(writer)
    for fields in GARBAGE:
        redis_client.xadd(writer.key, fields)  # type: ignore[arg-type]
    redis_client.xadd(writer.key, {b"v": b"1", b"w": b"x", b"n": b"1", b"h": b"0", b"ev": b"\xff"})
    report = compute(redis_client, writer.key)
    stream = report["stream"]
    assert stream["skipped"] == len(GARBAGE) - 1 + 1  # all but the ignored type, plus raw bytes
    assert stream["skipped_by_reason"] == {
        "bad_event": 5,
        "bad_json": 5,
        "bad_version": 1,
        "foreign": 1,
        "missing_field": 1,
    }
    assert stream["ignored_types"] == {"limit.used": 1}
    assert len(stream["skipped_examples"]) <= 9
    (g,) = report["grants"]
    assert g["attempts"] == 10  # the valid events are all still counted


def test_not_a_stream_is_a_clear_error(redis_client: redis.Redis, redis_prefix: str) -> None:
    from remit_service._alignment import ReportError

    redis_client.set(f"{redis_prefix}audit", "x")
    with pytest.raises(ReportError, match="not a stream"):
        compute(redis_client, f"{redis_prefix}audit")


def test_filters(writer: EventWriter, redis_client: redis.Redis) -> None:
    _scenario(writer)
    writer.grant("g_b", [EMAIL], ts=T0, sub="user:bob", agent="agent:b")
    writer.decision(
        ts=T0 + 100_000,
        gid="g_b",
        action="email.send",
        agent="agent:b",
        sub="user:bob",
        args={"to": "mailto:x@y"},
    )
    by_grant = compute(redis_client, writer.key, Filters(grant="g_b"))
    assert [g["gid"] for g in by_grant["grants"]] == ["g_b"]
    assert [a["agent"] for a in by_grant["agents"]] == ["agent:b"]
    by_agent = compute(redis_client, writer.key, Filters(agent="agent:a"))
    assert [g["gid"] for g in by_agent["grants"]] == ["g_1"]
    by_subject = compute(redis_client, writer.key, Filters(subject="user:bob"))
    assert [g["gid"] for g in by_subject["grants"]] == ["g_b"]
    assert by_subject["totals"]["attempts"] == 1
    none = compute(redis_client, writer.key, Filters(agent="agent:nobody"))
    assert none["grants"] == [] and none["totals"]["attempts"] == 0


def test_since_reads_from_the_stream_id_and_looks_grants_up(
    writer: EventWriter, redis_client: redis.Redis
) -> None:
    _scenario(writer)
    cut = int(redis_client.xrevrange(writer.key, count=1)[0][0].split(b"-")[0]) + 1
    while int(redis_client.time()[0]) * 1000 + int(redis_client.time()[1]) // 1000 <= cut:
        time.sleep(0.001)  # stream ids come from Redis's clock: the next entry is past cut
    writer.decision(ts=cut + 5, gid="g_1", action="email.send", args={"to": "mailto:a@b"})
    looked: list[str] = []

    def lookup(gid: str) -> GrantInfo | None:
        looked.append(gid)
        return GrantInfo(
            gid,
            "bank",
            "user:alice",
            "agent:a",
            ["payments"],
            [parse_capability(TRANSFER), parse_capability(EMAIL)],
            source="store",
        )

    report = compute(redis_client, writer.key, Filters(since_ms=cut), lookup)
    (g,) = report["grants"]
    assert report["stream"]["entries"] == 1
    assert looked == ["g_1"]
    assert g["attempts"] == 1 and g["capabilities"][1]["allowed"] == 1


def test_app_filter_hides_other_apps_grants(writer: EventWriter, redis_client: redis.Redis) -> None:
    _scenario(writer)
    writer.grant("g_other", [EMAIL], ts=T0, app="shop")
    writer.decision(ts=T0, gid="g_other", action="email.send", args={"to": "mailto:q"})
    writer.decision(ts=T0, gid="g_unknown", action="email.send")
    report = compute(redis_client, writer.key, Filters(app="shop"), lambda gid: None)
    assert [g["gid"] for g in report["grants"]] == ["g_other"]
    assert report["totals"]["attempts"] == 1
    assert report["unattributed"]["denied"] == 0


def test_timeline_stays_bounded() -> None:
    acc = Alignment()
    w = EventWriter(None, "")  # in memory: fields() only
    for i in range(2000):  # ten days, one event every 7 minutes
        ts = T0 + i * 7 * 60_000
        acc.feed(
            str(i),
            w.fields(
                {
                    "type": "decision",
                    "ts": ts,
                    "allowed": i % 4 != 0,
                    "code": "ok" if i % 4 else "argument_denied",
                    "gid": "g",
                    "jti": "j",
                    "agent": "a",
                    "sub": "s",
                    "aud": "x",
                    "action": "x.y",
                    "argh": "0",
                }
            ),
        )
    report = acc.report()
    (agent,) = report["agents"]
    assert len(agent["buckets"]) <= MAX_BUCKETS
    assert (
        report["bucket_seconds"] == 3600 * 6
        or report["bucket_seconds"] == 86400
        or (report["bucket_seconds"] >= 3600)
    )
    assert sum(b["attempts"] for b in agent["buckets"]) == 2000
    assert sum(b["denied"] for b in agent["buckets"]) == 500


def test_parse_since() -> None:
    assert parse_since("24h", now=100_000) == (100_000 - 86400) * 1000
    assert parse_since("1700000000") == 1_700_000_000_000
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000_000
    with pytest.raises(ValueError, match="--since"):
        parse_since("last tuesday")


# Suggestions: whatever calls a grant allowed, the suggestion allows each of them and is
# narrower than the grant.
_value = st.one_of(
    st.integers(-5, 200),
    st.sampled_from(["a", "ab", "abc", "b/c", "/x/y", ""]),
    st.booleans(),
    st.floats(-10, 10, allow_nan=False),
)
_GRANT = {
    "action": "tool.*",
    "args": {
        "x": {"ge": -5, "le": 200, "optional": True},
        "y": {"max_len": 10, "optional": True},
        "*": {"any": True},
    },
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tool.a", "tool.b"]),
            st.dictionaries(st.sampled_from(["x", "y", "z"]), _value, max_size=3),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_suggestion_covers_every_allowed_call(calls: list[tuple[str, dict[str, object]]]) -> None:
    granted = [parse_capability(_GRANT)]
    calls = [(a, args) for a, args in calls if allows([_GRANT], a, args)]
    acc = Alignment(lookup=lambda gid: GrantInfo(gid, "a", "s", "g", [], granted))
    w = EventWriter(None, "")  # in memory: fields() only
    for i, (action, args) in enumerate(calls):
        acc.feed(
            str(i),
            w.fields(
                {
                    "type": "decision",
                    "ts": T0,
                    "allowed": True,
                    "code": "ok",
                    "gid": "g",
                    "jti": "j",
                    "agent": "a",
                    "sub": "s",
                    "aud": "x",
                    "action": action,
                    "argh": "0",
                    "args": args,
                }
            ),
        )
    report = acc.report()
    if not calls:
        return
    suggested = report["grants"][0]["suggested"]
    for action, args in calls:
        assert allows(suggested, action, json.loads(json.dumps(args))), (action, args, suggested)
    assert is_narrower([parse_capability(c, token_form=True) for c in suggested], granted)
