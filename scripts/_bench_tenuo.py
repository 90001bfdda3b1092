"""Peer rows for scripts/bench: Tenuo (PyPI ``tenuo``, Rust core) doing remit's per-call check.

Benchmark-only: tenuo is not a remit dependency. Install it into the venv by hand
(``pip install tenuo``); without it ``bench_tenuo`` raises ImportError.

The setup mirrors scripts/bench. One issuer key signs warrants for one tool, ``transfer``,
with three argument constraints chosen to match remit's capability: ``amount`` a Range
with max 100 (inclusive, like remit's ``le``), ``to`` an Exact IBAN string and
``currency`` a OneOf ["EUR", "USD"]. Each warrant is bound to a holder key; for each
call the holder signs a proof of possession over the call. The tool side holds one
``tenuo_core.Authorizer`` with the issuer key as its only trusted root, Tenuo's default
PoP window settings (30 s windows, 5 windows accepted) and no revocation list. Key
generation, warrant issuance and PoP signing all happen outside the timed region; a
round's PoPs are signed in its setup, as remit's rows make their proofs.

Rows (median over rounds of the mean seconds per call within a round):

* ``decode + verify, fresh token``: a never-seen base64 warrant is decoded
  (``Warrant.from_base64``, which already checks the envelope signature against the
  issuer key embedded in the warrant) and ``Authorizer.verify`` checks it again against
  the trusted roots, with expiry and revocation. No call, no PoP. Two Ed25519 verifies.
* ``verify, decoded warrant``: ``Authorizer.verify`` on a warrant object decoded once
  and kept. Tenuo has no cache of verified warrants, so this still verifies the
  signature on every call; it is the nearest Tenuo has to a warm path.
* ``authorize+PoP, fresh token``: decode a never-seen warrant, then
  ``Authorizer.authorize_one(warrant, tool, args, signature=pop)``: warrant signature,
  trust, expiry, tool and constraints, and the PoP. Compare with remit's
  ``check() cold token + proof``. Three Ed25519 verifies.
* ``authorize+PoP, warrant reused``: ``authorize_one`` on a decoded warrant kept between
  calls, same Authorizer. Compare with remit's ``check() warm token + proof``; remit
  skips the token signature on a cache hit, Tenuo verifies it again every call.
* ``authorize+PoP+nonces, fresh``: the fresh-token row plus Tenuo's optional in-process
  replay guard, ``tenuo.nonce.NonceStore.check_and_record(pop)`` (a Python dict), made
  fresh each round. Its default in-memory backend sweeps every live entry for expiry
  on each call, so its cost grows with the number of PoPs seen within its TTL
  (120 s by default); here it holds at most ``batch`` entries.

Asymmetries with remit's proof rows:

* What a proof covers. remit's proof is a JWS naming the token hash, audience, action,
  an args hash, ``iat`` and a random ``jti``; the verifier rejects a reused jti (replay
  guard ``local`` in scripts/bench). Tenuo's PoP is a bare 64-byte Ed25519 signature
  over the warrant id, tool, args and a 30 s time window, with no nonce: Ed25519 is
  deterministic, so the same call in the same window yields the same bytes, and core
  Tenuo accepts a replay within the acceptance window (about +-60 s). The
  ``reused`` row therefore presents the same PoP bytes each call, and a replay guard
  can only be measured with a different warrant per call (the ``nonces`` row): in the
  reused case a NonceStore would refuse an honest repeat of the same call.
* Time windows. The verifier tries the current window first, then -1, +1, -2, +2, one
  Ed25519 verify per try. Rows here sign PoPs in the current window (setup waits out
  the last 2 s of a window so none straddles a boundary), i.e. Tenuo's best case; a
  holder whose clock is a window off pays one or two extra verifies per call.
* Wire format. The PoP is handed over as raw bytes (a transport would base64 it; its
  decoding is not timed); remit's proof is a compact JWS string parsed inside check().
  The warrant is CBOR in base64, remit's token a JWT. Neither row includes HTTP.
* Not measured: Tenuo's higher-level adapters (``enforce_tool_call``, decorators,
  framework integrations), delegation chains, approvals and revocation lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _benchlib import measure

TOOL = "transfer"
IBAN = "DE89 3704 0044 0532 0130 00"
ARGS = {"amount": 50, "to": IBAN, "currency": "EUR"}
TTL_SECONDS = 600


def _import_tenuo() -> tuple[Any, Any, type[Exception]]:
    try:
        import tenuo_core
        from tenuo.exceptions import TenuoError
        from tenuo.nonce import NonceStore
    except ImportError as exc:
        raise ImportError(
            "the Tenuo rows need the 'tenuo' package (benchmark only, not a remit "
            "dependency): pip install tenuo"
        ) from exc
    return tenuo_core, NonceStore, TenuoError


def bench_tenuo(rounds: int, batch: int) -> dict[str, float]:
    """Median seconds per call for each Tenuo row (see the module docstring)."""
    tc, nonce_store_cls, refused = _import_tenuo()
    issuer, holder = tc.SigningKey.generate(), tc.SigningKey.generate()
    caps = {TOOL: {"amount": tc.Range(max=100), "to": tc.Exact(IBAN),
                   "currency": tc.OneOf(["EUR", "USD"])}}

    def issue() -> Any:
        return tc.Warrant.issue(issuer, capabilities=caps, ttl_seconds=TTL_SECONDS,
                                holder=holder.public_key)

    authorizer = tc.Authorizer(trusted_roots=[issuer.public_key])
    window, _ = authorizer.pop_window_config()
    pool = [issue().to_base64() for _ in range(batch * (rounds + 1))]
    warrant = tc.Warrant.from_base64(pool[0])
    pool_b = [issue() for _ in range(batch * (2 * rounds + 1))]
    pool_b64 = [w.to_base64() for w in pool_b]

    def fresh_window() -> int:
        """Now, after waiting out a window's last 2 s so a round stays inside one window."""
        left = window - time.time() % window
        if left < 2:
            time.sleep(left + 0.01)
        return int(time.time())

    # Sanity, outside timing: the honest call passes; over-limit, off-list, wrong-IBAN
    # and wrong-key calls are refused.
    now = fresh_window()
    authorizer.authorize_one(warrant, TOOL, ARGS, signature=warrant.sign(holder, TOOL, ARGS, now))
    bad_calls = [({**ARGS, "amount": 101}, holder), ({**ARGS, "currency": "GBP"}, holder),
                 ({**ARGS, "to": "DE00 0000"}, holder), (ARGS, issuer)]
    for bad_args, key in bad_calls:
        pop = warrant.sign(key, TOOL, bad_args, now)
        try:
            authorizer.authorize_one(warrant, TOOL, bad_args, signature=pop)
        except refused:
            continue
        raise AssertionError(f"tenuo accepted a call it should refuse: {bad_args}")

    verify = authorizer.verify
    authorize = authorizer.authorize_one
    decode = tc.Warrant.from_base64
    cursor = iter(range(1, len(pool)))
    cursor_b = iter(range(len(pool_b)))

    def verify_fresh() -> Callable[[], None]:
        tokens = [pool[next(cursor)] for _ in range(batch)]

        def run() -> None:
            for t in tokens:
                verify(decode(t))
        return run

    def verify_decoded() -> Callable[[], None]:
        def run() -> None:
            for _ in range(batch):
                verify(warrant)
        return run

    def fresh_calls() -> list[tuple[str, bytes]]:
        now = fresh_window()
        out = []
        for _ in range(batch):
            i = next(cursor_b)
            out.append((pool_b64[i], pool_b[i].sign(holder, TOOL, ARGS, now)))
        return out

    def authorize_fresh() -> Callable[[], None]:
        calls = fresh_calls()

        def run() -> None:
            for t, pop in calls:
                authorize(decode(t), TOOL, ARGS, signature=pop)
        return run

    def authorize_reused() -> Callable[[], None]:
        now = fresh_window()
        pops = [warrant.sign(holder, TOOL, ARGS, now) for _ in range(batch)]
        authorize(warrant, TOOL, ARGS, signature=pops[0])

        def run() -> None:
            for pop in pops:
                authorize(warrant, TOOL, ARGS, signature=pop)
        return run

    def authorize_fresh_nonces() -> Callable[[], None]:
        calls = fresh_calls()
        admit = nonce_store_cls().check_and_record

        def run() -> None:
            for t, pop in calls:
                if not admit(pop):
                    raise AssertionError("fresh PoP refused as a replay")
                authorize(decode(t), TOOL, ARGS, signature=pop)
        return run

    return {
        "tenuo: decode + verify, fresh token": measure(rounds, batch, verify_fresh),
        "tenuo: verify, decoded warrant": measure(rounds, batch, verify_decoded),
        "tenuo: authorize+PoP, fresh token": measure(rounds, batch, authorize_fresh),
        "tenuo: authorize+PoP, warrant reused": measure(rounds, batch, authorize_reused),
        "tenuo: authorize+PoP+nonces, fresh": measure(rounds, batch, authorize_fresh_nonces),
    }


if __name__ == "__main__":
    import argparse
    import os

    ap = argparse.ArgumentParser(description="Tenuo peer rows for scripts/bench")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--batch", type=int, default=500)
    cli = ap.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
        pinned = f"pinned to CPU {sorted(os.sched_getaffinity(0))[0]}"
    except (AttributeError, OSError):
        pinned = "not pinned"
    print(f"tenuo peer rows — {pinned}, {cli.rounds} rounds x {cli.batch} calls, median per call")
    for name, sec in bench_tenuo(cli.rounds, cli.batch).items():
        print(f"{name:<36} {sec * 1e6:>9.2f} µs")
