"""Introspect: the online check, for tool backends that would rather ask than verify.

The service runs the very :class:`remit.Verifier` a backend would run offline, for the
audience the caller names: published issuer keys, strict revocation against the
service's own Redis, the proof checked with ``aud`` = that audience and claimed (single
use), budgets charged, the decision audited (``audit="sync"``: no thread per verifier,
and an unwritable event denies the call). There is no second implementation: a token
allowed here is allowed by a backend's verifier, and denied with the same code.

Who may ask: an app, for the audiences its policy lets it grant for (``"*"``: any). A
token for another audience is refused as a request (PERMISSION_DENIED) before anything
about it is looked at, so introspection is no oracle for tokens meant for backends the
app has nothing to do with. A token of another app's grant, for an audience the caller
may use, is checked like any other: that backend would accept it offline too. The
token's facts (grant, jti, subject, agent, expiry, ancestors) are returned only when the
call is allowed; a denied token may be forged, so nothing it claims is echoed.

Introspect *is* the check for the call: the proof is spent and the budgets are charged.
Ask once per call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from remit._constraints import valid_call_action
from remit._errors import Denied
from remit._keys import KeySet
from remit._redis import RedisLike
from remit._verifier import Verifier

from ._config import AppPolicy, Config
from ._errors import BadRequest, PolicyDenied
from ._keystore import KeyStore

__all__ = ["Introspection", "Introspector", "may_introspect"]

MAX_VERIFIERS = 256  # audiences with a live verifier; the least recently used is dropped
_AUDIENCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/-")


@dataclass(frozen=True)
class Introspection:
    allowed: bool
    code: str = ""
    message: str = ""
    grant_id: str = ""
    jti: str = ""
    subject: str = ""
    agent: str = ""
    expires_at: int = 0
    anc: tuple[str, ...] = ()
    capability: int = 0


def may_introspect(app: AppPolicy, audience: str) -> bool:
    """The audiences an app may grant for are the ones it may introspect for."""
    return "*" in app.audiences or audience in app.audiences


class Introspector:
    """One :class:`Verifier` per audience, rebuilt when the published keys change."""

    def __init__(
        self,
        config: Config,
        keystore: KeyStore,
        redis: RedisLike,
        *,
        clock: Callable[[], float] = time.time,
        max_verifiers: int = MAX_VERIFIERS,
    ) -> None:
        self._config = config
        self._keystore = keystore
        self._redis = redis
        self._clock = clock
        self._max = max_verifiers
        self._lock = threading.Lock()
        self._kids: tuple[str, ...] = ()
        self._keys: KeySet | None = None
        self._verifiers: OrderedDict[str, Verifier] = OrderedDict()

    def introspect(
        self,
        app: AppPolicy,
        *,
        token: str,
        audience: str,
        action: str,
        args: Any,
        proof: str,
    ) -> Introspection:
        """The decision for one call. Malformed requests raise :class:`BadRequest`; an
        audience beyond the app's policy :class:`PolicyDenied`; a denial is a result."""
        if not token:
            raise BadRequest("token: required (the token the backend received)", field="token")
        if not audience or len(audience) > 128 or not set(audience) <= _AUDIENCE_CHARS:
            raise BadRequest("audience: 1 to 128 of A-Z a-z 0-9 _ . : / -", field="audience")
        if not valid_call_action(action):
            raise BadRequest(f"action: not a valid action name: {action[:80]!r}", field="action")
        if not isinstance(args, Mapping):
            raise BadRequest("args_json: must be a JSON object", field="args_json")
        if not may_introspect(app, audience):
            raise PolicyDenied(f"audience {audience!r} is not in the app's policy")
        verifier = self._verifier(audience)
        try:
            decision = verifier.check(token, action=action, args=args, proof=proof or None)
        except Denied as denied:
            return Introspection(allowed=False, code=denied.code.value, message=denied.message)
        return Introspection(
            allowed=True,
            grant_id=decision.grant_id,
            jti=decision.token_id,
            subject=decision.subject,
            agent=decision.agent,
            expires_at=decision.expires_at,
            anc=decision.ancestors,
            capability=decision.capability,
        )

    def _verifier(self, audience: str) -> Verifier:
        cfg = self._config
        published = self._keystore.published(
            now=self._clock(), max_token_ttl=cfg.max_token_ttl, margin=cfg.revocation_margin
        )
        kids = tuple(k.kid for k in published)
        with self._lock:
            if kids != self._kids:  # rotation: exactly the keys the JWKS now publishes
                self._kids = kids
                self._keys = KeySet(k.public for k in published)
                self._verifiers.clear()  # dropped, not closed: a check may still use one
            found = self._verifiers.get(audience)
            if found is not None:
                self._verifiers.move_to_end(audience)
                return found
            assert self._keys is not None
            verifier = Verifier(
                self._keys,
                issuer=cfg.issuer,
                audience=audience,
                revocation="strict",
                redis=self._redis,
                prefix=cfg.prefix,
                max_ttl=cfg.max_token_ttl,
                clock=self._clock,
                audit="sync",
            )
            self._verifiers[audience] = verifier
            while len(self._verifiers) > self._max:
                self._verifiers.popitem(last=False)
            return verifier

    def close(self) -> None:
        """Drop every verifier (they share the service's Redis client; nothing to stop)."""
        with self._lock:
            self._verifiers.clear()
