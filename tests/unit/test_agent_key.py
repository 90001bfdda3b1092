"""The agent side: AgentKey files, thumbprints, and the proofs and carriers it makes.

Proofs are decoded and checked here with ``cryptography``, ``hashlib`` and ``rfc8785``
(not with remit's own parser), so a proof that remit both writes and reads wrongly in
the same way would still fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import remit
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey
from remit.agent import (
    MCP_PROOF_KEY,
    MCP_TOKEN_KEY,
    PROOF_HEADER,
    AgentKey,
    http_headers,
    mcp_meta,
    proof,
)

from tests.tokens import ACTION, ARGS, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

ISSUER_KEY = IssuerKey()
JTI_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def unb64(text: str) -> bytes:
    assert "=" not in text and "+" not in text and "/" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def saved_jwk(key: AgentKey, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "agent.jwk"
    key.save(path)
    jwk: dict[str, str] = json.loads(path.read_text())
    return jwk


def bound_token(key: AgentKey) -> str:
    return sign(claims(cnf={"jkt": key.thumbprint}), ISSUER_KEY)


def verifier() -> remit.Verifier:
    return remit.Verifier(ISSUER_KEY.jwks(), issuer=ISSUER, audience=AUDIENCE,
                          revocation="off", replay="local", clock=lambda: NOW)


# -- files --------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    key = AgentKey.generate()
    path = tmp_path / "agent.jwk"
    key.save(path)
    loaded = AgentKey.load(path)
    assert loaded.thumbprint == key.thumbprint
    assert loaded.public_jwk == key.public_jwk
    # Same private key: signatures are deterministic in Ed25519.
    assert loaded.sign(b"message") == key.sign(b"message")
    assert AgentKey.load(str(path)).thumbprint == key.thumbprint  # str paths too


def test_saved_file_is_a_private_okp_jwk(tmp_path: Path) -> None:
    key = AgentKey.generate()
    jwk = saved_jwk(key, tmp_path)
    assert set(jwk) == {"kty", "crv", "x", "d"}
    assert (jwk["kty"], jwk["crv"], jwk["x"]) == ("OKP", "Ed25519", key.public_jwk["x"])
    assert len(unb64(jwk["d"])) == 32


def test_saved_file_is_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "agent.jwk"
    old = os.umask(0)  # even with a permissive umask
    try:
        AgentKey.generate().save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "agent.jwk"
    first = AgentKey.generate()
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        AgentKey.generate().save(path)
    assert path.read_bytes() == before
    assert AgentKey.load(path).thumbprint == first.thumbprint


def test_save_refuses_to_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "agent.jwk"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        AgentKey.generate().save(link)
    assert not target.exists()


def test_load_refuses_mismatching_x_and_d(tmp_path: Path) -> None:
    jwk = saved_jwk(AgentKey.generate(), tmp_path)
    other = AgentKey.generate().public_jwk["x"]
    path = write_json(tmp_path / "mixed.jwk", {**jwk, "x": other})
    with pytest.raises(remit.KeyLoadError, match="does not match"):
        AgentKey.load(path)


def test_load_refuses_non_json(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jwk"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(path)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"kty": "EC"}, id="kty-ec"),
        pytest.param({"kty": "RSA"}, id="kty-rsa"),
        pytest.param({"kty": "oct"}, id="kty-oct"),
        pytest.param({"crv": "X25519"}, id="crv-x25519"),
        pytest.param({"crv": "Ed448"}, id="crv-ed448"),
    ],
)
def test_load_refuses_wrong_key_type(tmp_path: Path, change: dict[str, str]) -> None:
    jwk = saved_jwk(AgentKey.generate(), tmp_path)
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(write_json(tmp_path / "wrong.jwk", {**jwk, **change}))


def test_load_refuses_a_public_only_jwk(tmp_path: Path) -> None:
    key = AgentKey.generate()
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(write_json(tmp_path / "public.jwk", key.public_jwk))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"OKP"', id="string"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"kty":"OKP","kty":"OKP"}', id="duplicate-key"),
    ],
)
def test_load_refuses_other_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jwk"
    path.write_bytes(content)
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(path)


@pytest.mark.parametrize(
    "d",
    [
        pytest.param("AAAA", id="3-bytes"),
        pytest.param(b64(bytes(64)), id="64-bytes"),
        pytest.param(7, id="int"),
        pytest.param(None, id="null"),
    ],
)
def test_load_refuses_a_bad_d(tmp_path: Path, d: Any) -> None:
    jwk = saved_jwk(AgentKey.generate(), tmp_path)
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(write_json(tmp_path / "bad-d.jwk", {**jwk, "d": d}))


def test_load_refuses_a_missing_file_and_a_directory(tmp_path: Path) -> None:
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(tmp_path / "missing.jwk")
    with pytest.raises(remit.KeyLoadError):
        AgentKey.load(tmp_path)


def test_load_errors_do_not_carry_the_private_key(tmp_path: Path) -> None:
    jwk = saved_jwk(AgentKey.generate(), tmp_path)
    other = AgentKey.generate().public_jwk["x"]
    with pytest.raises(remit.KeyLoadError) as info:
        AgentKey.load(write_json(tmp_path / "mixed.jwk", {**jwk, "x": other}))
    assert jwk["d"] not in str(info.value)
    assert jwk["d"] not in repr(info.value)


# -- identity -----------------------------------------------------------------------------


def test_thumbprint_is_the_rfc_7638_thumbprint_of_x() -> None:
    key = AgentKey.generate()
    x = key.public_jwk["x"]
    assert key.thumbprint == remit.jwk_thumbprint(x)
    # RFC 7638 by hand: required members, sorted, no whitespace.
    members = f'{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}'.encode()
    assert key.thumbprint == b64(hashlib.sha256(members).digest())


def test_thumbprint_of_the_rfc_8037_example_key() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = AgentKey(SigningKey(seed))
    assert key.public_jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert key.thumbprint == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_public_jwk_is_public_and_a_copy() -> None:
    key = AgentKey.generate()
    jwk = key.public_jwk
    assert set(jwk) == {"kty", "crv", "x"}
    jwk["x"] = "changed"
    assert key.public_jwk["x"] != "changed"


def test_repr_has_no_private_material(tmp_path: Path) -> None:
    key = AgentKey.generate()
    d = saved_jwk(key, tmp_path)["d"]
    for text in (repr(key), str(key), f"{key!r}", f"{key}"):
        assert d not in text
        assert key.thumbprint in text
    assert not hasattr(key, "__dict__")  # nothing to dump through vars()


# -- proofs -------------------------------------------------------------------------------


def decode(jws: str, key: AgentKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a proof and check its signature with ``cryptography``."""
    h64, p64, s64 = jws.split(".")
    x = unb64(key.public_jwk["x"])
    try:
        Ed25519PublicKey.from_public_bytes(x).verify(unb64(s64), f"{h64}.{p64}".encode())
    except InvalidSignature:
        pytest.fail("the proof signature does not verify")
    header: dict[str, Any] = json.loads(unb64(h64))
    payload: dict[str, Any] = json.loads(unb64(p64))
    return header, payload


