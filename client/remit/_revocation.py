"""Per-call state checks of the verifier: revocation and proof replay, in one round trip.

Revocation ``stream`` (the default): answered from memory by a
:class:`remit._revfeed.RevocationFeed` that follows the service's revocation stream; no
Redis round trip per call (replay claims aside).

Revocation ``strict``: one pipelined round trip per call, every key in the grant's hash
slot (so it works unchanged on Redis Cluster): ``EXISTS`` of the grant record, ``GET`` of
the grant's "issued before" cutoff, ``EXISTS`` over the grant's revocation key and the
keys of the token and each ancestor. The grant record lives as long as any token of the
grant can: a missing record means Redis lost this grant's data (restart without
persistence, flush, failover to an empty replica), so the token is ``revoked`` with
reason ``epoch`` (its revocation may have been lost); new grants work at once.
``off``: none (tests, or by explicit choice).

Replay of proofs of possession (single-use ``jti``): a local set always answers first;
with ``replay="redis"`` the ``jti`` is also claimed with ``SET NX`` (expiring with the
proof window) so a proof used at one backend is refused at every other. The expiry is
relative (``PX``, from the verifier's own clock): an absolute ``EXAT`` would be read
against Redis's wall clock, and a Redis clock ahead of the verifier's would drop the
claim early, or at once, letting the proof be replayed at another backend. When both are
needed they go out in one pipeline: one round trip per call.

Every Redis error fails closed with ``revocation_unavailable``.
"""

from __future__ import annotations

import math
import threading
from typing import Literal

from ._errors import Code, Denied
from ._redis import REDIS_ERRORS, RedisLike
from ._redis_keys import RedisKeys
from ._revfeed import RevocationFeed
from ._token import Claims

__all__ = ["CallState", "ReplayMode", "RevocationMode"]

RevocationMode = Literal["stream", "strict", "off"]
ReplayMode = Literal["redis", "local"]
MAX_LOCAL_PROOFS = 200_000


def _unavailable(what: str, exc: BaseException) -> Denied:
    return Denied(
        Code.REVOCATION_UNAVAILABLE, f"{what} unknown (Redis: {type(exc).__name__}); failing closed"
    )


def _lost_grant(gid: str) -> Denied:
    return Denied(
        Code.REVOKED,
        f"epoch: grant {gid} is not in Redis (its data was lost, or this is the wrong "
        "Redis / prefix); get a new grant",
    )


class CallState:
    """The stateful part of a decision. ``client`` may be None only when nothing
    needs Redis (revocation off and local replay)."""

    def __init__(
        self,
        client: RedisLike | None,
        keys: RedisKeys,
        *,
        revocation: RevocationMode,
        replay: ReplayMode,
        owned: bool = False,
        feed: RevocationFeed | None = None,
    ) -> None:
        if client is None and (revocation == "strict" or replay == "redis"):
            raise ValueError("this revocation / replay mode needs redis=")
        if (feed is None) != (revocation != "stream"):
            raise ValueError('revocation="stream" needs a feed')
        self._client = client
        self._keys = keys
        self.feed = feed
        self._strict = revocation == "strict"
        self._redis_replay = replay == "redis"
        self._owned = owned
        self._seen: dict[str, float] = {}  # proof jti -> when it may be forgotten
        self._lock = threading.Lock()

    def settle(self, claims: Claims, proof_jti: str | None, proof_until: int, now: float) -> None:
        """Raise ``Denied`` if the token is revoked or the proof was used before;
        otherwise record the proof as used."""
        if proof_jti is not None and proof_jti in self._seen:
            raise Denied(Code.REPLAYED, "this proof was already used")
        if self.feed is not None:
            self.feed.check(claims)
        claim = proof_jti is not None and self._redis_replay
        if self._strict:
            assert self._client is not None
            # One round trip, as a plain pipeline rather than a Lua script: a script
            # counts as writing every key it names, so the verifier's Redis user would
            # need write access to revocation keys, i.e. the power to un-revoke.
            keys = self._keys
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(keys.grant(claims.gid))
            pipe.get(keys.grant_cutoff(claims.gid))
            pipe.exists(*keys.revocation_check(claims.gid, claims.jti, claims.anc))
            if claim:
                self._claim(pipe, claims.gid, proof_jti, proof_until, now)
            try:
                known, cutoff, revoked, *rest = pipe.execute()
            except REDIS_ERRORS as exc:
                raise _unavailable("revocation / replay state", exc) from None
            fresh = bool(rest[0]) if claim else True
            if not known:
                raise _lost_grant(claims.gid)
            if cutoff is not None and claims.iat < int(cutoff):
                raise Denied(
                    Code.REVOKED,
                    f"grant {claims.gid}: tokens issued before {int(cutoff)} are revoked",
                )
        elif claim and self.feed is not None:
            # Stream mode: the claim lives in the grant's slot, whose shard may have lost
            # its data (and with it this proof's claim) while the stream's shard did not.
            # The grant record, read in the same round trip, tells.
            assert self._client is not None
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(self._keys.grant(claims.gid))
            self._claim(pipe, claims.gid, proof_jti, proof_until, now)
            try:
                known, fresh = pipe.execute()
            except REDIS_ERRORS as exc:
                raise _unavailable("replay state", exc) from None
            if not known:
                raise _lost_grant(claims.gid)
            revoked = 0
        elif claim:
            assert self._client is not None
            try:
                fresh = self._claim(self._client, claims.gid, proof_jti, proof_until, now)
                revoked = 0
            except REDIS_ERRORS as exc:
                raise _unavailable("replay state", exc) from None
        else:
            revoked, fresh = 0, True
        if revoked:
            raise Denied(Code.REVOKED, f"token {claims.jti} or its grant {claims.gid} is revoked")
        if not fresh:
            raise Denied(Code.REPLAYED, "this proof was already used")
        if proof_jti is not None:
            self._remember(proof_jti, proof_until, now)

    def _claim(self, target: RedisLike, gid: str, jti: str | None, until: int, now: float) -> bool:
        assert jti is not None
        ttl_ms = max(1000, math.ceil((until - now) * 1000))
        result: bool = target.set(self._keys.proof_used(gid, jti), b"1", nx=True, px=ttl_ms)
        return result

    def _remember(self, jti: str, until: float, now: float) -> None:
        with self._lock:
            if jti in self._seen:  # a concurrent call with the same proof got here first
                raise Denied(Code.REPLAYED, "this proof was already used")
            if len(self._seen) >= MAX_LOCAL_PROOFS:
                self._seen = {j: t for j, t in self._seen.items() if t > now}
                if len(self._seen) >= MAX_LOCAL_PROOFS:
                    # Forgetting a live proof would allow its replay: refuse instead.
                    raise Denied(Code.REVOCATION_UNAVAILABLE, "replay cache full; failing closed")
            self._seen[jti] = until

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self._owned and self._client is not None:
            self._client.close()
