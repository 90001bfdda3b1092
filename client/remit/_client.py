"""``remit.Client``: the app-side gRPC client (create grants, mint, revoke, keys).

Errors come back as :mod:`remit` exceptions (``remit.PermissionDenied`` …), never
as raw ``grpc.RpcError``: callers should not need to know the transport.

Faults: a call the service could not take (``UNAVAILABLE``: the service is down,
restarting or draining, or its Redis is) is retried with backoff (:class:`remit.Retry`)
when repeating it is safe, and surfaces as ``remit.Unavailable`` otherwise. Several
service replicas can sit behind one client: calls are spread round robin over them
and skip a replica that is down.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from ._exchange import EXCHANGE_ACTION, exchange_args
from ._retry import Retry
from .v1 import remit_pb2, remit_pb2_grpc

if TYPE_CHECKING:
    from .agent import AgentKey

__all__ = ["Client", "Consent", "Exchanged", "Grant", "Introspection"]

_ERRORS: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    # This client never cancels a call, so CANCELLED comes from the other side: a service
    # that is stopping cancels the calls it had received but not yet started.
    grpc.StatusCode.CANCELLED: Unavailable,
}

# Methods a retry cannot make do anything the first attempt would not have done:
#   GetGrant, ListGrants, GetKeys, GetAlignment  read only.
#   Revoke                         revoking what is revoked is a no-op (the answer's
#                                  revoked_at is then the retry's time).
#   Mint                           writes only the new token's own record; if the first
#                                  attempt did reach the service, a retry at worst mints
#                                  an extra token that nobody receives and that expires
#                                  unused (it is under the same grant, so revoking the
#                                  grant still kills it).
#   Exchange                       the same as Mint; each attempt carries a fresh proof
#                                  (a proof is single use, so a re-sent one is refused).
# CreateGrant is NOT here: a retry after the request reached the service records the
# consent twice. grpcio does not say whether a failed call left the client (the only
# hint is the wording of the error details, which differs between load-balancing
# policies and grpc versions), so CreateGrant is never retried: on
# remit.Unavailable the caller must assume the grant may exist (list_grants shows it).
_IDEMPOTENT = frozenset(
    {"GetGrant", "ListGrants", "GetKeys", "Revoke", "Mint", "Exchange", "Describe", "GetAlignment"}
)
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
# Target schemes grpc resolves itself; such a target is passed through as given.
_SCHEMES = ("ipv4:", "ipv6:", "dns:", "unix:", "unix-abstract:", "vsock:", "xds:")
_sleep = time.sleep  # a module attribute so tests can watch the backoff
DEFAULT_RETRY = Retry()


def _error(err: grpc.RpcError) -> ServiceError:
    code = err.code()
    detail = err.details() or code.name
    field = reason = None
    for key, value in err.trailing_metadata() or ():
        if key == "remit-field":
            field = value
        elif key == "remit-code":
            reason = value
    return _ERRORS.get(code, ServiceError)(detail, field=field, reason=reason)


def _pushback(err: grpc.RpcError) -> float | None:
    """The server's ``grpc-retry-pushback-ms`` (gRPC retry design A6) in seconds: None if
    absent; negative if the server asks not to retry (a negative or unparsable value)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-retry-pushback-ms":
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            if not text.isascii() or not text.isdigit():
                return -1.0
            return int(text) / 1000
    return None


