"""TLS and mTLS on the gRPC listener: real certificates from a throwaway CA."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import remit
from remit_service import KeyStore, Server, load_config
from remit_service._config import ConfigError

from ..tls_certs import Issued, TestCA, write_pem

BANK_URI = "spiffe://remit.test/app/bank"
MAIL_KEY = "mail-key-9876543210"
CAP = [{"action": "payments.transfer", "args": {"amount": {"le": 10}}}]


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: TestCA
    dir: Path
    bank: Issued  # mapped by SAN URI
    ops: Issued  # mapped by SHA-256 fingerprint
    stranger: Issued  # signed by the CA, named by no app
    foreign_ca: TestCA
    foreign: Issued  # the bank's URI, but from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, foreign_ca = TestCA(), TestCA("another CA")
    d = tmp_path_factory.mktemp("pki")
    server = ca.issue("remit", ips=("127.0.0.1",), server=True)
    write_pem(d, "ca.pem", ca.cert_pem)
    write_pem(d, "server.pem", server.cert_pem)
    write_pem(d, "server.key", server.key_pem)
    return Pki(
        ca=ca, dir=d,
        bank=ca.issue("bank", uris=(BANK_URI,)),
        ops=ca.issue("ops", dns=("ops.internal",)),
        stranger=ca.issue("stranger", uris=("spiffe://remit.test/app/nobody",)),
        foreign_ca=foreign_ca,
        foreign=foreign_ca.issue("bank", uris=(BANK_URI,)),
    )


def _config_text(pki: Pki, redis_url: str, prefix: str, *, mtls: bool) -> str:
    client_ca = f'tls_client_ca = "{pki.dir / "ca.pem"}"' if mtls else ""
    mapped = (
        f"""
[apps.bank]
client_certs = ["uri:{BANK_URI}"]
actions = ["payments.transfer"]
audiences = ["payments"]

[apps.ops]
client_certs = ["sha256:{pki.ops.sha256.upper()}"]
actions = ["*"]
audiences = ["*"]
"""
        if mtls
        else ""
    )
    return f"""
issuer = "https://remit.test"
keys_dir = "keys"
redis = "{redis_url}"
prefix = "{prefix}"

[server]
tls_cert = "{pki.dir / "server.pem"}"
tls_key = "{pki.dir / "server.key"}"
{client_ca}

