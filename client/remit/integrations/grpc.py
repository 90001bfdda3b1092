"""gRPC: carry a remit token and proof on every call (agent), enforce them (tool backend).

Agent side, one interceptor per channel::

    channel = grpc.intercept_channel(
        grpc.insecure_channel(target),
        RemitClientInterceptor(key, token, audience="payments",
                               actions={"/bank.Payments/Transfer": "payments.transfer"}),
    )

Every call gets ``authorization: Remit <token>`` and, with a key, ``remit-proof: <proof>``
(a fresh single-use proof over the request's arguments). A method missing from
``actions`` raises ``ValueError`` before anything is sent: a token only travels to the
methods it was meant for.

Tool backend side::

    server = grpc.server(pool, interceptors=[
        RemitServerInterceptor(verifier, {"/bank.Payments/Transfer": "payments.transfer"},
                               public={"/grpc.health.v1.Health/Check"}),
    ])

Before the servicer runs, the interceptor checks token, proof, action and arguments with
``verifier.check``. A denial aborts the call with the status of ``Denied.kind``
(``UNAUTHENTICATED`` / ``PERMISSION_DENIED`` / ``UNAVAILABLE``), details
``"<code>: <message>"`` and trailing metadata ``remit-code: <code>``. A method neither in
``actions`` nor in ``public`` is refused (``action_not_granted``): the interceptor fails
closed, also for methods no servicer implements. Anything unexpected while checking is
``INTERNAL`` with no detail (it goes to the log). While the servicer runs, the call's
token and proof are bound as by :func:`remit.credentials`, marked as proven (the
interceptor spent the proof), so ``@verifier.guard`` inside re-checks scope but not
the proof; a :class:`remit.Denied` that escapes the servicer is reported the same way.

Arguments. Both sides must derive the same arguments from a request, or every proof
fails with ``proof_mismatch``. By default both use :func:`message_args`, the proto3 JSON
mapping of the message (``MessageToDict`` with the ``.proto`` field names). Mind what
that mapping does to values before writing constraints:

- 64-bit integers (``int64``, ``uint64``, ``sint64``, ``fixed64``, ``sfixed64``) become
  decimal **strings** (JSON cannot carry them exactly): constrain them with string
  operators (``in``, ``regex``…), not ``le``/``lt``. 32-bit integers stay numbers.
- ``float``/``double`` are numbers; so is every number in a ``google.protobuf.Struct``.
- Fields without presence that hold their default value (``0``, ``""``, ``false``, an
  empty list) are **left out**: mark such constraints ``"optional": true``.
- Enums become their names, ``bytes`` base64 strings, well-known types their JSON forms.

Pass ``args=`` (the same function on both sides) to use another rule.

Only unary-request methods can be checked (unary-unary and unary-stream): the arguments
of a client-streaming call are not known when it starts, so such methods are refused
(``unsupported``) unless listed in ``public``. This is the synchronous API (``grpc.server``,
``grpc.intercept_channel``), not ``grpc.aio``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, NoReturn

import grpc
from google.protobuf.json_format import MessageToDict

from .._constraints import valid_call_action
from .._context import proven_credentials
from .._errors import Code, Denied
from .._verifier import Verifier
from ..agent import AgentKey, proof

__all__ = [
    "AUTHORIZATION_METADATA",
    "CODE_METADATA",
    "PROOF_METADATA",
    "RemitClientInterceptor",
    "RemitServerInterceptor",
    "call_metadata",
    "message_args",
]

AUTHORIZATION_METADATA = "authorization"  # value: "Remit <token>"
PROOF_METADATA = "remit-proof"
CODE_METADATA = "remit-code"  # trailing metadata of a denied call: the stable reason code
_SCHEME = "Remit"

log = logging.getLogger("remit.integrations.grpc")

ArgsFn = Callable[[Any], Mapping[str, Any]]

STATUS_OF_KIND: Mapping[str, grpc.StatusCode] = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


def message_args(request: Any) -> dict[str, Any]:
    """The default arguments of a call: the request message in the proto3 JSON mapping.

    ``int64``-family values become strings and default-valued fields are left out (see
    the module docstring).
    """
    args: dict[str, Any] = MessageToDict(request, preserving_proto_field_name=True)
    return args


def call_metadata(
    key: AgentKey | None,
    token: str,
    *,
    audience: str,
    action: str,
    args: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """Metadata that carries ``token`` and, with ``key``, a fresh proof for this call.

    For callers that set metadata themselves: ``stub.Transfer(req, metadata=...)``.
    ``args`` must be what the backend derives from the request (by default
    :func:`message_args` of it).
    """
    metadata = [(AUTHORIZATION_METADATA, f"{_SCHEME} {token}")]
    if key is not None:
        metadata.append(
            (PROOF_METADATA, proof(key, token, audience=audience, action=action, args=args))
        )
    return metadata


# -- agent side ------------------------------------------------------------------------


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):  # type: ignore[misc]
    pass


class RemitClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Add token and proof metadata to unary-request calls on a channel.

    ``key``: the agent key the token is bound to (``None`` for an unbound token: no
    proof is sent). ``token``: the token, or a function returning the current one (so a
    long-lived channel can carry renewed tokens). ``actions``: full method name
    (``"/pkg.Service/Method"``) to remit action, as a mapping or a function; an unknown
    method raises ``ValueError`` before the call is sent. ``args``: request to
    arguments, default :func:`message_args`; the backend must use the same function.
    Metadata entries ``authorization`` and ``remit-proof`` set by the caller are
    replaced.
    """

    def __init__(
        self,
        key: AgentKey | None,
        token: str | Callable[[], str],
        *,
        audience: str,
        actions: Mapping[str, str] | Callable[[str], str],
        args: ArgsFn | None = None,
    ) -> None:
        if key is not None and not isinstance(key, AgentKey):
            raise TypeError("key must be a remit.agent.AgentKey or None")
        if not callable(token) and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string or a function returning one")
        if not audience or not isinstance(audience, str):
            raise ValueError("audience is required")
        if isinstance(actions, Mapping):
            _check_actions(actions)
            self._actions: Mapping[str, str] | None = dict(actions)
            self._action_fn: Callable[[str], str] | None = None
        elif callable(actions):
            self._actions = None
            self._action_fn = actions
        else:
            raise TypeError("actions must be a mapping or a function of the method name")
        self._key = key
        self._token = token
        self._audience = audience
        self._args: ArgsFn = args if args is not None else message_args

    def _action(self, method: str) -> str:
        if self._actions is not None:
            action = self._actions.get(method)
            if action is None:
                raise ValueError(
                    f"no remit action for gRPC method {method!r}; add it to actions="
                )
            return action
        assert self._action_fn is not None
        action = self._action_fn(method)
        if not valid_call_action(action):
            raise ValueError(f"actions({method!r}) returned an invalid action {action!r}")
        return action

    def _details(self, details: Any, request: Any) -> _ClientCallDetails:
        method = details.method
        if isinstance(method, bytes):
            method = method.decode("ascii")
        action = self._action(method)
        token = self._token() if callable(self._token) else self._token
        args = self._args(request) if self._key is not None else None
        ours = call_metadata(self._key, token, audience=self._audience, action=action, args=args)
        ours_keys = (AUTHORIZATION_METADATA, PROOF_METADATA)
        metadata = [(k, v) for k, v in (details.metadata or ()) if k not in ours_keys]
        return _ClientCallDetails(
            method,
            details.timeout,
            [*metadata, *ours],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details, request), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details, request), request)


