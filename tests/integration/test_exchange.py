"""Exchange over real gRPC and real Redis: renewal, sub-agent tokens, lineage revocation.

Every exchanged token is checked by a strict-revocation ``remit.Verifier`` on the same
Redis prefix with a proof by the key it is bound to, so "exchanged" means "a backend
accepts exactly this", and "revoked" means "a backend refuses it now".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import remit
from remit.agent import AgentKey, exchange_proof, proof
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import KeyStore, Server, dev_config

from ..redis_server import PrivateRedis
from .conftest import API_KEY

PAY = {
    "action": "payments.transfer",
    "args": {"amount": {"le": 100}, "to": {"in": ["DE89", "FR76"]}},
}
CALL = {"amount": 50, "to": "DE89"}


def claims(token: str) -> dict[str, Any]:
    return remit.peek_unverified(token)[1]


def check(v: remit.Verifier, key: AgentKey, token: str, args: dict[str, Any] = CALL) -> Any:
    p = proof(key, token, audience=v.audience, action="payments.transfer", args=args)
    return v.check(token, action="payments.transfer", args=args, proof=p)


def denied(v: remit.Verifier, key: AgentKey, token: str, args: dict[str, Any] = CALL) -> str:
    with pytest.raises(remit.Denied) as exc:
        check(v, key, token, args)
    return exc.value.code.value


@pytest.fixture
def agent_key() -> AgentKey:
    return AgentKey.generate()


@pytest.fixture
def parent(client: remit.Client, agent_key: AgentKey) -> tuple[remit.Grant, str]:
    grant = client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments", "email"],
        capabilities=[PAY], purpose="rent", ttl=3600,
    )
    return grant, client.mint(grant.id, ttl=600, cnf_jkt=agent_key.thumbprint)


@pytest.fixture
def agent(service: Server) -> Iterator[remit.Client]:
    """The agent's own client: no API key at all."""
    with remit.Client(service.grpc_target) as c:
        yield c


def test_renewal_keeps_actor_and_key_and_records_the_parent(
    agent: remit.Client, parent: tuple[remit.Grant, str], agent_key: AgentKey,
    make_verifier: Any, client: remit.Client,
) -> None:
    grant, token = parent
    child = agent.exchange(token, agent_key, ttl=1200)
    p, c = claims(token), claims(child.token)
    assert c["anc"] == [p["jti"]] and child.depth == 1 and c["jti"] == child.jti
    assert c["act"] == p["act"] and c["cnf"] == p["cnf"] and c["sub"] == p["sub"]
    assert c["authorization_details"] == p["authorization_details"]
    assert c["gid"] == grant.id and c["aud"] == p["aud"]
    # A renewal may outlive its parent (within the grant and the policy).
    assert c["exp"] > p["exp"] and c["exp"] <= grant.expires_at
    v = make_verifier(client)
    assert check(v, agent_key, child.token).allowed


def test_sub_agent_token_is_narrower_bound_to_its_own_key(
    agent: remit.Client, parent: tuple[remit.Grant, str], agent_key: AgentKey,
    make_verifier: Any, client: remit.Client,
) -> None:
    _, token = parent
    sub_key = AgentKey.generate()
    narrow = {"action": "payments.transfer", "args": {"amount": {"le": 20}, "to": {"eq": "DE89"}}}
    child = agent.exchange(
        token, agent_key, capabilities=[narrow], audience=["payments"], actor="agent:sub",
        cnf_jkt=sub_key.thumbprint,
    )
    c = claims(child.token)
    assert c["act"] == {"sub": "agent:sub"} and c["cnf"] == {"jkt": sub_key.thumbprint}
    assert c["aud"] == ["payments"] and c["exp"] <= claims(token)["exp"]
    v = make_verifier(client)
    small = {"amount": 20, "to": "DE89"}
    assert check(v, sub_key, child.token, small).allowed
    assert denied(v, sub_key, child.token, {"amount": 21, "to": "DE89"}) == "argument_denied"
    assert denied(v, sub_key, child.token, {"amount": 5, "to": "FR76"}) == "argument_denied"
    # The parent's key does not hold the child.
    assert denied(v, agent_key, child.token, small) == "proof_key_mismatch"


@pytest.mark.parametrize("target", ["parent", "grant", "grandparent"])
def test_revoking_any_ancestor_or_the_grant_kills_the_child(
    target: str, agent: remit.Client, parent: tuple[remit.Grant, str], agent_key: AgentKey,
    make_verifier: Any, client: remit.Client,
) -> None:
    grant, root = parent
    middle = agent.exchange(root, agent_key)
    sub_key = AgentKey.generate()
    leaf = agent.exchange(middle.token, agent_key, actor="agent:sub", cnf_jkt=sub_key.thumbprint)
    assert claims(leaf.token)["anc"] == [claims(root)["jti"], middle.jti]
    v = make_verifier(client)
    assert check(v, sub_key, leaf.token).allowed
    if target == "grant":
        client.revoke(grant_id=grant.id)
    elif target == "parent":
        client.revoke(jti=middle.jti)
    else:
        client.revoke(jti=claims(root)["jti"])
    assert denied(v, sub_key, leaf.token) == "revoked"
    # ... and a revoked lineage cannot be exchanged any further.
    with pytest.raises(remit.Unauthenticated, match="revoked"):
        agent.exchange(leaf.token, sub_key)


