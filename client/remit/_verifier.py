"""The verifier: offline token verification and per-call scope checks for tool backends.

Cold path (first time a token's exact bytes are seen): strict JWS parse, Ed25519
signature (libsodium via PyNaCl), claim types, issuer, audience, lifetime policy,
capability compilation. The result is cached by the token string until it expires,
so the warm path is: a dict lookup, the time window, the action and argument
closures, and the revocation check.

Every failure raises :class:`remit.Denied` with a stable code; nothing else escapes
``check`` for any input.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from ._constraints import (
    Capability,
    CompiledCapability,
    action_matches,
    compile_capability,
    explain_failure,
    valid_call_action,
)
from ._errors import Code, Denied
from ._jwks import load_jwks
from ._keys import KeySet, PublicKey
from ._redis import RedisLike, connect
from ._redis_keys import DEFAULT_PREFIX, RedisKeys
from ._revocation import NoRevocation, RevocationCheck, StrictRevocation
from ._token import MAX_TOKEN_BYTES, Claims, ScopeCache, parse_claims, split_token

__all__ = ["Decision", "Verifier"]

RevocationMode = Literal["strict", "off"]


class Decision(NamedTuple):
    """An allowed call: who may do what under which grant and token (immutable)."""

    allowed: bool
    action: str
    audience: str
    token_id: str
    grant_id: str
    subject: str
    agent: str
    capability: int  # index in the token's authorization_details that allowed the call
    expires_at: int


_Scope = tuple[Mapping[str, tuple[CompiledCapability, ...]], tuple[CompiledCapability, ...]]


class _Verified(NamedTuple):
    claims: Claims
    exact: Mapping[str, tuple[CompiledCapability, ...]]
    wildcard: tuple[CompiledCapability, ...]


class Verifier:
    """Verify remit tokens and calls for one tool backend (one audience).

    ``keys``: a :class:`KeySet`, a JWKS mapping, or public keys. ``revocation`` must be
    chosen: ``"strict"`` (needs ``redis``) or ``"off"``. ``leeway`` (seconds) absorbs
    clock skew on ``exp``/``nbf``/``iat``. ``max_ttl`` rejects tokens whose lifetime
    (``exp - iat``) exceeds the policy maximum, whoever signed them.
    """

    def __init__(
        self,
        keys: KeySet | Mapping[str, Any] | list[PublicKey],
        *,
        issuer: str,
        audience: str,
        revocation: RevocationMode = "strict",
        redis: str | RedisLike | None = None,
        prefix: str = DEFAULT_PREFIX,
        leeway: float = 5.0,
        max_ttl: int = 24 * 3600,
        clock: Callable[[], float] = time.time,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        cache_size: int = 10_000,
    ) -> None:
        if isinstance(keys, KeySet):
            self._keys = keys
        elif isinstance(keys, Mapping):
            self._keys = KeySet.from_jwks(keys)
        else:
            self._keys = KeySet(keys)
        if not issuer or not isinstance(issuer, str):
            raise ValueError("issuer is required")
        if not audience or not isinstance(audience, str):
            raise ValueError("audience is required")
        if leeway < 0 or leeway > 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway
        self._max_ttl = max_ttl
        self._clock = clock
        self._max_token_bytes = max_token_bytes
        self._cache_size = cache_size
        self._cache: dict[str, _Verified] = {}
        self._cache_lock = threading.Lock()
        # Cold-path memos, all bounded: header segment -> kid (headers whose kid is
        # ours), scope JSON -> parsed capabilities, parsed scope -> compiled closures.
        self._headers: dict[str, str] = {}
        self._scopes = ScopeCache()
        self._compiled: dict[int, tuple[tuple[Any, ...], _Scope]] = {}
        self._revocation: RevocationCheck
        if revocation == "strict":
            if redis is None:
                raise ValueError('revocation="strict" needs redis= (a URL or a client)')
            self._revocation = StrictRevocation(
                connect(redis), RedisKeys(prefix), owned=isinstance(redis, str)
            )
        elif revocation == "off":
            self._revocation = NoRevocation()
        else:
            raise ValueError(f"unknown revocation mode {revocation!r}; use 'strict' or 'off'")
        self.revocation_mode: RevocationMode = revocation

    @classmethod
    def from_jwks(
        cls,
        source: Mapping[str, Any] | str | os.PathLike[str],
        *,
        issuer: str,
        audience: str,
        **kwargs: Any,
    ) -> Verifier:
        """Build a verifier from a JWKS mapping, a JWKS file, or an http(s) URL."""
        return cls(load_jwks(source), issuer=issuer, audience=audience, **kwargs)

    # -- hot path ------------------------------------------------------------------

    def check(
        self,
        token: str,
        *,
        action: str,
        args: Mapping[str, Any] | None = None,
        proof: str | None = None,
    ) -> Decision:
        """Allow the call or raise :class:`Denied`. ``args`` are the call's JSON arguments."""
        if type(token) is not str:
            raise Denied(Code.MALFORMED, "token must be a string")
        if type(action) is not str:
            raise Denied(Code.INVALID_REQUEST, "action must be a string")
        verified = self._cache.get(token)
        now = self._clock()
        if verified is None:
            verified = self._verify_token(token, now)
        claims = verified.claims
        if now >= claims.exp + self._leeway:
            self._cache.pop(token, None)
            raise Denied(Code.EXPIRED, f"token expired at {claims.exp}")
        if now + self._leeway < claims.nbf:
            raise Denied(Code.NOT_YET_VALID, f"token not valid before {claims.nbf}")
        if claims.cnf_jkt is not None:
            # Key-bound tokens need a per-call proof of possession; until this
            # verifier checks proofs, a bound token is never accepted (fail closed).
            raise Denied(Code.PROOF_REQUIRED, "token is bound to an agent key (cnf)")
        cap = self._authorize(verified, action, args)
        self._revocation.check(claims)
        return Decision(
            allowed=True,
            action=action,
            audience=self.audience,
            token_id=claims.jti,
            grant_id=claims.gid,
            subject=claims.sub,
            agent=claims.actor,
            capability=cap.index,
            expires_at=claims.exp,
        )

    def _authorize(
        self, verified: _Verified, action: str, args: Mapping[str, Any] | None
    ) -> CompiledCapability:
        candidates = verified.exact.get(action)
        if candidates is None:
            if not valid_call_action(action):
                raise Denied(Code.INVALID_REQUEST, f"invalid action name {str(action)[:80]!r}")
            candidates = tuple(c for c in verified.wildcard
                               if action_matches(c.capability.action, action))
            if not candidates:
                raise Denied(Code.ACTION_NOT_GRANTED, f"action {action!r} is not granted")
        if args is None:
            args = {}
        elif type(args) is not dict:
            if not isinstance(args, Mapping):
                raise Denied(Code.INVALID_REQUEST, "args must be a JSON object")
            args = dict(args)
        first: Denied | None = None
        for cap in candidates:
            denial = _check_args(cap, args)
            if denial is None:
                return cap
            first = first or denial
        assert first is not None
        raise first

    # -- cold path -----------------------------------------------------------------

    def _verify_token(self, token: str, now: float) -> _Verified:
        raw = split_token(token, self._max_token_bytes, self._headers)
        key = self._keys.get(raw.kid)
        if key is None:
            raise Denied(Code.UNKNOWN_KEY, f"no key with kid {raw.kid[:64]!r}")
        if not key.verify(raw.signing_input, raw.signature):
            raise Denied(Code.BAD_SIGNATURE, "signature does not verify")
        if raw.header not in self._headers and len(self._headers) < 64:
            self._headers[raw.header] = raw.kid
        claims = parse_claims(raw.payload, self._scopes)
        if claims.iss != self.issuer:
            raise Denied(Code.WRONG_ISSUER, f"issuer {claims.iss!r} is not {self.issuer!r}")
        if self.audience not in claims.aud:
            raise Denied(Code.WRONG_AUDIENCE, f"token is not for audience {self.audience!r}")
        if claims.exp - claims.iat > self._max_ttl:
            raise Denied(Code.MALFORMED, f"token lifetime exceeds the maximum {self._max_ttl}s")
        if claims.iat > now + self._leeway:
            raise Denied(Code.NOT_YET_VALID, f"token issued in the future ({claims.iat})")
        exact, wildcard = self._compile(claims.capabilities)
        verified = _Verified(claims=claims, exact=exact, wildcard=wildcard)
        if now < claims.exp + self._leeway:
            self._remember(token, verified, now)
        return verified

    def _compile(self, caps: tuple[Capability, ...]) -> _Scope:
        memo = self._compiled.get(id(caps))
        if memo is not None:  # the entry holds `caps`, so its id cannot have been reused
            return memo[1]
        exact: dict[str, list[CompiledCapability]] = {}
        wildcard: list[CompiledCapability] = []
        for i, cap in enumerate(caps):
            compiled = compile_capability(cap, i)
            if cap.action.endswith(".*"):
                wildcard.append(compiled)
            else:
                exact.setdefault(cap.action, []).append(compiled)
        # Wildcards also cover exact names, so fold them into each exact entry.
        scope: _Scope = (
            {
                name: tuple(found)
                + tuple(w for w in wildcard if action_matches(w.capability.action, name))
                for name, found in exact.items()
            },
            tuple(wildcard),
        )
        if len(self._compiled) >= 1024:
            self._compiled.clear()
        self._compiled[id(caps)] = (caps, scope)
        return scope

    def _remember(self, token: str, verified: _Verified, now: float) -> None:
        with self._cache_lock:
            if len(self._cache) >= self._cache_size:
                live = {t: v for t, v in self._cache.items() if v.claims.exp + self._leeway > now}
                if len(live) >= self._cache_size:  # still full: drop the older half
                    live = dict(list(live.items())[len(live) // 2 :])
                self._cache = live
            self._cache[token] = verified

    def close(self) -> None:
        """Release the Redis connection if this verifier created it."""
        self._revocation.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_args(cap: CompiledCapability, args: dict[Any, Any]) -> Denied | None:
    named = cap.named
    for name, value in args.items():
        pred = named.get(name)
        if pred is None:
            if type(name) is not str:
                return Denied(Code.INVALID_REQUEST, "argument names must be strings")
            if cap.star is None:
                return Denied(Code.UNEXPECTED_ARGUMENT, f"argument {name[:80]!r} is not granted")
            if not cap.star(value):
                why = explain_failure(cap.capability.args["*"], value)
                return Denied(Code.ARGUMENT_DENIED, f"argument {name[:80]!r}: {why}")
        elif not pred(value):
            why = explain_failure(cap.capability.args[name], value)
            return Denied(Code.ARGUMENT_DENIED, f"argument {name!r}: {why}")
    for name in cap.required:
        if name not in args:
            return Denied(Code.ARGUMENT_DENIED, f"argument {name!r} is required but missing")
    return None
