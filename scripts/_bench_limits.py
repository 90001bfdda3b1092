"""Limits (budgets) section of scripts/bench: the budget round trip vs a raw EVALSHA.

Rows, all in the same run against the same Redis:
- raw EVALSHA of a trivial one-key script (``return 0``): the floor for any script call;
- the limits round trip: ``Limits.prepare`` + ``Limits.consume`` of one budget with
  ``uses`` and a decimal ``sum`` (what ``check()`` adds for a capability with limits);
- the same with two budgets (a sub-agent's own plus its parent's);
- ``check()`` warm, revocation off, without and with that budget (the whole call).
Rows are interleaved round by round (the machine is shared: ratios, not absolutes).
Goal (issue 5): limits round trip <= 1.3 x raw EVALSHA.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
import remit
from remit._limits import Limits, parse_budgets

__all__ = ["bench_limits"]

PREFIX = "remit-bench-limits:"
GID = "g_benchlimits0001"
HUGE = 2**53 - 1


def interleaved(
    rounds: int, batch: int, setups: dict[str, Callable[[], Callable[[], None]]]
) -> dict[str, tuple[float, float]]:
    """(median, best) seconds per call of each row. Like ``_benchlib.measure``, but every
    round runs each row once in turn, so a load change on a shared machine hits all rows
    alike (the ratio is the point)."""
    per_call: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, setup in setups.items():
            fn = setup()
            t0 = time.perf_counter()
            fn()
            per_call[name].append((time.perf_counter() - t0) / batch)
    return {name: (statistics.median(times), min(times)) for name, times in per_call.items()}


def bench_limits(
    rounds: int, batch: int, url: str, tokens: Callable[[list[dict[str, Any]]], str], *,
    jwks: dict[str, Any], issuer: str, audience: str,
) -> None:
    """Print the limits table. ``tokens(authorization_details)`` signs a token."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"(limits rows skipped: {exc})")
        return
    exp = int(time.time()) + 3600
    one = parse_budgets(
        [{"id": "g0", "exp": exp, "uses": HUGE, "sum": {"arg": "amount", "max": "90071992547.40"}}],
        "limits",
    )
    two = (*one, *parse_budgets([{"id": "t_benchchild01.0", "exp": exp, "uses": HUGE}], "limits"))
    args = {"amount": "0.01", "to": "DE89"}
    limits = Limits(redis.Redis.from_url(url), PREFIX)
    trivial = client.register_script("return 0")
    key = f"{PREFIX}lim:{{{GID}}}:trivial"

    def raw_evalsha() -> Callable[[], None]:
        def run() -> None:
            for _ in range(batch):
                trivial(keys=[key], args=[1])

        return run

    def consume(budgets: tuple[Any, ...]) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            def run() -> None:
                for _ in range(batch):
                    limits.consume(GID, limits.prepare(budgets, args, time.time()))

            return run

        return setup

    cap = {"type": "remit.capability", "action": "payments.transfer",
           "args": {"amount": {"any": True}, "to": {"eq": "DE89"}}}
    plain = tokens([cap])
    limited = tokens([{**cap, "limits": [b.to_json() for b in one]}])
    verifier = remit.Verifier(jwks, issuer=issuer, audience=audience, revocation="off",
                              redis=url, prefix=PREFIX)

    def check(token: str) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            verifier.check(token, action="payments.transfer", args=args)

            def run() -> None:
                for _ in range(batch):
                    verifier.check(token, action="payments.transfer", args=args)

            return run

        return setup

    small = max(5, rounds // 2)
    rows = interleaved(small, batch, {
        "raw EVALSHA, trivial script": raw_evalsha,
        "limits round trip, 1 budget": consume(one),
        "limits round trip, 2 budgets": consume(two),
        "check() warm, off, no limits": check(plain),
        "check() warm, off, 1 budget": check(limited),
    })
    verifier.close()
    base, best = rows["raw EVALSHA, trivial script"]
    print(f"limits (budgets) — {small} rounds x {batch} calls, interleaved; median and best "
          "round per call")
    print(f"{'operation':<34} {'us/call':>8} {'x EVALSHA':>10} {'best us':>8} {'x EVALSHA':>10}")
    for name, (med, low) in rows.items():
        print(f"{name:<34} {med * 1e6:>8.2f} {med / base:>10.3f} {low * 1e6:>8.2f} "
              f"{low / best:>10.3f}")
    ratio = rows["limits round trip, 1 budget"][0] / base
    print(f"goal limits round trip / raw EVALSHA <= 1.30 (medians): {ratio:.3f} "
          f"{'met' if ratio <= 1.3 else 'MISSED'}")
    for k in client.scan_iter(match=f"{PREFIX}*", count=1000):
        client.delete(k)
    client.close()
