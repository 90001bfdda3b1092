"""Token format v1: strict JWS compact parsing and the claims model.

The parser is deliberately narrower than JOSE: exactly three canonical base64url
segments, a header of exactly ``{"alg": "EdDSA", "typ": "remit+jwt", "kid": …}``,
a closed set of claims with exact JSON types. Anything else is ``malformed``,
before any key is looked up. Nothing is ever taken from the token to decide how
to verify it (RFC 8725): no ``jku``/``jwk``/``x5u``, no ``crit``, no algorithm choice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from ._constraints import Capability, ConstraintError, parse_capabilities
from ._encoding import b64url_decode, split_compact, strict_json_loads
from ._errors import Code, Denied
from ._limits import Budget, LimitsError, parse_budgets

__all__ = [
    "ALG",
    "MAX_ANCESTORS",
    "MAX_TOKEN_BYTES",
    "TYP",
    "Claims",
    "RawToken",
    "ScopeCache",
    "parse_claims",
    "parse_scope",
    "peek_unverified",
    "split_token",
]

ALG = "EdDSA"
TYP = "remit+jwt"
MAX_TOKEN_BYTES = 16 * 1024
MAX_ANCESTORS = 8
MAX_TIME = 2**53 - 1  # largest integer every JSON implementation reads exactly
MAX_TEXT = 256
MAX_PURPOSE = 1024

_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")  # jti, gid, ancestors: also used in Redis key names
_JKT = re.compile(r"[A-Za-z0-9_-]{43}\Z")  # base64url SHA-256
_REQUIRED = frozenset(
    {"iss", "sub", "aud", "act", "iat", "nbf", "exp", "jti", "gid", "anc",
     "authorization_details", "purpose"}
)
_OPTIONAL = frozenset({"cnf"})
_FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "zip")


def _malformed(message: str) -> Denied:
    return Denied(Code.MALFORMED, message)


class RawToken(NamedTuple):
    """A syntactically valid, not yet verified token."""

    header: str  # the header segment, as sent
    kid: str
    payload: bytes
    signing_input: bytes
    signature: bytes


def _parse_header(h64: str) -> str:
    """Check a header segment; return its kid."""
    try:
        header = strict_json_loads(b64url_decode(h64))
    except ValueError as exc:
        raise _malformed(f"header: {exc}") from None
    if not isinstance(header, dict):
        raise _malformed("header is not a JSON object")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise _malformed(f"header parameter {name!r} is not accepted")
    alg = header.get("alg")
    if alg != ALG:
        raise _malformed(f"alg {alg!r} is not accepted (only {ALG})")
    if header.get("typ") != TYP:
        raise _malformed(f"typ {header.get('typ')!r} is not {TYP!r}")
    kid = header.get("kid")
    if type(kid) is not str or not kid or len(kid) > MAX_TEXT:
        raise _malformed("header kid missing or not a string")
    if len(header) != 3:
        extra = sorted(set(header) - {"alg", "typ", "kid"})
        raise _malformed(f"unexpected header parameters {extra}")
    return kid


def split_token(
    token: object, max_bytes: int = MAX_TOKEN_BYTES, known_headers: Mapping[str, str] | None = None
) -> RawToken:
    """Split and check the JWS structure and header; raises ``Denied(malformed)``.

    ``known_headers`` maps header segments that already passed :func:`_parse_header`
    to their kid: one issuer key has one header, so the usual token skips its parse.
    """
    try:
        h64, p64, s64 = split_compact(token, max_bytes, "token")
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    kid = known_headers.get(h64) if known_headers is not None else None
    if kid is None:
        kid = _parse_header(h64)
    try:
        payload = b64url_decode(p64)
        signature = b64url_decode(s64)
    except ValueError as exc:
        raise _malformed(f"token segment: {exc}") from None
    if len(signature) != 64:
        raise _malformed("Ed25519 signature must be 64 bytes")
    return RawToken(
        header=h64,
        kid=kid,
        payload=payload,
        signing_input=f"{h64}.{p64}".encode("ascii"),
        signature=signature,
    )


class Claims(NamedTuple):
    """The verified claims of a v1 token. (NamedTuple: immutable and, unlike a frozen
    dataclass, cheap to build on the cold path.)"""

    iss: str
    sub: str
    aud: tuple[str, ...]
    actor: str
    iat: int
    nbf: int
    exp: int
    jti: str
    gid: str
    anc: tuple[str, ...]
    capabilities: tuple[Capability, ...]
    purpose: str
    cnf_jkt: str | None


def _text(claims: dict[str, Any], name: str, limit: int = MAX_TEXT) -> str:
    value = claims[name]
    if type(value) is not str or not value or len(value) > limit:
        raise _malformed(f"claim {name!r} must be a non-empty string of at most {limit} chars")
    return value


def _ident(claims: dict[str, Any], name: str) -> str:
    value = claims[name]
    if type(value) is not str or not _ID.match(value):
        raise _malformed(f"claim {name!r} must be an id of 8-64 base64url characters")
    return value


def _time(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise _malformed(f"claim {name!r} must be an integer NumericDate")
    return value


def parse_scope(raw: Any, path: str = "authorization_details") -> tuple[Capability, ...]:
    """A token's ``authorization_details``, budgets included.

    Each entry's ``limits`` (a list of budgets, :mod:`remit._limits`) is split off and
    parsed here, the rest by the constraint language, and the budgets attached to
    their capability. One budget id names one counter of the grant, so wherever it
    appears in a token it must have the same bounds.
    """
    if type(raw) is not list:
        return tuple(parse_capabilities(raw, path, token_form=True))
    entries: list[Any] = []
    budgets: list[tuple[Budget, ...]] = []
    seen: dict[str, Budget] = {}
    for i, entry in enumerate(raw):
        found: tuple[Budget, ...] = ()
        if type(entry) is dict and "limits" in entry:
            try:
                found = parse_budgets(entry["limits"], f"{path}[{i}].limits")
            except LimitsError as exc:
                raise ConstraintError(exc.path, exc.message) from None
            for b in found:
                if not seen.setdefault(b.id, b).same_bounds(b):
                    raise ConstraintError(
                        f"{path}[{i}].limits", f"budget {b.id!r} appears with other bounds"
                    )
            entries.append({k: v for k, v in entry.items() if k != "limits"})
        else:
            entries.append(entry)
        budgets.append(found)
    caps = parse_capabilities(entries, path, token_form=True)
    return tuple(
        replace(c, limits=b) if b else c for c, b in zip(caps, budgets, strict=True)
    )


class ScopeCache:
    """Parsed ``authorization_details`` by value, so the many tokens minted under one
    grant share one validation. Keyed by ``repr`` of the decoded JSON, which tells
    apart every pair of distinct JSON values (``1``/``1.0``/``True``/``"1"``)."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._parsed: dict[str, tuple[Capability, ...]] = {}

    def parse(self, raw: Any) -> tuple[Capability, ...]:
        try:
            key = repr(raw)
        except RecursionError:
            raise ConstraintError("authorization_details", "nested too deeply") from None
        caps = self._parsed.get(key)
        if caps is None:
            caps = parse_scope(raw)
            if len(self._parsed) >= self._size:
                self._parsed.clear()
            self._parsed[key] = caps
        return caps


