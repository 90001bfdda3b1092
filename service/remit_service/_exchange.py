"""Exchange: an agent trades its key-bound token for a narrower one.

Renewal (same ``act``, same ``cnf``): a fresh token; for the grant's own agent within the
grant's lifetime. Delegation (another ``act`` with its own ``cnf``): a token for a
sub-agent that never outlives its parent. A token whose ``act`` is not the grant's agent
(a delegated token or any descendant) never gets a child, renewal or delegation, that
outlives it; so a sub-agent cannot renew itself past its delegator, and no delegation may
name the grant's agent (that would launder a sub-agent back into the root's rights).
Either way the child's ``anc`` is the parent's plus the parent's ``jti``, so revoking any
ancestor (or the grant) kills the child at every strict verifier.

The credential is the parent token plus a proof of possession by its key over this very
request (:mod:`remit._exchange`); there is no app credential. Checks, in order (every
failure changes nothing, except that the proof's ``jti`` is spent):

1. request fields well formed (INVALID_ARGUMENT with the field);
2. parent: strict JWS, signature by a published issuer key, claims, issuer, policy
   lifetime, not expired, key-bound (a bearer token cannot prove who holds it);
3. proof: signed by the parent's key, ``ath``, ``aud`` = issuer, ``action``
   ``remit.exchange``, ``argh`` = the request's fields, fresh ``iat``;
4. depth: at most 8 ancestors; actor / key rules; child scope narrower than the
   parent's, child audience within the parent's;
5. one Redis round trip: grant record, epoch, revocation of grant + parent + every
   ancestor, and the proof ``jti`` claimed (single use);
6. a delegation's actor is neither the grant's agent nor the parent's actor;
7. lifetime: policy maximum (app and catalog), the grant's expiry, and, unless the parent's
   actor is the grant's agent, the parent's expiry; an explicit ``ttl_seconds`` past a
   bound is refused, not clamped.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from remit._constraints import MAX_CAPABILITIES, Capability, ConstraintError, parse_capability
from remit._errors import Code, Denied
from remit._exchange import EXCHANGE_ACTION, exchange_args
from remit._limits import LimitsError, budget_from_request
from remit._narrowing import is_narrower
from remit._proof import ProofParser, args_hash, token_hash
from remit._token import MAX_ANCESTORS, MAX_TOKEN_BYTES, Claims, parse_claims, split_token

from ._audit import ServiceAudit
from ._config import AppPolicy, Config
from ._errors import AuthFailed, BadRequest, Inactive, PolicyDenied
from ._issuer import Issuer
from ._keystore import KeyStore
from ._limits import with_grant_budgets
from ._store import GrantRecord, GrantStore, TokenRecord

__all__ = ["ExchangeResult", "Exchanger"]

LimitsRequest = dict[str, Any] | None

PROOF_WINDOW = 30  # seconds a proof's iat may lag
LEEWAY = 5  # seconds of clock skew tolerated on iat


@dataclass(frozen=True)
class ExchangeResult:
    token: str
    jti: str
    expires_at: int
    depth: int


def _refused(denial: Denied) -> AuthFailed:
    return _denied(denial.code, denial.message)


def _denied(code: Code, message: str) -> AuthFailed:
    """A refusal about the parent or the proof: the reason code leads the message and
    travels in the ``remit-code`` trailer, as a tool backend's denial would."""
    return AuthFailed(f"{code.value}: {message}", code=code.value)


