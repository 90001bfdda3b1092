"""The audit trail, written (verifiers, service) and read back (`remit audit verify / export`).

Everything against the real Redis; hashes and digests are recomputed here with hashlib and
rfc8785 directly, so the schema (docs/audit.md) is checked against an independent reading.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
import rfc8785
from remit_service import Server
from remit_service.cli import main

from tests.tokens import ACTION, ARGS, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

FIELDS = {b"v", b"w", b"n", b"h", b"ev"}


def entries(r: redis.Redis, prefix: str) -> list[tuple[str, dict[str, Any], dict[bytes, bytes]]]:
    """(id, event, raw fields) of every entry, checking each writer's chain on the way."""
    out = []
    chains: dict[bytes, tuple[int, str]] = {}
    for entry_id, fields in r.xrange(f"{prefix}audit"):
        assert set(fields) == FIELDS and fields[b"v"] == b"1"
        n, h = int(fields[b"n"]), fields[b"h"].decode()
        last_n, last_h = chains.get(fields[b"w"], (0, ""))
        assert n == last_n + 1
        assert h == hashlib.sha256(f"{last_h}\n".encode() + fields[b"ev"]).hexdigest()
        chains[fields[b"w"]] = (n, h)
        event = json.loads(fields[b"ev"])
        assert rfc8785.dumps(event) == fields[b"ev"]  # stored canonical
        out.append((entry_id.decode(), event, fields))
    return out


def argh(args: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(args)).hexdigest()


# Every verifier a test makes is closed (or collected): its audit flusher thread ends.
pytestmark = pytest.mark.usefixtures("no_audit_thread_left_behind")


@pytest.fixture
def key() -> IssuerKey:
    return IssuerKey()


@pytest.fixture
def make(
    key: IssuerKey, redis_url: str, redis_prefix: str
) -> Iterator[Callable[..., remit.Verifier]]:
    made: list[remit.Verifier] = []

    def build(**kwargs: Any) -> remit.Verifier:
        kwargs.setdefault("redis", redis_url)
        v = remit.Verifier(
            key.jwks(),
            issuer=ISSUER,
            audience=AUDIENCE,
            revocation="off",
            replay="local",
            prefix=redis_prefix,
            clock=lambda: NOW,
            **kwargs,
        )
        made.append(v)
        return v

    yield build
    for v in made:
        v.close()


def _denied(v: remit.Verifier, token: str, **call: Any) -> str:
    with pytest.raises(remit.Denied) as info:
        v.check(token, **call)
    return info.value.code.value


