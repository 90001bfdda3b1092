"""Revocation metrics of the service: plain counters and gauges, no exporter.

The metrics endpoint wires these in (``Core.revocation_metrics``): revocations by kind
(what an operator asked for), stream entries written, stream writes that failed, and the
stream's state read from Redis (length, age of the newest entry). Verifier-side lag is
the verifier's own ``Verifier.revocation_status().age``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RevocationMetrics", "StreamGauge"]

KINDS = ("jti", "grant", "agent", "subject", "all")


@dataclass(frozen=True)
class StreamGauge:
    entries: int  # entries in the revocation stream now
    newest_age_ms: int  # how long ago (Redis clock) the newest entry was written


class RevocationMetrics:
    """Thread-safe counters; ``stream()`` asks Redis (one round trip) for the gauges."""

    def __init__(self, stream_info: Callable[[], tuple[int, int]]) -> None:
        self._lock = threading.Lock()
        self._stream_info = stream_info
        self.revocations: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.grants_cut = 0  # grants that got an "issued before" cutoff
        self.stream_entries_written = 0
        self.stream_write_failures = 0

    def revoked(self, kind: str, *, grants: int, entries: int) -> None:
        with self._lock:
            self.revocations[kind] += 1
            self.grants_cut += grants
            self.stream_entries_written += entries

    def stream_failed(self) -> None:
        with self._lock:
            self.stream_write_failures += 1

    def snapshot(self) -> dict[str, int]:
        """Every counter, flat: ``revocations_<kind>``, ``grants_cut``, ``stream_*``."""
        with self._lock:
            out = {f"revocations_{k}": v for k, v in self.revocations.items()}
            out["grants_cut"] = self.grants_cut
            out["stream_entries_written"] = self.stream_entries_written
            out["stream_write_failures"] = self.stream_write_failures
        return out

    def stream(self) -> StreamGauge:
        """Raises ``StoreDown`` when Redis cannot be asked."""
        entries, age = self._stream_info()
        return StreamGauge(entries=entries, newest_age_ms=age)
