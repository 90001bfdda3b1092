"""Redis goes away and comes back: the service answers UNAVAILABLE, verifiers fail closed,
and both recover on their own once Redis is back (no restart of either).

Each test runs its own ``redis-server`` (no persistence) on a free port, so stopping it
cannot disturb anything else; the fixture kills it whatever happens.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import remit
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import KeyStore, Server, dev_config

from tests.redis_server import PrivateRedis

from .conftest import API_KEY, AUTH, http_get

PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
ARGS = {"amount": 5}


@pytest.fixture
def down_service(
    tmp_path: Path, private_redis: PrivateRedis, stop_in_background: Callable[[Server], None]
) -> Iterator[Server]:
    cfg = dev_config(data_dir=tmp_path, redis=private_redis.url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix="remit-down:")
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


@pytest.fixture
def down_client(down_service: Server) -> Iterator[remit.Client]:
    with remit.Client(down_service.grpc_target, api_key=API_KEY) as c:
        yield c


@pytest.fixture
def verifier(down_client: remit.Client, private_redis: PrivateRedis) -> Iterator[remit.Verifier]:
    with remit.Verifier.from_jwks(down_client.jwks(), issuer=down_client.issuer(),
                                  audience="payments", revocation="strict",
                                  redis=private_redis.url, prefix="remit-down:") as v:
        yield v


def _timed(call: Callable[[], Any], limit: float) -> Any:
    """Run ``call``: it must end (a failure, not a hang). The limits are generous on
    purpose: this is a liveness check on a noisy machine, not a latency assertion."""
    start = time.monotonic()
    try:
        return call()
    finally:
        assert time.monotonic() - start < limit, "took too long"


def _grant(c: remit.Client) -> remit.Grant:
    return c.create_grant(subject="user:alice", agent="agent:a", audience=["payments"],
                          capabilities=[PAY], ttl=600)


def _denial(v: remit.Verifier, token: str) -> remit.Denied:
    with pytest.raises(remit.Denied) as exc:
        v.check(token, action="payments.transfer", args=ARGS)
    return exc.value


def _code(v: remit.Verifier, token: str) -> str:
    return _denial(v, token).code


def _message(v: remit.Verifier, token: str) -> str:
    return _denial(v, token).message


@pytest.mark.parametrize("how", ["shutdown-nosave", "kill"])
def test_redis_down_fails_closed_and_recovers(
    how: str,
    private_redis: PrivateRedis,
    down_service: Server,
    down_client: remit.Client,
    verifier: remit.Verifier,
) -> None:
    c, v = down_client, verifier
    g = _grant(c)
    seen = c.mint(g.id)  # checked once while Redis is up: cached by the verifier
    unseen = c.mint(g.id)  # first seen while Redis is down
    assert v.check(seen, action="payments.transfer", args=ARGS).allowed
    jti = remit.peek_unverified(seen)[1]["jti"]

    if how == "kill":
        private_redis.kill()
    else:
        private_redis.shutdown_nosave()

    # The service: UNAVAILABLE for everything that needs Redis, quickly.
    calls: dict[str, Callable[[], Any]] = {
        "create_grant": lambda: _grant(c),
        "get_grant": lambda: c.get_grant(g.id),
        "list_grants": lambda: list(c.list_grants()),
        "mint": lambda: c.mint(g.id),
        "revoke_grant": lambda: c.revoke(grant_id=g.id),
        "revoke_jti": lambda: c.revoke(jti=jti),
    }
    for name, call in calls.items():
        with pytest.raises(remit.Unavailable) as exc:
            _timed(call, 20.0)
        assert "Redis" in exc.value.message, name
    # On the wire it is UNAVAILABLE (the client also maps deadline errors to Unavailable).
    with grpc.insecure_channel(down_service.grpc_target) as channel:
        stub = remit_pb2_grpc.RemitStub(channel)
        request = remit_pb2.CreateGrantRequest(
            subject="u", agent="a", audience=["payments"],
            capabilities=[remit_pb2.Capability(action="payments.transfer")],
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateGrant(request, metadata=AUTH, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Keys do not need Redis.
    assert c.jwks()["keys"]
    status, body, _ = http_get(down_service.http_url + "/healthz")
    assert status == 503
    assert body["redis"] == "unavailable"
    assert body["status"] != "ok"
    assert http_get(down_service.http_url + "/.well-known/jwks.json")[0] == 200

    # The verifier: fail closed, for a cached token and a new one alike.
    assert _timed(lambda: _code(v, seen), 10.0) == "revocation_unavailable"
    assert _timed(lambda: _code(v, unseen), 10.0) == "revocation_unavailable"

    # Redis comes back (empty: no persistence) on the same port.
    private_redis.start()
    status, body, _ = http_get(down_service.http_url + "/healthz")
    assert (status, body["status"], body["redis"]) == (200, "ok", "ok")
    # Same service, same verifier objects: everything works again.
    g2 = _grant(c)
    token = c.mint(g2.id)
    assert v.check(token, action="payments.transfer", args=ARGS).allowed
    assert [x.id for x in c.list_grants()] == [g2.id]  # the old grant went with the data
    with pytest.raises(remit.NotFound):
        c.get_grant(g.id)
    c.revoke(jti=remit.peek_unverified(token)[1]["jti"])
    assert _code(v, token) == "revoked"
    other = c.mint(g2.id)
    assert v.check(other, action="payments.transfer", args=ARGS).allowed
    c.revoke(grant_id=g2.id)
    assert _code(v, other) == "revoked"
    with pytest.raises(remit.FailedPrecondition):
        c.mint(g2.id)


def test_hung_redis_times_out_instead_of_hanging(
    private_redis: PrivateRedis, down_client: remit.Client, verifier: remit.Verifier
) -> None:
    c, v = down_client, verifier
    g = _grant(c)
    token = c.mint(g.id)
    assert v.check(token, action="payments.transfer", args=ARGS).allowed
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        assert _timed(lambda: _code(v, token), 10.0) == "revocation_unavailable"
        with pytest.raises(remit.Unavailable):
            _timed(lambda: c.mint(g.id), 20.0)  # a Redis timeout says "do not retry"
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    assert v.check(token, action="payments.transfer", args=ARGS).allowed
    assert c.mint(g.id)


def test_revocation_survives_redis_data_loss(
    private_redis: PrivateRedis, down_client: remit.Client, verifier: remit.Verifier
) -> None:
    c, v = down_client, verifier
    g = _grant(c)
    token = c.mint(g.id)
    c.revoke(grant_id=g.id)
    assert _code(v, token) == "revoked"
    private_redis.shutdown_nosave()
    private_redis.start()  # empty: the revocation is gone
    # Nothing revoked may ever be accepted again: first no epoch (fail closed), then a
    # new epoch (re-created by the running service within a second) that the token
    # predates.
    assert _code(v, token) in ("revoked", "revocation_unavailable")
    deadline = time.monotonic() + 5
    while _code(v, token) != "revoked":
        assert time.monotonic() < deadline, "the service did not re-create the epoch"
        time.sleep(0.1)
    assert "epoch" in _message(v, token)
    # A token minted now, under a new grant, works at once.
    g2 = _grant(c)
    assert v.check(c.mint(g2.id), action="payments.transfer", args=ARGS).grant_id == g2.id


def test_flushall_is_detected_like_a_restart(
    private_redis: PrivateRedis, down_client: remit.Client, verifier: remit.Verifier
) -> None:
    c, v = down_client, verifier
    g = _grant(c)
    token = c.mint(g.id)
    c.revoke(grant_id=g.id)
    with redis.Redis.from_url(private_redis.url) as r:
        r.flushall()
    assert _code(v, token) in ("revoked", "revocation_unavailable")
    time.sleep(1.5)
    assert _code(v, token) == "revoked"
