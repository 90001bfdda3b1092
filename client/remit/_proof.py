"""Per-call proof of possession: a JWS (``typ: remit-pop+jwt``) signed by the agent key.

A key-bound token (``cnf.jkt``) is worthless without the agent's private key: every
call carries a fresh proof whose claims pin *this* call::

    header  {"alg": "EdDSA", "typ": "remit-pop+jwt",
             "jwk": {"kty": "OKP", "crv": "Ed25519", "x": …}}
    claims  {"jti": fresh random id, "iat": now,
             "ath": b64url(SHA-256(token)), "aud": the tool backend,
             "action": the action, "argh": b64url(SHA-256(RFC 8785 JSON of the arguments))}

Unlike a DPoP proof (method + URL only), it covers the audience, the action and the
arguments, so a captured proof cannot be replayed at another backend, for another
action or with other arguments; its single-use ``jti`` stops replay of the same call.
Signing is hand-rolled on PyNaCl (a JWS is two base64url segments and a signature)
so the agent side needs neither PyJWT nor cryptography.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import rfc8785

from ._encoding import b64url_decode, b64url_encode, split_compact, strict_json_loads
from ._errors import Code, Denied, KeyLoadError
from ._keys import PublicKey

__all__ = [
    "MAX_PROOF_BYTES",
    "POP_TYP",
    "ProofClaims",
    "ProofParser",
    "args_hash",
    "encode_proof",
    "token_hash",
]

POP_TYP = "remit-pop+jwt"
MAX_PROOF_BYTES = 4096
_JTI = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
_HASH = re.compile(r"[A-Za-z0-9_-]{43}\Z")
_CLAIMS = frozenset({"jti", "iat", "ath", "aud", "action", "argh"})
_JWK = frozenset({"kty", "crv", "x"})


def token_hash(token: str) -> str:
    """``ath``: base64url SHA-256 of the token's ASCII bytes."""
    return b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


def args_hash(args: Mapping[str, Any] | None) -> str:
    """``argh``: base64url SHA-256 of the RFC 8785 canonical JSON of the arguments.

    Raises ``ValueError`` for arguments JSON cannot carry exactly (NaN, integers
    beyond ±2^53, non-string keys, non-JSON types).
    """
    try:
        canonical = rfc8785.dumps(dict(args) if args is not None else {})
    except Exception as exc:  # rfc8785 raises several unrelated types
        raise ValueError(f"arguments cannot be canonicalized: {type(exc).__name__}") from None
    return b64url_encode(hashlib.sha256(canonical).digest())


def encode_proof(header: Mapping[str, Any], claims: Mapping[str, Any], sign: Any) -> str:
    """Compact JWS over ``header`` and ``claims``; ``sign(bytes) -> 64-byte signature``."""
    h = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    p = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{h}.{p}"
    return f"{signing_input}.{b64url_encode(sign(signing_input.encode('ascii')))}"


class ProofClaims(NamedTuple):
    jti: str
    iat: int
    ath: str
    aud: str
    action: str
    argh: str
    jkt: str  # RFC 7638 thumbprint of the key that signed the proof


def _bad(message: str) -> Denied:
    return Denied(Code.BAD_PROOF, message)


class ProofParser:
    """Strict proof parsing and signature check. Keeps a bounded memo of header
    segments already seen (one per agent key) -> the key they carry."""

    def __init__(self, max_headers: int = 4096) -> None:
        self._headers: dict[str, PublicKey] = {}
        self._max_headers = max_headers

    def _key(self, h64: str) -> PublicKey:
        key = self._headers.get(h64)
        if key is not None:
            return key
        try:
            header = strict_json_loads(b64url_decode(h64))
        except ValueError as exc:
            raise _bad(f"proof header: {exc}") from None
        if type(header) is not dict or header.keys() != {"alg", "typ", "jwk"}:
            raise _bad('proof header must be exactly {"alg", "typ", "jwk"}')
        if header["alg"] != "EdDSA":
            raise _bad(f"proof alg {header['alg']!r} is not EdDSA")
        if header["typ"] != POP_TYP:
            raise _bad(f"proof typ {header['typ']!r} is not {POP_TYP!r}")
        jwk = header["jwk"]
        if type(jwk) is not dict or jwk.keys() != _JWK:
            raise _bad("proof jwk must be a public OKP key: exactly kty, crv, x")
        if jwk["kty"] != "OKP" or jwk["crv"] != "Ed25519" or type(jwk["x"]) is not str:
            raise _bad("proof jwk must be an Ed25519 (OKP) key")
        try:
            key = PublicKey(b64url_decode(jwk["x"]))
        except (ValueError, KeyLoadError) as exc:  # base64, or not a 32-byte key
            raise _bad(f"proof jwk x: {exc}") from None
        if len(self._headers) >= self._max_headers:
            self._headers.clear()
        self._headers[h64] = key
        return key

    def parse(self, proof: object, expected_jkt: str) -> ProofClaims:
        """Check structure, key binding and signature; the caller checks the claims."""
        try:
            h64, p64, s64 = split_compact(proof, MAX_PROOF_BYTES, "proof")
        except ValueError as exc:
            raise _bad(str(exc)) from None
        key = self._key(h64)
        if key.kid != expected_jkt:
            raise Denied(
                Code.PROOF_KEY_MISMATCH, "proof is signed by a key the token is not bound to"
            )
        try:
            signature = b64url_decode(s64)
            payload = b64url_decode(p64)
        except ValueError as exc:
            raise _bad(f"proof segment: {exc}") from None
        if len(signature) != 64 or not key.verify(
            f"{h64}.{p64}".encode("ascii"), signature
        ):
            raise _bad("proof signature does not verify")
        try:
            claims = strict_json_loads(payload)
        except ValueError as exc:
            raise _bad(f"proof claims: {exc}") from None
        if type(claims) is not dict or claims.keys() != _CLAIMS:
            raise _bad("proof claims must be exactly jti, iat, ath, aud, action, argh")
        jti, iat = claims["jti"], claims["iat"]
        if type(jti) is not str or not _JTI.match(jti):
            raise _bad("proof jti must be 16-64 base64url characters")
        if type(iat) is not int or not 0 <= iat < 2**53:
            raise _bad("proof iat must be an integer NumericDate")
        for name in ("ath", "argh"):
            if type(claims[name]) is not str or not _HASH.match(claims[name]):
                raise _bad(f"proof {name} must be a base64url SHA-256")
        for name in ("aud", "action"):
            if type(claims[name]) is not str or not 0 < len(claims[name]) <= 256:
                raise _bad(f"proof {name} must be a non-empty string")
        return ProofClaims(
            jti=jti,
            iat=iat,
            ath=claims["ath"],
            aud=claims["aud"],
            action=claims["action"],
            argh=claims["argh"],
            jkt=key.kid,
        )