def parse_claims(payload: bytes, scopes: ScopeCache | None = None) -> Claims:
    """Decode and type-check the claims; raises ``Denied(malformed)`` naming the claim."""
    try:
        claims = strict_json_loads(payload)
    except ValueError as exc:
        raise _malformed(f"claims: {exc}") from None
    if not isinstance(claims, dict):
        raise _malformed("claims are not a JSON object")
    missing = _REQUIRED - claims.keys()
    if missing:
        raise _malformed(f"missing claims {sorted(missing)}")
    unknown = claims.keys() - _REQUIRED - _OPTIONAL
    if unknown:
        raise _malformed(f"unknown claims {sorted(unknown)}")

    aud = claims["aud"]
    if type(aud) is str:
        aud = [aud]
    if (
        type(aud) is not list
        or not aud
        or len(aud) > 32
        or not all(type(a) is str and a and len(a) <= MAX_TEXT for a in aud)
    ):
        raise _malformed("claim 'aud' must be a string or a non-empty list of strings")
    act = claims["act"]
    if type(act) is not dict or act.keys() != {"sub"} or type(act["sub"]) is not str \
            or not act["sub"] or len(act["sub"]) > MAX_TEXT:
        raise _malformed("claim 'act' must be {\"sub\": <agent id>}")
    anc = claims["anc"]
    if type(anc) is not list or len(anc) > MAX_ANCESTORS or not all(
        type(a) is str and _ID.match(a) for a in anc
    ):
        raise _malformed(f"claim 'anc' must be a list of at most {MAX_ANCESTORS} token ids")
    cnf_jkt = None
    if "cnf" in claims:
        cnf = claims["cnf"]
        if type(cnf) is not dict or cnf.keys() != {"jkt"} or type(cnf["jkt"]) is not str \
                or not _JKT.match(cnf["jkt"]):
            raise _malformed("claim 'cnf' must be {\"jkt\": <RFC 7638 thumbprint>}")
        cnf_jkt = cnf["jkt"]
    purpose = claims["purpose"]
    if type(purpose) is not str or len(purpose) > MAX_PURPOSE:
        raise _malformed(f"claim 'purpose' must be a string of at most {MAX_PURPOSE} chars")
    try:
        raw_scope = claims["authorization_details"]
        caps = scopes.parse(raw_scope) if scopes is not None else parse_scope(raw_scope)
    except ConstraintError as exc:
        raise _malformed(f"claim {exc}") from None

    iat, nbf, exp = _time(claims, "iat"), _time(claims, "nbf"), _time(claims, "exp")
    if not iat <= nbf < exp:
        raise _malformed("claims must satisfy iat <= nbf < exp")
    return Claims(
        iss=_text(claims, "iss"),
        sub=_text(claims, "sub"),
        aud=tuple(aud),
        actor=act["sub"],
        iat=iat,
        nbf=nbf,
        exp=exp,
        jti=_ident(claims, "jti"),
        gid=_ident(claims, "gid"),
        anc=tuple(anc),
        capabilities=caps,
        purpose=purpose,
        cnf_jkt=cnf_jkt,
    )


def peek_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """DANGEROUS: decode header and claims *without verifying anything*.

    For display and debugging only (``remit inspect``). Never make an
    authorization decision from what this returns.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"token has {len(parts)} segments, expected 3")
    header = strict_json_loads(b64url_decode(parts[0]))
    claims = strict_json_loads(b64url_decode(parts[1]))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("header and claims must be JSON objects")
    return header, claims
