"""Shared fixtures: a real Redis (REDIS_URL, default 127.0.0.1:6379) with a private key prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.limits_redis import LimitsRedis
from tests.redis_server import PrivateRedis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # a missing Redis is a failure, never a skip
        pytest.fail(f"tests need Redis at {REDIS_URL} (set REDIS_URL): {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test uses (with a revocation epoch of 0, as if a service had
    run since forever); every key under it is deleted afterwards."""
    prefix = f"remit-test-{uuid.uuid4().hex[:12]}:"
    # A revocation epoch, as the service keeps one: strict verifiers fail closed without.
    redis_client.set(f"{prefix}epoch", 0)
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
def limits_redis(redis_url: str) -> Iterator[LimitsRedis]:
    """The Redis every budget test runs on: the shared server, a fresh prefix (with an
    epoch, for strict revocation). Override this one fixture to run them on a cluster."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"remit-test-{uuid.uuid4().hex[:12]}:"
    client.set(f"{prefix}epoch", 0)
    try:
        yield LimitsRedis(url=redis_url, client=client, prefix=prefix)
    finally:
        for key in list(client.scan_iter(match=f"{prefix}*", count=1000)):
            client.delete(key)  # one by one: on a cluster the keys span many slots
        client.close()
