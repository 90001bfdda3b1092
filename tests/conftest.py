"""Shared fixtures: a real Redis (REDIS_URL, default 127.0.0.1:6379) with a private key prefix.

Redis Cluster (the section at the end): ``redis_cluster`` starts one real 3-master
cluster per session (tests/redis_cluster.py), only when a test asks for it.
- ``redis_any``: a test that takes it runs twice, on the single server and on the
  cluster (``RedisUnderTest``: kind, url, client, prefix with an epoch).
- ``pytestmark = pytest.mark.redis_both`` in a module: every test of it that uses
  ``redis_url`` / ``redis_client`` / ``redis_prefix`` (directly or through other
  fixtures, e.g. a service) runs on both; ``REMIT_TEST_REDIS=cluster`` (or ``both``)
  does that for the whole run; ``pytest.mark.redis_kinds("cluster")``: the cluster only.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from remit._redis import RedisLike, connect
from remit._redis_keys import RedisKeys

from tests.limits_redis import LimitsRedis
from tests.redis_cluster import RedisClusterProcs, RedisUnderTest, SlotAudit
from tests.redis_server import PrivateRedis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_KINDS = ("single", "cluster")


@pytest.fixture(scope="session")
def redis_url(redis_kind: str, request: pytest.FixtureRequest) -> str:
    """The Redis every test shares: the single server, or the cluster (``redis_kind``)."""
    if redis_kind == "cluster":
        cluster: RedisClusterProcs = request.getfixturevalue("redis_cluster")
        return cluster.url
    url: str = request.getfixturevalue("single_redis_url")
    return url


@pytest.fixture(scope="session")
def single_redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # a missing Redis is a failure, never a skip
        pytest.fail(f"tests need Redis at {REDIS_URL} (set REDIS_URL): {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[RedisLike]:
    """redis.Redis, or redis.RedisCluster when the test runs on the cluster."""
    client = connect(redis_url, timeout=5.0)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: RedisLike) -> Iterator[str]:
    """A key prefix no other test uses (with a revocation epoch of 0, as if a service had
    run since forever); every key under it is deleted afterwards."""
    prefix = f"remit-test-{uuid.uuid4().hex[:12]}:"
    # A revocation epoch, as the service keeps one: strict verifiers fail closed without.
    redis_client.set(RedisKeys(prefix).epoch(), 0)
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server (tests/redis_server.py) the test may stop and restart."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --- budgets (limits) -------------------------------------------------------------------


@pytest.fixture
def limits_redis(
    redis_kind: str, redis_url: str, redis_client: RedisLike, redis_prefix: str
) -> LimitsRedis:
    """The Redis every budget test runs on: the shared server or the cluster (``redis_kind``),
    a fresh prefix with a revocation epoch."""
    return LimitsRedis(
        url=redis_url, client=redis_client, prefix=redis_prefix, cluster=redis_kind == "cluster"
    )


# --- Redis Cluster: one real 3-master cluster per session, and single/cluster params ---


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_both: run the module's Redis tests on the single server and the cluster"
    )
    config.addinivalue_line(
        "markers", "redis_kinds(*kinds): run the Redis tests on these ('single', 'cluster')"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``redis_kind`` (which every Redis fixture follows) for opted-in tests."""
    if "redis_kind" not in metafunc.fixturenames:
        return
    wanted = os.environ.get("REMIT_TEST_REDIS", "single")
    if wanted not in (*REDIS_KINDS, "both"):
        raise pytest.UsageError("REMIT_TEST_REDIS must be single, cluster or both")
    chosen = metafunc.definition.get_closest_marker("redis_kinds")
    if chosen is not None:
        kinds: tuple[str, ...] = tuple(chosen.args)
        if not kinds or not set(kinds) <= set(REDIS_KINDS):
            raise pytest.UsageError(f"redis_kinds takes some of {REDIS_KINDS}, got {kinds}")
    elif metafunc.definition.get_closest_marker("redis_both") or wanted == "both":
        kinds = REDIS_KINDS
    else:
        kinds = (wanted,)
    if kinds != ("single",):
        metafunc.parametrize("redis_kind", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_kind(request: pytest.FixtureRequest) -> str:
    """``single`` unless parametrized (``redis_both`` marker, ``REMIT_TEST_REDIS``)."""
    kind: str = getattr(request, "param", "single")
    return kind


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcs]:
    """A real 3-master Redis Cluster on loopback, started once per session on first use;
    every process is killed and its directory deleted at the end, whatever happened."""
    cluster = RedisClusterProcs()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=REDIS_KINDS)
def redis_any(request: pytest.FixtureRequest, single_redis_url: str) -> Iterator[RedisUnderTest]:
    """Runs the test on the shared single server and on the session's cluster."""
    cluster: RedisClusterProcs | None = None
    url = single_redis_url
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        url = cluster.url
    client = connect(url, timeout=5.0)
    prefix = f"remit-test-{uuid.uuid4().hex[:12]}:"
    client.set(RedisKeys(prefix).epoch(), 0)
    try:
        yield RedisUnderTest(request.param, url, client, prefix, cluster)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def slot_audit(monkeypatch: pytest.MonkeyPatch) -> SlotAudit:
    """Records the hash slots of every multi-key operation remit sends to a cluster
    (tests/redis_cluster.py ``SlotAudit``); assert on ``slot_audit.crossing()``."""
    audit = SlotAudit()
    audit.install(monkeypatch)
    return audit


@pytest.fixture(autouse=True)
def _cluster_stays_in_one_slot(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that runs on the cluster (``redis_kind`` "cluster") is slot-audited:
    it fails if remit sent a multi-key operation across hash slots."""
    if "redis_kind" not in request.fixturenames or request.getfixturevalue("redis_kind") != (
        "cluster"
    ):
        yield
        return
    audit, patch = SlotAudit(), pytest.MonkeyPatch()
    audit.install(patch)
    try:
        yield
    finally:
        patch.undo()
    audit.assert_single_slot()


# --- Revocation feed threads: a stream-mode Verifier left open is a leak ---------------


@pytest.fixture(autouse=True)
def no_revocation_feed_leak() -> Iterator[None]:
    """Fail a test that leaves a stream-mode verifier's feed thread running (close() it,
    or use ``with``). Autouse, so its check runs after every other fixture's teardown."""
    before = {t for t in threading.enumerate() if t.name == "remit-revfeed"}
    yield
    leaked = [t for t in threading.enumerate() if t.name == "remit-revfeed" and t not in before]
    assert not leaked, f"{len(leaked)} revocation feed thread(s) left running: close() it"
