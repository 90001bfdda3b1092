"""The revocation stream's entry format and the feed's in-memory set (no Redis needed:
the feed is fed entries directly, as its follower thread would)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from remit._redis_keys import RedisKeys
from remit._revfeed import FIELD, RevocationEntry, RevocationFeed, encode_entry, parse_entry
from remit._token import parse_claims

from tests.tokens import claims, compact_json

NOW = 1_767_225_600


@pytest.mark.parametrize(
    "entry",
    [
        RevocationEntry("j", "t_abc-DEF_123", NOW + 60),
        RevocationEntry("g", "g_" + "x" * 22, NOW + 3600),
        RevocationEntry("b", "g_abc", NOW + 10, NOW - 5),
    ],
)
def test_entries_round_trip(entry: RevocationEntry) -> None:
    assert parse_entry({FIELD: encode_entry(entry)}) == entry


@pytest.mark.parametrize(
    "entry",
    [
        RevocationEntry("x", "t_abc", NOW),
        RevocationEntry("j", "t abc", NOW),
        RevocationEntry("j", "", NOW),
        RevocationEntry("b", "g_abc", NOW),  # a cutoff revocation without its cutoff
        RevocationEntry("g", "g_abc", NOW, 5),
        RevocationEntry("j", "t_" + "a" * 80, NOW),
    ],
)
def test_bad_entries_are_never_written(entry: RevocationEntry) -> None:
    with pytest.raises(ValueError, match="bad revocation entry"):
        encode_entry(entry)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {FIELD: b"1 j t_a 1", b"extra": b"1"},
        {b"R": b"1 j t_a 1"},
        {FIELD: b"1 j t_a 1 "},
        {FIELD: b"1 j t_a -1"},
        {FIELD: b"1 b g_a 10 0"},
        {FIELD: b" 1 j t_a 1"},
        {FIELD: b"1 j t_a 1\n"},
        {FIELD: "1 j t_a 1"},
        [(FIELD, b"1 j t_a 1")],
    ],
)
def test_unreadable_entries_are_refused(fields: object) -> None:
    with pytest.raises(ValueError):
        parse_entry(fields)


def _feed() -> RevocationFeed:
    # Never started: nothing connects. Marked current so only the set decides.
    feed = RevocationFeed(redis.Redis(host="127.0.0.1", port=1), RedisKeys("unit:"))
    feed._confirmed = feed._mono()
    return feed


def _claims(**overrides: object) -> object:
    iat = overrides.get("iat", NOW)
    assert isinstance(iat, int)
    overrides = {"nbf": iat, "exp": iat + 300, **overrides}
    return parse_claims(compact_json(claims(**overrides)))


def _code(feed: RevocationFeed, **overrides: object) -> str:
    try:
        feed.check(_claims(**overrides))  # type: ignore[arg-type]
    except remit.Denied as denied:
        return denied.code.value
    return "allowed"


def _add(feed: RevocationFeed, entry: RevocationEntry, now: int = NOW) -> None:
    feed._apply(b"1-0", {FIELD: encode_entry(entry)}, now)


def test_lineage_grant_and_cutoff_lookups() -> None:
    feed = _feed()
    _add(feed, RevocationEntry("j", "t_parent01", NOW + 100))
    _add(feed, RevocationEntry("b", "g_cut0001", NOW + 100, NOW))
    _add(feed, RevocationEntry("g", "g_dead001", NOW + 100))
    assert _code(feed, jti="t_parent01") == "revoked"
    assert _code(feed, jti="t_child001", anc=["t_parent01"]) == "revoked"
    assert _code(feed, jti="t_other001", anc=["t_unrelated"]) == "allowed"
    assert _code(feed, gid="g_cut0001", iat=NOW - 1) == "revoked"
    assert _code(feed, gid="g_cut0001", iat=NOW) == "allowed"
    assert _code(feed, gid="g_dead001", iat=NOW + 50) == "revoked"


def test_a_cutoff_only_rises() -> None:
    feed = _feed()
    _add(feed, RevocationEntry("b", "g_cut0001", NOW + 100, NOW))
    _add(feed, RevocationEntry("b", "g_cut0001", NOW + 100, NOW - 50))
    assert _code(feed, gid="g_cut0001", iat=NOW - 10) == "revoked"


def test_expired_entries_are_skipped_and_pruned() -> None:
    feed = _feed()
    _add(feed, RevocationEntry("j", "t_gone001", NOW - 1))  # nothing left it could affect
    _add(feed, RevocationEntry("j", "t_short01", NOW + 20))
    _add(feed, RevocationEntry("j", "t_short01", NOW + 500))  # revoked again, longer
    _add(feed, RevocationEntry("b", "g_short01", NOW + 20, NOW))
    assert _code(feed, jti="t_gone001") == "allowed"
    feed._prune(NOW + 100)
    assert _code(feed, jti="t_short01") == "revoked"  # the longer lifetime wins
    assert _code(feed, gid="g_short01", iat=NOW - 1) == "allowed"
    feed._prune(NOW + 1000)
    assert feed.status().revoked_tokens == 0 and feed.status().revoked_grants == 0


def test_an_unconfirmed_feed_fails_closed_and_an_unreadable_entry_raises_the_floor() -> None:
    feed = _feed()
    feed._confirmed = float("-inf")
    assert _code(feed) == "revocation_unavailable"
    feed = _feed()
    feed._apply(b"%d-0" % ((NOW + 10) * 1000), {FIELD: b"junk"}, NOW)
    assert _code(feed, iat=NOW + 11) == "revoked"
    assert _code(feed, iat=NOW + 12) == "allowed"


def test_fail_open_is_a_separate_explicit_choice() -> None:
    feed = RevocationFeed(redis.Redis(host="127.0.0.1", port=1), RedisKeys("unit:"),
                          fail_open=True)
    _add(feed, RevocationEntry("j", "t_known01", NOW + 100))
    assert _code(feed, jti="t_unknown") == "allowed"  # stale, and trusted anyway
    assert _code(feed, jti="t_known01") == "revoked"


@pytest.mark.parametrize("max_age", [0.0, -1.0, 10_000.0])
def test_max_age_is_bounded(max_age: float) -> None:
    with pytest.raises(ValueError, match="max age"):
        RevocationFeed(redis.Redis(host="127.0.0.1", port=1), RedisKeys("unit:"),
                       max_age=max_age)


def test_stream_mode_needs_redis() -> None:
    from tests.tokens import IssuerKey

    with pytest.raises(ValueError, match='revocation="stream" needs redis='):
        remit.Verifier(IssuerKey().jwks(), issuer="i", audience="a")


def _vector_cases() -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parents[1] / "vectors" / "revocation_entries.json"
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _vector_cases(), ids=lambda c: c["name"])
def test_entry_vectors(case: dict[str, Any]) -> None:
    fields = {FIELD: case["value"].encode()}
    if case["valid"]:
        want = case["entry"]
        assert parse_entry(fields) == RevocationEntry(
            want["kind"], want["target"], want["until"], want.get("cutoff", 0)
        )
        assert encode_entry(parse_entry(fields)) == case["value"].encode()
    else:
        with pytest.raises(ValueError):
            parse_entry(fields)
        feed = _feed()  # the follower's own parser agrees: lost state, nothing applied
        feed._apply(b"%d-0" % (NOW * 1000), fields, NOW - 10)
        assert feed._floor == NOW + 2 and not feed._jtis and not feed._cutoffs
