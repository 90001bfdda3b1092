"""``RequestsAuth``: remit token + per-request proof for ``requests``."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from ..agent import AgentKey
from ._agent import CallSigner

__all__ = ["RequestsAuth"]


class RequestsAuth(AuthBase):
    """A ``requests`` auth that adds ``Authorization: Remit <token>`` and ``Remit-Proof``.

    ``action``: the action name, or ``(requests.PreparedRequest) -> str``. Raises
    ``ValueError`` (before sending) for a request whose arguments the backend could not
    read, and for a streamed body (a file or generator cannot be signed in advance).
    """

    def __init__(
        self,
        key: AgentKey | None,
        token: str,
        *,
        audience: str,
        action: str | Callable[[requests.PreparedRequest], str],
    ) -> None:
        self._signer: CallSigner[requests.PreparedRequest] = CallSigner(
            key, token, audience=audience, action=action
        )

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode("utf-8")
            r.body = raw  # send exactly the bytes that were signed (urllib3 1.x: latin-1)
            r.prepare_content_length(raw)
        else:
            raise ValueError("a streamed request body cannot be signed; pass json= or bytes")
        r.headers.update(
            self._signer.headers(
                r,
                method=r.method or "GET",
                body=raw,
                query=urlsplit(r.url or "").query,
                content_type=r.headers.get("Content-Type"),
            )
        )
        return r

    def __repr__(self) -> str:
        return f"RequestsAuth({self._signer!r})"
