"""gRPC adapters end to end: a real server on 127.0.0.1:0 behind ``RemitServerInterceptor``,
called through ``RemitClientInterceptor`` (or a raw channel, for calls an agent would not
send).

No generated code: the demo service ``demo.Payments`` is registered with the generic
handler API and speaks well-known messages. A request is a ``google.protobuf.Struct``, so
the call's arguments are the struct's fields; a response is a ``StringValue``.

``Struct`` has a single number type, double: ``{"amount": 50}`` arrives as ``50.0``.
The constraints below therefore use ``le`` (which compares numbers, ints and floats
alike), never ``eq`` on a number (strict types: ``50.0`` is not ``50``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import redis
import remit
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue
from remit._redis_keys import RedisKeys
from remit.agent import AgentKey
from remit.integrations.grpc import (
    CODE_METADATA,
    RemitClientInterceptor,
    RemitServerInterceptor,
    call_metadata,
    message_args,
)

from ..tokens import ACTION, AUDIENCE, ISSUER, IssuerKey, claims, sign

SERVICE = "demo.Payments"
TRANSFER = f"/{SERVICE}/Transfer"  # checked: payments.transfer
WATCH = f"/{SERVICE}/Watch"  # checked, unary-stream: payments.transfer
GUARDED = f"/{SERVICE}/Guarded"  # checked, and the servicer calls a @verifier.guard tool
REFUND = f"/{SERVICE}/Refund"  # served, but the backend maps no action to it
UPLOAD = f"/{SERVICE}/Upload"  # client-streaming: cannot be checked
PING = f"/{SERVICE}/Ping"  # public
NOPE = f"/{SERVICE}/Nope"  # not served at all

SERVER_ACTIONS = {TRANSFER: ACTION, WATCH: ACTION, GUARDED: ACTION, UPLOAD: ACTION}
CLIENT_ACTIONS = {**SERVER_ACTIONS, REFUND: "payments.refund", NOPE: "payments.nope"}
ARGS = {"amount": 50, "to": "DE89"}  # allowed: amount le 100, to eq "DE89"
TIMEOUT = 5


def struct(args: dict[str, Any]) -> Struct:
    s = Struct()
    s.update(args)
    return s


@dataclass
class Demo:
    """The servicer. ``calls`` records every method that actually ran."""

    guarded: Callable[..., str] | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    metadata: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    credentials: list[remit.Credentials | None] = field(default_factory=list)

    def _ran(self, name: str, request: Struct, context: grpc.ServicerContext) -> None:
        self.calls.append((name, message_args(request)))
        self.metadata.append(tuple((m.key, m.value) for m in context.invocation_metadata()))
        self.credentials.append(remit.current_credentials())

    def transfer(self, request: Struct, context: grpc.ServicerContext) -> StringValue:
        self._ran("Transfer", request, context)
        return StringValue(value="sent")

    def watch(self, request: Struct, context: grpc.ServicerContext) -> Iterator[StringValue]:
        self._ran("Watch", request, context)
        for i in range(3):
            creds = remit.current_credentials()
            yield StringValue(value=f"{i}:{creds.token[:8] if creds else None}")

    def guarded_transfer(self, request: Struct, context: grpc.ServicerContext) -> StringValue:
        self._ran("Guarded", request, context)
        assert self.guarded is not None
        fields = message_args(request)
        return StringValue(value=self.guarded(fields["amount"], fields["to"]))

    def refund(self, request: Struct, context: grpc.ServicerContext) -> StringValue:
        self._ran("Refund", request, context)
        return StringValue(value="refunded")

    def upload(self, requests: Iterator[Struct], context: grpc.ServicerContext) -> StringValue:
        self.calls.append(("Upload", {}))
        return StringValue(value=str(sum(1 for _ in requests)))

    def ping(self, request: Struct, context: grpc.ServicerContext) -> StringValue:
        self.calls.append(("Ping", {}))
        return StringValue(value="pong")


@dataclass
class Served:
    target: str
    demo: Demo


def _handlers(demo: Demo) -> dict[str, grpc.RpcMethodHandler]:
    io = {"request_deserializer": Struct.FromString,
          "response_serializer": StringValue.SerializeToString}
    return {
        "Transfer": grpc.unary_unary_rpc_method_handler(demo.transfer, **io),
        "Watch": grpc.unary_stream_rpc_method_handler(demo.watch, **io),
        "Guarded": grpc.unary_unary_rpc_method_handler(demo.guarded_transfer, **io),
        "Refund": grpc.unary_unary_rpc_method_handler(demo.refund, **io),
        "Upload": grpc.stream_unary_rpc_method_handler(demo.upload, **io),
        "Ping": grpc.unary_unary_rpc_method_handler(demo.ping, **io),
    }


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start a demo server behind a ``RemitServerInterceptor``; stopped after the test."""
    servers: list[grpc.Server] = []

    def start(verifier: remit.Verifier, demo: Demo | None = None, **kwargs: Any) -> Served:
        demo = demo or Demo()
        kwargs.setdefault("public", {PING})
        interceptor = RemitServerInterceptor(verifier, SERVER_ACTIONS, **kwargs)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptor])
        servers.append(server)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, _handlers(demo)),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        assert port > 0
        server.start()
        return Served(f"127.0.0.1:{port}", demo)

    yield start
    for server in servers:
        server.stop(grace=None).wait(5)


