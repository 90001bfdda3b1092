"""End to end over real gRPC and real Redis: grant -> list -> mint -> verify -> revoke.

Every token is checked by a real ``remit.Verifier`` built from the service's JWKS with
strict revocation on the same Redis prefix, so "minted" always means "a backend accepts
exactly this", and "revoked" means "a backend refuses it now".
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest
import redis
import remit
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import Server

from .conftest import AUTH, BANK_KEY, count_keys, http_get

PAY = {"action": "payments.transfer", "args": {"amount": {"le": 100}, "to": {"eq": "DE89"}}}
MAILCAP = {"action": "email.send", "args": {"to": {"glob": "*@example.com"}}}
PAY_ARGS = {"amount": 50, "to": "DE89"}
MAIL_ARGS = {"to": "bob@example.com"}


def _grant(c: remit.Client, **overrides: Any) -> remit.Grant:
    kwargs: dict[str, Any] = {
        "subject": "user:alice",
        "agent": "agent:a",
        "audience": ["payments", "email"],
        "capabilities": [PAY, MAILCAP],
        "purpose": "pay rent and tell the landlord",
        "ttl": 3600,
    }
    kwargs.update(overrides)
    return c.create_grant(**kwargs)


def _claims(token: str) -> dict[str, Any]:
    return remit.peek_unverified(token)[1]


def _denied(v: remit.Verifier, token: str, action: str, args: dict[str, Any]) -> remit.Code:
    with pytest.raises(remit.Denied) as exc:
        v.check(token, action=action, args=args)
    return exc.value.code


# -- grants ----------------------------------------------------------------------------


def test_create_then_get_grant_round_trips(client: remit.Client) -> None:
    before = int(time.time())
    g = _grant(client)
    after = int(time.time())
    assert g.id.startswith("g_")
    assert g.app == "dev"
    assert (g.subject, g.agent) == ("user:alice", "agent:a")
    assert g.audience == ["payments", "email"]
    assert g.capabilities == [PAY, MAILCAP]
    assert g.purpose == "pay rent and tell the landlord"
    assert before <= g.created_at <= after
    assert g.expires_at == g.created_at + 3600
    assert g.revoked is False
    assert client.get_grant(g.id) == g


def test_grant_ttl_defaults_to_one_hour(client: remit.Client) -> None:
    g = _grant(client, ttl=0)
    assert g.expires_at - g.created_at == 3600


def test_grant_is_written_to_redis_under_the_prefix(
    client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    g = _grant(client)
    assert redis_client.exists(f"{redis_prefix}grant:{{{g.id}}}") == 1
    ttl = redis_client.ttl(f"{redis_prefix}grant:{{{g.id}}}")
    assert 3600 < ttl <= 3600 + 60  # kept until expiry + revocation margin


def test_purpose_of_up_to_1024_characters_is_accepted(client: remit.Client) -> None:
    long = "p" * 1024
    g = _grant(client, purpose=long)
    assert client.get_grant(g.id).purpose == long
    assert _claims(client.mint(g.id))["purpose"] == long


def test_get_unknown_grant_is_not_found(client: remit.Client) -> None:
    with pytest.raises(remit.NotFound):
        client.get_grant("g_" + "A" * 22)


def _newest_first(grants: list[remit.Grant]) -> list[str]:
    """The ids, after checking the order (creation times are whole seconds, so grants made
    in the same second may come in any order among themselves)."""
    times = [g.created_at for g in grants]
    assert times == sorted(times, reverse=True), "not newest first"
    return [g.id for g in grants]


def test_list_grants_filters_by_subject_and_agent(client: remit.Client) -> None:
    a1 = _grant(client, subject="user:alice", agent="agent:1")
    a2 = _grant(client, subject="user:alice", agent="agent:2")
    b1 = _grant(client, subject="user:bob", agent="agent:1")

    def ids(**kw: Any) -> set[str]:
        found = _newest_first(list(client.list_grants(**kw)))
        assert len(found) == len(set(found)), "a grant listed twice"
        return set(found)

    assert ids() == {a1.id, a2.id, b1.id}
    assert ids(subject="user:alice") == {a1.id, a2.id}
    assert ids(subject="user:bob") == {b1.id}
    assert ids(agent="agent:1") == {a1.id, b1.id}
    assert ids(subject="user:alice", agent="agent:1") == {a1.id}
    assert ids(subject="user:nobody") == set()


def test_list_grants_hides_revoked_unless_include_inactive(client: remit.Client) -> None:
    keep = _grant(client)
    gone = _grant(client)
    client.revoke(grant_id=gone.id)
    assert [g.id for g in client.list_grants()] == [keep.id]
    listed = {g.id: g for g in client.list_grants(include_inactive=True)}
    assert set(listed) == {keep.id, gone.id}
    assert listed[gone.id].revoked is True
    assert listed[keep.id].revoked is False


def _pages(
    stub: remit_pb2_grpc.RemitStub, page_size: int, **filters: Any
) -> list[list[remit_pb2.Grant]]:
    pages: list[list[remit_pb2.Grant]] = []
    token = ""
    for _ in range(50):
        resp = stub.ListGrants(
            remit_pb2.ListGrantsRequest(page_size=page_size, page_token=token, **filters),
            metadata=AUTH,
        )
        assert len(resp.grants) <= page_size
        pages.append(list(resp.grants))
        token = resp.next_page_token
        if not token:
            return pages
    raise AssertionError("pagination did not end")


def test_list_grants_paginates_page_size_2_over_5(
    client: remit.Client, stub: remit_pb2_grpc.RemitStub
) -> None:
    made = {_grant(client, subject=f"user:{i}").id for i in range(5)}
    pages = _pages(stub, 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [g.id for p in pages for g in p]
    assert len(listed) == 5 and set(listed) == made  # every grant exactly once
    times = [g.created_at for p in pages for g in p]
    assert times == sorted(times, reverse=True)
    # The client follows the pages itself.
    assert _newest_first(list(client.list_grants(page_size=2))) == listed


def test_list_grants_pages_never_exceed_page_size_with_a_filter(
    client: remit.Client,
    stub: remit_pb2_grpc.RemitStub,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    subjects = ["user:alice", "user:bob", "user:alice", "user:alice", "user:alice"]
    made = [_grant(client, subject=s).id for s in subjects]
    # Grants made within one second tie on their index score; give them distinct
    # creation scores so the order is exactly `subjects`, newest first. Then the first
    # page's scan of 2 ids finds 1 match and must not take 2 more from the next batch.
    redis_client.zadd(
        f"{redis_prefix}app:dev:grants", {gid: 1000 - i for i, gid in enumerate(made)}
    )
    alice = [gid for gid, s in zip(made, subjects, strict=True) if s == "user:alice"]
    pages = _pages(stub, 2, subject="user:alice")  # asserts len(page) <= 2
    # (A full last page may be followed by one empty page: the cursor cannot tell.)
    assert [[g.id for g in p] for p in pages if p] == [alice[:2], alice[2:]]


def test_list_grants_skips_nothing_when_a_record_has_expired(
    client: remit.Client,
    stub: remit_pb2_grpc.RemitStub,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    made = {_grant(client, subject=f"user:{i}").id for i in range(6)}
    first = _pages(stub, 6)[0]
    # The record of the second-newest grant expires (Redis TTL), its index entry stays.
    expired = first[1].id
    assert redis_client.delete(f"{redis_prefix}grant:{{{expired}}}") == 1
    listed = [g.id for p in _pages(stub, 2) for g in p]
    assert len(listed) == len(set(listed))
    assert set(listed) == made - {expired}
    # The stale index entry was cleaned up on the way.
    assert redis_client.zscore(f"{redis_prefix}app:dev:grants", expired) is None


# -- minting ---------------------------------------------------------------------------


def test_mint_whole_grant_verifies(client: remit.Client, make_verifier: Any) -> None:
    g = _grant(client)
    token = client.mint(g.id)
    header, claims = remit.peek_unverified(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "remit+jwt"
    assert header["kid"] in {k["kid"] for k in client.jwks()["keys"]}
    assert claims["iss"] == client.issuer() == "remit-dev"
    assert claims["sub"] == "user:alice"
    assert claims["act"] == {"sub": "agent:a"}
    assert claims["aud"] == ["payments", "email"]
    assert claims["gid"] == g.id
    assert claims["anc"] == []
    assert claims["purpose"] == g.purpose
    assert "cnf" not in claims
    assert [(d["type"], d["action"], d["args"]) for d in claims["authorization_details"]] == [
        ("remit.capability", PAY["action"], PAY["args"]),
        ("remit.capability", MAILCAP["action"], MAILCAP["args"]),
    ]
    pay = make_verifier(client, "payments")
    decision = pay.check(token, action="payments.transfer", args=PAY_ARGS)
    assert decision.allowed
    assert (decision.grant_id, decision.token_id) == (g.id, claims["jti"])
    assert (decision.subject, decision.agent) == ("user:alice", "agent:a")
    over = {"amount": 101, "to": "DE89"}
    assert _denied(pay, token, "payments.transfer", over) == "argument_denied"
    assert make_verifier(client, "email").check(token, action="email.send", args=MAIL_ARGS).allowed


def test_mint_subset_of_capabilities(client: remit.Client, make_verifier: Any) -> None:
    g = _grant(client)
    token = client.mint(g.id, [MAILCAP])
    assert [d["action"] for d in _claims(token)["authorization_details"]] == ["email.send"]
    v = make_verifier(client, "email")
    assert v.check(token, action="email.send", args=MAIL_ARGS).allowed
    assert _denied(v, token, "payments.transfer", PAY_ARGS) == "action_not_granted"


def test_mint_with_narrower_args_is_accepted_and_enforced(
    client: remit.Client, make_verifier: Any
) -> None:
    g = _grant(client)
    narrow = {"action": "payments.transfer", "args": {"amount": {"le": 20}, "to": {"eq": "DE89"}}}
    token = client.mint(g.id, [narrow])
    assert _claims(token)["authorization_details"][0]["args"] == narrow["args"]
    v = make_verifier(client)
    assert v.check(token, action="payments.transfer", args={"amount": 20, "to": "DE89"}).allowed
    # Within the grant but beyond the narrowed token.
    assert _denied(v, token, "payments.transfer", {"amount": 21, "to": "DE89"}) == "argument_denied"


@pytest.mark.parametrize(
    "cap",
    [
        {"action": "payments.transfer", "args": {"amount": {"le": 1000}, "to": {"eq": "DE89"}}},
        {"action": "payments.transfer", "args": {"amount": {"le": 100}, "to": {"any": True}}},
        {"action": "payments.transfer", "args": {"amount": {"le": 100}}},  # `to` unconstrained
        {"action": "payments.transfer",
         "args": {"amount": {"le": 100}, "to": {"eq": "DE89"}, "memo": {"any": True}}},
        {"action": "payments.transfer",
         "args": {"amount": {"le": 100, "optional": True}, "to": {"eq": "DE89"}}},
    ],
    ids=["wider-bound", "any-recipient", "drops-constraint", "extra-arg", "optional"],
)
def test_mint_with_wider_args_is_permission_denied(
    client: remit.Client, cap: dict[str, Any]
) -> None:
    g = _grant(client)
    with pytest.raises(remit.PermissionDenied, match=r"capabilities\[0\]"):
        client.mint(g.id, [cap])


@pytest.mark.parametrize("action", ["files.delete", "payments.refund", "payments.*", "email.*"])
def test_mint_action_not_in_grant_is_permission_denied(client: remit.Client, action: str) -> None:
    g = _grant(client)
    with pytest.raises(remit.PermissionDenied):
        client.mint(g.id, [{"action": action, "args": {"*": {"any": True}}}])


def test_mint_refusals_write_nothing(
    client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    g = _grant(client)
    before = count_keys(redis_client, redis_prefix)
    with pytest.raises(remit.PermissionDenied):
        client.mint(g.id, [{"action": "files.delete", "args": {}}])
    with pytest.raises(remit.PermissionDenied):
        client.mint(g.id, audience=["files"])
    with pytest.raises(remit.PermissionDenied):
        client.mint(g.id, ttl=10_000)
    assert count_keys(redis_client, redis_prefix) == before
    client.mint(g.id)
    assert count_keys(redis_client, redis_prefix) == before + 1  # the jti -> grant record


def test_mint_audience_subset(client: remit.Client, make_verifier: Any) -> None:
    g = _grant(client)
    token = client.mint(g.id, audience=["email"])
    assert _claims(token)["aud"] == ["email"]
    assert make_verifier(client, "email").check(token, action="email.send", args=MAIL_ARGS)
    assert _denied(make_verifier(client, "payments"), token, "payments.transfer",
                   PAY_ARGS) == "wrong_audience"


def test_mint_audience_beyond_grant_is_permission_denied(client: remit.Client) -> None:
    g = _grant(client)
    with pytest.raises(remit.PermissionDenied, match="files"):
        client.mint(g.id, audience=["payments", "files"])


def test_mint_ttl_defaults_to_300_and_honours_a_shorter_one(client: remit.Client) -> None:
    g = _grant(client)
    c = _claims(client.mint(g.id))
    assert c["exp"] - c["iat"] == 300
    assert c["nbf"] == c["iat"]
    c = _claims(client.mint(g.id, ttl=42))
    assert c["exp"] - c["iat"] == 42


def test_mint_ttl_at_service_maximum_ok_above_denied(client: remit.Client) -> None:
    g = _grant(client, ttl=7200)
    c = _claims(client.mint(g.id, ttl=3600))
    assert c["exp"] - c["iat"] == 3600
    with pytest.raises(remit.PermissionDenied, match="3600"):
        client.mint(g.id, ttl=3601)


def test_mint_exp_is_clamped_to_grant_expiry(
    client: remit.Client, stub: remit_pb2_grpc.RemitStub
) -> None:
    g = _grant(client, ttl=60)
    c = _claims(client.mint(g.id))  # default 300 s would outlive the grant
    assert c["exp"] == g.expires_at
    resp = stub.Mint(remit_pb2.MintRequest(grant_id=g.id, ttl_seconds=120), metadata=AUTH)
    assert resp.expires_at == g.expires_at == _claims(resp.token)["exp"]
    assert resp.jti == _claims(resp.token)["jti"]


def test_key_bound_token_carries_cnf(client: remit.Client, make_verifier: Any) -> None:
    g = _grant(client)
    jkt = remit.jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    token = client.mint(g.id, cnf_jkt=jkt)
    assert _claims(token)["cnf"] == {"jkt": jkt}
    # A bound token is useless without a proof of possession.
    assert _denied(make_verifier(client), token, "payments.transfer", PAY_ARGS) == "proof_required"


# -- revocation --------------------------------------------------------------------------


def test_revoke_by_jti_kills_only_that_token(client: remit.Client, make_verifier: Any) -> None:
    g = _grant(client)
    t1, t2 = client.mint(g.id), client.mint(g.id)
    v = make_verifier(client)
    assert v.check(t1, action="payments.transfer", args=PAY_ARGS).allowed  # cached now
    before = int(time.time())
    at = client.revoke(jti=_claims(t1)["jti"], reason="lost laptop")
    assert before <= at <= int(time.time())
    assert _denied(v, t1, "payments.transfer", PAY_ARGS) == "revoked"
    assert v.check(t2, action="payments.transfer", args=PAY_ARGS).allowed
    # The grant lives on: new tokens work.
    assert client.get_grant(g.id).revoked is False
    assert v.check(client.mint(g.id), action="payments.transfer", args=PAY_ARGS).allowed
    # Idempotent.
    client.revoke(jti=_claims(t1)["jti"])
    assert _denied(v, t1, "payments.transfer", PAY_ARGS) == "revoked"


def test_revoke_unknown_jti_is_not_found(client: remit.Client) -> None:
    with pytest.raises(remit.NotFound):
        client.revoke(jti="t_" + "B" * 22)


def test_revoke_by_grant_kills_every_token(
    client: remit.Client, make_verifier: Any, redis_client: redis.Redis, redis_prefix: str
) -> None:
    g = _grant(client)
    other = _grant(client)
    tokens = [client.mint(g.id), client.mint(g.id, [MAILCAP], audience=["email"])]
    bystander = client.mint(other.id)
    pay, mail = make_verifier(client, "payments"), make_verifier(client, "email")
    assert pay.check(tokens[0], action="payments.transfer", args=PAY_ARGS).allowed
    client.revoke(grant_id=g.id, reason="user withdrew consent")
    assert _denied(pay, tokens[0], "payments.transfer", PAY_ARGS) == "revoked"
    assert _denied(mail, tokens[1], "email.send", MAIL_ARGS) == "revoked"
    assert pay.check(bystander, action="payments.transfer", args=PAY_ARGS).allowed
    with pytest.raises(remit.FailedPrecondition, match="revoked"):
        client.mint(g.id)
    got = client.get_grant(g.id)
    assert got.revoked is True
    assert got.capabilities == g.capabilities  # the record survives, marked
    assert redis_client.exists(f"{redis_prefix}rev:{{{g.id}}}:grant") == 1
    # Idempotent: a second revoke succeeds and changes nothing.
    client.revoke(grant_id=g.id)
    assert client.get_grant(g.id) == got
    assert _denied(pay, tokens[0], "payments.transfer", PAY_ARGS) == "revoked"


def test_expired_grant_cannot_mint_and_is_inactive(
    client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    g = _grant(client)
    # Age the stored grant instead of waiting: its lifetime ended a second ago.
    key = f"{redis_prefix}grant:{{{g.id}}}"
    record = json.loads(redis_client.get(key))
    record["expires_at"] = int(time.time()) - 1
    assert redis_client.set(key, json.dumps(record), keepttl=True, xx=True)
    with pytest.raises(remit.FailedPrecondition, match="expired"):
        client.mint(g.id)
    assert g.id not in [x.id for x in client.list_grants()]
    assert g.id in [x.id for x in client.list_grants(include_inactive=True)]
    assert client.get_grant(g.id).revoked is False
    client.revoke(grant_id=g.id)  # still revocable (tokens may outlive it by the leeway)
    assert client.get_grant(g.id).revoked is True


# -- app isolation (two apps from a TOML policy) -----------------------------------------


def test_app_cannot_see_mint_or_revoke_another_apps_grant(
    bank: remit.Client, mail: remit.Client, make_verifier: Any
) -> None:
    g = bank.create_grant(subject="user:alice", agent="agent:a", audience=["payments"],
                          capabilities=[PAY], ttl=3600)
    assert g.app == "bank"
    token = bank.mint(g.id)
    with pytest.raises(remit.NotFound):
        mail.get_grant(g.id)
    with pytest.raises(remit.NotFound):
        mail.mint(g.id)
    with pytest.raises(remit.NotFound):
        mail.revoke(grant_id=g.id)
    with pytest.raises(remit.NotFound):
        mail.revoke(jti=_claims(token)["jti"])
    assert g.id not in [x.id for x in mail.list_grants(include_inactive=True)]
    assert [x.id for x in bank.list_grants()] == [g.id]
    # None of that touched the grant or its token.
    assert bank.get_grant(g.id).revoked is False
    assert make_verifier(bank).check(token, action="payments.transfer", args=PAY_ARGS).allowed


def test_app_policy_limits_actions_and_audiences(bank: remit.Client, mail: remit.Client) -> None:
    with pytest.raises(remit.PermissionDenied, match=r"payments\.transfer"):
        mail.create_grant(subject="u", agent="a", audience=["email"], capabilities=[PAY])
    with pytest.raises(remit.PermissionDenied, match="payments"):
        mail.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[MAILCAP])
    with pytest.raises(remit.PermissionDenied):  # the app may grant one action, not the family
        bank.create_grant(subject="u", agent="a", audience=["payments"],
                          capabilities=[{"action": "payments.*", "args": {}}])
    with pytest.raises(remit.PermissionDenied):
        bank.create_grant(subject="u", agent="a", audience=["email"], capabilities=[PAY])
    # What the policy allows goes through.
    g = mail.create_grant(subject="u", agent="a", audience=["email"],
                          capabilities=[{"action": "email.*", "args": {"*": {"any": True}}}])
    assert g.app == "mail"


def test_policy_grant_ttl_limit(bank: remit.Client) -> None:
    g = bank.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[PAY],
                          ttl=7200)
    assert g.expires_at - g.created_at == 7200
    with pytest.raises(remit.PermissionDenied, match="7200"):
        bank.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[PAY],
                          ttl=7201)


def test_policy_token_ttl_limits_name_the_limit(bank: remit.Client, mail: remit.Client) -> None:
    g = bank.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[PAY])
    c = _claims(bank.mint(g.id, ttl=300))
    assert c["exp"] - c["iat"] == 300
    # The action's maximum (300) is below the app's (600).
    with pytest.raises(remit.PermissionDenied, match=r"300s.*payments\.transfer"):
        bank.mint(g.id, ttl=301)
    with pytest.raises(remit.PermissionDenied, match="300s"):
        bank.mint(g.id, ttl=601)
    m = mail.create_grant(subject="u", agent="a", audience=["email"], capabilities=[MAILCAP])
    c = _claims(mail.mint(m.id))
    assert c["exp"] - c["iat"] == 300  # the service default
    c = _claims(mail.mint(m.id, ttl=900))
    assert c["exp"] - c["iat"] == 900  # the app default maximum
    with pytest.raises(remit.PermissionDenied, match=r"900s.*'mail'"):
        mail.mint(m.id, ttl=901)


def test_policy_service_rejects_keys_of_other_deployments(policy_service: Server) -> None:
    with remit.Client(policy_service.grpc_target, api_key="test-key") as c, \
            pytest.raises(remit.Unauthenticated):
        c.list_grants().__next__()
    with remit.Client(policy_service.grpc_target, api_key=BANK_KEY.upper()) as c, \
            pytest.raises(remit.Unauthenticated):
        c.get_grant("g_" + "A" * 22)


# -- keys, HTTP side, health ---------------------------------------------------------------


def test_jwks_over_http_equals_get_keys(service: Server, client: remit.Client) -> None:
    status, body, headers = http_get(service.http_url + "/.well-known/jwks.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert "max-age" in headers["Cache-Control"]
    assert body == client.jwks()
    assert len(body["keys"]) == 1
    jwk = body["keys"][0]
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert jwk["kid"] == remit.jwk_thumbprint(jwk["x"])
    assert jwk["kid"] == service.keystore.signing_key().kid


def test_get_keys_needs_no_credential(
    client: remit.Client, stub: remit_pb2_grpc.RemitStub
) -> None:
    resp = stub.GetKeys(remit_pb2.GetKeysRequest())  # no authorization metadata at all
    assert resp.issuer == "remit-dev"
    assert json.loads(resp.jwks_json) == client.jwks()


def test_verifier_from_jwks_url(service: Server, client: remit.Client, redis_url: str,
                                redis_prefix: str) -> None:
    g = _grant(client)
    with remit.Verifier.from_jwks(service.http_url + "/.well-known/jwks.json",
                                  issuer=client.issuer(), audience="payments",
                                  revocation="strict", redis=redis_url,
                                  prefix=redis_prefix) as v:
        assert v.check(client.mint(g.id), action="payments.transfer", args=PAY_ARGS).allowed


def test_healthz(service: Server) -> None:
    status, body, headers = http_get(service.http_url + "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["issuer"] == "remit-dev"
    assert body["redis"] == "ok"
    assert headers["Cache-Control"] == "no-store"


def test_unknown_http_path_is_404(service: Server) -> None:
    status, body, _ = http_get(service.http_url + "/admin")
    assert status == 404
    assert body == {"error": "not found"}
    assert http_get(service.http_url + "/.well-known/jwks.json.bak")[0] == 404


def test_grpc_health_reports_serving(service: Server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(service.grpc_target) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for name in ("", "remit.v1.Remit"):
            resp = h.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
