"""remit: capability tokens for LLM agents, verified at the action boundary.

Tool backends use :class:`Verifier` (no gRPC needed); apps use :class:`Client`
(imported lazily, so ``import remit`` never pulls in grpc).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import agent
from ._constraints import Capability, ConstraintError
from ._context import Credentials, credentials, current_credentials
from ._errors import (
    Code,
    Denied,
    FailedPrecondition,
    InvalidArgument,
    KeyLoadError,
    NotFound,
    PermissionDenied,
    RemitError,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from ._jwks import load_jwks
from ._keys import KeySet, PublicKey, jwk_thumbprint
from ._narrowing import is_narrower
from ._retry import Retry
from ._token import peek_unverified
from ._verifier import Decision, Verifier

if TYPE_CHECKING:
    from ._client import Client, Grant

__all__ = [
    "Capability",
    "Client",
    "Code",
    "ConstraintError",
    "Credentials",
    "Decision",
    "Denied",
    "FailedPrecondition",
    "Grant",
    "InvalidArgument",
    "KeyLoadError",
    "KeySet",
    "NotFound",
    "PermissionDenied",
    "PublicKey",
    "RemitError",
    "Retry",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
    "Verifier",
    "__version__",
    "agent",
    "credentials",
    "current_credentials",
    "is_narrower",
    "jwk_thumbprint",
    "load_jwks",
    "peek_unverified",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The app client needs grpc; load it only when asked for, keeping the verify path lean.
    if name in ("Client", "Grant"):
        from . import _client

        return getattr(_client, name)
    raise AttributeError(f"module 'remit' has no attribute {name!r}")
