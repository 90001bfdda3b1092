"""Introspect and mTLS attacks against a real service (gRPC on 127.0.0.1:0, real Redis).

Introspection must not be an oracle: a forged token gets a denial with nothing it
claims echoed back, an app cannot probe tokens meant for backends outside its policy,
and a client certificate no app names authenticates nobody.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
import remit
from remit.agent import AgentKey, proof
from remit_service import KeyStore, Server, load_config

from tests.tls_certs import TestCA, write_pem
from tests.tokens import IssuerKey, claims, sign

BANK_KEY = "bank-key-0123456789"
MAIL_KEY = "mail-key-9876543210"
PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
CALL = {"amount": 50}
BANK_URI = "spiffe://remit.test/app/bank"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _start(tmp_path: Path, text: str) -> Server:
    import dataclasses

    path = tmp_path / "remit.toml"
    path.write_text(text, encoding="utf-8")
    cfg = dataclasses.replace(load_config(path), grpc_port=0, http_port=0)
    KeyStore(cfg.keys_dir).ensure()
    return Server(cfg).start()


APPS = f"""
[apps.bank]
api_key_sha256 = "{_digest(BANK_KEY)}"
actions = ["payments.transfer"]
audiences = ["payments"]

[apps.mail]
api_key_sha256 = "{_digest(MAIL_KEY)}"
actions = ["email.*"]
audiences = ["email"]
"""


@pytest.fixture
def two_apps(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[Server]:
    server = _start(
        tmp_path,
        f'issuer = "https://remit.test"\nkeys_dir = "keys"\nredis = "{redis_url}"\n'
        f'prefix = "{redis_prefix}"\n{APPS}',
    )
    yield server
    server.stop(grace=0)


def _bank_token(server: Server, key: AgentKey | None = None) -> str:
    with remit.Client(server.grpc_target, api_key=BANK_KEY) as bank:
        grant = bank.create_grant(subject="user:alice", agent="agent:a", audience=["payments"],
                                  capabilities=[PAY], ttl=600)
        return bank.mint(grant.id, cnf_jkt=key.thumbprint if key else None)


def test_introspect_of_a_forged_token_is_denied_and_echoes_nothing(two_apps: Server) -> None:
    real = _bank_token(two_apps)
    real_kid = remit.peek_unverified(real)[0]["kid"]
    attacker = IssuerKey()
    forged_claims = claims(now=int(__import__("time").time()), iss="https://remit.test",
                           aud=["payments"], sub="user:victim-forged",
                           authorization_details=[{"type": "remit.capability", **PAY}])
    header, _, signature = real.split(".")
    tampered = sign(forged_claims, attacker).split(".")[1]
    cases = {
        # the service's own kid, the attacker's signature
        "bad_signature": sign(forged_claims, attacker, header_overrides={"kid": real_kid}),
        # a real header and signature over a rewritten payload
        "bad_signature ": f"{header}.{tampered}.{signature}",
        # the attacker's own key: not published by the service
        "unknown_key": sign(forged_claims, attacker),
    }
    with remit.Client(two_apps.grpc_target, api_key=BANK_KEY) as bank:
        for code, token in cases.items():
            found = bank.introspect(token, audience="payments", action="payments.transfer",
                                    args=CALL)
            assert (found.allowed, found.code) == (False, code.strip())
            assert (found.grant_id, found.jti, found.subject, found.agent) == ("",) * 4
            assert found.expires_at == 0 and found.anc == ()
            assert "victim" not in found.message


def test_introspection_is_no_oracle_for_another_apps_tokens(
    two_apps: Server, redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = AgentKey.generate()
    token = _bank_token(two_apps, key)
    p = proof(key, token, audience="payments", action="payments.transfer", args=CALL)
    audit = f"{redis_prefix}audit"
    with remit.Client(two_apps.grpc_target, api_key=MAIL_KEY) as mail:
        before = redis_client.xlen(audit)
        # the bank's backend is beyond mail's policy: refused before the token is looked at
        with pytest.raises(remit.PermissionDenied):
            mail.introspect(token, audience="payments", action="payments.transfer", args=CALL,
                            proof=p)
        assert redis_client.xlen(audit) == before  # no decision was even made
        # mail's own audience: the token is not for it, and nothing about it comes back
        found = mail.introspect(token, audience="email", action="payments.transfer",
                                args=CALL, proof=p)
        assert (found.allowed, found.code, found.grant_id, found.subject) == (
            False, "wrong_audience", "", ""
        )
    # the proof was not spent by any of that: the real backend's check still passes
    with remit.Client(two_apps.grpc_target, api_key=BANK_KEY) as bank:
        ok = bank.introspect(token, audience="payments", action="payments.transfer",
                             args=CALL, proof=p)
        assert ok.allowed and ok.subject == "user:alice"


@pytest.fixture
def mtls(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[tuple[Server, TestCA]]:
    ca = TestCA()
    server_cert = ca.issue("remit", ips=("127.0.0.1",), server=True)
    cert = write_pem(tmp_path, "server.pem", server_cert.cert_pem)
    key = write_pem(tmp_path, "server.key", server_cert.key_pem)
    ca_file = write_pem(tmp_path, "ca.pem", ca.cert_pem)
    server = _start(
        tmp_path,
        f'issuer = "https://remit.test"\nkeys_dir = "keys"\nredis = "{redis_url}"\n'
        f'prefix = "{redis_prefix}"\n[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'tls_client_ca = "{ca_file}"\n'
        f'[apps.bank]\nclient_certs = ["uri:{BANK_URI}"]\nactions = ["payments.transfer"]\n'
        f'audiences = ["payments"]\n',
    )
    yield server, ca
    server.stop(grace=0)


def test_mtls_with_an_unmapped_client_cert_is_unauthenticated(
    mtls: tuple[Server, TestCA],
) -> None:
    server, ca = mtls
    # signed by the trusted CA, but no app names it (a near miss of the bank's URI)
    stranger = ca.issue("bank", uris=(BANK_URI + "/x", "spiffe://remit.test/app/Bank"),
                        dns=("bank",))
    creds = grpc.ssl_channel_credentials(ca.cert_pem, stranger.key_pem, stranger.cert_pem)
    for api_key in (None, "guessed-key"):
        with remit.Client(server.grpc_target, api_key=api_key, credentials=creds,
                          retry=None) as c, pytest.raises(remit.Unauthenticated):
            c.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                           capabilities=[PAY], ttl=60)
    # the bank's exact URI from another CA never gets past the handshake
    other = TestCA("attacker CA").issue("bank", uris=(BANK_URI,))
    forged = grpc.ssl_channel_credentials(ca.cert_pem, other.key_pem, other.cert_pem)
    with remit.Client(server.grpc_target, credentials=forged, retry=None, timeout=5) as c, \
            pytest.raises(remit.Unavailable):
        c.issuer()
