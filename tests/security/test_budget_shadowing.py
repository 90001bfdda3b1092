"""Budget shadowing: a spent budget on one capability must not hide another capability
of the same token that allows the call (narrowing and Exchange treat a token as "any
capability allows"). Real Redis via ``limits_redis`` (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import remit
from remit import Code, Denied
from remit._limits import budget_key

from tests.limits_redis import LimitsRedis
from tests.tokens import ACTION, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

EXP = NOW + 3600


def cap(le: int, *budgets: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "remit.capability", "action": ACTION, "args": {"amount": {"le": le}}
    }
    if budgets:
        out["limits"] = list(budgets)
    return out


class Setup:
    def __init__(self, lr: LimitsRedis) -> None:
        self.lr = lr
        self.issuer = IssuerKey()
        self.gid = lr.new_grant()
        self.verifier = remit.Verifier(
            self.issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="strict",
            redis=lr.client, prefix=lr.prefix, clock=lambda: NOW,
        )

    def token(self, *caps: dict[str, Any]) -> str:
        return sign(claims(gid=self.gid, authorization_details=list(caps)), self.issuer)

    def outcome(self, token: str, amount: int) -> int | str:
        """The capability index that allowed the call, or the denial's code."""
        try:
            return self.verifier.check(token, action=ACTION, args={"amount": amount}).capability
        except Denied as denied:
            return denied.code.value

    def uses(self, budget_id: str) -> int:
        raw = self.lr.client.hget(budget_key(self.lr.prefix, self.gid, budget_id), "u")
        return int(raw or 0)


@pytest.fixture
def s(limits_redis: LimitsRedis) -> Iterator[Setup]:
    setup = Setup(limits_redis)
    yield setup
    setup.verifier.close()


def test_a_spent_budget_falls_through_to_an_unbudgeted_capability(s: Setup) -> None:
    """The reviewer's repro: BIG (amount <= 1000, 1 use) then SMALL (amount <= 10, no
    limits); amount 5 was [allowed, limit_exceeded, limit_exceeded]."""
    token = s.token(cap(1000, {"id": "g0", "exp": EXP, "uses": 1}), cap(10))
    assert [s.outcome(token, 5) for _ in range(3)] == [0, 1, 1]
    assert s.uses("g0") == 1
    # SMALL does not allow 50: BIG's spent budget is the answer
    assert s.outcome(token, 50) == "limit_exceeded"


def test_budgeted_capabilities_are_tried_in_token_order(s: Setup) -> None:
    token = s.token(
        cap(1000, {"id": "g0", "exp": EXP, "uses": 1}),
        cap(10, {"id": "g1", "exp": EXP, "uses": 2}),
        cap(10, {"id": "g2", "exp": EXP, "uses": 1}),
    )
    assert [s.outcome(token, 5) for _ in range(4)] == [0, 1, 1, 2]
    with pytest.raises(Denied) as info:
        s.verifier.check(token, action=ACTION, args={"amount": 5})
    assert info.value.code is Code.LIMIT_EXCEEDED
    assert "budget g0" in info.value.message  # the first refusal in token order
    assert [s.uses(b) for b in ("g0", "g1", "g2")] == [1, 2, 1]  # nothing charged twice


def test_an_amount_above_a_whole_budget_falls_through_without_a_charge(s: Setup) -> None:
    token = s.token(
        cap(1000, {"id": "g0", "exp": EXP, "sum": {"arg": "amount", "max": 3}}), cap(10)
    )
    assert s.outcome(token, 5) == 1  # refused locally by g0, allowed by the second
    assert s.outcome(token, 2) == 0
    assert s.lr.client.hget(budget_key(s.lr.prefix, s.gid, "g0"), "s") == b"2"


def test_a_redis_error_fails_closed_at_once(s: Setup) -> None:
    """limit_unavailable never falls through, not even to an unbudgeted capability."""
    token = s.token(cap(1000, {"id": "g0", "exp": EXP, "uses": 5}), cap(10))
    # a real Redis error: the counter key holds a string, so the script's HINCRBY fails
    s.lr.client.set(budget_key(s.lr.prefix, s.gid, "g0"), b"not-a-hash")
    assert s.outcome(token, 5) == "limit_unavailable"
