"""Every Redis address form end to end: the service and a strict verifier on a Unix
socket (with a password), over TLS (``rediss://``, a throwaway CA), and on the cluster
given as a list of node URLs; the grant store on the single server and the cluster.
Each server here is private (started in a temp dir, killed at the end whatever happens),
except the session's cluster, where the test deletes what it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from remit._redis import RedisTarget, connect, is_cluster
from remit._redis_keys import RedisKeys
from remit_service import KeyStore, Server, dev_config
from remit_service._store import GrantRecord, GrantStore, TokenRecord

from tests.redis_cluster import RedisClusterProcs, RedisUnderTest
from tests.redis_server import free_port

from .conftest import API_KEY

PREFIX = "remit-addr:"  # private servers; the shared cluster gets a fresh prefix
CAP = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
ARGS = {"amount": 5}
PASSWORD = "s3cret-unix-pw"


@contextlib.contextmanager
def _redis_server(directory: Path, *args: str, probe: str) -> Iterator[None]:
    """A private ``redis-server`` (in-memory) with ``args``, ready when ``probe`` answers."""
    proc = subprocess.Popen(
        ["redis-server", "--save", "", "--appendonly", "no", "--dir", str(directory),
         "--logfile", str(directory / "redis.log"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError, OSError), connect(probe, timeout=0.5) as c:
                if c.ping():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server {args} did not start:\n{log}")
            time.sleep(0.02)
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _revocation_round_trip(
    tmp_path: Path, address: RedisTarget, stop: Callable[[Server], None], prefix: str = PREFIX
) -> tuple[remit.Verifier, str]:
    """Service and strict verifier on ``address``: a token is allowed, revoked, denied.
    Returns the verifier and a live token of another grant (for further checks)."""
    cfg = dev_config(data_dir=tmp_path, redis="redis://unused", api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix=prefix)
    cfg = dataclasses.replace(cfg, redis=address)  # the form under test, as loaded
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    try:
        with remit.Client(server.grpc_target, api_key=API_KEY) as client:
            verifier = remit.Verifier.from_jwks(
                client.jwks(), issuer=client.issuer(), audience="payments",
                revocation="strict", redis=address, prefix=prefix,
            )
            grants = [
                client.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                                    capabilities=[CAP], purpose="addr", ttl=600)
                for _ in range(2)
            ]
            token, other = client.mint(grants[0].id), client.mint(grants[1].id)
            assert verifier.check(token, action="payments.transfer", args=ARGS).allowed
            client.revoke(grant_id=grants[0].id)
            with pytest.raises(remit.Denied) as denied:
                verifier.check(token, action="payments.transfer", args=ARGS)
            assert denied.value.code == "revoked"
            assert verifier.check(other, action="payments.transfer", args=ARGS).allowed
            return verifier, other
    finally:
        stop(server)


def test_unix_socket_with_password(
    tmp_path: Path, stop_in_background: Callable[[Server], None]
) -> None:
    sock = tmp_path / "redis.sock"
    url = f"unix://:{PASSWORD}@{sock}?db=0"
    with _redis_server(tmp_path, "--port", "0", "--unixsocket", str(sock),
                       "--unixsocketperm", "700", "--requirepass", PASSWORD, probe=url):
        verifier, _ = _revocation_round_trip(tmp_path, url, stop_in_background)
        verifier.close()
        # The wrong password: refused by Redis, and the message does not echo it.
        with connect(f"unix://:wrong-{PASSWORD}@{sock}", timeout=1.0) as wrong:
            with pytest.raises(redis.AuthenticationError) as refused:
                wrong.ping()
            assert PASSWORD not in str(refused.value)


def _cert(
    subject: str, issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: x509.Name | None = None, *, ca: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def _write_pem(path: Path, cert: x509.Certificate, key: Any = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A TLS-only redis-server: (port, CA that signed its cert, an unrelated CA)."""
    ca, ca_key = _cert("remit test CA", ca=True)
    server, server_key = _cert("127.0.0.1", ca_key, ca.subject, ca=False)
    stranger, _ = _cert("some other CA", ca=True)
    _write_pem(tmp_path / "ca.pem", ca)
    _write_pem(tmp_path / "server.pem", server, server_key)
    _write_pem(tmp_path / "stranger.pem", stranger)
    port = free_port()
    probe = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    with _redis_server(tmp_path, "--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
                       "--tls-cert-file", str(tmp_path / "server.pem"),
                       "--tls-key-file", str(tmp_path / "server.key"),
                       "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
                       "--tls-auth-clients", "no", probe=probe):
        yield port, tmp_path / "ca.pem", tmp_path / "stranger.pem"


