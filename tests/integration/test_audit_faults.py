"""The audit trail under Redis outages: a private redis-server the test stops and restarts.

sync: no allowed call without its event (the call is denied instead). buffered: checks
never block or fail; every event is either written or counted as dropped; both recover
without restarting the verifier. A restarted private Redis comes back empty (no
persistence), so events are counted on each side of the outage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import remit
from remit._audit import ChainWriter, audit_stream

from tests.redis_server import PrivateRedis
from tests.tokens import ACTION, ARGS, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

PREFIX = "remit:"


# Every verifier a test makes is closed (or collected): its audit flusher thread ends.
pytestmark = pytest.mark.usefixtures("no_audit_thread_left_behind")


@pytest.fixture
def key() -> IssuerKey:
    return IssuerKey()


@pytest.fixture
def admin(private_redis: PrivateRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    yield client
    client.close()


def _verifier(key: IssuerKey, url: str, **kwargs: Any) -> remit.Verifier:
    return remit.Verifier(
        key.jwks(),
        issuer=ISSUER,
        audience=AUDIENCE,
        revocation="off",
        replay="local",
        redis=url,
        clock=lambda: NOW,
        **kwargs,
    )


def _stream(admin: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in admin.xrange(audit_stream(PREFIX))]


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_sync_mode_denies_the_call_instead_of_losing_its_event(
    private_redis: PrivateRedis, admin: redis.Redis, key: IssuerKey
) -> None:
    token = sign(claims(), key)
    with _verifier(key, private_redis.url, audit="sync") as v:
        for _ in range(3):
            v.check(token, action=ACTION, args=ARGS)
        assert len(_stream(admin)) == 3

        private_redis.kill()
        for _ in range(3):
            with pytest.raises(remit.Denied) as info:
                v.check(token, action=ACTION, args=ARGS)
            assert info.value.code is remit.Code.AUDIT_UNAVAILABLE
            assert info.value.http_status == 503

        private_redis.start()  # empty: the earlier events went with the old process
        for _ in range(4):
            v.check(token, action=ACTION, args=ARGS)  # recovered, same verifier
        after = _stream(admin)
        assert len(after) == 4  # every allowed call after the outage has its event
        # The chain goes on where it stopped: 3 before, no number spent on a denied call.
        assert [int(f[b"n"]) for f in after] == [4, 5, 6, 7]
        stats = v.audit_stats()
        assert stats is not None and stats.written == 7 and stats.write_errors == 3


def test_buffered_mode_loses_only_counted_events_and_never_blocks(
    private_redis: PrivateRedis, admin: redis.Redis, key: IssuerKey
) -> None:
    token = sign(claims(), key)
    with _verifier(key, private_redis.url, audit_buffer=100) as v:
        audit = v._audit
        assert audit is not None
        for _ in range(50):
            v.check(token, action=ACTION, args=ARGS)
        assert audit.flush()
        assert len(_stream(admin)) == 50

        private_redis.kill()
        for _ in range(1000):  # never raises, never waits on Redis
            v.check(token, action=ACTION, args=ARGS)
        stats = v.audit_stats()
        assert stats is not None
        assert stats.dropped >= 1000 - 100 - 500  # beyond the buffer (+ one batch in flight)
        assert stats.recorded == 1050 == stats.written + stats.dropped + stats.pending
        _wait(lambda: v.audit_stats().write_errors >= 1)  # type: ignore[union-attr]

        private_redis.start()
        _wait(lambda: v.audit_stats().pending == 0)  # type: ignore[union-attr]
        for _ in range(20):
            v.check(token, action=ACTION, args=ARGS)
        assert audit.flush()
        stats = v.audit_stats()
        assert stats is not None and stats.recorded == 1070
        # Every event is either in Redis or counted as dropped: nothing silently lost.
        assert len(_stream(admin)) == stats.written - 50
        assert stats.written + stats.dropped == 1070
        ns = [int(f[b"n"]) for f in _stream(admin)]
        assert ns == list(range(51, 51 + len(ns)))  # dropped events leave no gap


def test_close_with_redis_down_counts_what_it_could_not_write(
    private_redis: PrivateRedis, key: IssuerKey
) -> None:
    token = sign(claims(), key)
    v = _verifier(key, private_redis.url)
    private_redis.kill()
    for _ in range(10):
        v.check(token, action=ACTION, args=ARGS)
    t0 = time.monotonic()
    v.close()
    assert time.monotonic() - t0 < 10  # bounded by the socket timeouts, not hung
    stats = v.audit_stats()
    assert stats is not None and (stats.written, stats.dropped, stats.pending) == (0, 10, 0)


class _LostReply:
    """Redis applies the write but the reply never arrives (a fault a live server cannot
    be made to produce on demand): the script call runs, then raises."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.lose_next = False

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script

        return Script(self, script)

    def evalsha(self, *args: Any) -> Any:
        result = self._client.evalsha(*args)
        if self.lose_next:
            self.lose_next = False
            raise redis.ConnectionError("connection lost while reading the reply")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_write_whose_reply_was_lost_is_neither_duplicated_nor_a_gap(
    private_redis: PrivateRedis, admin: redis.Redis
) -> None:
    flaky = _LostReply(redis.Redis.from_url(private_redis.url))
    other = ChainWriter(admin, audit_stream(PREFIX))
    writer = ChainWriter(flaky, audit_stream(PREFIX))
    writer.write([b'{"ts":1,"type":"x"}'])
    flaky.lose_next = True
    batch = [b'{"ts":2,"type":"x"}', b'{"ts":3,"type":"x"}']
    with pytest.raises(redis.ConnectionError):
        writer.write(batch)
    other.write([b'{"ts":9,"type":"y"}'])  # another writer appends meanwhile
    writer.write(batch)  # the retry: it landed already, so nothing is sent again
    writer.write([b'{"ts":4,"type":"x"}'])
    mine = [f for f in _stream(admin) if f[b"w"] == writer.writer_id.encode()]
    assert [int(f[b"n"]) for f in mine] == [1, 2, 3, 4]

    flaky.lose_next = True  # and a sync-style caller that gives up on the lost event:
    with pytest.raises(redis.ConnectionError):
        writer.write([b'{"ts":5,"type":"x"}'])
    writer.write([b'{"ts":6,"type":"x"}'])  # chains after n=5, which did land
    mine = [f for f in _stream(admin) if f[b"w"] == writer.writer_id.encode()]
    assert [int(f[b"n"]) for f in mine] == [1, 2, 3, 4, 5, 6]
    flaky._client.close()


