"""What an Exchange proof of possession covers, shared by the agent and the service.

An Exchange request carries no app credential: the parent token and a proof by its
key are the credential. The proof is an ordinary per-call proof (:mod:`remit._proof`)
with ``aud`` = the service's issuer name, ``action`` = ``remit.exchange`` and ``args``
= every field of the request below, so a captured proof cannot be reused to ask for
anything else (another scope, lifetime, audience, sub-agent or key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EXCHANGE_ACTION", "exchange_args"]

EXCHANGE_ACTION = "remit.exchange"


def exchange_args(
    *,
    capabilities: Sequence[Mapping[str, Any]] = (),
    ttl_seconds: int = 0,
    audience: Sequence[str] = (),
    actor: str = "",
    cnf_jkt: str = "",
) -> dict[str, Any]:
    """The proof's ``args`` for an Exchange request with these fields. Capabilities are
    in CreateGrant form; ``args`` absent counts as ``{}``, ``limits`` absent as none."""
    caps = []
    for cap in capabilities:
        entry: dict[str, Any] = {"action": cap.get("action", ""), "args": cap.get("args") or {}}
        if cap.get("limits"):
            entry["limits"] = cap["limits"]
        caps.append(entry)
    return {
        "actor": actor,
        "audience": list(audience),
        "capabilities": caps,
        "cnf_jkt": cnf_jkt,
        "ttl_seconds": ttl_seconds,
    }
