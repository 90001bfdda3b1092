"""Budgets end to end: CreateGrant with limits, Mint, a verifier spending them.

The grant keeps the request form (``{"uses", "sum"}``); every token minted under it
carries the same budget ids (``g<i>``), so minting a fresh token never resets a budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
import remit

from .conftest import count_keys

TO = "DE89 3704 0044 0532 0130 00"
PAY = {"action": "payments.transfer",
       "args": {"amount": {"le": 100}, "to": {"eq": TO}},
       "limits": {"uses": 3, "sum": {"arg": "amount", "max": "120.00"}}}


def _grant(client: remit.Client, *caps: dict[str, Any]) -> remit.Grant:
    return client.create_grant(subject="user:alice", agent="agent:a", audience=["payments"],
                               capabilities=list(caps or (PAY,)), purpose="rent", ttl=3600)


def _code(v: remit.Verifier, token: str, amount: Any) -> str | None:
    try:
        v.check(token, action="payments.transfer", args={"amount": amount, "to": TO})
    except remit.Denied as denied:
        return denied.code.value
    return None


def test_minting_again_never_resets_a_budget(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    grant = _grant(client)
    assert grant.capabilities[0]["limits"] == PAY["limits"]  # as requested
    v = make_verifier(client)
    assert _code(v, client.mint(grant.id), 100) is None
    assert _code(v, client.mint(grant.id), 21) == "limit_exceeded"
    assert _code(v, client.mint(grant.id), 20) is None
    assert _code(v, client.mint(grant.id), 0) is None  # third use
    assert _code(v, client.mint(grant.id), 0) == "limit_exceeded"


def test_tokens_carry_the_grant_budgets_with_its_expiry(client: remit.Client) -> None:
    grant = _grant(client)
    _, claims = remit.peek_unverified(client.mint(grant.id, ttl=60))
    (cap,) = claims["authorization_details"]
    assert cap["limits"] == [{"id": "g0", "exp": grant.expires_at, "uses": 3,
                              "sum": {"arg": "amount", "max": "120.00"}}]
    assert claims["exp"] < grant.expires_at  # the counters outlive the token


def test_a_narrower_mint_keeps_the_budget_of_the_capability_it_narrows(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    free = {"action": "payments.refund", "args": {"amount": {"le": 5}}}
    grant = _grant(client, free, PAY)
    narrow = {"action": "payments.transfer", "args": {"amount": {"le": 50}, "to": {"eq": TO}}}
    token = client.mint(grant.id, capabilities=[narrow])
    _, claims = remit.peek_unverified(token)
    assert [b["id"] for b in claims["authorization_details"][0]["limits"]] == ["g1"]
    v = make_verifier(client)
    assert _code(v, token, 50) is None
    assert _code(v, client.mint(grant.id), 71) == "limit_exceeded"  # shared
    assert _code(v, client.mint(grant.id), 70) is None
    _, plain = remit.peek_unverified(client.mint(grant.id, capabilities=[free]))
    assert "limits" not in plain["authorization_details"][0]


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"uses": 0}, "capabilities[0].limits.uses"),
        ({"uses": 1.0}, "capabilities[0].limits.uses"),
        ({"sum": {"arg": "amount", "max": 120.5}}, "capabilities[0].limits.sum.max"),
        ({"sum": {"arg": "amount", "max": "1e3"}}, "capabilities[0].limits.sum.max"),
        ({"sum": {"arg": "amount", "max": 2**53}}, "capabilities[0].limits.sum.max"),
        ({"sum": {"arg": "amount", "max": "-1"}}, "capabilities[0].limits.sum.max"),
        ({"sum": {"arg": "fee", "max": 5}}, "capabilities[0].limits.sum.arg"),
        ({"uses": 1, "per": "day"}, "capabilities[0].limits"),
        ({}, "capabilities[0].limits"),
        ([{"id": "g0", "exp": 1, "uses": 1}], "capabilities[0].limits"),
    ],
)
def test_bad_limits_are_refused_at_grant_time_and_write_nothing(
    client: remit.Client, redis_client: redis.Redis, redis_prefix: str,
    limits: Any, field: str,
) -> None:
    before = count_keys(redis_client, redis_prefix)
    with pytest.raises(remit.InvalidArgument) as info:
        _grant(client, {**PAY, "limits": limits})
    assert info.value.field == field
    assert count_keys(redis_client, redis_prefix) == before
