"""Named attacks on Exchange (rows in tests/security/README.md, "Exchange").

Each test expects one exact outcome: a gRPC status (through ``remit.Client``'s
exception of that status) and the reason in the message. Attacks that are a small change
to a valid request sit next to an allowed baseline, so the test can fail.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
import redis
import remit
from remit.agent import AgentKey, exchange_proof
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import Server
from remit_service._issuer import Issuer

from .conftest import count_keys

PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}, "to": {"eq": "DE89"}}}


def claims(token: str) -> dict[str, Any]:
    return remit.peek_unverified(token)[1]


@pytest.fixture
def key() -> AgentKey:
    return AgentKey.generate()


@pytest.fixture
def agent(service: Server) -> Any:
    with remit.Client(service.grpc_target) as c:
        yield c


def _grant(client: remit.Client, **kw: Any) -> remit.Grant:
    args: dict[str, Any] = {
        "subject": "user:alice", "agent": "agent:a", "audience": ["payments"],
        "capabilities": [PAY], "ttl": 3600,
    }
    args.update(kw)
    return client.create_grant(**args)


@pytest.fixture
def bound(client: remit.Client, key: AgentKey) -> str:
    return client.mint(_grant(client).id, ttl=300, cnf_jkt=key.thumbprint)


# -- scope and lifetime --------------------------------------------------------------------


@pytest.mark.parametrize(
    "wider",
    [
        pytest.param({**PAY, "args": {"amount": {"le": 1000}, "to": {"eq": "DE89"}}}, id="bound"),
        pytest.param({**PAY, "args": {"amount": {"le": 100}}}, id="drops-a-constraint"),
        pytest.param({"action": "payments.*", "args": PAY["args"]}, id="wildcard-action"),
        pytest.param({"action": "payments.refund", "args": PAY["args"]}, id="other-action"),
        pytest.param(
            {**PAY, "args": {**PAY["args"], "amount": {"any_of": [{"le": 50}, {"ge": 0}]}}},
            id="any_of-branch-widens",
        ),
        pytest.param({**PAY, "args": {**PAY["args"], "*": {"any": True}}}, id="star"),
    ],
)
def test_exchange_widening_scope_is_refused(
    agent: remit.Client, bound: str, key: AgentKey, wider: dict[str, Any]
) -> None:
    narrower = {**PAY, "args": {"amount": {"le": 10}, "to": {"eq": "DE89"}}}
    assert agent.exchange(bound, key, capabilities=[narrower]).depth == 1  # baseline
    with pytest.raises(remit.PermissionDenied, match="not within the parent"):
        agent.exchange(bound, key, capabilities=[wider])


def test_exchange_widening_audience_is_refused(agent: remit.Client, bound: str,
                                              key: AgentKey) -> None:
    with pytest.raises(remit.PermissionDenied, match="audience"):
        agent.exchange(bound, key, audience=["payments", "email"])


def test_exchange_sub_agent_ttl_past_the_parent_is_refused(
    agent: remit.Client, bound: str, key: AgentKey
) -> None:
    sub = AgentKey.generate()
    left = claims(bound)["exp"] - int(time.time())
    ok = agent.exchange(bound, key, actor="agent:sub", cnf_jkt=sub.thumbprint, ttl=60)
    assert claims(ok.token)["exp"] <= claims(bound)["exp"]
    with pytest.raises(remit.PermissionDenied, match="outlive the parent token"):
        agent.exchange(bound, key, actor="agent:sub", cnf_jkt=sub.thumbprint, ttl=left + 30)
    # The default lifetime is clamped to the parent's, never past it.
    default = agent.exchange(bound, key, actor="agent:sub", cnf_jkt=sub.thumbprint)
    assert claims(default.token)["exp"] <= claims(bound)["exp"]


def test_exchange_renewal_past_the_grant_is_refused(
    client: remit.Client, agent: remit.Client, key: AgentKey
) -> None:
    grant = _grant(client, ttl=120)
    token = client.mint(grant.id, ttl=60, cnf_jkt=key.thumbprint)
    with pytest.raises(remit.PermissionDenied, match=f"outlive grant {grant.id}"):
        agent.exchange(token, key, ttl=3000)
    renewed = agent.exchange(token, key)  # default: clamped to the grant
    assert claims(renewed.token)["exp"] <= grant.expires_at


def test_exchange_sub_agent_cannot_renew_past_its_delegator(
    client: remit.Client, agent: remit.Client, key: AgentKey
) -> None:
    """The reviewer's repro: a 120 s token delegates 30 s to a sub-agent, which then asked
    for 3000 s as a renewal (its own actor and key) and got it, chainable to depth 8."""
    token = client.mint(_grant(client).id, ttl=120, cnf_jkt=key.thumbprint)
    sub_key = AgentKey.generate()
    sub = agent.exchange(token, key, actor="agent:sub", cnf_jkt=sub_key.thumbprint, ttl=30)
    with pytest.raises(remit.PermissionDenied, match="outlive the parent token"):
        agent.exchange(sub.token, sub_key, ttl=3000)
    # Chained renewals by default lifetime never climb past the delegated token either.
    current = sub
    for depth in range(2, 9):
        current = agent.exchange(current.token, sub_key)
        assert current.depth == depth and current.expires_at <= sub.expires_at
    # Baseline: the grant's own agent still renews its token past that token's expiry.
    assert agent.exchange(token, key, ttl=3000).expires_at > claims(token)["exp"]


def test_exchange_delegation_naming_the_grants_agent_is_refused(
    agent: remit.Client, bound: str, key: AgentKey
) -> None:
    sub_key, third = AgentKey.generate(), AgentKey.generate()
    sub = agent.exchange(bound, key, actor="agent:sub", cnf_jkt=sub_key.thumbprint)
    # Baseline: the sub-agent may delegate on to another actor.
    ok = agent.exchange(sub.token, sub_key, actor="agent:c", cnf_jkt=third.thumbprint)
    assert claims(ok.token)["act"] == {"sub": "agent:c"}
    # "agent:a" is the grant's agent: the child would pass for the root agent's token.
    with pytest.raises(remit.PermissionDenied, match="the grant's own agent"):
        agent.exchange(sub.token, sub_key, actor="agent:a", cnf_jkt=third.thumbprint)
    with pytest.raises(remit.PermissionDenied, match="the grant's own agent"):
        agent.exchange(ok.token, third, actor="agent:a", cnf_jkt=key.thumbprint)
    # Naming the parent's own actor with another key is no delegation: a renewal keeps cnf.
    for parent, holder, actor in ((bound, key, "agent:a"), (sub.token, sub_key, "agent:sub")):
        with pytest.raises(remit.PermissionDenied, match="renewal keeps the parent's key"):
            agent.exchange(parent, holder, actor=actor, cnf_jkt=third.thumbprint)


def test_exchange_delegated_tokens_renewal_is_bounded_by_its_own_exp(
    agent: remit.Client, bound: str, key: AgentKey
) -> None:
    sub_key, leaf_key = AgentKey.generate(), AgentKey.generate()
    sub = agent.exchange(bound, key, actor="agent:sub", cnf_jkt=sub_key.thumbprint, ttl=120)
    leaf = agent.exchange(sub.token, sub_key, actor="agent:leaf", cnf_jkt=leaf_key.thumbprint,
                          ttl=60)
    for token, holder in ((sub.token, sub_key), (leaf.token, leaf_key)):
        exp = claims(token)["exp"]
        left = exp - int(time.time())
        with pytest.raises(remit.PermissionDenied, match="only the grant's agent"):
            agent.exchange(token, holder, ttl=left + 30)
        renewed = agent.exchange(token, holder)  # default lifetime: clamped to its own exp
        assert claims(renewed.token)["act"] == claims(token)["act"]
        assert renewed.expires_at <= exp
        assert agent.exchange(token, holder, ttl=5).expires_at <= exp  # within: allowed


def test_exchange_ttl_beyond_policy_is_refused(agent: remit.Client, bound: str,
                                               key: AgentKey) -> None:
    with pytest.raises(remit.PermissionDenied, match="exceeds the maximum"):
        agent.exchange(bound, key, ttl=10 * 86400)


def test_exchange_depth_9_is_refused(agent: remit.Client, bound: str, key: AgentKey) -> None:
    token = bound
    for depth in range(1, 9):
        child = agent.exchange(token, key)
        assert child.depth == depth == len(claims(child.token)["anc"])
        token = child.token
    with pytest.raises(remit.PermissionDenied, match="delegation depth"):
        agent.exchange(token, key)


# -- the parent ------------------------------------------------------------------------------


def test_exchange_of_a_revoked_parent_is_refused(
    client: remit.Client, agent: remit.Client, bound: str, key: AgentKey
) -> None:
    client.revoke(jti=claims(bound)["jti"])
    with pytest.raises(remit.Unauthenticated, match="revoked") as exc:
        agent.exchange(bound, key)
    assert exc.value.reason == "revoked"  # the remit-code trailer, as backends send it


def test_exchange_under_a_revoked_grant_is_refused(
    client: remit.Client, agent: remit.Client, bound: str, key: AgentKey
) -> None:
    client.revoke(grant_id=claims(bound)["gid"])
    with pytest.raises(remit.Unauthenticated, match="revoked") as exc:
        agent.exchange(bound, key)
    assert exc.value.reason == "revoked"


def test_exchange_of_an_expired_parent_is_refused(
    service: Server, client: remit.Client, agent: remit.Client, key: AgentKey
) -> None:
    # A genuine token (service key, real grant) whose lifetime is over.
    fresh = client.mint(_grant(client).id, cnf_jkt=key.thumbprint)
    body = claims(fresh)
    now = int(time.time())
    body.update(iat=now - 120, nbf=now - 120, exp=now - 60, jti="t_expired_parent_0001")
    expired = Issuer(service.keystore).sign(body)
    with pytest.raises(remit.Unauthenticated, match="expired"):
        agent.exchange(expired, key)


def test_exchange_of_a_forged_parent_is_refused(
    client: remit.Client, agent: remit.Client, bound: str, key: AgentKey, tmp_path: Any
) -> None:
    from remit_service import KeyStore

    other = KeyStore(tmp_path / "other-keys")
    other.ensure()
    forged = Issuer(other).sign(claims(bound))
    with pytest.raises(remit.Unauthenticated, match="unknown_key"):
        agent.exchange(forged, key)


def test_exchange_of_a_bearer_token_is_refused(
    client: remit.Client, agent: remit.Client, key: AgentKey
) -> None:
    bearer = client.mint(_grant(client).id)  # no cnf: nothing shows who holds it
    with pytest.raises(remit.Unauthenticated, match="proof_required"):
        agent.exchange(bearer, key)


def test_exchange_never_yields_a_bearer_token(agent: remit.Client, bound: str,
                                              key: AgentKey) -> None:
    renewed = agent.exchange(bound, key, cnf_jkt="")
    assert claims(renewed.token)["cnf"] == claims(bound)["cnf"]


# -- actor and key ---------------------------------------------------------------------------


def test_exchange_changing_act_without_a_new_cnf_is_refused(
    agent: remit.Client, bound: str, key: AgentKey
) -> None:
    with pytest.raises(remit.InvalidArgument) as exc:
        agent.exchange(bound, key, actor="agent:other")
    assert exc.value.field == "cnf_jkt"
    with pytest.raises(remit.PermissionDenied, match="its own key"):
        agent.exchange(bound, key, actor="agent:other", cnf_jkt=key.thumbprint)


def test_exchange_changing_cnf_without_changing_act_is_refused(
    agent: remit.Client, bound: str, key: AgentKey
) -> None:
    with pytest.raises(remit.PermissionDenied, match="renewal keeps the parent's key"):
        agent.exchange(bound, key, cnf_jkt=AgentKey.generate().thumbprint)


# -- the proof -------------------------------------------------------------------------------


def _stub_exchange(service: Server, request: remit_pb2.ExchangeRequest) -> Any:
    with grpc.insecure_channel(service.grpc_target) as channel:
        return remit_pb2_grpc.RemitStub(channel).Exchange(request, timeout=10)


def _refusal(service: Server, request: remit_pb2.ExchangeRequest) -> tuple[Any, str]:
    with pytest.raises(grpc.RpcError) as err:
        _stub_exchange(service, request)
    return err.value.code(), err.value.details()


@pytest.mark.parametrize(
    ("proof_kwargs", "reason"),
    [
        pytest.param({"ttl_seconds": 60}, "argh", id="other-fields"),
        pytest.param({"audience": ["payments"]}, "argh", id="other-audience-field"),
        pytest.param({"issuer": "payments"}, "aud", id="aud-a-backend"),
    ],
)
def test_exchange_proof_for_another_request_is_refused(
    service: Server, client: remit.Client, bound: str, key: AgentKey,
    proof_kwargs: dict[str, Any], reason: str,
) -> None:
    issuer = client.issuer()
    request = remit_pb2.ExchangeRequest(token=bound, ttl_seconds=120)
    good = exchange_proof(key, bound, issuer=issuer, ttl_seconds=120)
    assert _stub_exchange(
        service, remit_pb2.ExchangeRequest(token=bound, ttl_seconds=120, proof=good)
    ).depth == 1
    kwargs = {"issuer": issuer, **proof_kwargs}
    request.proof = exchange_proof(key, bound, **kwargs)
    code, details = _refusal(service, request)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith(f"proof_mismatch: {reason}")


def test_exchange_proof_by_another_key_is_refused(
    service: Server, client: remit.Client, bound: str
) -> None:
    thief = AgentKey.generate()
    request = remit_pb2.ExchangeRequest(
        token=bound, proof=exchange_proof(thief, bound, issuer=client.issuer())
    )
    code, details = _refusal(service, request)
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith("proof_key_mismatch")


def test_exchange_replayed_proof_is_refused(
    service: Server, client: remit.Client, bound: str, key: AgentKey,
    redis_client: redis.Redis, redis_prefix: str,
) -> None:
    request = remit_pb2.ExchangeRequest(
        token=bound, proof=exchange_proof(key, bound, issuer=client.issuer())
    )
    assert _stub_exchange(service, request).depth == 1
    before = count_keys(redis_client, redis_prefix)
    code, details = _refusal(service, request)
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith("replayed")
    assert count_keys(redis_client, redis_prefix) == before  # no second token recorded
