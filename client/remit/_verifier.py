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

import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple, TypeVar, cast

from ._audit import (
    DEFAULT_BUFFER,
    DEFAULT_MAXLEN,
    AuditMode,
    AuditStats,
    DecisionAudit,
    Who,
    audit_stream,
)
from ._constraints import (
    Capability,
    CompiledCapability,
    action_matches,
    compile_capability,
    explain_failure,
    valid_call_action,
)
from ._context import current_credentials
from ._errors import Code, Denied
from ._jwks import JwksRefresher, is_jwks_url, load_jwks
from ._keys import KeySet, PublicKey
from ._limits import Charge, Limits
from ._proof import ProofClaims, ProofParser, args_hash, token_hash
from ._redis import RedisLike, connect, is_address
from ._redis_keys import DEFAULT_PREFIX, RedisKeys
from ._revfeed import FeedStatus, RevocationFeed, blocking_client
from ._revocation import CallState, ReplayMode, RevocationMode
from ._token import MAX_TOKEN_BYTES, Claims, ScopeCache, parse_claims, split_token

__all__ = ["Decision", "Verifier"]

F = TypeVar("F", bound=Callable[..., Any])

JWKS_REFRESH_TIMEOUT = 2.0  # seconds: the longest an unknown kid can hold up a check
log = logging.getLogger("remit")


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
    ancestors: tuple[str, ...] = ()  # the token's anc: jti of each ancestor, oldest first


_Scope = tuple[Mapping[str, tuple[CompiledCapability, ...]], tuple[CompiledCapability, ...]]


class _Verified(NamedTuple):
    claims: Claims
    ath: str | None  # token hash, for key-bound tokens (proofs carry it)
    exact: Mapping[str, tuple[CompiledCapability, ...]]
    wildcard: tuple[CompiledCapability, ...]


# A budgeted call's options, in token order (see Verifier._plan): each capability that
# allows the call with its prepared charge, the local refusal of its budgets, or None
# (no budgets: it ends the plan).
_Plan = tuple[tuple[CompiledCapability, Charge | Denied | None], ...]


