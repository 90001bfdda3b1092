"""Malformed requests over real gRPC: INVALID_ARGUMENT naming the field, nothing written.

Requests go through a raw ``RemitStub`` so that the service, not ``remit.Client``, is
what refuses them. Every refusal must carry the offending field in the ``remit-field``
trailing metadata, must never be INTERNAL, and must never leak Python internals.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import redis
import remit
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import Server

from .conftest import API_KEY, AUTH, count_keys

PAY_ARGS_JSON = '{"amount":{"le":100},"to":{"eq":"DE89"}}'
GOOD_CAP = remit_pb2.Capability(action="payments.transfer", args_json=PAY_ARGS_JSON)
NO_GRANT = "g_" + "A" * 22
LEAKS = re.compile(
    r"Traceback|File \"|line \d+|\b[A-Z]\w*(Error|Exception)\b|<class |0x[0-9a-f]{6,}"
)


def _field(err: grpc.RpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == "remit-field":
            return str(value)
    return None


def _refused(call: Callable[[], Any]) -> grpc.RpcError:
    """Run ``call``; it must fail with a clean status (never INTERNAL, no internals)."""
    with pytest.raises(grpc.RpcError) as exc:
        call()
    err = exc.value
    assert err.code() != grpc.StatusCode.INTERNAL, err.details()
    assert not LEAKS.search(err.details() or ""), err.details()
    return err


def _invalid(call: Callable[[], Any], field: str | tuple[str, ...]) -> grpc.RpcError:
    """``field``: the expected field, or the acceptable ones."""
    err = _refused(call)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    fields = (field,) if isinstance(field, str) else field
    assert _field(err) in fields, (err.details(), _field(err))
    return err


def _create(**overrides: Any) -> remit_pb2.CreateGrantRequest:
    fields: dict[str, Any] = {
        "subject": "user:alice",
        "agent": "agent:a",
        "audience": ["payments"],
        "capabilities": [GOOD_CAP],
        "purpose": "rent",
        "ttl_seconds": 3600,
    }
    fields.update(overrides)
    return remit_pb2.CreateGrantRequest(**fields)


def _cap(args_json: str, action: str = "payments.transfer") -> list[remit_pb2.Capability]:
    return [remit_pb2.Capability(action=action, args_json=args_json)]


CREATE_CASES: list[tuple[str, dict[str, Any], str | tuple[str, ...]]] = [
    ("empty-subject", {"subject": ""}, "subject"),
    ("subject-nul", {"subject": "user:\x00alice"}, "subject"),
    ("subject-newline", {"subject": "user:alice\nFAKE LOG LINE"}, "subject"),
    ("subject-escape", {"subject": "user:\x1b[31malice"}, "subject"),
    ("subject-del", {"subject": "user:alice\x7f"}, "subject"),
    ("subject-c1-nel", {"subject": "user:alice\x85x"}, "subject"),
    ("subject-c1-csi", {"subject": "user:\x9b31malice"}, "subject"),
    ("subject-too-long", {"subject": "u" * 257}, "subject"),
    ("empty-agent", {"agent": ""}, "agent"),
    ("agent-tab", {"agent": "agent\ta"}, "agent"),
    ("purpose-too-long", {"purpose": "p" * 1025}, "purpose"),
    ("purpose-newline", {"purpose": "rent\r\nand more"}, "purpose"),
    ("no-audience", {"audience": []}, "audience"),
    ("audience-space", {"audience": ["pay ments"]}, "audience"),
    ("audience-empty-name", {"audience": ["payments", ""]}, "audience"),
    ("audience-too-long", {"audience": ["a" * 129]}, "audience"),
    ("audience-duplicate", {"audience": ["payments", "payments"]}, "audience"),
    ("audience-33", {"audience": [f"aud{i}" for i in range(33)]}, "audience"),
    ("no-capabilities", {"capabilities": []}, "capabilities"),
    ("65-capabilities", {"capabilities": [GOOD_CAP] * 65}, "capabilities"),
    ("args-not-json", {"capabilities": _cap('{"amount": {"le": 1')},
     "capabilities[0].args_json"),
    ("args-duplicate-keys", {"capabilities": _cap('{"amount":{"le":1},"amount":{"le":9}}')},
     "capabilities[0].args_json"),
    ("args-duplicate-operator", {"capabilities": _cap('{"amount":{"le":1,"le":9}}')},
     "capabilities[0].args_json"),
    ("args-nan", {"capabilities": _cap('{"amount":{"le":NaN}}')}, "capabilities[0].args_json"),
    ("args-deep", {"capabilities": _cap('{"a":{"eq":' + "[" * 5000 + "]" * 5000 + "}}")},
     "capabilities[0].args_json"),
    ("args-over-64k", {"capabilities": _cap('{"a":{"eq":"' + "x" * 70_000 + '"}}')},
     "capabilities[0].args_json"),
    ("args-array", {"capabilities": _cap("[]")}, "capabilities[0].args"),
    ("args-number", {"capabilities": _cap("1")}, "capabilities[0].args"),
    ("args-null", {"capabilities": _cap("null")}, "capabilities[0].args"),
    ("unknown-operator", {"capabilities": _cap('{"amount":{"lte":100}}')},
     "capabilities[0].args.amount.lte"),
    ("unknown-operator-second-cap",
     {"capabilities": [GOOD_CAP, *_cap('{"to":{"regexp":".*"}}', "email.send")]},
     "capabilities[1].args.to.regexp"),
    ("empty-constraint", {"capabilities": _cap('{"amount":{}}')}, "capabilities[0].args.amount"),
    ("constraint-not-object", {"capabilities": _cap('{"amount":100}')},
     "capabilities[0].args.amount"),
    ("only-modifier", {"capabilities": _cap('{"amount":{"optional":true}}')},
     "capabilities[0].args.amount"),
    ("operand-type", {"capabilities": _cap('{"amount":{"le":"100"}}')},
     "capabilities[0].args.amount.le"),
    # Refused by the JSON reader or by the constraint check: either names a field.
    ("operand-infinite", {"capabilities": _cap('{"amount":{"le":1e400}}')},
     ("capabilities[0].args_json", "capabilities[0].args.amount.le")),
    ("empty-in", {"capabilities": _cap('{"to":{"in":[]}}')}, "capabilities[0].args.to.in"),
    ("any-false", {"capabilities": _cap('{"to":{"any":false}}')}, "capabilities[0].args.to.any"),
    ("any-combined", {"capabilities": _cap('{"to":{"any":true,"eq":"x"}}')},
     "capabilities[0].args.to.any"),
    ("glob-trailing-backslash", {"capabilities": _cap('{"to":{"glob":"DE\\\\"}}')},
     "capabilities[0].args.to.glob"),
    ("prefix-too-long", {"capabilities": _cap('{"to":{"prefix":"' + "x" * 4097 + '"}}')},
     "capabilities[0].args.to.prefix"),
    ("in-too-long", {"capabilities": _cap('{"to":{"in":[' + ",".join(["1"] * 1025) + "]}}")},
     "capabilities[0].args.to.in"),
    ("eq-too-deep", {"capabilities": _cap('{"to":{"eq":' + "[" * 17 + "]" * 17 + "}}")},
     "capabilities[0].args.to.eq"),
    ("max-len-negative", {"capabilities": _cap('{"to":{"max_len":-1}}')},
     "capabilities[0].args.to.max_len"),
    ("star-optional", {"capabilities": _cap('{"*":{"any":true,"optional":true}}')},
     "capabilities[0].args.*.optional"),
    ("empty-action", {"capabilities": _cap("{}", action="")}, "capabilities[0].action"),
    ("uppercase-action", {"capabilities": _cap("{}", action="Payments.Transfer")},
     "capabilities[0].action"),
    ("bare-star-action", {"capabilities": _cap("{}", action="*")}, "capabilities[0].action"),
    ("negative-ttl", {"ttl_seconds": -1}, "ttl_seconds"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [pytest.param(o, f, id=name) for name, o, f in CREATE_CASES],
)
def test_create_grant_invalid_argument_writes_nothing(
    stub: remit_pb2_grpc.RemitStub,
    redis_client: redis.Redis,
    redis_prefix: str,
    overrides: dict[str, Any],
    field: str | tuple[str, ...],
) -> None:
    stub.CreateGrant(_create(), metadata=AUTH)  # the store is in use, not empty
    before = count_keys(redis_client, redis_prefix)
    _invalid(lambda: stub.CreateGrant(_create(**overrides), metadata=AUTH), field)
    assert count_keys(redis_client, redis_prefix) == before


def test_client_surfaces_the_field(client: remit.Client) -> None:
    with pytest.raises(remit.InvalidArgument) as exc:
        client.create_grant(subject="u", agent="a", audience=["payments"],
                            capabilities=[{"action": "payments.transfer",
                                           "args": {"amount": {"lte": 5}}}])
    assert exc.value.field == "capabilities[0].args.amount.lte"
    assert "unknown operator" in exc.value.message
    with pytest.raises(remit.InvalidArgument) as exc:
        client.mint("not a grant id")
    assert exc.value.field == "grant_id"


def test_grant_too_big_for_one_token_is_refused_at_grant_time(
    stub: remit_pb2_grpc.RemitStub, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """A grant whose whole-grant token could never be minted is refused up front."""
    caps = [
        remit_pb2.Capability(
            action=f"files.read{i}", args_json='{"path":{"eq":"' + "d" * 1000 + '"}}'
        )
        for i in range(20)
    ]
    before = count_keys(redis_client, redis_prefix)
    err = _invalid(lambda: stub.CreateGrant(_create(capabilities=caps), metadata=AUTH),
                   "capabilities")
    assert "bytes" in (err.details() or "")
    assert count_keys(redis_client, redis_prefix) == before
    # Just under the limit is fine, and its whole-grant token mints.
    gid = stub.CreateGrant(_create(capabilities=caps[:10]), metadata=AUTH).id
    token = stub.Mint(remit_pb2.MintRequest(grant_id=gid), metadata=AUTH).token
    assert 10_000 < len(token) <= 16 * 1024


def test_policy_refusal_writes_nothing(
    stub: remit_pb2_grpc.RemitStub, redis_client: redis.Redis, redis_prefix: str
) -> None:
    before = count_keys(redis_client, redis_prefix)
    week = 7 * 86400
    err = _refused(lambda: stub.CreateGrant(_create(ttl_seconds=week + 1), metadata=AUTH))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert str(week) in (err.details() or "")
    err = _refused(lambda: stub.CreateGrant(_create(ttl_seconds=2**62), metadata=AUTH))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert count_keys(redis_client, redis_prefix) == before
    assert stub.CreateGrant(_create(ttl_seconds=week), metadata=AUTH).id  # the maximum is fine


@pytest.mark.parametrize("grant_id", ["", "x", "g_short", "../../etc/passwd", "g_" + "A" * 70,
                                      "g_AAAAAAAA*", "g_AAAA AAAA"])
def test_get_grant_bad_id(stub: remit_pb2_grpc.RemitStub, grant_id: str) -> None:
    _invalid(lambda: stub.GetGrant(remit_pb2.GetGrantRequest(id=grant_id), metadata=AUTH), "id")


def test_get_unknown_well_formed_id_is_not_found(stub: remit_pb2_grpc.RemitStub) -> None:
    err = _refused(lambda: stub.GetGrant(remit_pb2.GetGrantRequest(id=NO_GRANT), metadata=AUTH))
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
def grant_id(stub: remit_pb2_grpc.RemitStub) -> str:
    gid: str = stub.CreateGrant(_create(audience=["payments", "email"]), metadata=AUTH).id
    return gid


MINT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("bad-grant-id", {"grant_id": "nope!"}, "grant_id"),
    ("empty-grant-id", {"grant_id": ""}, "grant_id"),
    ("negative-ttl", {"ttl_seconds": -300}, "ttl_seconds"),
    ("jkt-short", {"cnf_jkt": "abc"}, "cnf_jkt"),
    ("jkt-bad-chars", {"cnf_jkt": "!" * 43}, "cnf_jkt"),
    ("jkt-padded", {"cnf_jkt": "A" * 43 + "="}, "cnf_jkt"),
    ("audience-bad-name", {"audience": ["pay ments"]}, "audience"),
    ("audience-duplicate", {"audience": ["payments", "payments"]}, "audience"),
    ("args-not-json", {"capabilities": _cap("{")}, "capabilities[0].args_json"),
    ("args-array", {"capabilities": _cap("[1]")}, "capabilities[0].args"),
    ("unknown-operator", {"capabilities": _cap('{"amount":{"lte":1}}')},
     "capabilities[0].args.amount.lte"),
    ("empty-constraint", {"capabilities": _cap('{"amount":{}}')}, "capabilities[0].args.amount"),
    ("65-capabilities", {"capabilities": [GOOD_CAP] * 65}, "capabilities"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [pytest.param(o, f, id=name) for name, o, f in MINT_CASES],
)
def test_mint_invalid_argument_writes_nothing(
    stub: remit_pb2_grpc.RemitStub,
    redis_client: redis.Redis,
    redis_prefix: str,
    grant_id: str,
    overrides: dict[str, Any],
    field: str,
) -> None:
    request = remit_pb2.MintRequest(**{"grant_id": grant_id, **overrides})
    before = count_keys(redis_client, redis_prefix)
    _invalid(lambda: stub.Mint(request, metadata=AUTH), field)
    assert count_keys(redis_client, redis_prefix) == before


REVOKE_CASES: list[tuple[str, remit_pb2.RevokeRequest, str]] = [
    ("neither-target", remit_pb2.RevokeRequest(), "target"),
    ("neither-target-with-reason", remit_pb2.RevokeRequest(reason="why"), "target"),
    ("empty-jti", remit_pb2.RevokeRequest(jti=""), "target"),
    ("bad-jti", remit_pb2.RevokeRequest(jti="t_*"), "jti"),
    ("bad-grant-id", remit_pb2.RevokeRequest(grant_id="g_/../x"), "grant_id"),
    ("reason-too-long", remit_pb2.RevokeRequest(grant_id=NO_GRANT, reason="r" * 1025), "reason"),
]


@pytest.mark.parametrize(
    ("request_", "field"),
    [pytest.param(r, f, id=name) for name, r, f in REVOKE_CASES],
)
def test_revoke_invalid_argument(
    stub: remit_pb2_grpc.RemitStub,
    redis_client: redis.Redis,
    redis_prefix: str,
    request_: remit_pb2.RevokeRequest,
    field: str,
) -> None:
    before = count_keys(redis_client, redis_prefix)
    _invalid(lambda: stub.Revoke(request_, metadata=AUTH), field)
    assert count_keys(redis_client, redis_prefix) == before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(remit_pb2.ListGrantsRequest(page_token="abc"), "page_token", id="garbage"),
        pytest.param(remit_pb2.ListGrantsRequest(page_token="-1"), "page_token", id="negative"),
        pytest.param(remit_pb2.ListGrantsRequest(page_token="1.5"), "page_token", id="float"),
        pytest.param(remit_pb2.ListGrantsRequest(page_token="1" * 10), "page_token", id="long"),
        pytest.param(remit_pb2.ListGrantsRequest(page_token="\u00b2"), "page_token",
                     id="superscript-digit"),
        pytest.param(remit_pb2.ListGrantsRequest(page_token="\u0663"), "page_token",
                     id="arabic-digit"),
        pytest.param(remit_pb2.ListGrantsRequest(page_token=" 1"), "page_token", id="space"),
        pytest.param(remit_pb2.ListGrantsRequest(page_size=-1), "page_size", id="size-negative"),
        pytest.param(remit_pb2.ListGrantsRequest(page_size=1001), "page_size", id="size-1001"),
    ],
)
def test_list_grants_invalid_argument(
    stub: remit_pb2_grpc.RemitStub, request_: remit_pb2.ListGrantsRequest, field: str
) -> None:
    _invalid(lambda: stub.ListGrants(request_, metadata=AUTH), field)


# -- credentials ---------------------------------------------------------------------------

BAD_CREDENTIALS = [
    pytest.param((), id="no-metadata"),
    pytest.param((("authorization", "Bearer wrong-key"),), id="wrong-key"),
    pytest.param((("authorization", API_KEY),), id="no-bearer-scheme"),
    pytest.param((("authorization", f"Basic {API_KEY}"),), id="basic-scheme"),
    pytest.param((("authorization", "Bearer "),), id="empty-bearer"),
    pytest.param((("authorization", f"Bearer {API_KEY}x"),), id="key-plus-one"),
    pytest.param((("authorization", f"Bearer {API_KEY[:-1]}"),), id="key-prefix"),
    pytest.param((("x-api-key", API_KEY),), id="other-header"),
]


@pytest.mark.parametrize("metadata", BAD_CREDENTIALS)
def test_bad_credentials_are_unauthenticated(
    stub: remit_pb2_grpc.RemitStub,
    redis_client: redis.Redis,
    redis_prefix: str,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    gid = stub.CreateGrant(_create(), metadata=AUTH).id
    before = count_keys(redis_client, redis_prefix)
    calls = [
        lambda: stub.CreateGrant(_create(), metadata=metadata),
        # Credentials are checked before the request: a malformed one says nothing more.
        lambda: stub.CreateGrant(_create(subject=""), metadata=metadata),
        lambda: stub.GetGrant(remit_pb2.GetGrantRequest(id=gid), metadata=metadata),
        lambda: stub.ListGrants(remit_pb2.ListGrantsRequest(), metadata=metadata),
        lambda: stub.Mint(remit_pb2.MintRequest(grant_id=gid), metadata=metadata),
        lambda: stub.Revoke(remit_pb2.RevokeRequest(grant_id=gid), metadata=metadata),
    ]
    for call in calls:
        err = _refused(call)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
        assert API_KEY not in (err.details() or "")
    assert count_keys(redis_client, redis_prefix) == before
    assert stub.GetGrant(remit_pb2.GetGrantRequest(id=gid), metadata=AUTH).revoked is False


def test_client_maps_unauthenticated(service: Server) -> None:
    with remit.Client(service.grpc_target, api_key="wrong") as c, \
            pytest.raises(remit.Unauthenticated):
        c.create_grant(subject="u", agent="a", audience=["payments"],
                       capabilities=[{"action": "payments.transfer", "args": {}}])


# -- transport-level garbage -----------------------------------------------------------------


def test_request_over_1_mib_is_refused_cleanly(
    stub: remit_pb2_grpc.RemitStub, redis_client: redis.Redis, redis_prefix: str
) -> None:
    before = count_keys(redis_client, redis_prefix)
    huge = _create(capabilities=[GOOD_CAP] * 20, purpose="p" * (2 * 1024 * 1024))
    assert huge.ByteSize() > 1024 * 1024
    err = _refused(lambda: stub.CreateGrant(huge, metadata=AUTH))
    assert err.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    many = _create(capabilities=[remit_pb2.Capability(action="a.b", args_json="{}")] * 100_000)
    assert many.ByteSize() > 1024 * 1024
    err = _refused(lambda: stub.CreateGrant(many, metadata=AUTH))
    assert err.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert count_keys(redis_client, redis_prefix) == before
    # The service is still fine afterwards.
    assert stub.CreateGrant(_create(), metadata=AUTH).id


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x0a\x03\xff\xfe\xfd", id="invalid-utf8-string"),
        pytest.param(b"\xff\xff\xff\xff\xff", id="not-protobuf"),
        pytest.param(b"\x0a\x10abc", id="truncated"),
        pytest.param(b"\x22\x05\x0a\x03\xc3\x28x", id="invalid-utf8-nested"),
    ],
)
def test_undecodable_request_is_invalid_argument(
    service: Server, redis_client: redis.Redis, redis_prefix: str, payload: bytes
) -> None:
    before = count_keys(redis_client, redis_prefix)
    with grpc.insecure_channel(service.grpc_target) as channel:
        for method in ("CreateGrant", "Mint", "GetGrant"):
            call = channel.unary_unary(
                f"/remit.v1.Remit/{method}",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            err = _refused(lambda call=call: call(payload, metadata=AUTH, timeout=5))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
    assert count_keys(redis_client, redis_prefix) == before
