"""Budgets against real Redis: consumption, lineage, races, faults.

Every test that needs the shared Redis takes it from ONE fixture, ``limits_redis``
(tests/conftest.py: a URL, a client and a fresh key prefix), so the same tests can run
against a Redis Cluster by overriding that fixture: verifiers get the *client*, worker
processes the URL (and ``cluster``). Fault tests (stop, freeze) use ``private_redis``.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from remit import Code, Denied
from remit._limits import KEY_MARGIN, budget_key
from remit.agent import AgentKey, proof

from tests.limits_redis import LimitsRedis, connect
from tests.redis_server import PrivateRedis
from tests.tokens import ACTION, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

# Budgets on the single server and on a real 3-master Redis Cluster (tests/redis_cluster.py).
pytestmark = pytest.mark.redis_both

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "limits.json").read_text("utf-8")
)
EXP = NOW + 3600  # the grant's expiry in these tests
ARGS_ANY = {"amount": {"any": True}}


def _verifier(issuer: IssuerKey, target: Any, prefix: str, **kw: Any) -> remit.Verifier:
    kw.setdefault("revocation", "strict")
    return remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, redis=target,
                          prefix=prefix, clock=lambda: NOW, **kw)


def _token(issuer: IssuerKey, gid: str, limits: list[dict[str, Any]], **kw: Any) -> str:
    cap = {"type": "remit.capability", "action": ACTION, "args": ARGS_ANY, "limits": limits}
    return sign(claims(gid=gid, authorization_details=[cap], **kw), issuer)


def _gid() -> str:
    return "g_" + uuid.uuid4().hex[:20]


def _code(v: remit.Verifier, token: str, args: dict[str, Any], **kw: Any) -> str | None:
    try:
        v.check(token, action=ACTION, args=args, **kw)
    except Denied as denied:
        return denied.code.value
    return None


def _spent(lr: LimitsRedis, gid: str, budget: str = "g0") -> dict[str, int]:
    raw = lr.client.hgetall(budget_key(lr.prefix, gid, budget))
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.parametrize("seq", VECTORS["sequences"], ids=[s["name"] for s in VECTORS["sequences"]])
def test_vector_sequences(limits_redis: LimitsRedis, seq: dict[str, Any]) -> None:
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        for i, call in enumerate(seq["calls"]):
            token = _token(issuer, gid, seq["limits"])  # a new token per call: no reset
            assert _code(v, token, call["args"]) == call["code"], (i, call)


def test_money_is_counted_in_minor_units_to_the_cent(limits_redis: LimitsRedis) -> None:
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    token = _token(issuer, gid, [{"id": "g0", "exp": EXP, "sum": {"arg": "amount",
                                                                  "max": "0.30"}}])
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        for _ in range(3):  # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats: not here
            assert _code(v, token, {"amount": "0.10"}) is None
        assert _code(v, token, {"amount": "0.01"}) == "limit_exceeded"
    assert _spent(limits_redis, gid) == {"s": 30}


def test_every_budget_must_allow_and_all_are_charged_together(limits_redis: LimitsRedis) -> None:
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    budgets = [{"id": "g0", "exp": EXP, "uses": 5},
               {"id": "t_child001.0", "exp": EXP, "uses": 2, "sum": {"arg": "amount", "max": 9}}]
    token = _token(issuer, gid, budgets)
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        assert _code(v, token, {"amount": 4}) is None
        assert _code(v, token, {"amount": 6}) == "limit_exceeded"  # the second budget says no
        assert _code(v, token, {"amount": 5}) is None
        assert _code(v, token, {"amount": 0}) == "limit_exceeded"  # its uses are spent
    assert _spent(limits_redis, gid) == {"u": 2}  # the refusals charged the first nothing
    assert _spent(limits_redis, gid, "t_child001.0") == {"u": 2, "s": 9}


def test_a_sub_agent_spends_from_its_parents_budget(limits_redis: LimitsRedis) -> None:
    """Lineage: the child carries the parent's budget g0 plus a tighter one of its own."""
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    parent_budget = {"id": "g0", "exp": EXP, "sum": {"arg": "amount", "max": "100.00"}}
    parent = _token(issuer, gid, [parent_budget], jti="t_parent_0001")
    child = _token(issuer, gid, [parent_budget, {"id": "t_child_0001.0", "exp": EXP,
                                                 "sum": {"arg": "amount", "max": "30.00"}}],
                   jti="t_child_0001", anc=["t_parent_0001"], act={"sub": "agent:sub"})
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        assert _code(v, child, {"amount": "30.00"}) is None
        assert _code(v, child, {"amount": "0.01"}) == "limit_exceeded"  # its own budget
        assert _code(v, parent, {"amount": "70.01"}) == "limit_exceeded"  # the child spent 30
        assert _code(v, parent, {"amount": "70.00"}) is None
        assert _code(v, parent, {"amount": "0.01"}) == "limit_exceeded"
    assert _spent(limits_redis, gid) == {"s": 10000}


