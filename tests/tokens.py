"""Craft remit tokens in tests: valid ones, and malformed-but-validly-signed ones.

:func:`sign` goes through PyJWT (an independent JOSE implementation) whenever the
header is one PyJWT can express; :func:`sign_raw` signs arbitrary header and payload
bytes with Ed25519 directly, for what no well-behaved library emits (duplicate keys,
floats in time claims, non-UTF-8 JSON). Tests pin the clock to :data:`NOW`::

    key = IssuerKey()
    verifier = remit.Verifier(key.jwks(), issuer=ISSUER, audience=AUDIENCE,
                              revocation="off", clock=lambda: NOW)
    verifier.check(sign(claims(), key), action="payments.transfer", args=ARGS)
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any, Final

import jwt
import remit
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ACTION",
    "ARGS",
    "AUDIENCE",
    "ISSUER",
    "NOW",
    "OMIT",
    "IssuerKey",
    "b64url",
    "claims",
    "compact_json",
    "default_header",
    "sign",
    "sign_raw",
]

NOW: Final = 1_767_225_600  # 2026-01-01T00:00:00Z; verifiers get clock=lambda: NOW
ISSUER: Final = "https://issuer.test"
AUDIENCE: Final = "payments"
ACTION: Final = "payments.transfer"
ARGS: Final[Mapping[str, Any]] = {"amount": 50, "to": "DE89"}  # allowed by default claims


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final[Any] = _Omit()
"""Pass as a claim or header override to leave that member out."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_json(value: Any) -> bytes:
    """Compact JSON, insertion order kept, UTF-8 (non-ASCII written as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class IssuerKey:
    """An Ed25519 issuer key (``cryptography``), its RFC 7638 ``kid`` and its JWKS."""

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self.private: Ed25519PrivateKey = private or Ed25519PrivateKey.generate()
        self.raw_public: bytes = self.private.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        self.public: remit.PublicKey = remit.PublicKey(self.raw_public)
        self.kid: str = self.public.kid

    @classmethod
    def from_seed(cls, seed: bytes) -> IssuerKey:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.raw_public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}

    def sign_bytes(self, data: bytes) -> bytes:
        return self.private.sign(data)


def _apply(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in overrides.items():
        if value is OMIT:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def claims(*, now: int = NOW, **overrides: Any) -> dict[str, Any]:
    """Valid default claims at ``now``; ``name=OMIT`` drops a claim, others replace it."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user:alice",
        "aud": [AUDIENCE],
        "act": {"sub": "agent:a"},
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
        "gid": secrets.token_urlsafe(16),
        "anc": [],
        "authorization_details": [
            {
                "type": "remit.capability",
                "action": ACTION,
                "args": {"amount": {"le": 100}, "to": {"eq": "DE89"}},
            }
        ],
        "purpose": "test",
    }
    return _apply(base, overrides)


def default_header(key: IssuerKey, **overrides: Any) -> dict[str, Any]:
    return _apply({"alg": "EdDSA", "typ": "remit+jwt", "kid": key.kid}, overrides)


def sign_raw(header_bytes: bytes, payload_bytes: bytes, key: IssuerKey) -> str:
    """base64url-encode arbitrary header and payload bytes and Ed25519-sign ``h.p``."""
    signing_input = f"{b64url(header_bytes)}.{b64url(payload_bytes)}"
    return f"{signing_input}.{b64url(key.sign_bytes(signing_input.encode('ascii')))}"


def sign(
    claims: Mapping[str, Any],
    key: IssuerKey,
    header_overrides: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``claims`` with Ed25519 under ``header`` (default: the v1 header for ``key``).

    ``header_overrides`` changes members of that header (``OMIT`` drops one). PyJWT
    signs whenever it can write the header exactly; otherwise :func:`sign_raw` does.
    """
    hdr = dict(header) if header is not None else default_header(key)
    _apply(hdr, header_overrides or {})
    pyjwt_can = (
        hdr.get("alg") == "EdDSA"
        and "b64" not in hdr  # PyJWT would detach the payload
        and None not in hdr.values()  # PyJWT drops a null typ
        and isinstance(hdr.get("kid", ""), str)
        and isinstance(claims.get("iss", ""), str)
    )
    if not pyjwt_can:
        return sign_raw(compact_json(hdr), compact_json(dict(claims)), key)
    # PyJWT adds "typ": "JWT" unless told otherwise; a None typ makes it leave typ out.
    headers = {"typ": None, **hdr}
    return jwt.encode(dict(claims), key.private, algorithm="EdDSA", headers=headers)