@pytest.fixture
def channels() -> Iterator[Callable[[str], grpc.Channel]]:
    opened: list[grpc.Channel] = []

    def open_channel(target: str) -> grpc.Channel:
        channel = grpc.insecure_channel(target)
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


@pytest.fixture
def issuer() -> IssuerKey:
    return IssuerKey()


@pytest.fixture
def agent_key() -> AgentKey:
    return AgentKey.generate()


@pytest.fixture
def verifier(issuer: IssuerKey) -> Iterator[remit.Verifier]:
    # Real clock: the interceptor signs proofs with the current time.
    v = remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off")
    yield v
    v.close()


def token_for(issuer: IssuerKey, key: AgentKey | None = None, **overrides: Any) -> str:
    if key is not None:
        overrides["cnf"] = {"jkt": key.thumbprint}
    return sign(claims(now=int(time.time()), **overrides), issuer)


def unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        method,
        request_serializer=Struct.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


def agent_channel(
    channel: grpc.Channel, key: AgentKey | None, token: str | Callable[[], str], **kwargs: Any
) -> grpc.Channel:
    kwargs.setdefault("actions", CLIENT_ACTIONS)
    interceptor = RemitClientInterceptor(key, token, audience=AUDIENCE, **kwargs)
    return grpc.intercept_channel(channel, interceptor)


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def remit_code(err: grpc.RpcError) -> str | None:
    codes = [m.value for m in err.trailing_metadata() or () if m.key == CODE_METADATA]
    assert len(codes) <= 1
    return codes[0] if codes else None


def assert_denied(err: grpc.RpcError, status: grpc.StatusCode, code: str) -> None:
    assert err.code() is status, (err.code(), err.details())
    assert remit_code(err) == code
    assert err.details().startswith(f"{code}: ")


# -- allowed -------------------------------------------------------------------------------


