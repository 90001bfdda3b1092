"""Issuer keys on disk and their rotation: KeyStore alone, then a running service.

Time is faked through the ``now=`` arguments of ``generate`` / ``published``; the only
real wait is the service's once-a-second re-read of the keys directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import remit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from remit._encoding import b64url_encode
from remit_service import KeyStore, KeyStoreError, Server, dev_config
from remit_service._issuer import Issuer

from .conftest import API_KEY, http_get

MAX_TTL = 3600
MARGIN = 60
T0 = 1_767_225_600.0
PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
ARGS = {"amount": 1}


def _claims(now: int) -> dict[str, Any]:
    return {
        "iss": "remit-dev", "sub": "user:alice", "aud": ["payments"],
        "act": {"sub": "agent:a"}, "iat": now, "nbf": now, "exp": now + 300,
        "jti": "t_" + os.urandom(9).hex(), "gid": "g_0123456789abcdef", "anc": [],
        "authorization_details": [{"type": "remit.capability", **PAY}], "purpose": "",
    }


def _kid(token: str) -> str:
    kid: str = remit.peek_unverified(token)[0]["kid"]
    return kid


@pytest.fixture
def umask_0() -> Iterator[None]:
    """The most permissive umask: file modes must not depend on the caller's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- KeyStore on its own -------------------------------------------------------------------


def test_private_keys_0600_and_directory_0700(tmp_path: Path, umask_0: None) -> None:
    ks = KeyStore(tmp_path / "keys")
    k1 = ks.ensure()
    k2 = ks.generate()
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    pems = sorted((tmp_path / "keys").glob("*.pem"))
    assert [p.stem for p in pems] == sorted([k1.kid, k2.kid])
    for pem in pems:
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600, pem
    # No stray temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(
        [f"{k1.kid}.pem", f"{k1.kid}.json", f"{k2.kid}.pem", f"{k2.kid}.json"]
    )


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys")
    first = ks.ensure()
    assert ks.ensure().kid == first.kid
    assert KeyStore(tmp_path / "keys").ensure().kid == first.kid
    assert len(list((tmp_path / "keys").glob("*.pem"))) == 1


def test_jwk_thumbprint_matches_rfc_8037_vector() -> None:
    # RFC 8037, appendix A.3: the thumbprint of the appendix A.2 public key.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert remit.jwk_thumbprint(x) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_kid_is_the_rfc_7638_thumbprint_of_the_key_on_disk(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys")
    key = ks.ensure()
    private = serialization.load_pem_private_key(
        (tmp_path / "keys" / f"{key.kid}.pem").read_bytes(), password=None
    )
    assert isinstance(private, Ed25519PrivateKey)
    x = b64url_encode(
        private.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
    )
    # RFC 7638 by hand: SHA-256 over the required members, sorted, no whitespace.
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    by_hand = b64url_encode(hashlib.sha256(members.encode()).digest())
    assert key.kid == by_hand == remit.jwk_thumbprint(x)
    jwk = ks.jwks(now=time.time(), max_token_ttl=MAX_TTL, margin=MARGIN)["keys"][0]
    assert (jwk["kid"], jwk["x"]) == (key.kid, x)
    assert json.loads((tmp_path / "keys" / f"{key.kid}.json").read_text())["kid"] == key.kid