class Exchanger:
    def __init__(
        self,
        config: Config,
        keystore: KeyStore,
        store: GrantStore,
        issuer: Issuer,
        clock: Callable[[], float],
        *,
        check_audiences: Callable[[Sequence[str], str], list[str]],
        max_ttl: Callable[[AppPolicy, Sequence[Any]], tuple[int, str]],
        jkt_ok: Callable[[str], bool],
        actor_ok: Callable[[str], bool],
        audit: ServiceAudit | None = None,
    ) -> None:
        """The callables are the core's own request checks, so both paths agree."""
        self._audit = audit
        self._config = config
        self._keystore = keystore
        self._store = store
        self._issuer = issuer
        self._clock = clock
        self._audiences = check_audiences
        self._max_ttl = max_ttl
        self._jkt_ok = jkt_ok
        self._actor_ok = actor_ok
        self._proofs = ProofParser()

    def exchange(
        self,
        *,
        token: str,
        proof: str,
        capabilities: list[dict[str, Any]],
        ttl: int,
        audience: Sequence[str],
        actor: str,
        cnf_jkt: str,
    ) -> ExchangeResult:
        # 1. request fields
        if not token:
            raise BadRequest("token: required (the parent token)", field="token")
        if not proof:
            raise BadRequest("proof: required (a proof of possession by the token's key)",
                             field="proof")
        if actor and not self._actor_ok(actor):
            raise BadRequest("actor: at most 256 printable characters", field="actor")
        if cnf_jkt and not self._jkt_ok(cnf_jkt):
            raise BadRequest("cnf_jkt: must be an RFC 7638 SHA-256 thumbprint", field="cnf_jkt")
        if ttl < 0:
            raise BadRequest("ttl_seconds: must not be negative", field="ttl_seconds")
        auds = self._audiences(audience, "audience") if audience else []
        if len(capabilities) > MAX_CAPABILITIES:
            raise BadRequest(f"capabilities: at most {MAX_CAPABILITIES}", field="capabilities")
        now = int(self._clock())

        # 2. parent token
        parent = self._verify_parent(token, now)
        # 3. proof
        fields = exchange_args(
            capabilities=capabilities, ttl_seconds=ttl, audience=list(audience),
            actor=actor, cnf_jkt=cnf_jkt,
        )
        pop = self._check_proof(proof, token, parent, fields, now)

        # 4. lineage, actor, scope, audience
        if len(parent.anc) + 1 > MAX_ANCESTORS:
            raise PolicyDenied(
                f"delegation depth: the token already has {len(parent.anc)} ancestors; a "
                f"child would exceed the maximum of {MAX_ANCESTORS} (mint a fresh token)"
            )
        delegating = bool(actor) and actor != parent.actor
        if delegating:
            if not cnf_jkt:
                raise BadRequest(
                    "cnf_jkt: a token for another actor must be bound to that actor's own key",
                    field="cnf_jkt",
                )
            if cnf_jkt == parent.cnf_jkt:
                raise PolicyDenied("cnf_jkt: a sub-agent needs its own key, not the parent's")
        elif cnf_jkt and cnf_jkt != parent.cnf_jkt:
            raise PolicyDenied(
                "cnf_jkt: a renewal keeps the parent's key; a token for another key is a "
                "token for another actor (set actor)"
            )
        child_actor = actor or parent.actor
        child_jkt = cnf_jkt or parent.cnf_jkt
        assert child_jkt is not None
        if auds:
            extra = [a for a in auds if a not in parent.aud]
            if extra:
                raise PolicyDenied(f"audience: {extra} not in the parent token's audience")
        else:
            auds = list(parent.aud)
        jti = "t_" + secrets.token_urlsafe(16)
        scope = self._child_scope(parent, capabilities)

        # 5. state, in one round trip
        grant, cutoff, revoked, fresh = self._store.lineage_state(
            parent.gid, parent.jti, parent.anc, pop, PROOF_WINDOW + 2 * LEEWAY
        )
        if not fresh:
            raise _denied(Code.REPLAYED, "this proof was already used")
        if revoked:
            raise _denied(Code.REVOKED, f"token {parent.jti}, an ancestor or grant {parent.gid}")
        if grant is None:  # expired, or Redis lost its data: nothing to hand on either way
            raise _denied(Code.REVOKED, f"epoch: grant {parent.gid} is gone from Redis")
        if parent.iat < cutoff:
            raise _denied(Code.REVOKED, "the token was issued before its grant's cutoff")
        if grant.revoked:
            raise _denied(Code.REVOKED, f"grant {grant.id} is revoked")
        # Stream verifiers refuse tokens issued before the epoch (a global kill switch
        # raises it) or the grant's cutoff: the parent must be after both, and the child
        # is issued at or after them (as Mint does).
        _, floor = self._store.get_with_epoch(parent.gid, now)
        if parent.iat < floor:
            raise _denied(Code.REVOKED, "the token predates the revocation epoch")
        now = max(now, floor)
        if now >= grant.expires_at:
            raise Inactive(f"grant {grant.id} has expired")
        app = self._app(grant)

        # 6. the delegation's actor. Naming the grant's agent would make the child a "root"
        # token again (free to renew up to the grant) and mislead the audit trail.
        if delegating and actor == grant.agent:
            raise PolicyDenied(
                f"actor: {actor!r} is the grant's own agent; a delegated token cannot name "
                "it (the agent renews its own token instead)"
            )
        rooted = parent.actor == grant.agent

        # 7. lifetime
        caps = self._with_own_budgets(scope, jti, grant.expires_at)
        limit, why = self._max_ttl(app, caps)
        if ttl > limit:
            raise PolicyDenied(f"ttl_seconds {ttl} exceeds the maximum {limit}s ({why})")
        # Only the grant's own agent renews past its token's expiry. Every other token (a
        # sub-agent's, or any descendant: delegation can never name the grant's agent, and
        # a renewal keeps ``act``) is a ceiling for all its children, renewals included.
        # Revocation lifetimes (docs/revocation.md) still hold: a child is issued now,
        # after every check of its lineage, and exp - iat <= the policy maximum, which is
        # at most max_token_ttl; this bound only ever shortens it.
        bound, bound_why = grant.expires_at, f"grant {grant.id}"
        if (delegating or not rooted) and parent.exp < bound:
            bound = parent.exp
            bound_why = "the parent token" if delegating else (
                f"the parent token (only the grant's agent {grant.agent!r} may renew past "
                "its token's expiry)"
            )
        if ttl and now + ttl > bound:
            raise PolicyDenied(
                f"ttl_seconds {ttl}: the token would outlive {bound_why} (expires at {bound})"
            )
        exp = min(now + (ttl or min(self._config.default_token_ttl, limit)), bound)
        if exp <= now:
            raise Inactive("the parent token expires now; nothing is left to hand on")

        claims: dict[str, Any] = {
            "iss": self._config.issuer,
            "sub": parent.sub,
            "aud": auds,
            "act": {"sub": child_actor},
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": jti,
            "gid": parent.gid,
            "anc": [*parent.anc, parent.jti],
            "authorization_details": [c.to_json() for c in caps],
            "purpose": parent.purpose,
            "cnf": {"jkt": child_jkt},
        }
        child = self._issuer.sign(claims)
        if len(child) > MAX_TOKEN_BYTES:
            raise BadRequest(f"the token would exceed {MAX_TOKEN_BYTES} bytes",
                             field="capabilities")
        if self._audit is not None:  # like Mint: before the token is recorded and returned
            self._audit.token_exchanged(
                gid=parent.gid,
                jti=jti,
                app=grant.app,
                agent=child_actor,
                sub=parent.sub,
                exp=exp,
                capabilities=claims["authorization_details"],
                anc=claims["anc"],
                parent=parent.jti,
            )
        self._store.record_token(
            TokenRecord(jti=jti, gid=grant.id, app=grant.app, exp=exp),
            keep_for=exp - now + self._config.revocation_margin,
        )
        return ExchangeResult(token=child, jti=jti, expires_at=exp, depth=len(parent.anc) + 1)

    # -- steps ------------------------------------------------------------------------

    def _verify_parent(self, token: str, now: int) -> Claims:
        """The parent's verified claims (its capabilities carry their budgets)."""
        cfg = self._config
        try:
            raw = split_token(token)
            keys = self._keystore.published(
                now=now, max_token_ttl=cfg.max_token_ttl, margin=cfg.revocation_margin
            )
            key = next((k.public for k in keys if k.kid == raw.kid), None)
            if key is None:
                raise _denied(Code.UNKNOWN_KEY, f"no published issuer key {raw.kid[:64]!r}")
            if not key.verify(raw.signing_input, raw.signature):
                raise _denied(Code.BAD_SIGNATURE, "the token's signature does not verify")
            claims = parse_claims(raw.payload)
        except Denied as denial:
            raise _refused(denial) from None
        if claims.iss != cfg.issuer:
            raise _denied(Code.WRONG_ISSUER, f"{claims.iss[:80]!r} is not this service")
        if claims.exp - claims.iat > cfg.max_token_ttl:
            raise _denied(Code.MALFORMED, "token lifetime exceeds the policy maximum")
        if claims.iat > now + LEEWAY:
            raise _denied(Code.NOT_YET_VALID, "token issued in the future")
        if now >= claims.exp:
            raise _denied(Code.EXPIRED, f"the token expired at {claims.exp}")
        if claims.cnf_jkt is None:
            raise _denied(
                Code.PROOF_REQUIRED,
                "only key-bound tokens can be exchanged (a bearer token cannot show who holds it)",
            )
        return claims

    def _check_proof(
        self, proof: str, token: str, parent: Claims, fields: dict[str, Any], now: int
    ) -> str:
        assert parent.cnf_jkt is not None
        try:
            pop = self._proofs.parse(proof, parent.cnf_jkt)
        except Denied as denial:
            raise _refused(denial) from None
        if pop.ath != token_hash(token):
            raise _denied(Code.PROOF_MISMATCH, "ath: the proof is for another token")
        if pop.aud != self._config.issuer:
            raise _denied(Code.PROOF_MISMATCH, f"aud: the proof is for {pop.aud[:80]!r}")
        if pop.action != EXCHANGE_ACTION:
            raise _denied(Code.PROOF_MISMATCH, f"action: the proof is for {pop.action[:80]!r}")
        if pop.iat > now + LEEWAY or pop.iat < now - PROOF_WINDOW - LEEWAY:
            raise _denied(Code.PROOF_EXPIRED, f"proof iat {pop.iat} is outside the window")
        try:
            argh = args_hash(fields)
        except ValueError as exc:
            raise BadRequest(f"capabilities: {exc}", field="capabilities") from None
        if pop.argh != argh:
            raise _denied(Code.PROOF_MISMATCH, "argh: the proof is for another request")
        return pop.jti

    @staticmethod
    def _child_scope(
        parent: Claims, raw: list[dict[str, Any]]
    ) -> list[tuple[Capability, LimitsRequest]]:
        """Each requested capability (CreateGrant form), narrower than one of the parent's
        and carrying that capability's budgets unchanged, so a sub-agent's spending counts
        against its parent's; plus the budget it asks for itself (added later, with
        the grant's expiry). Empty request: the parent's capabilities unchanged."""
        if not raw:
            return [(c, None) for c in parent.capabilities]
        out: list[tuple[Capability, LimitsRequest]] = []
        for i, entry in enumerate(raw):
            path = f"capabilities[{i}]"
            try:
                cap = parse_capability(
                    {k: v for k, v in entry.items() if k != "limits"}, path
                )
            except ConstraintError as exc:
                raise BadRequest(str(exc), field=exc.path or path) from None
            own = entry.get("limits")
            if own is not None:
                try:  # shape only; the real id and expiry come later
                    budget_from_request(own, budget_id="t_check.0", exp=1, path=f"{path}.limits")
                except LimitsError as exc:
                    raise BadRequest(str(exc), field=exc.path) from None
            (child,) = with_grant_budgets([cap], parent.capabilities)
            if is_narrower(child, parent.capabilities):
                out.append((child, own))
            else:
                raise PolicyDenied(
                    f"{path}: {cap.action!r} with these arguments is not within the parent "
                    "token's scope"
                )
        return out

    @staticmethod
    def _with_own_budgets(
        scope: list[tuple[Capability, LimitsRequest]], jti: str, exp: int
    ) -> list[Capability]:
        out = []
        for i, (cap, own) in enumerate(scope):
            if own is None:
                out.append(cap)
                continue
            budget = budget_from_request(
                own, budget_id=f"{jti}.{i}", exp=exp, path=f"capabilities[{i}].limits"
            )
            out.append(replace(cap, limits=(*cap.limits, budget)))
        return out

    def _app(self, grant: GrantRecord) -> AppPolicy:
        for app in self._config.apps:
            if app.name == grant.app:
                return app
        raise PolicyDenied(f"the app {grant.app!r} of grant {grant.id} is no longer configured")
