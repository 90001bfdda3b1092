"""gRPC ``remit.v1.Remit`` servicer: a thin adapter over :class:`Core`.

It authenticates the caller, converts messages to plain values and back, and maps
domain errors to status codes through one table. Anything unexpected becomes
INTERNAL with no detail (the detail goes to the log, not to the caller).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from remit._encoding import strict_json_loads
from remit.v1 import remit_pb2, remit_pb2_grpc

from ._config import AppPolicy
from ._core import Core
from ._errors import (
    AuthFailed,
    BadRequest,
    Inactive,
    Missing,
    PolicyDenied,
    ServiceFault,
    StoreDown,
)
from ._introspect import Introspector
from ._store import GrantRecord
from ._tls import CertApps

__all__ = ["STATUS_OF", "RemitServicer", "add_to_server"]

log = logging.getLogger("remit.service")

STATUS_OF: dict[type[ServiceFault], grpc.StatusCode] = {
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    AuthFailed: grpc.StatusCode.UNAUTHENTICATED,
    PolicyDenied: grpc.StatusCode.PERMISSION_DENIED,
    Missing: grpc.StatusCode.NOT_FOUND,
    Inactive: grpc.StatusCode.FAILED_PRECONDITION,
    StoreDown: grpc.StatusCode.UNAVAILABLE,
}
MAX_ARGS_JSON = 64 * 1024
FIELD_KEY = "remit-field"  # trailing metadata naming the offending request field
CODE_KEY = "remit-code"  # trailing metadata: the reason code, as backends send it

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _rpc(
    method: Callable[[RemitServicer, Req, grpc.ServicerContext], Resp],
) -> Callable[[RemitServicer, Req, grpc.ServicerContext], Resp]:
    @functools.wraps(method)
    def wrapper(self: RemitServicer, request: Req, context: grpc.ServicerContext) -> Resp:
        if request is _UNDECODABLE:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {method.__name__} request message",
            )
        try:
            return method(self, request, context)
        except ServiceFault as fault:
            trailers = []
            if fault.field:
                trailers.append((FIELD_KEY, fault.field))
            if fault.code:
                trailers.append((CODE_KEY, fault.code))
            if isinstance(fault, StoreDown) and not fault.retryable:
                # gRPC's standard hint: do not retry (a client would only time out again).
                trailers.append(("grpc-retry-pushback-ms", "-1"))
            if trailers:
                context.set_trailing_metadata(tuple(trailers))
            context.abort(STATUS_OF[type(fault)], fault.message)
        except Exception:
            log.exception("internal error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")  # pragma: no cover (abort raises)

    return wrapper


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message of its type."""


_UNDECODABLE: Any = _Undecodable()


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    # grpc answers a request its deserializer rejects with INTERNAL ("Exception
    # deserializing request!"); a client sending bad bytes is not a server fault.
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def add_to_server(servicer: RemitServicer, server: grpc.Server) -> None:
    """Register like the generated ``add_RemitServicer_to_server``, except that a
    request that does not decode (bad protobuf, invalid UTF-8 in a string) gets
    INVALID_ARGUMENT instead of grpc's INTERNAL."""
    service = remit_pb2.DESCRIPTOR.services_by_name["Remit"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name),
            request_deserializer=_lenient(getattr(remit_pb2, m.input_type.name).FromString),
            response_serializer=getattr(remit_pb2, m.output_type.name).SerializeToString,
        )
        for m in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def _api_key(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str):
            scheme, _, credential = value.partition(" ")
            if scheme.lower() == "bearer" and credential:
                return credential.strip()
            return None
    return None


def _json_field(text: str, path: str) -> Any:
    if len(text) > MAX_ARGS_JSON:
        raise BadRequest(f"{path}: larger than 64 KiB", field=path)
    try:
        return strict_json_loads(text)
    except ValueError as exc:
        raise BadRequest(f"{path}: {exc}", field=path) from None


def _capabilities(messages: Any, name: str) -> list[dict[str, Any]]:
    out = []
    for i, cap in enumerate(messages):
        entry = {
            "action": cap.action,
            "args": _json_field(cap.args_json or "{}", f"{name}[{i}].args_json"),
        }
        if cap.limits_json:
            entry["limits"] = _json_field(cap.limits_json, f"{name}[{i}].limits_json")
        out.append(entry)
    return out


def _capability_message(cap: dict[str, Any]) -> remit_pb2.Capability:
    limits = cap.get("limits")
    return remit_pb2.Capability(
        action=cap["action"],
        args_json=json.dumps(cap["args"], separators=(",", ":")),
        limits_json=json.dumps(limits, separators=(",", ":")) if limits else "",
    )


def grant_message(grant: GrantRecord) -> remit_pb2.Grant:
    return remit_pb2.Grant(
        id=grant.id,
        app=grant.app,
        subject=grant.subject,
        agent=grant.agent,
        audience=grant.audience,
        capabilities=[_capability_message(c) for c in grant.capabilities],
        purpose=grant.purpose,
        created_at=grant.created_at,
        expires_at=grant.expires_at,
        revoked=grant.revoked,
    )


MAX_REPORT_JSON = 900 * 1024  # under the 1 MiB message limit, with room for the envelope


def _fit_report(report: dict[str, Any]) -> str:
    """The report as JSON, dropping grants (least active last) until it fits a message;
    ``truncated`` then says how many were left out (narrow the request to see them)."""
    text = json.dumps(report, separators=(",", ":"))
    grants = sorted(report["grants"], key=lambda g: -g["attempts"])
    keep = len(grants)
    while len(text.encode()) > MAX_REPORT_JSON and keep > 0:
        keep //= 2
        omitted = {"grants_omitted": len(grants) - keep}
        report = {**report, "grants": grants[:keep], "truncated": omitted}
        text = json.dumps(report, separators=(",", ":"))
    return text