[apps.mail]
api_key_sha256 = "{hashlib.sha256(MAIL_KEY.encode()).hexdigest()}"
actions = ["payments.*"]
audiences = ["payments"]
{mapped}"""


def _serve(
    tmp_path: Path, text: str, stop: Callable[[Server], None]
) -> Iterator[Server]:
    path = tmp_path / "remit.toml"
    path.write_text(text, encoding="utf-8")
    cfg = dataclasses.replace(load_config(path), grpc_port=0, http_port=0)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop(server)


@pytest.fixture
def tls_service(
    pki: Pki, tmp_path: Path, redis_url: str, redis_prefix: str,
    stop_in_background: Callable[[Server], None],
) -> Iterator[Server]:
    yield from _serve(tmp_path, _config_text(pki, redis_url, redis_prefix, mtls=False),
                      stop_in_background)


@pytest.fixture
def mtls_service(
    pki: Pki, tmp_path: Path, redis_url: str, redis_prefix: str,
    stop_in_background: Callable[[Server], None],
) -> Iterator[Server]:
    yield from _serve(tmp_path, _config_text(pki, redis_url, redis_prefix, mtls=True),
                      stop_in_background)


def _client(
    server: Server, *, ca: TestCA | None, cert: Issued | None = None, api_key: str | None = None
) -> remit.Client:
    creds = None
    if ca is not None:
        creds = grpc.ssl_channel_credentials(
            ca.cert_pem,
            private_key=cert.key_pem if cert else None,
            certificate_chain=cert.cert_pem if cert else None,
        )
    return remit.Client(server.grpc_target, api_key=api_key, credentials=creds, retry=None,
                        timeout=5)


def _grant(c: remit.Client) -> remit.Grant:
    return c.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                          capabilities=CAP, ttl=60)


# -- TLS ----------------------------------------------------------------------------------


def test_api_key_works_over_tls_and_tokens_introspect(pki: Pki, tls_service: Server) -> None:
    with _client(tls_service, ca=pki.ca, api_key=MAIL_KEY) as c:
        grant = _grant(c)
        assert grant.app == "mail"
        token = c.mint(grant.id)
        found = c.introspect(token, audience="payments", action="payments.transfer",
                             args={"amount": 5})
        assert found.allowed and found.grant_id == grant.id


def test_plaintext_to_a_tls_port_fails(tls_service: Server) -> None:
    with _client(tls_service, ca=None, api_key=MAIL_KEY) as c, pytest.raises(remit.Unavailable):
        c.issuer()


def test_a_client_trusting_another_ca_refuses_the_server(pki: Pki, tls_service: Server) -> None:
    with _client(tls_service, ca=pki.foreign_ca, api_key=MAIL_KEY) as c, pytest.raises(
        remit.Unavailable
    ):
        c.issuer()


# -- mTLS ---------------------------------------------------------------------------------


def test_client_cert_maps_to_its_app_without_an_api_key(pki: Pki, mtls_service: Server) -> None:
    with _client(mtls_service, ca=pki.ca, cert=pki.bank) as c:
        grant = _grant(c)
        assert grant.app == "bank"
        assert [g.id for g in c.list_grants()] == [grant.id]
    with _client(mtls_service, ca=pki.ca, cert=pki.ops) as c:  # by fingerprint
        assert _grant(c).app == "ops"


def test_api_key_still_works_with_a_ca_signed_cert_no_app_names(
    pki: Pki, mtls_service: Server
) -> None:
    with _client(mtls_service, ca=pki.ca, cert=pki.stranger, api_key=MAIL_KEY) as c:
        assert _grant(c).app == "mail"


def test_cert_and_api_key_of_different_apps_is_unauthenticated(
    pki: Pki, mtls_service: Server
) -> None:
    with _client(mtls_service, ca=pki.ca, cert=pki.bank, api_key=MAIL_KEY) as c, pytest.raises(
        remit.Unauthenticated
    ):
        _grant(c)


def test_mtls_listener_refuses_clients_without_or_with_a_foreign_cert(
    pki: Pki, mtls_service: Server
) -> None:
    for cert in (None, pki.foreign):
        with _client(mtls_service, ca=pki.ca, cert=cert, api_key=MAIL_KEY) as c, pytest.raises(
            remit.Unavailable
        ):
            c.issuer()


def test_agent_exchange_works_over_mtls(pki: Pki, mtls_service: Server) -> None:
    from remit.agent import AgentKey

    key = AgentKey.generate()
    with _client(mtls_service, ca=pki.ca, cert=pki.bank) as app:
        token = app.mint(_grant(app).id, cnf_jkt=key.thumbprint)
    with _client(mtls_service, ca=pki.ca, cert=pki.stranger) as agent:
        assert agent.exchange(token, key).depth == 1


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "app", "message"),
    [
        ('tls_cert = "c.pem"', "", "give both or neither"),
        ('tls_client_ca = "ca.pem"', "", "needs server.tls_cert"),
        ('tls_cert = "c.pem"\ntls_key = "k.pem"', 'client_certs = ["uri:x:y"]',
         "needs server.tls_client_ca"),
        ('tls_cert = "c"\ntls_key = "k"\ntls_client_ca = "ca"', 'client_certs = ["cn:bank"]',
         "is not uri:"),
        ('tls_cert = "c"\ntls_key = "k"\ntls_client_ca = "ca"', 'client_certs = ["sha256:ab"]',
         "is not uri:"),
    ],
)
def test_tls_config_errors_name_the_key(
    tmp_path: Path, server: str, app: str, message: str
) -> None:
    path = tmp_path / "remit.toml"
    path.write_text(
        f'issuer = "i"\nkeys_dir = "k"\n[server]\n{server}\n'
        f'[apps.a]\napi_key_sha256 = "{"0" * 64}"\nactions = ["*"]\naudiences = ["*"]\n{app}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_an_identity_naming_two_apps_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "remit.toml"
    apps = "".join(
        f'[apps.{n}]\nclient_certs = ["dns:x.internal"]\nactions = ["*"]\naudiences = ["*"]\n'
        for n in ("a", "b")
    )
    path.write_text(
        f'issuer = "i"\nkeys_dir = "k"\n[server]\ntls_cert = "c"\ntls_key = "k"\n'
        f'tls_client_ca = "ca"\n{apps}',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="also names app 'a'"):
        load_config(path)


# -- remit serve --tls-* ------------------------------------------------------------------


def test_serve_flags_turn_on_mtls(
    pki: Pki, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "remit_service", "serve", "--dev", "--data-dir",
           str(tmp_path / "dev"), "--grpc-port", "0", "--http-port", "0", "--redis", redis_url,
           "--prefix", redis_prefix]
    bad = subprocess.run([*cmd, "--tls-cert", str(pki.dir / "server.pem")], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "give both or neither" in bad.stderr
    tls = ["--tls-cert", str(pki.dir / "server.pem"), "--tls-key", str(pki.dir / "server.key"),
           "--tls-client-ca", str(pki.dir / "ca.pem")]
    proc = subprocess.Popen([*cmd, *tls], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "REMIT_DEV_API_KEY": MAIL_KEY})
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["tls"] == "mtls"
        creds = grpc.ssl_channel_credentials(pki.ca.cert_pem, pki.stranger.key_pem,
                                             pki.stranger.cert_pem)
        with remit.Client(ready["grpc"], api_key=MAIL_KEY, credentials=creds, retry=None) as c:
            assert _grant(c).app == "dev"
        with remit.Client(ready["grpc"], api_key=MAIL_KEY, retry=None, timeout=5) as c, \
                pytest.raises(remit.Unavailable):
            c.issuer()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_cli_app_commands_speak_mtls(
    pki: Pki, mtls_service: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from remit_service.cli import main as cli_main

    tls = ["--target", mtls_service.grpc_target, "--tls-ca", str(pki.dir / "ca.pem"),
           "--tls-cert", str(write_pem(tmp_path, "bank.pem", pki.bank.cert_pem)),
           "--tls-key", str(write_pem(tmp_path, "bank.key", pki.bank.key_pem))]
    with _client(mtls_service, ca=pki.ca, cert=pki.bank) as c:
        token = c.mint(_grant(c).id)
    call = ["--audience", "payments", "--action", "payments.transfer"]
    assert cli_main(["introspect", *tls, token, *call, "--args", '{"amount": 5}']) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is True
    assert cli_main(["introspect", *tls, token, *call, "--args", '{"amount": 11}']) == 3
    assert json.loads(capsys.readouterr().out)["code"] == "argument_denied"
    # no certificate and no API key: a usage error before any connection
    assert cli_main(["introspect", *tls[:4], token, *call]) == 2
