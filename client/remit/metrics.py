"""Prometheus metrics of a verifier, exposed from the tool backend's own process.

Needs ``pip install 'remit[metrics]'``; importing this module is what enables it
(``import remit`` never loads prometheus-client)::

    from remit import metrics

    metrics.instrument(verifier)          # decisions, latency, audit drops, feed lag
    metrics.start_http_server(9102)       # or: app.mount("/metrics", metrics.asgi_app())
"""

from __future__ import annotations

from ._metrics import (
    CHECK_BUCKETS,
    MAX_ACTIONS,
    VerifierMetrics,
    asgi_app,
    instrument,
    start_http_server,
)

__all__ = [
    "CHECK_BUCKETS",
    "MAX_ACTIONS",
    "VerifierMetrics",
    "asgi_app",
    "instrument",
    "start_http_server",
]
