"""``HttpxAuth``: remit token + per-request proof for ``httpx`` (sync and async clients)."""

from __future__ import annotations

from collections.abc import Callable, Generator

import httpx

from ..agent import AgentKey
from ._agent import CallSigner

__all__ = ["HttpxAuth"]


class HttpxAuth(httpx.Auth):
    """An ``httpx.Auth`` that adds ``Authorization: Remit <token>`` and ``Remit-Proof``.

    ``action``: the action name, or ``(httpx.Request) -> str``. Raises ``ValueError``
    (before sending) for a request whose arguments the backend could not read.
    """

    requires_request_body = True  # streamed bodies are read first, so they can be signed

    def __init__(
        self,
        key: AgentKey | None,
        token: str,
        *,
        audience: str,
        action: str | Callable[[httpx.Request], str],
    ) -> None:
        self._signer: CallSigner[httpx.Request] = CallSigner(
            key, token, audience=audience, action=action
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(
            self._signer.headers(
                request,
                method=request.method,
                body=request.content,
                query=request.url.query,
                content_type=request.headers.get("content-type"),
            )
        )
        yield request

    def __repr__(self) -> str:
        return f"HttpxAuth({self._signer!r})"
