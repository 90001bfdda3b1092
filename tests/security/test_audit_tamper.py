"""Tampering with the audit stream: `remit audit verify` names each change precisely.

A genuine stream is written by two real verifiers (interleaved writers); the attacker
then edits, deletes, reorders, duplicates or inserts entries. Redis cannot change an entry
in place, so edits and reorderings are made the way an attacker with write access would:
rewriting the stream (a copy with explicit, increasing ids). Every test asserts the exact
list of (kind, writer, n) problems and exit code 1; the untouched baseline exits 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
import remit
from remit_service.cli import main

from tests.tokens import ACTION, ARGS, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

Entry = tuple[bytes, dict[bytes, bytes]]


@pytest.fixture
def genuine(redis_url: str, redis_prefix: str, redis_client: redis.Redis) -> list[Entry]:
    """12 decisions from two verifiers, alternating: writer A has n=1..6, B too."""
    key = IssuerKey()
    token = sign(claims(), key)
    verifiers = [
        remit.Verifier(
            key.jwks(),
            issuer=ISSUER,
            audience=AUDIENCE,
            revocation="off",
            redis=redis_url,
            prefix=redis_prefix,
            audit="sync",
            clock=lambda: NOW,
        )
        for _ in range(2)
    ]
    for i in range(12):
        v = verifiers[i % 2]
        with contextlib.suppress(remit.Denied):
            v.check(token, action=ACTION, args={**ARGS, "amount": 10 * i})
    for v in verifiers:
        v.close()
    return list(redis_client.xrange(f"{redis_prefix}audit"))


def _writer(entries: list[Entry], index: int) -> str:
    return entries[index][1][b"w"].decode()


def _rewrite(
    client: redis.Redis, prefix: str, entries: list[Entry], change: Callable[[list[Entry]], None]
) -> str:
    """The attacker rewrites the stream: apply ``change`` and store it under a new prefix."""
    tampered = [(i, dict(f)) for i, f in entries]
    change(tampered)
    target = f"{prefix}t:"
    for seq, (_, fields) in enumerate(tampered, start=1):
        client.xadd(f"{target}audit", fields, id=f"1-{seq}")  # type: ignore[arg-type]
    return target


def _verify(capsys: pytest.CaptureFixture[str], url: str, prefix: str) -> tuple[int, Any]:
    code = main(["audit", "verify", "--redis", url, "--prefix", prefix, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def _problems(report: Any) -> list[tuple[str, str | None, int | None]]:
    return [(p["kind"], p["writer"], p["n"]) for p in report["details"]]


def test_untouched_stream_verifies(
    genuine: list[Entry], redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _verify(capsys, redis_url, redis_prefix)
    assert code == 0 and report["ok"] and report["problems"] == 0
    assert (report["entries"], report["writers"], report["links_checked"]) == (12, 2, 12)


def test_edited_event_is_reported(
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def flip(entries: list[Entry]) -> None:  # A's n=3: the decision turned around
        ev = json.loads(entries[4][1][b"ev"])
        ev.update(allowed=not ev["allowed"], code="ok" if not ev["allowed"] else "revoked")
        entries[4][1][b"ev"] = json.dumps(ev, sort_keys=True, separators=(",", ":")).encode()

    prefix = _rewrite(redis_client, redis_prefix, genuine, flip)
    code, report = _verify(capsys, redis_url, prefix)
    assert code == 1
    assert _problems(report) == [("edited", _writer(genuine, 0), 3)]


def test_edited_event_with_a_recomputed_hash_is_reported_at_the_next_link(
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def forge(entries: list[Entry]) -> None:
        prev_h = entries[2][1][b"h"].decode()  # A's n=2
        ev = entries[4][1][b"ev"].replace(b'"agent:a"', b'"agent:b"')
        entries[4][1][b"ev"] = ev
        entries[4][1][b"h"] = hashlib.sha256(f"{prev_h}\n".encode() + ev).hexdigest().encode()

    prefix = _rewrite(redis_client, redis_prefix, genuine, forge)
    code, report = _verify(capsys, redis_url, prefix)
    assert code == 1
    assert _problems(report) == [("edited", _writer(genuine, 0), 4)]
    assert "n=3" in report["details"][0]["detail"]


def test_deleted_event_is_reported_as_a_gap(
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = f"{redis_prefix}audit"
    redis_client.xdel(stream, genuine[5][0])  # B's n=3, in place
    redis_client.xdel(stream, genuine[6][0], genuine[8][0])  # A's n=4 and n=5
    code, report = _verify(capsys, redis_url, redis_prefix)
    assert code == 1
    assert sorted(_problems(report)) == sorted(
        [("gap", _writer(genuine, 1), 3), ("gap", _writer(genuine, 0), 4)]
    )
    details = {p["n"]: p["detail"] for p in report["details"]}
    assert details[3] == "n=3 missing (deleted)" and details[4] == "n=4..5 missing (deleted)"


def test_reordered_events_are_reported(
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def swap(entries: list[Entry]) -> None:  # A's n=3 and n=4 trade places
        entries[4], entries[6] = entries[6], entries[4]

    prefix = _rewrite(redis_client, redis_prefix, genuine, swap)
    code, report = _verify(capsys, redis_url, prefix)
    assert code == 1
    assert _problems(report) == [("reordered", _writer(genuine, 0), 3)]


def test_duplicated_entry_is_reported(
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redis_client.xadd(f"{redis_prefix}audit", genuine[3][1])  # type: ignore[arg-type]
    code, report = _verify(capsys, redis_url, redis_prefix)
    assert code == 1
    assert _problems(report) == [("duplicate", _writer(genuine, 1), 2)]


def test_forged_entry_appended_to_a_writers_chain_is_reported(
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fields = dict(genuine[10][1])  # A's n=6, replayed as n=7 with its own hash
    fields[b"n"] = b"7"
    redis_client.xadd(f"{redis_prefix}audit", fields)  # type: ignore[arg-type]
    code, report = _verify(capsys, redis_url, redis_prefix)
    assert code == 1
    assert _problems(report) == [("edited", _writer(genuine, 0), 7)]


FOREIGN = [
    pytest.param({"hello": "world"}, id="other-fields"),
    pytest.param({"v": "2", "w": "w1", "n": "1", "h": "0" * 64, "ev": "{}"}, id="version-2"),
    pytest.param({"v": "1", "w": "w 1", "n": "1", "h": "0" * 64, "ev": "{}"}, id="writer-space"),
    pytest.param({"v": "1", "w": "w1", "n": "01", "h": "0" * 64, "ev": "{}"}, id="n-leading-zero"),
    pytest.param({"v": "1", "w": "w1", "n": "-1", "h": "0" * 64, "ev": "{}"}, id="n-negative"),
    pytest.param({"v": "1", "w": "w1", "n": "1", "h": "0" * 63, "ev": "{}"}, id="h-short"),
    pytest.param({"v": "1", "w": "w1", "n": "1", "h": "A" * 64, "ev": "{}"}, id="h-uppercase"),
    pytest.param({"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": "{"}, id="ev-not-json"),
    pytest.param({"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": "[1]"}, id="ev-array"),
    pytest.param(
        {"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": '{"type":"a","type":"b","ts":1}'},
        id="ev-duplicate-keys",
    ),
    pytest.param(
        {"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": '{"type":"a","ts":NaN}'},
        id="ev-nan",
    ),
    pytest.param({"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": b"\xff\xfe"}, id="ev-bytes"),
    pytest.param({"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": '{"ts":1}'}, id="ev-no-type"),
    pytest.param(
        {"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": '{"type":"a","ts":"1"}'},
        id="ev-ts-string",
    ),
    pytest.param(
        {"v": "1", "w": "w1", "n": "1", "h": "0" * 64, "ev": "{}", "x": "1"}, id="extra-field"
    ),
]


@pytest.mark.parametrize("fields", FOREIGN)
def test_foreign_entry_is_reported_and_skipped(
    fields: dict[str, Any],
    genuine: list[Entry],
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def insert(entries: list[Entry]) -> None:
        entries.insert(5, (b"", {k.encode(): v for k, v in fields.items()}))

    prefix = _rewrite(redis_client, redis_prefix, genuine, insert)
    code, report = _verify(capsys, redis_url, prefix)
    assert code == 1
    assert _problems(report) == [("foreign", None, None)]  # and the chains around it hold
    assert report["details"][0]["id"] == "1-6"
    assert report["links_checked"] == 12


def test_unverified_token_claims_never_reach_the_trail(
    redis_url: str, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """A token signed by another key names a victim's grant, agent and user: the denial is
    recorded with null parties, so forged traffic cannot be pinned on someone else."""
    key, attacker = IssuerKey(), IssuerKey()
    forged = claims(gid="g_victimgrant001", sub="user:victim", act={"sub": "agent:victim"})
    token = sign(forged, attacker, header_overrides={"kid": key.kid})
    with remit.Verifier(
        key.jwks(),
        issuer=ISSUER,
        audience=AUDIENCE,
        revocation="off",
        redis=redis_url,
        prefix=redis_prefix,
        audit="sync",
        clock=lambda: NOW,
    ) as v:
        with pytest.raises(remit.Denied) as info:
            v.check(token, action=ACTION, args=ARGS)
        assert info.value.code is remit.Code.BAD_SIGNATURE
        v.check(sign(claims(), key), action=ACTION, args=ARGS)  # baseline: parties recorded
    events = [json.loads(f[b"ev"]) for _, f in redis_client.xrange(f"{redis_prefix}audit")]
    first = events[0]
    assert (first["code"], first["gid"], first["sub"], first["agent"]) == (
        "bad_signature",
        None,
        None,
        None,
    )
    assert events[1]["sub"] == "user:alice" and events[1]["gid"] is not None