def test_every_decision_is_recorded_with_the_v1_schema(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    v = make()
    assert v.audit_mode == "buffered"  # the default with redis=
    c = claims(anc=["t_parent0000000001"])
    token = sign(c, key)
    v.check(token, action=ACTION, args=ARGS)
    too_much = {**ARGS, "amount": 500}
    assert _denied(v, token, action=ACTION, args=too_much) == "argument_denied"
    assert _denied(v, token, action="payments.refund", args={}) == "action_not_granted"
    assert _denied(v, "not.a.token", action=ACTION, args=ARGS) == "malformed"
    v.close()
    stats = v.audit_stats()
    assert stats is not None and (stats.written, stats.dropped, stats.pending) == (4, 0, 0)

    got = entries(redis_client, redis_prefix)
    assert [int(f[b"n"]) for _, _, f in got] == [1, 2, 3, 4]
    assert {f[b"w"].decode() for _, _, f in got} == {stats.writer}
    events = [e for _, e, _ in got]
    assert events[0] == {
        "type": "decision",
        "ts": NOW * 1000,
        "allowed": True,
        "code": "ok",
        "gid": c["gid"],
        "jti": c["jti"],
        "agent": "agent:a",
        "sub": "user:alice",
        "aud": AUDIENCE,
        "action": ACTION,
        "argh": argh(dict(ARGS)),
        "anc": ["t_parent0000000001"],
    }
    assert events[1]["allowed"] is False and events[1]["code"] == "argument_denied"
    assert events[1]["arg"] == "amount" and events[1]["argh"] == argh(too_much)
    assert "args" not in events[1]  # values only when the operator opts in
    assert events[2]["code"] == "action_not_granted" and events[2]["gid"] == c["gid"]
    assert events[3]["code"] == "malformed"
    assert [events[3][k] for k in ("gid", "jti", "agent", "sub")] == [None] * 4


def test_argument_values_only_for_the_actions_the_operator_names(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    caps = [
        {"type": "remit.capability", "action": a, "args": {"*": {"any": True}}}
        for a in ("payments.transfer", "payments.refund", "mail.send")
    ]
    token = sign(claims(authorization_details=caps), key)
    v = make(audit="sync", audit_args=["payments.transfer", "mail.*"])
    for action in ("payments.transfer", "payments.refund", "mail.send"):
        v.check(token, action=action, args={"secret": "s3cr3t", "n": 1})
    recorded = {e["action"]: e.get("args") for _, e, _ in entries(redis_client, redis_prefix)}
    assert recorded == {
        "payments.transfer": {"secret": "s3cr3t", "n": 1},
        "payments.refund": None,
        "mail.send": {"secret": "s3cr3t", "n": 1},
    }


def test_sync_mode_writes_the_event_before_check_returns(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    v = make(audit="sync")
    token = sign(claims(), key)
    for i in range(3):
        v.check(token, action=ACTION, args=ARGS)
        assert len(entries(redis_client, redis_prefix)) == i + 1  # no flush, no wait
    assert not [t for t in threading.enumerate() if t.name.startswith("remit-audit-")]


def test_arguments_changed_after_the_call_do_not_change_the_record(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    caps = [{"type": "remit.capability", "action": ACTION, "args": {"*": {"any": True}}}]
    token = sign(claims(authorization_details=caps), key)
    v = make(audit_args=[ACTION])
    call = {"to": ["DE89"], "amount": 5}
    v.check(token, action=ACTION, args=call)
    call["to"].append("attacker")  # the backend mutates its arguments afterwards
    call["amount"] = 5000
    v.close()
    (event,) = [e for _, e, _ in entries(redis_client, redis_prefix)]
    assert event["args"] == {"to": ["DE89"], "amount": 5}
    assert event["argh"] == argh({"to": ["DE89"], "amount": 5})


def test_arguments_json_cannot_carry_get_a_null_digest(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    caps = [{"type": "remit.capability", "action": ACTION, "args": {"*": {"any": True}}}]
    token = sign(claims(authorization_details=caps), key)
    v = make(audit="sync", audit_args=[ACTION])
    v.check(token, action=ACTION, args={"x": float("nan")})
    v.check(token, action=ACTION, args={"x": [2**60]})
    events = [e for _, e, _ in entries(redis_client, redis_prefix)]
    assert [(e["argh"], "args" in e) for e in events] == [(None, False), (None, False)]


def test_guarded_functions_are_recorded(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    v = make(audit="sync")

    @v.guard(ACTION)
    def transfer(amount: int, to: str) -> str:
        return "done"

    token = sign(claims(), key)
    with remit.credentials(token):
        assert transfer(50, "DE89") == "done"
        with pytest.raises(remit.Denied):
            transfer(5000, "DE89")
    events = [e for _, e, _ in entries(redis_client, redis_prefix)]
    assert [(e["allowed"], e["code"]) for e in events] == [(True, "ok"), (False, "argument_denied")]


def test_audit_mode_defaults_and_bad_values(key: IssuerKey, redis_url: str) -> None:
    base: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "revocation": "off"}
    assert remit.Verifier(key.jwks(), **base).audit_mode == "off"  # nowhere to write
    assert remit.Verifier(key.jwks(), **base).audit_stats() is None
    with pytest.raises(ValueError, match="needs redis"):
        remit.Verifier(key.jwks(), audit="sync", **base)
    with pytest.raises(ValueError, match="unknown audit mode"):
        remit.Verifier(key.jwks(), audit="async", redis=redis_url, **base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audit_args"):
        remit.Verifier(key.jwks(), audit_args=[""], redis=redis_url, **base)
    with pytest.raises(ValueError, match="audit_buffer"):
        remit.Verifier(key.jwks(), audit_buffer=0, redis=redis_url, **base)


def _audit_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("remit-audit-")]


def test_close_writes_everything_and_stops_the_thread(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    before = set(_audit_threads())
    v = make()
    token = sign(claims(), key)
    for _ in range(2000):
        v.check(token, action=ACTION, args=ARGS)
    assert len(set(_audit_threads()) - before) == 1
    v.close()
    assert set(_audit_threads()) <= before
    assert len(entries(redis_client, redis_prefix)) == 2000
    stats = v.audit_stats()
    assert stats is not None and (stats.recorded, stats.written, stats.dropped) == (2000, 2000, 0)


def test_an_unclosed_verifier_does_not_leave_its_thread_behind(
    key: IssuerKey, redis_url: str, redis_client: redis.Redis, redis_prefix: str
) -> None:
    before = set(_audit_threads())
    v = remit.Verifier(
        key.jwks(),
        issuer=ISSUER,
        audience=AUDIENCE,
        revocation="off",
        redis=redis_url,
        prefix=redis_prefix,
        clock=lambda: NOW,
    )
    v.check(sign(claims(), key), action=ACTION, args=ARGS)
    (thread,) = set(_audit_threads()) - before
    del v
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    assert len(entries(redis_client, redis_prefix)) == 1  # it wrote what it held first


# -- the service's events ------------------------------------------------------------------


def test_service_records_grants_mints_and_revocations(
    service: Server, client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    cap = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
    grant = client.create_grant(
        subject="user:alice",
        agent="agent:a",
        audience=["payments"],
        capabilities=[cap],
        purpose="rent",
        ttl=600,
    )
    token = client.mint(grant.id)
    _, minted = remit.peek_unverified(token)
    client.revoke(jti=minted["jti"], reason="lost laptop")
    client.revoke(grant_id=grant.id, reason="user asked")
    events = [e for _, e, _ in entries(redis_client, redis_prefix)]
    assert [e["type"] for e in events] == ["grant.created", "token.minted", "revoked", "revoked"]
    created, mint, rev_token, rev_grant = events
    assert created == {
        "type": "grant.created",
        "ts": created["ts"],
        "gid": grant.id,
        "app": "dev",
        "sub": "user:alice",
        "agent": "agent:a",
        "aud": ["payments"],
        "capabilities": [{"type": "remit.capability", **cap}],
        "expires_at": grant.expires_at,
        "purpose": "rent",
    }
    assert mint == {
        "type": "token.minted",
        "ts": mint["ts"],
        "gid": grant.id,
        "jti": minted["jti"],
        "app": "dev",
        "agent": "agent:a",
        "sub": "user:alice",
        "exp": minted["exp"],
        "capabilities": minted["authorization_details"],
        "anc": [],
    }
    assert rev_token == {
        "type": "revoked",
        "ts": rev_token["ts"],
        "by": "dev",
        "what": {"jti": minted["jti"]},
        "reason": "lost laptop",
    }
    assert rev_grant["what"] == {"gid": grant.id} and rev_grant["reason"] == "user asked"


def test_service_token_exchanged_event(redis_client: redis.Redis, redis_prefix: str) -> None:
    from remit_service._audit import ServiceAudit

    audit = ServiceAudit(redis_client, redis_prefix, clock=lambda: NOW)
    audit.token_exchanged(
        gid="g_1",
        jti="t_2",
        app="dev",
        agent="agent:a",
        sub="user:alice",
        exp=NOW + 60,
        capabilities=[{"type": "remit.capability", "action": ACTION, "args": {}}],
        anc=["t_1"],
        parent="t_1",
    )
    ((_, event, _),) = entries(redis_client, redis_prefix)
    assert event["type"] == "token.exchanged" and event["parent"] == "t_1"
    assert event["anc"] == ["t_1"] and event["ts"] == NOW * 1000


# -- remit audit verify / export -------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_verify_passes_on_an_untouched_stream_of_several_writers(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_url: str,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = sign(claims(), key)
    writers = [make(), make(audit="sync"), make()]
    for i in range(300):
        writers[i % 3].check(token, action=ACTION, args=ARGS)
    for v in writers:
        v.close()
    code, out, _ = _cli(capsys, "audit", "verify", "--redis", redis_url, "--prefix", redis_prefix)
    assert code == 0, out
    assert "OK: 300 entries, 3 writers, 300 links checked, 0 problems" in out


def test_audit_export_is_resumable(
    make: Callable[..., remit.Verifier],
    key: IssuerKey,
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v = make(audit="sync")
    token = sign(claims(), key)
    state = tmp_path / "export.state"
    opts = ["--redis", redis_url, "--prefix", redis_prefix, "--state", str(state)]
    for _ in range(5):
        v.check(token, action=ACTION, args=ARGS)
    code, out, err = _cli(capsys, "audit", "export", "--format", "jsonl", *opts)
    first = [json.loads(line) for line in out.splitlines()]
    ids = [e[0] for e in entries(redis_client, redis_prefix)]
    assert code == 0 and [r["id"] for r in first] == ids
    assert json.loads(err) == {"exported": 5, "last_id": ids[-1]}
    assert state.read_text().strip() == ids[-1]
    assert [r["n"] for r in first] == [1, 2, 3, 4, 5]
    assert first[0]["event"] == json.loads(first[0]["ev"])
    for _ in range(3):
        v.check(token, action=ACTION, args=ARGS)
    code, out, _ = _cli(capsys, "audit", "export", *opts)
    assert code == 0 and [json.loads(line)["n"] for line in out.splitlines()] == [6, 7, 8]
    code, out, _ = _cli(capsys, "audit", "export", *opts)
    assert code == 0 and out == ""  # nothing new
    code, out, _ = _cli(
        capsys,
        "audit",
        "export",
        "--redis",
        redis_url,
        "--prefix",
        redis_prefix,
        "--from",
        ids[2],
    )
    assert [json.loads(line)["n"] for line in out.splitlines()] == [4, 5, 6, 7, 8]
    code, _, err = _cli(capsys, "audit", "export", "--redis", redis_url, "--from", "junk")
    assert code == 2 and "stream id" in err


def test_a_trimmed_stream_or_a_later_start_still_verifies(
    redis_url: str,
    redis_client: redis.Redis,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from remit._audit import ChainWriter

    writer = ChainWriter(redis_client, f"{redis_prefix}audit", maxlen=100)
    for i in range(20):
        writer.write([b'{"ts":%d,"type":"x"}' % (i * 100 + j) for j in range(100)])
    kept = redis_client.xrange(f"{redis_prefix}audit")
    assert 100 <= len(kept) < 2000  # MAXLEN ~ trimmed the head
    assert int(kept[0][1][b"n"]) > 1
    opts = ["--redis", redis_url, "--prefix", redis_prefix]
    code, out, _ = _cli(capsys, "audit", "verify", *opts)
    assert code == 0, out
    code, out, _ = _cli(capsys, "audit", "verify", *opts, "--from", kept[50][0].decode())
    assert code == 0 and f"OK: {len(kept) - 51} entries" in out


def test_end_to_end_trail_verifies_and_feeds_the_report(
    service: Server,
    client: remit.Client,
    make_verifier: Callable[..., remit.Verifier],
    redis_url: str,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Service and verifier events in one stream, as written for real: the chain verifies
    and the alignment report (the trail's reader) finds the grant and its calls."""
    cap = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
    grant = client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"], capabilities=[cap]
    )
    token = client.mint(grant.id)
    v = make_verifier(client)
    v.check(token, action="payments.transfer", args={"amount": 50})
    with pytest.raises(remit.Denied):
        v.check(token, action="payments.transfer", args={"amount": 500})
    v.close()
    opts = ["--redis", redis_url, "--prefix", redis_prefix]
    code, out, _ = _cli(capsys, "audit", "verify", *opts)
    assert code == 0 and "OK: 4 entries, 2 writers" in out, out
    code, out, err = _cli(capsys, "audit", "report", *opts, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["stream"]["skipped"] == 0  # every entry we wrote is one it reads
    assert (report["totals"]["allowed"], report["totals"]["denied"]) == (1, 1)
    assert [g["gid"] for g in report["grants"]] == [grant.id]
