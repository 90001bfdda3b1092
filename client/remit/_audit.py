"""The audit trail's writing side: events, their hash chain, and the verifier's decision log.

Schema v1 (docs/audit.md): one Redis stream ``<prefix>audit``; each entry has the fields
``v`` (``"1"``), ``w`` (writer id), ``n`` (per-writer sequence, from 1), ``h`` (hex
SHA-256 of the writer's previous ``h`` + ``"\\n"`` + ``ev``) and ``ev`` (RFC 8785
canonical JSON of the event). The chain is per writer, so many verifiers and service
replicas append to one stream without coordinating; ``remit audit verify`` checks each
writer's ``n`` continuity and hash links.

Verifier modes (:class:`DecisionAudit`):

- ``buffered``: ``check`` appends a small tuple to a bounded in-memory buffer and
  returns; a daemon thread builds, canonicalizes, chains and writes the events in
  batches (one script call of ``XADD``s per batch). A full buffer or a
  Redis outage never blocks a check: events that do not fit are dropped, counted
  (:attr:`AuditStats.dropped`) and logged. Sealing (``n``, ``h``) happens at write time,
  so a dropped event leaves no gap in the chain.
- ``sync``: the event is written before ``check`` returns; if the write fails an allowed
  call is denied with ``audit_unavailable`` (fail closed). A denial stays a denial with
  its own code (the lost denial event is counted as dropped).
- ``off``: nothing is recorded.

A write whose reply is lost (timeout after Redis applied it) is ambiguous; before the next
write the writer looks for its own entries at the stream's end and only re-sends what is
not there, so a retry never duplicates an entry or breaks the chain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Literal, NamedTuple

import rfc8785

from ._constraints import valid_call_action
from ._errors import Code, Denied
from ._redis import REDIS_ERRORS, RedisLike
from ._token import Claims

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_MAXLEN",
    "SCHEMA_VERSION",
    "AuditMode",
    "AuditStats",
    "ChainWriter",
    "DecisionAudit",
    "Who",
    "audit_stream",
    "canonical",
    "chain_hash",
]

AuditMode = Literal["buffered", "sync", "off"]
SCHEMA_VERSION = "1"
DEFAULT_BUFFER = 10_000  # events held while the flusher catches up or Redis is away
DEFAULT_MAXLEN = 1_000_000  # approximate MAXLEN of the stream (None: never trimmed)
BATCH = 500  # events per write (one script call)
FLUSH_INTERVAL = 0.05  # seconds the flusher sleeps when the buffer is empty
MAX_BACKOFF = 1.0  # seconds between write attempts while Redis is down
RESOLVE_SCAN = 100_000  # entries scanned to settle an ambiguous write
LOG_EVERY = 10.0  # seconds between repeated "events dropped" warnings
# The most bytes of argument values (their canonical JSON) one event records for an
# action in ``audit_args``; larger ones are left out (``args_omitted``), as an agent
# chooses their size and the stream shares Redis with revocation and budgets.
MAX_RECORDED_ARGS = 4096

log = logging.getLogger("remit.audit")

# A denial message that names an argument (see _verifier._check_args): the name, when it
# is short enough to be quoted whole and plainly.
_ARG_IN_MESSAGE = re.compile(r"argument '([^'\\]{1,79})'")
_ARG_CODES = frozenset({Code.ARGUMENT_DENIED, Code.UNEXPECTED_ARGUMENT})
_SCALARS = frozenset({str, int, float, bool, type(None)})
_FAST = frozenset({str, bool, type(None)})  # values json.dumps writes exactly as RFC 8785
_INT_LIMIT = 2**53 - 1
_jstr: Callable[[str], str] = encode_basestring  # = RFC 8785 escaping (JSON.stringify)
# Made once: json.dumps with options builds a new encoder per call (most of its cost).
_SORTED = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_FREEZE = json.JSONEncoder(ensure_ascii=False)


def _opt(value: str | None) -> str:
    return "null" if value is None else _jstr(value)


def _clean(text: str) -> str:
    """A string JSON-in-UTF-8 can carry: lone surrogates become U+FFFD."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def _canonical_args(snap: dict[Any, Any] | str | None) -> bytes | None:
    """RFC 8785 bytes of the snapshotted arguments; b"" when they are not JSON-exact."""
    if snap is None:
        return None
    try:
        if type(snap) is str:
            return canonical(json.loads(snap))
        assert isinstance(snap, dict)
        fast = True
        for k, v in snap.items():
            t = type(v)
            if (
                type(k) is not str
                or not k.isascii()  # non-ASCII keys: UTF-16 order may differ from Python's
                or not (t in _FAST or (t is int and -_INT_LIMIT <= v <= _INT_LIMIT))
            ):
                fast = False
                break
        if fast:
            return _SORTED.encode(snap).encode("utf-8")
        return canonical(snap)
    except Exception:  # ValueError (not canonical), UnicodeEncodeError, RecursionError...
        return b""


