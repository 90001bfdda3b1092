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
    # Set by a transport adapter after its own ``verifier.check`` of this request
    # allowed it: the caller proved possession of the token's key for this request,
    # and the (single-use) proof is spent, so ``@verifier.guard`` inside the handler
    # checks scope, validity and revocation but not the proof again.
    possession_proven: bool = False


_current: ContextVar[Credentials | None] = ContextVar("remit_credentials", default=None)


@contextmanager
def credentials(token: str, proof: str | None = None) -> Iterator[Credentials]:
    """Bind a call's token (and proof) for the duration of the ``with`` block."""
    with _bind(Credentials(token, proof)) as creds:
        yield creds


@contextmanager
def proven_credentials(token: str, proof: str | None) -> Iterator[Credentials]:
    """For remit's transport adapters only, after their own ``verifier.check`` of this
    request allowed it (proof included). Deliberately not exported from ``remit``."""
    with _bind(Credentials(token, proof, possession_proven=True)) as creds:
        yield creds


@contextmanager
def _bind(creds: Credentials) -> Iterator[Credentials]:
    reset = _current.set(creds)
    try:
        yield creds
    finally:
        _current.reset(reset)


def current_credentials() -> Credentials | None:
    """The credentials bound for the call being handled, if any."""
    return _current.get()
