"""The Redis that budget (limits) tests run on, as one value: see ``limits_redis`` in
tests/conftest.py. A cluster run overrides that one fixture: verifiers get ``client``,
worker processes rebuild a client from ``url`` (and ``cluster``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from remit._redis import connect as _connect
from remit._redis_keys import RedisKeys

__all__ = ["LimitsRedis", "connect"]


@dataclass
class LimitsRedis:
    url: str
    client: Any  # redis.Redis or redis.RedisCluster
    prefix: str  # a fresh key prefix, with a revocation epoch of 0
    cluster: bool = False

    def new_grant(self) -> str:
        """A fresh grant id with a (dummy) grant record, as the service writes one: strict
        verifiers treat a token whose grant record is missing as lost to a data loss."""
        gid = "g_" + uuid.uuid4().hex[:20]
        self.client.set(RedisKeys(self.prefix).grant(gid), b"{}")
        return gid


def connect(url: str, cluster: bool) -> Any:
    """A new client for ``url`` (in another process); ``cluster`` is implied by the URL."""
    del cluster
    return _connect(url, timeout=5.0)
