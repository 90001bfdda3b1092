"""The Redis that budget (limits) tests run on, as one value: see ``limits_redis`` in
tests/conftest.py. A cluster run overrides that one fixture: verifiers get ``client``,
worker processes rebuild a client from ``url`` (and ``cluster``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from remit._redis import connect as _connect

__all__ = ["LimitsRedis", "connect"]


@dataclass
class LimitsRedis:
    url: str
    client: Any  # redis.Redis or redis.RedisCluster
    prefix: str  # a fresh key prefix, with a revocation epoch of 0
    cluster: bool = False


def connect(url: str, cluster: bool) -> Any:
    """A new client for ``url`` (in another process); ``cluster`` is implied by the URL."""
    del cluster
    return _connect(url, timeout=5.0)
