"""``remit.Client``: the app-side gRPC client (create grants, mint, revoke, keys).

Errors come back as :mod:`remit` exceptions (``remit.PermissionDenied`` …), never
as raw ``grpc.RpcError``: callers should not need to know the transport.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ._encoding import strict_json_loads
from ._errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from .v1 import remit_pb2, remit_pb2_grpc

__all__ = ["Client", "Grant"]

_ERRORS: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


@dataclass(frozen=True)
class Grant:
    """A recorded consent, as the service returns it."""

    id: str
    app: str
    subject: str
    agent: str
    audience: list[str]
    capabilities: list[dict[str, Any]]
    purpose: str
    created_at: int
    expires_at: int
    revoked: bool

    @classmethod
    def _from_message(cls, m: remit_pb2.Grant) -> Grant:
        return cls(
            id=m.id,
            app=m.app,
            subject=m.subject,
            agent=m.agent,
            audience=list(m.audience),
            capabilities=[
                {"action": c.action, "args": json.loads(c.args_json or "{}")}
                for c in m.capabilities
            ],
            purpose=m.purpose,
            created_at=m.created_at,
            expires_at=m.expires_at,
            revoked=m.revoked,
        )


def _capability_messages(caps: Sequence[Mapping[str, Any]]) -> list[remit_pb2.Capability]:
    out = []
    for cap in caps:
        if not isinstance(cap, Mapping) or set(cap) - {"action", "args"}:
            raise InvalidArgument(
                "a capability is a mapping with 'action' and 'args'", field="capabilities"
            )
        try:
            args_json = json.dumps(cap.get("args", {}), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"capability args are not JSON: {exc}", field="capabilities"
            ) from None
        out.append(remit_pb2.Capability(action=str(cap.get("action", "")), args_json=args_json))
    return out


class Client:
    """Talk to a remit service as an app. ``target`` is ``host:port``.

    ``credentials``: ``grpc.ssl_channel_credentials(...)`` for TLS; plaintext otherwise
    (fine on loopback, not across a network).
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self._channel = (
            grpc.secure_channel(target, credentials)
            if credentials is not None
            else grpc.insecure_channel(target)
        )
        self._stub = remit_pb2_grpc.RemitStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as err:
            code = err.code()
            detail = err.details() or code.name
            field = None
            for key, value in err.trailing_metadata() or ():
                if key == "remit-field":
                    field = value
            raise _ERRORS.get(code, ServiceError)(detail, field=field) from None

    def create_grant(
        self,
        *,
        subject: str,
        agent: str,
        audience: Sequence[str],
        capabilities: Sequence[Mapping[str, Any]],
        purpose: str = "",
        ttl: int = 0,
    ) -> Grant:
        """Record the user's consent. ``ttl`` in seconds (0: the app's default)."""
        if isinstance(audience, str):
            audience = [audience]
        msg = self._call(
            "CreateGrant",
            remit_pb2.CreateGrantRequest(
                subject=subject,
                agent=agent,
                audience=list(audience),
                capabilities=_capability_messages(capabilities),
                purpose=purpose,
                ttl_seconds=ttl,
            ),
        )
        return Grant._from_message(msg)

    def get_grant(self, grant_id: str) -> Grant:
        return Grant._from_message(self._call("GetGrant", remit_pb2.GetGrantRequest(id=grant_id)))

    def list_grants(
        self,
        *,
        subject: str = "",
        agent: str = "",
        include_inactive: bool = False,
        page_size: int = 100,
    ) -> Iterator[Grant]:
        """Every matching grant of this app, newest first (pages fetched lazily)."""
        token = ""
        while True:
            resp = self._call(
                "ListGrants",
                remit_pb2.ListGrantsRequest(
                    subject=subject,
                    agent=agent,
                    include_inactive=include_inactive,
                    page_size=page_size,
                    page_token=token,
                ),
            )
            for g in resp.grants:
                yield Grant._from_message(g)
            token = resp.next_page_token
            if not token:
                return

    def mint(
        self,
        grant_id: str,
        capabilities: Sequence[Mapping[str, Any]] | None = None,
        ttl: int = 0,
        *,
        audience: Sequence[str] | None = None,
        cnf_jkt: str = "",
    ) -> str:
        """A token under the grant: its capabilities (None = all of the grant's), ``ttl``
        seconds (0 = default), optionally fewer audiences, optionally key-bound."""
        if isinstance(audience, str):
            audience = [audience]
        resp = self._call(
            "Mint",
            remit_pb2.MintRequest(
                grant_id=grant_id,
                capabilities=_capability_messages(capabilities or []),
                ttl_seconds=ttl,
                audience=list(audience or []),
                cnf_jkt=cnf_jkt,
            ),
        )
        token: str = resp.token
        return token

    def revoke(
        self, *, jti: str | None = None, grant_id: str | None = None, reason: str = ""
    ) -> int:
        """Revoke one token or a whole grant; returns the revocation time (Unix s)."""
        if bool(jti) == bool(grant_id):
            raise InvalidArgument("give exactly one of jti= or grant_id=", field="target")
        request = (
            remit_pb2.RevokeRequest(jti=jti, reason=reason)
            if jti
            else remit_pb2.RevokeRequest(grant_id=grant_id, reason=reason)
        )
        revoked_at: int = self._call("Revoke", request).revoked_at
        return revoked_at

    def _keys(self) -> Any:
        return self._call("GetKeys", remit_pb2.GetKeysRequest())

    def jwks(self) -> dict[str, Any]:
        """The service's published verification keys (JWKS)."""
        doc: dict[str, Any] = strict_json_loads(self._keys().jwks_json)
        return doc

    def issuer(self) -> str:
        """The issuer name the service puts in ``iss``."""
        issuer: str = self._keys().issuer
        return issuer

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