def audit_stream(prefix: str) -> str:
    """The stream key: ``<prefix>audit``."""
    return f"{prefix}audit"


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON; ``ValueError`` for anything JSON cannot carry exactly."""
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # rfc8785 raises several unrelated types
        raise ValueError(f"not canonical JSON: {type(exc).__name__}") from None


def chain_hash(prev: str, ev: bytes) -> str:
    """``h`` of an entry: hex SHA-256 of the previous ``h`` (``""`` first), LF, ``ev``."""
    return hashlib.sha256(prev.encode("ascii") + b"\n" + ev).hexdigest()


class _Pending(NamedTuple):
    events: Sequence[bytes]
    first: int  # n of events[0]
    hashes: list[str]  # h of each event


# Appends one sealed batch: ARGV = writer, maxlen ("" = untrimmed), then the entries packed
# as "<n> <h> <len>\n<ev>" each. One argument for the whole batch keeps the client's
# per-argument encoding cost (most of the flusher's time with one XADD per entry) out,
# and a script runs without interleaving, so the batch is contiguous in the stream.
_APPEND = r"""
local key, w, maxlen, blob = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local pos, last = 1, false
while pos <= #blob do
  local s1 = string.find(blob, ' ', pos, true)
  local s2 = string.find(blob, ' ', s1 + 1, true)
  local nl = string.find(blob, '\n', s2 + 1, true)
  local size = tonumber(string.sub(blob, s2 + 1, nl - 1))
  local n, h = string.sub(blob, pos, s1 - 1), string.sub(blob, s1 + 1, s2 - 1)
  local ev = string.sub(blob, nl + 1, nl + size)
  pos = nl + size + 1
  if maxlen == '' then
    last = redis.call('XADD', key, '*', 'v', '1', 'w', w, 'n', n, 'h', h, 'ev', ev)
  else
    last = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*',
                      'v', '1', 'w', w, 'n', n, 'h', h, 'ev', ev)
  end
