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
    TOKEN_REQUIRED = "token_required"  # noqa: S105 (the call carries no remit token)
    PROOF_REQUIRED = "proof_required"  # token is key-bound (cnf) and the call has no proof
    BAD_PROOF = "bad_proof"  # proof malformed, wrong typ/key type, or its signature fails
    PROOF_KEY_MISMATCH = "proof_key_mismatch"  # proof key is not the token's cnf.jkt
    PROOF_MISMATCH = "proof_mismatch"  # proof is for another token/audience/action/args
    PROOF_EXPIRED = "proof_expired"  # proof iat outside the window
    REPLAYED = "replayed"  # proof jti already used
    REVOKED = "revoked"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"  # audit="sync" and the event cannot be written
    LIMIT_EXCEEDED = "limit_exceeded"  # a budget (uses / sum) of the capability is spent
    LIMIT_UNAVAILABLE = "limit_unavailable"  # budgets unknown (Redis down): fail closed


# Denials that say "the state needed to decide is unknown right now", not "no".
_UNAVAILABLE_CODES = frozenset(
    {Code.REVOCATION_UNAVAILABLE, Code.AUDIT_UNAVAILABLE, Code.LIMIT_UNAVAILABLE}
)

# Which denials are about *who is calling* (the credential) rather than *what* is being
# asked: transports map the first to 401 / UNAUTHENTICATED, the rest to 403 /
# PERMISSION_DENIED, and an unknown revocation state to 503 / UNAVAILABLE.
_CREDENTIAL_CODES = frozenset(
    {
        Code.MALFORMED,
        Code.BAD_SIGNATURE,
        Code.UNKNOWN_KEY,
        Code.EXPIRED,
        Code.NOT_YET_VALID,
        Code.WRONG_AUDIENCE,
        Code.WRONG_ISSUER,
        Code.TOKEN_REQUIRED,
        Code.PROOF_REQUIRED,
        Code.BAD_PROOF,
        Code.PROOF_KEY_MISMATCH,
        Code.PROOF_MISMATCH,
        Code.PROOF_EXPIRED,
        Code.REPLAYED,
        Code.REVOKED,
    }
)


class RemitError(Exception):
    """Base class of every exception raised by ``remit``."""


class Denied(RemitError):
    """A call is not allowed. ``code`` is stable; ``message`` is for humans and logs."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code: Code = code
        self.message: str = message

    @property
    def kind(self) -> str:
        """``unauthenticated``, ``permission_denied`` or ``unavailable``: how a transport
        should report this denial (HTTP 401 / 403 / 503, gRPC status of that name)."""
        if self.code in _UNAVAILABLE_CODES:
            return "unavailable"
        return "unauthenticated" if self.code in _CREDENTIAL_CODES else "permission_denied"

    @property
    def http_status(self) -> int:
        return {"unauthenticated": 401, "permission_denied": 403, "unavailable": 503}[self.kind]

    def to_json(self) -> dict[str, str]:
        """The body transports send back: ``{"error": "denied", "code", "message"}``."""
        return {"error": "denied", "code": self.code.value, "message": self.message}

    def __reduce__(self) -> tuple[type[Denied], tuple[Code, str]]:
        return (type(self), (self.code, self.message))


class KeyLoadError(RemitError):
    """A key, key file or JWKS is unusable. Raised at construction, never per call."""


class ServiceError(RemitError):
    """The remit service refused or failed a request."""

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.field: str | None = field
        # The stable reason code (a remit.Code value) when the service gave one, e.g. why
        # an Exchange refused its parent token: "revoked", "proof_mismatch", ...
        self.reason: str | None = reason


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