def test_rediss_end_to_end_and_an_untrusted_certificate_fails_closed(
    tmp_path: Path, tls_redis: tuple[int, Path, Path],
    stop_in_background: Callable[[Server], None],
) -> None:
    port, ca, stranger = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    verifier, live = _revocation_round_trip(tmp_path, url, stop_in_background)
    verifier.close()
    # Plain TCP to the TLS port, and TLS with a CA that did not sign the server's
    # certificate: the verifier cannot read revocation state, so it fails closed.
    for wrong in (f"redis://127.0.0.1:{port}/0",
                  f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={stranger}"):
        with remit.Verifier(verifier._keys, issuer=verifier.issuer, audience="payments",  # type: ignore[attr-defined]
                            revocation="strict", redis=wrong, prefix=PREFIX) as v:
            with pytest.raises(remit.Denied) as denied:
                v.check(live, action="payments.transfer", args=ARGS)
            assert denied.value.code == "revocation_unavailable"


def test_cluster_as_a_list_of_node_urls(
    tmp_path: Path, redis_cluster: RedisClusterProcs,
    stop_in_background: Callable[[Server], None],
) -> None:
    nodes = tuple(redis_cluster.node_urls)
    prefix = f"remit-addr-{uuid.uuid4().hex[:12]}:"
    try:
        verifier, _ = _revocation_round_trip(tmp_path, nodes, stop_in_background, prefix)
        verifier.close()
    finally:
        with connect(nodes) as client:
            assert is_cluster(client)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            assert keys  # the service wrote to the cluster
            client.delete(*keys)
    with connect(redis_cluster.node_urls[0], timeout=2.0) as one:
        assert not is_cluster(one)  # a single node URL is a plain client
    with connect(redis_cluster.client()) as passed:
        assert is_cluster(passed)  # a ready client passes through


def test_the_grant_store_runs_unchanged_on_single_and_cluster(redis_any: RedisUnderTest) -> None:
    """The service's store on redis-py's Redis and RedisCluster alike: grants spread over
    slots (and shards), the app index in another slot, revocation keys in the grant's."""
    store = GrantStore(redis_any.client, RedisKeys(redis_any.prefix))
    now = int(time.time())
    grants = [
        GrantRecord(id=f"g_{uuid.uuid4().hex}", app="a", subject="user:s", agent="agent:a",
                    audience=["payments"], capabilities=[CAP], purpose="p",
                    created_at=now + i, expires_at=now + 600)
        for i in range(6)
    ]
    for g in grants:
        store.create(g, keep_for=600)
    assert store.list_ids("a", 0, 10) == [g.id for g in reversed(grants)]
    assert [g.id for g in store.get_many("a", [g.id for g in grants])] == [g.id for g in grants]
    revoked = store.revoke_grant(grants[0], at=now, reason="r", keep_for=600)
    assert store.get(grants[0].id) == revoked and revoked.revoked
    store.record_token(TokenRecord(jti="t_1", gid=grants[1].id, app="a", exp=now + 60),
                       keep_for=60)
    token = store.token("t_1")
    assert token is not None and token.gid == grants[1].id
    store.revoke_token(token, reason="r", keep_for=60)
    keys = RedisKeys(redis_any.prefix)
    assert redis_any.client.exists(keys.grant_revoked(grants[0].id)) == 1
    assert redis_any.client.exists(keys.token_revoked(grants[1].id, "t_1")) == 1
    assert store.ensure_epoch(now) == 0  # the fixture's epoch is kept, not replaced
