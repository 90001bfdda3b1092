"""Revocation end to end: every kind of Revoke, seen by stream and strict verifiers alike.

Redis comes from the ``service`` / ``redis_*`` fixtures only, and every multi-key command
stays in one hash slot, so this module can run on Redis Cluster as well
(``REMIT_TEST_REDIS=cluster`` or the ``redis_both`` marker).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import grpc
import pytest
import remit
from remit._redis_keys import RedisKeys
from remit._revfeed import FIELD
from remit.v1 import remit_pb2
from remit_service import Server
from remit_service._issuer import Issuer

from tests.integration.conftest import API_KEY, AUTH

ACTION = "payments.transfer"
ARGS = {"amount": 5}
CAPS = [{"action": ACTION, "args": {"amount": {"le": 100}}}]
MODES = ("stream", "strict")

pytestmark = pytest.mark.redis_both  # every test also on a real 3-master Redis Cluster


def grant(c: remit.Client, subject: str = "user:alice", agent: str = "agent:a") -> remit.Grant:
    return c.create_grant(subject=subject, agent=agent, audience=["payments"],
                          capabilities=CAPS, purpose="rent", ttl=600)


@pytest.fixture
def verifiers(
    client: remit.Client, redis_url: str, redis_prefix: str
) -> Iterator[Callable[..., remit.Verifier]]:
    made: list[remit.Verifier] = []

    def make(mode: str = "stream", **kwargs: Any) -> remit.Verifier:
        kwargs.setdefault("revocation", mode)
        v = remit.Verifier.from_jwks(client.jwks(), issuer=client.issuer(), audience="payments",
                                     redis=redis_url, prefix=redis_prefix, **kwargs)
        made.append(v)
        assert v.wait_revocations_ready(10)
        return v

    yield make
    for v in made:
        v.close()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    out: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return out


def _jti(token: str) -> str:
    return str(_claims(token)["jti"])


def outcome(v: remit.Verifier, token: str) -> str:
    try:
        v.check(token, action=ACTION, args=ARGS)
    except remit.Denied as denied:
        return denied.code.value
    return "allowed"


def settles(v: remit.Verifier, token: str, expected: str, timeout: float = 5.0) -> str:
    """The outcome once it is ``expected`` (stream verifiers see a revocation within
    milliseconds; this polls instead of asserting a time), or the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        got = outcome(v, token)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.005)


@pytest.mark.parametrize("mode", MODES)
def test_revoke_by_jti_kills_only_that_token(
    client: remit.Client, verifiers: Callable[..., remit.Verifier], mode: str
) -> None:
    v = verifiers(mode)
    g = grant(client)
    doomed, other = client.mint(g.id), client.mint(g.id)
    assert outcome(v, doomed) == "allowed"
    client.revoke(jti=_jti(doomed))
    assert settles(v, doomed, "revoked") == "revoked"
    assert outcome(v, other) == "allowed"


@pytest.mark.parametrize("mode", MODES)
def test_revoke_grant_kills_its_tokens_and_its_mints(
    client: remit.Client, verifiers: Callable[..., remit.Verifier], mode: str
) -> None:
    v = verifiers(mode)
    g, kept = grant(client), grant(client)
    token, unrelated = client.mint(g.id), client.mint(kept.id)
    client.revoke(grant_id=g.id, reason="user said stop")
    assert settles(v, token, "revoked") == "revoked"
    assert outcome(v, unrelated) == "allowed"
    with pytest.raises(remit.FailedPrecondition):
        client.mint(g.id)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ["agent", "subject", "all"])
def test_revoke_everything_issued_before_now(
    client: remit.Client, verifiers: Callable[..., remit.Verifier], mode: str, target: str
) -> None:
    """Tokens issued until now die; other agents/subjects keep theirs; the grant lives on
    and a token minted right after (even in the same second) works at once."""
    v = verifiers(mode)
    hit = [grant(client, "user:alice", "agent:a"), grant(client, "user:alice", "agent:a")]
    spared = grant(client, "user:bob", "agent:b")
    tokens = [client.mint(g.id) for g in hit]
    other = client.mint(spared.id)
    kwargs: dict[str, Any] = {"agent": {"agent": "agent:a"}, "subject": {"subject": "user:alice"},
                              "all": {"all": True}}[target]
    client.revoke(**kwargs, reason="incident")
    for t in tokens:
        assert settles(v, t, "revoked") == "revoked"
    assert outcome(v, other) == ("revoked" if target == "all" else "allowed")
    fresh = client.mint(hit[0].id)
    assert settles(v, fresh, "allowed") == "allowed"


