"""Audit section of scripts/bench: what recording decisions costs a verifier.

Rows, all in the same run and process (pinned to one core by scripts/bench):

- warm check(), audit off: the baseline;
- warm check(), audit buffered, hot path only: the flusher thread is held back, so the row
  is exactly what check() itself pays (snapshot + append to the buffer);
- warm check(), audit buffered, flusher running: on one core the flusher's work (building,
  chaining and writing the events) lands between the checks, so this is the total CPU
  cost per recorded call (the GIL is shared with request threads on any core count);
- warm check(), audit sync: one Redis round trip per call;
- sustained events/s: --audit-events decisions recorded, then the time one verifier's
  flusher takes to write them all (build + chain + script XADD in batches of 500).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import remit
from _benchlib import measure

__all__ = ["audit_section"]

PREFIX = "remit-bench-audit:"


def audit_section(
    redis_url: str,
    events: int,
    *,
    jwks: dict[str, Any],
    token: str,
    issuer: str,
    audience: str,
    args: dict[str, Any],
    rounds: int,
    batch: int,
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"(audit rows skipped: {exc})")
        return
    stream = f"{PREFIX}audit"
    client.delete(stream)
    base: dict[str, Any] = {"issuer": issuer, "audience": audience, "revocation": "off"}
    bound = rounds * batch * 2 + events + 10
    off = remit.Verifier(jwks, **base)
    held = remit.Verifier(jwks, redis=redis_url, prefix=PREFIX, audit_buffer=bound, **base)
    live = remit.Verifier(jwks, redis=redis_url, prefix=PREFIX, audit_buffer=bound, **base)
    sync = remit.Verifier(jwks, redis=redis_url, prefix=PREFIX, audit="sync", **base)
    held_audit = held._audit
    assert held_audit is not None
    held_audit._thread = threading.Thread()  # never started: the flusher is held back

    def warm(v: remit.Verifier) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            check = v.check
            check(token, action="payments.transfer", args=args)

            def run() -> None:
                for _ in range(batch):
                    check(token, action="payments.transfer", args=args)

            return run

        return setup

    rows = {
        "check() warm, audit off": measure(rounds, batch, warm(off)),
        "check() warm, audit buffered (hot path)": measure(rounds, batch, warm(held)),
        "check() warm, audit buffered (+flusher)": measure(rounds, batch, warm(live)),
        "check() warm, audit sync": measure(max(5, rounds // 2), batch, warm(sync)),
    }
    live.close()
    sync.close()
    off.close()

    # Sustained write rate: fill the held-back buffer, then let one flusher drain it.
    held_audit._buf.clear()
    check = held.check
    for _ in range(events):
        check(token, action="payments.transfer", args=args)
    held_audit._thread = None
    t0 = time.perf_counter()
    held_audit._start()
    ok = held_audit.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    stats = held.audit_stats()
    held.close()
    client.delete(stream)
    client.close()

    print()
    print("audit section — same process, same core")
    print(f"{'operation':<42} {'us/call':>9} {'+us vs off':>11}")
    baseline = rows["check() warm, audit off"]
    for name, sec in rows.items():
        print(f"{name:<42} {sec * 1e6:>9.2f} {(sec - baseline) * 1e6:>11.2f}")
    added = (rows["check() warm, audit buffered (hot path)"] - baseline) * 1e6
    verdict = "met" if added <= 5 else "MISSED"
    print(f"goal buffered audit adds <= 5.00 us to check(): {added:.2f} {verdict}")
    print(
        f"sustained: {events} events written by one verifier's flusher in {elapsed:.2f} s = "
        f"{events / elapsed:,.0f} events/s ({'complete' if ok else 'INCOMPLETE'}: "
        f"written {stats.written if stats else '?'}, dropped {stats.dropped if stats else '?'})"
    )
