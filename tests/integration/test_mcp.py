"""MCP integration over a real transport: the SDK's client and server talking stdio.

Every test starts ``mcp_server_app.py`` as a subprocess (an ``MCPServer`` protected with
``remit.integrations.mcp.protect``, its verifier on real Redis) and talks to it with the
SDK's ``Client``. The server appends each tool execution to a log file, so a denial is
proven twice: the client sees a tool error, and the tool never ran.

The pinning tests hold the failure mode down: the flag that marks a denial is the SDK's
``CallToolResult.is_error`` (wire ``isError``); if the SDK renames it, these tests fail
and the integration raises rather than letting a denial read as a success.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mcp_types
import pytest
import redis
import remit
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server import MCPServer, Server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from remit._redis_keys import RedisKeys
from remit.agent import MCP_PROOF_KEY, MCP_TOKEN_KEY, AgentKey, mcp_meta
from remit.integrations.mcp import (
    RESULT_ERROR_FIELD,
    WIRE_ERROR_FIELD,
    MCPResultError,
    call_tool,
    protect,
    raise_for_denial,
)

from tests.tokens import ISSUER, IssuerKey, claims, sign

pytestmark = pytest.mark.anyio

SERVER_APP = Path(__file__).with_name("mcp_server_app.py")
AUDIENCE = "payments"
TRANSFER = {
    "type": "remit.capability",
    "action": "payments.transfer",
    "args": {"amount": {"le": 100}, "to": {"eq": "DE89"}},
}
PURGE_LATE = {"type": "remit.capability", "action": "payments.purge_late", "args": {}}
ALLOWED = {"amount": 50, "to": "DE89"}
STEP = 10  # seconds: bound on one raw read or shutdown
DEADLINE = 30  # seconds: bound on one served session, start to shutdown


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Backend:
    """One protected server's configuration: issuer key, environment, execution log."""

    issuer: IssuerKey
    env: dict[str, str]
    log: Path
    stderr: Path

    def mint(self, *caps: dict[str, Any], bound_to: AgentKey | None = None) -> str:
        extra: dict[str, Any] = {} if bound_to is None else {"cnf": {"jkt": bound_to.thumbprint}}
        body = claims(now=int(time.time()), authorization_details=list(caps or [TRANSFER]), **extra)
        # The grant record the service would have written: verifiers read it with a
        # proof's replay claim (a missing one means Redis lost the grant's data).
        with redis.Redis.from_url(self.env["REMIT_MCP_REDIS_URL"]) as r:
            r.set(RedisKeys(self.env["REMIT_MCP_REDIS_PREFIX"]).grant(body["gid"]), b"{}", ex=600)
        return sign(body, self.issuer)

    def executions(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def backend(tmp_path: Path, redis_url: str, redis_prefix: str) -> Backend:
    issuer = IssuerKey()
    log = tmp_path / "executions.jsonl"
    env = {
        "REMIT_MCP_JWKS": json.dumps(issuer.jwks()),
        "REMIT_MCP_ISSUER": ISSUER,
        "REMIT_MCP_AUDIENCE": AUDIENCE,
        "REMIT_MCP_REDIS_URL": redis_url,
        "REMIT_MCP_REDIS_PREFIX": redis_prefix,
        "REMIT_MCP_LOG": str(log),
    }
    return Backend(issuer, env, log, tmp_path / "server.stderr")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@asynccontextmanager
async def serve(backend: Backend, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK client connected over stdio to a fresh server subprocess.

    ``stdio_client`` owns the process: on exit it closes stdin, waits, then kills the
    process tree. That the process is gone afterwards is asserted here, every time.
    """
    params = StdioServerParameters(
        command=sys.executable, args=[str(SERVER_APP)], env=backend.env, cwd=str(SERVER_APP.parent)
    )
    pidfile = Path(f"{backend.log}.pid")
    with backend.stderr.open("a") as errlog:
        try:
            # One deadline over start, the test's calls and shutdown (same task throughout).
            with anyio.fail_after(DEADLINE):
                transport = stdio_client(params, errlog=errlog)
                async with Client(transport, mode=mode) as client:
                    yield client
        except BaseException:
            print(backend.stderr.read_text()[-4000:], file=sys.stderr)
            raise
    pid = int(pidfile.read_text())
    assert not _alive(pid), f"MCP server subprocess {pid} outlived its client"


def denial(result: mcp_types.CallToolResult) -> dict[str, Any]:
    """The remit denial body of an error result: structured content and text agree."""
    assert result.is_error is True
    text = [block for block in result.content if isinstance(block, mcp_types.TextContent)]
    assert len(text) == 1
    body = json.loads(text[0].text)
    assert result.structured_content == body
    assert body["error"] == "denied"
    assert isinstance(body["message"], str)
    return body


# -- allowed and denied calls ------------------------------------------------------------


async def test_allowed_call_runs_the_tool_with_credentials_bound(backend: Backend) -> None:
    token = backend.mint()
    async with serve(backend) as client:
        result = await call_tool(
            client, "transfer", ALLOWED, key=None, token=token, audience=AUDIENCE,
            server_name=AUDIENCE,
        )
    assert result.is_error is False
    raise_for_denial(result)  # no denial: returns
    assert result.structured_content == {"result": "sent 50 to DE89"}
    assert backend.executions() == [{"tool": "transfer", "args": ALLOWED, "token_bound": True}]


async def test_argument_outside_the_grant_is_denied_and_the_tool_never_runs(
    backend: Backend,
) -> None:
    token = backend.mint()
    async with serve(backend) as client:
        too_much = await call_tool(
            client, "transfer", {"amount": 500, "to": "DE89"}, key=None, token=token,
            audience=AUDIENCE, server_name=AUDIENCE,
        )
        other_payee = await call_tool(
            client, "transfer", {"amount": 5, "to": "GB00"}, key=None, token=token,
            audience=AUDIENCE, server_name=AUDIENCE,
        )
    assert denial(too_much)["code"] == "argument_denied"
    assert denial(other_payee)["code"] == "argument_denied"
    with pytest.raises(remit.Denied) as caught:
        raise_for_denial(too_much)
    assert caught.value.code is remit.Code.ARGUMENT_DENIED
    assert "amount" in caught.value.message
    assert backend.executions() == []


async def test_a_tool_never_granted_is_denied_even_if_registered_after_protect(
    backend: Backend,
) -> None:
    token = backend.mint()  # grants payments.transfer only
    async with serve(backend) as client:
        delete = await client.call_tool("delete_all", {}, meta=_meta(token, "delete_all", {}))
        late = await client.call_tool("purge_late", {}, meta=_meta(token, "purge_late", {}))
        # The late tool is reachable when granted: the check covers it, it is not a blanket refusal.
        granted = backend.mint(PURGE_LATE)
        ok = await client.call_tool("purge_late", {}, meta=_meta(granted, "purge_late", {}))
    assert denial(delete)["code"] == "action_not_granted"
    assert denial(late)["code"] == "action_not_granted"
    assert ok.is_error is False
    assert backend.executions() == [{"tool": "purge_late", "args": {}, "token_bound": True}]


async def test_a_call_without_a_token_is_denied(backend: Backend) -> None:
    async with serve(backend) as client:
        bare = await client.call_tool("transfer", ALLOWED)
        wrong_type = await client.call_tool(
            "transfer", ALLOWED, meta={MCP_TOKEN_KEY: 42}
        )
    assert denial(bare)["code"] == "token_required"
    assert denial(wrong_type)["code"] == "malformed"
    assert backend.executions() == []


async def test_a_bound_token_needs_a_proof_and_works_with_one(backend: Backend) -> None:
    agent = AgentKey.generate()
    token = backend.mint(bound_to=agent)
    async with serve(backend) as client:
        no_proof = await call_tool(
            client, "transfer", ALLOWED, key=None, token=token, audience=AUDIENCE,
            server_name=AUDIENCE,
        )
        assert denial(no_proof)["code"] == "proof_required"
        assert backend.executions() == []
        with_proof = await call_tool(
            client, "transfer", ALLOWED, key=agent, token=token, audience=AUDIENCE,
            server_name=AUDIENCE,
        )
        assert with_proof.is_error is False
        assert backend.executions() == [{"tool": "transfer", "args": ALLOWED, "token_bound": True}]
        # A proof signed over other arguments than those sent is refused.
        meta = mcp_meta(agent, token, audience=AUDIENCE, action="payments.transfer", args=ALLOWED)
        swapped = await client.call_tool(
            "transfer", {"amount": 60, "to": "DE89"}, meta=meta
        )
        assert denial(swapped)["code"] == "proof_mismatch"
    assert len(backend.executions()) == 1


async def test_a_replayed_proof_is_denied(backend: Backend) -> None:
    agent = AgentKey.generate()
    token = backend.mint(bound_to=agent)
    meta = mcp_meta(agent, token, audience=AUDIENCE, action="payments.transfer", args=ALLOWED)
    assert MCP_PROOF_KEY in meta
    async with serve(backend) as client:
        first = await client.call_tool("transfer", ALLOWED, meta=meta)
        again = await client.call_tool("transfer", ALLOWED, meta=meta)
    assert first.is_error is False
    assert denial(again)["code"] == "replayed"
    assert len(backend.executions()) == 1


# -- pinning the result shape ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 envelope; initialize handshake
async def test_pin_the_sdk_error_field_a_denial_is_is_error_true(
    backend: Backend, mode: str
) -> None:
    """If the SDK renames ``is_error`` (or its wire alias), this test fails.

    The peer-system bug: ``isError`` became ``is_error`` and code reading the old name got
    its default, so denials read as successes. Here the exact field is named, must exist
    on the SDK's model with the spec's wire name, and must be ``True`` on a denial
    received over the wire in both protocol eras.
    """
    assert RESULT_ERROR_FIELD == "is_error"
    assert WIRE_ERROR_FIELD == "isError"
    field = mcp_types.CallToolResult.model_fields[RESULT_ERROR_FIELD]
    assert field.alias == WIRE_ERROR_FIELD
    assert field.default is False  # absent flag = success: so the flag must never be lost
    token = backend.mint()
    async with serve(backend, mode=mode) as client:
        result = await client.call_tool("delete_all", {}, meta=_meta(token, "delete_all", {}))
        allowed = await client.call_tool(
            "transfer", ALLOWED, meta=_meta(token, "transfer", ALLOWED)
        )
    assert type(result) is mcp_types.CallToolResult
    assert getattr(result, RESULT_ERROR_FIELD) is True
    assert result.model_dump(by_alias=True)[WIRE_ERROR_FIELD] is True
    assert getattr(allowed, RESULT_ERROR_FIELD) is False
    with pytest.raises(remit.Denied):
        raise_for_denial(result)
    assert [e["tool"] for e in backend.executions()] == ["transfer"]


async def test_pin_the_wire_a_raw_json_rpc_client_sees_is_error_true(backend: Backend) -> None:
    """No SDK on the client side: the server's bytes on stdout carry ``"isError": true``."""
    token = backend.mint()
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "transfer", "arguments": {"amount": 500, "to": "DE89"},
            "_meta": {MCP_TOKEN_KEY: token}}},
    ]
    env = {"PATH": os.environ.get("PATH", ""), **backend.env}
    with backend.stderr.open("a") as errlog:
        process = await anyio.open_process(
            [sys.executable, str(SERVER_APP)], env=env, stderr=errlog
        )
        try:
            assert process.stdin is not None and process.stdout is not None
            for message in requests:
                await process.stdin.send((json.dumps(message) + "\n").encode())
            buffer = b""
            response: dict[str, Any] | None = None
            with anyio.fail_after(STEP):
                while response is None:
                    buffer += await process.stdout.receive()
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        message = json.loads(line)
                        if message.get("id") == 2:
                            response = message
            await process.stdin.aclose()
            with anyio.fail_after(STEP):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(STEP):
                    await process.wait()
            await process.aclose()
    result = response["result"]
    assert result[WIRE_ERROR_FIELD] is True
    assert RESULT_ERROR_FIELD not in result
    body = json.loads(result["content"][0]["text"])
    assert body["code"] == "argument_denied"
    assert result["structuredContent"] == body
    assert backend.executions() == []