@pytest.mark.parametrize("mode", MODES)
def test_revoke_before_a_past_time_spares_later_tokens(
    client: remit.Client, verifiers: Callable[..., remit.Verifier], mode: str
) -> None:
    v = verifiers(mode)
    g = grant(client)
    token = client.mint(g.id)
    iat = int(_claims(token)["iat"])
    client.revoke(grant_id=g.id, before=iat)  # issued before iat: not this token
    client.revoke(agent="agent:a", before=iat)
    time.sleep(0.05)
    assert outcome(v, token) == "allowed"
    client.revoke(grant_id=g.id, before=iat + 1)
    assert settles(v, token, "revoked") == "revoked"
    assert "before" in _message(v, token)


def _message(v: remit.Verifier, token: str) -> str:
    with pytest.raises(remit.Denied) as exc:
        v.check(token, action=ACTION, args=ARGS)
    return exc.value.message


def test_a_verifier_started_later_loads_every_live_revocation(
    client: remit.Client, verifiers: Callable[..., remit.Verifier]
) -> None:
    g1, g2, g3 = grant(client), grant(client, agent="agent:z"), grant(client)
    t1, t2, t3 = client.mint(g1.id), client.mint(g2.id), client.mint(g3.id)
    client.revoke(grant_id=g1.id)
    client.revoke(agent="agent:z")
    client.revoke(jti=_jti(t3))
    v = verifiers()
    assert [outcome(v, t) for t in (t1, t2, t3)] == ["revoked"] * 3
    status = v.revocation_status()
    assert status is not None and status.ready and status.revoked_tokens == 1
    assert status.revoked_grants == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jti": "not an id!"}, "jti"),
        ({}, "target"),
        ({"agent": "agent:a", "before": 4_000_000_000}, "before"),
        ({"agent": "agent:a", "before": -1}, "before"),
        ({"jti": "t_aaaaaaaaaaaa", "before": 1}, "before"),
        ({"agent": "a\x00b"}, "agent"),
        ({"subject": "x" * 300}, "subject"),
    ],
)
def test_bad_revoke_requests_are_invalid_and_write_nothing(
    service: Server, stub: Any, redis_client: Any, redis_prefix: str,
    kwargs: dict[str, Any], field: str,
) -> None:
    before = redis_client.xlen(RedisKeys(redis_prefix).revocation_stream())
    with pytest.raises(grpc.RpcError) as exc:
        stub.Revoke(remit_pb2.RevokeRequest(**kwargs), metadata=AUTH)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (exc.value.details() or "")
    assert redis_client.xlen(RedisKeys(redis_prefix).revocation_stream()) == before


def test_revocation_entries_carry_a_bounded_lifetime(
    service: Server, client: remit.Client, redis_client: Any, redis_prefix: str
) -> None:
    """Each entry's ``until`` is when no token it could affect is alive, plus the margin;
    the strict keys expire then too."""
    g = grant(client)
    token = client.mint(g.id, ttl=120)
    exp = int(_claims(token)["exp"])
    start = int(time.time())
    client.revoke(jti=_jti(token))
    client.revoke(grant_id=g.id)
    now = int(time.time())
    keys = RedisKeys(redis_prefix)
    entries = redis_client.xrange(keys.revocation_stream())
    values = [fields[FIELD].decode().split() for _, fields in entries]
    margin, max_ttl = service.config.revocation_margin, service.config.max_token_ttl
    # A token's entry outlives the token: a renewal (Exchange) issued before the revocation
    # may live until min(grant expiry, T + max_token_ttl); nothing issued after T can.
    assert values[0][:3] == ["1", "j", _jti(token)]
    assert exp + margin <= int(values[0][3])
    assert min(g.expires_at, start + max_ttl) <= int(values[0][3]) - margin
    assert int(values[0][3]) - margin <= min(g.expires_at, now + max_ttl)
    assert values[1][:3] == ["1", "g", g.id]
    assert int(values[1][3]) <= min(g.expires_at, now + max_ttl) + margin
    assert 0 < redis_client.ttl(keys.token_revoked(g.id, _jti(token))) <= max_ttl + margin + 1
    assert 0 < redis_client.ttl(keys.grant_revoked(g.id)) <= max_ttl + margin + 1


def test_revocation_metrics_count_and_report_the_stream(
    service: Server, client: remit.Client
) -> None:
    g = grant(client)
    client.revoke(jti=_jti(client.mint(g.id)))
    client.revoke(agent="agent:a")
    client.revoke(grant_id=g.id)
    metrics = service.core.revocation_metrics
    snap = metrics.snapshot()
    assert snap["revocations_jti"] == 1 and snap["revocations_agent"] == 1
    assert snap["revocations_grant"] == 1 and snap["stream_entries_written"] == 3
    assert metrics.stream().entries == 3


