"""Prometheus metrics of the service, served at ``/metrics`` on its HTTP port.

Each :class:`ServiceMetrics` has its own registry (several servers can live in one
process, as in the tests). RPCs are measured by a gRPC server interceptor, so every
method — Remit, health, reflection — is counted by its final status code without
touching the servicer; the domain counters follow from it (a ``Mint`` that ends OK
minted a token, a ``Revoke`` that ends OK revoked something, ``UNAVAILABLE`` from a
Remit method is the store being down: the servicer maps only ``StoreDown`` to it).

==============================================  =========  ==============================
``remit_rpc_requests_total{method,code}``        counter
``remit_rpc_duration_seconds{method,code}``      histogram
``remit_tokens_minted_total{method}``            counter    ``Mint`` (later ``Exchange``)
``remit_revocations_total``                      counter
``remit_redis_errors_total{where}``              counter    ``rpc`` or ``epoch``
``remit_revocation_requests_total{kind}``        counter    ``jti grant agent subject all``
``remit_revocation_grants_cut_total``            counter    grants given a cutoff
``remit_revocation_stream_written_total``        counter    entries appended to the stream
``remit_revocation_stream_failures_total``       counter    stream appends that failed
``remit_revocation_stream_entries``              gauge      entries in the stream now
``remit_revocation_stream_newest_age_seconds``   gauge      age of the newest entry (lag)
==============================================  =========  ==============================

The revocation rows are read at scrape time from ``Core.revocation_metrics`` (the stream
gauges ask Redis, one round trip; they are absent while Redis is down).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ._errors import StoreDown
from ._revmetrics import RevocationMetrics

__all__ = ["ServiceMetrics"]

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_MINTING = frozenset({"Mint", "Exchange"})
_REMIT = "/remit.v1.Remit/"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpcs = Counter(
            "remit_rpc_requests", "RPCs by method and status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "remit_rpc_duration_seconds",
            "RPC latency by method and status code",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.minted = Counter(
            "remit_tokens_minted", "Tokens minted, by method", ["method"], registry=r
        )
        self.revocations = Counter("remit_revocations", "Successful revocations", registry=r)
        self.redis_errors = Counter(
            "remit_redis_errors", "Redis failures seen by the service", ["where"], registry=r
        )

    def watch_revocations(self, revocations: RevocationMetrics) -> None:
        """Serve the core's revocation counters and the stream's gauges (read at scrape)."""
        self.registry.register(_RevocationCollector(revocations))

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def record(self, method: str, code: str, seconds: float) -> None:
        name = method[len(_REMIT) :] if method.startswith(_REMIT) else method.lstrip("/")
        self.rpcs.labels(name, code).inc()
        self.latency.labels(name, code).observe(seconds)
        if method.startswith(_REMIT):
            if code == "OK" and name in _MINTING:
                self.minted.labels(name).inc()
            elif code == "OK" and name == "Revoke":
                self.revocations.inc()
            elif code == "UNAVAILABLE":
                self.redis_errors.labels("rpc").inc()

    def interceptor(self) -> grpc.ServerInterceptor:
        return _Interceptor(self)


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()  # set by abort() / set_code(); None when the handler returned
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if failed else "OK"


class _Interceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        # Unknown methods (no handler) are not recorded: their names are the caller's.
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        behavior = handler.unary_unary
        record = self._metrics.record

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                record(method, _code(context, failed), time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _RevocationCollector(Collector):
    def __init__(self, revocations: RevocationMetrics) -> None:
        self._revocations = revocations

    def collect(self) -> Any:
        snap = self._revocations.snapshot()
        kinds = CounterMetricFamily(
            "remit_revocation_requests", "Revocations by what was revoked", labels=["kind"]
        )
        for key, value in snap.items():
            if key.startswith("revocations_"):
                kinds.add_metric([key.removeprefix("revocations_")], value)
        yield kinds
        for name, key, text in (
            ("remit_revocation_grants_cut", "grants_cut", "Grants given an issued-before cutoff"),
            ("remit_revocation_stream_written", "stream_entries_written", "Stream entries written"),
            ("remit_revocation_stream_failures", "stream_write_failures", "Stream writes failed"),
        ):
            yield CounterMetricFamily(name, text, value=snap[key])
        try:
            stream = self._revocations.stream()
        except StoreDown:
            return  # no value is better than a stale one
        yield GaugeMetricFamily(
            "remit_revocation_stream_entries", "Entries in the revocation stream",
            value=stream.entries,
        )
        yield GaugeMetricFamily(
            "remit_revocation_stream_newest_age_seconds",
            "Age of the newest revocation stream entry (Redis clock)",
            value=stream.newest_age_ms / 1000,
        )
