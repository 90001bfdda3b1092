"""MCP: enforce remit tokens on tool calls (server), carry them on tool calls (agent).

For the official MCP Python SDK, v2 API (``mcp>=2.3``; extra ``remit[mcp]``).

Server side, once, after the server is built::

    from mcp.server import MCPServer
    from remit.integrations.mcp import protect

    server = MCPServer("payments")

    @server.tool()
    def transfer(amount: int, to: str) -> str: ...

    protect(server, verifier, name="payments")   # every tools/call is now checked

Every ``tools/call`` request is checked with ``verifier.check(token,
action="<name>.<tool>", args=<the call's arguments>, proof=proof)`` before the tool runs.
Token and proof travel in the request's ``_meta`` under ``"remit/token"`` and
``"remit/proof"`` (:data:`remit.agent.MCP_TOKEN_KEY`, :data:`remit.agent.MCP_PROOF_KEY`).
A denial never runs the tool: the call answers with a tool error (``isError: true``)
whose text content is the JSON ``{"error": "denied", "code", "message"}``
(:meth:`remit.Denied.to_json`), also sent as ``structuredContent``. Anything unexpected
while checking answers ``{"error": "internal", ...}`` the same way (detail in the log).
While the tool runs, token and proof are bound as by :func:`remit.credentials`, marked
as proven (the check spent the single-use proof), so ``@verifier.guard`` on a tool
re-checks scope and revocation but not the proof. The check
runs in a worker thread, so a verifier on Redis never blocks the event loop.

Where the check sits: :func:`protect` wraps the server's ``tools/call`` *request handler*
(the one the SDK's runner dispatches every ``tools/call`` to, on every transport), not
the tool functions. Tools registered before or after :func:`protect` are covered alike,
and so are extension interceptors (they run inside the check). The wrapper checks the
validated params object and hands *that same object* to the SDK's handler, so the tool
receives exactly the arguments that were checked. A guard middleware fails every
``tools/call`` closed (JSON-RPC internal error, no tool runs) if the ``tools/call``
handler is later replaced by one that is not the wrapper. What it cannot cover: calling
``MCPServer.call_tool(...)`` from Python in the server's own process (no request, no
token), and server middleware added after :func:`protect` that rewrites ``tools/call``
params (the app's own code, trusted).

Action names: ``<name>.<tool>`` must be a remit action (lowercase ``[a-z0-9_-]``
segments joined by dots). A tool whose name is not (``getUser``) is denied
``invalid_request`` on every call; names are never case-folded, so two tools can never
share one grant.

Arguments: the check sees the call's JSON arguments as sent. The SDK validates them for
the tool afterwards (defaults filled in, lax coercion), so grant what the agent sends.

Agent side::

    result = await call_tool(client, "transfer", {"amount": 50, "to": "DE89"},
                             key=key, token=token, audience="payments",
                             server_name="payments")
    raise_for_denial(result)      # remit.Denied if the server refused the call

:func:`call_tool` signs a fresh proof over exactly the arguments it sends. A proof is
single-use, so a resent request is refused ``replayed``: the SDK's ``Client.call_tool``
resends a call on its own for multi-round (``input_required``) tools and after a
``HEADER_MISMATCH`` on 2026-07-28 HTTP. For such tools, drive the rounds yourself
(``client.session.call_tool(..., allow_input_required=True)``) with a fresh
:func:`remit.agent.mcp_meta` per round.

The result field this module trusts is the SDK's ``CallToolResult.is_error`` (wire name
``isError``). If the SDK renames or drops it, :func:`protect` refuses to start and
:func:`call_tool` / :func:`raise_for_denial` raise :class:`MCPResultError` instead of
letting a denial read as a success; a result that carries a remit denial body while its
error flag says success raises too.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any, Final, Protocol, cast

import anyio.to_thread
import mcp.types as mcp_types
from mcp.server import MCPServer, Server
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError

from .._constraints import valid_call_action
from .._context import proven_credentials
from .._errors import Code, Denied, RemitError
from .._verifier import Verifier
from ..agent import MCP_PROOF_KEY, MCP_TOKEN_KEY, AgentKey, mcp_meta

__all__ = [
    "RESULT_ERROR_FIELD",
    "WIRE_ERROR_FIELD",
    "MCPResultError",
    "ToolCaller",
    "call_tool",
    "protect",
    "raise_for_denial",
]

logger = logging.getLogger(__name__)

RESULT_ERROR_FIELD: Final = "is_error"
"""The attribute of the SDK's ``CallToolResult`` that says the call failed."""
WIRE_ERROR_FIELD: Final = "isError"
"""Its name on the wire (MCP specification)."""

_TOOLS_CALL: Final = "tools/call"
_MISSING: Final = object()
_MAX_DENIAL_TEXT: Final = 64 * 1024
_INTERNAL_BODY: Final[Mapping[str, str]] = {
    "error": "internal",
    "message": "the call could not be checked; the tool did not run",
}


