"""Exceptions of the ``remit`` package and the stable denial reason codes.

Every exception remit raises derives from :class:`RemitError`::

    RemitError
    ├── Denied                 a verifier refused a call; ``.code`` is a stable Code
    ├── KeyLoadError           a key or JWKS could not be loaded (bad file, bad JWK)
    └── ServiceError           the remit service answered with an error (app client)
        ├── InvalidArgument    a request field is malformed (``.field`` names it)
        ├── Unauthenticated    the API key is missing or wrong
        ├── PermissionDenied   the request goes beyond the app's policy or the grant
        ├── NotFound           no such grant or token
        ├── FailedPrecondition the grant is revoked or expired
        └── Unavailable        the service or its Redis cannot be reached

Reason codes are part of the wire contract: the verifier, the service and the
audit trail use the same strings, and other-language verifiers check them
against ``tests/vectors/``. Never rename one; add new ones.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Code",
    "Denied",
    "FailedPrecondition",
    "InvalidArgument",
    "KeyLoadError",
    "NotFound",
    "PermissionDenied",
    "RemitError",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
]


class Code(StrEnum):
    """Stable reason codes for a denial. Values are the wire strings."""

    MALFORMED = "malformed"  # not a well-formed remit token (syntax, header, claim types)
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"  # kid not in the verifier's key set
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    INVALID_REQUEST = "invalid_request"  # the call itself is malformed (action name, args type)
    ACTION_NOT_GRANTED = "action_not_granted"
    ARGUMENT_DENIED = "argument_denied"  # an argument's value is outside its constraint
    UNEXPECTED_ARGUMENT = "unexpected_argument"  # an argument no constraint names
    UNSUPPORTED = "unsupported"  # token uses a feature this verifier cannot enforce
    PROOF_REQUIRED = "proof_required"  # token is key-bound (cnf) and no valid proof came
    REVOKED = "revoked"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"


class RemitError(Exception):
    """Base class of every exception raised by ``remit``."""


class Denied(RemitError):
    """A call is not allowed. ``code`` is stable; ``message`` is for humans and logs."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code: Code = code
        self.message: str = message

    def __reduce__(self) -> tuple[type[Denied], tuple[Code, str]]:
        return (type(self), (self.code, self.message))


class KeyLoadError(RemitError):
    """A key, key file or JWKS is unusable. Raised at construction, never per call."""


class ServiceError(RemitError):
    """The remit service refused or failed a request."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.field: str | None = field


class InvalidArgument(ServiceError):
    """A request field is malformed; ``field`` names it when the service said which."""


class Unauthenticated(ServiceError):
    """The app credential is missing or wrong."""


class PermissionDenied(ServiceError):
    """The request goes beyond the app's policy or beyond the grant."""


class NotFound(ServiceError):
    """No such grant or token (or it belongs to another app)."""


class FailedPrecondition(ServiceError):
    """The grant is revoked or expired."""


class Unavailable(ServiceError):
    """The service, or the Redis behind it, cannot be reached. Safe to retry."""
