"""Narrowing section of scripts/bench: the cost of ``remit.is_narrower`` (Mint, Exchange).

Rows, against the raw Ed25519 verify measured in the same run:
- a realistic capability pair (6 constraints: a bound, a set, an IBAN, a regex, a URL and a
  subpath; the child tightens four of them), already parsed (what the service holds);
- the same pair as JSON (``authorization_details`` form): validation of both sides included;
- the same child refused, its last constraint wider than the parent's: the "no" path;
- a scope: 3 child capabilities against a 4-capability parent scope, parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _benchlib import measure
from remit import is_narrower
from remit._constraints import parse_capability

__all__ = ["PARENT", "bench_narrowing"]

IBAN = "DE89 3704 0044 0532 0130 00"
PARENT: dict[str, Any] = {
    "type": "remit.capability",
    "action": "payments.transfer",
    "args": {
        "amount": {"gt": 0, "le": 500},
        "currency": {"in": ["EUR", "USD", "GBP"]},
        "to": {"eq": IBAN},
        "reference": {"regex": "[A-Z]{3}-[0-9]{4,8}", "optional": True},
        "callback": {"url": {"schemes": ["https"], "hosts": ["*.example.com"],
                             "path_prefix": "/hooks"}},
        "receipt": {"subpath": "/srv/receipts"},
    },
}
CHILD: dict[str, Any] = {
    "type": "remit.capability",
    "action": "payments.transfer",
    "args": {
        "amount": {"gt": 0, "le": 120},
        "currency": {"eq": "EUR"},
        "to": {"eq": IBAN},
        "reference": {"regex": "[A-Z]{3}-[0-9]{4,8}"},
        "callback": {"url": {"schemes": ["https"], "hosts": ["api.example.com"],
                             "path_prefix": "/hooks/pay"}},
        "receipt": {"subpath": "/srv/receipts/alice"},
    },
}
WIDER = {**CHILD, "args": {**CHILD["args"], "receipt": {"prefix": "/srv/receipts/"}}}


def _other(action: str) -> dict[str, Any]:
    return {"type": "remit.capability", "action": action,
            "args": {"to": {"email_domain": "example.com"}, "body": {"max_len": 10_000}}}


def bench_narrowing(rounds: int, batch: int, base: float) -> dict[str, float]:
    """Print the narrowing table (``base``: seconds of one raw Ed25519 verify)."""
    parent, child, wider = (parse_capability(c, token_form=True) for c in (PARENT, CHILD, WIDER))
    assert is_narrower(child, parent) and not is_narrower(wider, parent)
    parent_scope = [parse_capability(_other(a), token_form=True)
                    for a in ("email.send", "email.draft", "files.read")] + [parent]
    child_scope = [parse_capability(_other("email.send"), token_form=True),
                   parse_capability(_other("email.draft"), token_form=True), child]
    assert is_narrower(child_scope, parent_scope)

    def loop(c: Any, p: Any) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            def run() -> None:
                for _ in range(batch):
                    is_narrower(c, p)

            return run

        return setup

    rows = {
        "is_narrower: 6-constraint pair, parsed": measure(rounds, batch, loop(child, parent)),
        "is_narrower: same pair as JSON": measure(rounds, batch, loop(CHILD, PARENT)),
        "is_narrower: wider child refused": measure(rounds, batch, loop(wider, parent)),
        "is_narrower: scope 3 in 4, parsed": measure(rounds, batch, loop(child_scope,
                                                                          parent_scope)),
    }
    print(f"narrowing — {rounds} rounds x {batch} calls, median per call")
    print(f"{'operation':<40} {'us/call':>9} {'x raw verify':>13}")
    for name, sec in rows.items():
        print(f"{name:<40} {sec * 1e6:>9.2f} {sec / base:>13.3f}")
    return rows