def _address(text: str) -> tuple[int, str]:
    """``host:port`` of an IP literal -> (IP version, ``host:port`` as grpc wants it)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target {text!r}: expected host:port")
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        raise ValueError(
            f"target {text!r}: several targets must be IP addresses (127.0.0.1:50051, "
            "[::1]:50051); for a host name that resolves to every replica give the one "
            "target dns:///name:port"
        ) from None
    return ip.version, (f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")


def channel_target(target: str | Sequence[str]) -> str:
    """The grpc target for ``target``: one ``host:port`` (or a grpc URI such as
    ``dns:///name:port``) as given; several replicas (``"a:p1,b:p2"`` or a list) as one
    static ``ipv4:`` / ``ipv6:`` target the channel balances over."""
    if isinstance(target, str):
        text = target.strip()
        if text.startswith(_SCHEMES):
            return text
        parts = text.split(",")
    else:
        parts = list(target)
    parts = [p.strip() for p in parts]
    if not parts or not all(parts):
        raise ValueError(f"target {target!r}: empty address")
    if len(parts) == 1:
        return parts[0]
    addresses = [_address(p) for p in parts]
    versions = {v for v, _ in addresses}
    if len(versions) > 1:
        raise ValueError(f"target {target!r}: mixes IPv4 and IPv6 addresses")
    return f"ipv{versions.pop()}:" + ",".join(a for _, a in addresses)


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
            capabilities=[_capability_from_message(c) for c in m.capabilities],
            purpose=m.purpose,
            created_at=m.created_at,
            expires_at=m.expires_at,
            revoked=m.revoked,
        )


def _capability_from_message(c: remit_pb2.Capability) -> dict[str, Any]:
    cap = {"action": c.action, "args": json.loads(c.args_json or "{}")}
    if c.limits_json:
        cap["limits"] = json.loads(c.limits_json)
    return cap


@dataclass(frozen=True)
class Exchanged:
    """A token from :meth:`Client.exchange`. ``depth``: how many ancestors it has."""

    token: str
    jti: str
    expires_at: int
    depth: int


@dataclass(frozen=True)
class Introspection:
    """The service's decision for one call (:meth:`Client.introspect`). Denied:
    ``allowed`` False and ``code`` a :class:`remit.Code` value (``"revoked"`` …), the
    facts left empty. Allowed: ``code`` empty and the token's non-secret facts."""

    allowed: bool
    code: str
    message: str
    grant_id: str
    jti: str
    subject: str
    agent: str
    expires_at: int
    anc: tuple[str, ...]
    capability: int


@dataclass(frozen=True)
class Consent:
    """Consent text from :meth:`Client.describe`: the whole ``text``, one line per
    capability, and the highest catalog ``risk`` (low, medium, high or unknown)."""

    text: str
    capabilities: list[str]
    risk: str


def _capability_messages(caps: Sequence[Mapping[str, Any]]) -> list[remit_pb2.Capability]:
    out = []
    for cap in caps:
        if not isinstance(cap, Mapping) or set(cap) - {"action", "args", "limits"}:
            raise InvalidArgument(
                "a capability is a mapping with 'action', 'args' and optionally 'limits'",
                field="capabilities",
            )
        try:
            args_json = json.dumps(cap.get("args", {}), allow_nan=False, separators=(",", ":"))
            limits = cap.get("limits")
            limits_json = (
                json.dumps(limits, allow_nan=False, separators=(",", ":"))
                if limits is not None
                else ""
            )
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"capability args or limits are not JSON: {exc}", field="capabilities"
            ) from None
        out.append(
            remit_pb2.Capability(
                action=str(cap.get("action", "")), args_json=args_json, limits_json=limits_json
            )
        )
    return out