def test_a_call_denied_for_any_other_reason_spends_nothing(limits_redis: LimitsRedis) -> None:
    issuer, agent, gid = IssuerKey(), AgentKey.generate(), limits_redis.new_grant()
    budgets = [{"id": "g0", "exp": EXP, "uses": 1}]
    bound = _token(issuer, gid, budgets, cnf={"jkt": agent.thumbprint}, jti="t_bound_00001")
    other = _token(issuer, gid, budgets, jti="t_revoked_0001")
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        args = {"amount": 1}
        assert _code(v, bound, args) == "proof_required"
        wrong = proof(agent, bound, audience=AUDIENCE, action=ACTION, args={"amount": 2},
                      clock=lambda: NOW)
        assert _code(v, bound, args, proof=wrong) == "proof_mismatch"
        limits_redis.client.set(f"{limits_redis.prefix}rev:{{{gid}}}:jti:t_revoked_0001", 1)
        assert _code(v, other, args) == "revoked"  # after scope, before budgets
        assert _spent(limits_redis, gid) == {}
        good = proof(agent, bound, audience=AUDIENCE, action=ACTION, args=args,
                     clock=lambda: NOW)
        assert _code(v, bound, args, proof=good) is None
    assert _spent(limits_redis, gid) == {"u": 1}


def test_budgets_need_redis_and_are_never_ignored() -> None:
    issuer = IssuerKey()
    token = _token(issuer, _gid(), [{"id": "g0", "exp": EXP, "uses": 1}])
    v = remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off",
                       clock=lambda: NOW)
    assert _code(v, token, {"amount": 1}) == "unsupported"
    # A capability without budgets in the same token still works without Redis.
    plain = sign(claims(authorization_details=[
        {"type": "remit.capability", "action": "payments.refund", "args": {}},
        {"type": "remit.capability", "action": ACTION, "args": ARGS_ANY,
         "limits": [{"id": "g1", "exp": EXP, "uses": 1}]}]), issuer)
    v.check(plain, action="payments.refund", args={})


def test_counters_expire_with_the_grant_not_the_token(limits_redis: LimitsRedis) -> None:
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    token = _token(issuer, gid, [{"id": "g0", "exp": EXP, "uses": 9}])  # token exp NOW+300
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        v.check(token, action=ACTION, args={"amount": 1})
    pttl = limits_redis.client.pttl(budget_key(limits_redis.prefix, gid, "g0"))
    assert (EXP - NOW) * 1000 < pttl <= (EXP - NOW + KEY_MARGIN) * 1000
    markers = list(limits_redis.client.scan_iter(match=f"{limits_redis.prefix}lim:*:call:*"))
    assert len(markers) == 1 and 0 < limits_redis.client.pttl(markers[0]) <= 60_000


def test_script_is_reloaded_after_a_script_flush(limits_redis: LimitsRedis) -> None:
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    token = _token(issuer, gid, [{"id": "g0", "exp": EXP, "uses": 3}])
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        assert _code(v, token, {"amount": 1}) is None
        limits_redis.client.script_flush()  # as after a restart or failover: NOSCRIPT next
        assert _code(v, token, {"amount": 1}) is None
    assert _spent(limits_redis, gid) == {"u": 2}


