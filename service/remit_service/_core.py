"""The transport-free service core: policy, grants, minting, revocation.

The gRPC servicer only converts messages; every decision is made here, against the
app's policy from config and the grant stored in Redis. All input is validated
before anything is written, so a refused request changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from remit._constraints import Capability, ConstraintError, parse_capabilities
from remit._narrowing import is_narrower
from remit._redis_keys import RedisKeys
from remit._revfeed import RevocationEntry
from remit._token import MAX_TIME, MAX_TOKEN_BYTES

from ._audit import ServiceAudit
from ._catalog import check_grant, pattern_covers, patterns_overlap
from ._config import AppPolicy, Config
from ._describe import Description, describe_capabilities
from ._errors import AuthFailed, BadRequest, Inactive, Missing, PolicyDenied, StoreDown
from ._exchange import Exchanger, ExchangeResult
from ._issuer import Issuer
from ._keystore import KeyStore
from ._limits import grant_capabilities, record_form, split_limits, with_grant_budgets
from ._revmetrics import RevocationMetrics
from ._schema import check_capabilities as check_schema
from ._store import GrantRecord, GrantStore, TokenRecord

__all__ = ["Core", "ExchangeResult", "MintResult", "RevokeResult"]

# No control characters (Unicode Cc: C0, DEL and C1, e.g. U+0085 NEL, U+009B CSI).
_PARTY = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,256}\Z")  # subject / agent: bounded
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f-\x9f]*\Z")  # purpose: length checked apart
_PAGE_TOKEN = re.compile(r"[0-9]{1,9}\Z")  # ASCII digits only: str.isdigit() takes "²"
_AUDIENCE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}\Z")
_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")
_JKT = re.compile(r"[A-Za-z0-9_-]{43}\Z")
MAX_PURPOSE = 1024
_JWS_OVERHEAD = 200  # header segment, dots and signature, rounded up
DEFAULT_GRANT_TTL = 3600
MAX_PAGE = 1000
PARSED_GRANTS = 256  # grants whose parsed capabilities Mint keeps (see Core._granted)
TRIM_SLACK = 300  # seconds the revocation stream keeps beyond the bound (clock skew)


@dataclass(frozen=True)
class RevokeResult:
    revoked_at: int
    grants: int  # grants revoked or given a cutoff
    cutoff: int  # tokens issued before it are revoked (0: not a cutoff revocation)


@dataclass(frozen=True)
class MintResult:
    token: str
    jti: str
    expires_at: int


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(16)


class Core:
    def __init__(
        self,
        config: Config,
        keystore: KeyStore,
        store: GrantStore,
        *,
        clock: Callable[[], float] = time.time,
        audit: ServiceAudit | None = None,
    ) -> None:
        self.config = config
        self.audit = audit  # the audit trail (docs/audit.md); None: no events
        self._keystore = keystore
        self._issuer = Issuer(keystore)
        self._store = store
        self._clock = clock
        self.keys = RedisKeys(config.prefix)
        self.revocation_metrics = RevocationMetrics(store.stream_info)
        # grant id -> (the record they were parsed from, its parsed capabilities)
        self._parsed: dict[str, tuple[GrantRecord, tuple[Capability, ...]]] = {}
        self._parsed_lock = threading.Lock()
        self._exchanger = Exchanger(
            config,
            keystore,
            store,
            self._issuer,
            clock,
            check_audiences=self._audiences,
            max_ttl=self._max_ttl,
            jkt_ok=lambda jkt: bool(_JKT.match(jkt)),
            actor_ok=lambda actor: bool(_PARTY.match(actor)),
            audit=audit,
        )

    # -- authentication -----------------------------------------------------------

    def authenticate(self, api_key: str | None) -> AppPolicy:
        """The app whose API key this is. Compares against every app in constant time."""
        if not api_key:
            raise AuthFailed("missing API key (metadata 'authorization: Bearer <key>')")
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()
        found: AppPolicy | None = None
        for app in self.config.apps:
            if hmac.compare_digest(digest, app.api_key_sha256):
                found = app
        if found is None:
            raise AuthFailed("invalid API key")
        return found

    # -- grants -------------------------------------------------------------------

    def create_grant(
        self,
        app: AppPolicy,
        *,
        subject: str,
        agent: str,
        audience: Sequence[str],
        capabilities: list[dict[str, Any]],
        purpose: str,
        ttl: int,
    ) -> GrantRecord:
        if not _PARTY.match(subject):
            raise BadRequest("subject: required, at most 256 printable characters", field="subject")
        if not _PARTY.match(agent):
            raise BadRequest("agent: required, at most 256 printable characters", field="agent")
        if len(purpose) > MAX_PURPOSE or not _PRINTABLE.match(purpose):
            raise BadRequest(
                f"purpose: at most {MAX_PURPOSE} printable characters", field="purpose"
            )
        auds = self._audiences(audience, "audience")
        capabilities, limits = split_limits(capabilities, "capabilities")  # budgets apart
        caps = self._capabilities(capabilities, "capabilities")
        check_schema(capabilities, "capabilities")  # and the shipped JSON Schema
        limits = check_grant(  # the action catalog: argument names, bounds, single use
            self.config.actions, closed=self.config.catalog_closed, capabilities=caps,
            limits=limits,
        )
        if ttl < 0:
            raise BadRequest("ttl_seconds: must not be negative", field="ttl_seconds")
        ttl = ttl or min(DEFAULT_GRANT_TTL, app.max_grant_ttl)
        if ttl > app.max_grant_ttl:
            raise PolicyDenied(
                f"grant lifetime {ttl}s exceeds the app's maximum {app.max_grant_ttl}s"
            )
        for i, cap in enumerate(caps):
            if not any(pattern_covers(p, cap.action) for p in app.actions):
                raise PolicyDenied(
                    f"capabilities[{i}].action: app {app.name!r} may not grant {cap.action!r}"
                )
        for a in auds:
            if "*" not in app.audiences and a not in app.audiences:
                raise PolicyDenied(f"audience: app {app.name!r} may not grant audience {a!r}")
        now = int(self._clock())
        grant = GrantRecord(
            id=_new_id("g_"),
            app=app.name,
            subject=subject,
            agent=agent,
            audience=auds,
            capabilities=record_form(caps, limits, "capabilities"),
            purpose=purpose,
            created_at=now,
            expires_at=now + ttl,
        )
        token_caps = grant_capabilities(grant.capabilities, grant.expires_at)
        self._check_mintable(grant, token_caps)
        if self.audit is not None:  # before the grant exists (see _audit.py)
            self.audit.grant_created(grant, [c.to_json() for c in token_caps])
        self._store.create(grant, keep_for=ttl + self.config.revocation_margin)
        return grant

    def get_grant(self, app: AppPolicy, gid: str, *, field: str = "id") -> GrantRecord:
        """``field``: the request field that carried the id, for the error."""
        if not _ID.match(gid):
            raise BadRequest(f"{field}: not a grant id", field=field)
        return self._own(app, gid, self._store.get(gid))

    @staticmethod
    def _own(app: AppPolicy, gid: str, grant: GrantRecord | None) -> GrantRecord:
        if grant is None or grant.app != app.name:  # another app's grant does not exist for you
            raise Missing(f"no grant {gid}")
        return grant

    def list_grants(
        self,
        app: AppPolicy,
        *,
        subject: str = "",
        agent: str = "",
        include_inactive: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[GrantRecord], str]:
        if page_size < 0 or page_size > MAX_PAGE:
            raise BadRequest(f"page_size: 0..{MAX_PAGE}", field="page_size")
        size = page_size or 100
        if page_token and not _PAGE_TOKEN.match(page_token):
            raise BadRequest("page_token: not a token from a previous response", field="page_token")
        offset = int(page_token or 0)
        now = self._clock()
        out: list[GrantRecord] = []
        while len(out) < size:
            ids = self._store.list_ids(app.name, offset, size)
            if not ids:
                return out, ""
            # get_many drops ids whose record has expired from the index, so the cursor
            # advances only over the grants still there, and stops when the page is full.
            for grant in self._store.get_many(app.name, ids):
                if len(out) == size:
                    break
                offset += 1
                if subject and grant.subject != subject:
                    continue
                if agent and grant.agent != agent:
                    continue
                if not include_inactive and not grant.active(now):
                    continue
                out.append(grant)
        return out, str(offset)

    # -- tokens -------------------------------------------------------------------

    def mint(
        self,
        app: AppPolicy,
        *,
        grant_id: str,
        capabilities: list[dict[str, Any]] | None = None,
        ttl: int = 0,
        audience: Sequence[str] = (),
        cnf_jkt: str = "",
    ) -> MintResult:
        if not _ID.match(grant_id):
            raise BadRequest("grant_id: not a grant id", field="grant_id")
        now = int(self._clock())
        found, epoch = self._store.get_with_epoch(grant_id, now)
        grant = self._own(app, grant_id, found)
        # Verifiers refuse tokens issued before the epoch (see GrantStore.ensure_epoch) or
        # the grant's "issued before" cutoff; right after either was set that is the
        # current second or the next, so issue at it.
        if epoch > now + 2:
            raise StoreDown("the revocation epoch is in the future: check the clocks")
        now = max(now, epoch)
        if grant.revoked:
            raise Inactive(f"grant {grant.id} is revoked")
        if now >= grant.expires_at:
            raise Inactive(f"grant {grant.id} has expired")
        granted = self._granted(grant)
        caps: Sequence[Capability]
        if capabilities:
            caps = self._capabilities(capabilities, "capabilities")
            caps = with_grant_budgets(caps, granted)  # the grant's budgets go along
            for i, cap in enumerate(caps):
                if not is_narrower(cap, granted):
                    raise PolicyDenied(
                        f"capabilities[{i}]: {cap.action!r} with these arguments is not "
                        f"within grant {grant.id}"
                    )
        else:
            caps = granted
        if audience:
            auds = self._audiences(audience, "audience")
            extra = [a for a in auds if a not in grant.audience]
            if extra:
                raise PolicyDenied(f"audience: {extra} not in grant {grant.id}")
        else:
            auds = list(grant.audience)
        if cnf_jkt and not _JKT.match(cnf_jkt):
            raise BadRequest("cnf_jkt: must be an RFC 7638 SHA-256 thumbprint", field="cnf_jkt")
        if ttl < 0:
            raise BadRequest("ttl_seconds: must not be negative", field="ttl_seconds")
        limit, why = self._max_ttl(app, caps)
        if ttl > limit:
            raise PolicyDenied(f"ttl_seconds {ttl} exceeds the maximum {limit}s ({why})")
        ttl = ttl or min(self.config.default_token_ttl, limit)
        exp = min(now + ttl, grant.expires_at)
        jti = _new_id("t_")
        claims = self._claims(grant, auds, caps, now=now, exp=exp, jti=jti, cnf_jkt=cnf_jkt)
        token = self._issuer.sign(claims)
        if len(token) > MAX_TOKEN_BYTES:
            raise BadRequest(
                f"the token would exceed {MAX_TOKEN_BYTES} bytes; mint fewer capabilities",
                field="capabilities",
            )
        if self.audit is not None:  # before the token is recorded and returned
            self.audit.token_minted(
                gid=grant.id,
                jti=jti,
                app=app.name,
                agent=grant.agent,
                sub=grant.subject,
                exp=exp,
                capabilities=claims["authorization_details"],
                anc=claims["anc"],
            )
        # Recorded before the token is returned: a token whose id the store does not
        # know could not be revoked by id.
        self._store.record_token(
            TokenRecord(jti=jti, gid=grant.id, app=app.name, exp=exp),
            keep_for=exp - now + self.config.revocation_margin,
        )
        return MintResult(token=token, jti=jti, expires_at=exp)

    def _granted(self, grant: GrantRecord) -> tuple[Capability, ...]:
        """The grant's capabilities, parsed. Reused only for the very record object they
        were parsed from (the store hands out one shared record per exact stored bytes),
        so a changed record is always parsed afresh."""
        hit = self._parsed.get(grant.id)
        if hit is not None and hit[0] is grant:
            return hit[1]
        caps = tuple(grant_capabilities(grant.capabilities, grant.expires_at))
        with self._parsed_lock:
            if len(self._parsed) >= PARSED_GRANTS:
                self._parsed.pop(next(iter(self._parsed)))  # oldest entry first
            self._parsed[grant.id] = (grant, caps)
        return caps

    def _claims(
        self,
        grant: GrantRecord,
        audience: list[str],
        caps: Sequence[Capability],
        *,
        now: int,
        exp: int,
        jti: str,
        cnf_jkt: str = "",
    ) -> dict[str, Any]:
        """The v1 claims of a token under ``grant`` (token format: DESIGN.md)."""
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "sub": grant.subject,
            "aud": audience,
            "act": {"sub": grant.agent},
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": jti,
            "gid": grant.id,
            "anc": [],
            "authorization_details": [c.to_json() for c in caps],
            "purpose": grant.purpose,
        }
        if cnf_jkt:
            claims["cnf"] = {"jkt": cnf_jkt}
        return claims

    def _check_mintable(self, grant: GrantRecord, caps: Sequence[Capability]) -> None:
        """Refuse at grant time a grant whose whole-grant token could never be minted."""
        claims = self._claims(
            grant,
            grant.audience,
            caps,
            now=MAX_TIME,
            exp=MAX_TIME,
            jti="t_" + "x" * 22,
            cnf_jkt="x" * 43,
        )
        size = len(json.dumps(claims, separators=(",", ":")).encode()) * 4 // 3 + _JWS_OVERHEAD
        if size > MAX_TOKEN_BYTES:
            raise BadRequest(
                f"capabilities: a token for this grant would be about {size} bytes, over the "
                f"{MAX_TOKEN_BYTES}-byte limit; split it into several grants",
                field="capabilities",
            )

    def _max_ttl(self, app: AppPolicy, caps: Sequence[Capability]) -> tuple[int, str]:
        limit, why = self.config.max_token_ttl, "service maximum"
        if app.max_token_ttl < limit:
            limit, why = app.max_token_ttl, f"app {app.name!r}"
        for cap in caps:
            for name, policy in self.config.actions.items():
                if policy.max_ttl < limit and patterns_overlap(name, cap.action):
                    limit, why = policy.max_ttl, f"action {name!r}"
        return limit, why

    # -- revocation ---------------------------------------------------------------

    def revoke(
        self,
        app: AppPolicy,
        *,
        jti: str = "",
        grant_id: str = "",
        agent: str = "",
        subject: str = "",
        all: bool = False,
        before: int = 0,
        reason: str = "",
    ) -> RevokeResult:
        """Revoke one token (and its descendants), a grant, or what was issued before
        ``before`` (0 = now) by an agent, a subject, or every grant of the app.

        Lifetimes (docs/revocation.md): a revocation is kept until no token it could
        affect can be alive, plus ``revocation_margin``: a token, a grant, or a grant's
        tokens issued before T, until ``min(grant expiry, T + max_token_ttl)``: every
        token they can affect, renewals and sub-agent tokens included, was issued before
        T (Exchange refuses a revoked parent) and outlives neither bound. Stream entries
        are therefore all dead ``max_token_ttl + margin`` after they are written, which
        is what :meth:`trim_revocations` keeps.
        """
        targets = [
            ("jti", jti),
            ("grant_id", grant_id),
            ("agent", agent),
            ("subject", subject),
            ("all", "1" if all else ""),
        ]
        given = [name for name, value in targets if value]
        if len(given) != 1:
            raise BadRequest(
                "target: give exactly one of jti, grant_id, agent, subject or all", field="target"
            )
        if len(reason) > MAX_PURPOSE:
            raise BadRequest(f"reason: at most {MAX_PURPOSE} characters", field="reason")
        now = int(self._clock())
        if before < 0 or before > now + 1:
            raise BadRequest("before: Unix seconds, not in the future (0 = now)", field="before")
        if before and jti:
            raise BadRequest("before: only with grant_id, agent, subject or all", field="before")
        # "Now" covers tokens minted later in this very second, and those stamped with
        # the epoch when it was just (re)created (see mint).
        cutoff = before or max(now, self._store.ensure_epoch(now)) + 1
        margin, max_ttl = self.config.revocation_margin, self.config.max_token_ttl
        if jti:
            if not _ID.match(jti):
                raise BadRequest("jti: not a token id", field="jti")
            token = self._store.token(jti)
            if token is None or token.app != app.name:
                raise Missing(f"no live token {jti}")
            # Renewals (Exchange) may outlive the token, but each was issued before now
            # (a revoked token is never exchanged), so it expires before now + max_ttl,
            # and never after its grant: the same bound as a grant's.
            record = self._store.get(token.gid)
            horizon = min(record.expires_at, now + max_ttl) if record else now + max_ttl
            until = max(horizon, token.exp) + margin
            self._store.revoke_token(token, reason=reason, keep_for=until - now)
            self._publish("jti", [RevocationEntry("j", jti, until)], 0, now)
            self._audit_revoked(app.name, {"jti": jti}, reason)
            return RevokeResult(revoked_at=now, grants=0, cutoff=0)
        if grant_id:
            grant = self.get_grant(app, grant_id, field="grant_id")
            if before:
                n = self._cut([grant], cutoff, now, bump=False)
                self._audit_revoked(app.name, {"gid": grant.id, "before": cutoff}, reason)
                return RevokeResult(revoked_at=now, grants=n, cutoff=cutoff)
            until = min(grant.expires_at, now + max_ttl) + margin
            if not grant.revoked:
                self._store.revoke_grant(grant, at=now, reason=reason, keep_for=until - now)
            self._publish("grant", [RevocationEntry("g", grant.id, until)], 1, now)
            self._audit_revoked(app.name, {"gid": grant.id}, reason)
            return RevokeResult(revoked_at=now, grants=1, cutoff=0)
        if agent and not _PARTY.match(agent):
            raise BadRequest("agent: at most 256 printable characters", field="agent")
        if subject and not _PARTY.match(subject):
            raise BadRequest("subject: at most 256 printable characters", field="subject")
        grants = [
            g
            for g in self._all_grants(app)
            if (not agent or g.agent == agent) and (not subject or g.subject == subject)
        ]
        kind = "agent" if agent else "subject" if subject else "all"
        n = self._cut(grants, cutoff, now, kind=kind, bump=not before)
        scope = {"agent": agent} if agent else {"sub": subject} if subject else {}
        self._audit_revoked(
            app.name, {"before": cutoff, **scope} if scope else {"all": cutoff}, reason
        )
        return RevokeResult(revoked_at=now, grants=n, cutoff=cutoff)

    def _audit_revoked(self, by: str, what: dict[str, Any], reason: str) -> None:
        if self.audit is not None:  # after the revocation, which never waits on it
            self.audit.revoked(by=by, what=what, reason=reason)

    def revoke_everywhere(self, *, before: int = 0) -> RevokeResult:
        """The operator's global kill switch: every token of every app issued before
        ``before`` (0 = now), including tokens of a stolen issuer key that no grant knows.
        Raises the epoch (stream verifiers refuse every older token) and gives every
        grant of every app the cutoff (strict verifiers; a forged grant id has no record
        and is refused by them anyway). Not an RPC: it needs the service's config."""
        now = int(self._clock())
        if before < 0 or before > now + 1:
            raise BadRequest("before: Unix seconds, not in the future (0 = now)", field="before")
        cutoff = before or max(now, self._store.ensure_epoch(now)) + 1
        self._store.raise_epoch(cutoff)
        n = 0
        for app in self.config.apps:
            n += self._cut(self._all_grants(app), cutoff, now, kind="all", bump=not before)
        self._audit_revoked("operator", {"all": cutoff}, "kill switch: every app")
        return RevokeResult(revoked_at=now, grants=n, cutoff=cutoff)

    def _cut(
        self, grants: list[GrantRecord], cutoff: int, now: int, *, kind: str = "grant",
        bump: bool,
    ) -> int:
        """Give each grant an "issued before ``cutoff``" revocation; returns how many
        could still have affected tokens (the others are skipped)."""
        margin, max_ttl = self.config.revocation_margin, self.config.max_token_ttl
        entries = []
        for grant in grants:
            # +1: a "now" cutoff may end up a second later (see GrantStore.raise_cutoff)
            until = min(grant.expires_at, cutoff + 1 + max_ttl) + margin
            if until <= now or grant.revoked:
                continue
            cut = self._store.raise_cutoff(grant.id, cutoff, keep_for=until - now, now=bump)
            entries.append(RevocationEntry("b", grant.id, until, cut))
        self._publish(kind, entries, len(entries), now)
        return len(entries)

    def _publish(self, kind: str, entries: list[RevocationEntry], grants: int, now: int) -> None:
        try:
            if entries:
                self._store.append_revocations(entries, now)
        except StoreDown:
            self.revocation_metrics.stream_failed()
            raise
        self.revocation_metrics.revoked(kind, grants=grants, entries=len(entries))

    def _all_grants(self, app: AppPolicy) -> list[GrantRecord]:
        out: list[GrantRecord] = []
        offset = 0
        while True:
            ids = self._store.list_ids(app.name, offset, MAX_PAGE)
            if not ids:
                return out
            offset += len(ids)
            out.extend(self._store.get_many(app.name, ids))

    def trim_revocations(self) -> int:
        """Drop stream entries that can no longer affect a live token (called now and then
        by the server; see :meth:`revoke` for why the bound holds)."""
        keep = self.config.max_token_ttl + self.config.revocation_margin + TRIM_SLACK
        return self._store.trim_revocations(keep)

    # -- exchange and consent text -------------------------------------------------------

    def exchange(
        self,
        *,
        token: str,
        proof: str,
        capabilities: list[dict[str, Any]] | None = None,
        ttl: int = 0,
        audience: Sequence[str] = (),
        actor: str = "",
        cnf_jkt: str = "",
    ) -> ExchangeResult:
        """A narrower token for the holder of ``token`` (see :mod:`._exchange`)."""
        return self._exchanger.exchange(
            token=token,
            proof=proof,
            capabilities=capabilities or [],
            ttl=ttl,
            audience=audience,
            actor=actor,
            cnf_jkt=cnf_jkt,
        )

    def describe(
        self,
        app: AppPolicy,
        *,
        grant_id: str = "",
        capabilities: list[dict[str, Any]] | None = None,
    ) -> Description:
        """Consent text for one of the app's grants, or for capabilities (validated
        like CreateGrant's, catalog included, so the text describes a grantable thing)."""
        if bool(grant_id) == bool(capabilities):
            raise BadRequest("target: give exactly one of grant_id or capabilities",
                             field="target")
        if grant_id:
            grant = self.get_grant(app, grant_id, field="grant_id")
            return describe_capabilities(grant.capabilities, self.config.actions, grant=grant)
        assert capabilities is not None
        stripped, limits = split_limits(capabilities, "capabilities")
        caps = self._capabilities(stripped, "capabilities")
        limits = check_grant(
            self.config.actions, closed=self.config.catalog_closed, capabilities=caps,
            limits=limits,
        )
        return describe_capabilities(
            record_form(caps, limits, "capabilities"), self.config.actions
        )

    # -- alignment report (docs/audit.md) -------------------------------------------

    def alignment(
        self,
        app: AppPolicy,
        *,
        grant_id: str = "",
        agent: str = "",
        subject: str = "",
        since_ms: int = 0,
    ) -> dict[str, Any]:
        """The alignment report over the audit stream, restricted to ``app``'s grants."""
        from ._alignment import Filters, ReportError, compute, store_lookup

        if grant_id and not _ID.match(grant_id):
            raise BadRequest("grant_id: not a grant id", field="grant_id")
        if agent and not _PARTY.match(agent):
            raise BadRequest("agent: at most 256 printable characters", field="agent")
        if subject and not _PARTY.match(subject):
            raise BadRequest("subject: at most 256 printable characters", field="subject")
        if since_ms < 0 or since_ms > MAX_TIME:
            raise BadRequest("since_ms: unix milliseconds, not negative", field="since_ms")
        filters = Filters(
            grant=grant_id, agent=agent, subject=subject, since_ms=since_ms, app=app.name
        )
        try:
            report = compute(
                self._store.client, self.keys.prefix + "audit", filters, store_lookup(self._store)
            )
        except ReportError as exc:
            raise StoreDown(f"the audit stream cannot be read: {exc}") from None
        if grant_id and not report["grants"]:
            raise Missing(f"no grant {grant_id}")  # another app's grant does not exist for you
        return report

    # -- keys and health -------------------------------------------------------------

    def keep_epoch(self) -> None:
        """Re-create the revocation epoch if Redis lost it (called every second)."""
        self._store.ensure_epoch(self._clock())

    def jwks(self) -> dict[str, Any]:
        return self._keystore.jwks(
            now=self._clock(),
            max_token_ttl=self.config.max_token_ttl,
            margin=self.config.revocation_margin,
        )

    def health(self) -> dict[str, Any]:
        redis_ok = self._store.ping()
        return {
            "status": "ok" if redis_ok else "degraded",
            "issuer": self.config.issuer,
            "redis": "ok" if redis_ok else "unavailable",
            "dev": self.config.dev,
        }

    # -- validation helpers ----------------------------------------------------------

    def _audiences(self, audience: Sequence[str], name: str) -> list[str]:
        auds = list(audience)
        if not auds or len(auds) > 32:
            raise BadRequest(f"{name}: 1 to 32 audiences", field=name)
        for i, a in enumerate(auds):
            if not _AUDIENCE.match(a):
                raise BadRequest(f"{name}[{i}]: invalid audience name", field=name)
        if len(set(auds)) != len(auds):
            raise BadRequest(f"{name}: duplicate audience", field=name)
        return auds

    def _capabilities(self, capabilities: list[dict[str, Any]], name: str) -> list[Capability]:
        try:
            return parse_capabilities(capabilities, name)
        except ConstraintError as exc:
            raise BadRequest(str(exc), field=exc.path or name) from None