end
return last
"""


class ChainWriter:
    """One writer's hash chain over the shared stream (thread-safe).

    ``write(events)`` seals the events (``n``, ``h``) and appends them in one script
    call, contiguous and in chain order. It raises the Redis error when the write
    fails; the chain then stays where it was, except for the part of the failed batch
    that turns out to have landed (checked before the next write: module docstring).
    """

    def __init__(
        self,
        client: RedisLike,
        stream: str,
        *,
        maxlen: int | None = DEFAULT_MAXLEN,
        writer_id: str | None = None,
    ) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError("audit maxlen must be positive (or None)")
        self.client = client
        self.stream = stream
        self.writer_id = writer_id or secrets.token_hex(8)
        self._w = self.writer_id.encode("ascii")
        self._maxlen = b"" if maxlen is None else str(maxlen).encode()
        self._append = client.register_script(_APPEND) if client is not None else None
        self._n = 0
        self._h = ""
        self._last_id: bytes | None = None
        self._unsure: _Pending | None = None
        self._lock = threading.Lock()

    @property
    def sequence(self) -> int:
        """``n`` of the last entry known to be written (0: none yet)."""
        return self._n

    def write(self, events: Sequence[bytes]) -> None:
        if not events:
            return
        with self._lock:
            if self._unsure is not None:
                pending = self._unsure
                landed = self._landed(pending)  # may raise: then still unsure
                self._unsure = None
                if landed:
                    self._n = pending.first + landed - 1
                    self._h = pending.hashes[landed - 1]
                if pending.events is events:  # the retry of that batch: send the rest
                    events = events[landed:]
                    if not events:
                        return
            n, h = self._n, self._h
            hashes = []
            parts = []
            for ev in events:
                n += 1
                h = chain_hash(h, ev)
                hashes.append(h)
                parts.append(b"%d %s %d\n%s" % (n, h.encode(), len(ev), ev))
            assert self._append is not None
            try:
                last = self._append(
                    keys=[self.stream], args=[self._w, self._maxlen, b"".join(parts)]
                )
            except BaseException:
                self._unsure = _Pending(events, self._n + 1, hashes)
                raise
            self._n, self._h, self._last_id = n, h, last

    def _landed(self, pending: _Pending) -> int:
        """How many events of the batch whose reply was lost reached the stream: scans
        back from the end (bounded) to this writer's newest entry after the last
        confirmed one."""
        stop = b"(" + self._last_id if self._last_id is not None else b"-"
        end: bytes = b"+"
        scanned = 0
        while scanned < RESOLVE_SCAN:
            page = self.client.xrevrange(self.stream, end, stop, count=1000)
            if not page:
                return 0
            for entry_id, fields in page:
                if fields.get(b"w") == self._w:
                    n = fields.get(b"n", b"")
                    found = int(n) if n.isdigit() else 0
                    if found < pending.first:
                        return 0  # our newest entry is an older one: nothing landed
                    self._last_id = entry_id
                    return min(found - pending.first + 1, len(pending.events))
            scanned += len(page)
            end = b"(" + page[-1][0]
        return 0


class Who(NamedTuple):
    """Who a decision concerns, when no verified claims are at hand (same names as
    :class:`~remit._token.Claims`, which is used directly when it is)."""

    gid: str
    jti: str
    actor: str
    sub: str
    anc: tuple[str, ...]


class AuditStats(NamedTuple):
    """Counters of a verifier's audit trail (monotonic over its lifetime)."""

    mode: AuditMode
    writer: str | None
    recorded: int  # decisions handed to the audit (written + dropped + pending)
    written: int
    dropped: int  # lost: buffer full, Redis down at close, or a denial in sync mode
    pending: int  # buffered, not yet written
    write_errors: int


class _Unnamed(NamedTuple):
    """In place of a call's action string that is no valid action name: its digest."""

    sha256: str


# One decision waiting in the buffer: (ts ms, allowed, code, claims, action (see record),
# args snapshot (see record), argument named by the denial).
_Item = tuple[
    int, bool, str, Claims | Who | None, str | _Unnamed | None, dict[Any, Any] | str | None,
    str | None,
]