def test_a_re_sent_script_charges_nothing_twice(limits_redis: LimitsRedis) -> None:
    """The marker key: what makes the client's one retry after a lost reply safe."""
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        limits = v._limits
        assert limits is not None
        key = budget_key(limits_redis.prefix, gid, "g0")
        marker = budget_key(limits_redis.prefix, gid, "call:same-call")
        for _ in range(3):
            assert limits._script(keys=[marker, key], args=[60_000, 5, 100, 7, 60_000]) == 0
        assert _spent(limits_redis, gid) == {"u": 1, "s": 7}
        # A refused call re-sent is decided afresh: refused again, then (budget raised by
        # another token's bounds) charged once.
        refused = budget_key(limits_redis.prefix, gid, "call:refused")
        for _ in range(2):
            assert limits._script(keys=[refused, key], args=[60_000, 5, 100, 94, 60_000]) == [1, 2]
        for _ in range(2):
            assert limits._script(keys=[refused, key], args=[60_000, 5, 101, 94, 60_000]) == 0
    assert _spent(limits_redis, gid) == {"u": 2, "s": 101}


def test_a_refused_charge_is_rolled_back_exactly_even_for_large_amounts(
    limits_redis: LimitsRedis,
) -> None:
    """Charges are made first and undone when a later budget says no: the undo must be
    exact for amounts a Lua number would print as 1.2345678901234e+14, and the refused
    call's marker says so ('0': a re-sent copy is decided afresh)."""
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    big = {"id": "g0", "exp": EXP, "uses": 100,
           "sum": {"arg": "amount", "max": "90071992547409.91"}}
    small = {"id": "t_child001.0", "exp": EXP, "uses": 1}
    token = _token(issuer, gid, [big, small])
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as v:
        assert _code(v, token, {"amount": "1234567890123.45"}) is None
        assert _code(v, token, {"amount": "1234567890123.45"}) == "limit_exceeded"
    assert _spent(limits_redis, gid) == {"u": 1, "s": 123456789012345}
    assert _spent(limits_redis, gid, "t_child001.0") == {"u": 1}
    markers = sorted(limits_redis.client.scan_iter(match=f"{limits_redis.prefix}lim:*:call:*"))
    assert sorted(limits_redis.client.get(m) for m in markers) == [b"0", b"1"]


def test_double_spend_by_replaying_a_call_is_caught_by_proof_replay(
    limits_redis: LimitsRedis,
) -> None:
    issuer, agent, gid = IssuerKey(), AgentKey.generate(), limits_redis.new_grant()
    token = _token(issuer, gid, [{"id": "g0", "exp": EXP, "sum": {"arg": "amount", "max": 100}}],
                   cnf={"jkt": agent.thumbprint})
    pop = proof(agent, token, audience=AUDIENCE, action=ACTION, args={"amount": 60},
                clock=lambda: NOW)
    with _verifier(issuer, limits_redis.client, limits_redis.prefix) as a, \
            _verifier(issuer, limits_redis.client, limits_redis.prefix) as b:
        assert _code(a, token, {"amount": 60}, proof=pop) is None
        assert _code(a, token, {"amount": 60}, proof=pop) == "replayed"
        assert _code(b, token, {"amount": 60}, proof=pop) == "replayed"  # another backend
    assert _spent(limits_redis, gid) == {"s": 60}


# --- races: many threads in several processes on one budget ---------------------------

USES = 37
SUM_MAX = "5.00"  # 500 cents
THREADS, PROCESSES, CALLS = 6, 3, 40


def _race(url: str, cluster: bool, prefix: str, jwks: dict[str, Any], token: str,
          start_at: float) -> list[int]:
    """One racer process: THREADS threads, CALLS checks each; the allowed amounts (cents)."""
    client = connect(url, cluster)
    v = remit.Verifier(jwks, issuer=ISSUER, audience=AUDIENCE, revocation="off", redis=client,
                       prefix=prefix, clock=lambda: NOW)
    allowed: list[int] = []
    lock = threading.Lock()

    def run(seed: int) -> None:
        while time.time() < start_at:
            time.sleep(0.001)
        for i in range(CALLS):
            cents = 1 + (seed * 7 + i * 3) % 9  # 0.01 .. 0.09
            try:
                v.check(token, action=ACTION, args={"amount": f"0.0{cents}"})
            except Denied as denied:
                assert denied.code is Code.LIMIT_EXCEEDED, denied
                continue
            with lock:
                allowed.append(cents)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, range(THREADS)))
    client.close()
    return allowed


