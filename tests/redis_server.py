"""A throwaway ``redis-server`` for tests that stop, restart, pause or flush Redis.

Runs on a free loopback port with its data in memory only, so nothing it does can
disturb the shared Redis; the ``private_redis`` fixture (tests/conftest.py) kills it
whatever the test does.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from remit._redis_keys import RedisKeys

__all__ = ["PrivateRedis", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRedis:
    """``start()`` (again after a stop: same port, empty data), ``kill()``,
    ``shutdown_nosave()``; ``proc`` for signals (SIGSTOP to freeze it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        with redis.Redis.from_url(self.url, socket_connect_timeout=0.2) as probe:
            while True:
                with contextlib.suppress(redis.ConnectionError):
                    if probe.ping():
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}")
                time.sleep(0.02)

    def set_epoch(self, prefix: str = "remit:", value: int = 0) -> None:
        """Write the revocation epoch a running service would keep (strict verifiers
        refuse everything without one)."""
        with redis.Redis.from_url(self.url) as c:
            c.set(RedisKeys(prefix).epoch(), value)

    def seed_grant(self, gid: str, prefix: str = "remit:") -> None:
        """Write a (dummy) grant record, as the service would: strict verifiers treat a
        token whose grant record is missing as lost to a data loss."""
        with redis.Redis.from_url(self.url) as c:
            c.set(RedisKeys(prefix).grant(gid), b"{}")

    def shutdown_nosave(self) -> None:
        with redis.Redis.from_url(self.url) as c, contextlib.suppress(redis.ConnectionError):
            c.shutdown(nosave=True)
        self._wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.proc.kill()
        self._wait()

    stop = kill

    def _wait(self) -> None:
        if self.proc is not None:
            self.proc.wait(timeout=10)