def _check_actions(actions: Mapping[str, str]) -> None:
    for method, action in actions.items():
        if not isinstance(method, str) or not method.startswith("/") or method.count("/") != 2:
            raise ValueError(f"not a full gRPC method name ('/pkg.Service/Method'): {method!r}")
        if not valid_call_action(action):
            raise ValueError(f"invalid action name {action!r} for {method!r}")


# -- backend side ----------------------------------------------------------------------


def _abort(context: Any, denied: Denied) -> NoReturn:
    """Abort the call with the status of ``denied.kind`` (``context.abort`` raises)."""
    context.set_trailing_metadata(((CODE_METADATA, denied.code.value),))
    context.abort(STATUS_OF_KIND[denied.kind], f"{denied.code.value}: {denied.message}")
    raise AssertionError("unreachable")  # pragma: no cover


def _credentials(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str | None]:
    tokens: list[Any] = []
    proofs: list[Any] = []
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA:
            tokens.append(value)
        elif key == PROOF_METADATA:
            proofs.append(value)
    if not tokens:
        raise Denied(Code.TOKEN_REQUIRED, "the call carries no authorization metadata")
    if len(tokens) > 1:
        raise Denied(Code.MALFORMED, "the call carries more than one authorization entry")
    if len(proofs) > 1:
        raise Denied(Code.BAD_PROOF, "the call carries more than one remit-proof entry")
    value = tokens[0]
    if not isinstance(value, str):
        raise Denied(Code.MALFORMED, "authorization metadata is not text")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != _SCHEME.lower():
        raise Denied(Code.TOKEN_REQUIRED, "authorization does not carry a Remit token")
    token = token.strip()
    if not token:
        raise Denied(Code.MALFORMED, "the Remit token is empty")
    pop = proofs[0] if proofs else None
    if pop is not None and not isinstance(pop, str):
        raise Denied(Code.BAD_PROOF, "remit-proof metadata is not text")
    return token, pop


class RemitServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Check every call with ``verifier`` before the servicer runs; fail closed.

    ``actions``: full method name (``"/pkg.Service/Method"``) to remit action.
    ``public``: full method names served without any check (health, reflection).
    Every other method is refused with ``action_not_granted``. ``args``: request to
    arguments, default :func:`message_args`; the agents must use the same function.
    """

    def __init__(
        self,
        verifier: Verifier,
        actions: Mapping[str, str],
        *,
        args: ArgsFn | None = None,
        public: Collection[str] = (),
    ) -> None:
        if isinstance(public, str):
            raise TypeError("public must be a collection of method names, not one string")
        _check_actions(actions)
        both = sorted(set(actions) & set(public))
        if both:
            raise ValueError(f"methods both checked and public: {both}")
        self._verifier = verifier
        self._actions = dict(actions)
        self._public = frozenset(public)
        self._args: ArgsFn = args if args is not None else message_args

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method
        if method in self._public:
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        action = self._actions.get(method)
        if action is None:
            return _refusing(
                handler,
                Denied(Code.ACTION_NOT_GRANTED, f"method {str(method)[:120]!r} is not granted"),
            )
        if handler is None:  # mapped but not served: grpc answers UNIMPLEMENTED
            return None
        if handler.request_streaming:
            return _refusing(
                handler,
                Denied(Code.UNSUPPORTED, "client-streaming methods cannot be checked by remit"),
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, action),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary_unary(handler.unary_unary, action),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _authorize(self, request: Any, context: Any, action: str) -> tuple[str, str | None]:
        """Check the call; abort it (raising) if it is not allowed."""
        try:
            token, pop = _credentials(context.invocation_metadata())
            self._verifier.check(token, action=action, args=self._args(request), proof=pop)
            return token, pop
        except Denied as denied:
            _abort(context, denied)
        except Exception:
            log.exception("remit check failed unexpectedly for action %r", action)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")  # pragma: no cover (abort raises)

    def _unary_unary(
        self, behavior: Callable[[Any, Any], Any], action: str
    ) -> Callable[[Any, Any], Any]:
        def checked(request: Any, context: Any) -> Any:
            token, pop = self._authorize(request, context, action)
            with proven_credentials(token, pop):
                try:
                    return behavior(request, context)
                except Denied as denied:
                    _abort(context, denied)
            raise AssertionError("unreachable")  # pragma: no cover (abort raises)

        return checked

    def _unary_stream(
        self, behavior: Callable[[Any, Any], Iterable[Any]], action: str
    ) -> Callable[[Any, Any], Iterator[Any]]:
        def checked(request: Any, context: Any) -> Iterator[Any]:
            # Checked eagerly, when grpc calls the handler; the servicer then runs
            # lazily, with the credentials bound around each step (and only then, so
            # nothing leaks into other work on the thread between messages).
            token, pop = self._authorize(request, context, action)
            return _bound_stream(behavior, request, context, token, pop)

        return checked


def _bound_stream(
    behavior: Callable[[Any, Any], Iterable[Any]],
    request: Any,
    context: Any,
    token: str,
    pop: str | None,
) -> Iterator[Any]:
    with proven_credentials(token, pop):
        try:
            responses = iter(behavior(request, context))
        except Denied as denied:
            _abort(context, denied)
    while True:
        with proven_credentials(token, pop):
            try:
                item = next(responses)
            except StopIteration:
                return
            except Denied as denied:
                _abort(context, denied)
        yield item


def _refusing(handler: Any, denied: Denied) -> Any:
    """A handler of the same shape as ``handler`` that refuses every call unread."""

    def refuse(_request: Any, context: Any) -> NoReturn:
        _abort(context, denied)

    streaming = (
        (handler.request_streaming, handler.response_streaming)
        if handler is not None
        else (False, False)
    )
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[streaming]
    return make(refuse)
