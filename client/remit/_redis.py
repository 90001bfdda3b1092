"""One place that turns a Redis URL (or a ready client) into a client with tight timeouts.

A verifier must answer fast or fail closed, never hang: short socket timeouts and a
single immediate retry (which covers a connection that went stale when Redis
restarted), instead of redis-py's default backoff that can stall a call for seconds.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisLike", "connect"]

RedisLike = Any  # redis.Redis or redis.RedisCluster; both are untyped enough here


def connect(target: str | RedisLike, *, timeout: float = 0.5) -> RedisLike:
    """A client for ``redis://``, ``rediss://`` or ``unix://`` URLs; clients pass through."""
    if not isinstance(target, str):
        return target
    if not target.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("Redis URL must start with redis://, rediss:// or unix://")
    return redis.Redis.from_url(
        target,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        decode_responses=False,
    )
