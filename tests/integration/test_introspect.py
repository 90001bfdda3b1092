"""Introspect: the service runs the real verifier for a backend that asks online."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import remit
from remit._client import Introspection
from remit.agent import AgentKey, proof
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import KeyStore, Server, dev_config

from ..redis_server import PrivateRedis
from .conftest import API_KEY, AUTH

PAY = {
    "action": "payments.transfer",
    "args": {"amount": {"le": 100}, "to": {"in": ["DE89", "FR76"]}},
}
CALL = {"amount": 50, "to": "DE89"}


def _grant(client: remit.Client, **extra: Any) -> remit.Grant:
    caps = [{**PAY, **extra}]
    return client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"],
        capabilities=caps, purpose="rent", ttl=3600,
    )


def _ask(
    client: remit.Client, key: AgentKey | None, token: str, *,
    audience: str = "payments", action: str = "payments.transfer",
    args: dict[str, Any] = CALL,
) -> Introspection:
    p = proof(key, token, audience=audience, action=action, args=args) if key else None
    return client.introspect(token, audience=audience, action=action, args=args, proof=p)


def test_allowed_call_returns_the_tokens_facts_and_spends_the_proof(
    client: remit.Client,
) -> None:
    key = AgentKey.generate()
    grant = _grant(client)
    token = client.mint(grant.id, ttl=300, cnf_jkt=key.thumbprint)
    p = proof(key, token, audience="payments", action="payments.transfer", args=CALL)
    found = client.introspect(
        token, audience="payments", action="payments.transfer", args=CALL, proof=p
    )
    claims = remit.peek_unverified(token)[1]
    assert found.allowed and found.code == ""
    assert (found.grant_id, found.jti, found.subject, found.agent) == (
        grant.id, claims["jti"], "user:alice", "agent:a"
    )
    assert found.expires_at == claims["exp"] and found.anc == () and found.capability == 0
    again = client.introspect(
        token, audience="payments", action="payments.transfer", args=CALL, proof=p
    )
    assert (again.allowed, again.code) == (False, "replayed")
    assert again.grant_id == again.jti == again.subject == ""


def test_denials_match_the_offline_verifier_code_for_code(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    key = AgentKey.generate()
    grant = _grant(client)
    token = client.mint(grant.id, ttl=300, cnf_jkt=key.thumbprint)
    offline = make_verifier(client, "payments")
    cases: list[tuple[str, dict[str, Any], bool]] = [
        ("payments.transfer", {"amount": 500, "to": "DE89"}, True),  # argument_denied
        ("payments.transfer", {"amount": 5, "to": "DE89", "x": 1}, True),  # unexpected
        ("payments.refund", {}, True),  # action_not_granted
        ("payments.transfer", CALL, False),  # proof_required
    ]
    for action, args, with_proof in cases:
        online = _ask(client, key if with_proof else None, token, action=action, args=args)
        p = proof(key, token, audience="payments", action=action, args=args)
        with pytest.raises(remit.Denied) as denied:
            offline.check(token, action=action, args=args, proof=p if with_proof else None)
        assert not online.allowed
        assert online.code == denied.value.code.value, (action, args)
    other = _ask(client, key, token, audience="email")
    assert (other.allowed, other.code) == (False, "wrong_audience")
    client.revoke(grant_id=grant.id)
    assert _ask(client, key, token).code == "revoked"


def test_budgets_are_charged_like_at_the_backend(client: remit.Client) -> None:
    grant = _grant(client, limits={"uses": 1})
    token = client.mint(grant.id, ttl=300)  # a bearer token: no proof to spend
    assert _ask(client, None, token).allowed
    assert _ask(client, None, token).code == "limit_exceeded"


def test_exchanged_token_reports_its_ancestors(service: Server, client: remit.Client) -> None:
    key, sub_key = AgentKey.generate(), AgentKey.generate()
    grant = _grant(client)
    parent = client.mint(grant.id, ttl=300, cnf_jkt=key.thumbprint)
    with remit.Client(service.grpc_target) as agent:
        child = agent.exchange(parent, key, actor="agent:sub", cnf_jkt=sub_key.thumbprint)
    found = _ask(client, sub_key, child.token)
    assert found.allowed and found.agent == "agent:sub"
    assert found.anc == (remit.peek_unverified(parent)[1]["jti"],)


def test_tokens_of_a_rotated_key_verify_without_a_restart(
    service: Server, client: remit.Client
) -> None:
    grant = _grant(client)
    assert _ask(client, None, client.mint(grant.id)).allowed  # verifier built, old keys
    service.keystore.generate()  # active at once: the next token is signed by it
    service.keystore.current(recheck=0)
    token = client.mint(grant.id)
    assert remit.peek_unverified(token)[0]["kid"] == service.keystore.signing_key().kid
    assert _ask(client, None, token).allowed


def test_every_introspection_is_in_the_audit_trail(
    client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    grant = _grant(client)
    token = client.mint(grant.id)
    _ask(client, None, token)
    _ask(client, None, token, args={"amount": 900, "to": "DE89"})
    events = [json.loads(f[b"ev"]) for _, f in redis_client.xrange(f"{redis_prefix}audit")]
    decisions = [e for e in events if e.get("aud") == "payments"]
    assert [(e["code"], e["action"]) for e in decisions] == [
        ("ok", "payments.transfer"), ("argument_denied", "payments.transfer")
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"token": ""}, "token"),
        ({"audience": ""}, "audience"),
        ({"audience": "bad aud"}, "audience"),
        ({"action": ""}, "action"),
        ({"action": "pay ments"}, "action"),
        ({"args_json": "{"}, "args_json"),
        ({"args_json": "[1]"}, "args_json"),
        ({"args_json": '{"a": 1, "a": 2}'}, "args_json"),
    ],
)
def test_malformed_requests_are_invalid_argument_naming_the_field(
    stub: remit_pb2_grpc.RemitStub, fields: dict[str, str], field: str
) -> None:
    base = {"token": "x.y.z", "audience": "payments", "action": "payments.transfer"}
    with pytest.raises(grpc.RpcError) as err:
        stub.Introspect(remit_pb2.IntrospectRequest(**{**base, **fields}), metadata=AUTH,
                        timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ()).get("remit-field") == field


def test_garbage_token_is_a_denial_not_an_error(client: remit.Client) -> None:
    found = _ask(client, None, "not-a-token")
    assert (found.allowed, found.code) == (False, "malformed")


def test_introspect_needs_an_app_credential(service: Server) -> None:
    with remit.Client(service.grpc_target) as anonymous, pytest.raises(remit.Unauthenticated):
        _ask(anonymous, None, "x.y.z")


def test_cli_introspect_exit_codes(
    service: Server, client: remit.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    from remit_service.cli import main as cli_main

    token = client.mint(_grant(client).id)
    base = ["introspect", "--target", service.grpc_target, "--api-key", API_KEY, token,
            "--audience", "payments", "--action", "payments.transfer"]
    assert cli_main([*base, "--args", json.dumps(CALL)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["allowed"] and out["decision"]["agent"] == "agent:a"
    assert cli_main([*base, "--args", '{"amount": 101, "to": "DE89"}']) == 3
    assert json.loads(capsys.readouterr().out)["code"] == "argument_denied"


@pytest.fixture
def down_service(
    tmp_path: Path, private_redis: PrivateRedis, stop_in_background: Callable[[Server], None]
) -> Iterator[Server]:
    cfg = dev_config(data_dir=tmp_path, redis=private_redis.url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix="remit-idown:")
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


def test_redis_down_is_a_fail_closed_denial(
    down_service: Server, private_redis: PrivateRedis
) -> None:
    with remit.Client(down_service.grpc_target, api_key=API_KEY, retry=None) as app:
        token = app.mint(_grant(app).id)
        assert _ask(app, None, token).allowed
        private_redis.kill()
        found = _ask(app, None, token)
    assert (found.allowed, found.code) == (False, "revocation_unavailable")
