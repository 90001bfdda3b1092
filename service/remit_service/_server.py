"""Run the service: gRPC (Remit, health, reflection) and HTTP in one process."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from remit._redis import connect
from remit._redis_keys import RedisKeys
from remit.v1 import remit_pb2

from ._audit import ServiceAudit
from ._config import Config
from ._core import Core
from ._errors import StoreDown
from ._http import HttpServer
from ._introspect import Introspector
from ._keystore import KeyStore
from ._metrics import ServiceMetrics
from ._servicer import RemitServicer, add_to_server
from ._store import GrantStore
from ._tls import CertApps, server_credentials

__all__ = ["Server"]

MAX_MESSAGE = 1024 * 1024
EPOCH_CHECK_INTERVAL = 1.0  # seconds
TRIM_EVERY = 60  # epoch checks between two trims of the revocation stream
log = logging.getLogger("remit.service")
SERVICE_NAME = "remit.v1.Remit"


class Server:
    """The remit service. ``start()`` binds both ports (0 = pick a free one)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        tls = server_credentials(config)  # None: plaintext; read before anything is opened
        self.keystore = KeyStore(config.keys_dir)
        self.keystore.current()  # fail at start, not at the first mint, if keys are unusable
        self._redis = connect(config.redis, timeout=2.0)
        self.core = Core(
            config,
            self.keystore,
            GrantStore(self._redis, RedisKeys(config.prefix)),
            audit=ServiceAudit(self._redis, config.prefix),
        )
        self.metrics = ServiceMetrics()  # served at /metrics on the HTTP port
        self.metrics.watch_revocations(self.core.revocation_metrics)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="remit-rpc"),
            interceptors=[self.metrics.interceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        self.introspector = Introspector(config, self.keystore, self._redis)
        cert_apps = CertApps(config.apps) if config.tls_client_ca is not None else None
        add_to_server(
            RemitServicer(self.core, introspector=self.introspector, cert_apps=cert_apps),
            self._grpc,
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            (
                remit_pb2.DESCRIPTOR.services_by_name["Remit"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            self._grpc,
        )
        address = f"{config.host}:{config.grpc_port}"
        self.grpc_port = (
            self._grpc.add_secure_port(address, tls)
            if tls is not None
            else self._grpc.add_insecure_port(address)
        )
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC port {config.host}:{config.grpc_port}")
        self._http = HttpServer(self.core, config.host, config.http_port, metrics=self.metrics)
        self.http_port = self._http.port
        self._stopped = threading.Event()
        self._epoch_thread = threading.Thread(
            target=self._keep_epoch, name="remit-epoch", daemon=True
        )

    @property
    def grpc_target(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    def _keep_epoch(self) -> None:
        # Notices within a second that Redis lost its data, and starts a new epoch so
        # verifiers refuse every token issued before (their revocations may be gone).
        ticks = 0
        while not self._stopped.is_set():
            try:
                self.core.keep_epoch()
                if ticks % TRIM_EVERY == 0:
                    self.core.trim_revocations()
                ticks += 1
            except StoreDown:
                # Redis down: verifiers fail closed meanwhile; retry next second
                self.metrics.redis_errors.labels("epoch").inc()
            except Exception:
                log.exception("keeping the revocation epoch failed")
            self._stopped.wait(EPOCH_CHECK_INTERVAL)

    def start(self) -> Server:
        self._epoch_thread.start()
        self._grpc.start()
        self._http.start()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking new RPCs, let in-flight ones finish (up to ``grace`` s), close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        if self._epoch_thread.is_alive():
            self._epoch_thread.join(timeout=2)
        self._grpc.stop(grace).wait()
        self._http.stop()
        self.introspector.close()
        self._redis.close()

    def wait(self) -> None:
        self._grpc.wait_for_termination()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