def test_rotation_signs_with_the_newest_key_and_publishes_both(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys")
    issuer = Issuer(ks)
    now = int(time.time())
    k1 = ks.ensure()
    old_token = issuer.sign(_claims(now))
    assert _kid(old_token) == k1.kid
    k2 = ks.generate()  # rotate
    assert k2.kid != k1.kid
    # Right away, on the same instance: no stale signing key.
    assert ks.signing_key().kid == k2.kid
    new_token = issuer.sign(_claims(now))
    assert _kid(new_token) == k2.kid
    jwks = ks.jwks(now=time.time(), max_token_ttl=MAX_TTL, margin=MARGIN)
    assert [k["kid"] for k in jwks["keys"]] == [k2.kid, k1.kid]  # newest first
    # A verifier built from the new JWKS takes tokens of either key.
    v = remit.Verifier(jwks, issuer="remit-dev", audience="payments", revocation="off")
    for token in (old_token, new_token):
        assert v.check(token, action="payments.transfer", args=ARGS).allowed
    # One built from the old JWKS only knows the old key.
    old_v = remit.Verifier({"keys": [k1.public.to_jwk()]}, issuer="remit-dev",
                           audience="payments", revocation="off")
    with pytest.raises(remit.Denied) as exc:
        old_v.check(new_token, action="payments.transfer", args=ARGS)
    assert exc.value.code == "unknown_key"


def test_old_key_unpublished_after_successor_age_exceeds_ttl_plus_margin(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys")
    k1 = ks.generate(now=T0)
    k2 = ks.generate(now=T0 + 100)
    k3 = ks.generate(now=T0 + 5000)
    assert ks.signing_key().kid == k3.kid

    def published(at: float) -> list[str]:
        return [k.kid for k in ks.published(now=at, max_token_ttl=MAX_TTL, margin=MARGIN)]

    assert published(T0 + 100) == [k1.kid, k2.kid, k3.kid]
    # k1 retires once k2 (its successor) is older than max TTL + margin.
    k1_end = T0 + 100 + MAX_TTL + MARGIN
    assert published(k1_end - 1) == [k1.kid, k2.kid, k3.kid]
    assert published(k1_end + 1) == [k2.kid, k3.kid]
    k2_end = T0 + 5000 + MAX_TTL + MARGIN
    assert published(k2_end - 1) == [k2.kid, k3.kid]
    assert published(k2_end + 1) == [k3.kid]
    # The signing key is always published, however old.
    assert published(T0 + 10 * 365 * 86400) == [k3.kid]
    jwks = ks.jwks(now=k1_end + 1, max_token_ttl=MAX_TTL, margin=MARGIN)
    assert [k["kid"] for k in jwks["keys"]] == [k3.kid, k2.kid]
    # The retired key stays on disk (for audits); only the JWKS drops it.
    assert (tmp_path / "keys" / f"{k1.kid}.pem").exists()


def test_a_tampered_key_file_is_refused(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys")
    k1 = ks.ensure()
    k2 = ks.generate()
    meta = tmp_path / "keys" / f"{k1.kid}.json"
    # Point k1's metadata at k2's key: the kid no longer matches the key's thumbprint.
    (tmp_path / "keys" / f"{k2.kid}.pem").replace(tmp_path / "keys" / f"{k1.kid}.pem")
    assert meta.exists()
    with pytest.raises(KeyStoreError, match=r"thumbprint|unusable"):
        KeyStore(tmp_path / "keys").keys()


def test_server_refuses_to_start_without_a_key(tmp_path: Path, redis_url: str) -> None:
    cfg = dev_config(data_dir=tmp_path, redis=redis_url, api_key=API_KEY,
                     grpc_port=0, http_port=0)
    cfg.keys_dir.mkdir(mode=0o700)
    with pytest.raises(KeyStoreError, match="no issuer key"):
        Server(cfg)


# -- a running service ----------------------------------------------------------------------


def test_running_server_picks_up_a_key_rotated_elsewhere(
    service: Server, client: remit.Client, make_verifier: Any
) -> None:
    g = client.create_grant(subject="user:alice", agent="agent:a", audience=["payments"],
                            capabilities=[PAY])
    k1 = service.keystore.signing_key().kid
    old_token = client.mint(g.id)
    assert _kid(old_token) == k1
    assert [k["kid"] for k in client.jwks()["keys"]] == [k1]

    k2 = KeyStore(service.config.keys_dir).generate().kid  # e.g. `remit keys rotate`
    time.sleep(1.1)  # the service re-reads the directory at most once a second

    new_token = client.mint(g.id)
    assert _kid(new_token) == k2
    jwks = client.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [k2, k1]
    assert http_get(service.http_url + "/.well-known/jwks.json")[1] == jwks
    v = make_verifier(client)  # built from the new JWKS
    assert v.check(old_token, action="payments.transfer", args=ARGS).allowed
    assert v.check(new_token, action="payments.transfer", args=ARGS).allowed
    # Revocation still reaches tokens of both keys.
    client.revoke(grant_id=g.id)
    for token in (old_token, new_token):
        with pytest.raises(remit.Denied) as exc:
            v.check(token, action="payments.transfer", args=ARGS)
        assert exc.value.code == "revoked"


def test_a_pre_published_key_is_in_the_jwks_before_it_signs(tmp_path: Path) -> None:
    """rotate with activate_in: every verifier can learn the key before any token uses it."""
    store = KeyStore(tmp_path / "keys")
    old = store.generate(now=1000.0)
    new = store.generate(now=2000.0, activate_in=60)
    kids = lambda now: {k.kid for k in store.published(now=now, max_token_ttl=300, margin=60)}  # noqa: E731
    assert store.signing_key(2000.0).kid == old.kid
    assert kids(2000.0) == {old.kid, new.kid}  # published at once
    assert store.signing_key(2060.0).kid == new.kid  # signs once active
    assert kids(2060.0 + 300 + 59) == {old.kid, new.kid}  # old tokens may still live
    assert kids(2060.0 + 300 + 61) == {new.kid}
