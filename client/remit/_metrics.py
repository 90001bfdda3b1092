"""Prometheus metrics of verifiers (``pip install 'remit[metrics]'``; imported only on use).

``instrument(verifier)`` wraps one verifier's decision path (``check`` and ``guard``
both go through it) so that every decision is counted by audience, reason code and
action, and its latency observed; the audit trail's counters and the revocation feed
lag are read at scrape time from the verifier itself. Nothing here is imported by
``import remit``: a backend without metrics never loads prometheus-client.

Metric names (all prefixed ``remit_verifier_``):

==========================================  =========  ===================================
``decisions_total{audience,code,action}``   counter    ``code`` is ``ok`` or the denial code
``check_seconds{audience}``                 histogram  latency of ``check`` / ``guard``
``audit_events_dropped_total{audience}``    counter    from ``Verifier.audit_stats()``
``audit_events_written_total{audience}``    counter
``audit_events_pending{audience}``          gauge
``revocation_feed_lag_seconds{audience}``   gauge      from the callback given to
                                                       :meth:`VerifierMetrics.feed_lag`
==========================================  =========  ===================================

The ``action`` label is bounded: a name that is not a valid action (callers choose
action names, attackers too) or beyond the first :data:`MAX_ACTIONS` distinct ones is
reported as ``(other)``.

Expose them from the backend's own process with :func:`start_http_server`, the ASGI app
from :func:`asgi_app`, or by mounting the ``registry`` in an exporter the backend has.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ._constraints import valid_call_action
from ._errors import Denied

if TYPE_CHECKING:
    from ._verifier import Verifier

__all__ = [
    "CHECK_BUCKETS",
    "MAX_ACTIONS",
    "VerifierMetrics",
    "asgi_app",
    "instrument",
    "start_http_server",
]

MAX_ACTIONS = 256
OTHER = "(other)"
# A warm check takes microseconds, a cold one (signature) tens of them, strict revocation a
# Redis round trip (~0.1-1 ms): buckets from 2 us to 1 s.
CHECK_BUCKETS = (
    2e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.05,
    0.25,
    1.0,
)


class _Collector(Collector):
    """Turns the counts of every live instrumented verifier of a registry into metric
    families at scrape time (a metric name may be registered once per registry)."""

    def __init__(self) -> None:
        self.verifiers: weakref.WeakSet[VerifierMetrics] = weakref.WeakSet()

    def collect(self) -> Iterator[Any]:
        decisions = CounterMetricFamily(
            "remit_verifier_decisions",
            "Verifier decisions by reason code (ok = allowed) and action",
            labels=["audience", "code", "action"],
        )
        latency = HistogramMetricFamily(
            "remit_verifier_check_seconds",
            "Latency of a verifier decision (check or guard)",
            labels=["audience"],
        )
        dropped = CounterMetricFamily(
            "remit_verifier_audit_events_dropped",
            "Audit events a verifier could not record (buffer full, Redis down)",
            labels=["audience"],
        )
        written = CounterMetricFamily(
            "remit_verifier_audit_events_written",
            "Audit events a verifier wrote to the stream",
            labels=["audience"],
        )
        pending = GaugeMetricFamily(
            "remit_verifier_audit_events_pending",
            "Audit events buffered, not yet written",
            labels=["audience"],
        )
        lag = GaugeMetricFamily(
            "remit_verifier_revocation_feed_lag_seconds",
            "Age of the newest revocation feed state a verifier holds",
            labels=["audience"],
        )
        for m in list(self.verifiers):
            counts, buckets, total = m.snapshot()
            for (code, action), n in sorted(counts.items()):
                decisions.add_metric([m.audience, code, action], n)
            cumulative, acc = [], 0
            for bound, n in zip((*CHECK_BUCKETS, math.inf), buckets, strict=True):
                acc += n
                cumulative.append(("+Inf" if bound == math.inf else repr(bound), acc))
            latency.add_metric([m.audience], cumulative, total)
            stats = m.audit_stats()
            if stats is not None:
                dropped.add_metric([m.audience], stats.dropped)
                written.add_metric([m.audience], stats.written)
                pending.add_metric([m.audience], stats.pending)
            value = m.feed_lag_value()
            if value is not None:
                lag.add_metric([m.audience], value)
        yield from (decisions, latency, dropped, written, pending, lag)


_collectors: dict[int, _Collector] = {}
_collectors_lock = threading.Lock()


def _collector(registry: CollectorRegistry) -> _Collector:
    with _collectors_lock:
        c = _collectors.get(id(registry))
        if c is None:
            c = _collectors[id(registry)] = _Collector()
            registry.register(c)
        return c


class _ThreadCounts:
    __slots__ = ("buckets", "counts", "total")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}  # (code, action label) -> decisions
        self.buckets = [0] * (len(CHECK_BUCKETS) + 1)
        self.total = 0.0  # sum of latencies, seconds


class VerifierMetrics:
    """The metrics of one instrumented verifier. Made by :func:`instrument`.

    Counts are plain per-thread integers, turned into Prometheus samples only at scrape
    time: prometheus-client's own Counter and Histogram take a lock per sample (three
    per decision), which alone costs about as much as a warm check.
    """

    def __init__(self, verifier: Verifier, registry: CollectorRegistry) -> None:
        self.audience: str = verifier.audience
        self.registry = registry
        self._verifier = weakref.ref(verifier)
        # Stream mode: the feed's own lag, unless the backend registers another source.
        self._lag: Callable[[], float | None] | None = self._stream_lag
        self._lock = threading.Lock()
        # Per-thread counts: the owning thread alone writes them (no lock on the hot path:
        # an uncontended lock costs more than the rest of the bookkeeping); a scrape
        # copies and sums them (dict() / list() copies are atomic under the GIL).
        self._local = threading.local()
        self._states: list[_ThreadCounts] = []
        self._labels: dict[Any, str] = {}  # action as called -> its label (bounded memo)
        self._actions: set[str] = set()
        _collector(registry).verifiers.add(self)

    def feed_lag(self, source: Callable[[], float | None]) -> None:
        """Register the callback giving the revocation feed's lag in seconds (None:
        unknown); it is called at scrape time, never on the hot path."""
        self._lag = source

    def _stream_lag(self) -> float | None:
        verifier = self._verifier()
        status = verifier.revocation_status() if verifier is not None else None
        return None if status is None else status.age

    def feed_lag_value(self) -> float | None:
        source = self._lag
        if source is None:
            return None
        try:
            return source()
        except Exception:  # a broken callback must not break the scrape
            return None

    def audit_stats(self) -> Any:
        verifier = self._verifier()
        return verifier.audit_stats() if verifier is not None else None

    def snapshot(self) -> tuple[dict[tuple[str, str], int], list[int], float]:
        """Decision counts, latency bucket counts and latency sum, over all threads."""
        counts: dict[tuple[str, str], int] = {}
        buckets = [0] * (len(CHECK_BUCKETS) + 1)
        total = 0.0
        with self._lock:
            states = list(self._states)
        for st in states:
            for key, n in dict(st.counts).items():
                counts[key] = counts.get(key, 0) + n
            for i, n in enumerate(list(st.buckets)):
                buckets[i] += n
            total += st.total
        return counts, buckets, total

    def _new_state(self) -> _ThreadCounts:
        st = _ThreadCounts()
        self._local.st = st
        with self._lock:
            self._states.append(st)
        return st

    def _label(self, action: Any) -> str:
        label = action if type(action) is str and valid_call_action(action) else OTHER
        with self._lock:
            if label not in self._actions:
                if len(self._actions) >= MAX_ACTIONS:
                    label = OTHER
                else:
                    self._actions.add(label)
            if type(action) is str and len(self._labels) < 4 * MAX_ACTIONS:
                self._labels[action] = label
        return label

    def wrap(self, decide: Callable[..., Any]) -> Callable[..., Any]:
        """``decide`` (the verifier's ``_audited(token, action, args, proof, proven)``)
        counted and timed. Written flat: this runs on every check."""
        clock = time.perf_counter
        bounds = CHECK_BUCKETS
        labels = self._labels
        local = self._local
        new_state = self._new_state
        label_of = self._label

        def record(code: str, action: Any, seconds: float) -> None:
            label = labels.get(action) if type(action) is str else None
            if label is None:
                label = label_of(action)
            try:
                st = local.st
            except AttributeError:
                st = new_state()
            counts = st.counts
            key = (code, label)
            counts[key] = counts.get(key, 0) + 1
            st.buckets[bisect_left(bounds, seconds)] += 1
            st.total += seconds

        def measured(token: Any, action: Any, args: Any, proof: Any, proven: Any) -> Any:
            start = clock()
            try:
                decision = decide(token, action, args, proof, proven)
            except Denied as denied:
                record(denied.code.value, action, clock() - start)
                raise
            record("ok", action, clock() - start)
            return decision

        return measured


def instrument(verifier: Verifier, registry: CollectorRegistry | None = None) -> VerifierMetrics:
    """Count and time every decision of ``verifier`` in ``registry`` (default: the
    process-wide ``prometheus_client.REGISTRY``, which most exporters already serve).
    Idempotent per verifier."""
    existing: VerifierMetrics | None = getattr(verifier, "_metrics", None)
    if existing is not None:
        return existing
    metrics = VerifierMetrics(verifier, registry if registry is not None else REGISTRY)
    # check() and guard() both decide through _audited: wrapping it on the instance
    # measures every entry point and leaves verifiers without metrics untouched.
    verifier._audited = metrics.wrap(verifier._audited)  # type: ignore[method-assign]
    verifier._metrics = metrics  # type: ignore[attr-defined]
    return metrics


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` from this process (a daemon thread). Returns (server, thread);
    ``server.shutdown()`` stops it. Binds to loopback unless told otherwise."""
    server, thread = _start_http_server(
        port, addr=addr, registry=registry if registry is not None else REGISTRY
    )
    return server, thread


def asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics, to mount in the backend (``app.mount("/metrics",
    remit.metrics.asgi_app())``)."""
    from prometheus_client import make_asgi_app

    return make_asgi_app(registry=registry if registry is not None else REGISTRY)
