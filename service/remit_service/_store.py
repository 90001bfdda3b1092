"""Grants and revocations in Redis (key names: :mod:`remit._redis_keys`).

Everything that must be atomic lives in one grant's hash slot and is written in one
MULTI/EXEC: a grant's record and its revocation marker, a token's revocation marker.
Lifetimes are relative (``EX``, seconds from the service's own clock): an absolute
``EXAT`` is read against Redis's wall clock, and a Redis clock running ahead would drop a
revocation before the token it revokes expires.
Redis errors surface as :class:`StoreDown` (-> UNAVAILABLE), never half a write that
matters: the one multi-step write across slots (a grant's app-index entry, then the
grant) leaves at worst an index entry without a record, which listing drops.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis
from remit._redis import REDIS_ERRORS, RedisLike
from remit._redis_keys import RedisKeys
from remit._revfeed import FIELD, RevocationEntry, encode_entry

from ._errors import StoreDown

__all__ = ["GrantRecord", "GrantStore", "TokenRecord"]


@dataclass(frozen=True)
class GrantRecord:
    id: str
    app: str
    subject: str
    agent: str
    audience: list[str]
    capabilities: list[dict[str, Any]]  # API form: {"action", "args"}
    purpose: str
    created_at: int
    expires_at: int
    revoked: bool = False
    revoked_at: int = 0
    revoke_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def active(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass(frozen=True)
class TokenRecord:
    jti: str
    gid: str
    app: str
    exp: int


# Raise the grant's "issued before" cutoff, never lower it (two revocations racing must
# not un-revoke), and keep it at least ARGV[2] seconds. ARGV[3] == "1" ("now"): also
# past the current cutoff, since tokens minted since then carry it as their iat.
_RAISE_CUTOFF = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if ARGV[3] == '1' and cur + 1 > new then new = cur + 1 end
if new > cur then redis.call('SET', KEYS[1], new) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return math.max(cur, new)
"""
# Raise the epoch (the global kill switch), never lower it.
_RAISE_EPOCH = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new > cur then redis.call('SET', KEYS[1], new) end
return math.max(cur, new)
"""
STREAM_BATCH = 500  # stream entries per transaction

GRANT_CACHE_SIZE = 256  # decoded grant records, by their exact stored bytes


@functools.lru_cache(maxsize=GRANT_CACHE_SIZE)
def _decode_grant(body: bytes) -> GrantRecord:
    """A stored grant, memoized on its exact bytes (every Mint reads its grant, and a
    grant's bytes change only when it is revoked). The record is shared: read-only."""
    return GrantRecord(**json.loads(body))


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.TimeoutError, TimeoutError):
        raise StoreDown("Redis did not answer in time", retryable=False) from None
    except REDIS_ERRORS:  # cluster clients also raise RedisClusterException
        raise StoreDown("Redis unavailable") from None


