"""The credentials of the call being handled, for code that runs inside a transport.

A transport adapter (ASGI middleware, gRPC interceptor, MCP integration) extracts the
token and proof from the request and binds them here; ``@verifier.guard`` reads them.
A ``ContextVar`` keeps concurrent requests (threads or asyncio tasks) apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

__all__ = ["Credentials", "credentials", "current_credentials"]


class Credentials(NamedTuple):
    token: str
    proof: str | None = None


_current: ContextVar[Credentials | None] = ContextVar("remit_credentials", default=None)


@contextmanager
def credentials(token: str, proof: str | None = None) -> Iterator[Credentials]:
    """Bind a call's token (and proof) for the duration of the ``with`` block."""
    creds = Credentials(token, proof)
    reset = _current.set(creds)
    try:
        yield creds
    finally:
        _current.reset(reset)


def current_credentials() -> Credentials | None:
    """The credentials bound for the call being handled, if any."""
    return _current.get()
