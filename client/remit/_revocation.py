"""Revocation checks for the verifier.

``strict``: one Redis round trip per call, a single ``EXISTS`` over the grant's
revocation key and the revocation keys of the token and each of its ancestors. Any
Redis error fails closed with ``revocation_unavailable``.
``off``: no revocation at all; for tests and for deployments that accept it,
chosen explicitly, never by default.
"""

from __future__ import annotations

from typing import Protocol

import redis

from ._errors import Code, Denied
from ._redis import RedisLike
from ._redis_keys import RedisKeys
from ._token import Claims

__all__ = ["NoRevocation", "RevocationCheck", "StrictRevocation"]


class RevocationCheck(Protocol):
    def check(self, claims: Claims) -> None:
        """Return if the token is not revoked; raise ``Denied`` otherwise."""

    def close(self) -> None: ...


class NoRevocation:
    """Accept every token as not revoked. Only by explicit choice (``revocation="off"``)."""

    def check(self, claims: Claims) -> None:
        return None

    def close(self) -> None:
        return None


class StrictRevocation:
    """One ``EXISTS`` per call; Redis errors deny with ``revocation_unavailable``."""

    def __init__(self, client: RedisLike, keys: RedisKeys, *, owned: bool = False) -> None:
        self._client = client
        self._keys = keys
        self._owned = owned

    def check(self, claims: Claims) -> None:
        names = self._keys.revocation_check(claims.gid, claims.jti, claims.anc)
        try:
            hits = self._client.exists(*names)
        except (redis.RedisError, OSError) as exc:
            raise Denied(
                Code.REVOCATION_UNAVAILABLE,
                f"revocation state unknown ({type(exc).__name__}); failing closed",
            ) from None
        if hits:
            raise Denied(Code.REVOKED, f"token {claims.jti} or its grant {claims.gid} is revoked")

    def close(self) -> None:
        if self._owned:
            self._client.close()
