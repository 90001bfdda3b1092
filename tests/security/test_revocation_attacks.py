"""Attacks on revocation: data loss, a stale feed, a trimmed stream, forged stream
entries, and a descendant of a revoked token (rows in tests/security/README.md).

Each runs a service on a private ``redis-server`` so it can flush, freeze and rewrite
the revocation stream freely.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from remit._redis_keys import RedisKeys
from remit_service import KeyStore, Server, dev_config
from remit_service._issuer import Issuer

from tests.integration.conftest import API_KEY
from tests.redis_server import PrivateRedis

PREFIX = "remit-sec:"
KEYS = RedisKeys(PREFIX)
ACTION = "payments.transfer"
ARGS = {"amount": 5}
CAPS = [{"action": ACTION, "args": {"amount": {"le": 100}}}]


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    out: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return out


def outcome(v: remit.Verifier, token: str) -> tuple[str, str]:
    try:
        v.check(token, action=ACTION, args=ARGS)
    except remit.Denied as denied:
        return denied.code.value, denied.message
    return "allowed", ""


def settles(v: remit.Verifier, token: str, expected: str, timeout: float = 15.0) -> tuple[str, str]:
    """Poll until the outcome is ``expected``; every outcome seen on the way is checked
    by the caller's ``never`` set through ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        got = outcome(v, token)
        if got[0] == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def past_the_loss() -> None:
    """Tokens are stamped in whole seconds, possibly one ahead: after lost state at
    second s, tokens from s + 2 on are surely newer."""
    time.sleep(2.02 - time.time() % 1)


@pytest.fixture
def svc(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[dict[str, Any]]:
    cfg = dev_config(data_dir=tmp_path, redis=private_redis.url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix=PREFIX)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    client = remit.Client(server.grpc_target, api_key=API_KEY)
    made: list[remit.Verifier] = []

    def verifier(mode: str = "stream", **kwargs: Any) -> remit.Verifier:
        v = remit.Verifier.from_jwks(client.jwks(), issuer=client.issuer(), audience="payments",
                                     revocation=mode, redis=private_redis.url, prefix=PREFIX,
                                     **kwargs)
        made.append(v)
        assert v.wait_revocations_ready(10)
        return v

    def token() -> str:
        g = client.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                                capabilities=CAPS, purpose="p", ttl=600)
        return client.mint(g.id)

    admin = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    yield {"client": client, "verifier": verifier, "token": token, "admin": admin,
           "redis": private_redis, "server": server}
    for v in made:
        v.close()
    admin.close()
    client.close()
    server.stop(grace=0)


@pytest.mark.parametrize("mode", ["stream", "strict"])
def test_revoked_token_is_never_accepted_after_flushall(svc: dict[str, Any], mode: str) -> None:
    v = svc["verifier"](mode)
    token = svc["token"]()
    svc["client"].revoke(jti=claims_of(token)["jti"])
    assert settles(v, token, "revoked")[0] == "revoked"
    svc["admin"].flushall()  # the revocation is gone from Redis
    seen = set()
    deadline = time.monotonic() + 3  # through the loss and the service re-creating the epoch
    while time.monotonic() < deadline:
        seen.add(outcome(v, token)[0])
    assert "allowed" not in seen
    code, message = settles(v, token, "revoked")
    assert code == "revoked" and message.startswith("epoch")
    new = svc["token"]()
    assert settles(v, new, "allowed")[0] == "allowed"


def test_stale_feed_fails_closed(svc: dict[str, Any]) -> None:
    v = svc["verifier"]("stream", revocation_max_age=0.5)
    token = svc["token"]()
    assert outcome(v, token)[0] == "allowed"
    proc = svc["redis"].proc
    proc.send_signal(signal.SIGSTOP)  # Redis hangs: the feed cannot confirm anything
    try:
        code, message = settles(v, token, "revocation_unavailable")
        assert code == "revocation_unavailable" and "not confirmed current" in message
    finally:
        proc.send_signal(signal.SIGCONT)
    assert settles(v, token, "allowed")[0] == "allowed"