class _RenamedResult:
    """A result from an SDK that renamed the flag back: ``is_error`` is gone."""

    def __init__(self) -> None:
        self.isError = True
        self.content = [mcp_types.TextContent(type="text", text='{"error":"denied"}')]
        self.structured_content = {"error": "denied", "code": "revoked", "message": "x"}


async def test_pin_a_result_without_the_sdk_field_fails_loudly_never_as_success() -> None:
    with pytest.raises(MCPResultError, match="is_error"):
        raise_for_denial(_RenamedResult())

    class Session:
        async def call_tool(self, *args: Any, **kwargs: Any) -> Any:
            return _RenamedResult()

    with pytest.raises(MCPResultError, match="is_error"):
        await call_tool(
            Session(), "transfer", ALLOWED, key=None, token="t", audience=AUDIENCE,
            server_name=AUDIENCE,
        )
    # A denial body under a success flag (a flag lost in parsing) is not a success either.
    lost = mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text="{}")],
        structured_content={"error": "denied", "code": "revoked", "message": "x"},
    )
    assert lost.is_error is False
    with pytest.raises(MCPResultError, match="inconsistent"):
        raise_for_denial(lost)
    # A denial this client cannot read is not a success either.
    future = mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text="{}")],
        structured_content={"error": "denied", "code": "new_in_v9", "message": "x"},
        is_error=True,
    )
    with pytest.raises(MCPResultError, match="unknown code"):
        raise_for_denial(future)
    # A tool's own error is not a denial: returned, and is_error says it failed.
    tool_error = mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text="boom")], is_error=True
    )
    raise_for_denial(tool_error)


