"""Issuer key rotation while tokens are minted and checked continuously (issue 7, item 3).

A verifier built from a JWKS URL refetches the JWKS when it meets an unknown ``kid``:
at most once per ``jwks_refresh_interval``, one fetch at a time, keeping its keys when
the fetch fails. First against a tiny local JWKS server whose document the test swaps
and whose requests it counts (time faked through the verifier's ``clock``), then
against the real service rotating its key under load.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import remit
import remit._jwks
import remit._verifier
from remit_service import Server

from tests.tokens import ACTION, ARGS, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

# -- a JWKS server the test controls -------------------------------------------------------


class JwksServer:
    """Serves ``body`` with ``status`` at any path, after ``delay`` seconds; counts GETs."""

    def __init__(self, *keys: IssuerKey) -> None:
        self.status = 200
        self.delay = 0.0
        self.body = b""
        self.hits = 0
        self.publish(*keys)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1  # one handler thread at a time in these tests
                if owner.delay:
                    time.sleep(owner.delay)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def publish(self, *keys: IssuerKey) -> None:
        self.body = json.dumps({"keys": [k.jwk() for k in keys]}).encode()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def _verifier(source: Any, clock: Callable[[], float], **kwargs: Any) -> remit.Verifier:
    return remit.Verifier.from_jwks(
        source, issuer=ISSUER, audience=AUDIENCE, revocation="off", clock=clock, **kwargs
    )


def _token(key: IssuerKey, kid: str | None = None) -> str:
    """A fresh token (new jti: never in the verifier's cache) signed by ``key``."""
    return sign(claims(), key, header_overrides=None if kid is None else {"kid": kid})


def _code(v: remit.Verifier, token: str) -> str:
    try:
        v.check(token, action=ACTION, args=ARGS)
    except remit.Denied as exc:
        return str(exc.code)
    return "allowed"


def _bogus_kid() -> str:
    return secrets.token_urlsafe(32)  # 43 characters, like a real RFC 7638 kid


# -- against a local JWKS server -----------------------------------------------------------


def test_unknown_kid_refreshes_and_the_rotated_key_is_accepted(jwks_server: JwksServer) -> None:
    k1, k2 = IssuerKey(), IssuerKey()
    jwks_server.publish(k1)
    v = _verifier(jwks_server.url, FakeClock())
    assert jwks_server.hits == 1
    assert _code(v, _token(k1)) == "allowed"
    assert jwks_server.hits == 1  # a known kid never fetches

    jwks_server.publish(k2, k1)  # the issuer rotates: newest first, old key still published
    assert _code(v, _token(k2)) == "allowed"
    assert jwks_server.hits == 2
    for _ in range(20):  # both keys now verify fresh tokens, without fetching again
        assert _code(v, _token(k1)) == "allowed"
        assert _code(v, _token(k2)) == "allowed"
    assert jwks_server.hits == 2


def test_a_flood_of_bogus_kids_costs_one_fetch_per_interval(jwks_server: JwksServer) -> None:
    k1 = IssuerKey()
    jwks_server.publish(k1)
    clock = FakeClock()
    v = _verifier(jwks_server.url, clock, jwks_refresh_interval=30)
    bogus = [_token(k1, kid=_bogus_kid()) for _ in range(1000)]
    for token in bogus:
        assert _code(v, token) == "unknown_key"
    assert jwks_server.hits == 2  # the initial load, then one refresh for all 1,000

    clock.now += 29.9
    assert {_code(v, t) for t in bogus[:200]} == {"unknown_key"}
    assert jwks_server.hits == 2  # still within the interval
    clock.now += 0.1
    assert {_code(v, t) for t in bogus[:200]} == {"unknown_key"}
    assert jwks_server.hits == 3  # one more, exactly at the interval

    # Many threads at once: still one fetch per interval, and no check is held up.
    clock.now += 30
    results: list[str] = []

    def flood() -> None:
        results.extend(_code(v, t) for t in bogus[:100])

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == ["unknown_key"] * 800
    assert jwks_server.hits == 4

    clock.now -= 3600  # the clock went backwards: that allows one refresh, not a stampede
    assert {_code(v, t) for t in bogus[:100]} == {"unknown_key"}
    assert jwks_server.hits == 5
    assert _code(v, sign(claims(now=int(clock.now)), k1)) == "allowed"  # the key is kept


def test_concurrent_callers_share_one_fetch(jwks_server: JwksServer) -> None:
    """At a rotation, every thread meets the new kid at once: one of them fetches, the
    others wait for that fetch and use its result; none fails."""
    k1, k2 = IssuerKey(), IssuerKey()
    jwks_server.publish(k1)
    v = _verifier(jwks_server.url, FakeClock())
    jwks_server.publish(k2, k1)
    jwks_server.delay = 0.3
    tokens = [_token(k2) for _ in range(16)]
    start = threading.Barrier(len(tokens))
    results: list[str] = []

    def check(token: str) -> None:
        start.wait()
        results.append(_code(v, token))

    threads = [threading.Thread(target=check, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == ["allowed"] * len(tokens)
    assert jwks_server.hits == 2


def test_a_slow_jwks_endpoint_holds_a_check_up_only_for_the_fetch_timeout(
    jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remit._verifier, "JWKS_REFRESH_TIMEOUT", 0.3)
    k1, k2 = IssuerKey(), IssuerKey()
    jwks_server.publish(k1)
    v = _verifier(jwks_server.url, FakeClock())
    jwks_server.publish(k2, k1)
    jwks_server.delay = 1.5  # longer than the timeout: the fetch fails
    elapsed: list[float] = []
    codes: list[str] = []

    def check() -> None:
        t0 = time.monotonic()
        codes.append(_code(v, _token(k2)))
        elapsed.append(time.monotonic() - t0)

    threads = [threading.Thread(target=check) for _ in range(4)]  # a fetcher and waiters
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert codes == ["unknown_key"] * 4
    assert max(elapsed) < 1.2, elapsed  # the server answers after 1.5 s
    assert jwks_server.hits == 2
    assert _code(v, _token(k1)) == "allowed"  # the old keys are kept


@pytest.mark.parametrize(
    "failure",
    ["http 500", "not json", "no keys", "a private key", "server down"],
)
def test_a_failed_fetch_keeps_the_old_keys(jwks_server: JwksServer, failure: str) -> None:
    k1, k2 = IssuerKey(), IssuerKey()
    jwks_server.publish(k1)
    clock = FakeClock()
    url = jwks_server.url
    v = _verifier(url, clock, jwks_refresh_interval=10)
    if failure == "http 500":
        jwks_server.status = 500
    elif failure == "not json":
        jwks_server.body = b"<html>oops</html>"
    elif failure == "no keys":
        jwks_server.body = b'{"keys": []}'
    elif failure == "a private key":
        jwks_server.body = json.dumps({"keys": [{**k2.jwk(), "d": "AAAA"}]}).encode()
    else:
        jwks_server.close()

    assert _code(v, _token(k2)) == "unknown_key"  # triggers a fetch, which fails
    assert _code(v, _token(k1)) == "allowed"  # fresh token, old key: still verifies
    hits = jwks_server.hits
    for _ in range(50):  # a failed fetch is rate limited like a good one
        assert _code(v, _token(k2)) == "unknown_key"
    assert jwks_server.hits == hits
    if failure == "server down":
        return
    assert hits == 2

    # The endpoint recovers: the next refresh after the interval picks up the new key.
    jwks_server.status = 200
    jwks_server.publish(k2, k1)
    clock.now += 10
    assert _code(v, _token(k2)) == "allowed"
    assert _code(v, _token(k1)) == "allowed"
    assert jwks_server.hits == 3


def test_a_removed_key_stops_verifying_new_tokens_but_cached_ones_live_until_exp(
    jwks_server: JwksServer,
) -> None:
    k1, k2 = IssuerKey(), IssuerKey()
    jwks_server.publish(k2, k1)
    clock = FakeClock()
    v = _verifier(jwks_server.url, clock)
    cached = _token(k1)
    assert _code(v, cached) == "allowed"

    jwks_server.publish(k2)  # k1 retired (or pulled after a compromise)
    assert _code(v, _token(k1, kid=_bogus_kid())) == "unknown_key"  # any unknown kid refreshes
    assert jwks_server.hits == 2
    assert _code(v, _token(k1)) == "unknown_key"  # a new k1 token: refused
    assert _code(v, _token(k2)) == "allowed"
    # Documented: a token verified before the refresh stays cached until it expires.
    assert _code(v, cached) == "allowed"
    clock.now += 300 + 5  # exp + leeway
    assert _code(v, cached) == "expired"


def test_verifiers_from_a_mapping_or_a_file_never_refetch(tmp_path: Path) -> None:
    k1, k2 = IssuerKey(), IssuerKey()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(k1.jwks()))
    from_file = _verifier(str(path), FakeClock())
    from_mapping = _verifier(k1.jwks(), FakeClock())
    path.write_text(json.dumps({"keys": [k2.jwk(), k1.jwk()]}))
    for v in (from_file, from_mapping):
        assert _code(v, _token(k2)) == "unknown_key"
        assert _code(v, _token(k1)) == "allowed"


@pytest.mark.parametrize("interval", [0, 0.5, -1, float("nan")])
def test_refresh_interval_below_one_second_is_refused(
    jwks_server: JwksServer, interval: float
) -> None:
    with pytest.raises(ValueError, match="jwks_refresh_interval"):
        _verifier(jwks_server.url, FakeClock(), jwks_refresh_interval=interval)
    assert jwks_server.hits == 0  # refused before any fetch


# -- against the real service, under load ----------------------------------------------------

PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
PAY_ARGS = {"amount": 1}
MINT_SECONDS = 4.0  # rotation at half time
MIN_CHECKS = 50  # per side of the rotation, at least (about 4x this on a laptop)


def _kid(token: str) -> str:
    kid: str = remit.peek_unverified(token)[0]["kid"]
    return kid


def test_rotation_under_load_fails_no_check(
    service: Server, client: remit.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 threads mint and 2 verify (each with its own JWKS-URL verifier, default refresh
    interval) for ~4 s; the service's key rotates half way. No check may fail."""
    url = service.http_url + "/.well-known/jwks.json"
    issuer = client.issuer()
    grant = client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"], capabilities=[PAY]
    )
    k1 = service.keystore.signing_key().kid

    # Count JWKS refreshes (not the initial loads) per verifier thread.
    refreshes: Counter[str] = Counter()
    real_load = remit._jwks.load_jwks

    def counting_load(source: Any, **kwargs: Any) -> remit.KeySet:
        refreshes[threading.current_thread().name] += 1
        return real_load(source, **kwargs)

    monkeypatch.setattr(remit._jwks, "load_jwks", counting_load)

    rotation_started = threading.Event()
    rotated = threading.Event()
    stop_minting = threading.Event()
    minting_done = threading.Event()
    # (token, kid, phase): "before" = minted before the rotation began, "after" = minting
    # began after it completed, "during" = overlapped it (either kid is right).
    tokens: list[tuple[str, str, str]] = []
    held: list[tuple[str, str, str]] = []  # pre-rotation tokens first shown after it
    failures: list[str] = []
    stats: Counter[str] = Counter()
    stats_lock = threading.Lock()

    def mint(n: int) -> None:
        i = 0
        try:
            while not stop_minting.is_set():
                after = rotated.is_set()
                token = client.mint(grant.id)
                before = not rotation_started.is_set()
                phase = "after" if after else "before" if before else "during"
                entry = (token, _kid(token), phase)
                (held if phase == "before" and i % 2 == 0 else tokens).append(entry)
                i += 1
        except BaseException as exc:
            failures.append(f"minter {n}: {exc!r}")

    def verify(n: int) -> None:
        local: Counter[str] = Counter()
        rng = random.Random(n)
        try:
            v = remit.Verifier.from_jwks(url, issuer=issuer, audience="payments", revocation="off")
        except BaseException as exc:
            failures.append(f"verifier {n}: {exc!r}")
            return

        def check(entry: tuple[str, str, str], how: str) -> None:
            token, kid, phase = entry
            when = "after" if rotated.is_set() else "before"
            try:
                v.check(token, action="payments.transfer", args=PAY_ARGS)
            except remit.Denied as exc:
                failures.append(f"verifier {n}: {phase} token, kid {kid}: {exc.code} {exc}")
                return
            local[f"checks {when} rotation"] += 1
            local[f"{how} {'old' if kid == k1 else 'new'} key {when} rotation"] += 1

        try:
            seen = 0
            while not (minting_done.is_set() and seen == len(tokens)) and not failures:
                fresh = tokens[seen:]
                for entry in fresh:  # each token's first check: the cold path
                    check(entry, "cold")
                seen += len(fresh)
                for entry in rng.sample(tokens[:seen], min(seen, 50)):  # warm: cached
                    check(entry, "warm")
                if not fresh:
                    time.sleep(0.002)
            for entry in held:  # old key, cold, after this verifier learned the new one
                check(entry, "cold")
        except BaseException as exc:
            failures.append(f"verifier {n}: {exc!r}")
        finally:
            v.close()
            with stats_lock:
                stats.update({f"v{n} {k}": c for k, c in local.items()})
                stats.update(local)

    threads = [
        threading.Thread(target=fn, args=(n,), name=f"{fn.__name__}-{n}", daemon=True)
        for fn in (mint, verify)
        for n in (1, 2)
    ]

    def run_until(enough: Callable[[], bool]) -> None:
        """Half of MINT_SECONDS, longer (up to 10 s) if a slow machine minted too few."""
        start = time.monotonic()
        while time.monotonic() - start < MINT_SECONDS / 2 or not enough():
            if time.monotonic() - start > 10 or failures:
                return
            time.sleep(0.02)

    for t in threads:
        t.start()
    run_until(lambda: len(held) >= MIN_CHECKS and len(tokens) >= MIN_CHECKS)
    rotation_started.set()
    k2 = service.keystore.generate().kid  # what `remit keys rotate` does
    rotated.set()
    run_until(lambda: sum(phase == "after" for _, _, phase in tokens) >= MIN_CHECKS)
    stop_minting.set()
    for t in threads[:2]:
        t.join(timeout=10)
    minting_done.set()
    for t in threads[2:]:
        t.join(timeout=10)
    assert not [t.name for t in threads if t.is_alive()], "a thread did not finish"

    assert failures == [], failures[:10]
    phases = Counter(phase for _, _, phase in tokens + held)
    assert {kid for _, kid, phase in tokens + held if phase == "before"} == {k1}
    assert {kid for _, kid, phase in tokens + held if phase == "after"} == {k2}
    assert phases["before"] >= MIN_CHECKS and phases["after"] >= MIN_CHECKS, phases
    for n in (1, 2):
        for what in (
            "cold old key before rotation",
            "cold new key after rotation",
            "cold old key after rotation",
            "warm old key after rotation",
            "warm new key after rotation",
        ):
            assert stats[f"v{n} {what}"] >= MIN_CHECKS, (what, stats)
    # Each verifier learned the new key with exactly one JWKS refresh (the default
    # 30 s interval leaves no room for a second one in this test).
    assert refreshes == {"verify-1": 1, "verify-2": 1}, refreshes
    assert [k["kid"] for k in client.jwks()["keys"]] == [k2, k1]
