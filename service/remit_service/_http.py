"""The service's small HTTP side: ``/.well-known/jwks.json``, ``/healthz``, ``/metrics``.

Standard library only (``http.server``): two read-only JSON endpoints do not
justify a web framework in the service's dependencies.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._core import Core
from ._metrics import ServiceMetrics

__all__ = ["HttpServer"]


class _Handler(BaseHTTPRequestHandler):
    server_version = "remit"
    sys_version = ""
    core: Core  # set on the subclass made per server
    metrics: ServiceMetrics | None = None

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/.well-known/jwks.json":
            self._json(200, self.core.jwks(), cache="public, max-age=60")
        elif path == "/metrics" and self.metrics is not None:
            body, content_type = self.metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        elif path == "/healthz":
            health = self.core.health()
            self._json(200 if health["status"] == "ok" else 503, health)
        else:
            self._json(404, {"error": "not found"})

    def _json(self, status: int, body: dict[str, Any], cache: str = "no-store") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: access logs are not this service's job


class HttpServer:
    def __init__(
        self, core: Core, host: str, port: int, *, metrics: ServiceMetrics | None = None
    ) -> None:
        handler = type("Handler", (_Handler,), {"core": core, "metrics": metrics})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # a prompt stop(); the default is 0.5 s
            name="remit-http",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
