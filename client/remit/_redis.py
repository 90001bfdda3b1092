"""One place that turns a Redis address (or a ready client) into a client with tight timeouts.

Accepted addresses (anything else is a ``ValueError`` that names the accepted forms):

- ``redis://[user:pass@]host:port[/db]``, ``rediss://…`` (TLS, ``?ssl_ca_certs=…``),
  ``unix://[user:pass@]/path/redis.sock[?db=N]``: one server (redis-py's ``Redis``);
- ``redis+cluster://[user:pass@]host:port[,host:port…]`` (``rediss+cluster://`` for TLS),
  or a list of node URLs (``["redis://h1:7000", "redis://h2:7001"]``): Redis Cluster
  (redis-py's ``RedisCluster``). The nodes are only seeds: the client discovers the rest.

Both clients offer the same commands and ``pipeline()``; callers keep every multi-key
command and transaction within one hash slot (:mod:`remit._redis_keys`), so one code path
serves both. redis-py's cluster client loads the slot map when it is created; if no seed
node answers then, :func:`connect` returns a :class:`LazyCluster` that tries again on each
use, so a process may start while Redis is down (it fails closed meanwhile), as with a
single-server client, which connects on first use.

A verifier must answer fast or fail closed, never hang: short socket timeouts and a
single immediate retry (which covers a connection that went stale when Redis
restarted), instead of redis-py's default backoff that can stall a call for seconds.
Passwords never appear in errors: :func:`redact` masks them wherever an address is shown.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry

__all__ = [
    "REDIS_ERRORS",
    "LazyCluster",
    "RedisLike",
    "RedisTarget",
    "check_address",
    "connect",
    "is_address",
    "is_cluster",
    "redact",
]

RedisLike = Any  # redis.Redis or redis.RedisCluster; both are untyped enough here
# What a Redis call can raise when Redis is unreachable or refuses: catch all of it to
# fail closed. A cluster client raises RedisClusterException (not a RedisError) when no
# node answers, e.g. "Redis Cluster cannot be connected".
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)
RedisTarget = str | Sequence[str]  # an address: one URL, or a list of cluster node URLs

_SINGLE = ("redis://", "rediss://", "unix://")
_CLUSTER = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_FORMS = (
    "redis://host:port/db, rediss://host:port/db (TLS), unix:///path/redis.sock, "
    "redis+cluster://host:port[,host:port...] (rediss+cluster:// for TLS), "
    "or a list of cluster node URLs"
)
_USERINFO = re.compile(r"(?<=://)[^@/]*@")


def redact(address: object) -> str:
    """The address for messages and logs, its credentials masked (``redis://***@host``)."""
    if isinstance(address, str):
        return _USERINFO.sub("***@", address)
    if isinstance(address, Sequence):
        return "[" + ", ".join(redact(a) for a in address) + "]"
    return type(address).__name__


def is_address(target: object) -> bool:
    """True for what :func:`connect` turns into a *new* client (the caller then owns and
    closes it); False for a ready client, which stays the caller's."""
    return isinstance(target, str) or (
        isinstance(target, Sequence) and all(isinstance(t, str) for t in target)
    )


def is_cluster(client: RedisLike) -> bool:
    return isinstance(client, RedisCluster | LazyCluster)


def connect(target: RedisTarget | RedisLike, *, timeout: float = 0.5) -> RedisLike:
    """A client for an address (module docstring); a ready client passes through."""
    if not is_address(target):
        return target
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": False,
    }
    single, nodes, _ = _resolve(target)
    if single is not None:
        return redis.Redis.from_url(single, retry=Retry(NoBackoff(), 1), **options)

    def build() -> RedisCluster:
        try:
            return RedisCluster(
                url=nodes[0], startup_nodes=_check_nodes(nodes), retry=Retry(NoBackoff(), 1),
                **options,
            )
        except REDIS_ERRORS as exc:  # no credentials in these messages
            raise redis.ConnectionError(
                f"cannot reach Redis Cluster {redact(nodes)}: {type(exc).__name__}: {exc}"
            ) from None

    try:
        return build()
    except redis.ConnectionError:
        return LazyCluster(build)


