"""The action-alignment report: authority granted vs authority exercised, from the audit stream.

One pass over the stream (``XRANGE`` in batches) feeds an :class:`Alignment`
accumulator whose memory is bounded per grant (per action, argument and reason code:
counters, a few distinct values, min/max, a common prefix, a few examples), so a
stream of millions of events is reported in seconds. Entries that do not follow the
audit schema v1 (docs/audit.md) are counted by reason, a few are shown, and are
skipped: the report never crashes on garbage.

The report (``remit.alignment/v1``, a JSON-able dict) says, per grant:

- each granted capability with its attempts, allowed and denied calls (a call counts
  against the first capability of the grant whose action matches it);
- over-reach: denials grouped by reason code, with examples;
- unused authority: capabilities never exercised, and per argument the values used
  vs the constraint granted (values are known only where the operator let verifiers
  record them: ``args`` in the decision event);
- the least-privilege score (see :func:`_score`);
- the narrowest grant covering every allowed call (:func:`_suggest`), checked with
  :func:`remit._narrowing.is_narrower` against the grant so it never widens it;

and per agent the exceedance rate (denied / attempted) per time bucket.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from remit._constraints import (
    Capability,
    ConstraintError,
    action_matches,
    compile_capability,
    parse_capability,
)
from remit._narrowing import is_narrower

__all__ = [
    "SCHEMA",
    "Alignment",
    "Filters",
    "GrantInfo",
    "ReportError",
    "allows",
    "compute",
    "parse_since",
    "read_stream",
    "store_lookup",
]

SCHEMA = "remit.alignment/v1"
DISTINCT = 8  # distinct values kept per argument: at most this many -> an `in` suggestion
MAX_VALUE_CHARS = 256  # longer values are summarized (kind, length), never kept
EXAMPLES = 3  # per reason code per grant, and skipped-entry examples
MAX_ACTIONS = 256  # distinct actions tracked per grant; more are counted as "(other)"
MAX_ARGS = 64  # arguments tracked per action
MAX_CODES = 64  # reason codes per grant (codes are validated, this only bounds garbage)
MAX_BUCKETS = 120  # time buckets per agent; the width grows along WIDTHS to stay within
WIDTHS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)  # seconds
BATCH = 5000  # entries per XRANGE
OTHER = "(other)"
UNKNOWN_AGENT = "(unknown)"

_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")

LABELS = {
    "action_not_granted": "action never granted",
    "argument_denied": "argument outside the grant",
    "unexpected_argument": "unexpected argument",
    "expired": "token expired",
    "revoked": "revoked",
    "replayed": "replayed proof",
    "limit_exceeded": "limit exceeded",
    "wrong_audience": "wrong tool backend",
    "proof_mismatch": "proof for another call",
    "revocation_unavailable": "revocation state unavailable",
}


class ReportError(Exception):
    """The report cannot be computed (the key is not a stream, Redis is unreachable)."""


def label(code: str) -> str:
    return LABELS.get(code, code.replace("_", " "))


@dataclass(frozen=True)
class Filters:
    """Which decisions count. ``app`` restricts to one app's grants (the RPC's caller)."""

    grant: str = ""
    agent: str = ""
    subject: str = ""
    since_ms: int = 0
    app: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("grant", self.grant),
                ("agent", self.agent),
                ("subject", self.subject),
                ("app", self.app),
            )
            if v
        }
        if self.since_ms:
            out["since_ms"] = self.since_ms
        return out


@dataclass
class GrantInfo:
    """What the report needs of a grant: from its ``grant.created`` event or the store."""

    gid: str
    app: str
    subject: str
    agent: str
    audience: list[str]
    capabilities: list[Capability]
    purpose: str = ""
    expires_at: int = 0
    source: str = "stream"


def parse_since(text: str, now: float | None = None) -> int:
    """``--since``: unix seconds, ISO 8601, or a duration back from now (``90m``, ``24h``,
    ``7d``). Returns unix milliseconds. Raises ValueError with a clear message."""
    from datetime import datetime

    now = time.time() if now is None else now
    text = text.strip()
    m = re.fullmatch(r"([0-9]{1,9})([smhdw])", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return max(0, int((now - int(m.group(1)) * unit) * 1000))
    if re.fullmatch(r"[0-9]{1,12}", text):
        return int(text) * 1000
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give unix seconds, an ISO 8601 time, or a duration like 24h"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int(when.timestamp() * 1000))


# --- per-argument observations ---------------------------------------------------------


def _kind(v: Any) -> str:
    t = type(v)
    if t is str:
        return "string"
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    if v is None:
        return "null"
    if t is list:
        return "array"
    return "object"


@dataclass(slots=True)
class _ArgStats:
    """Bounded summary of the values one argument took in allowed calls."""

    calls: int = 0
    kinds: set[str] = field(default_factory=set)
    distinct: dict[str, Any] = field(default_factory=dict)  # canonical JSON -> value
    overflow: bool = False  # more than DISTINCT values, or one too long to keep
    lo: float | None = None
    hi: float | None = None
    prefix: str | None = None
    max_len: int = 0

    def add(self, v: Any) -> None:
        # Hot: once per argument of every allowed call with recorded values.
        self.calls += 1
        t = type(v)
        if t is int or t is float:
            self.kinds.add("number")
            lo = self.lo
            if lo is None:
                self.lo = self.hi = v
            elif v < lo:
                self.lo = v
            elif v > self.hi:
                self.hi = v
            if self.overflow:
                return
            key = repr(v)  # 1, 1.5: distinct from every string key ("s...")
        elif t is str:
            self.kinds.add("string")
            self.max_len = max(self.max_len, len(v))
            p = self.prefix
            if p is None:
                self.prefix = v
            elif not v.startswith(p):
                # character-wise on purpose: a `prefix` constraint is a string prefix
                self.prefix = os.path.commonprefix([p, v])  # noqa: RUF071
            if self.overflow:
                return
            key = "s" + v
        else:
            kind = _kind(v)
            self.kinds.add(kind)
            if kind == "array" and len(v) > self.max_len:
                self.max_len = len(v)
            if self.overflow:
                return
            key = (
                repr(v) if kind == "bool" else json.dumps(v, sort_keys=True, separators=(",", ":"))
            )
        distinct = self.distinct
        if key in distinct:
            return
        if len(key) > MAX_VALUE_CHARS or len(distinct) >= DISTINCT:
            self.overflow = True
            distinct.clear()
        else:
            distinct[key] = v

    def used(self) -> dict[str, Any]:
        """The values used, for the report: the set when small, else a range summary."""
        out: dict[str, Any] = {"calls": self.calls, "kinds": sorted(self.kinds)}
        if not self.overflow:
            out["values"] = list(self.distinct.values())
        if self.lo is not None:
            out["min"], out["max"] = self.lo, self.hi
        if "string" in self.kinds:
            out["common_prefix"] = self.prefix or ""
            out["max_len"] = self.max_len
        return out

    def candidate(self, absent: bool) -> dict[str, Any] | None:
        """The narrowest constraint in the language that allows every value seen."""
        c: dict[str, Any]
        if not self.overflow:
            values = list(self.distinct.values())
            c = {"eq": values[0]} if len(values) == 1 else {"in": values}
        elif self.kinds == {"number"}:
            c = {"ge": self.lo, "le": self.hi} if self.lo != self.hi else {"eq": self.lo}
        elif self.kinds == {"string"}:
            c = {"prefix": self.prefix} if self.prefix else {}
            c["max_len"] = self.max_len
        else:
            return None
        if absent:
            c["optional"] = True
        return c


@dataclass(slots=True)
class _ActionStats:
    """One action of one grant: counts, and argument summaries of its allowed calls."""

    attempts: int = 0
    allowed: int = 0
    denied: int = 0
    valued: int = 0  # allowed calls whose argument values were recorded
    args: dict[str, _ArgStats] = field(default_factory=dict)
    args_overflow: bool = False


@dataclass(slots=True)
class _GrantStats:
    gid: str
    attempts: int = 0
    allowed: int = 0
    denied: int = 0
    actions: dict[str, _ActionStats] = field(default_factory=dict)
    codes: dict[str, list[Any]] = field(default_factory=dict)  # code -> [count, examples]
    minted: int = 0
    exchanged: int = 0
    revocations: list[dict[str, Any]] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)

    def action(self, name: str) -> _ActionStats:
        st = self.actions.get(name)
        if st is None:
            if len(self.actions) >= MAX_ACTIONS:
                name = OTHER
                st = self.actions.get(name)
            if st is None:
                st = self.actions[name] = _ActionStats()
        return st


# --- the accumulator -------------------------------------------------------------------

_DECISION_OPT = ("gid", "jti", "agent", "sub")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: never in an RFC 8785 event


def _json_loads(raw: bytes | str) -> Any:
    return json.loads(raw, parse_constant=_no_constant)


def _orjson_loads(raw: bytes | str) -> Any:
    # orjson (the `server` extra) parses ~4x faster; what it refuses (integers beyond
    # 64 bits, which RFC 8785 events never hold) gets the standard parser's verdict.
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _json_loads(raw)


try:
    import orjson
except ImportError:  # pragma: no cover - the server extra installs it
    _loads = _json_loads
else:
    _loads = _orjson_loads


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decision_ok(ev: Mapping[str, Any]) -> None:
    get = ev.get
    code = get("code")
    if (
        type(get("allowed")) is not bool
        or type(code) is not str
        or type(get("action")) is not str
        or not _code_ok(code)
    ):
        raise _Bad("bad_event")
    for k in _DECISION_OPT:
        v = get(k)
        if v is not None and type(v) is not str:
            raise _Bad("bad_event")
    args = get("args")
    if args is not None and type(args) is not dict:
        raise _Bad("bad_event")


_codes_seen: set[str] = set()  # valid codes, so the regex runs once per distinct code


def _code_ok(code: str) -> bool:
    if code in _codes_seen:
        return True
    if not _CODE.match(code):
        return False
    if len(_codes_seen) < 1024:
        _codes_seen.add(code)
    return True


def _grant_info(ev: Mapping[str, Any]) -> GrantInfo:
    gid, app = ev.get("gid"), ev.get("app")
    sub, agent, aud = ev.get("sub"), ev.get("agent"), ev.get("aud")
    if not (type(gid) is str and type(app) is str and type(sub) is str and type(agent) is str):
        raise _Bad("bad_event")
    if type(aud) is not list or not all(type(a) is str for a in aud):
        raise _Bad("bad_event")
    caps_raw = ev.get("capabilities")
    if type(caps_raw) is not list:
        raise _Bad("bad_event")
    try:
        caps = [parse_capability(c, token_form="type" in c) for c in caps_raw]
    except (ConstraintError, TypeError):
        raise _Bad("bad_event") from None
    exp = ev.get("expires_at")
    purpose = ev.get("purpose")
    return GrantInfo(
        gid=gid,
        app=app,
        subject=sub,
        agent=agent,
        audience=list(aud),
        capabilities=caps,
        purpose=purpose if type(purpose) is str else "",
        expires_at=exp if type(exp) is int else 0,
    )


class Alignment:
    """One-pass accumulator. :meth:`feed` each stream entry, then :meth:`report`.

    ``lookup`` finds a grant the stream did not describe (created before ``since``, or
    trimmed away): the service passes its grant store. It is called at most once per
    grant id.
    """

    def __init__(
        self, filters: Filters = Filters(), lookup: Callable[[str], GrantInfo | None] | None = None
    ) -> None:
        self.filters = filters
        self._filtered = bool(
            filters.grant or filters.agent or filters.subject or filters.app or filters.since_ms
        )
        self._lookup = lookup
        self._grants: dict[str, _GrantStats] = {}
        self._info: dict[str, GrantInfo | None] = {}  # gid -> info (None: looked up, unknown)
        self._agents: dict[str, dict[int, list[int]]] = {}  # agent -> bucket -> [tries, denied]
        self._width_i = 0
        self._first_bucket: int | None = None
        self._last_bucket: int | None = None
        self.entries = 0
        self.decisions = 0
        self.skipped: dict[str, int] = {}
        self.skipped_examples: list[dict[str, str]] = []
        self.ignored_types: dict[str, int] = {}
        self.unattributed: dict[str, int] = {}  # code -> denials with no grant id
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    # -- input -------------------------------------------------------------------------

    def feed(self, entry_id: Any, fields: Any) -> None:
        """One stream entry (id, field map as redis-py returns it: bytes or str)."""
        self.entries += 1
        try:
            self._feed(fields)
        except _Bad as bad:
            self._skip(entry_id, bad.reason)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            self._skip(entry_id, "bad_event")

    def _skip(self, entry_id: Any, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_examples) < EXAMPLES * 3:
            eid = (
                entry_id.decode("utf-8", "replace")
                if isinstance(entry_id, bytes)
                else str(entry_id)
            )
            self.skipped_examples.append({"id": eid[:64], "reason": reason})

    def _feed(self, fields: Any) -> None:
        if type(fields) is list:  # raw XRANGE reply (read_stream): [k1, v1, k2, v2, ...]
            if (
                len(fields) == 10
                and fields[0] == b"v"
                and fields[2] == b"w"
                and fields[4] == b"n"
                and fields[6] == b"h"
                and fields[8] == b"ev"
            ):  # the writers' own layout: no dict needed
                if fields[1] != b"1":
                    raise _Bad("bad_version")
                self._event(fields[9])
                return
            if len(fields) % 2:
                raise _Bad("not_an_entry")
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        if not isinstance(fields, dict):
            raise _Bad("not_an_entry")
        v = fields.get(b"v")
        if v is None:  # not the bytes keys redis-py gives: a str-keyed map, or foreign
            fields = {k.encode() if type(k) is str else k: x for k, x in fields.items()}
            v = fields.get(b"v")
            if v is None:
                raise _Bad("foreign")
        if v not in (b"1", "1"):
            raise _Bad("bad_version")
        raw = fields.get(b"ev")
        if raw is None or b"w" not in fields or b"n" not in fields or b"h" not in fields:
            raise _Bad("missing_field")
        self._event(raw)

    def _event(self, raw: Any) -> None:
        try:
            ev = _loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise _Bad("bad_json") from None
        if type(ev) is not dict:
            raise _Bad("bad_json")
        kind, ts = ev.get("type"), ev.get("ts")
        if type(kind) is not str or type(ts) is not int:
            raise _Bad("bad_event")
        if kind == "decision":
            self._decision(ev, ts)
        elif kind == "grant.created":
            info = _grant_info(ev)
            self._info[info.gid] = info
            f = self.filters
            if (
                self._wanted_gid(info.gid)
                and (not f.agent or info.agent == f.agent)
                and (not f.subject or info.subject == f.subject)
            ):
                self._grant(info.gid)
        elif kind in ("token.minted", "token.exchanged"):
            gid = ev.get("gid")
            if type(gid) is not str:
                raise _Bad("bad_event")
            if self._wanted_gid(gid):
                st = self._grant(gid)
                if kind == "token.minted":
                    st.minted += 1
                else:
                    st.exchanged += 1
        elif kind == "revoked":
            what = ev.get("what")
            if type(what) is not dict:
                raise _Bad("bad_event")
            gid = what.get("gid")
            if type(gid) is str and self._wanted_gid(gid):
                st = self._grant(gid)
                if len(st.revocations) < EXAMPLES:
                    st.revocations.append(
                        {
                            "ts": ts,
                            "by": str(ev.get("by"))[:128],
                            "reason": str(ev.get("reason"))[:256],
                        }
                    )
        else:
            self.ignored_types[kind[:64]] = self.ignored_types.get(kind[:64], 0) + 1

    def _wanted_gid(self, gid: str) -> bool:
        return not self.filters.grant or gid == self.filters.grant

    def _grant(self, gid: str) -> _GrantStats:
        st = self._grants.get(gid)
        if st is None:
            st = self._grants[gid] = _GrantStats(gid)
        return st

    def _decision(self, ev: dict[str, Any], ts: int) -> None:
        _decision_ok(ev)
        get = ev.get
        gid, agent, sub = get("gid"), get("agent"), get("sub")
        if self._filtered:
            f = self.filters
            if ts < f.since_ms:
                return
            if f.grant and gid != f.grant:
                return
            if f.agent and agent != f.agent:
                return
            if f.subject and sub != f.subject:
                return
            if f.app and (gid is None or self._app_of(gid) != f.app):
                return
        self.decisions += 1
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        allowed: bool = ev["allowed"]
        code: str = ev["code"]
        self._timeline(agent or UNKNOWN_AGENT, ts, allowed)
        if gid is None:
            if not allowed:
                self.unattributed[code] = self.unattributed.get(code, 0) + 1
            return
        st = self._grants.get(gid) or self._grant(gid)
        if sub is not None and len(st.subjects) < EXAMPLES:
            st.subjects.add(sub)
        if agent is not None and len(st.agents) < EXAMPLES:
            st.agents.add(agent)
        st.attempts += 1
        action = ev["action"]
        ast = st.actions.get(action) or st.action(action)
        ast.attempts += 1
        if allowed:
            st.allowed += 1
            ast.allowed += 1
            args = ev.get("args")
            if args is not None:
                ast.valued += 1
                self._observe(ast, args)
            return
        st.denied += 1
        ast.denied += 1
        entry = st.codes.get(code)
        if entry is None:
            if len(st.codes) >= MAX_CODES:
                code = OTHER
                entry = st.codes.get(code)
            if entry is None:
                entry = st.codes[code] = [0, []]
        entry[0] += 1
        if len(entry[1]) < EXAMPLES:
            example: dict[str, Any] = {
                "ts": ts,
                "action": action[:128],
                "agent": agent,
                "jti": ev.get("jti"),
            }
            if type(ev.get("arg")) is str:
                example["arg"] = ev["arg"][:128]
            if "args" in ev:
                text = json.dumps(ev["args"], sort_keys=True)
                example["args"] = text if len(text) <= 512 else text[:509] + "..."
            entry[1].append(example)

    @staticmethod
    def _observe(ast: _ActionStats, args: dict[str, Any]) -> None:
        stats = ast.args
        for name, value in args.items():
            s = stats.get(name)
            if s is None:
                if len(stats) >= MAX_ARGS:
                    ast.args_overflow = True
                    continue
                s = stats[name] = _ArgStats()
            s.add(value)

    def _app_of(self, gid: str) -> str | None:
        info = self.info(gid)
        return info.app if info else None

    def info(self, gid: str) -> GrantInfo | None:
        if gid in self._info:
            return self._info[gid]
        found = self._lookup(gid) if self._lookup is not None else None
        self._info[gid] = found
        return found

    # -- time buckets ------------------------------------------------------------------

    def _timeline(self, agent: str, ts: int, allowed: bool) -> None:
        b = ts // (WIDTHS[self._width_i] * 1000)
        if self._first_bucket is None or b < self._first_bucket:
            self._first_bucket = b
        if self._last_bucket is None or b > self._last_bucket:
            self._last_bucket = b
        if (
            self._last_bucket - self._first_bucket >= MAX_BUCKETS
            and self._width_i < len(WIDTHS) - 1
        ):
            self._coarsen()
            b = ts // (WIDTHS[self._width_i] * 1000)
        buckets = self._agents.get(agent)
        if buckets is None:
            buckets = self._agents[agent] = {}
        cell = buckets.get(b)
        if cell is None:
            cell = buckets[b] = [0, 0]
        cell[0] += 1
        if not allowed:
            cell[1] += 1

    def _coarsen(self) -> None:
        assert self._first_bucket is not None and self._last_bucket is not None
        old = WIDTHS[self._width_i]
        while (
            self._width_i < len(WIDTHS) - 1
            and (self._last_bucket * old // WIDTHS[self._width_i])
            - (self._first_bucket * old // WIDTHS[self._width_i])
            >= MAX_BUCKETS
        ):
            self._width_i += 1
        new = WIDTHS[self._width_i]
        for agent, buckets in self._agents.items():
            merged: dict[int, list[int]] = {}
            for b, (n, d) in buckets.items():
                cell = merged.setdefault(b * old // new, [0, 0])
                cell[0] += n
                cell[1] += d
            self._agents[agent] = merged
        self._first_bucket = self._first_bucket * old // new
        self._last_bucket = self._last_bucket * old // new

    # -- output ------------------------------------------------------------------------

    def report(self, *, stream: str = "", now: float | None = None) -> dict[str, Any]:
        wanted = self.filters.grant
        if wanted and wanted not in self._grants and self.info(wanted) is not None:
            self._grant(wanted)  # asked for, but never used: all of it is unused authority
        grants = []
        for gid in sorted(self._grants):
            info = self.info(gid)
            if self.filters.app and (info is None or info.app != self.filters.app):
                continue
            st = self._grants[gid]
            if not st.attempts and (self.filters.agent or self.filters.subject):
                # only token / revocation events: keep the grant if it is the one asked for
                if info is None or (self.filters.agent and info.agent != self.filters.agent):
                    continue
                if self.filters.subject and info.subject != self.filters.subject:
                    continue
            grants.append(_grant_report(st, info))
        width = WIDTHS[self._width_i]
        agents = []
        for agent in sorted(self._agents):
            buckets = self._agents[agent]
            tries = sum(c[0] for c in buckets.values())
            denied = sum(c[1] for c in buckets.values())
            agents.append(
                {
                    "agent": agent,
                    "attempts": tries,
                    "denied": denied,
                    "exceedance_rate": _rate(denied, tries),
                    "buckets": [
                        {
                            "start_ms": b * width * 1000,
                            "attempts": c[0],
                            "denied": c[1],
                            "exceedance_rate": _rate(c[1], c[0]),
                        }
                        for b, c in sorted(buckets.items())
                    ],
                }
            )
        allowed = sum(g["allowed"] for g in grants)
        denied = sum(g["denied"] for g in grants)
        scores = [
            g["least_privilege"]["score"]
            for g in grants
            if g["least_privilege"]["score"] is not None
        ]
        return {
            "schema": SCHEMA,
            "generated_at_ms": int((time.time() if now is None else now) * 1000),
            "filters": self.filters.to_json(),
            "stream": {
                "key": stream,
                "entries": self.entries,
                "decisions": self.decisions,
                "first_ts_ms": self.first_ts,
                "last_ts_ms": self.last_ts,
                "skipped": sum(self.skipped.values()),
                "skipped_by_reason": dict(sorted(self.skipped.items())),
                "skipped_examples": self.skipped_examples,
                "ignored_types": dict(sorted(self.ignored_types.items())),
            },
            "totals": {
                "grants": len(grants),
                "attempts": allowed + denied,
                "allowed": allowed,
                "denied": denied,
                "exceedance_rate": _rate(denied, allowed + denied),
                "least_privilege": round(sum(scores) / len(scores), 4) if scores else None,
            },
            "grants": grants,
            "unattributed": {
                "denied": sum(self.unattributed.values()),
                "by_code": dict(sorted(self.unattributed.items())),
            },
            "bucket_seconds": width,
            "agents": agents,
        }


def _rate(denied: int, tries: int) -> float | None:
    return round(denied / tries, 4) if tries else None


# --- per-grant report ------------------------------------------------------------------


def _first_cap(caps: list[Capability], action: str) -> int | None:
    for i, cap in enumerate(caps):
        if action_matches(cap.action, action):
            return i
    return None


def _grant_report(st: _GrantStats, info: GrantInfo | None) -> dict[str, Any]:
    caps = info.capabilities if info else []
    per_cap: list[dict[str, Any]] = [
        {
            "index": i,
            "action": c.action,
            "args": dict(c.args),
            "attempts": 0,
            "allowed": 0,
            "denied": 0,
            "actions_used": [],
        }
        for i, c in enumerate(caps)
    ]
    outside = []  # actions matching no capability
    for action, ast in sorted(st.actions.items()):
        i = _first_cap(caps, action) if action != OTHER else None
        if i is None:
            outside.append({"action": action, "attempts": ast.attempts, "denied": ast.denied})
            continue
        row = per_cap[i]
        row["attempts"] += ast.attempts
        row["allowed"] += ast.allowed
        row["denied"] += ast.denied
        if ast.allowed:
            row["actions_used"].append(action)
    over = [
        {"code": code, "label": label(code), "count": n, "examples": ex}
        for code, (n, ex) in sorted(st.codes.items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]
    unused_caps = [
        {"index": r["index"], "action": r["action"], "args": r["args"]}
        for r in per_cap
        if not r["allowed"]
    ]
    arguments = _argument_use(st, caps)
    score = _score(st, caps, arguments)
    out: dict[str, Any] = {
        "gid": st.gid,
        "known": info is not None,
        "app": info.app if info else None,
        "subject": info.subject if info else (sorted(st.subjects)[0] if st.subjects else None),
        "agent": info.agent if info else (sorted(st.agents)[0] if st.agents else None),
        "audience": info.audience if info else [],
        "purpose": info.purpose if info else "",
        "expires_at": info.expires_at if info else None,
        "attempts": st.attempts,
        "allowed": st.allowed,
        "denied": st.denied,
        "exceedance_rate": _rate(st.denied, st.attempts),
        "tokens_minted": st.minted,
        "tokens_exchanged": st.exchanged,
        "revocations": st.revocations,
        "capabilities": per_cap,
        "actions_outside_grant": outside,
        "over_reach": over,
        "unused": {"capabilities": unused_caps, "arguments": arguments},
        "least_privilege": score,
        "suggested": _suggest(st, caps) if info is not None else None,
    }
    return out


def _argument_use(st: _GrantStats, caps: list[Capability]) -> list[dict[str, Any]]:
    """Per (used action, argument): the granted constraint and the values used."""
    rows = []
    for action, ast in sorted(st.actions.items()):
        i = _first_cap(caps, action) if action != OTHER else None
        if i is None or not ast.allowed:
            continue
        granted = caps[i].args
        names = list(granted) + [n for n in sorted(ast.args) if n not in granted]
        for name in names:
            s = ast.args.get(name)
            rows.append(
                {
                    "action": action,
                    "arg": name,
                    "granted": granted.get(name, granted.get("*")),
                    "used": s.used() if s else None,
                    "recorded_calls": ast.valued,
                    "allowed_calls": ast.allowed,
                }
            )
    return rows


def _measure(constraint: Mapping[str, Any] | None, used: Mapping[str, Any] | None) -> float | None:
    """Share of one argument's granted range that was used, where it is measurable."""
    if constraint is None or used is None:
        return None
    if "eq" in constraint:
        return 1.0
    if "in" in constraint and "values" in used:
        granted = constraint["in"]
        hit = sum(
            1
            for g in granted
            if any(
                json.dumps(g, sort_keys=True) == json.dumps(u, sort_keys=True)
                for u in used["values"]
            )
        )
        return hit / len(granted) if granted else None
    lo = constraint.get("ge", constraint.get("gt"))
    hi = constraint.get("le", constraint.get("lt"))
    umin, umax = used.get("min"), used.get("max")
    if hi is None or umin is None or umax is None or used.get("kinds") != ["number"]:
        return None
    if lo is None:  # only an upper bound: how far up towards it the calls went
        if hi <= 0 or umin < 0:
            return None
        upto: float = umax / hi
        return max(0.0, min(1.0, upto))
    if hi <= lo:
        return 1.0
    share: float = (umax - umin) / (hi - lo)
    return max(0.0, min(1.0, share))


