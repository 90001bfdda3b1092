"""Service faults: the service process is killed, restarted, replicated, drained.

Every service here is a real ``remit serve --dev`` subprocess (as an operator runs it),
on ports picked up front so that a restart comes back on the same address; every
process is killed when the test ends, whatever happens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
import remit._client
from remit._redis_keys import RedisKeys
from remit_service._store import GrantRecord

from tests.redis_server import PrivateRedis

API_KEY = "faults-test-key"
PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
ARGS = {"amount": 5}
# Quick enough for a test, and the channel reconnects on the same schedule.
FAST = remit.Retry(attempts=4, initial=0.02, maximum=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """``remit serve --dev`` on fixed ports; ``start()`` again after a kill restarts it."""

    def __init__(self, *, data_dir: Path, redis_url: str, prefix: str) -> None:
        self.args = [
            sys.executable, "-m", "remit_service", "serve", "--dev",
            "--data-dir", str(data_dir), "--redis", redis_url, "--prefix", prefix,
            "--grpc-port", str(free_port()), "--http-port", str(free_port()),
        ]  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.stderr: queue.Queue[str] = queue.Queue()

    @property
    def target(self) -> str:
        return str(self.info["grpc"])

    def start(self) -> ServiceProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stderr = queue.Queue()
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "REMIT_DEV_API_KEY": API_KEY},
        )
        lines: queue.Queue[str] = queue.Queue()
        for stream, sink in ((self.proc.stdout, lines), (self.proc.stderr, self.stderr)):
            threading.Thread(target=_pump, args=(stream, sink), daemon=True).start()
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            raise AssertionError(f"no ready line; stderr: {self.stderr_text()}") from None
        assert line, f"service exited at start; stderr: {self.stderr_text()}"
        self.info = json.loads(line)
        assert self.info["ready"] is True
        return self

    def wait_stderr(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if text in self.stderr.get(timeout=left):
                    return
            except queue.Empty:
                break
        raise AssertionError(f"{text!r} not on stderr within {timeout} s")

    def stderr_text(self) -> str:
        out = []
        while not self.stderr.empty():
            out.append(self.stderr.get_nowait())
        return "".join(out)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)


def _pump(stream: Any, sink: queue.Queue[str]) -> None:
    with stream:
        for line in stream:
            sink.put(line)
    sink.put("")  # EOF


@pytest.fixture
def spawn(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[Callable[..., Any]]:
    """Start services sharing one data dir (so one issuer key), Redis and prefix."""
    started: list[ServiceProcess] = []

    def make(redis_url: str = redis_url) -> ServiceProcess:
        svc = ServiceProcess(data_dir=tmp_path / "dev", redis_url=redis_url, prefix=redis_prefix)
        started.append(svc)
        return svc.start()

    try:
        yield make
    finally:
        for svc in started:
            svc.kill()


def _grant(c: remit.Client) -> remit.Grant:
    return c.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"], capabilities=[PAY], ttl=600
    )


def _verifier(c: remit.Client, redis_url: str, prefix: str) -> remit.Verifier:
    return remit.Verifier.from_jwks(
        c.jwks(), issuer=c.issuer(), audience="payments", revocation="strict",
        redis=redis_url, prefix=prefix,
    )  # fmt: skip


def _assert_no_half_written_grant(r: redis.Redis, prefix: str, app: str = "dev") -> set[str]:
    """Every record is complete and indexed. The index is written first (the two keys
    live in different hash slots, so no transaction spans them): a kill in between may
    leave an index entry without a record, which reads drop; never a record nobody
    indexed, and never a partial record. Returns the recorded ids."""
    keys = RedisKeys(prefix)
    indexed = {i.decode() for i in r.zrange(keys.app_grants(app), 0, -1)}
    fields = {f.name for f in dataclasses.fields(GrantRecord)}
    recorded = set()
    for key in r.scan_iter(match=f"{prefix}grant:*", count=1000):
        record = json.loads(r.get(key) or b"null")
        assert isinstance(record, dict) and set(record) == fields, (key, record)
        assert key.decode() == keys.grant(record["id"])
        GrantRecord(**record)
        recorded.add(record["id"])
    assert recorded <= indexed, recorded - indexed
    assert len(indexed - recorded) <= 1  # at most the one CreateGrant the kill cut
    return recorded


# -- (a) kill -9 while minting, restart on the same ports ------------------------------


def test_kill_9_while_minting_gives_clean_unavailable_and_restart_resumes(
    spawn: Callable[..., ServiceProcess], redis_client: redis.Redis, redis_prefix: str
) -> None:
    svc = spawn()
    client = remit.Client(svc.target, api_key=API_KEY, timeout=5, retry=FAST)
    grant = _grant(client)
    errors: list[BaseException] = []
    ok: list[float] = []  # when each call succeeded
    acked: list[str] = [grant.id]  # grants the client was told exist
    stop = threading.Event()

    def work() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 4 == 0:  # CreateGrant too: it is the multi-key write
                    acked.append(_grant(client).id)
                else:
                    client.mint(grant.id, ttl=60)
                ok.append(time.monotonic())
            except BaseException as exc:  # every type is recorded, not only the expected
                errors.append(exc)

    worker = threading.Thread(target=work, name="mint-loop", daemon=True)
    worker.start()
    try:
        _wait_for(lambda: len(ok) >= 50, 5, "the loop never got going")
        svc.kill()  # SIGKILL: no drain, in-flight calls are cut
        killed_at = time.monotonic()
        _wait_for(lambda: len(errors) >= 1, 5, "no failure seen while the service was dead")
        svc.start()  # same ports, same data dir, same Redis
        _wait_for(lambda: len(ok) >= 20 and ok[-20] > killed_at, 8, "the loop did not resume")
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()
    assert errors, "the kill was never observed"
    assert {type(e) for e in errors} == {remit.Unavailable}, errors[:5]

    # The same client object carries on.
    assert client.get_grant(grant.id).id == grant.id
    assert client.mint(grant.id)
    client.close()
    # Nothing half written: each grant is its record plus its index entry, or neither.
    stored = _assert_no_half_written_grant(redis_client, redis_prefix)
    assert set(acked) <= stored  # an acknowledged grant is never lost
    with remit.Client(svc.target, api_key=API_KEY, timeout=5, retry=FAST) as lister:
        listed = {g.id for g in lister.list_grants(include_inactive=True)}
    assert listed == stored  # a dangling index entry is never listed
    # (stored - acked: grants whose CreateGrant reached the service but whose answer was
    # cut by the kill; the client reported Unavailable for those, as documented.)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# -- (b) two replicas behind one round-robin client ------------------------------------


def test_two_replicas_behave_as_one_behind_a_round_robin_client(
    spawn: Callable[..., ServiceProcess], redis_url: str, redis_prefix: str
) -> None:
    a = spawn()  # generates the issuer key in the shared data dir
    b = spawn()  # started after a is ready: it loads that key
    ca = remit.Client(a.target, api_key=API_KEY, retry=None)
    cb = remit.Client(b.target, api_key=API_KEY, retry=None)
    both = remit.Client(f"{a.target},{b.target}", api_key=API_KEY, timeout=5, retry=FAST)
    verifier = _verifier(ca, redis_url, redis_prefix)  # one JWKS, from a, for both
    try:
        assert ca.jwks() == cb.jwks() == both.jwks()
        assert ca.issuer() == cb.issuer()

        # Created through one, read, minted and revoked through the other.
        g = _grant(ca)
        assert cb.get_grant(g.id) == g
        assert g.id in {x.id for x in cb.list_grants()}
        tokens = [ca.mint(g.id), cb.mint(g.id)] + [both.mint(g.id) for _ in range(4)]
        for t in tokens:
            assert verifier.check(t, action="payments.transfer", args=ARGS).grant_id == g.id
        jti = remit.peek_unverified(tokens[0])[1]["jti"]
        cb.revoke(jti=jti)  # minted by a, revoked through b
        with pytest.raises(remit.Denied) as denied:
            verifier.check(tokens[0], action="payments.transfer", args=ARGS)
        assert denied.value.code is remit.Code.REVOKED
        assert verifier.check(tokens[1], action="payments.transfer", args=ARGS).allowed
        ca.revoke(grant_id=g.id)  # a strict verifier sees it at once, for every token
        for t in tokens:
            with pytest.raises(remit.Denied) as denied:
                verifier.check(t, action="payments.transfer", args=ARGS)
            assert denied.value.code is remit.Code.REVOKED
        assert cb.get_grant(g.id).revoked
        with pytest.raises(remit.FailedPrecondition):
            both.mint(g.id)

        # One replica dies: the round-robin client keeps working through the other.
        g2 = _grant(both)
        a.kill()
        for _ in range(10):  # half of these would go to a; retries move them to b
            assert both.get_grant(g2.id).id == g2.id
            t = both.mint(g2.id)
            assert verifier.check(t, action="payments.transfer", args=ARGS).allowed
        g3 = _grant(both)  # not retried, but a is out of the rotation by now
        assert cb.get_grant(g3.id) == g3
        both.revoke(grant_id=g3.id)
        with pytest.raises(remit.Unavailable):
            ca.get_grant(g2.id)  # the dead one really is dead
    finally:
        verifier.close()
        for c in (ca, cb, both):
            c.close()


def test_a_hung_replica_costs_one_timeout_then_the_other_answers(
    spawn: Callable[..., ServiceProcess],
) -> None:
    """SIGSTOP: the replica's connections stay open but nothing answers. Calls round-robin
    onto it time out (DEADLINE_EXCEEDED); idempotent ones are retried on the other."""
    a, b = spawn(), spawn()
    plain = remit.Client([a.target, b.target], api_key=API_KEY, timeout=0.5, retry=None)
    retrying = remit.Client([a.target, b.target], api_key=API_KEY, timeout=0.5, retry=FAST)
    try:
        g = _grant(plain)
        for c in (plain, retrying):  # both channels connected to both replicas
            for _ in range(4):
                c.get_grant(g.id)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        outcomes = []
        for _ in range(4):
            try:
                plain.get_grant(g.id)
                outcomes.append("ok")
            except remit.Unavailable:
                outcomes.append("timeout")
        # Round robin alternates: some calls went to the hung replica, some did not.
        assert "ok" in outcomes and "timeout" in outcomes, outcomes
        for _ in range(4):
            assert retrying.get_grant(g.id).id == g.id
            assert retrying.mint(g.id)
    finally:
        if b.proc is not None:
            b.proc.send_signal(signal.SIGCONT)
        plain.close()
        retrying.close()


# -- (c) graceful drain on SIGTERM -----------------------------------------------------


def test_sigterm_drains_an_in_flight_mint_and_refuses_new_calls(
    spawn: Callable[..., ServiceProcess], private_redis: PrivateRedis, redis_prefix: str
) -> None:
    svc = spawn(redis_url=private_redis.url)
    client = remit.Client(svc.target, api_key=API_KEY, retry=None)  # no retry can hide a cut
    g = _grant(client)
    jwks, issuer = client.jwks(), client.issuer()
    result: dict[str, Any] = {}

    def mint() -> None:
        try:
            result["token"] = client.mint(g.id)
        except BaseException as exc:
            result["error"] = exc

    # Every Redis command waits 1.2 s (below the service's 2 s Redis timeout): the mint
    # below is in flight in the service for that long.
    with redis.Redis.from_url(private_redis.url) as r:
        r.execute_command("CLIENT", "PAUSE", 1200, "ALL")
    worker = threading.Thread(target=mint, name="slow-mint", daemon=True)
    worker.start()
    try:
        time.sleep(0.3)  # the mint reached the service and waits for Redis
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGTERM)
        svc.wait_stderr("draining", timeout=5)
        # A new call is refused at once (GetKeys needs no Redis, so it would answer).
        refused = False
        deadline = time.monotonic() + 2
        while not refused and time.monotonic() < deadline:
            with remit.Client(svc.target, api_key=API_KEY, timeout=1, retry=None) as fresh:
                try:
                    fresh.jwks()
                    time.sleep(0.02)  # raced the stop: the next one is refused
                except remit.Unavailable:
                    refused = True
        assert refused, "a new call was accepted after SIGTERM"
        assert worker.is_alive(), "the mint should still be waiting for Redis"
        worker.join(timeout=10)
    finally:
        worker.join(timeout=10)
    assert "error" not in result, result.get("error")
    with remit.Verifier(
        jwks, issuer=issuer, audience="payments", revocation="strict",
        redis=private_redis.url, prefix=redis_prefix,
    ) as v:  # fmt: skip
        assert v.check(result["token"], action="payments.transfer", args=ARGS).allowed
    assert svc.proc.wait(timeout=10) == 0
    svc.wait_stderr("remit: stopped", timeout=5)
    client.close()


def test_rolling_restart_is_invisible_to_a_retrying_round_robin_client(
    spawn: Callable[..., ServiceProcess],
) -> None:
    """SIGTERM one replica, restart it, then the other, while a client mints in a loop:
    calls the stopping replica refuses or cancels are retried on the other one."""
    a, b = spawn(), spawn()
    # The client reconnects to a restarted replica within its reconnect backoff (at most
    # retry.maximum, plus jitter); its retries must outlast that window, or the moment
    # the second replica stops, before the first is back in the pool, is a real outage.
    patient = remit.Retry(attempts=8, initial=0.05, maximum=0.4)
    client = remit.Client([a.target, b.target], api_key=API_KEY, timeout=5, retry=patient)
    grant = _grant(client)
    errors: list[BaseException] = []
    ok: list[float] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                client.mint(grant.id, ttl=60)
                ok.append(time.monotonic())
            except BaseException as exc:
                errors.append(exc)

    worker = threading.Thread(target=work, name="mint-loop", daemon=True)
    worker.start()
    try:
        for svc in (a, b):
            _wait_for(lambda: len(ok) >= 20, 5, "the loop never got going")
            assert svc.proc is not None
            svc.proc.send_signal(signal.SIGTERM)
            assert svc.proc.wait(timeout=10) == 0
            seen = len(ok)
            _wait_for(lambda n=seen: len(ok) >= n + 20, 5, "no progress on one replica")
            svc.start()
            time.sleep(1.0)  # > the client's reconnect backoff: the replica is back in the pool
            ok.clear()
    finally:
        stop.set()
        worker.join(timeout=10)
        client.close()
    assert errors == []


# -- (d) client retry backoff ----------------------------------------------------------


def test_retry_backs_off_then_reports_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(remit._client, "_sleep", sleep)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    retry = remit.Retry(attempts=4, initial=0.05, maximum=1.0, multiplier=2.0)
    with remit.Client(dead, api_key="k", timeout=2, retry=retry) as c:
        start = time.monotonic()
        with pytest.raises(remit.Unavailable):
            c.get_grant("g_0123456789abcdef")
        elapsed = time.monotonic() - start
        assert len(slept) == 3  # 4 attempts, 3 waits
        for n, (wait, cap) in enumerate(zip(slept, (0.05, 0.1, 0.2), strict=True), 1):
            assert cap / 2 <= wait <= cap, (n, wait)
        assert sum(slept) <= elapsed < 5  # sanity only

        slept.clear()
        with pytest.raises(remit.Unavailable):
            _grant(c)  # CreateGrant is never retried
        assert slept == []
    with remit.Client(dead, api_key="k", timeout=2, retry=None) as c:
        with pytest.raises(remit.Unavailable):
            c.mint("g_0123456789abcdef")
        assert slept == []