def test_service_issues_nothing_it_cannot_record(
    service: Any, client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """The audit stream unwritable (a key of the wrong type in its place, a real Redis
    error): grants and tokens are refused with nothing stored; a revocation takes effect
    and reports UNAVAILABLE until its event is recorded."""
    from tests.integration.conftest import count_keys

    cap = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
    grant = client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"], capabilities=[cap]
    )
    stream = audit_stream(redis_prefix)
    redis_client.rename(stream, f"{redis_prefix}saved")
    redis_client.set(stream, "not a stream")
    before = count_keys(redis_client, redis_prefix)
    with pytest.raises(remit.Unavailable, match="audit trail"):
        client.create_grant(
            subject="user:bob", agent="agent:a", audience=["payments"], capabilities=[cap]
        )
    with pytest.raises(remit.Unavailable, match="nothing was issued"):
        client.mint(grant.id)
    assert count_keys(redis_client, redis_prefix) == before  # no grant, no token
    with pytest.raises(remit.Unavailable, match="revocation is in effect"):
        client.revoke(grant_id=grant.id, reason="user asked")
    assert client.get_grant(grant.id).revoked

    redis_client.delete(stream)
    redis_client.rename(f"{redis_prefix}saved", stream)
    client.revoke(grant_id=grant.id, reason="user asked")  # the retry records it
    events = [json.loads(f[b"ev"]) for _, f in redis_client.xrange(stream)]
    assert [e["type"] for e in events] == ["grant.created", "revoked"]


def test_the_flusher_survives_an_error_redis_py_never_wraps(
    key: IssuerKey, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client closed under the writer makes redis-py raise TypeError (seen in CI); the
    flusher must count it, keep its events and carry on, not die with them unwritten."""
    token = sign(claims(), key)
    with _verifier(key, private_redis.url) as v:
        assert v._audit is not None
        writer = v._audit.writer
        real = writer.write
        failures = iter([TypeError("argument must be an int, or have a fileno() method")])

        def flaky(events: list[bytes]) -> None:
            exc = next(failures, None)
            if exc is not None:
                raise exc  # the fault a live Redis cannot be made to produce
            real(events)

        monkeypatch.setattr(writer, "write", flaky)
        v.check(token, action=ACTION, args=ARGS)
        deadline = time.monotonic() + 10
        while v.audit_stats().written < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = v.audit_stats()
    assert stats.written == 1 and stats.dropped == 0 and stats.write_errors == 1