def _score(
    st: _GrantStats, caps: list[Capability], arguments: list[dict[str, Any]]
) -> dict[str, Any]:
    """Least-privilege score: the mean, over the grant's capabilities, of

        (used + sum of measured argument shares) / (1 + number of measured arguments)

    where ``used`` is 1 if any call under the capability was allowed, else 0 (and then
    the capability scores 0), and an argument share is measured only when its values
    were recorded and its constraint has a size: ``in`` (share of the listed values
    used), ``eq`` (1), or a numeric bound (used span / granted span, with a missing
    with only an upper bound ``b > 0`` and every value used >= 0:
    max used / b). 1.0 = every bit of the
    granted authority was exercised; near 0 = mostly unused.
    """
    if not caps:
        return {"score": None, "capabilities": []}
    per_action: dict[int, list[dict[str, Any]]] = {}
    for row in arguments:
        i = _first_cap(caps, row["action"])
        if i is not None:
            per_action.setdefault(i, []).append(row)
    out = []
    for i, cap in enumerate(caps):
        used = any(
            ast.allowed for a, ast in st.actions.items() if a != OTHER and _first_cap(caps, a) == i
        )
        if not used:
            out.append(0.0)
            continue
        shares: dict[str, list[float]] = {}
        for row in per_action.get(i, []):
            m = _measure(row["granted"], row["used"]) if row["arg"] in cap.args else None
            if m is not None and row["recorded_calls"] == row["allowed_calls"]:
                shares.setdefault(row["arg"], []).append(m)
        measured = [max(v) for v in shares.values()]
        out.append((1 + sum(measured)) / (1 + len(measured)))
    return {"score": round(sum(out) / len(out), 4), "capabilities": [round(x, 4) for x in out]}