class MCPResultError(RemitError):
    """An MCP tool result remit cannot read safely: the SDK's result shape is not the one
    this integration relies on, or a denial is inconsistent or uses an unknown code.
    Raised instead of guessing, so a denial never reads as a success."""


# -- results -------------------------------------------------------------------------


def _error_result(body: Mapping[str, str]) -> mcp_types.CallToolResult:
    """A tool error result carrying ``body``, built from its *wire* form and checked.

    Built with the spec's field names (``isError``), so a rename of the SDK's Python
    attribute cannot silently drop the flag (its models ignore unknown fields); then the
    flag is read back both ways. Any mismatch raises instead of answering a success.
    """
    wire = {
        "content": [{"type": "text", "text": json.dumps(dict(body), separators=(",", ":"))}],
        "structuredContent": dict(body),
        WIRE_ERROR_FIELD: True,
    }
    result = mcp_types.CallToolResult.model_validate(wire, by_alias=True)
    dumped = result.model_dump(by_alias=True, mode="json")
    flag = getattr(result, RESULT_ERROR_FIELD, None)
    if flag is not True or dumped.get(WIRE_ERROR_FIELD) is not True:
        raise MCPResultError(
            f"the MCP SDK's CallToolResult no longer carries the error flag as "
            f"{RESULT_ERROR_FIELD!r} / {WIRE_ERROR_FIELD!r}; remit refuses to answer "
            "tool calls it cannot mark as failed"
        )
    return result


def _is_error(result: object) -> bool:
    """The SDK's error flag of ``result``; :class:`MCPResultError` if there is none."""
    flag = getattr(result, RESULT_ERROR_FIELD, _MISSING)
    if flag is _MISSING:
        raise MCPResultError(
            f"{type(result).__name__} has no attribute {RESULT_ERROR_FIELD!r}: the MCP SDK's "
            "tool result shape changed, so remit cannot tell a denial from a success "
            "(refusing rather than reading it as a success)"
        )
    if type(flag) is not bool:
        raise MCPResultError(
            f"{type(result).__name__}.{RESULT_ERROR_FIELD} is {type(flag).__name__}, "
            "not bool: unexpected MCP SDK result shape"
        )
    return flag


def _denial_body(result: object) -> tuple[str, str] | None:
    """``(code, message)`` if ``result`` carries a remit denial body, else None."""
    structured = getattr(result, "structured_content", None)
    body = _as_denial(structured)
    if body is not None:
        return body
    content = getattr(result, "content", None)
    if isinstance(content, list | tuple):
        for block in content:
            text = getattr(block, "text", None)
            if getattr(block, "type", None) != "text" or not isinstance(text, str):
                continue
            if len(text) > _MAX_DENIAL_TEXT or not text.lstrip().startswith("{"):
                return None
            try:
                return _as_denial(json.loads(text))
            except ValueError:
                return None
    return None


def _as_denial(value: object) -> tuple[str, str] | None:
    if not isinstance(value, Mapping) or value.get("error") != "denied":
        return None
    code, message = value.get("code"), value.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        raise MCPResultError(f"malformed remit denial in a tool result: {dict(value)!r:.200}")
    return code, message


def raise_for_denial(result: object) -> None:
    """Raise :class:`remit.Denied` if ``result`` is a remit denial; else return.

    Reads the SDK's ``CallToolResult.is_error`` explicitly: a result without it (SDK
    shape changed) raises :class:`MCPResultError`, as does a denial body under a
    success flag or a denial with a code this client does not know. A tool's own error
    (``is_error`` true without a remit denial body) is returned as is: check
    ``result.is_error`` for those.
    """
    is_error = _is_error(result)
    body = _denial_body(result)
    if body is None:
        return
    code, message = body
    if not is_error:
        raise MCPResultError(
            f"the tool result carries a remit denial ({code}) but {RESULT_ERROR_FIELD} is "
            "False: the MCP SDK result shape is inconsistent; refusing to read it as a success"
        )
    try:
        known = Code(code)
    except ValueError:
        raise MCPResultError(f"remit denial with unknown code {code[:80]!r}: {message}") from None
    raise Denied(known, message)


# -- server side ---------------------------------------------------------------------


def _lowlevel(server: MCPServer[Any] | Server[Any]) -> Server[Any]:
    if isinstance(server, Server):
        return server
    if isinstance(server, MCPServer):
        inner = getattr(server, "_lowlevel_server", None)
        if isinstance(inner, Server):
            return inner
        raise TypeError(
            "cannot find the low-level Server inside this MCPServer (MCP SDK changed); "
            "pass the low-level mcp.server.Server to protect()"
        )
    raise TypeError(f"protect() needs an mcp MCPServer or Server, not {type(server).__name__}")


