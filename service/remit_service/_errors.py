"""Domain errors of the service core. The gRPC servicer maps each to one status code.

::

    ServiceFault
    ├── BadRequest        a request field is malformed (``field`` names it)  INVALID_ARGUMENT
    ├── AuthFailed        no or wrong app credential                         UNAUTHENTICATED
    ├── PolicyDenied      beyond the app's policy or the grant               PERMISSION_DENIED
    ├── Missing           no such grant / token for this app                 NOT_FOUND
    ├── Inactive          the grant is revoked or expired                    FAILED_PRECONDITION
    └── StoreDown         Redis cannot be reached                            UNAVAILABLE

Anything else that escapes the core is a bug and becomes INTERNAL with no detail.
"""

from __future__ import annotations

__all__ = [
    "AuthFailed",
    "BadRequest",
    "Inactive",
    "Missing",
    "PolicyDenied",
    "ServiceFault",
    "StoreDown",
]


class ServiceFault(Exception):
    """Base of the core's expected failures; the message is safe to show the caller."""

    def __init__(
        self, message: str, *, field: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code  # a stable reason code (remit.Code) when there is one


class BadRequest(ServiceFault):
    pass


class AuthFailed(ServiceFault):
    pass


class PolicyDenied(ServiceFault):
    pass


class Missing(ServiceFault):
    pass


class Inactive(ServiceFault):
    pass


class StoreDown(ServiceFault):
    """``retryable=False`` when Redis timed out: an immediate retry would only wait again."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