@pytest.mark.parametrize("kind", ["uses", "sum"])
def test_racing_threads_and_processes_never_overspend(
    limits_redis: LimitsRedis, kind: str
) -> None:
    issuer, gid = IssuerKey(), limits_redis.new_grant()
    budget: dict[str, Any] = {"id": "g0", "exp": EXP}
    if kind == "uses":
        budget["uses"] = USES
    else:
        budget["sum"] = {"arg": "amount", "max": SUM_MAX}
    token = _token(issuer, gid, [budget], exp=NOW + 300)
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0  # every process ready, then all at once
    args = (limits_redis.url, limits_redis.cluster, limits_redis.prefix, issuer.jwks(), token,
            start_at)
    with ctx.Pool(PROCESSES) as pool:
        remote = pool.starmap_async(_race, [args] * PROCESSES)
        local = _race(*args)
        results = [local, *remote.get(timeout=120)]
    allowed = [c for r in results for c in r]
    spent = _spent(limits_redis, gid)
    if kind == "uses":
        assert len(allowed) == USES == spent["u"]  # (4 x 240 calls tried; exactly 37 ran)
    else:
        assert sum(allowed) == spent["s"] <= 500  # never one cent over
        assert 500 - spent["s"] < 9  # and the budget was really contended to its end


# --- faults (own redis-server) --------------------------------------------------------


def test_redis_down_is_limit_unavailable_and_recovers(private_redis: PrivateRedis) -> None:
    issuer, gid = IssuerKey(), _gid()
    token = _token(issuer, gid, [{"id": "g0", "exp": EXP, "uses": 5}])
    with _verifier(issuer, private_redis.url, "remit:", revocation="off") as v:
        assert _code(v, token, {"amount": 1}) is None
        private_redis.kill()
        assert _code(v, token, {"amount": 1}) == "limit_unavailable"
        with pytest.raises(Denied) as info:
            v.check(token, action=ACTION, args={"amount": 1})
        assert info.value.http_status == 503
        private_redis.start()
        assert _code(v, token, {"amount": 1}) is None  # no restart of the verifier


def test_a_timeout_after_the_script_ran_charges_once_and_fails_closed(
    private_redis: PrivateRedis,
) -> None:
    """Redis freezes (SIGSTOP) past the client's timeout and its one retry: the call is
    denied, and the script it sent runs once Redis resumes: that call's charge stands,
    exactly once (a re-sent copy would find the call marker and charge nothing:
    test_a_re_sent_script_charges_nothing_twice). Under-spend, never over-spend."""
    issuer, gid = IssuerKey(), _gid()
    token = _token(issuer, gid, [{"id": "g0", "exp": EXP, "uses": 5}])
    admin = redis.Redis.from_url(private_redis.url)
    assert private_redis.proc is not None
    try:
        with _verifier(issuer, private_redis.url, "remit:", revocation="off") as v:
            assert _code(v, token, {"amount": 1}) is None  # script loaded, pool warm
            admin.config_resetstat()
            private_redis.proc.send_signal(signal.SIGSTOP)
            try:
                assert _code(v, token, {"amount": 1}) == "limit_unavailable"
            finally:
                private_redis.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) < 1:
                assert time.monotonic() < deadline, admin.info("commandstats")
                time.sleep(0.02)
            assert _spent(LimitsRedis(private_redis.url, admin, "remit:"), gid) == {"u": 2}
            assert _code(v, token, {"amount": 1}) is None  # recovered by itself
        assert _spent(LimitsRedis(private_redis.url, admin, "remit:"), gid) == {"u": 3}
    finally:
        admin.close()
