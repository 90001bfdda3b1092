"""Agent side: the agent's key, per-call proofs, and carrying token + proof on a call.

::

    key = remit.agent.AgentKey.generate()        # or AgentKey.load(path)
    # the app mints with cnf_jkt=key.thumbprint; then, on every tool call:
    headers = remit.agent.http_headers(key, token, audience="payments",
                                       action="payments.transfer", args=body)

A proof is single-use and names its audience, action and arguments: make a new one for
every call (these helpers do).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nacl.signing import SigningKey

from ._encoding import b64url_decode, b64url_encode, strict_json_loads
from ._errors import KeyLoadError
from ._exchange import EXCHANGE_ACTION, exchange_args
from ._keys import PublicKey
from ._proof import POP_TYP, args_hash, encode_proof, token_hash

__all__ = [
    "MCP_PROOF_KEY",
    "MCP_TOKEN_KEY",
    "PROOF_HEADER",
    "AgentKey",
    "exchange_proof",
    "http_headers",
    "mcp_meta",
    "proof",
]

PROOF_HEADER = "Remit-Proof"
MCP_TOKEN_KEY = "remit/token"  # noqa: S105 (a _meta key name, not a secret)
MCP_PROOF_KEY = "remit/proof"


class AgentKey:
    """An agent's Ed25519 key pair. The token is bound to ``thumbprint`` (``cnf.jkt``)."""

    __slots__ = ("_header", "_jwk", "_public", "_signing")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing = signing_key
        self._public = PublicKey(bytes(signing_key.verify_key))
        self._jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(self._public.raw)}
        self._header: dict[str, Any] = {"alg": "EdDSA", "typ": POP_TYP, "jwk": self._jwk}

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(SigningKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentKey:
        """Read a key written by :meth:`save` (a private OKP JWK)."""
        try:
            with open(path, "rb") as fh:
                jwk = strict_json_loads(fh.read(4096))
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ValueError("not an Ed25519 OKP JWK")
            key = cls(SigningKey(b64url_decode(jwk["d"])))
            if b64url_encode(key._public.raw) != jwk.get("x"):
                raise ValueError("'x' does not match 'd'")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyLoadError(f"cannot load agent key {os.fspath(path)}: {exc}") from exc
        return key

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key as a JWK, readable by the owner only (0600, new file)."""
        jwk = {**self.public_jwk, "d": b64url_encode(bytes(self._signing))}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(jwk, fh)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint: what the app passes as ``cnf_jkt`` when minting."""
        return self._public.kid

    @property
    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    def sign(self, data: bytes) -> bytes:
        signature: bytes = self._signing.sign(data).signature
        return signature

    def __repr__(self) -> str:  # never print the private part
        return f"AgentKey(thumbprint={self.thumbprint!r})"


def proof(
    key: AgentKey,
    token: str,
    *,
    audience: str,
    action: str,
    args: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """A fresh single-use proof that ``key``'s holder makes *this* call with ``token``."""
    claims = {
        "jti": secrets.token_urlsafe(16),
        "iat": int(clock()),
        "ath": token_hash(token),
        "aud": audience,
        "action": action,
        "argh": args_hash(args),
    }
    return encode_proof(key._header, claims, key.sign)


def exchange_proof(
    key: AgentKey,
    token: str,
    *,
    issuer: str,
    capabilities: Sequence[Mapping[str, Any]] = (),
    ttl_seconds: int = 0,
    audience: Sequence[str] = (),
    actor: str = "",
    cnf_jkt: str = "",
    clock: Callable[[], float] = time.time,
) -> str:
    """The proof for an Exchange request with exactly these fields (aud = the service's
    ``issuer``). :meth:`remit.Client.exchange` builds it for you; this is for callers that
    send the gRPC request themselves."""
    fields = exchange_args(
        capabilities=capabilities, ttl_seconds=ttl_seconds, audience=audience,
        actor=actor, cnf_jkt=cnf_jkt,
    )
    return proof(key, token, audience=issuer, action=EXCHANGE_ACTION, args=fields, clock=clock)


def http_headers(
    key: AgentKey | None,
    token: str,
    *,
    audience: str,
    action: str,
    args: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """``Authorization: Remit <token>`` and, with a key, ``Remit-Proof: <proof>``."""
    headers = {"Authorization": f"Remit {token}"}
    if key is not None:
        headers[PROOF_HEADER] = proof(key, token, audience=audience, action=action, args=args)
    return headers


def mcp_meta(
    key: AgentKey | None,
    token: str,
    *,
    audience: str,
    action: str,
    args: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The ``_meta`` entries of an MCP ``tools/call`` request that carry token and proof."""
    meta = {MCP_TOKEN_KEY: token}
    if key is not None:
        meta[MCP_PROOF_KEY] = proof(key, token, audience=audience, action=action, args=args)
    return meta