def test_stale_feed_is_trusted_only_when_asked_for_loudly(
    svc: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    revoked, live = svc["token"](), svc["token"]()
    svc["client"].revoke(jti=claims_of(revoked)["jti"])
    v = svc["verifier"]("stream", revocation_max_age=0.5, unsafe_stale_revocations_ok=True)
    assert "UNSAFE" in caplog.text
    svc["redis"].proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)  # older than the bound
        status = v.revocation_status()
        assert status is not None and not status.ready
        assert outcome(v, live)[0] == "allowed"
        assert outcome(v, revoked)[0] == "revoked"  # what it knows, it still enforces
    finally:
        svc["redis"].proc.send_signal(signal.SIGCONT)


def test_trimmed_stream_refuses_what_the_verifier_may_have_missed(svc: dict[str, Any]) -> None:
    """The stream is trimmed past entries a verifier has not read yet (here: its feed is
    held while a revocation is written and trimmed away). The verifier must not resume
    as if nothing happened: it refuses every token issued up to the trimmed entry.
    (A verifier *started* after such a trim cannot know: known gap, README row.)"""
    v = svc["verifier"]("stream")
    token = svc["token"]()
    feed = v._state.feed
    assert feed is not None
    held, release = threading.Event(), threading.Event()
    follow = feed._follow

    def held_follow() -> None:  # fault injection: the feed falls behind
        held.set()
        release.wait(10)
        follow()

    feed._follow = held_follow  # type: ignore[method-assign]
    assert held.wait(5)
    svc["client"].revoke(jti=claims_of(token)["jti"])
    svc["admin"].xtrim(KEYS.revocation_stream(), maxlen=0)  # the revocation is gone
    feed._follow = follow  # type: ignore[method-assign]
    release.set()
    code, message = settles(v, token, "revoked")
    assert code == "revoked" and "deleted from the stream" in message
    past_the_loss()
    new = svc["token"]()
    assert settles(v, new, "allowed")[0] == "allowed"


@pytest.mark.parametrize(
    "fields",
    [
        {b"r": b"2 j t_aaaaaaaaaaaa 9999999999"},  # unknown version
        {b"r": b"1 j t_aaaaaaaaaaaa 9999999999", b"x": b"1"},  # extra field
        # (every other malformed value: unit/test_revfeed.py::test_entry_vectors)
        {b"jti": b"t_aaaaaaaaaaaa"},  # another format altogether
    ],
)
def test_forged_stream_entry_is_treated_as_lost_state(
    svc: dict[str, Any], fields: dict[bytes, bytes]
) -> None:
    """An entry the verifier cannot read might have revoked anything: every token issued
    up to it is refused (``revoked``, reason epoch); the feed stays current and tokens
    issued afterwards work."""
    v = svc["verifier"]("stream")
    old = svc["token"]()
    assert outcome(v, old)[0] == "allowed"
    svc["admin"].xadd(KEYS.revocation_stream(), fields)
    code, message = settles(v, old, "revoked")
    assert code == "revoked" and "unreadable revocation entry" in message
    status = v.revocation_status()
    assert status is not None and status.ready
    past_the_loss()
    new = svc["token"]()
    assert settles(v, new, "allowed")[0] == "allowed"
    later = svc["verifier"]("stream")  # a verifier loading the stream refuses it as well
    assert outcome(later, old)[0] == "revoked" and outcome(later, new)[0] == "allowed"


@pytest.mark.parametrize("mode", ["stream", "strict"])
def test_revoking_an_ancestor_revokes_its_descendants(svc: dict[str, Any], mode: str) -> None:
    """A narrowed token names its ancestors in ``anc``: revoking the parent (by jti) kills
    the child and the grandchild, not a sibling minted from the grant."""
    v = svc["verifier"](mode)
    client = svc["client"]
    g = client.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                            capabilities=CAPS, purpose="p", ttl=600)
    parent, sibling = client.mint(g.id), client.mint(g.id)
    issuer = Issuer(svc["server"].keystore)
    base = claims_of(parent)
    child = issuer.sign({**base, "jti": "t_child0000000", "anc": [base["jti"]]})
    grandchild = issuer.sign(
        {**base, "jti": "t_grandchild00", "anc": [base["jti"], "t_child0000000"]}
    )
    assert [outcome(v, t)[0] for t in (child, grandchild)] == ["allowed", "allowed"]
    client.revoke(jti=base["jti"])
    for t in (parent, child, grandchild):
        assert settles(v, t, "revoked")[0] == "revoked"
    assert outcome(v, sibling)[0] == "allowed"
