"""The service's side of the audit trail: grants, mints, exchanges and revocations.

Each service process is one writer (``w``) of the shared stream (schema v1,
docs/audit.md). Events are written synchronously, in the RPC, with
:class:`remit._audit.ChainWriter` (one ``XADD``): the service already waits on Redis
for every state change, and an issuing event lost to a buffer would be authority
granted with no record of it. Ordering against the state change:

- ``grant.created``, ``token.minted``, ``token.exchanged``: the event is written
  *before* the grant or token is stored. If the write fails the RPC fails (UNAVAILABLE)
  with nothing issued; if the store fails after it, the trail names a grant or token
  nobody received. The trail may over-state what was issued, never under-state it.
- ``revoked``: written *after* the revocation, which must never wait on the audit
  trail. If the write fails the RPC still fails (UNAVAILABLE), so the caller's retry
  (revocation is idempotent) records it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from remit._audit import DEFAULT_MAXLEN, ChainWriter, audit_stream, canonical
from remit._redis import REDIS_ERRORS, RedisLike

from ._errors import StoreDown
from ._store import GrantRecord

__all__ = ["ServiceAudit"]

log = logging.getLogger("remit.service.audit")


class ServiceAudit:
    """Writes the service's events; every method raises ``StoreDown`` on failure."""

    def __init__(
        self,
        client: RedisLike,
        prefix: str,
        *,
        maxlen: int | None = DEFAULT_MAXLEN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = ChainWriter(client, audit_stream(prefix), maxlen=maxlen)
        self._clock = clock

    def _write(self, event: dict[str, Any], outcome: str = "nothing was issued") -> None:
        event["ts"] = int(self._clock() * 1000)
        try:
            self.writer.write([canonical(event)])
        except REDIS_ERRORS as exc:  # RedisClusterException is no RedisError
            log.warning("audit event %s not written: %s", event["type"], exc)
            raise StoreDown(
                f"Redis is unavailable for the audit trail ({type(exc).__name__}); {outcome}",
                retryable=not isinstance(exc, redis.TimeoutError),
            ) from None

    def grant_created(self, grant: GrantRecord, capabilities: Sequence[Mapping[str, Any]]) -> None:
        """``capabilities``: as granted, in token form (``Capability.to_json()``)."""
        self._write(
            {
                "type": "grant.created",
                "gid": grant.id,
                "app": grant.app,
                "sub": grant.subject,
                "agent": grant.agent,
                "aud": list(grant.audience),
                "capabilities": [dict(c) for c in capabilities],
                "expires_at": grant.expires_at,
                "purpose": grant.purpose,
            }
        )

    def token_minted(
        self,
        *,
        gid: str,
        jti: str,
        app: str,
        agent: str,
        sub: str,
        exp: int,
        capabilities: Sequence[Mapping[str, Any]],
        anc: Sequence[str] = (),
    ) -> None:
        self._write(
            {
                "type": "token.minted",
                "gid": gid,
                "jti": jti,
                "app": app,
                "agent": agent,
                "sub": sub,
                "exp": exp,
                "capabilities": [dict(c) for c in capabilities],
                "anc": list(anc),
            }
        )

    def token_exchanged(
        self,
        *,
        gid: str,
        jti: str,
        app: str,
        agent: str,
        sub: str,
        exp: int,
        capabilities: Sequence[Mapping[str, Any]],
        anc: Sequence[str],
        parent: str,
    ) -> None:
        """For ``Exchange``: the new token (its ``anc`` ends with ``parent``)."""
        self._write(
            {
                "type": "token.exchanged",
                "gid": gid,
                "jti": jti,
                "app": app,
                "agent": agent,
                "sub": sub,
                "exp": exp,
                "capabilities": [dict(c) for c in capabilities],
                "anc": list(anc),
                "parent": parent,
            }
        )

    def revoked(self, *, by: str, what: Mapping[str, Any], reason: str) -> None:
        """``by``: the app name or ``"operator"``; ``what``: ``{"jti": …}``, ``{"gid": …}``,
        ``{"agent": …}``, ``{"sub": …}``, ``{"before": ts, …scope}`` or ``{"all": ts}``."""
        self._write(
            {"type": "revoked", "by": by, "what": dict(what), "reason": reason},
            "the revocation is in effect; retry to record it",
        )
