"""Reading the audit trail: entry parsing, chain verification, JSONL export.

``verify_stream`` walks the stream once, in order, keeping per writer only its highest
``n``, that entry's ``h`` and the numbers still missing, so memory stays small however
long the stream. What it reports (each with the entry id, writer and ``n``):

- ``foreign``: an entry that is not schema v1 (fields, version, number, hash, JSON);
  skipped.
- ``edited``: an entry whose ``h`` is not SHA-256(previous ``h`` + LF + ``ev``): this
  entry was altered, or the previous one was altered and its hash recomputed.
- ``gap``: numbers of a writer that never appear between its first and last entry
  (deleted entries).
- ``reordered``: an entry whose ``n`` is lower than one already seen from its writer.
- ``duplicate``: an ``n`` seen twice from one writer.

A hash chain without a secret cannot reveal removal of a writer's *last* entries, an
entirely recomputed tail, or a made-up writer: docs/audit.md ("Guarantees") says what
it does and does not prove. A writer's first entry with ``n > 1`` (the stream was
trimmed, or read ``--from`` an id) is where its checks start, not a problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from remit._audit import SCHEMA_VERSION, chain_hash
from remit._encoding import strict_json_loads
from remit._redis import RedisLike

__all__ = [
    "Entry",
    "Problem",
    "VerifyResult",
    "export_jsonl",
    "parse_entry",
    "read_stream",
    "valid_stream_id",
    "verify_stream",
]

PAGE = 1000
_FIELDS = frozenset({b"v", b"w", b"n", b"h", b"ev"})
_WRITER = re.compile(rb"[A-Za-z0-9_-]{1,64}\Z")
_N = re.compile(rb"[1-9][0-9]{0,18}\Z")
_HASH = re.compile(rb"[0-9a-f]{64}\Z")
_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")


@dataclass(frozen=True)
class Entry:
    """A well-formed v1 entry. ``ev`` is the exact stored bytes (the hash covers them)."""

    id: str
    w: str
    n: int
    h: str
    ev: bytes
    event: dict[str, Any]


@dataclass(frozen=True)
class Problem:
    kind: str  # foreign | edited | gap | reordered | duplicate
    id: str  # the entry (for a gap: the first entry after it)
    writer: str | None
    n: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "writer": self.writer,
            "n": self.n,
            "detail": self.detail,
        }


@dataclass
class VerifyResult:
    entries: int = 0
    checked_links: int = 0
    writers: dict[str, int] = field(default_factory=dict)  # writer -> entries
    problems: list[Problem] = field(default_factory=list)
    last_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def valid_stream_id(text: str) -> bool:
    return bool(_ID.match(text))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_entry(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Entry | str:
    """The entry, or why it is not a v1 entry (never raises)."""
    try:
        if set(fields) != _FIELDS:
            names = sorted(_text(k) for k in fields)[:8]
            return f"fields {names}, expected ['ev', 'h', 'n', 'v', 'w']"
        if fields[b"v"] != SCHEMA_VERSION.encode():
            return f"schema version {_text(fields[b'v'])[:16]!r}, expected {SCHEMA_VERSION!r}"
        if not _WRITER.match(fields[b"w"]):
            return "writer id is not 1-64 characters of [A-Za-z0-9_-]"
        if not _N.match(fields[b"n"]):
            return "n is not a positive decimal number"
        if not _HASH.match(fields[b"h"]):
            return "h is not 64 lowercase hex digits"
        event = strict_json_loads(fields[b"ev"])
        if not isinstance(event, dict):
            return "ev is not a JSON object"
        if not isinstance(event.get("type"), str) or type(event.get("ts")) is not int:
            return "ev lacks a string 'type' or an integer 'ts'"
    except Exception as exc:  # any garbage is reported, never raised
        return f"ev is not valid JSON ({type(exc).__name__})"
    return Entry(
        id=_text(entry_id),
        w=fields[b"w"].decode("ascii"),
        n=int(fields[b"n"]),
        h=fields[b"h"].decode("ascii"),
        ev=fields[b"ev"],
        event=event,
    )


def read_stream(
    client: RedisLike, stream: str, start: str | None = None
) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """Every entry after ``start`` (exclusive; None: from the beginning), in pages."""
    low = f"({start}" if start else "-"
    while True:
        page = client.xrange(stream, low, "+", count=PAGE)
        if not page:
            return
        for entry_id, fields in page:
            yield _text(entry_id), fields
        low = f"({_text(page[-1][0])}"


@dataclass
class _Writer:
    last_n: int
    last_h: str
    missing: dict[int, str] = field(default_factory=dict)  # n -> id of the entry after


def verify_stream(client: RedisLike, stream: str, start: str | None = None) -> VerifyResult:
    """Walk the stream and check every writer's numbering and hash chain."""
    result = VerifyResult()
    writers: dict[str, _Writer] = {}
    problems = result.problems
    for entry_id, fields in read_stream(client, stream, start):
        result.entries += 1
        result.last_id = entry_id
        entry = parse_entry(entry_id, fields)
        if isinstance(entry, str):
            problems.append(Problem("foreign", entry_id, None, None, entry))
            continue
        result.writers[entry.w] = result.writers.get(entry.w, 0) + 1
        state = writers.get(entry.w)
        if state is None:  # the writer's first entry here: n=1 links from ""
            writers[entry.w] = _Writer(entry.n, entry.h)
            if entry.n == 1:
                _link(result, entry, "")
            continue
        if entry.n == state.last_n + 1:
            _link(result, entry, state.last_h)
        elif entry.n > state.last_n + 1:
            if entry.n - state.last_n > 1_000_000:
                problems.append(
                    Problem(
                        "gap",
                        entry_id,
                        entry.w,
                        entry.n,
                        f"n jumps from {state.last_n} to {entry.n}",
                    )
                )
            else:
                for missing in range(state.last_n + 1, entry.n):
                    state.missing[missing] = entry_id
        elif entry.n in state.missing:
            del state.missing[entry.n]
            problems.append(
                Problem(
                    "reordered",
                    entry_id,
                    entry.w,
                    entry.n,
                    f"n={entry.n} comes after n={state.last_n}",
                )
            )
            continue
        else:
            problems.append(
                Problem(
                    "duplicate",
                    entry_id,
                    entry.w,
                    entry.n,
                    f"n={entry.n} was already seen from this writer",
                )
            )
            continue
        state.last_n, state.last_h = entry.n, entry.h
    for w, state in writers.items():
        for first, last, after in _ranges(state.missing):
            what = f"n={first}" if first == last else f"n={first}..{last}"
            problems.append(Problem("gap", after, w, first, f"{what} missing (deleted)"))
    problems.sort(key=lambda p: _id_key(p.id))  # stable: in stream order
    return result


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq)) if ms.isdigit() and seq.isdigit() else (0, 0)