class _SdkModel(BaseModel):
    """The SDK's model config: camelCase wire names, Python names accepted too."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _FlagRenamed(_SdkModel):
    """``CallToolResult`` from an SDK that renamed the Python attribute."""

    content: list[Any]
    structured_content: Any = None
    failed: bool = Field(default=False, alias="isError")


class _AliasLost(_SdkModel):
    """``CallToolResult`` from an SDK whose field lost the spec's wire name."""

    content: list[Any]
    structured_content: Any = None
    is_error: bool = Field(default=False, alias="is_error")


@pytest.mark.parametrize("shape", [_FlagRenamed, _AliasLost])
def test_pin_protect_refuses_to_start_on_an_sdk_that_lost_the_flag(
    monkeypatch: pytest.MonkeyPatch, shape: type[_SdkModel]
) -> None:
    monkeypatch.setattr(mcp_types, "CallToolResult", shape)
    issuer = IssuerKey()
    verifier = remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off")
    with pytest.raises(MCPResultError, match="error flag"):
        protect(MCPServer("payments"), verifier, name="payments")


# -- the hook: in-process checks of what protect() installs -------------------------------


async def test_replacing_the_tools_call_handler_after_protect_fails_closed() -> None:
    ran: list[str] = []
    server: MCPServer[Any] = MCPServer("payments")

    @server.tool()
    def transfer(amount: int, to: str) -> str:
        ran.append("transfer")
        return "sent"

    issuer = IssuerKey()
    verifier = remit.Verifier(
        issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off"
    )
    protect(server, verifier, name="payments")
    with pytest.raises(ValueError, match="already protected"):
        protect(server, verifier, name="payments")
    lowlevel = server._lowlevel_server
    entry = lowlevel.get_request_handler("tools/call")
    assert entry is not None

    async def unchecked(ctx: Any, params: Any) -> Any:
        return await server._handle_call_tool(ctx, params)

    lowlevel.add_request_handler("tools/call", entry.params_type, unchecked)
    token = sign(claims(now=int(time.time())), issuer)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.call_tool("transfer", ALLOWED, meta=_meta(token, "transfer", ALLOWED))
    assert ran == []


