"""Tool-backend side of HTTP: ASGI middleware that checks every call before the app runs.

::

    verifier = remit.Verifier.from_jwks(jwks_url, issuer=..., audience="payments", ...)
    app = RemitMiddleware(
        app,                                    # Starlette, FastAPI, any ASGI app
        verifier,
        routes={("POST", "/transfer"): "payments.transfer",
                ("GET", "/balance"): "payments.read_balance"},
        public=["/healthz"],
    )

For each HTTP request:

1. ``public`` paths (exact, any method) go straight to the app, unchecked.
2. ``Authorization: Remit <token>`` is required (else 401 ``token_required``).
3. ``(method, path)`` must be in ``routes`` (exact match of the method and the
   percent-decoded path; no templates, no trailing-slash folding). Anything else is
   denied with 403 ``action_not_granted``: an unmapped route never reaches the app.
4. The body is read (at most ``max_body_bytes``, else 413) and the arguments derived
   by one rule shared with the agent side (:mod:`remit.integrations._wire`): the JSON
   object body of ``POST``/``PUT``/``PATCH``, the query parameters otherwise. A
   malformed request is denied with 400 (415 for a non-JSON ``Content-Type``), code
   ``invalid_request``.
5. ``verifier.check(token, action=, args=, proof=<Remit-Proof>)`` runs in a worker
   thread (it may wait on Redis). A :class:`remit.Denied` is answered with its
   ``http_status`` (401 / 403 / 503) and ``Denied.to_json()``; 401s carry
   ``WWW-Authenticate: Remit error="<code>"``. Any other exception is answered
   500 ``{"error": "internal"}`` (logged, no detail sent).
6. Allowed: the app is called with the body replayed (it reads the same bytes that
   were checked), the :class:`remit.Decision` in ``scope["remit.decision"]``, and
   the token and proof bound as by :func:`remit.credentials` for the duration of the
   call, so ``remit.current_credentials()`` and ``@verifier.guard`` work inside it.

The credentials are marked as proven: the middleware checked the proof (and spent it,
it is single-use), so a ``@verifier.guard`` inside the endpoint re-checks the token's
validity, scope (for its own action and arguments) and revocation, but not the proof.

WebSocket connections are refused (closed with 1008 before the handshake completes);
``lifespan`` events pass through.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, MutableMapping
from typing import Any

import anyio.to_thread

from .._constraints import valid_call_action
from .._context import proven_credentials
from .._errors import Code, Denied
from .._verifier import Decision, Verifier
from ..agent import PROOF_HEADER
from ._wire import AUTH_SCHEME, MAX_BODY_BYTES, MediaTypeError, call_args

__all__ = ["DECISION_SCOPE_KEY", "RemitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DECISION_SCOPE_KEY = "remit.decision"

_log = logging.getLogger(__name__)
_AUTHORIZATION = b"authorization"
_PROOF = PROOF_HEADER.lower().encode("ascii")
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_INTERNAL = json.dumps({"error": "internal"}).encode()


class _Reject(Exception):  # internal control flow, never escapes
    """Deny with ``denial`` at ``status`` (a request-level problem, before the check)."""

    def __init__(self, status: int, denial: Denied) -> None:
        self.status = status
        self.denial = denial


class _Disconnected(Exception):
    """The client went away while the body was being read."""


class RemitMiddleware:
    """Check every HTTP request against ``verifier`` before ``app`` sees it (fail closed).

    ``routes`` maps ``(method, path)`` to the action name checked for it; ``public``
    lists paths served without a check. ``max_body_bytes`` caps the request body.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        routes: Mapping[tuple[str, str], str],
        *,
        public: Collection[str] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not callable(getattr(verifier, "check", None)):
            raise TypeError("verifier must be a remit.Verifier")
        if isinstance(public, str):
            raise TypeError("public is a collection of paths, not one string")
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        table: dict[tuple[str, str], str] = {}
        for key, action in routes.items():
            if not (isinstance(key, tuple) and len(key) == 2
                    and all(isinstance(part, str) for part in key)):
                raise TypeError(f"routes keys are (method, path) string pairs, not {key!r}")
            method, path = key[0].upper(), key[1]
            _check_path(path)
            if not method.isalpha():
                raise ValueError(f"invalid HTTP method {key[0]!r}")
            if not valid_call_action(action):
                raise ValueError(f"invalid action name {action!r} for {method} {path}")
            if (method, path) in table:
                raise ValueError(f"route {method} {path} is mapped twice")
            table[(method, path)] = action
        public_paths = frozenset(public)
        for path in public_paths:
            _check_path(path)
        both = sorted(path for _, path in table if path in public_paths)
        if both:
            raise ValueError(f"paths both public and checked: {both}")
        self.app = app
        self._verifier = verifier
        self._routes: Mapping[tuple[str, str], str] = table
        self._public = public_paths
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            raise RuntimeError(f"RemitMiddleware: unsupported ASGI scope type {kind!r}")
        if scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        try:
            token, proof, action = self._credentials(scope)
            body = await self._read_body(scope, receive)
            args = self._args(scope, body)
            decision = await anyio.to_thread.run_sync(
                functools.partial(
                    self._verifier.check, token, action=action, args=args, proof=proof
                )
            )
            if not isinstance(decision, Decision) or decision.allowed is not True:
                raise TypeError(f"verifier.check returned {type(decision).__name__}")
        except _Reject as reject:
            await _deny(send, reject.status, reject.denial)
            return
        except Denied as denial:
            await _deny(send, denial.http_status, denial)
            return
        except _Disconnected:
            return
        except Exception:
            _log.exception("remit: the check of %s %s failed", scope["method"], scope["path"])
            await _respond(send, 500, _INTERNAL, ())
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope = dict(scope)
        scope[DECISION_SCOPE_KEY] = decision
        with proven_credentials(token, proof):
            await self.app(scope, replay, send)

    # -- steps -------------------------------------------------------------------------

    def _credentials(self, scope: Scope) -> tuple[str, str | None, str]:
        authorization = _header(scope, _AUTHORIZATION)
        if authorization is None:
            raise Denied(Code.TOKEN_REQUIRED, "no Authorization: Remit <token> header")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != AUTH_SCHEME.lower():
            raise Denied(Code.TOKEN_REQUIRED, "the Authorization scheme is not Remit")
        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise Denied(Code.MALFORMED, "the Remit credential must be one token")
        proof = _header(scope, _PROOF)
        if proof is not None:
            proof = proof.strip()
        action = self._routes.get((scope["method"], scope["path"]))
        if action is None:
            raise Denied(
                Code.ACTION_NOT_GRANTED,
                f"{scope['method']} {scope['path'][:200]} is not an action of this service",
            )
        return token, proof, action

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, _CONTENT_LENGTH)
        if declared is not None:
            if not declared.isdigit():
                raise _bad(400, "invalid Content-Length")
            if int(declared) > self._max_body:
                raise _too_large(self._max_body)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _too_large(self._max_body)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _args(self, scope: Scope, body: bytes) -> dict[str, Any]:
        try:
            return call_args(
                scope["method"], body, scope.get("query_string", b""),
                _header(scope, _CONTENT_TYPE),
            )
        except MediaTypeError as exc:
            raise _bad(415, str(exc)) from None
        except ValueError as exc:
            raise _bad(400, str(exc)) from None


def _check_path(path: object) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"a path starts with '/', not {path!r}")


def _header(scope: Scope, name: bytes) -> str | None:
    """The header's value; a repeated credential or framing header is refused."""
    found: str | None = None
    for key, value in scope["headers"]:
        if key.lower() == name:
            if found is not None:
                raise _bad(400, f"the {name.decode()} header is repeated")
            found = value.decode("latin-1")
    return found


def _bad(status: int, message: str) -> _Reject:
    return _Reject(status, Denied(Code.INVALID_REQUEST, message))


def _too_large(limit: int) -> _Reject:
    return _bad(413, f"the request body is larger than {limit} bytes")


async def _deny(send: Send, status: int, denial: Denied) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if status == 401:
        headers.append((b"www-authenticate", f'Remit error="{denial.code.value}"'.encode()))
    body = json.dumps(denial.to_json(), separators=(",", ":")).encode("utf-8")
    await _respond(send, status, body, headers)


async def _respond(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *headers,
        ],
    })
    await send({"type": "http.response.body", "body": body})