class Client:
    """Talk to a remit service as an app.

    ``target``: ``host:port``, a grpc URI (``dns:///name:port``), or several replicas of
    one service (same Redis, prefix and keys) as ``"10.0.0.1:50051,10.0.0.2:50051"`` or a
    list of IP ``host:port``. Calls are spread round robin over the addresses; a replica
    that is down is skipped until it answers again.

    ``timeout``: seconds per attempt. ``retry``: how calls the service could not take
    are retried (:class:`remit.Retry`; ``None``: never). Only calls that are safe to
    repeat are retried: ``get_grant``, ``list_grants``, ``jwks``, ``issuer``, ``mint``,
    ``revoke``, ``describe`` and ``exchange`` (each attempt with a fresh proof), on
    ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` or ``CANCELLED`` (a stopping
    service cancels calls it had not started). ``create_grant`` is never retried: on
    ``remit.Unavailable`` the grant may or may not have been recorded.
    With a retry policy the channel also reconnects to a restarted service on the same
    schedule (gRPC's default would wait 1 s, then longer, up to 2 min).

    ``credentials``: ``grpc.ssl_channel_credentials(...)`` for TLS; plaintext otherwise
    (fine on loopback, not across a network).

    ``api_key`` may be omitted by an agent that only calls :meth:`exchange` (and
    :meth:`jwks` / :meth:`issuer`): Exchange takes no app credential.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        retry: Retry | None = DEFAULT_RETRY,
    ) -> None:
        if api_key is not None and not api_key:
            raise ValueError("api_key must not be empty (omit it for an agent-only client)")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError("retry must be a remit.Retry or None")
        options: list[tuple[str, Any]] = [("grpc.lb_policy_name", "round_robin")]
        if retry is not None:
            options += [
                ("grpc.initial_reconnect_backoff_ms", max(1, round(retry.initial * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1, round(retry.maximum * 1000))),
            ]
        grpc_target = channel_target(target)
        self._channel = (
            grpc.secure_channel(grpc_target, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(grpc_target, options=options)
        )
        self._stub = remit_pb2_grpc.RemitStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._issuer: str | None = None
        self._timeout = timeout
        self._retry = retry
        self._closed = False

    def _call(
        self, method: str, request: Any, *, fresh: Callable[[], Any] | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None, timeout: float | None = None,
    ) -> Any:
        """``fresh``: builds the request for each attempt (Exchange: a new proof each)."""
        attempts = 1
        if self._retry is not None and method in _IDEMPOTENT:
            attempts = self._retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                return getattr(self._stub, method)(
                    fresh() if fresh is not None else request,
                    metadata=self._metadata if metadata is None else metadata,
                    timeout=timeout or self._timeout,
                )
            except grpc.RpcError as err:
                if attempt < attempts and err.code() in _RETRYABLE and not self._closed:
                    assert self._retry is not None
                    delay = _pushback(err)
                    if delay is None:
                        delay = self._retry.backoff(attempt)
                    else:  # the server's word, within our own bound
                        delay = min(delay, self._retry.maximum)
                    if delay >= 0:
                        _sleep(delay)
                        continue
                raise _error(err) from None
        raise AssertionError("unreachable")  # pragma: no cover (the loop returns or raises)

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
        self,
        *,
        jti: str | None = None,
        grant_id: str | None = None,
        agent: str | None = None,
        subject: str | None = None,
        all: bool = False,
        before: int = 0,
        reason: str = "",
    ) -> int:
        """Revoke one token (and its descendants), a whole grant, or every token of the
        app's grants issued before ``before`` (Unix s; 0 = now) to an ``agent``, from a
        ``subject``, or under ``all`` of them. Returns the revocation time (Unix s)."""
        targets = {"jti": jti, "grant_id": grant_id, "agent": agent, "subject": subject}
        given = {k: v for k, v in targets.items() if v}
        if len(given) + bool(all) != 1:
            raise InvalidArgument(
                "give exactly one of jti=, grant_id=, agent=, subject= or all=True",
                field="target",
            )
        request = remit_pb2.RevokeRequest(reason=reason, before=before)
        if all:
            request.all = True
        for name, value in given.items():
            setattr(request, name, value)
        revoked_at: int = self._call("Revoke", request).revoked_at
        return revoked_at

    def exchange(
        self,
        token: str,
        key: AgentKey,
        *,
        capabilities: Sequence[Mapping[str, Any]] | None = None,
        ttl: int = 0,
        audience: Sequence[str] | None = None,
        actor: str = "",
        cnf_jkt: str = "",
    ) -> Exchanged:
        """Trade ``token`` (bound to ``key``) for a narrower one. Needs no app credential.

        Renewal: leave ``actor`` and ``cnf_jkt`` empty (same agent, same key; the grant's
        own agent may outlive the old token, within the grant; a delegated token's renewal
        stays within its own expiry). Sub-agent: ``actor`` = its id (never the grant's
        agent) and ``cnf_jkt`` = its key's thumbprint (the token never outlives ``token``).
        ``capabilities`` (CreateGrant form; None = the token's own) must be narrower than
        the token's; ``audience`` a subset of its audiences. ``ttl`` in seconds (0 =
        default). Each attempt sends a fresh proof of possession (aud = the issuer).
        """
        from .agent import proof  # agent side (PyNaCl); imported only when used

        if isinstance(audience, str):
            audience = [audience]
        caps = list(capabilities or [])
        auds = list(audience or [])
        messages = _capability_messages(caps)
        fields = exchange_args(
            capabilities=caps, ttl_seconds=ttl, audience=auds, actor=actor, cnf_jkt=cnf_jkt
        )
        issuer = self.issuer()

        def request() -> remit_pb2.ExchangeRequest:
            return remit_pb2.ExchangeRequest(
                token=token,
                proof=proof(key, token, audience=issuer, action=EXCHANGE_ACTION, args=fields),
                capabilities=messages,
                ttl_seconds=ttl,
                audience=auds,
                actor=actor,
                cnf_jkt=cnf_jkt,
            )

        resp = self._call("Exchange", None, fresh=request, metadata=())
        return Exchanged(
            token=resp.token, jti=resp.jti, expires_at=resp.expires_at, depth=resp.depth
        )

    def describe(
        self,
        grant_id: str | None = None,
        *,
        capabilities: Sequence[Mapping[str, Any]] | None = None,
    ) -> Consent:
        """Consent text for one of this app's grants, or for capabilities (CreateGrant
        form) before they are granted. Give exactly one."""
        if bool(grant_id) == bool(capabilities):
            raise InvalidArgument("give exactly one of grant_id or capabilities=", field="target")
        resp = self._call(
            "Describe",
            remit_pb2.DescribeRequest(
                grant_id=grant_id or "",
                capabilities=_capability_messages(capabilities or []),
            ),
        )
        return Consent(text=resp.text, capabilities=list(resp.capabilities), risk=resp.risk)

    def get_alignment(
        self,
        *,
        grant_id: str = "",
        agent: str = "",
        subject: str = "",
        since_ms: int = 0,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """The action-alignment report (schema ``remit.alignment/v1``, docs/audit.md) over
        the audit trail, for this app's grants only. The service reads the whole stream
        (from ``since_ms``) per call, hence the longer default ``timeout``."""
        request = remit_pb2.GetAlignmentRequest(
            grant_id=grant_id, agent=agent, subject=subject, since_ms=since_ms
        )
        resp = self._call("GetAlignment", request, timeout=timeout)
        report: dict[str, Any] = json.loads(resp.report_json)
        return report

    def introspect(
        self,
        token: str,
        *,
        audience: str,
        action: str,
        args: Mapping[str, Any] | None = None,
        proof: str | None = None,
    ) -> Introspection:
        """Ask the service to check one call, as the backend ``audience`` would offline
        (strict revocation, the proof spent, budgets charged): for backends that want an
        online check. A denial is a result (``allowed`` False, ``code``), not an
        exception. Never retried: a repeat would spend the budgets twice."""
        try:
            args_json = json.dumps({} if args is None else dict(args), separators=(",", ":"),
                                   allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"args: not a JSON object: {exc}", field="args_json") from None
        resp = self._call(
            "Introspect",
            remit_pb2.IntrospectRequest(
                token=token, audience=audience, action=action, args_json=args_json,
                proof=proof or "",
            ),
        )
        return Introspection(
            allowed=resp.allowed,
            code=resp.code,
            message=resp.message,
            grant_id=resp.grant_id,
            jti=resp.jti,
            subject=resp.subject,
            agent=resp.agent,
            expires_at=resp.expires_at,
            anc=tuple(resp.anc),
            capability=resp.capability,
        )

    def _keys(self) -> Any:
        return self._call("GetKeys", remit_pb2.GetKeysRequest())

    def jwks(self) -> dict[str, Any]:
        """The service's published verification keys (JWKS)."""
        doc: dict[str, Any] = strict_json_loads(self._keys().jwks_json)
        return doc

    def issuer(self) -> str:
        """The issuer name the service puts in ``iss`` (asked once, then remembered)."""
        if self._issuer is None:
            self._issuer = str(self._keys().issuer)
        return self._issuer

    def close(self) -> None:
        self._closed = True  # a call cut by close() (CANCELLED) is not retried
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
