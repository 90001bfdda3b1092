"""A throwaway 3-master Redis Cluster on loopback, for the ``redis_cluster`` fixture.

Three ``redis-server --cluster-enabled yes`` on free ports, data in memory only, joined
with ``redis-cli --cluster create`` (no replicas); ready once every node reports
``cluster_state:ok`` and agrees on all 16384 slots. :meth:`RedisClusterProcs.stop` kills
every process and deletes the directory, and runs even when start-up failed half way.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterPipeline, RedisCluster, TransactionStrategy
from redis.retry import Retry
from remit._redis import RedisLike

from tests.redis_server import free_port

__all__ = [
    "HARMLESS_CROSS_SLOT_PIPELINES",
    "RedisClusterProcs",
    "RedisUnderTest",
    "SlotAudit",
    "SlotUse",
]

MASTERS = 3
START_TIMEOUT = 30.0


class RedisClusterProcs:
    """``start()`` / ``stop()``; ``url`` is the ``redis+cluster://`` address of all nodes,
    ``node_urls`` the ``redis://`` URL of each node (to flush or inspect one shard)."""

    def __init__(self, masters: int = MASTERS) -> None:
        self.ports = _distinct_free_ports(masters)
        self.node_urls = [f"redis://127.0.0.1:{p}" for p in self.ports]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.directory: Path | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="remit-redis-cluster-"))
        for port in self.ports:
            (self.directory / str(port)).mkdir()
        self._spawn()
        created = subprocess.run(
            ["redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout[-2000:]!r}")
        self._wait(self._healthy, "cluster_state:ok on every node")

    def _spawn(self) -> None:
        assert self.directory is not None
        for port in self.ports:
            node_dir = self.directory / str(port)
            self.procs.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                     "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait(lambda p=port: _ping(p), f"node {port} to answer")

    def kill_all(self) -> None:
        """SIGKILL every node (the data is gone; the cluster layout, in nodes.conf, stays)."""
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()

    def restart_all(self) -> None:
        """Start the killed nodes again, empty, on the same ports; wait until the cluster
        is ok. A restart failure stops everything (the fixture's ``stop`` still runs)."""
        try:
            self._spawn()
            self._wait(self._healthy, "cluster_state:ok after the restart")
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        for port in self.ports:
            with _node(port) as node:
                info = node.cluster("info")
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
                if int(info["cluster_known_nodes"]) != len(self.ports):
                    return False
        return True

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(redis.RedisError):
                if ready():  # type: ignore[operator]
                    return
            dead = [p.args for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: gave up waiting for {what}:\n{self.logs()}")
            time.sleep(0.05)

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.node_urls[0])

    def node_for(self, key: str) -> str:
        """The ``redis://`` URL of the master that holds ``key``'s slot."""
        with self.client() as cluster:
            node = cluster.get_node_from_key(key)
            return f"redis://{node.host}:{node.port}"

    def flush_all(self) -> None:
        for url in self.node_urls:
            with redis.Redis.from_url(url) as node:
                node.flushall()

    def logs(self) -> str:
        if self.directory is None:
            return ""
        return "\n".join(
            f"--- {log.parent.name}\n{log.read_text(errors='replace')[-1500:]}"
            for log in sorted(self.directory.glob("*/redis.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _ping(port: int) -> bool:
    with _node(port) as node:
        return bool(node.ping())


def _node(port: int) -> redis.Redis:
    # No retries: a probe that fails is simply repeated by _wait, which also notices a
    # node that died (redis-py's default retries would stall that for many seconds).
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                       socket_timeout=1, decode_responses=True, retry=Retry(NoBackoff(), 0))


def _distinct_free_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) stay below 65536."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port + 10000 < 65536:
            ports.append(port)
    return ports


@dataclass(frozen=True)
class RedisUnderTest:
    """What a ``redis_any`` test gets: ``kind`` ("single" / "cluster"), the ``url`` a
    verifier or the service is given, an admin ``client`` and a fresh key ``prefix``
    (with a revocation epoch of 0, deleted afterwards)."""

    kind: str
    url: str
    client: RedisLike
    prefix: str
    cluster: RedisClusterProcs | None = None


# Pipelines without a transaction that may span slots: independent reads, which redis-py
# sends to each node; nothing in them needs to be atomic.
HARMLESS_CROSS_SLOT_PIPELINES = {
    "remit_service._store.get_with_epoch",  # the grant, its cutoff ({gid}) + the epoch ({rev})
    "remit_service._store.get_many",  # one GET per listed grant
}


@dataclass(frozen=True)
class SlotUse:
    """One operation the code sent to the cluster: ``kind`` is ``command`` (one command),
    ``transaction`` (MULTI/EXEC), ``pipeline`` (no transaction: redis-py splits it by
    node, so it is neither atomic nor one round trip) or ``split`` (a multi-key command
    redis-py splits by slot, e.g. ``EXISTS a b``: not atomic); ``caller`` the
    remit / remit_service function that issued it."""

    kind: str
    caller: str
    commands: tuple[str, ...]
    slots: frozenset[int]


class SlotAudit:
    """Records the hash slots of every multi-key operation remit sends to a RedisCluster.

    A real cluster already refuses a cross-slot transaction, script or command — but the
    service turns that refusal into UNAVAILABLE and the verifier into a fail-closed
    denial, and redis-py silently splits cross-slot pipelines and multi-key ``EXISTS`` /
    ``DEL`` into per-slot pieces that are no longer atomic. So the test instruments
    redis-py's cluster client (the one place every command passes) instead of waiting
    for an error. Install with :meth:`install`; only operations issued from the
    ``remit`` / ``remit_service`` packages are recorded.
    """

    def __init__(self) -> None:
        self.uses: list[SlotUse] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        audit = self
        execute, split = ClusterPipeline.execute, RedisCluster._split_command_across_slots
        determine = RedisCluster.determine_slot

        def audited_execute(pipe: ClusterPipeline, raise_on_error: bool = True) -> Any:
            strategy = pipe._execution_strategy
            kind = "transaction" if isinstance(strategy, TransactionStrategy) else "pipeline"
            audit._record(kind, pipe, [c.args for c in strategy.command_queue])
            return execute(pipe, raise_on_error)

        def audited_split(client: RedisCluster, command: str, *keys: Any) -> Any:
            audit._record("split", client, [(command, *keys)])
            return split(client, command, *keys)

        def audited_determine(client: RedisCluster, *args: Any) -> Any:
            audit._record("command", client, [args])
            return determine(client, *args)

        monkeypatch.setattr(ClusterPipeline, "execute", audited_execute)
        monkeypatch.setattr(RedisCluster, "_split_command_across_slots", audited_split)
        monkeypatch.setattr(RedisCluster, "determine_slot", audited_determine)

    def assert_single_slot(self) -> None:
        """No multi-key command, transaction, script or split across slots, and no
        cross-slot pipeline but the known harmless ones."""
        crossing = self.crossing("command", "transaction", "split")
        atomic = {(u.kind, u.caller, u.commands) for u in crossing}
        assert not atomic, f"multi-key operations across hash slots: {sorted(atomic)}"
        piped = {
            (u.caller, u.commands)
            for u in self.crossing("pipeline")
            if u.caller not in HARMLESS_CROSS_SLOT_PIPELINES
        }
        assert not piped, f"pipelines across hash slots: {sorted(piped)}"

    def crossing(self, *kinds: str) -> list[SlotUse]:
        """Operations of these kinds (all kinds if none given) that span several slots."""
        return [u for u in self.uses if len(u.slots) > 1 and (not kinds or u.kind in kinds)]

    def callers(self) -> set[str]:
        return {u.caller for u in self.uses}

    def _record(self, kind: str, client: RedisCluster, commands: Sequence[Sequence[Any]]) -> None:
        caller = _remit_caller()
        if caller is None or not commands:
            return
        slots: set[int] = set()
        for args in commands:
            slots.update(client.keyslot(k) for k in _keys(client, args))
        if not slots or (kind == "command" and len(slots) == 1):
            return  # keyless, or a plain one-slot command: nothing to learn
        names = tuple(_name(args[0]) for args in commands)
        self.uses.append(SlotUse(kind, caller, names, frozenset(slots)))


def _name(command: Any) -> str:
    return (command.decode() if isinstance(command, bytes) else str(command)).upper()


def _keys(client: RedisCluster, args: Sequence[Any]) -> list[Any]:
    name = _name(args[0])
    if name in ("EVAL", "EVALSHA", "FCALL", "FCALL_RO"):
        return list(args[3 : 3 + int(args[2])])
    if name in ("PING", "SCRIPT LOAD", "SCRIPT EXISTS", "INFO", "CLUSTER", "READONLY"):
        return []
    with contextlib.suppress(redis.RedisError):
        return list(client._get_command_keys(*args) or [])
    return []


def _remit_caller() -> str | None:
    """``module.function`` of the innermost remit / remit_service frame on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] in ("remit", "remit_service") and not module.startswith(
            "remit._redis"
        ):
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back
    return None
