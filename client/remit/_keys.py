"""Ed25519 public keys as JWKs, RFC 7638 thumbprints, and verifier key sets.

A remit issuer key's ``kid`` *is* its RFC 7638 thumbprint. A key set refuses any
JWK whose ``kid`` differs from its thumbprint, so a ``kid`` can never point at a
key other than the one it names (no kid confusion, no duplicates by accident).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ._encoding import b64url_decode, b64url_encode, canonical_json
from ._errors import KeyLoadError

__all__ = ["KeySet", "PublicKey", "jwk_thumbprint"]

_JWK_FIELDS = frozenset({"kty", "crv", "x", "kid", "alg", "use", "key_ops"})


def jwk_thumbprint(x: str) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public key's ``x``."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": x}
    return b64url_encode(hashlib.sha256(canonical_json(members)).digest())


class PublicKey:
    """One Ed25519 verification key; ``kid`` is its thumbprint."""

    __slots__ = ("_verify", "kid", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyLoadError("an Ed25519 public key is 32 bytes")
        self.raw: bytes = raw
        self.kid: str = jwk_thumbprint(b64url_encode(raw))
        self._verify = VerifyKey(raw).verify

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """Parse a public OKP/Ed25519 JWK; private members and foreign types are refused."""
        if not isinstance(jwk, Mapping):
            raise KeyLoadError("a JWK must be a JSON object")
        if "d" in jwk:
            raise KeyLoadError("refusing a JWK that contains a private key ('d')")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise KeyLoadError("only OKP/Ed25519 keys are accepted")
        unknown = set(jwk) - _JWK_FIELDS
        if unknown:
            raise KeyLoadError(f"unexpected JWK members: {sorted(unknown)}")
        if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
            raise KeyLoadError("JWK 'alg' must be EdDSA and 'use' must be sig")
        x = jwk.get("x")
        if not isinstance(x, str):
            raise KeyLoadError("JWK 'x' must be a string")
        try:
            key = cls(b64url_decode(x))
        except ValueError as exc:
            raise KeyLoadError(f"JWK 'x' is not base64url: {exc}") from exc
        kid = jwk.get("kid")
        if kid is not None and kid != key.kid:
            raise KeyLoadError(f"JWK kid {kid!r} is not the key's RFC 7638 thumbprint")
        return key

    def to_jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(self.raw),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is valid for ``message`` under this key."""
        try:
            self._verify(message, signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True


class KeySet:
    """Immutable ``kid`` -> key map built from JWKs or a JWKS document."""

    __slots__ = ("_by_kid",)

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        by_kid: dict[str, PublicKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise KeyLoadError(f"duplicate key {key.kid}")
            by_kid[key.kid] = key
        if not by_kid:
            raise KeyLoadError("a key set needs at least one key")
        self._by_kid = by_kid

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise KeyLoadError("a JWKS is an object with a 'keys' list")
        return cls(PublicKey.from_jwk(jwk) for jwk in jwks["keys"])

    def get(self, kid: str) -> PublicKey | None:
        return self._by_kid.get(kid)

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.to_jwk() for key in self]}