def test_proof_decodes_as_specified() -> None:
    key = AgentKey.generate()
    token = bound_token(key)
    args = {"to": "DE89", "amount": 50, "memo": {"b": [1, 2.5], "a": "é"}}
    jws = proof(key, token, audience=AUDIENCE, action=ACTION, args=args,
                clock=lambda: NOW + 0.9)
    assert jws.isascii() and jws.count(".") == 2
    header, payload = decode(jws, key)
    assert header == {"alg": "EdDSA", "typ": "remit-pop+jwt",
                      "jwk": {"kty": "OKP", "crv": "Ed25519", "x": key.public_jwk["x"]}}
    assert set(payload) == {"jti", "iat", "ath", "aud", "action", "argh"}
    assert type(payload["iat"]) is int and payload["iat"] == NOW
    assert payload["aud"] == AUDIENCE and payload["action"] == ACTION
    assert payload["ath"] == b64(hashlib.sha256(token.encode("ascii")).digest())
    assert payload["argh"] == b64(hashlib.sha256(rfc8785.dumps(args)).digest())
    assert 16 <= len(payload["jti"]) <= 64 and set(payload["jti"]) <= JTI_ALPHABET


def test_proof_without_args_hashes_the_empty_object() -> None:
    key = AgentKey.generate()
    _, payload = decode(proof(key, bound_token(key), audience=AUDIENCE, action=ACTION), key)
    assert payload["argh"] == b64(hashlib.sha256(b"{}").digest())


