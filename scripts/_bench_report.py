"""scripts/bench section: the alignment report over N audit events, and verifier metrics.

Report: N schema-v1 events (1000 grants, 50 agents, 90% allowed, argument values
recorded, 7 days) are written to a throwaway stream with pipelined XADD; then, in the
same run, the baseline (a bare XRANGE read of the whole stream in the same batches) and
the report (read + one-pass aggregation; rendering text and HTML timed apart). The
stream is deleted at the end. Goal: report <= 30 s for 1,000,000 events.

Metrics: warm check() with revocation off, plain vs instrumented with
``remit.metrics.instrument`` (separate verifiers, same token), median per call.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
import remit

GRANTS, AGENTS = 1000, 50
CODES = ("argument_denied", "action_not_granted", "unexpected_argument", "expired", "replayed")


def _events(n: int, t0: int) -> Any:
    """Grant events first, then decisions spread over 7 days; canonical JSON by hand
    (sorted keys, compact: RFC 8785 for these int/ASCII-string events)."""
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    cap = {
        "type": "remit.capability",
        "action": "payments.transfer",
        "args": {"amount": {"le": 1000}, "currency": {"in": ["EUR", "USD", "GBP"]}},
    }
    for g in range(GRANTS):
        yield dumps(
            {
                "type": "grant.created",
                "ts": t0,
                "gid": f"g_bench{g:010d}",
                "app": "bench",
                "sub": f"user:{g % 200}",
                "agent": f"agent:{g % AGENTS}",
                "aud": ["payments"],
                "capabilities": [
                    cap,
                    {"type": "remit.capability", "action": "email.send", "args": {}},
                ],
                "expires_at": t0 // 1000 + 86400 * 8,
                "purpose": "bench",
            }
        )
    step = max(1, 7 * 86400 * 1000 // max(1, n - GRANTS))
    for i in range(n - GRANTS):
        g = i % GRANTS
        ev: dict[str, Any] = {
            "type": "decision",
            "ts": t0 + i * step,
            "gid": f"g_bench{g:010d}",
            "jti": f"t{i % 5000}",
            "agent": f"agent:{g % AGENTS}",
            "sub": f"user:{g % 200}",
            "aud": "payments",
            "argh": "0" * 64,
        }
        if i % 10:
            ev.update(
                allowed=True,
                code="ok",
                action="payments.transfer",
                args={"amount": (i * 7) % 900, "currency": "EUR" if i % 3 else "USD"},
            )
        else:
            code = CODES[(i // 10) % len(CODES)]
            ev.update(
                allowed=False,
                code=code,
                action="files.delete" if code == "action_not_granted" else "payments.transfer",
            )
            if code == "argument_denied":
                ev["arg"] = "amount"
        yield dumps(ev)


def _fill(client: redis.Redis, key: str, n: int) -> float:
    w, h = secrets.token_hex(8), ""
    t = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, ev in enumerate(_events(n, int(time.time() * 1000) - 8 * 86400 * 1000), 1):
        h = hashlib.sha256((h + "\n" + ev).encode()).hexdigest()
        pipe.execute_command("XADD", key, "*", "v", "1", "w", w, "n", i, "h", h, "ev", ev)
        if i % 10_000 == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - t


def bench_report(redis_url: str, n: int) -> list[tuple[str, float, str]]:
    from remit_service._alignment import BATCH, compute, read_stream
    from remit_service._report_render import render

    client = redis.Redis.from_url(redis_url)
    key = f"remit-bench-report-{secrets.token_hex(4)}:audit"
    rows: list[tuple[str, float, str]] = []
    try:
        rows.append((f"write {n} events (pipelined XADD)", _fill(client, key, n), ""))
        t = time.perf_counter()
        count = sum(1 for _ in read_stream(client, key, batch=BATCH))
        base = time.perf_counter() - t
        rows.append((f"baseline: bare XRANGE of {count} entries", base, "1.00x"))
        t = time.perf_counter()
        report = compute(client, key)
        took = time.perf_counter() - t
        rows.append(("report (read + aggregate)", took, f"{took / base:.2f}x"))
        for fmt in ("text", "html"):
            t = time.perf_counter()
            out = render(report, fmt)
            rows.append((f"render {fmt} ({len(out) // 1024} KiB)", time.perf_counter() - t, ""))
        assert report["stream"]["decisions"] == n - GRANTS, report["stream"]
        assert report["stream"]["skipped"] == 0
    finally:
        client.delete(key)
        client.close()
    return rows


def bench_metrics(
    jwks: dict[str, Any],
    token: str,
    *,
    issuer: str,
    audience: str,
    args: dict[str, Any],
    rounds: int,
    batch: int,
) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from remit import metrics

    def verifier() -> remit.Verifier:
        return remit.Verifier(jwks, issuer=issuer, audience=audience, revocation="off")

    plain, measured = verifier(), verifier()
    metrics.instrument(measured, CollectorRegistry())

    checks = []
    for v in (plain, measured):
        v.check(token, action="payments.transfer", args=args)  # warm the cache
        checks.append(v.check)

    def batch_time(check: Callable[..., Any]) -> float:
        t = time.perf_counter()
        for _ in range(batch):
            check(token, action="payments.transfer", args=args)
        return (time.perf_counter() - t) / batch

    # Paired rounds (plain, then instrumented, back to back), so drift in a shared
    # machine's speed hits both alike; the overhead is the median of the differences.
    a, b, diff = [], [], []
    for _ in range(rounds * 3):
        x, y = batch_time(checks[0]), batch_time(checks[1])
        a.append(x)
        b.append(y)
        diff.append(y - x)
    return {
        "check() warm, no metrics": statistics.median(a),
        "check() warm, metrics on": statistics.median(b),
        "overhead (median of paired differences)": statistics.median(diff),
    }


def report_section(
    redis_url: str,
    n: int,
    *,
    jwks: dict[str, Any],
    token: str,
    issuer: str,
    audience: str,
    args: dict[str, Any],
    rounds: int,
    batch: int,
) -> None:
    print()
    print("metrics overhead (remit.metrics.instrument), median per call")
    m = bench_metrics(
        jwks, token, issuer=issuer, audience=audience, args=args, rounds=rounds, batch=batch
    )
    for name, sec in m.items():
        print(f"{name:<40} {sec * 1e6:>9.2f} us")
    extra = m["overhead (median of paired differences)"]
    print(
        f"goal metrics overhead <= 2.00 us: {extra * 1e6:.2f} us "
        f"{'met' if extra <= 2e-6 else 'MISSED'}"
    )
    if n <= 0:
        return
    print()
    print(f"alignment report over {n} audit events ({GRANTS} grants, {AGENTS} agents)")
    try:
        rows = bench_report(redis_url, n)
    except redis.RedisError as exc:
        print(f"(report rows skipped: {exc})")
        return
    for name, sec, ratio in rows:
        print(f"{name:<44} {sec:>8.2f} s {ratio:>7}")
    took = next(sec for name, sec, _ in rows if name.startswith("report"))
    limit = 30.0 * n / 1_000_000
    print(f"goal report <= {limit:.1f} s: {took:.2f} s {'met' if took <= limit else 'MISSED'}")