class _RecordingVerifier(remit.Verifier):
    """Records the thread each check runs on; ``fail`` makes the check crash."""

    def __init__(self, *args: Any, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[int] = []
        self.fail = fail

    def check(self, token: str, **kwargs: Any) -> remit.Decision:
        self.threads.append(threading.get_ident())
        if self.fail:
            raise RuntimeError("verifier bug")
        return super().check(token, **kwargs)


@pytest.mark.parametrize("fail", [False, True])
async def test_the_check_runs_off_the_event_loop_and_a_crash_never_runs_the_tool(
    fail: bool,
) -> None:
    ran: list[str] = []
    server: MCPServer[Any] = MCPServer("payments")

    @server.tool()
    async def transfer(amount: int, to: str) -> str:
        ran.append("transfer")
        return "sent"

    issuer = IssuerKey()
    verifier = _RecordingVerifier(
        issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off", fail=fail
    )
    protect(server, verifier, name="payments")
    token = sign(claims(now=int(time.time())), issuer)
    async with Client(server) as client:
        result = await client.call_tool("transfer", ALLOWED, meta=_meta(token, "transfer", ALLOWED))
    assert verifier.threads and threading.get_ident() not in verifier.threads
    if fail:
        assert result.is_error is True
        assert result.structured_content is not None
        assert result.structured_content["error"] == "internal"
        assert "verifier bug" not in json.dumps(result.model_dump(mode="json"))
        raise_for_denial(result)  # not a denial: the caller sees is_error
        assert ran == []
    else:
        assert result.is_error is False
        assert ran == ["transfer"]


async def test_protect_covers_a_low_level_server() -> None:
    ran: list[dict[str, Any]] = []

    async def on_call_tool(ctx: Any, params: mcp_types.CallToolRequestParams) -> Any:
        ran.append({"tool": params.name, "args": params.arguments})
        return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text="ok")])

    async def on_list_tools(ctx: Any, params: Any) -> mcp_types.ListToolsResult:
        schema = {"type": "object", "properties": {"amount": {"type": "integer"}}}
        return mcp_types.ListToolsResult(
            tools=[mcp_types.Tool(name="transfer", input_schema=schema)]
        )

    with pytest.raises(ValueError, match="no tools/call handler"):
        protect(Server("payments"), _verifier(IssuerKey()), name="payments")
    server: Server[Any] = Server(
        "payments", on_list_tools=on_list_tools, on_call_tool=on_call_tool
    )
    with pytest.raises(ValueError, match="action prefix"):
        protect(server, _verifier(IssuerKey()), name="Payments")
    issuer = IssuerKey()
    protect(server, _verifier(issuer), name="payments")
    token = sign(claims(now=int(time.time())), issuer)
    async with Client(server) as client:
        bare = await client.call_tool("transfer", ALLOWED)
        ok = await client.call_tool("transfer", ALLOWED, meta=_meta(token, "transfer", ALLOWED))
    assert denial(bare)["code"] == "token_required"
    assert ok.is_error is False
    assert ran == [{"tool": "transfer", "args": ALLOWED}]


def _verifier(issuer: IssuerKey) -> remit.Verifier:
    return remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off")


def _meta(token: str, tool: str, args: dict[str, Any]) -> Any:
    return mcp_meta(None, token, audience=AUDIENCE, action=f"payments.{tool}", args=args)
