"""GetAlignment over real gRPC: events from the real service and a real verifier (sync audit)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
import remit
from remit.v1 import remit_pb2, remit_pb2_grpc
from remit_service import Server

IBAN = "DE89 3704 0044 0532 0130 00"
CAP = {"action": "payments.transfer", "args": {"amount": {"le": 100}, "to": {"eq": IBAN}}}


def _use_grant(bank: remit.Client, make_verifier: Callable[..., remit.Verifier]) -> str:
    grant = bank.create_grant(
        subject="user:alice",
        agent="agent:a",
        audience=["payments"],
        capabilities=[CAP],
        purpose="rent",
    )
    token = bank.mint(grant.id)
    verifier = make_verifier(bank, audit="sync", audit_args=["payments.transfer"])
    verifier.check(token, action="payments.transfer", args={"amount": 50, "to": IBAN})
    with pytest.raises(remit.Denied):
        verifier.check(token, action="payments.transfer", args={"amount": 500, "to": IBAN})
    with pytest.raises(remit.Denied):
        verifier.check(token, action="payments.refund", args={})
    return grant.id


def test_app_sees_its_grant(
    bank: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    gid = _use_grant(bank, make_verifier)
    report = bank.get_alignment(grant_id=gid)
    assert report["schema"] == "remit.alignment/v1"
    (g,) = report["grants"]
    assert (g["gid"], g["app"], g["tokens_minted"]) == (gid, "bank", 1)
    assert (g["attempts"], g["allowed"], g["denied"]) == (3, 1, 2)
    assert {o["code"] for o in g["over_reach"]} == {"argument_denied", "action_not_granted"}
    (cap,) = g["suggested"]
    assert cap["args"] == {"amount": {"eq": 50}, "to": {"eq": IBAN}}
    assert report["stream"]["skipped"] == 0
    by_agent = bank.get_alignment(agent="agent:a")
    assert [x["gid"] for x in by_agent["grants"]] == [gid]


def test_other_apps_grants_are_invisible(
    bank: remit.Client, mail: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    gid = _use_grant(bank, make_verifier)
    with pytest.raises(remit.NotFound):
        mail.get_alignment(grant_id=gid)
    report = mail.get_alignment()
    assert report["grants"] == [] and report["totals"]["attempts"] == 0
    assert report["agents"] == []


def test_bad_input(bank: remit.Client, policy_service: Server) -> None:
    with pytest.raises(remit.InvalidArgument) as err:
        bank.get_alignment(grant_id="not a grant id!")
    assert err.value.field == "grant_id"
    with pytest.raises(remit.InvalidArgument) as err:
        bank.get_alignment(since_ms=-1)
    assert err.value.field == "since_ms"
    with pytest.raises(remit.InvalidArgument) as err:
        bank.get_alignment(agent="a\x00b")
    assert err.value.field == "agent"
    with pytest.raises(remit.NotFound):
        bank.get_alignment(grant_id="g_doesnotexist0000")
    with grpc.insecure_channel(policy_service.grpc_target) as channel:
        stub = remit_pb2_grpc.RemitStub(channel)
        with pytest.raises(grpc.RpcError) as rpc_err:
            stub.GetAlignment(remit_pb2.GetAlignmentRequest())
        assert rpc_err.value.code() == grpc.StatusCode.UNAUTHENTICATED