def protect(server: MCPServer[Any] | Server[Any], verifier: Verifier, *, name: str) -> None:
    """Check every ``tools/call`` on ``server`` with ``verifier`` before the tool runs.

    ``name`` is the action prefix: tool ``transfer`` is action ``<name>.transfer``. Call
    once, after the server (and any ``tools/call`` handler of a low-level ``Server``) is
    set up; tools may be added before or after. Raises ``ValueError`` if the server has
    no ``tools/call`` handler or is already protected, :class:`MCPResultError` if the
    installed SDK's result shape is not the one this integration relies on.
    """
    if not isinstance(verifier, Verifier):
        raise TypeError("verifier must be a remit.Verifier")
    if not valid_call_action(name):
        raise ValueError(f"name {name!r} is not a valid action prefix (lowercase, dotted)")
    _error_result(_INTERNAL_BODY)  # self-test: refuse to start on an SDK that lost isError
    lowlevel = _lowlevel(server)
    entry = lowlevel.get_request_handler(_TOOLS_CALL)
    if entry is None:
        raise ValueError("the server has no tools/call handler to protect; register tools first")
    if getattr(entry.handler, "__remit_protected__", False):
        raise ValueError("this server is already protected by remit")
    if not issubclass(entry.params_type, mcp_types.CallToolRequestParams):
        raise TypeError(
            f"tools/call params are {entry.params_type.__name__}, not CallToolRequestParams"
        )
    inner = entry.handler
    prefix = name + "."

    async def checked(ctx: ServerRequestContext[Any, Any], params: Any) -> HandlerResult:
        if not isinstance(params, mcp_types.CallToolRequestParams):  # pragma: no cover
            return _error_result(_INTERNAL_BODY)
        action = prefix + params.name
        try:
            token, proof = _credentials_of(params, action)
            await anyio.to_thread.run_sync(
                functools.partial(
                    verifier.check, token, action=action, args=params.arguments, proof=proof
                )
            )
        except Denied as denied:
            # The tool name is the client's: bounded in the log, like everywhere else.
            logger.info("remit denied MCP tool call %r: %s", action[:200], denied.code.value)
            return _error_result(denied.to_json())
        except Exception:
            logger.exception("remit could not check MCP tool call %r; refusing", action[:200])
            return _error_result(_INTERNAL_BODY)
        with proven_credentials(token, proof):
            result: HandlerResult = await inner(ctx, params)
        return result

    checked.__remit_protected__ = True  # type: ignore[attr-defined]
    lowlevel.add_request_handler(_TOOLS_CALL, entry.params_type, checked)
    lowlevel.middleware.append(_HandlerGuard(lowlevel, checked))


def _credentials_of(params: mcp_types.CallToolRequestParams, action: str) -> tuple[str, str | None]:
    meta: Mapping[str, Any] = cast("Mapping[str, Any] | None", params.meta) or {}
    token = meta.get(MCP_TOKEN_KEY)
    proof = meta.get(MCP_PROOF_KEY)
    if token is None:
        raise Denied(
            Code.TOKEN_REQUIRED, f"no remit token in _meta[{MCP_TOKEN_KEY!r}] for {action!r}"
        )
    if type(token) is not str:
        raise Denied(Code.MALFORMED, f"_meta[{MCP_TOKEN_KEY!r}] must be a string")
    if proof is not None and type(proof) is not str:
        raise Denied(Code.BAD_PROOF, f"_meta[{MCP_PROOF_KEY!r}] must be a string")
    return token, proof


class _HandlerGuard:
    """Server middleware: fail ``tools/call`` closed if the checked handler was replaced."""

    def __init__(self, server: Server[Any], handler: object) -> None:
        self._server = server
        self._handler = handler

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == _TOOLS_CALL:
            entry = self._server.get_request_handler(_TOOLS_CALL)
            if entry is not None and entry.handler is not self._handler:
                logger.error("the tools/call handler was replaced after remit protect(); refusing")
                raise MCPError(code=mcp_types.INTERNAL_ERROR, message="Internal error")
        return await call_next(ctx)


# -- agent side ----------------------------------------------------------------------


class ToolCaller(Protocol):
    """What :func:`call_tool` needs: ``mcp.Client`` and ``mcp.ClientSession`` both fit."""

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        read_timeout_seconds: float | None = None,
        *,
        meta: mcp_types.RequestParamsMeta | None = None,
    ) -> mcp_types.CallToolResult: ...


async def call_tool(
    session: ToolCaller,
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    key: AgentKey | None,
    token: str,
    audience: str,
    server_name: str,
    read_timeout_seconds: float | None = None,
) -> mcp_types.CallToolResult:
    """Call tool ``name`` with ``token`` and a fresh proof (when ``key`` is given) in ``_meta``.

    The proof names action ``<server_name>.<name>``, ``audience`` and exactly the
    arguments sent (one copy is hashed and sent). Returns the SDK's result after checking
    that it has the error flag remit relies on (:class:`MCPResultError` if not); pass it
    to :func:`raise_for_denial` to turn a denial into :class:`remit.Denied`.
    """
    args: dict[str, Any] = dict(arguments) if arguments is not None else {}
    meta = mcp_meta(key, token, audience=audience, action=f"{server_name}.{name}", args=args)
    result = await session.call_tool(
        name, args, read_timeout_seconds, meta=cast("mcp_types.RequestParamsMeta", meta)
    )
    _is_error(result)
    return result