def _link(result: VerifyResult, entry: Entry, prev_h: str) -> None:
    result.checked_links += 1
    if chain_hash(prev_h, entry.ev) != entry.h:
        detail = (
            "the event does not match its hash"
            if entry.n == 1
            else f"does not chain from n={entry.n - 1}: this entry was edited "
            f"(or n={entry.n - 1} was, and its hash recomputed)"
        )
        result.problems.append(Problem("edited", entry.id, entry.w, entry.n, detail))


def _ranges(missing: dict[int, str]) -> Iterator[tuple[int, int, str]]:
    run: list[int] = []
    for n in sorted(missing):
        if run and n != run[-1] + 1:
            yield run[0], run[-1], missing[run[0]]
            run = []
        run.append(n)
    if run:
        yield run[0], run[-1], missing[run[0]]


def export_line(entry_id: str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """One JSONL record: the entry as stored (``ev`` verbatim, so a SIEM can re-check the
    chain) plus the parsed ``event``; a foreign entry is exported flagged, not hidden."""
    entry = parse_entry(entry_id, fields)
    if isinstance(entry, str):
        return {
            "id": entry_id,
            "foreign": entry,
            "fields": {_text(k): _text(v) for k, v in list(fields.items())[:16]},
        }
    return {
        "id": entry.id,
        "v": SCHEMA_VERSION,
        "w": entry.w,
        "n": entry.n,
        "h": entry.h,
        "ev": entry.ev.decode("utf-8"),
        "event": entry.event,
    }


def export_jsonl(
    client: RedisLike, stream: str, out: Any, start: str | None = None
) -> tuple[int, str | None]:
    """Write entries after ``start`` to ``out`` as JSON lines: (count, last id)."""
    count, last = 0, start
    for entry_id, fields in read_stream(client, stream, start):
        out.write(json.dumps(export_line(entry_id, fields), ensure_ascii=False) + "\n")
        count, last = count + 1, entry_id
    return count, last