def test_child_carries_every_parent_budget_and_its_own(
    agent: remit.Client, client: remit.Client, agent_key: AgentKey
) -> None:
    grant = client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"],
        capabilities=[{**PAY, "limits": {"uses": 3}}],
    )
    token = client.mint(grant.id, cnf_jkt=agent_key.thumbprint)
    parent_budgets = claims(token)["authorization_details"][0]["limits"]
    assert [b["id"] for b in parent_budgets] == ["g0"]
    sub_key = AgentKey.generate()
    narrow = {
        "action": "payments.transfer",
        "args": {"amount": {"le": 10}, "to": {"eq": "DE89"}},
        "limits": {"uses": 1},
    }
    child = agent.exchange(
        token, agent_key, capabilities=[narrow], actor="agent:sub", cnf_jkt=sub_key.thumbprint
    )
    budgets = claims(child.token)["authorization_details"][0]["limits"]
    assert budgets[0] == parent_budgets[0]  # unchanged: spending counts against the grant
    assert budgets[1]["id"] == f"{child.jti}.0" and budgets[1]["uses"] == 1
    assert budgets[1]["exp"] == grant.expires_at


def test_exchange_proof_helper_builds_what_the_service_checks(
    service: Server, parent: tuple[remit.Grant, str], agent_key: AgentKey
) -> None:
    _, token = parent
    fields: dict[str, Any] = {"ttl_seconds": 60, "audience": ["payments"]}
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = remit_pb2_grpc.RemitStub(channel)
        issuer = stub.GetKeys(remit_pb2.GetKeysRequest()).issuer
        resp = stub.Exchange(
            remit_pb2.ExchangeRequest(
                token=token, proof=exchange_proof(agent_key, token, issuer=issuer, **fields),
                ttl_seconds=60, audience=["payments"],
            ),
            timeout=10,
        )
    assert claims(resp.token)["aud"] == ["payments"] and resp.depth == 1


# -- bad input ---------------------------------------------------------------------------


def _raw_exchange(service: Server, request: remit_pb2.ExchangeRequest) -> grpc.RpcError:
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = remit_pb2_grpc.RemitStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Exchange(request, timeout=10)
    return err.value


def _field(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get("remit-field")


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"token": ""}, "token"),
        ({"proof": ""}, "proof"),
        ({"cnf_jkt": "short"}, "cnf_jkt"),
        ({"actor": "a\x07b"}, "actor"),
        ({"ttl_seconds": -1}, "ttl_seconds"),
        ({"audience": ["bad aud"]}, "audience"),
        (
            {"capabilities": [remit_pb2.Capability(action="x", args_json="{")]},
            "capabilities[0].args_json",
        ),
        (
            {"capabilities": [remit_pb2.Capability(action="x", limits_json="[")]},
            "capabilities[0].limits_json",
        ),
    ],
)
def test_malformed_exchange_fields_are_invalid_argument_naming_the_field(
    service: Server, parent: tuple[remit.Grant, str], request_fields: dict[str, Any], field: str
) -> None:
    _, token = parent
    base: dict[str, Any] = {"token": token, "proof": "x.y.z"}
    base.update(request_fields)
    err = _raw_exchange(service, remit_pb2.ExchangeRequest(**base))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(err) == field


def test_malformed_child_capability_names_its_path(
    agent: remit.Client, parent: tuple[remit.Grant, str], agent_key: AgentKey
) -> None:
    _, token = parent
    bad = {"action": "payments.transfer", "args": {"amount": {"le": "ten"}}}
    with pytest.raises(remit.InvalidArgument) as exc:
        agent.exchange(token, agent_key, capabilities=[bad])
    assert exc.value.field == "capabilities[0].args.amount.le"


# -- Redis down ----------------------------------------------------------------------------


@pytest.fixture
def down_service(
    tmp_path: Path, private_redis: PrivateRedis, stop_in_background: Callable[[Server], None]
) -> Iterator[Server]:
    cfg = dev_config(data_dir=tmp_path, redis=private_redis.url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix="remit-xdown:")
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


def test_exchange_with_redis_down_is_unavailable(
    down_service: Server, private_redis: PrivateRedis, agent_key: AgentKey
) -> None:
    with remit.Client(down_service.grpc_target, api_key=API_KEY, retry=None) as app:
        grant = app.create_grant(subject="u", agent="a", audience=["payments"],
                                 capabilities=[PAY])
        token = app.mint(grant.id, cnf_jkt=agent_key.thumbprint)
        app.issuer()  # remembered: GetKeys needs no Redis anyway
        private_redis.kill()
        with pytest.raises(remit.Unavailable, match="Redis"):
            app.exchange(token, agent_key)