def _merge(candidate: dict[str, Any], granted: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate constraint intersected with the granted one (operators combined)."""
    merged = dict(candidate)
    for op, operand in granted.items():
        if op in ("any", "optional"):
            continue
        if op not in merged:
            merged[op] = operand
        elif op in ("le", "lt", "max_len"):
            merged[op] = min(merged[op], operand)
        elif op in ("ge", "gt"):
            merged[op] = max(merged[op], operand)
        elif op == "prefix" and isinstance(merged[op], str) and not merged[op].startswith(operand):
            merged[op] = operand if operand.startswith(merged[op]) else merged[op]
    return merged


def _suggest(st: _GrantStats, caps: list[Capability]) -> list[dict[str, Any]]:
    """The narrowest grant (token form) allowing every allowed call seen: per used action,
    constraints from the values used (``eq``/``in`` for a few values, ``ge``/``le`` for
    numbers, ``prefix`` + ``max_len`` for strings), intersected with the granted ones;
    where values were not recorded, the granted capability for just that action. Every
    suggested capability is checked narrower than the grant; else the granted one is
    kept for that action."""
    out: list[Capability] = []
    for action, ast in sorted(st.actions.items()):
        if action == OTHER or not ast.allowed:
            continue
        matching = [c for c in caps if action_matches(c.action, action)]
        if not matching:
            continue
        fallback = [Capability(action, c.args) for c in matching]
        fallback = [c for c in fallback if is_narrower(c, matching)] or matching
        if ast.valued != ast.allowed or ast.args_overflow:
            out.extend(fallback)
            continue
        parent = matching[0] if len(matching) == 1 else None
        args: dict[str, Any] = {}
        ok = True
        for name, s in sorted(ast.args.items()):
            c = s.candidate(absent=s.calls < ast.allowed)
            if parent is not None:
                g = parent.args.get(name, parent.args.get("*"))
                if c is None and g is not None:
                    c = dict(g)
                    c.pop("optional", None)
                    if s.calls < ast.allowed and "any" not in c:
                        c["optional"] = True
                    elif s.calls < ast.allowed:
                        c = {"any": True, "optional": True}
                elif c is not None and g is not None:
                    trial = Capability(action, {name: c})
                    probe = Capability(action, {name: g})
                    if not is_narrower(trial, probe):
                        c = _merge(c, g)
            if c is None:
                ok = False
                break
            args[name] = c
        if ok:
            try:
                cap = parse_capability({"action": action, "args": args})
            except ConstraintError:
                cap = None
            if cap is not None and is_narrower(cap, matching):
                out.append(cap)
                continue
        out.extend(fallback)
    # de-duplicate (a wildcard fallback may repeat)
    seen: set[str] = set()
    result = []
    for cap in out:
        key = json.dumps(cap.to_json(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            result.append(cap.to_json())
    return result


def allows(capabilities: Iterable[Mapping[str, Any]], action: str, args: Mapping[str, Any]) -> bool:
    """Would a scope (token form) allow this call? Used to check suggestions in tests."""
    for raw in capabilities:
        cc = compile_capability(parse_capability(dict(raw), token_form="type" in raw))
        if not action_matches(cc.capability.action, action):
            continue
        if any(n not in args for n in cc.required):
            continue
        ok = True
        for n, v in args.items():
            pred = cc.named.get(n, cc.star)
            if pred is None or not pred(v):
                ok = False
                break
        if ok:
            return True
    return False


# --- reading the stream ----------------------------------------------------------------


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def read_stream(
    client: Any, key: str, *, since_ms: int = 0, batch: int = BATCH
) -> Iterator[tuple[Any, Any]]:
    """Every entry of the stream from ``since_ms`` on, in batches (exclusive cursor)."""
    start: str | bytes = f"{since_ms}-0" if since_ms else "-"
    import redis

    if isinstance(client, redis.Redis):
        # The same pool, without redis-py's reply callback: the raw [id, [k, v, ...]]
        # pairs, which Alignment.feed takes as they are (a third less time than
        # building a dict per entry, which the report would only throw away).
        client = redis.Redis(connection_pool=client.connection_pool)
        client.set_response_callback("XRANGE", _raw_reply)
    while True:
        try:
            entries = client.xrange(key, min=start, max="+", count=batch)
        except redis.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                raise ReportError(f"{key!r} is not a stream (wrong --prefix?)") from None
            raise ReportError(f"Redis refused to read {key!r}: {exc}") from None
        except (redis.RedisError, OSError) as exc:
            raise ReportError(f"Redis unavailable: {exc}") from None
        if not entries:
            return
        yield from entries
        if len(entries) < batch:
            return
        last = entries[-1][0]
        start = b"(" + last if isinstance(last, bytes) else "(" + str(last)


def store_lookup(store: Any) -> Callable[[str], GrantInfo | None]:
    """Grants the stream does not describe, from the service's grant store (a
    :class:`~remit_service._store.GrantStore`). An unreadable record counts as unknown."""
    from ._errors import StoreDown

    def lookup(gid: str) -> GrantInfo | None:
        try:
            rec = store.get(gid)
            if rec is None:
                return None
            caps = [parse_capability(c) for c in rec.capabilities]
        except (StoreDown, ConstraintError, TypeError, ValueError):
            return None
        return GrantInfo(
            gid=rec.id,
            app=rec.app,
            subject=rec.subject,
            agent=rec.agent,
            audience=list(rec.audience),
            capabilities=caps,
            purpose=rec.purpose,
            expires_at=rec.expires_at,
            source="store",
        )

    return lookup


def compute(
    client: Any,
    stream: str,
    filters: Filters = Filters(),
    lookup: Callable[[str], GrantInfo | None] | None = None,
) -> dict[str, Any]:
    """Read the stream once and build the report."""
    acc = Alignment(filters, lookup)
    for entry_id, fields in read_stream(client, stream, since_ms=filters.since_ms):
        acc.feed(entry_id, fields)
    return acc.report(stream=stream)
