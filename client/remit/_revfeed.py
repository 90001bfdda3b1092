"""Stream-mode revocation: an in-memory revocation set fed by the Redis revocation stream.

The service appends every revocation to one stream (``<prefix>{rev}:stream``, entry
format below). A :class:`RevocationFeed` loads the whole stream at start (``XRANGE`` in
large pages), then follows it in a daemon thread: one pipelined round trip per cycle,
``GET`` epoch, ``XREAD BLOCK`` from the last entry id, ``XINFO STREAM``. Checks are
answered from memory (a dict lookup per lineage id, one for the grant).

Why each part of the cycle is there:

- The round trip itself is the liveness signal: a cycle that came back, with the epoch
  unchanged and no gap, proves the view was current when it was *sent*. Checks fail
  closed (``revocation_unavailable``) once that proof is older than ``max_age``; no
  heartbeat entries are needed, since ``XREAD BLOCK`` returns at least every ``block``.
- ``GET`` epoch (same hash tag as the stream): missing = Redis lost its data, fail closed
  at once; a new value = data was lost and re-established, so every token issued before
  it is ``revoked`` (reason ``epoch``) and the stream is reloaded.
- ``XINFO STREAM``: ``max-deleted-entry-id`` past our position means entries we never
  read were trimmed; ``last-generated-id`` behind it means the stream went back (a lost
  or replaced stream). Either way: full reload.

Revocations only ever add: a reload merges into what the feed holds (never forgets a
revocation because Redis did), and entries leave memory only when their ``until``
(after which no token they could affect is alive) has passed.

Entry format (one field ``r``, ASCII, version ``1``)::

    1 j <jti> <until>            the token and every descendant (its id in their ``anc``)
    1 g <gid> <until>            every token of the grant
    1 b <gid> <until> <cutoff>   the grant's tokens issued before ``cutoff`` (seconds)

An entry in any other form cannot be understood, so it is treated like lost state: every
token issued up to its time (its id) is refused. The same holds for entries deleted
before the feed read them (``XTRIM``/``XDEL``): the feed refuses every token issued up to
the deleted id. The service's own trimming removes only entries older than any live
token, so that refuses nothing alive. A writer to the stream can deny, never allow.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._errors import Code, Denied
from ._redis import REDIS_ERRORS, RedisLike
from ._redis_keys import RedisKeys
from ._token import Claims

__all__ = [
    "FeedStatus",
    "RevocationEntry",
    "RevocationFeed",
    "encode_entry",
    "parse_entry",
]

log = logging.getLogger("remit.revocation")

FIELD = b"r"
ALL_TOKENS = 1 << 62  # the cutoff of a revoked grant: every token, whenever issued
PAGE = 20_000  # XRANGE page at load: large pages, few round trips
READ_COUNT = 10_000  # at most this many entries per XREAD
_ENTRY = re.compile(rb"1 ([jgb]) ([A-Za-z0-9_-]{1,64}) ([0-9]{1,12})(?: ([1-9][0-9]{0,11}))?")
_BUCKET = 16  # seconds per expiry bucket


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    kind: str  # "j" token id, "g" grant, "b" grant before cutoff
    target: str
    until: int
    cutoff: int = 0


def encode_entry(entry: RevocationEntry) -> bytes:
    """The stream field value of ``entry`` (the service's side of the format)."""
    if entry.kind not in ("j", "g", "b") or (entry.kind == "b") != (entry.cutoff > 0):
        raise ValueError(f"bad revocation entry {entry!r}")
    value = f"1 {entry.kind} {entry.target} {entry.until}"
    if entry.kind == "b":
        value += f" {entry.cutoff}"
    raw = value.encode("ascii")
    if _ENTRY.fullmatch(raw) is None:
        raise ValueError(f"bad revocation entry {entry!r}")
    return raw


def parse_entry(fields: Any) -> RevocationEntry:
    """One stream entry's field map -> entry; ``ValueError`` for anything else."""
    if not isinstance(fields, dict) or len(fields) != 1:
        raise ValueError("a revocation entry has exactly one field")
    value = fields.get(FIELD)
    m = _ENTRY.fullmatch(value) if isinstance(value, bytes) else None
    if m is None:
        raise ValueError("not a v1 revocation entry")
    kind = m.group(1).decode()
    cutoff = m.group(4)
    if (kind == "b") != (cutoff is not None) or (cutoff is not None and int(cutoff) == 0):
        raise ValueError("only a 'b' entry has a (positive) cutoff")
    return RevocationEntry(kind, m.group(2).decode(), int(m.group(3)), int(cutoff or 0))


def _sid(raw: bytes | str) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a comparable pair."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _after(sid: tuple[int, int]) -> int:
    """The first ``iat`` surely minted after the entry ``sid`` was written: its second
    plus two, as the service may stamp a token up to a second ahead (after an epoch or
    a cutoff, see ``Core.mint``)."""
    return sid[0] // 1000 + 2


@dataclass(frozen=True)
class FeedStatus:
    """What operators watch (e.g. as metrics): how old the confirmed view is (the lag),
    how many revocations are held, how often the feed reloaded, the last error."""

    ready: bool
    age: float  # seconds since the view was last confirmed current (inf: never)
    revoked_tokens: int
    revoked_grants: int
    epoch: int | None
    last_id: str
    reloads: int
    error: str | None


@dataclass(frozen=True)
class _StreamInfo:
    generated: tuple[int, int]  # last-generated-id
    deleted: tuple[int, int]  # max-deleted-entry-id (XDEL only; XTRIM leaves it)
    added: int  # entries-added: every entry ever added, trimmed or not

    @classmethod
    def of(cls, reply: Any) -> _StreamInfo:
        if isinstance(reply, redis.ResponseError):  # no stream yet: nothing revoked yet
            return cls((0, 0), (0, 0), 0)
        if isinstance(reply, Exception):
            raise reply
        return cls(
            _sid(reply.get("last-generated-id") or b"0-0"),
            _sid(reply.get("max-deleted-entry-id") or b"0-0"),
            int(reply.get("entries-added") or 0),
        )


class _Gap(Exception):
    """The feed must reload (entries were trimmed unread, the stream went back)."""


class RevocationFeed:
    """The in-memory revocation set of one verifier and the thread that keeps it current.

    ``client`` must allow blocking reads: its socket timeout above ``block``.
    ``fail_open`` answers from the last known set when the feed is stale instead of
    failing closed: never a default, see ``Verifier(unsafe_stale_revocations_ok=)``.
    """

    def __init__(
        self,
        client: RedisLike,
        keys: RedisKeys,
        *,
        max_age: float = 2.0,
        block: float | None = None,
        fail_open: bool = False,
        owned: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not 0.05 <= max_age <= 3600:
            raise ValueError("revocation max age must be between 0.05 and 3600 seconds")
        self._r = client
        self._owned = owned
        self._stream = keys.revocation_stream()
        self._epoch_key = keys.epoch()
        self.max_age = max_age
        self._block_ms = max(
            10, int(1000 * (block if block is not None else min(0.5, max_age / 4)))
        )
        self._fail_open = fail_open
        self._mono = monotonic
        self._wall = wall
        # The state checks read (the follower thread writes; single dict operations are
        # atomic under the GIL, so readers need no lock).
        self._jtis: dict[str, int] = {}  # revoked token id -> until
        self._cutoffs: dict[str, int] = {}  # gid -> tokens issued before it are revoked
        self._cutoff_until: dict[str, int] = {}
        self._expiry: dict[int, list[str]] = {}  # bucket -> jtis / "\0"+gid to look at
        self._ints: dict[bytes, int] = {}  # one int object per distinct `until` (memory)
        self._epoch: int | None = None
        self._floor = 0  # tokens issued before it are revoked: lost revocation state
        self._floor_why = ""
        self._confirmed = float("-inf")
        self._last_id = "0-0"
        self._added = 0  # the stream's entries-added when the feed was last at _last_id
        self._pending = 0  # entries read since then
        self._reloads = 0
        self._error: str | None = "not loaded yet"
        self._next_prune = 0.0
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remit-revfeed", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, wait: float) -> None:
        """Start following; wait up to ``wait`` s for the first load (or its failure)."""
        self._thread.start()
        self._first.wait(wait)

    def wait_ready(self, timeout: float) -> bool:
        """True once the view is confirmed current (within ``timeout`` seconds)."""
        deadline = self._mono() + timeout
        while self._mono() - self._confirmed > self.max_age:
            if self._mono() >= deadline or self._stop.is_set():
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Disconnect and stop the thread (its blocking read ends with the connection)."""
        self._stop.set()
        if self._owned:  # closing the sockets also ends a blocking read at once
            with contextlib.suppress(Exception):
                self._r.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        if self._owned:  # anything the thread opened meanwhile
            with contextlib.suppress(Exception):
                self._r.close()

    # -- hot path ----------------------------------------------------------------------

    def check(self, claims: Claims) -> None:
        """Raise ``Denied`` if the token is revoked or the feed is not known current."""
        if self._mono() - self._confirmed > self.max_age and not self._fail_open:
            self._stale()
        iat = claims.iat
        if iat < self._floor:
            raise Denied(
                Code.REVOKED, f"epoch: token issued before {self._floor}, when {self._floor_why}"
            )
        if claims.jti in self._jtis:
            raise Denied(Code.REVOKED, f"token {claims.jti} is revoked")
        if claims.anc:
            for a in claims.anc:
                if a in self._jtis:
                    raise Denied(Code.REVOKED, f"ancestor {a} of token {claims.jti} is revoked")
        cutoff = self._cutoffs.get(claims.gid, 0)
        if iat < cutoff:
            what = "is revoked" if cutoff == ALL_TOKENS else f"is revoked before {cutoff}"
            raise Denied(Code.REVOKED, f"grant {claims.gid} {what}")

    def _stale(self) -> None:
        age = self._mono() - self._confirmed
        raise Denied(
            Code.REVOCATION_UNAVAILABLE,
            f"revocation feed not confirmed current for {age:.1f}s (bound "
            f"{self.max_age:g}s; {self._error or 'no answer'}): failing closed",
        )

    def status(self) -> FeedStatus:
        return FeedStatus(
            ready=self._mono() - self._confirmed <= self.max_age,
            age=self._mono() - self._confirmed,
            revoked_tokens=len(self._jtis),
            revoked_grants=len(self._cutoffs),
            epoch=self._epoch,
            last_id=self._last_id,
            reloads=self._reloads,
            error=self._error,
        )

    # -- the follower ----------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        reload = True
        while not self._stop.is_set():
            try:
                if reload:
                    self._load()
                    reload = False
                else:
                    self._follow()
                backoff = 0.05
            except _Gap as gap:
                if self._error != str(gap):
                    log.warning("revocation feed reloads: %s", gap)
                self._error = str(gap)
                reload = True
                self._stop.wait(0.02)
            except REDIS_ERRORS as exc:  # cluster clients also raise RedisClusterException
                self._error = f"Redis: {type(exc).__name__}"
                reload = reload or isinstance(exc, redis.ResponseError)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 0.5)
            except Exception as exc:  # never die: a dead follower would only go stale
                if self._stop.is_set():
                    break
                log.exception("revocation feed: unexpected error")
                self._error = f"unexpected {type(exc).__name__}"
                reload = True
                self._stop.wait(0.5)
            finally:
                self._first.set()

    def _epoch_now(self, raw: Any) -> int:
        """The epoch read in this cycle. Missing: Redis lost its data; fail closed until
        the service re-creates it. Changed: every token issued before it is revoked
        (its revocation may be among what was lost) and the stream is reloaded."""
        if isinstance(raw, Exception):
            raise raw
        if raw is None:
            self._confirmed = float("-inf")
            raise _Gap("no revocation epoch in Redis (its data was lost?)")
        epoch = int(raw)
        self._lose(epoch, "the revocation epoch was set (Redis lost its data, or the kill switch)")
        if self._epoch is not None and epoch != self._epoch:
            self._confirmed = float("-inf")
            self._epoch = None
            raise _Gap(f"the revocation epoch changed to {epoch}")
        return epoch

    def _info(self) -> tuple[Any, _StreamInfo]:
        """The epoch and the stream's counters, in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._epoch_key)
        pipe.xinfo_stream(self._stream)
        epoch, info = pipe.execute(raise_on_error=False)
        return epoch, _StreamInfo.of(info)

    def _load(self) -> None:
        """Read the whole stream, merging into what is held. The epoch is read before and
        after: unchanged, it proves nothing was lost meanwhile. Entries added while the
        pages are read are counted, so the first follow cycle can prove none was lost."""
        sent = self._mono()
        self._epoch = None
        raw_epoch, info = self._info()
        epoch = self._epoch_now(raw_epoch)
        if info.deleted > (0, 0):
            self._trimmed(info.deleted)
        last, newer = info.generated, 0
        for page in self._pages():
            self._apply_page(page, int(self._wall()))
            if page:
                top = page[-1][0]
                if _sid(top) > info.generated:
                    newer += sum(1 for eid, _ in page if _sid(eid) > info.generated)
                last = max(last, _sid(top))
        raw_after, _ = self._info()
        if raw_after != raw_epoch:
            raise _Gap("the epoch changed while loading")
        self._epoch = epoch
        self._last_id = f"{last[0]}-{last[1]}"
        self._added, self._pending = info.added, newer
        self._reloads += 1
        self._confirmed = sent
        self._error = None

    def _follow(self) -> None:
        sent = self._mono()
        prev = self._last_id
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._epoch_key)
        pipe.xread({self._stream: prev}, count=READ_COUNT, block=self._block_ms)
        pipe.xinfo_stream(self._stream)
        epoch, read, raw_info = pipe.execute(raise_on_error=False)
        self._epoch_now(epoch)
        if isinstance(read, Exception):
            raise read
        now = int(self._wall())
        if read:
            for eid, fields in read[0][1]:
                self._apply(eid, fields, now)
                self._last_id = eid.decode()
                self._pending += 1
        if isinstance(raw_info, redis.ResponseError) and (prev != "0-0" or read):
            raise _Gap("the revocation stream is gone")
        info = _StreamInfo.of(raw_info)
        if info.deleted > _sid(prev):  # XDEL of entries this feed never read
            self._trimmed(info.deleted)
            raise _Gap("entries were deleted from the stream before this verifier read them")
        last = _sid(self._last_id)
        if info.generated < last:
            raise _Gap("the revocation stream went back (replaced or partly lost)")
        batch = len(read[0][1]) if read else 0
        if info.generated > last and batch < READ_COUNT:
            # Added after XREAD returned, or trimmed before it could: read up to the id
            # XINFO saw, so the count below can tell the two apart.
            gen = f"{info.generated[0]}-{info.generated[1]}"
            extra = self._r.xrange(self._stream, min="(" + self._last_id, max=gen, count=READ_COUNT)
            for eid, fields in extra:
                self._apply(eid, fields, now)
                self._pending += 1
            if len(extra) < READ_COUNT:
                self._last_id, last = gen, info.generated
        if info.generated == last:
            # Everything ever added is either read by now or was there before the load:
            # more additions than reads means entries were trimmed before they were read.
            if info.added - self._added != self._pending:
                self._trimmed(info.generated)
                raise _Gap("entries were trimmed from the stream before this verifier read them")
            self._added, self._pending = info.added, 0
        self._confirmed = sent
        self._error = None
        if now >= self._next_prune:
            self._prune(now)
            self._next_prune = now + _BUCKET

    def _lose(self, seconds: int, why: str) -> None:
        """Revocations written before ``seconds`` may be unknown here: refuse every token
        issued before it."""
        if seconds > self._floor:
            self._floor, self._floor_why = seconds, why

    def _trimmed(self, upto: tuple[int, int]) -> None:
        """Entries up to ``upto`` may be gone unread (an ``XTRIM`` or ``XDEL`` by someone
        else than the service, whose trimming removes only entries older than any live
        token): any of them may have been a live revocation, so refuse every token
        issued up to then."""
        self._lose(_after(upto), "revocations were deleted from the stream")

    def _pages(self) -> Iterator[list[Any]]:
        """The whole stream in ``XRANGE`` pages as hiredis parsed them (lists of bytes),
        skipping redis-py's per-entry reply conversion, which alone would take most of
        the load time of a million entries. The next page is requested before the
        current one is handed out, so Redis serves it while this process parses."""
        client = self._r
        if not isinstance(client, redis.Redis):  # a cluster: the node holding the stream
            client = client.get_redis_connection(client.get_node_from_key(self._stream))
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("XRANGE", self._stream, "-", "+", "COUNT", PAGE)
            while not self._stop.is_set():
                page: list[Any] = conn.read_response()
                more = len(page) == PAGE
                if more:
                    start = "(" + page[-1][0].decode()
                    conn.send_command("XRANGE", self._stream, start, "+", "COUNT", PAGE)
                yield page
                if not more:
                    return
            conn.disconnect()  # stopped with a request in flight
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _apply_page(self, page: list[Any], now: int) -> None:
        """The load's inner loop: token-id entries inline (nearly all of a big stream),
        everything else through :meth:`_apply_value`. Same rules, fewer calls."""
        match, jtis, field = _ENTRY.fullmatch, self._jtis, FIELD
        last_raw, until, bucket = b"", 0, self._bucket(0)
        for eid, fields in page:
            value = fields[1] if len(fields) == 2 and fields[0] == field else None
            m = match(value) if type(value) is bytes else None
            if m is None or m[1] != b"j" or m[4] is not None:
                self._apply_value(eid, value, now)
                continue
            raw = m[3]
            if raw != last_raw:
                last_raw, until = raw, int(raw)
                bucket = self._bucket(until)
            if until > now:
                name = m[2].decode()
                if jtis.get(name, 0) < until:
                    jtis[name] = until
                    bucket.append(name)

    def _apply(self, eid: bytes, fields: Any, now: int) -> None:
        """One entry as redis-py returns it (a field dict)."""
        value = fields.get(FIELD) if isinstance(fields, dict) and len(fields) == 1 else None
        self._apply_value(eid, value, now)

    def _apply_value(self, eid: bytes, value: Any, now: int) -> None:
        m = _ENTRY.fullmatch(value) if type(value) is bytes else None
        if m is None or (m[1] == b"b") != (m[4] is not None) or m[4] == b"0":
            # It cannot be known what it revokes: as if revocations up to it were lost.
            log.error("unreadable revocation entry %r", eid)
            self._lose(_after(_sid(eid)), "an unreadable revocation entry")
            return
        kind, target, raw_until, raw_cutoff = m.groups()
        until = self._ints.get(raw_until)
        if until is None:
            until = int(raw_until)
            if len(self._ints) > 4096:
                self._ints.clear()
            self._ints[raw_until] = until
        if until <= now:
            return
        name = target.decode()
        if kind == b"j":
            if self._jtis.get(name, 0) < until:
                self._jtis[name] = until
                self._bucket(until).append(name)
            return
        cutoff = ALL_TOKENS if kind == b"g" else int(raw_cutoff)
        if cutoff > self._cutoffs.get(name, 0):
            self._cutoffs[name] = cutoff
        if self._cutoff_until.get(name, 0) < until:
            self._cutoff_until[name] = until
            self._bucket(until).append("\0" + name)

    def _bucket(self, until: int) -> list[str]:
        key = until // _BUCKET + 1
        bucket = self._expiry.get(key)
        if bucket is None:
            bucket = self._expiry[key] = []
        return bucket

    def _prune(self, now: int) -> None:
        """Forget revocations whose every affected token has expired."""
        for b in [b for b in self._expiry if b * _BUCKET <= now]:
            for name in self._expiry.pop(b):
                if name.startswith("\0"):
                    gid = name[1:]
                    if self._cutoff_until.get(gid, 0) <= now:
                        self._cutoff_until.pop(gid, None)
                        self._cutoffs.pop(gid, None)
                elif self._jtis.get(name, 0) <= now:
                    self._jtis.pop(name, None)


def blocking_client(target: Any, read_timeout: float) -> RedisLike:
    """A client of its own for the follower (owned by it): same server(s) and credentials
    as ``target`` (an address or a ready client), with a socket timeout that outlasts a
    blocking ``XREAD``; a shared client's short timeout would cut every blocking read."""
    from ._redis import connect, is_address

    if is_address(target):
        client = connect(target, timeout=read_timeout)
        if isinstance(client, redis.Redis):  # no retry inside a call: the loop retries,
            # and close() must not see a cut blocking read quietly re-sent
            client.connection_pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
        return client
    if isinstance(target, redis.Redis):
        kwargs = dict(target.connection_pool.connection_kwargs)
        kwargs["socket_timeout"] = read_timeout
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs.setdefault("socket_connect_timeout", 0.5)
        pool = redis.ConnectionPool(
            connection_class=target.connection_pool.connection_class, **kwargs
        )
        return redis.Redis(connection_pool=pool)
    from redis.cluster import RedisCluster

    if isinstance(target, RedisCluster):
        node = target.get_default_node()  # type: ignore[no-untyped-call]
        kwargs = dict(node.redis_connection.connection_pool.connection_kwargs)
        for k in ("host", "port", "connection_class"):
            kwargs.pop(k, None)
        kwargs["socket_timeout"] = read_timeout
        return RedisCluster(host=node.host, port=node.port, **kwargs)
    raise TypeError(f"cannot follow the revocation stream with a {type(target).__name__}")