def test_cli_exchange_prints_a_sub_agent_token(
    service: Server, parent: tuple[remit.Grant, str], agent_key: AgentKey, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from remit_service.cli import main as cli_main

    _, token = parent
    key_file = tmp_path / "agent.json"
    agent_key.save(key_file)
    sub = AgentKey.generate()
    base = ["--target", service.grpc_target, "--key", str(key_file)]
    assert cli_main(["exchange", token, *base, "--actor", "agent:sub",
                     "--cnf-jkt", sub.thumbprint, "--audience", "payments"]) == 0
    child = capsys.readouterr().out.strip()
    assert claims(child)["act"] == {"sub": "agent:sub"} and claims(child)["aud"] == ["payments"]
    assert cli_main(["exchange", token, "--target", service.grpc_target,
                     "--key", str(tmp_path / "missing.json")]) == 2


def test_a_sub_agents_spending_counts_against_the_grants_budget(
    agent: remit.Client, client: remit.Client, agent_key: AgentKey, make_verifier: Any
) -> None:
    grant = client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"],
        capabilities=[{**PAY, "limits": {"uses": 2}}],
    )
    token = client.mint(grant.id, cnf_jkt=agent_key.thumbprint)
    sub_key = AgentKey.generate()
    child = agent.exchange(token, agent_key, actor="agent:sub", cnf_jkt=sub_key.thumbprint)
    v = make_verifier(client)
    assert check(v, sub_key, child.token).allowed  # 1st use: the sub-agent
    assert check(v, agent_key, token).allowed  # 2nd use: the parent
    assert denied(v, sub_key, child.token) == "limit_exceeded"
    assert denied(v, agent_key, token) == "limit_exceeded"
    # A renewal does not reset the budget either.
    renewed = agent.exchange(token, agent_key)
    assert denied(v, agent_key, renewed.token) == "limit_exceeded"


def test_exchange_is_recorded_in_the_audit_trail(
    agent: remit.Client, parent: tuple[remit.Grant, str], agent_key: AgentKey,
    redis_client: Any, redis_prefix: str,
) -> None:
    """token.exchanged names the child, its parent, its actor and its (narrower) scope."""
    from remit_service._audit_read import parse_entry

    grant, token = parent
    sub_key = AgentKey.generate()
    narrow = {"action": "payments.transfer", "args": {"amount": {"le": 20}, "to": {"eq": "DE89"}}}
    child = agent.exchange(
        token, agent_key, capabilities=[narrow], actor="agent:sub", cnf_jkt=sub_key.thumbprint
    )
    entries = [parse_entry(i, f) for i, f in redis_client.xrange(f"{redis_prefix}audit")]
    events = [e.event for e in entries if not isinstance(e, str)]
    assert len(events) == len(entries)  # every entry is well-formed v1
    exchanged = [e for e in events if e["type"] == "token.exchanged"]
    c = claims(child.token)
    assert exchanged == [{
        "type": "token.exchanged", "ts": exchanged[0]["ts"], "gid": grant.id, "jti": child.jti,
        "app": grant.app, "agent": "agent:sub", "sub": "user:alice", "exp": c["exp"],
        "capabilities": c["authorization_details"], "anc": c["anc"],
        "parent": claims(token)["jti"],
    }]


def test_a_revoked_tokens_renewal_stays_dead_after_the_token_expires(
    agent: remit.Client, parent: tuple[remit.Grant, str], agent_key: AgentKey,
    make_verifier: Any, client: remit.Client, redis_client: Any, redis_prefix: str,
) -> None:
    """A renewal may outlive its parent; revoking the parent must outlive the renewal
    too, or the renewal comes back to life once the parent's entry expires."""
    from remit._redis_keys import RedisKeys
    from remit._revfeed import FIELD

    _, token = parent
    renewal = agent.exchange(token, agent_key, ttl=3000)
    assert renewal.expires_at > claims(token)["exp"]
    client.revoke(jti=claims(token)["jti"])
    for mode in ("stream", "strict"):
        v = make_verifier(client, revocation=mode)
        assert v.wait_revocations_ready(10)
        assert denied(v, agent_key, renewal.token) == "revoked"
    keys = RedisKeys(redis_prefix)
    (entry,) = [f[FIELD].decode().split() for _, f in redis_client.xrange(keys.revocation_stream())]
    assert int(entry[3]) >= renewal.expires_at  # the stream entry outlives the renewal
    ttl = redis_client.ttl(keys.token_revoked(claims(token)["gid"], claims(token)["jti"]))
    assert ttl >= renewal.expires_at - int(claims(renewal.token)["iat"])  # so does the key
