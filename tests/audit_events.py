"""Write audit events (schema v1, docs/audit.md) for report tests.

Writes through the real writer (``remit._audit.ChainWriter``: fields v, w, n, h, ev, the
hash chain, RFC 8785 ``ev``), so tests build exactly the streams verifiers and the service
produce, with chosen timestamps and parties, without running them. ``fields()`` seals an
event in memory the same way, for feeding the report without Redis.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import redis
import rfc8785
from remit._audit import ChainWriter, audit_stream, canonical, chain_hash


class EventWriter:
    """One writer (``w``): numbers its events from 1 and chains their hashes."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self.client = client
        self.key = audit_stream(prefix)
        self.w = secrets.token_hex(8)
        self.n = 0
        self.h = ""
        self._writer = ChainWriter(client, self.key, maxlen=None) if client is not None else None

    def fields(self, event: dict[str, Any]) -> dict[bytes, bytes]:
        """The entry's fields as redis-py returns them, sealed in memory."""
        ev = canonical(event)
        self.n += 1
        self.h = chain_hash(self.h, ev)
        return {
            b"v": b"1",
            b"w": self.w.encode(),
            b"n": str(self.n).encode(),
            b"h": self.h.encode(),
            b"ev": ev,
        }

    def write(self, event: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write([canonical(event)])

    def grant(
        self,
        gid: str,
        capabilities: list[dict[str, Any]],
        *,
        ts: int,
        app: str = "bank",
        sub: str = "user:alice",
        agent: str = "agent:a",
        aud: list[str] | None = None,
        purpose: str = "test",
    ) -> None:
        caps = [{"type": "remit.capability", **c} for c in capabilities]
        self.write(
            {
                "type": "grant.created",
                "ts": ts,
                "gid": gid,
                "app": app,
                "sub": sub,
                "agent": agent,
                "aud": aud or ["payments"],
                "capabilities": caps,
                "expires_at": ts // 1000 + 3600,
                "purpose": purpose,
            }
        )

    def decision(
        self,
        *,
        ts: int,
        gid: str | None,
        action: str,
        code: str = "ok",
        args: dict[str, Any] | None = None,
        agent: str | None = "agent:a",
        sub: str | None = "user:alice",
        arg: str | None = None,
        jti: str | None = "t1",
    ) -> None:
        event: dict[str, Any] = {
            "type": "decision",
            "ts": ts,
            "allowed": code == "ok",
            "code": code,
            "gid": gid,
            "jti": jti,
            "agent": agent,
            "sub": sub,
            "aud": "payments",
            "action": action,
            "argh": hashlib.sha256(rfc8785.dumps(args or {})).hexdigest(),
        }
        if args is not None:
            event["args"] = args
        if arg is not None:
            event["arg"] = arg
        self.write(event)