def test_proofs_are_fresh() -> None:
    key = AgentKey.generate()
    token = bound_token(key)
    made = [proof(key, token, audience=AUDIENCE, action=ACTION, args=ARGS, clock=lambda: NOW)
            for _ in range(50)]
    assert len({decode(p, key)[1]["jti"] for p in made}) == 50


def test_proof_is_accepted_by_the_verifier() -> None:
    key = AgentKey.generate()
    token = bound_token(key)
    v = verifier()
    jws = proof(key, token, audience=AUDIENCE, action=ACTION, args=ARGS, clock=lambda: NOW)
    assert v.check(token, action=ACTION, args=ARGS, proof=jws).allowed
    with pytest.raises(remit.Denied) as info:
        v.check(token, action=ACTION, args=ARGS, proof=jws)
    assert info.value.code is remit.Code.REPLAYED


def test_proof_of_a_loaded_key_is_accepted(tmp_path: Path) -> None:
    key = AgentKey.generate()
    key.save(tmp_path / "agent.jwk")
    loaded = AgentKey.load(tmp_path / "agent.jwk")
    token = bound_token(key)
    jws = proof(loaded, token, audience=AUDIENCE, action=ACTION, args=ARGS, clock=lambda: NOW)
    assert verifier().check(token, action=ACTION, args=ARGS, proof=jws).allowed


def test_proof_refuses_args_json_cannot_carry() -> None:
    key = AgentKey.generate()
    with pytest.raises(ValueError, match="canonicalized"):
        proof(key, bound_token(key), audience=AUDIENCE, action=ACTION,
              args={"amount": float("nan")})


# -- carriers -----------------------------------------------------------------------------


def test_http_headers_with_a_key_carry_token_and_proof() -> None:
    key = AgentKey.generate()
    token = bound_token(key)
    headers = http_headers(key, token, audience=AUDIENCE, action=ACTION, args=ARGS)
    assert set(headers) == {"Authorization", PROOF_HEADER}
    assert headers["Authorization"] == f"Remit {token}"
    _, payload = decode(headers[PROOF_HEADER], key)
    assert (payload["aud"], payload["action"]) == (AUDIENCE, ACTION)


def test_mcp_meta_with_a_key_carries_token_and_proof() -> None:
    key = AgentKey.generate()
    token = bound_token(key)
    meta = mcp_meta(key, token, audience=AUDIENCE, action=ACTION, args=ARGS)
    assert set(meta) == {MCP_TOKEN_KEY, MCP_PROOF_KEY}
    assert meta[MCP_TOKEN_KEY] == token
    decode(meta[MCP_PROOF_KEY], key)


def test_http_headers_without_a_key_carry_only_the_token() -> None:
    token = sign(claims(), ISSUER_KEY)
    headers = http_headers(None, token, audience=AUDIENCE, action=ACTION, args=ARGS)
    assert headers == {"Authorization": f"Remit {token}"}


def test_mcp_meta_without_a_key_carries_only_the_token() -> None:
    token = sign(claims(), ISSUER_KEY)
    assert mcp_meta(None, token, audience=AUDIENCE, action=ACTION, args=ARGS) == {
        MCP_TOKEN_KEY: token
    }
