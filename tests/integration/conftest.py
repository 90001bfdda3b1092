"""Integration fixtures: a real in-process service (gRPC + HTTP on 127.0.0.1:0) on real Redis.

``service`` / ``client``: the open dev policy (one app ``dev``, every action and audience).
``policy_service`` / ``bank`` / ``mail``: a TOML config with two apps, loaded the way an
operator's file is, so app isolation and per-app / per-action limits are exercised.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import remit
from remit.v1 import remit_pb2_grpc
from remit_service import KeyStore, Server, dev_config, load_config

API_KEY = "test-key"
BANK_KEY = "bank-key-0123456789"
MAIL_KEY = "mail-key-9876543210"


def count_keys(client: redis.Redis, prefix: str) -> int:
    """How many Redis keys live under ``prefix`` (to prove a refused request wrote nothing)."""
    return sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))


def http_get(url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET ``url``: (status, JSON body, headers), for 2xx and error statuses alike."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read()), dict(err.headers)


@pytest.fixture(scope="session")
def stop_in_background() -> Iterator[Callable[[Server], None]]:
    """Stop servers off the test's critical path.

    ``Server.stop()`` takes about 0.5 s (``http.server`` notices a shutdown only at its
    poll interval); overlapping that with the next test keeps the suite fast. Every stop
    is joined, and its failure reported, when the session ends.
    """
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def stop(server: Server) -> None:
        def run() -> None:
            try:
                server.stop(grace=0)
            except BaseException as exc:  # reported at session end
                errors.append(exc)

        t = threading.Thread(target=run, name="stop-server", daemon=True)
        t.start()
        threads.append(t)

    yield stop
    for t in threads:
        t.join(timeout=10)
    assert not [t for t in threads if t.is_alive()], "a server did not stop within 10 s"
    assert not errors, f"Server.stop() failed: {errors!r}"


@pytest.fixture
def service(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    stop_in_background: Callable[[Server], None],
) -> Iterator[Server]:
    cfg = dev_config(
        data_dir=tmp_path,
        redis=redis_url,
        api_key=API_KEY,
        grpc_port=0,
        http_port=0,
        prefix=redis_prefix,
    )
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


@pytest.fixture
def client(service: Server) -> Iterator[remit.Client]:
    c = remit.Client(service.grpc_target, api_key=API_KEY)
    yield c
    c.close()


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def policy_config_path(tmp_path: Path, redis_url: str, redis_prefix: str) -> Path:
    path = tmp_path / "remit.toml"
    path.write_text(
        f"""
issuer = "https://remit.test"
keys_dir = "policy-keys"
redis = "{redis_url}"
prefix = "{redis_prefix}"

[server]
host = "127.0.0.1"

[apps.bank]
api_key_sha256 = "{_sha256(BANK_KEY)}"
actions = ["payments.transfer"]
audiences = ["payments"]
max_token_ttl = 600
max_grant_ttl = 7200

[apps.mail]
api_key_sha256 = "{_sha256(MAIL_KEY)}"
actions = ["email.*"]
audiences = ["email"]

[actions."payments.transfer"]
max_ttl = 300
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def policy_service(
    policy_config_path: Path, stop_in_background: Callable[[Server], None]
) -> Iterator[Server]:
    # Ports in a config file must be positive; the test wants free ones picked (0).
    cfg = dataclasses.replace(load_config(policy_config_path), grpc_port=0, http_port=0)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


@pytest.fixture
def bank(policy_service: Server) -> Iterator[remit.Client]:
    c = remit.Client(policy_service.grpc_target, api_key=BANK_KEY)
    yield c
    c.close()


@pytest.fixture
def mail(policy_service: Server) -> Iterator[remit.Client]:
    c = remit.Client(policy_service.grpc_target, api_key=MAIL_KEY)
    yield c
    c.close()


AUTH = (("authorization", f"Bearer {API_KEY}"),)


@pytest.fixture
def stub(service: Server) -> Iterator[remit_pb2_grpc.RemitStub]:
    """A raw gRPC stub on the dev service, for requests ``remit.Client`` would not send."""
    channel = grpc.insecure_channel(service.grpc_target)
    yield remit_pb2_grpc.RemitStub(channel)
    channel.close()


@pytest.fixture
def make_verifier(redis_url: str, redis_prefix: str) -> Iterator[Callable[..., remit.Verifier]]:
    """Build verifiers (strict revocation unless told) from a client's JWKS; closed after
    the test."""
    made: list[remit.Verifier] = []

    def make(c: remit.Client, audience: str = "payments", **kwargs: Any) -> remit.Verifier:
        kwargs.setdefault("revocation", "strict")
        v = remit.Verifier.from_jwks(
            c.jwks(),
            issuer=c.issuer(),
            audience=audience,
            redis=redis_url,
            prefix=redis_prefix,
            **kwargs,
        )
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()


@pytest.fixture
def no_audit_thread_left_behind() -> Iterator[None]:
    """Every verifier a test makes is closed (or collected): its audit flusher thread
    ends. Modules that make many audited verifiers use it (``usefixtures``)."""
    before = {t for t in threading.enumerate() if t.name.startswith("remit-audit-")}
    yield
    gc.collect()
    left = {t for t in threading.enumerate() if t.name.startswith("remit-audit-")} - before
    for t in left:
        t.join(5)
    assert not [t.name for t in left if t.is_alive()]