class GrantStore:
    def __init__(self, client: RedisLike, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys
        self._raise_cutoff = client.register_script(_RAISE_CUTOFF)
        self._raise_epoch = client.register_script(_RAISE_EPOCH)

    @property
    def client(self) -> RedisLike:
        """The Redis client (the alignment report reads the audit stream with it)."""
        return self._r

    def ping(self) -> bool:
        try:
            return bool(self._r.ping())
        except REDIS_ERRORS:
            return False

    def create(self, grant: GrantRecord, *, keep_for: int) -> None:
        body = json.dumps(asdict(grant), separators=(",", ":"))
        with _redis_errors():
            # Two commands, index first: the app index and the grant live in different
            # hash slots (one MULTI would be CROSSSLOT on Redis Cluster). A failure in
            # between leaves an index entry without a record, which get_many drops.
            self._r.zadd(self._k.app_grants(grant.app), {grant.id: grant.created_at})
            created = self._r.set(self._k.grant(grant.id), body, ex=max(1, keep_for), nx=True)
        if not created:  # 128-bit random ids: a collision means something is very wrong
            raise StoreDown("grant id collision; retry")

    def ensure_epoch(self, now: float) -> int:
        """The revocation epoch, created if missing (first start, or Redis lost its data).

        A new epoch is the *next* second: every token issued before it — including any
        whose revocation was just lost — is refused by verifiers from then on.
        """
        with _redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.set(self._k.epoch(), int(now) + 1, nx=True)
            pipe.get(self._k.epoch())
            _, value = pipe.execute()
        return int(value)

    def get_with_epoch(self, gid: str, now: float) -> tuple[GrantRecord | None, int]:
        """A grant and the earliest ``iat`` a new token of it may carry (the epoch, or the
        grant's "issued before" cutoff if later), in one round trip."""
        with _redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.get(self._k.grant(gid))
            pipe.get(self._k.grant_cutoff(gid))
            pipe.get(self._k.epoch())
            body, cutoff, epoch = pipe.execute()
        grant = None if body is None else _decode_grant(body)
        floor = int(epoch) if epoch is not None else self.ensure_epoch(now)
        return grant, max(floor, int(cutoff or 0))

    def lineage_state(
        self, gid: str, jti: str, anc: tuple[str, ...], proof_jti: str, proof_ttl: int
    ) -> tuple[GrantRecord | None, int, bool, bool]:
        """For Exchange, in one round trip to the grant's slot (like a strict verifier):
        the grant (None: gone, e.g. Redis lost its data), its "issued before" cutoff (0:
        none), whether the grant, the token or any ancestor is revoked, and whether the
        proof ``jti`` was fresh (it is claimed, single use, for ``proof_ttl`` seconds)."""
        with _redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.get(self._k.grant(gid))
            pipe.get(self._k.grant_cutoff(gid))
            pipe.exists(*self._k.revocation_check(gid, jti, anc))
            pipe.set(self._k.proof_used(gid, proof_jti), b"1", nx=True, ex=max(1, proof_ttl))
            body, cutoff, revoked, fresh = pipe.execute()
        grant = None if body is None else _decode_grant(body)
        return grant, int(cutoff or 0), bool(revoked), bool(fresh)

    def get(self, gid: str) -> GrantRecord | None:
        with _redis_errors():
            body = self._r.get(self._k.grant(gid))
        if body is None:
            return None
        return GrantRecord(**json.loads(body))

    def list_ids(self, app: str, offset: int, count: int) -> list[str]:
        """An app's grant ids, newest first."""
        with _redis_errors():
            ids = self._r.zrevrange(self._k.app_grants(app), offset, offset + count - 1)
        return [i.decode() for i in ids]

    def get_many(self, app: str, gids: list[str]) -> list[GrantRecord]:
        """Grants by id; ids whose record has expired are dropped from the app index."""
        if not gids:
            return []
        with _redis_errors():
            pipe = self._r.pipeline(transaction=False)
            for gid in gids:
                pipe.get(self._k.grant(gid))
            bodies = pipe.execute()
            gone = [gid for gid, body in zip(gids, bodies, strict=True) if body is None]
            if gone:
                self._r.zrem(self._k.app_grants(app), *gone)
        return [GrantRecord(**json.loads(b)) for b in bodies if b is not None]

    def revoke_grant(
        self, grant: GrantRecord, *, at: int, reason: str, keep_for: int
    ) -> GrantRecord:
        """Mark the grant revoked: the revocation key (what verifiers check) and the record."""
        updated = replace(grant, revoked=True, revoked_at=at, revoke_reason=reason)
        body = json.dumps(asdict(updated), separators=(",", ":"))
        with _redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._k.grant_revoked(grant.id), reason or "revoked", ex=max(1, keep_for))
            pipe.set(self._k.grant(grant.id), body, keepttl=True, xx=True)
            pipe.execute()
        return updated

    def record_token(self, token: TokenRecord, *, keep_for: int) -> None:
        # Flat str/int fields: vars() is asdict() without its deep copy (every Mint).
        body = json.dumps(vars(token), separators=(",", ":"))
        with _redis_errors():
            # The plain command: redis-py's set() spends ~10 us on argument handling.
            self._r.execute_command(
                "SET", self._k.token_grant(token.jti), body, "EX", max(1, keep_for)
            )

    def token(self, jti: str) -> TokenRecord | None:
        with _redis_errors():
            body = self._r.get(self._k.token_grant(jti))
        return None if body is None else TokenRecord(**json.loads(body))

    def revoke_token(self, token: TokenRecord, *, reason: str, keep_for: int) -> None:
        with _redis_errors():
            self._r.set(
                self._k.token_revoked(token.gid, token.jti),
                reason or "revoked",
                ex=max(1, keep_for),
            )

    def raise_cutoff(self, gid: str, cutoff: int, *, keep_for: int, now: bool) -> int:
        """The grant's tokens issued before ``cutoff`` are revoked (strict verifiers).
        ``now``: a "revoke now", which must also cover tokens minted at the current
        cutoff. Returns the grant's cutoff after the change."""
        with _redis_errors():
            result = self._raise_cutoff(
                keys=[self._k.grant_cutoff(gid)],
                args=[cutoff, max(1, keep_for), "1" if now else "0"],
            )
        return int(result)

    def raise_epoch(self, value: int) -> int:
        """Every token issued before ``value`` is refused by every stream verifier (they
        treat the new epoch like a data loss); returns the epoch after the change."""
        with _redis_errors():
            return int(self._raise_epoch(keys=[self._k.epoch()], args=[value]))

    def append_revocations(self, entries: list[RevocationEntry], now: float) -> str:
        """Append to the revocation stream (stream verifiers); returns the last entry id.
        Creates the epoch if missing, in the same transaction (same hash tag): a stream
        written after a data loss always comes with the new epoch that reports the loss."""
        last = ""
        with _redis_errors():
            for i in range(0, len(entries), STREAM_BATCH):
                pipe = self._r.pipeline(transaction=True)
                pipe.set(self._k.epoch(), int(now) + 1, nx=True)
                for entry in entries[i : i + STREAM_BATCH]:
                    pipe.xadd(self._k.revocation_stream(), {FIELD: encode_entry(entry)})
                last = pipe.execute()[-1].decode()
        return last

    def trim_revocations(self, keep_seconds: int) -> int:
        """Drop stream entries older than ``keep_seconds`` by Redis's clock (entry ids are
        Redis milliseconds; every entry's ``until`` is within that), returns how many."""
        with _redis_errors():
            seconds, _ = self._r.time()
            minid = max(0, (int(seconds) - keep_seconds) * 1000)
            trimmed: int = self._r.xtrim(self._k.revocation_stream(), minid=minid)
        return trimmed

    def stream_info(self) -> tuple[int, int]:
        """(entries in the revocation stream, age in ms of the newest by Redis's clock)."""
        with _redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.xlen(self._k.revocation_stream())
            pipe.xrevrange(self._k.revocation_stream(), count=1)
            length, newest = pipe.execute()
            # Not in the pipeline: redis-py's cluster pipeline refuses TIME (it has no key).
            seconds, micros = self._r.time()
        if not newest:
            return int(length), 0
        ms = int(newest[0][0].split(b"-")[0])
        return int(length), max(0, int(seconds) * 1000 + int(micros) // 1000 - ms)