class RemitServicer(remit_pb2_grpc.RemitServicer):
    def __init__(
        self,
        core: Core,
        *,
        introspector: Introspector | None = None,
        cert_apps: CertApps | None = None,
    ) -> None:
        self._core = core
        self._introspector = introspector
        self._cert_apps = cert_apps  # set only when the listener verifies client certs

    def _app(self, context: grpc.ServicerContext) -> AppPolicy:
        api_key = _api_key(context)
        by_cert = self._cert_apps.app(context.auth_context()) if self._cert_apps else None
        if by_cert is None:
            return self._core.authenticate(api_key)
        if api_key is not None and self._core.authenticate(api_key).name != by_cert.name:
            raise AuthFailed("the client certificate and the API key name different apps")
        return by_cert

    @_rpc
    def CreateGrant(
        self, request: remit_pb2.CreateGrantRequest, context: grpc.ServicerContext
    ) -> remit_pb2.Grant:
        app = self._app(context)
        grant = self._core.create_grant(
            app,
            subject=request.subject,
            agent=request.agent,
            audience=list(request.audience),
            capabilities=_capabilities(request.capabilities, "capabilities"),
            purpose=request.purpose,
            ttl=request.ttl_seconds,
        )
        return grant_message(grant)

    @_rpc
    def GetGrant(
        self, request: remit_pb2.GetGrantRequest, context: grpc.ServicerContext
    ) -> remit_pb2.Grant:
        return grant_message(self._core.get_grant(self._app(context), request.id))

    @_rpc
    def ListGrants(
        self, request: remit_pb2.ListGrantsRequest, context: grpc.ServicerContext
    ) -> remit_pb2.ListGrantsResponse:
        grants, next_token = self._core.list_grants(
            self._app(context),
            subject=request.subject,
            agent=request.agent,
            include_inactive=request.include_inactive,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return remit_pb2.ListGrantsResponse(
            grants=[grant_message(g) for g in grants], next_page_token=next_token
        )

    @_rpc
    def Mint(
        self, request: remit_pb2.MintRequest, context: grpc.ServicerContext
    ) -> remit_pb2.MintResponse:
        result = self._core.mint(
            self._app(context),
            grant_id=request.grant_id,
            capabilities=_capabilities(request.capabilities, "capabilities") or None,
            ttl=request.ttl_seconds,
            audience=list(request.audience),
            cnf_jkt=request.cnf_jkt,
        )
        return remit_pb2.MintResponse(
            token=result.token, jti=result.jti, expires_at=result.expires_at
        )

    @_rpc
    def Revoke(
        self, request: remit_pb2.RevokeRequest, context: grpc.ServicerContext
    ) -> remit_pb2.RevokeResponse:
        result = self._core.revoke(
            self._app(context),
            jti=request.jti,
            grant_id=request.grant_id,
            agent=request.agent,
            subject=request.subject,
            all=request.all,
            before=request.before,
            reason=request.reason,
        )
        return remit_pb2.RevokeResponse(
            revoked_at=result.revoked_at, grants=result.grants, cutoff=result.cutoff
        )

    @_rpc
    def GetAlignment(
        self, request: remit_pb2.GetAlignmentRequest, context: grpc.ServicerContext
    ) -> remit_pb2.GetAlignmentResponse:
        report = self._core.alignment(
            self._app(context),
            grant_id=request.grant_id,
            agent=request.agent,
            subject=request.subject,
            since_ms=request.since_ms,
        )
        return remit_pb2.GetAlignmentResponse(report_json=_fit_report(report))

    @_rpc
    def GetKeys(
        self, request: remit_pb2.GetKeysRequest, context: grpc.ServicerContext
    ) -> remit_pb2.GetKeysResponse:
        return remit_pb2.GetKeysResponse(
            jwks_json=json.dumps(self._core.jwks()), issuer=self._core.config.issuer
        )

    @_rpc
    def Exchange(
        self, request: remit_pb2.ExchangeRequest, context: grpc.ServicerContext
    ) -> remit_pb2.ExchangeResponse:
        # No app credential: the token and its proof of possession are the credential.
        result = self._core.exchange(
            token=request.token,
            proof=request.proof,
            capabilities=_capabilities(request.capabilities, "capabilities"),
            ttl=request.ttl_seconds,
            audience=list(request.audience),
            actor=request.actor,
            cnf_jkt=request.cnf_jkt,
        )
        return remit_pb2.ExchangeResponse(
            token=result.token, jti=result.jti, expires_at=result.expires_at, depth=result.depth
        )

    @_rpc
    def Describe(
        self, request: remit_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> remit_pb2.DescribeResponse:
        found = self._core.describe(
            self._app(context),
            grant_id=request.grant_id,
            capabilities=_capabilities(request.capabilities, "capabilities"),
        )
        return remit_pb2.DescribeResponse(
            text=found.text, capabilities=found.capabilities, risk=found.risk
        )

    @_rpc
    def Introspect(
        self, request: remit_pb2.IntrospectRequest, context: grpc.ServicerContext
    ) -> remit_pb2.IntrospectResponse:
        if self._introspector is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "introspection is not enabled")
        assert self._introspector is not None
        app = self._app(context)
        found = self._introspector.introspect(
            app,
            token=request.token,
            audience=request.audience,
            action=request.action,
            args=_json_field(request.args_json or "{}", "args_json"),
            proof=request.proof,
        )
        return remit_pb2.IntrospectResponse(
            allowed=found.allowed,
            code=found.code,
            message=found.message,
            grant_id=found.grant_id,
            jti=found.jti,
            subject=found.subject,
            agent=found.agent,
            expires_at=found.expires_at,
            anc=found.anc,
            capability=found.capability,
        )
