"""Revocation under Redis faults: kill and restart, FLUSHALL, CLIENT PAUSE, CLIENT KILL.

Each test runs a private ``redis-server`` (no persistence) and a service on it, with a
stream and a strict verifier checking under load in background threads. In every case:
no revoked token is ever accepted, checks fail closed while the state is unknown, and
everything recovers by itself (no restart of service or verifier).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from remit_service import KeyStore, Server, dev_config

from tests.redis_server import PrivateRedis

from .conftest import API_KEY

PREFIX = "remit-fault:"
ACTION = "payments.transfer"
ARGS = {"amount": 5}
CAPS = [{"action": ACTION, "args": {"amount": {"le": 100}}}]


def jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def outcome(v: remit.Verifier, token: str) -> tuple[str, str]:
    try:
        v.check(token, action=ACTION, args=ARGS)
    except remit.Denied as denied:
        return denied.code.value, denied.message
    return "allowed", ""


def settles(v: remit.Verifier, token: str, expected: str, timeout: float = 15.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        got = outcome(v, token)
        if got[0] == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


class Load:
    """Threads checking a revoked token over and over on every verifier; ``accepted``
    counts every time one was let through (must stay 0)."""

    def __init__(self, verifiers: list[remit.Verifier], revoked: list[str]) -> None:
        self.accepted = 0
        self.codes: set[str] = set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(v, revoked), daemon=True) for v in verifiers
        ]
        for t in self._threads:
            t.start()

    def _run(self, v: remit.Verifier, revoked: list[str]) -> None:
        while not self._stop.is_set():
            for token in revoked:
                code, _ = outcome(v, token)
                self.codes.add(code)
                if code == "allowed":
                    self.accepted += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)


@pytest.fixture
def world(
    tmp_path: Path, private_redis: PrivateRedis, stop_in_background: Callable[[Server], None]
) -> Iterator[dict[str, Any]]:
    cfg = dev_config(data_dir=tmp_path, redis=private_redis.url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix=PREFIX)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    client = remit.Client(server.grpc_target, api_key=API_KEY)
    made = [
        remit.Verifier.from_jwks(client.jwks(), issuer=client.issuer(), audience="payments",
                                 revocation=mode, redis=private_redis.url, prefix=PREFIX)
        for mode in ("stream", "strict")
    ]
    for v in made:
        assert v.wait_revocations_ready(10)
    g = client.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                            capabilities=CAPS, purpose="p", ttl=600)
    good, bad = client.mint(g.id), client.mint(g.id)
    client.revoke(jti=jti(bad))
    for v in made:
        assert settles(v, bad, "revoked")[0] == "revoked"
        assert outcome(v, good)[0] == "allowed"
    load = Load(made, [bad])
    yield {"client": client, "verifiers": made, "good": good, "bad": bad, "load": load,
           "redis": private_redis, "server": server}
    load.stop()
    for v in made:
        v.close()
    client.close()
    stop_in_background(server)
    assert load.accepted == 0, "a revoked token was accepted"


def admin(r: PrivateRedis) -> redis.Redis:
    return redis.Redis.from_url(r.url, socket_timeout=5)


def fresh_token(client: remit.Client) -> str:
    """A new grant and token (after a data loss the old grant is gone); the service may
    need a moment to see Redis back, so retry briefly."""
    deadline = time.monotonic() + 15
    while True:
        try:
            g = client.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                                    capabilities=CAPS, purpose="p", ttl=600)
            return client.mint(g.id)
        except remit.Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def recovered_after_data_loss(world: dict[str, Any]) -> None:
    for v in world["verifiers"]:
        code, message = settles(v, world["good"], "revoked")
        assert code == "revoked" and message.startswith("epoch"), message
        assert outcome(v, world["bad"])[0] == "revoked"
    new = fresh_token(world["client"])
    for v in world["verifiers"]:
        assert settles(v, new, "allowed")[0] == "allowed"


def test_kill_and_restart_redis_during_load(world: dict[str, Any]) -> None:
    r: PrivateRedis = world["redis"]
    r.kill()
    for v in world["verifiers"]:
        assert settles(v, world["good"], "revocation_unavailable")[0] == "revocation_unavailable"
    r.start()  # empty: no persistence
    recovered_after_data_loss(world)
    assert "revocation_unavailable" in world["load"].codes


def test_flushall_during_load(world: dict[str, Any]) -> None:
    with admin(world["redis"]) as a:
        a.flushall()
    recovered_after_data_loss(world)


def test_client_pause_fails_closed_then_recovers(world: dict[str, Any]) -> None:
    stream = world["verifiers"][0]
    with admin(world["redis"]) as a:
        a.execute_command("CLIENT", "PAUSE", 4000, "ALL")
    assert settles(stream, world["good"], "revocation_unavailable")[0] == "revocation_unavailable"
    for v in world["verifiers"]:
        assert settles(v, world["good"], "allowed")[0] == "allowed"
        assert outcome(v, world["bad"])[0] == "revoked"
    status = stream.revocation_status()
    assert status is not None and status.epoch is not None and status.reloads == 1


def test_client_kill_resumes_from_the_last_entry(world: dict[str, Any]) -> None:
    stream = world["verifiers"][0]
    with admin(world["redis"]) as a:
        killed = a.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed >= 1
        world["client"].revoke(jti=jti(world["good"]))  # while the feed reconnects
        killed_again = a.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed_again >= 1
    for v in world["verifiers"]:
        assert settles(v, world["good"], "revoked")[0] == "revoked"
    status = stream.revocation_status()
    assert status is not None and status.reloads == 1  # resumed; no full reload needed
    new = fresh_token(world["client"])
    assert settles(stream, new, "allowed")[0] == "allowed"