def test_allowed_call_reaches_the_servicer_with_credentials_bound(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    token = token_for(issuer, agent_key)
    ch = agent_channel(channels(srv.target), agent_key, token)

    reply = unary(ch, TRANSFER)(struct(ARGS), timeout=TIMEOUT)

    assert reply.value == "sent"
    assert srv.demo.calls == [("Transfer", {"amount": 50.0, "to": "DE89"})]
    creds = srv.demo.credentials[0]
    assert creds is not None and creds.token == token and creds.proof is not None
    sent = dict(srv.demo.metadata[0])
    assert sent["authorization"] == f"Remit {token}"
    assert sent["remit-proof"] == creds.proof


def test_unbound_token_needs_no_proof(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey,
) -> None:
    srv = serve(verifier)
    ch = agent_channel(channels(srv.target), None, token_for(issuer))

    assert unary(ch, TRANSFER)(struct(ARGS), timeout=TIMEOUT).value == "sent"
    assert "remit-proof" not in dict(srv.demo.metadata[0])


def test_public_method_needs_no_token(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier,
) -> None:
    srv = serve(verifier)
    assert unary(channels(srv.target), PING)(struct({}), timeout=TIMEOUT).value == "pong"


def test_unary_stream_is_checked_and_streams_with_credentials_bound(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    token = token_for(issuer, agent_key)
    ch = agent_channel(channels(srv.target), agent_key, token)
    watch = ch.unary_stream(
        WATCH, request_serializer=Struct.SerializeToString,
        response_deserializer=StringValue.FromString,
    )

    replies = [r.value for r in watch(struct(ARGS), timeout=TIMEOUT)]
    assert replies == [f"{i}:{token[:8]}" for i in range(3)]

    err = refused(lambda: list(watch(struct({"amount": 500, "to": "DE89"}), timeout=TIMEOUT)))
    assert_denied(err, grpc.StatusCode.PERMISSION_DENIED, "argument_denied")
    assert [name for name, _ in srv.demo.calls] == ["Watch"]


def test_guard_inside_the_servicer_sees_the_call_credentials(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey,
) -> None:
    seen: list[remit.Credentials | None] = []

    @verifier.guard(ACTION)
    def do_transfer(amount: float, to: str) -> str:
        seen.append(remit.current_credentials())
        return f"sent {amount:g} to {to}"

    srv = serve(verifier, Demo(guarded=do_transfer))
    # An unbound token: the guard checks the call again, and a proof is single-use
    # (a key-bound token's proof is spent by the interceptor's check).
    token = token_for(issuer)
    ch = agent_channel(channels(srv.target), None, token)

    assert unary(ch, GUARDED)(struct(ARGS), timeout=TIMEOUT).value == "sent 50 to DE89"
    assert len(seen) == 1 and seen[0] is not None and seen[0].token == token

    # A Denied escaping the servicer is reported like the interceptor's own denials.
    # Here the tool is called with ten times the checked amount: the guard refuses.
    srv2 = serve(verifier, Demo(guarded=lambda amount, to: do_transfer(amount * 10, to)))
    ch2 = agent_channel(channels(srv2.target), None, token)
    err = refused(lambda: unary(ch2, GUARDED)(struct(ARGS), timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.PERMISSION_DENIED, "argument_denied")
    assert len(seen) == 1


def test_guard_inside_the_servicer_works_for_a_key_bound_token(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    """The interceptor proved possession (and spent the single-use proof); the guard
    inside re-checks scope and revocation without asking for the proof again."""
    seen: list[remit.Credentials | None] = []

    @verifier.guard(ACTION)
    def do_transfer(amount: float, to: str) -> str:
        seen.append(remit.current_credentials())
        return f"sent {amount:g} to {to}"

    srv = serve(verifier, Demo(guarded=do_transfer))
    token = token_for(issuer, agent_key)
    ch = agent_channel(channels(srv.target), agent_key, token)
    assert unary(ch, GUARDED)(struct(ARGS), timeout=TIMEOUT).value == "sent 50 to DE89"
    assert seen[0] is not None and seen[0].possession_proven is True

    srv2 = serve(verifier, Demo(guarded=lambda amount, to: do_transfer(amount * 10, to)))
    ch2 = agent_channel(channels(srv2.target), agent_key, token)
    err = refused(lambda: unary(ch2, GUARDED)(struct(ARGS), timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.PERMISSION_DENIED, "argument_denied")
    assert len(seen) == 1


def test_guard_outside_any_adapter_still_needs_the_proof(
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    """Binding credentials by hand does not prove possession: the guard checks the proof."""

    @verifier.guard(ACTION)
    def do_transfer(amount: float, to: str) -> str:
        return "sent"

    with remit.credentials(token_for(issuer, agent_key)), pytest.raises(remit.Denied) as exc:
        do_transfer(50.0, "DE89")
    assert exc.value.code == "proof_required"


# -- denied: the servicer never runs -------------------------------------------------------


def test_argument_outside_the_constraint_is_permission_denied(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    ch = agent_channel(channels(srv.target), agent_key, token_for(issuer, agent_key))

    err = refused(lambda: unary(ch, TRANSFER)(struct({"amount": 100.5, "to": "DE89"}),
                                              timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.PERMISSION_DENIED, "argument_denied")
    assert srv.demo.calls == []


def test_method_the_backend_does_not_map_is_refused(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    ch = agent_channel(channels(srv.target), agent_key, token_for(issuer, agent_key))

    for method in (REFUND, NOPE):  # served but unmapped; not served at all
        err = refused(lambda m=method: unary(ch, m)(struct(ARGS), timeout=TIMEOUT))
        assert_denied(err, grpc.StatusCode.PERMISSION_DENIED, "action_not_granted")
    assert srv.demo.calls == []


def test_client_streaming_method_is_refused_as_unsupported(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey,
) -> None:
    srv = serve(verifier)
    upload = channels(srv.target).stream_unary(
        UPLOAD, request_serializer=Struct.SerializeToString,
        response_deserializer=StringValue.FromString,
    )
    md = call_metadata(None, token_for(issuer), audience=AUDIENCE, action=ACTION)
    err = refused(lambda: upload(iter([struct(ARGS)]), metadata=md, timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.PERMISSION_DENIED, "unsupported")
    assert srv.demo.calls == []


def test_agent_refuses_a_method_it_has_no_action_for_before_sending(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    ch = agent_channel(channels(srv.target), agent_key, token_for(issuer, agent_key))

    with pytest.raises(ValueError, match="no remit action"):
        unary(ch, PING)(struct({}), timeout=TIMEOUT)  # public, so it would have run
    assert srv.demo.calls == []


def test_no_token_is_unauthenticated(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier,
) -> None:
    srv = serve(verifier)
    transfer = unary(channels(srv.target), TRANSFER)

    err = refused(lambda: transfer(struct(ARGS), timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.UNAUTHENTICATED, "token_required")
    md = (("authorization", "Bearer abc"),)  # another scheme is no remit token either
    err = refused(lambda: transfer(struct(ARGS), metadata=md, timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.UNAUTHENTICATED, "token_required")
    assert srv.demo.calls == []


def test_bound_token_without_proof_is_unauthenticated(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    ch = agent_channel(channels(srv.target), None, token_for(issuer, agent_key))

    err = refused(lambda: unary(ch, TRANSFER)(struct(ARGS), timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.UNAUTHENTICATED, "proof_required")
    assert srv.demo.calls == []


def test_captured_proof_cannot_be_replayed(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    raw = channels(srv.target)
    ch = agent_channel(raw, agent_key, token_for(issuer, agent_key))
    assert unary(ch, TRANSFER)(struct(ARGS), timeout=TIMEOUT).value == "sent"
    captured = [(k, v) for k, v in srv.demo.metadata[0] if k in ("authorization", "remit-proof")]
    assert len(captured) == 2

    err = refused(lambda: unary(raw, TRANSFER)(struct(ARGS), metadata=captured, timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.UNAUTHENTICATED, "replayed")
    assert len(srv.demo.calls) == 1


def test_proof_for_other_arguments_is_a_mismatch(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    token = token_for(issuer, agent_key)
    md = call_metadata(agent_key, token, audience=AUDIENCE, action=ACTION,
                       args={"amount": 10, "to": "DE89"})

    err = refused(lambda: unary(channels(srv.target), TRANSFER)(
        struct(ARGS), metadata=md, timeout=TIMEOUT))
    assert_denied(err, grpc.StatusCode.UNAUTHENTICATED, "proof_mismatch")
    assert srv.demo.calls == []


def test_call_metadata_over_the_same_args_is_accepted(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    request = struct(ARGS)
    md = call_metadata(agent_key, token_for(issuer, agent_key), audience=AUDIENCE,
                       action=ACTION, args=message_args(request))

    assert unary(channels(srv.target), TRANSFER)(request, metadata=md, timeout=TIMEOUT).value \
        == "sent"


def test_revoked_grant_is_unauthenticated_with_strict_revocation(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    issuer: IssuerKey, agent_key: AgentKey, redis_url: str, redis_prefix: str,
    redis_client: redis.Redis,
) -> None:
    strict = remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE,
                            revocation="strict", redis=redis_url, prefix=redis_prefix)
    try:
        srv = serve(strict)
        gid = "grant-to-revoke-0001"
        # Strict checks want the grant record (its absence means Redis lost its data).
        redis_client.set(RedisKeys(redis_prefix).grant(gid), b"{}", ex=600)
        ch = agent_channel(channels(srv.target), agent_key, token_for(issuer, agent_key, gid=gid))
        transfer = unary(ch, TRANSFER)
        assert transfer(struct(ARGS), timeout=TIMEOUT).value == "sent"

        redis_client.set(RedisKeys(redis_prefix).grant_revoked(gid), b"1", ex=600)

        err = refused(lambda: transfer(struct(ARGS), timeout=TIMEOUT))
        assert_denied(err, grpc.StatusCode.UNAUTHENTICATED, "revoked")
        assert len(srv.demo.calls) == 1
    finally:
        strict.close()


def test_unexpected_error_while_checking_is_internal_without_detail(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: Any) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    srv = serve(verifier, args=broken)
    ch = agent_channel(channels(srv.target), None, token_for(issuer))

    err = refused(lambda: unary(ch, TRANSFER)(struct(ARGS), timeout=TIMEOUT))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in (err.details() or "")
    assert remit_code(err) is None
    assert srv.demo.calls == []
    assert "secret internals" in caplog.text


# -- configuration ---------------------------------------------------------------------------


def test_interceptors_reject_bad_configuration(verifier: remit.Verifier) -> None:
    with pytest.raises(ValueError, match="both checked and public"):
        RemitServerInterceptor(verifier, {TRANSFER: ACTION}, public=[TRANSFER])
    with pytest.raises(ValueError, match="full gRPC method name"):
        RemitServerInterceptor(verifier, {"Transfer": ACTION})
    with pytest.raises(ValueError, match="invalid action"):
        RemitServerInterceptor(verifier, {TRANSFER: "Not An Action"})
    with pytest.raises(TypeError):
        RemitServerInterceptor(verifier, {}, public=PING)
    with pytest.raises(ValueError, match="audience"):
        RemitClientInterceptor(None, "t", audience="", actions={})


def test_client_interceptor_takes_an_action_function_and_a_token_function(
    serve: Callable[..., Served], channels: Callable[[str], grpc.Channel],
    verifier: remit.Verifier, issuer: IssuerKey, agent_key: AgentKey,
) -> None:
    srv = serve(verifier)
    tokens = [token_for(issuer, agent_key), token_for(issuer, agent_key)]
    ch = agent_channel(
        channels(srv.target), agent_key, lambda: tokens[len(srv.demo.calls)],
        actions=lambda method: SERVER_ACTIONS[method],
    )
    transfer = unary(ch, TRANSFER)
    assert transfer(struct(ARGS), timeout=TIMEOUT).value == "sent"
    assert transfer(struct(ARGS), timeout=TIMEOUT).value == "sent"
    assert [c.token for c in srv.demo.credentials if c] == tokens
