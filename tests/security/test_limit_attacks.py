"""Attacks on budgets (capability ``limits``): each pinned to one exact outcome.

Redis comes from the one ``limits_redis`` fixture (tests/conftest.py). Budget:
``sum`` of ``amount`` at most ``"100.00"`` plus ``uses`` at most 10, on a capability that
allows any ``amount`` and any other argument (``"*"``), so the budget alone decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import remit
from remit import Code, Denied
from remit._limits import budget_key
from remit._redis_keys import RedisKeys
from remit.agent import AgentKey, proof

from tests.limits_redis import LimitsRedis
from tests.redis_server import PrivateRedis
from tests.tokens import ACTION, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

BUDGET = {"id": "g0", "exp": NOW + 3600, "uses": 10, "sum": {"arg": "amount", "max": "100.00"}}
CAP = {"type": "remit.capability", "action": ACTION,
       "args": {"amount": {"any": True, "optional": True}, "*": {"any": True}},
       "limits": [BUDGET]}


class Setup:
    def __init__(self, lr: LimitsRedis) -> None:
        self.lr = lr
        self.issuer = IssuerKey()
        self.gid = lr.new_grant()
        self.token = sign(claims(gid=self.gid, authorization_details=[CAP]), self.issuer)
        self.verifier = remit.Verifier(self.issuer.jwks(), issuer=ISSUER, audience=AUDIENCE,
                                       revocation="strict", redis=lr.client, prefix=lr.prefix,
                                       clock=lambda: NOW)

    def denied(self, args: dict[str, Any], code: Code, token: str | None = None,
               proof: str | None = None) -> Denied:
        with pytest.raises(Denied) as info:
            self.verifier.check(token or self.token, action=ACTION, args=args, proof=proof)
        assert info.value.code is code, info.value
        return info.value

    def spent(self) -> dict[str, int]:
        raw = self.lr.client.hgetall(budget_key(self.lr.prefix, self.gid, "g0"))
        return {k.decode(): int(v) for k, v in raw.items()}


@pytest.fixture
def s(limits_redis: LimitsRedis) -> Iterator[Setup]:
    setup = Setup(limits_redis)
    yield setup
    setup.verifier.close()


def test_float_amount_is_denied(s: Setup) -> None:
    for value in (12.5, 1.0, 0.1, float("nan"), float("inf"), -0.0):
        s.denied({"amount": value}, Code.ARGUMENT_DENIED)
    assert s.spent() == {}


def test_exponent_string_amount_is_denied(s: Setup) -> None:
    for value in ("1e3", "1E3", "1e-2", "0x10", "1_000", "Infinity", "NaN", "+5", " 5", "5\n",
                  "\u0665", "\uff15", "5.000"):  # the last: more digits than the bound's 2
        s.denied({"amount": value}, Code.ARGUMENT_DENIED)
    assert s.spent() == {}


def test_negative_amount_cannot_refill_the_budget(s: Setup) -> None:
    s.verifier.check(s.token, action=ACTION, args={"amount": "100.00"})
    for value in (-50, "-50.00", "-0", -1):
        s.denied({"amount": value}, Code.ARGUMENT_DENIED)
    s.denied({"amount": "0.01"}, Code.LIMIT_EXCEEDED)
    assert s.spent() == {"u": 1, "s": 10000}


def test_amount_under_another_argument_name_is_denied(s: Setup) -> None:
    """The capability admits any other argument ("*"): moving the money into one of them
    (or dropping the counted one) must not slip past the budget."""
    for args in ({"Amount": 500}, {"amount_eur": 500}, {"value": 500},
                 {"amount\u200b": 500}, {}):
        s.denied(args, Code.ARGUMENT_DENIED)
    assert s.spent() == {}


def test_huge_amount_is_refused_without_wrapping(s: Setup) -> None:
    for value in (2**53, 2**64 + 1, 10**400, 2**63 - 1):
        s.denied({"amount": value}, Code.LIMIT_EXCEEDED)
    s.denied({"amount": "9" * 17}, Code.ARGUMENT_DENIED)  # longer than any valid amount
    s.denied({"amount": "9" * 5000}, Code.ARGUMENT_DENIED)
    assert s.spent() == {}
    s.verifier.check(s.token, action=ACTION, args={"amount": "100.00"})  # all still there


def test_splitting_a_transfer_into_small_calls_hits_the_total(s: Setup) -> None:
    """The per-call cap defeat peers document: many small transfers. The sum catches it."""
    for _ in range(4):
        s.verifier.check(s.token, action=ACTION, args={"amount": "25.00"})
    s.denied({"amount": "0.01"}, Code.LIMIT_EXCEEDED)
    assert s.spent() == {"u": 4, "s": 10000}


def test_replaying_a_call_to_double_spend_is_caught_by_proof_replay(s: Setup) -> None:
    agent = AgentKey.generate()
    bound = sign(claims(gid=s.gid, authorization_details=[CAP], cnf={"jkt": agent.thumbprint}),
                 s.issuer)
    args = {"amount": "60.00"}
    pop = proof(agent, bound, audience=AUDIENCE, action=ACTION, args=args, clock=lambda: NOW)
    s.verifier.check(bound, action=ACTION, args=args, proof=pop)
    s.denied(args, Code.REPLAYED, token=bound, proof=pop)
    assert s.spent() == {"u": 1, "s": 6000}


def test_a_fresh_token_does_not_reset_the_budget(s: Setup) -> None:
    s.verifier.check(s.token, action=ACTION, args={"amount": "100.00"})
    fresh = sign(claims(gid=s.gid, authorization_details=[CAP]), s.issuer)
    s.denied({"amount": "0.01"}, Code.LIMIT_EXCEEDED, token=fresh)


def test_a_sub_agent_cannot_spend_past_its_parents_budget(s: Setup) -> None:
    own = {"id": "t_child_00001.0", "exp": NOW + 3600, "sum": {"arg": "amount", "max": "80.00"}}
    child = sign(claims(gid=s.gid, anc=["t_parent_0001"], act={"sub": "agent:sub"},
                        authorization_details=[{**CAP, "limits": [BUDGET, own]}]), s.issuer)
    s.verifier.check(s.token, action=ACTION, args={"amount": "50.00"})  # the parent spends
    s.denied({"amount": "50.01"}, Code.LIMIT_EXCEEDED, token=child)  # within its own 80
    s.verifier.check(child, action=ACTION, args={"amount": "50.00"})
    assert s.spent() == {"u": 2, "s": 10000}


def test_a_budget_id_with_other_bounds_in_one_token_is_malformed(s: Setup) -> None:
    wider = {**BUDGET, "sum": {"arg": "amount", "max": "1000000.00"}}
    token = sign(claims(gid=s.gid, authorization_details=[CAP, {**CAP, "limits": [wider]}]),
                 s.issuer)
    s.denied({"amount": 1}, Code.MALFORMED, token=token)


# --- the verifier's Redis role with budgets ---------------------------------------------

LIMITS_ROLE = [
    "on", ">verifier-secret", "resetkeys", "%R~remit:*", "%W~remit:pop:*", "~remit:lim:*",
    "resetchannels", "-@all", "+get", "+exists", "+set", "+ping",
    "+evalsha", "+script|load", "+hincrby", "+pexpire",
]


def test_budgets_work_under_a_role_that_still_cannot_un_revoke(
    private_redis: PrivateRedis,
) -> None:
    """Budgets need EVALSHA and write access to `lim:` keys (a script writes every key it
    names, and names only `lim:{gid}:*` keys): docs/limits.md, "Redis role"."""
    private_redis.set_epoch()
    with redis.Redis.from_url(private_redis.url) as admin:
        admin.execute_command("ACL", "SETUSER", "verifier", *LIMITS_ROLE)
    url = f"redis://verifier:verifier-secret@127.0.0.1:{private_redis.port}/0"
    issuer, gid = IssuerKey(), "g_" + uuid.uuid4().hex[:20]
    private_redis.seed_grant(gid)
    token = sign(claims(gid=gid, authorization_details=[{**CAP, "limits": [
        {"id": "g0", "exp": NOW + 3600, "uses": 1}]}]), issuer)
    with remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="strict",
                        redis=url, clock=lambda: NOW) as v:
        v.check(token, action=ACTION, args={"amount": 1})
        with pytest.raises(Denied) as info:
            v.check(token, action=ACTION, args={"amount": 1})
        assert info.value.code is Code.LIMIT_EXCEEDED
    with redis.Redis.from_url(url) as conn:
        sha = conn.script_load("return redis.call('DEL', KEYS[1])")  # its own script...
        keys = RedisKeys("remit:")
        for key in (keys.grant_revoked(gid), keys.grant_cutoff(gid), keys.epoch()):
            with pytest.raises(redis.exceptions.NoPermissionError):
                conn.evalsha(sha, 1, key)  # ...cannot touch revocation state