class Verifier:
    """Verify remit tokens and calls for one tool backend (one audience).

    ``keys``: a :class:`KeySet`, a JWKS mapping, or public keys. ``revocation``:
    ``"stream"`` (the default; needs ``redis``): an in-memory revocation set loaded at
    construction and kept current by a daemon thread following the service's revocation
    stream (docs/revocation.md); checks fail closed (``revocation_unavailable``) when the
    feed has not been confirmed current for ``revocation_max_age`` seconds (default 2).
    ``unsafe_stale_revocations_ok=True`` answers from the last known set instead: a
    revoked token may then be accepted while Redis is unreachable. ``"strict"`` (needs
    ``redis``): one Redis round trip per call. ``"off"``: no revocation check. Call
    :meth:`close` (or use ``with``) to stop the feed thread. ``leeway`` (seconds) absorbs
    clock skew on ``exp``/``nbf``/``iat``. ``max_ttl`` rejects tokens whose lifetime
    (``exp - iat``) exceeds the policy maximum, whoever signed them.

    Key-bound tokens (``cnf``) need a per-call proof (``check(..., proof=)``): its
    ``iat`` must be within ``proof_window`` seconds, and its ``jti`` is single use:
    ``replay="redis"`` (the default when ``redis`` is given) claims it in Redis so a
    proof is refused at every backend after its first use; ``"local"`` only within
    this process. ``require_binding=True`` refuses bearer tokens altogether
    (``proof_required``): for backends whose actions must never run on a stolen token.

    Budgets (a capability's ``limits``) are charged in Redis after every other check
    passed (docs/limits.md); without ``redis`` such calls are denied ``unsupported``.

    Key rotation: a verifier built with :meth:`from_jwks` from an ``http(s)://`` URL
    keeps the URL. On a token whose ``kid`` it does not know, it refetches the JWKS
    and looks the ``kid`` up once more, so tokens of a freshly rotated issuer key
    verify without a restart. The refetch is rate limited: at most once per
    ``jwks_refresh_interval`` seconds (default 30, minimum 1, measured with
    ``clock``; the initial load does not count), and one at a time: concurrent
    callers wait for the fetch in flight (never longer than its 2 s timeout) and
    use its result. A flood of tokens with bogus ``kid``s therefore costs the JWKS
    endpoint at most one request per interval. A failed fetch keeps the current
    keys. After a refresh, keys no longer in the JWKS stop verifying *new* tokens,
    but a token already verified and cached stays valid until its ``exp``.
    Verifiers built from a mapping, a file or a :class:`KeySet` never refetch.
    Known ``kid``s cost nothing extra.

    Audit (docs/audit.md): every decision, allowed or denied, is appended to the Redis
    stream ``<prefix>audit`` with a digest of the arguments; their values only for the
    actions named in ``audit_args`` (exact names or ``x.*``), since they can be secrets.
    ``audit="buffered"`` (the default whenever ``redis`` is given) adds no Redis round
    trip to ``check``: a daemon thread writes batches; at most ``audit_buffer`` events
    wait, beyond that they are dropped and counted (:meth:`audit_stats`, a log warning),
    never blocking a check. ``"sync"`` writes before ``check`` returns and denies the
    call with ``audit_unavailable`` when it cannot. ``"off"`` records nothing; it is the
    default only without ``redis``, i.e. for verifiers that already run with
    ``revocation="off"`` (tests only) and have nowhere to write. A security product
    records by default: an operator who wants no trail says so.
    """

    def __init__(
        self,
        keys: KeySet | Mapping[str, Any] | list[PublicKey],
        *,
        issuer: str,
        audience: str,
        revocation: RevocationMode = "stream",
        redis: str | RedisLike | None = None,
        revocation_max_age: float = 2.0,
        unsafe_stale_revocations_ok: bool = False,
        revocation_load_timeout: float = 15.0,
        prefix: str = DEFAULT_PREFIX,
        leeway: float = 5.0,
        max_ttl: int = 24 * 3600,
        clock: Callable[[], float] = time.time,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        cache_size: int = 10_000,
        replay: ReplayMode | None = None,
        proof_window: int = 30,
        require_binding: bool = False,
        audit: AuditMode | None = None,
        audit_args: Collection[str] = (),
        audit_buffer: int = DEFAULT_BUFFER,
        audit_maxlen: int | None = DEFAULT_MAXLEN,
    ) -> None:
        if isinstance(keys, KeySet):
            self._keys = keys
        elif isinstance(keys, Mapping):
            self._keys = KeySet.from_jwks(keys)
        else:
            self._keys = KeySet(keys)
        self._jwks: JwksRefresher | None = None  # set by from_jwks for a URL
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
        self._names: set[str] = set()  # call actions found valid (bounded, see _check)
        # Cold-path memos, all bounded: header segment -> kid (headers whose kid is
        # ours), scope JSON -> parsed capabilities, parsed scope -> compiled closures.
        self._headers: dict[str, str] = {}
        self._scopes = ScopeCache()
        self._compiled: dict[int, tuple[tuple[Any, ...], _Scope]] = {}
        if revocation not in ("stream", "strict", "off"):
            raise ValueError(
                f"unknown revocation mode {revocation!r}; use 'stream', 'strict' or 'off'"
            )
        if replay is None:
            replay = "redis" if redis is not None else "local"
        if replay not in ("redis", "local"):
            raise ValueError(f"unknown replay mode {replay!r}; use 'redis' or 'local'")
        if revocation != "off" and redis is None:
            raise ValueError(
                f'revocation="{revocation}" needs redis= (a URL or a client); '
                'revocation="off" checks no revocation'
            )
        if replay == "redis" and redis is None:
            raise ValueError('replay="redis" needs redis= (a URL or a client)')
        if not 1 <= proof_window <= 300:
            raise ValueError("proof_window must be between 1 and 300 seconds")
        client = connect(redis) if redis is not None else None
        # Budgets (capability "limits") need Redis; without it such tokens are denied.
        self._limits = Limits(client, prefix) if client is not None else None
        feed: RevocationFeed | None = None
        if revocation == "stream":
            feed = _start_feed(
                redis,
                RedisKeys(prefix),
                max_age=revocation_max_age,
                fail_open=unsafe_stale_revocations_ok,
                wait=revocation_load_timeout,
            )
        self._state = CallState(
            client,
            RedisKeys(prefix),
            revocation=revocation,
            replay=replay,
            owned=is_address(redis),
            feed=feed,
        )
        self._proofs = ProofParser()
        self._proof_window = proof_window
        self._require_binding = require_binding
        self.revocation_mode: RevocationMode = revocation
        self.replay_mode: ReplayMode = replay
        # -- audit trail (remit._audit): records each decision after it is made --
        if audit is None:
            audit = "buffered" if redis is not None else "off"
        if audit not in ("buffered", "sync", "off"):
            raise ValueError(f"unknown audit mode {audit!r}; use 'buffered', 'sync' or 'off'")
        if audit != "off" and redis is None:
            raise ValueError(f'audit="{audit}" needs redis= (a URL or a client)')
        self.audit_mode: AuditMode = audit
        self._audit: DecisionAudit | None = None
        if audit != "off":
            assert client is not None  # audit needs redis= (checked above)
            self._audit = DecisionAudit(
                client,  # one pool for the verifier: revocation, budgets and audit
                audit_stream(prefix),
                mode=audit,
                audience=audience,
                record_args=audit_args,
                buffer=audit_buffer,
                maxlen=audit_maxlen,
                clock=clock,
                owned=False,  # the revocation state owns (and closes) the shared client
            )
            # An unclosed verifier must not leave its thread behind once it is collected.
            weakref.finalize(self, self._audit.abandon)

    @classmethod
    def from_jwks(
        cls,
        source: Mapping[str, Any] | str | os.PathLike[str],
        *,
        issuer: str,
        audience: str,
        jwks_refresh_interval: float = 30.0,
        **kwargs: Any,
    ) -> Verifier:
        """Build a verifier from a JWKS mapping, a JWKS file, or an http(s) URL.

        From a URL, the verifier refetches the JWKS on an unknown ``kid``, at most
        once per ``jwks_refresh_interval`` seconds (see "Key rotation" above); the
        interval is ignored for a mapping or a file, which are never refetched.
        """
        if not (isinstance(source, str) and is_jwks_url(source)):
            return cls(load_jwks(source), issuer=issuer, audience=audience, **kwargs)
        if not jwks_refresh_interval >= 1:
            raise ValueError("jwks_refresh_interval must be at least 1 second")
        keys = load_jwks(source)
        verifier = cls(keys, issuer=issuer, audience=audience, **kwargs)
        verifier._jwks = JwksRefresher(
            source, keys, interval=jwks_refresh_interval, timeout=JWKS_REFRESH_TIMEOUT
        )
        return verifier

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
        return self._audited(token, action, args, proof, False)

    def _audited(
        self,
        token: str,
        action: str,
        args: Mapping[str, Any] | None,
        proof: str | None,
        possession_proven: bool,
    ) -> Decision:
        """The decision, recorded in the audit trail once it is made (if audit is on).
        Who is recorded only from a verified token (this verifier's cache): a forged
        token's claims never reach the trail."""
        audit = self._audit
        if audit is None:
            return self._check(token, action, args, proof, possession_proven=possession_proven)
        known = self._cache.get(token) if type(token) is str else None
        try:
            decision = self._check(token, action, args, proof, possession_proven=possession_proven)
        except Denied as denied:
            if known is None and type(token) is str:
                known = self._cache.get(token)
            claims = known.claims if known is not None else None
            audit.record(False, denied.code.value, claims, action, args, denied=denied)
            raise
        if known is None:
            known = self._cache.get(token)
        who: Claims | Who = (
            known.claims
            if known is not None
            else Who(decision.grant_id, decision.token_id, decision.agent, decision.subject, ())
        )
        audit.record(True, "ok", who, action, args)  # sync: may deny (audit_unavailable)
        return decision

    def audit_stats(self) -> AuditStats | None:
        """Counters of the audit trail (written, dropped, pending…); None when off."""
        return self._audit.stats() if self._audit is not None else None

    def _check(
        self,
        token: str,
        action: str,
        args: Mapping[str, Any] | None,
        proof: str | None,
        *,
        possession_proven: bool,
    ) -> Decision:
        # The call's shape first: an action that is no valid name (a 4 MB one, say) is
        # refused before any other work and never recorded verbatim (remit._audit).
        if type(action) is not str:
            raise Denied(Code.INVALID_REQUEST, "action must be a string")
        if action not in self._names:
            if not valid_call_action(action):
                raise Denied(Code.INVALID_REQUEST, f"invalid action name {action[:80]!r}")
            if len(self._names) < 4096:  # valid names seen: a set lookup beats the regex
                self._names.add(action)
        if type(token) is not str:
            raise Denied(Code.MALFORMED, "token must be a string")
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
        pop: ProofClaims | None = None
        if claims.cnf_jkt is None and self._require_binding:
            raise Denied(
                Code.PROOF_REQUIRED, "this backend accepts only tokens bound to an agent key"
            )
        if claims.cnf_jkt is not None and not possession_proven:
            pop = self._check_proof(verified, proof, action, args, now)
        cap, call_args, rest = self._authorize(verified, action, args)
        plan = self._plan(cap, call_args, rest, now) if cap.capability.limits else None
        if pop is None:
            self._state.settle(claims, None, 0, now)
        else:
            until = pop.iat + self._proof_window + int(self._leeway) + 1
            self._state.settle(claims, pop.jti, until, now)
        if plan is not None:  # last: a call denied for any other reason spends nothing
            cap = self._spend(claims.gid, plan)
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
            ancestors=tuple(claims.anc),
        )

    def _check_proof(
        self,
        verified: _Verified,
        proof: str | None,
        action: str,
        args: Mapping[str, Any] | None,
        now: float,
    ) -> ProofClaims:
        """A key-bound token needs a proof by that key for exactly this call."""
        if proof is None:
            raise Denied(
                Code.PROOF_REQUIRED, "token is bound to an agent key; the call has no proof"
            )
        assert verified.claims.cnf_jkt is not None and verified.ath is not None
        pop = self._proofs.parse(proof, verified.claims.cnf_jkt)
        if pop.ath != verified.ath:
            raise Denied(Code.PROOF_MISMATCH, "ath: the proof is for another token")
        if pop.aud != self.audience:
            raise Denied(Code.PROOF_MISMATCH, f"aud: the proof is for audience {pop.aud[:80]!r}")
        if pop.action != action:
            raise Denied(Code.PROOF_MISMATCH, f"action: the proof is for {pop.action[:80]!r}")
        if pop.iat > now + self._leeway or pop.iat < now - self._proof_window - self._leeway:
            raise Denied(
                Code.PROOF_EXPIRED,
                f"proof iat {pop.iat} is outside the {self._proof_window}s window",
            )
        try:
            argh = args_hash(args)
        except ValueError as exc:
            raise Denied(Code.PROOF_MISMATCH, f"argh: {exc}") from None
        if pop.argh != argh:
            raise Denied(Code.PROOF_MISMATCH, "argh: the proof is for other arguments")
        return pop

    def _authorize(
        self, verified: _Verified, action: str, args: Mapping[str, Any] | None
    ) -> tuple[CompiledCapability, dict[Any, Any], tuple[CompiledCapability, ...]]:
        """The first capability (token order) that allows the call, the call's arguments
        as a dict, and the candidates after it (not yet checked: only a budgeted
        capability's refusal needs them)."""
        candidates = verified.exact.get(action)
        if candidates is None:  # check() validated the name already
            candidates = tuple(
                c for c in verified.wildcard if action_matches(c.capability.action, action)
            )
            if not candidates:
                raise Denied(Code.ACTION_NOT_GRANTED, f"action {action!r} is not granted")
        if args is None:
            args = {}
        elif type(args) is not dict:
            if not isinstance(args, Mapping):
                raise Denied(Code.INVALID_REQUEST, "args must be a JSON object")
            try:
                args = dict(args)
            except Exception:  # a Mapping whose keys or items cannot be read
                raise Denied(Code.INVALID_REQUEST, "args must be a JSON object") from None
        first: Denied | None = None
        for i, cap in enumerate(candidates):
            denial = _check_args(cap, args)
            if denial is None:
                return cap, args, candidates[i + 1 :]
            first = first or denial
        assert first is not None
        raise first

    def _plan(
        self,
        cap: CompiledCapability,
        args: dict[Any, Any],
        rest: tuple[CompiledCapability, ...],
        now: float,
    ) -> _Plan:
        """The capabilities that allow the call, in token order, each with its prepared
        charge (amounts checked, no I/O yet), up to the first one without budgets.

        Any capability that allows the call may authorize it (as narrowing and
        Exchange assume), so a budget that refuses the call falls through to the next
        one instead of shadowing it. A capability whose amounts its budgets refuse
        locally stays in the plan as its refusal; if every one is refused, the first
        refusal is the answer before anything is settled."""
        if self._limits is None:  # budgets cannot be enforced: fail closed, at once
            raise Denied(
                Code.UNSUPPORTED,
                "the capability has limits (budgets) and this verifier has no redis= "
                "to enforce them",
            )
        steps: list[tuple[CompiledCapability, Charge | Denied | None]] = []
        for c in (cap, *rest):
            if c is not cap and _check_args(c, args) is not None:
                continue
            if not c.capability.limits:
                steps.append((c, None))
                break
            try:
                steps.append((c, self._limits.prepare(c.capability.limits, args, now)))
            except Denied as denied:
                steps.append((c, denied))
        if all(isinstance(step, Denied) for _, step in steps):
            raise cast(Denied, steps[0][1])
        return tuple(steps)

    def _spend(self, gid: str, plan: _Plan) -> CompiledCapability:
        """Charge the first capability of the plan whose budgets admit the call (one
        round trip each); when none does, the first refusal in token order. A Redis
        failure (``limit_unavailable``) ends the search at once: fail closed."""
        assert self._limits is not None
        first: Denied | None = None
        for cap, step in plan:
            if step is None:
                return cap
            if isinstance(step, Denied):
                first = first or step
                continue
            try:
                self._limits.consume(gid, step)
            except Denied as denied:
                if denied.code is not Code.LIMIT_EXCEEDED:
                    raise
                first = first or denied
                continue
            return cap
        assert first is not None
        raise first

    # -- cold path -----------------------------------------------------------------

    def _verify_token(self, token: str, now: float) -> _Verified:
        raw = split_token(token, self._max_token_bytes, self._headers)
        key = self._keys.get(raw.kid)
        if key is None and self._jwks is not None:  # a rotated key? refetch, rate limited
            self._keys = self._jwks.refresh(now)
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
        ath = token_hash(token) if claims.cnf_jkt is not None else None
        verified = _Verified(claims=claims, ath=ath, exact=exact, wildcard=wildcard)
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

    # -- guarding plain functions ------------------------------------------------------

    def guard(self, action: str) -> Callable[[F], F]:
        """Decorate a tool function so every call is checked before it runs.

        The call's arguments are bound from the function's signature (defaults
        applied; ``**kwargs`` are flattened in; ``self``/``cls`` left out) and checked
        as ``args``. Token and proof come from :func:`remit.credentials` (bound by a
        transport adapter or by the caller). No credentials: ``token_required``.
        Works for plain and ``async`` functions.
        """
        if not valid_call_action(action):
            raise ValueError(f"invalid action name {action!r}")

        def decorate(fn: F) -> F:
            signature = inspect.signature(fn)

            def authorize(a: tuple[Any, ...], kw: dict[str, Any]) -> None:
                creds = current_credentials()
                if creds is None:
                    raise Denied(Code.TOKEN_REQUIRED, f"no remit token for {action!r}")
                self._audited(
                    creds.token,
                    action,
                    _bound_args(signature, a, kw),
                    creds.proof,
                    creds.possession_proven,
                )

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*a: Any, **kw: Any) -> Any:
                    authorize(a, kw)
                    return await fn(*a, **kw)

                return cast(F, async_wrapper)

            @functools.wraps(fn)
            def wrapper(*a: Any, **kw: Any) -> Any:
                authorize(a, kw)
                return fn(*a, **kw)

            return cast(F, wrapper)

        return decorate

    def revocation_status(self) -> FeedStatus | None:
        """Stream mode: the feed's state (``age`` is its lag in seconds); else None."""
        feed = self._state.feed
        return None if feed is None else feed.status()

    def wait_revocations_ready(self, timeout: float = 10.0) -> bool:
        """Stream mode: wait until the revocation feed is confirmed current (True), at most
        ``timeout`` seconds (False). Other modes: True at once."""
        feed = self._state.feed
        return True if feed is None else feed.wait_ready(timeout)

    def close(self) -> None:
        """Write the buffered audit events (as far as Redis allows), stop the audit and
        revocation feed threads, release the Redis connections this verifier created."""
        if self._audit is not None:
            self._audit.close()
        self._state.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_feed(
    target: Any, keys: RedisKeys, *, max_age: float, fail_open: bool, wait: float
) -> RevocationFeed:
    if fail_open:
        log.warning(
            "remit: UNSAFE revocation mode: a stale revocation feed is trusted "
            "(unsafe_stale_revocations_ok=True); revoked tokens may be accepted while "
            "Redis is unreachable"
        )
    block = min(0.5, max_age / 4)
    feed = RevocationFeed(
        blocking_client(target, read_timeout=block + 1.0), keys, max_age=max_age,
        block=block, fail_open=fail_open,
    )
    feed.start(wait)
    return feed


def _bound_args(
    signature: inspect.Signature, a: tuple[Any, ...], kw: dict[str, Any]
) -> dict[str, Any]:
    try:
        bound = signature.bind(*a, **kw)
    except TypeError as exc:
        raise Denied(Code.INVALID_REQUEST, f"call does not match the tool: {exc}") from None
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if name in ("self", "cls") and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        else:
            out[name] = value
    return out


def _check_args(cap: CompiledCapability, args: dict[Any, Any]) -> Denied | None:
    named = cap.named
    for name, value in args.items():
        # The name's type first: a str subclass equal to a named argument must not pass as
        # it, and a foreign key's __hash__/__eq__ must never run inside the lookup below.
        if type(name) is not str:
            return Denied(Code.INVALID_REQUEST, "argument names must be strings")
        pred = named.get(name)
        if pred is None:
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