def test_trimming_keeps_every_entry_a_live_token_needs(
    service: Server, client: remit.Client, redis_client: Any, redis_prefix: str
) -> None:
    g = grant(client)
    client.revoke(grant_id=g.id)
    assert service.core.trim_revocations() == 0
    assert redis_client.xlen(RedisKeys(redis_prefix).revocation_stream()) == 1


def test_close_stops_the_feed_thread(
    client: remit.Client, redis_url: str, redis_prefix: str
) -> None:
    before = {t for t in threading.enumerate() if t.name == "remit-revfeed"}
    with remit.Verifier.from_jwks(client.jwks(), issuer=client.issuer(), audience="payments",
                                  redis=redis_url, prefix=redis_prefix) as v:
        assert v.revocation_mode == "stream"
        assert v.wait_revocations_ready(10)
        running = {t for t in threading.enumerate() if t.name == "remit-revfeed"} - before
        assert len(running) == 1
    (thread,) = running
    assert not thread.is_alive()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remit_service", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_cli_revoke_by_agent_before_an_iso_time_and_usage_errors(
    service: Server, client: remit.Client, verifiers: Callable[..., remit.Verifier]
) -> None:
    v = verifiers()
    g = grant(client, agent="agent:cli")
    token = client.mint(g.id)
    iat = int(_claims(token)["iat"])
    app = ["--target", service.grpc_target, "--api-key", API_KEY]
    when = datetime.fromtimestamp(iat + 1, tz=UTC).isoformat()
    out = _cli("revoke", *app, "--agent", "agent:cli", "--before", when, "--reason", "cli")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"revoked": "agent:cli", "revoked_at": ANY,
                                      "issued_before": iat + 1}
    assert settles(v, token, "revoked") == "revoked"
    for bad in (["--jti", "t_aaaaaaaaaaaa", "--grant", g.id], [],
                ["--jti", "t_aaaaaaaaaaaa", "--before", "1"],
                ["--all", "--before", "2026-01-01T00:00:00"],  # no zone
                ["--all", "--before", "yesterday"]):
        out = _cli("revoke", *app, *bad)
        assert out.returncode == 2, (bad, out.stderr)
        assert "Traceback" not in out.stderr


def test_global_kill_switch_revokes_every_app_and_forged_grants(
    policy_service: Server, policy_config_path: Any, bank: remit.Client, mail: remit.Client,
    redis_url: str, redis_prefix: str,
) -> None:
    """``remit revoke --all --everywhere --config FILE`` (the operator, straight on Redis):
    every app's tokens die, and so does a token of a stolen issuer key under a grant id
    no grant has; apps mint working tokens at once."""
    pay = bank.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                            capabilities=CAPS, purpose="p", ttl=600)
    send = mail.create_grant(subject="user:a", agent="agent:a", audience=["email"],
                             capabilities=[{"action": "email.send", "args": {}}],
                             purpose="p", ttl=600)
    tokens = {"payments": bank.mint(pay.id), "email": mail.mint(send.id)}
    forged = Issuer(policy_service.keystore).sign(
        {**_claims(tokens["payments"]), "gid": "g_forgedgrant00001", "jti": "t_forged000000001"}
    )
    made = {
        (aud, mode): remit.Verifier.from_jwks(bank.jwks(), issuer=bank.issuer(), audience=aud,
                                              redis=redis_url, prefix=redis_prefix,
                                              revocation=mode)
        for aud in ("payments", "email") for mode in MODES
    }
    try:
        calls = {"payments": (ACTION, ARGS), "email": ("email.send", {})}

        def code(aud: str, mode: str, token: str) -> str:
            action, args = calls[aud]
            try:
                made[aud, mode].check(token, action=action, args=args)
            except remit.Denied as denied:
                return denied.code.value
            return "allowed"

        assert all(v.wait_revocations_ready(10) for v in made.values())
        assert code("payments", "stream", forged) == "allowed"
        out = _cli("revoke", "--all", "--everywhere", "--config", str(policy_config_path))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["grants"] == 2
        for (aud, mode) in made:
            deadline = time.monotonic() + 10
            while code(aud, mode, tokens[aud]) != "revoked" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert code(aud, mode, tokens[aud]) == "revoked", (aud, mode)
        assert code("payments", "stream", forged) == "revoked"
        assert code("payments", "strict", forged) == "revoked"  # no such grant record
        fresh = bank.mint(pay.id)
        for mode in MODES:
            assert code("payments", mode, fresh) == "allowed"
    finally:
        for v in made.values():
            v.close()