class LazyCluster:
    """Stands in for a RedisCluster that could not be created yet (no seed node answered):
    every use tries again, and raises ``redis.ConnectionError`` until a node answers, then
    delegates to the real client. So a service or verifier started while the cluster is
    down fails closed and recovers by itself, as with a single server (whose client only
    connects on first use); redis-py has no lazy cluster client. Hand-written for that.
    """

    def __init__(self, build: Callable[[], RedisCluster]) -> None:
        self._build = build
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def cluster(self) -> RedisCluster:
        """The real client, created now if need be (or ``redis.ConnectionError``)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
                client = self._client
        return client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes, or __init__ not run: no recursion
            raise AttributeError(name)
        return getattr(self.cluster(), name)

    def pipeline(self, transaction: bool | None = None) -> Any:
        """A real pipeline once the cluster is reachable; until then one that queues the
        calls and creates the cluster in ``execute()``, where callers expect Redis errors
        (creating a pipeline does no I/O in redis-py, so callers do it outside a ``try``)."""
        if self._client is not None:
            return self._client.pipeline(transaction=transaction)  # type: ignore[no-untyped-call]
        return _DeferredPipeline(self, transaction)

    def get_encoder(self) -> Any:
        """What ``register_script`` needs, without a connection: the encoder of an unused
        (never connected) client with connect()'s settings."""
        return redis.Redis(decode_responses=False).get_encoder()

    def register_script(self, script: str | bytes) -> Script:
        return Script(self, script)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> LazyCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DeferredPipeline:
    def __init__(self, owner: LazyCluster, transaction: bool | None) -> None:
        self._owner = owner
        self._transaction = transaction
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., _DeferredPipeline]:
        def queue(*args: Any, **kwargs: Any) -> _DeferredPipeline:
            self._calls.append((name, args, kwargs))
            return self

        return queue

    def execute(self, raise_on_error: bool = True) -> Any:
        pipe = self._owner.cluster().pipeline(transaction=self._transaction)  # type: ignore[no-untyped-call]
        for name, args, kwargs in self._calls:
            getattr(pipe, name)(*args, **kwargs)
        self._calls.clear()
        return pipe.execute(raise_on_error=raise_on_error)


def check_address(target: RedisTarget) -> None:
    """Raise ``ValueError`` (credentials masked) unless :func:`connect` accepts ``target``;
    connects to nothing, so configuration can be checked when it is loaded."""
    if not is_address(target):
        raise ValueError(f"a Redis address must be a URL or a list of URLs: use {_FORMS}")
    _resolve(target)


def _resolve(target: RedisTarget) -> tuple[str | None, list[str], list[ClusterNode]]:
    """(single-server URL, None) or (None, cluster node URLs, their seeds)."""
    if isinstance(target, str):
        scheme = target.partition("://")[0].lower() if "://" in target else ""
        if scheme in _CLUSTER:
            nodes = _cluster_nodes(target, _CLUSTER[scheme])
        elif target.startswith(_SINGLE):
            _parse(target)  # a clear error now rather than at the first command
            return target, [], []
        else:
            raise ValueError(f"unsupported Redis address {redact(target)!r}: use {_FORMS}")
    else:
        nodes = list(target)
        if not nodes:
            raise ValueError(f"an empty list of Redis cluster nodes: use {_FORMS}")
    return None, nodes, _check_nodes(nodes)


def _parse(url: str) -> dict[str, Any]:
    try:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"bad Redis address {redact(url)!r}: {_scrub(str(exc), url)}") from None
    return options


def _scrub(message: str, url: str) -> str:
    """redis-py's parse errors may quote the URL (password included)."""
    secret = urlsplit(url).password if "://" in url else None
    return message.replace(secret, "***") if secret else message


def _cluster_nodes(url: str, scheme: str) -> list[str]:
    """``redis+cluster://u:p@h1:1,h2:2/0?x=y`` -> ``["redis://u:p@h1:1/0?x=y", …]``."""
    rest = url.partition("://")[2]
    split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:split], rest[split:]
    userinfo, _, hosts = netloc.rpartition("@")
    auth = f"{userinfo}@" if userinfo else ""
    addresses = hosts.split(",")
    if not all(addresses):
        raise ValueError(f"bad Redis cluster address {redact(url)!r}: use {_FORMS}")
    return [f"{scheme}://{auth}{address}{tail}" for address in addresses]


def _check_nodes(nodes: list[str]) -> list[ClusterNode]:
    """Every node a TCP URL with the same credentials and TLS setting, database 0."""
    first: dict[str, Any] | None = None
    seeds = []
    for node in nodes:
        if not isinstance(node, str) or not node.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"Redis cluster nodes need redis:// or rediss:// URLs, not {redact(node)!r}"
            )
        options = _parse(node)
        if options.get("db", 0) != 0:
            raise ValueError(f"Redis Cluster has only database 0: {redact(node)!r}")
        if "host" not in options or "port" not in options:
            raise ValueError(f"Redis cluster node {redact(node)!r} needs host:port")
        shared = {k: v for k, v in options.items() if k not in ("host", "port")}
        if first is None:
            first = shared
        elif shared != first:
            raise ValueError(
                f"Redis cluster node {redact(node)!r} differs from the first node in "
                "credentials, TLS or options; every node must use the same"
            )
        seeds.append(ClusterNode(options["host"], options["port"]))  # type: ignore[no-untyped-call]
    return seeds