class DecisionAudit:
    """Records a verifier's decisions. ``record`` is the only hot-path method."""

    def __init__(
        self,
        client: RedisLike,
        stream: str,
        *,
        mode: AuditMode,
        audience: str,
        record_args: Collection[str] = (),
        buffer: int = DEFAULT_BUFFER,
        maxlen: int | None = DEFAULT_MAXLEN,
        clock: Callable[[], float] = time.time,
        owned: bool = False,
    ) -> None:
        if mode not in ("buffered", "sync"):
            raise ValueError(f"unknown audit mode {mode!r}; use 'buffered', 'sync' or 'off'")
        if buffer < 1:
            raise ValueError("audit_buffer must be at least 1")
        self.mode: AuditMode = mode
        self._sync = mode == "sync"
        self.writer = ChainWriter(client, stream, maxlen=maxlen)
        self._audience = audience
        self._aud = f',"aud":{_jstr(_clean(audience))},"code":'
        self._last_parties: tuple[Claims | Who | None, str, str] | None = None
        exact = set()
        wild = []
        for action in record_args:
            if not isinstance(action, str) or not action:
                raise ValueError("audit_args: action names (or 'x.*' patterns)")
            if action.endswith(".*"):
                wild.append(action[:-1])
            else:
                exact.add(action)
        self._args_exact = frozenset(exact)
        self._args_prefixes = tuple(wild)
        self._bound = buffer
        self._clock = clock
        self._owned = owned
        self._buf: deque[_Item] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._written = self._dropped = self._errors = 0
        self._inflight = 0  # taken from the buffer by the flusher, not yet written
        self._last_warning = 0.0
        self._closed = False

    # -- hot path --------------------------------------------------------------------

    def record(
        self,
        allowed: bool,
        code: str,
        claims: Claims | Who | None,
        action: Any,
        args: Any,
        *,
        denied: Denied | None = None,
    ) -> None:
        """Record one decision. Buffered: never blocks, never raises. Sync: raises
        ``Denied(audit_unavailable)`` when an allowed call's event cannot be written."""
        # The arguments as they are now: a copy of a flat mapping, or JSON text when
        # values nest (they could change after the call returns); None if unusable.
        snap: dict[Any, Any] | str | None = None
        if type(args) is dict or (args is not None and isinstance(args, Mapping)):
            try:
                snap = args.copy() if type(args) is dict else dict(args)
                for value in snap.values():
                    if type(value) not in _SCALARS:
                        snap = _FREEZE.encode(snap)
                        break
            except Exception:  # not JSON (types, cycles, depth): no digest
                snap = None
        elif args is None:
            snap = {}
        arg = None
        if denied is not None:
            if denied.code in _ARG_CODES:
                m = _ARG_IN_MESSAGE.match(denied.message)
                arg = m.group(1) if m else None  # at most 79 characters
            # Only a valid name is recorded (check() refuses any other first): an agent
            # chooses the action, and through MCP its length. Another string leaves a
            # digest, so repeated attempts can still be told apart and counted.
            if not valid_call_action(action):
                action = (
                    _Unnamed(hashlib.sha256(action.encode("utf-8", "replace")).hexdigest())
                    if type(action) is str
                    else None
                )
        elif type(action) is not str:  # an allowed call's action is valid (check() made sure)
            action = None
        item: _Item = (int(self._clock() * 1000), allowed, code, claims, action, snap, arg)
        if self._sync:
            self._write_now(item, allowed)
            return
        buf = self._buf
        if len(buf) >= self._bound or self._closed:
            self._count_dropped(1, "the audit buffer is full")
            return
        buf.append(item)
        if self._thread is None:
            self._start()
        elif len(buf) >= BATCH and not self._wake.is_set():
            self._wake.set()

    # -- event building ----------------------------------------------------------------

    def _event(self, item: _Item) -> bytes:
        pre = _canonical_args(item[5])
        try:
            return self._assemble(item, pre, str)
        except UnicodeEncodeError:  # a lone surrogate somewhere: keep the event, mark it
            return self._assemble(item, pre, _clean)

    def _assemble(self, item: _Item, pre: bytes | None, clean: Callable[[str], str]) -> bytes:
        """The event's RFC 8785 form, written out directly: its members are known, their
        keys are ASCII (UTF-16 order = the order below) and the values are strings,
        small ints, booleans, null and the already canonical arguments, so this equals
        ``rfc8785.dumps`` of the event object (tests/unit/test_audit_events.py checks
        it) at a fraction of the cost of the generic encoder."""
        ts, allowed, code, claims, action, _, arg = item
        act = clean(action) if type(action) is str else None
        head, tail = self._parties(claims, clean)
        out = ['{"action":', _opt(act)]
        if type(action) is _Unnamed:
            out += [',"actionh":"', action.sha256, '"']
        out += [',"agent":', head]
        out.append(',"allowed":true' if allowed else ',"allowed":false')
        if claims is not None and claims.anc:
            out.append(',"anc":[' + ",".join(_jstr(clean(a)) for a in claims.anc) + "]")
        if arg is not None:
            out += [',"arg":', _jstr(clean(arg))]
        if pre:
            out += [',"argh":"', hashlib.sha256(pre).hexdigest(), '"']
            if act is not None and self._wants_args(act):
                if len(pre) <= MAX_RECORDED_ARGS:
                    out += [',"args":', pre.decode("utf-8")]
                else:
                    out += [',"args_omitted":', str(len(pre))]
        else:  # None: args were not a mapping; b"": not JSON-exact (NaN, huge ints, ...)
            out.append(',"argh":null')
        out += [self._aud, _jstr(code), tail, str(int(ts)), ',"type":"decision"}']
        return "".join(out).encode("utf-8")

    def _parties(self, claims: Claims | Who | None, clean: Callable[[str], str]) -> tuple[str, str]:
        """The agent member, and gid / jti / sub up to ``"ts":``; the last token's are
        kept (a warm token repeats them on every call)."""
        last = self._last_parties
        if last is not None and last[0] is claims and clean is str:
            return last[1], last[2]
        if claims is None:
            head, tail = "null", ',"gid":null,"jti":null,"sub":null,"ts":'
        else:
            head = _jstr(clean(claims.actor))
            tail = (
                f',"gid":{_jstr(clean(claims.gid))},"jti":{_jstr(clean(claims.jti))}'
                f',"sub":{_jstr(clean(claims.sub))},"ts":'
            )
        if clean is str:
            self._last_parties = (claims, head, tail)
        return head, tail

    def _wants_args(self, action: str) -> bool:
        return action in self._args_exact or any(action.startswith(p) for p in self._args_prefixes)

    # -- sync ------------------------------------------------------------------------------

    def _write_now(self, item: _Item, allowed: bool) -> None:
        try:
            self.writer.write([self._event(item)])
        except REDIS_ERRORS as exc:  # a cluster client: RedisClusterException too
            with self._count_lock:
                self._errors += 1
            if allowed:
                with self._count_lock:
                    self._dropped += 1  # recorded as a denial by the caller, not as allowed
                raise Denied(
                    Code.AUDIT_UNAVAILABLE,
                    f"the audit event cannot be written (Redis: {type(exc).__name__}); "
                    "failing closed",
                ) from None
            self._count_dropped(1, f"Redis: {type(exc).__name__}")
            return
        with self._count_lock:
            self._written += 1

    # -- buffered: the flusher thread --------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name=f"remit-audit-{self.writer.writer_id}", daemon=True
                )
                self._thread.start()

    def _take(self, count: int) -> list[_Item]:
        out: list[_Item] = []
        buf = self._buf
        while buf and len(out) < count:
            out.append(buf.popleft())
        return out

    def _run(self) -> None:
        try:
            self._flush_until_stopped()
        finally:
            if self._owned:
                self.writer.client.close()

    def _flush_until_stopped(self) -> None:
        pending: list[bytes] = []
        backoff = 0.0
        while True:
            stopping = self._stop.is_set()
            if not pending:
                with self._count_lock:  # stats() must never see an item in neither place
                    items = self._take(BATCH)
                    self._inflight = len(items)
                pending = [ev for ev in map(self._safe_event, items) if ev]
            if pending:
                try:
                    self.writer.write(pending)
                # Any failure, not only REDIS_ERRORS: a client its owner closed under us
                # makes redis-py raise TypeError, and this thread must never die (events
                # would pile up unwritten and uncounted).
                except Exception as exc:
                    with self._count_lock:
                        self._errors += 1
                    if stopping:
                        with self._count_lock:
                            lost = len(pending) + len(self._take(len(self._buf)))
                            self._inflight = 0
                            self._dropped += lost
                        log.warning("remit audit: %d event(s) dropped at close: %s", lost, exc)
                        return
                    self._warn(f"audit write failed ({type(exc).__name__}: {exc}); retrying")
                    backoff = min(MAX_BACKOFF, backoff * 2 or 0.05)
                    self._stop.wait(backoff)
                    continue
                with self._count_lock:
                    self._written += len(pending)
                    self._inflight = 0
                pending = []
                backoff = 0.0
                continue
            if stopping:
                return
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()

    def _safe_event(self, item: _Item) -> bytes:
        try:
            return self._event(item)
        except Exception:  # never let one odd event kill the flusher
            log.exception("audit: cannot build an event; dropped")
            with self._count_lock:
                self._inflight -= 1
            self._count_dropped(1, "unbuildable event")
            return b""

    # -- accounting --------------------------------------------------------------------

    def _count_dropped(self, count: int, why: str) -> None:
        with self._count_lock:
            self._dropped += count
            total = self._dropped
        self._warn(f"{count} audit event(s) dropped ({why}); {total} dropped so far")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= LOG_EVERY:
            self._last_warning = now
            log.warning("remit audit: %s", message)

    def stats(self) -> AuditStats:
        with self._count_lock:
            pending = len(self._buf) + self._inflight
            return AuditStats(
                mode=self.mode,
                writer=self.writer.writer_id,
                recorded=self._written + self._dropped + pending,
                written=self._written,
                dropped=self._dropped,
                pending=pending,
                write_errors=self._errors,
            )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered event is written (or dropped); True if it got there."""
        deadline = time.monotonic() + timeout
        while self.stats().pending > 0:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what can be written, stop the thread, release an owned client."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        if self._owned and (thread is None or not thread.is_alive()):
            self.writer.client.close()

    def abandon(self) -> None:
        """Stop without waiting (the verifier was garbage collected unclosed): the
        thread writes what it holds, then exits and releases an owned client."""
        with self._start_lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
