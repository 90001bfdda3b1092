"""A protected MCP tool server over stdio, run as a subprocess by ``test_mcp.py``.

Configuration comes from the environment the test sets:

- ``REMIT_MCP_JWKS``, ``REMIT_MCP_ISSUER``, ``REMIT_MCP_AUDIENCE``: the verifier's keys
  (a JWKS as JSON), issuer and audience; the audience is also the action prefix.
- ``REMIT_MCP_REDIS_URL``, ``REMIT_MCP_REDIS_PREFIX``: Redis for strict revocation and
  single-use proofs.
- ``REMIT_MCP_LOG``: every tool execution appends one JSON line here (tool, arguments,
  whether remit credentials were bound while it ran), so a test can prove a denied tool
  never ran. The server's pid is written to ``<REMIT_MCP_LOG>.pid`` at startup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import remit
from mcp.server import MCPServer
from remit.integrations.mcp import protect

LOG = Path(os.environ["REMIT_MCP_LOG"])
AUDIENCE = os.environ["REMIT_MCP_AUDIENCE"]


def record(tool: str, args: dict[str, Any]) -> None:
    creds = remit.current_credentials()
    line = {"tool": tool, "args": args, "token_bound": creds is not None and bool(creds.token)}
    with LOG.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


server: MCPServer[Any] = MCPServer(AUDIENCE)


@server.tool()
def transfer(amount: int, to: str) -> str:
    """Move money (sync tool: runs in a worker thread)."""
    record("transfer", {"amount": amount, "to": to})
    return f"sent {amount} to {to}"


@server.tool()
async def delete_all() -> str:
    """Delete everything (async tool)."""
    record("delete_all", {})
    return "deleted"


verifier = remit.Verifier(
    json.loads(os.environ["REMIT_MCP_JWKS"]),
    issuer=os.environ["REMIT_MCP_ISSUER"],
    audience=AUDIENCE,
    redis=os.environ["REMIT_MCP_REDIS_URL"],  # revocation: the default, stream
    prefix=os.environ["REMIT_MCP_REDIS_PREFIX"],
)
protect(server, verifier, name=AUDIENCE)


@server.tool()
def purge_late() -> str:
    """Registered after protect(): must be checked all the same."""
    record("purge_late", {})
    return "purged"


if __name__ == "__main__":
    Path(f"{LOG}.pid").write_text(str(os.getpid()), encoding="utf-8")
    server.run("stdio")
