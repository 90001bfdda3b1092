"""Scope-check section of scripts/bench: evaluating a realistic capability (issue 3).

The capability has 6 constraints, among them a regex, a URL and a subpath; the call
satisfies all of them. Rows, against the raw Ed25519 verify measured in the same run:

- the scope check alone: the compiled capability against the call's arguments (what a
  warm ``Verifier.check`` spends on the arguments, closed world included);
- each constraint alone, so the table says where the time goes;
- a denied call (the URL points elsewhere): the check plus the denial message
  (``explain_failure`` re-runs the failing constraint to name the operator);
- ``Verifier.check`` warm (token cached, revocation off) with this capability.

Rows are measured interleaved with the raw verify (one round of every row, then the next
round), so that a machine shared with other work loads both sides alike; the table shows
the median round and the best round of each. Goal (issue 3): scope check <= 0.1 x one
raw verify, judged on medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from remit import Denied, Verifier
from remit._constraints import compile_capability, parse_capability
from remit._verifier import _check_args

__all__ = ["SCOPE_ARGS", "SCOPE_CAPABILITY", "bench_scope"]

SCOPE_CAPABILITY: dict[str, Any] = {
    "type": "remit.capability",
    "action": "http.fetch",
    "args": {
        "url": {"url": {"schemes": ["https"], "hosts": ["api.example.com", "*.cdn.example.com"],
                        "path_prefix": "/v1"}},
        "method": {"in": ["GET", "HEAD"]},
        "save_to": {"subpath": "/srv/build"},
        "ticket": {"regex": "[A-Z]{2,5}-[0-9]{1,6}"},
        "timeout": {"gt": 0, "le": 30},
        "tags": {"each": {"max_len": 32}, "max_len": 8, "optional": True},
    },
}
SCOPE_ARGS: dict[str, Any] = {
    "url": "https://api.example.com/v1/items/42?expand=owner",
    "method": "GET",
    "save_to": "/srv/build/out/items-42.json",
    "ticket": "OPS-1234",
    "timeout": 10,
    "tags": ["nightly", "items"],
}


def _interleaved(
    rounds: int, batch: int, setups: dict[str, Callable[[], Callable[[], None]]]
) -> dict[str, list[float]]:
    """Seconds per call of every row in every round, rows interleaved within a round."""
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, setup in setups.items():
            fn = setup()
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / batch)
    return times


def bench_scope(
    rounds: int,
    batch: int,
    raw_verify: Callable[[], Callable[[], None]],
    sign_caps: Callable[[list[dict[str, Any]]], str],
    **verifier_kw: Any,
) -> dict[str, float]:
    """Print the scope-check table. ``raw_verify``: the setup of the raw Ed25519 verify
    row (``batch`` verifies per run), the baseline; ``sign_caps`` signs a token carrying
    the given capabilities; ``verifier_kw``: keys, issuer and audience for it."""
    compiled = compile_capability(parse_capability(SCOPE_CAPABILITY, token_form=True))
    assert _check_args(compiled, SCOPE_ARGS) is None
    denied_args = {**SCOPE_ARGS, "url": "https://evil.example/v1/items/42"}
    assert _check_args(compiled, denied_args) is not None

    def scope(args: dict[str, Any]) -> Callable[[], Callable[[], None]]:
        def setup() -> Callable[[], None]:
            def run() -> None:
                for _ in range(batch):
                    _check_args(compiled, args)

            return run

        return setup

    def one(name: str) -> Callable[[], Callable[[], None]]:
        pred, value = compiled.named[name], SCOPE_ARGS[name]

        def setup() -> Callable[[], None]:
            def run() -> None:
                for _ in range(batch):
                    pred(value)

            return run

        return setup

    verifier = Verifier(**verifier_kw, revocation="off")
    token = sign_caps([SCOPE_CAPABILITY])

    def warm() -> Callable[[], None]:
        check = verifier.check
        check(token, action="http.fetch", args=SCOPE_ARGS)

        def run() -> None:
            for _ in range(batch):
                check(token, action="http.fetch", args=SCOPE_ARGS)

        return run

    def warm_denied() -> Callable[[], None]:
        check = verifier.check

        def run() -> None:
            for _ in range(batch):
                try:  # noqa: SIM105 - cheaper than contextlib.suppress in a timed loop
                    check(token, action="http.fetch", args=denied_args)
                except Denied:
                    pass

        return run

    setups = {
        "raw PyNaCl Ed25519 verify": raw_verify,
        "scope check, 6 constraints (allowed)": scope(SCOPE_ARGS),
    }
    for name, constraint in SCOPE_CAPABILITY["args"].items():
        ops = "+".join(op for op in constraint if op != "optional")
        setups[f"  {name}: {ops}"] = one(name)
    setups["scope check + message (denied: url)"] = scope(denied_args)
    setups["check() warm, this capability"] = warm
    setups["check() warm, denied (url)"] = warm_denied
    times = _interleaved(rounds, batch, setups)
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    base_median, base_best = median["raw PyNaCl Ed25519 verify"], best["raw PyNaCl Ed25519 verify"]

    print(f"scope check — realistic capability (6 constraints), {rounds} rounds x {batch} "
          "calls, interleaved; median and best round per call")
    print(f"{'operation':<40} {'us/call':>9} {'x verify':>9} {'best us':>9} {'x verify':>9}")
    for name in setups:
        m, b = median[name], best[name]
        print(f"{name:<40} {m * 1e6:>9.2f} {m / base_median:>9.3f} {b * 1e6:>9.2f} "
              f"{b / base_best:>9.3f}")
    ratio = median["scope check, 6 constraints (allowed)"] / base_median
    print(f"goal scope check / raw verify <= 0.10 (medians): {ratio:.3f} "
          f"{'met' if ratio <= 0.1 else 'MISSED'}")
    return median
