"""TLS for the gRPC listener, and apps authenticated by client certificate (mTLS).

With ``tls_client_ca`` the listener *requires* a client certificate signed by that CA:
grpcio's server credentials can either require and verify one or not ask at all (there
is no "verify if offered"), so every client (apps, agents calling Exchange, probes)
needs one. An app is then identified by its certificate when the certificate matches
one of the app's ``client_certs``: ``uri:`` / ``dns:`` (a subjectAltName entry) or
``sha256:`` (the DER certificate's fingerprint). A certificate no app names is only a
transport credential: such a caller still needs an API key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ._config import AppPolicy, Config, ConfigError
from ._errors import AuthFailed

__all__ = ["CertApps", "cert_identities", "server_credentials", "with_tls"]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc}") from None


def with_tls(
    config: Config, *, cert: Path | None, key: Path | None, client_ca: Path | None
) -> Config:
    """``config`` with the given TLS files in place of its own (``remit serve --tls-*``)."""
    cert = cert or config.tls_cert
    key = key or config.tls_key
    client_ca = client_ca or config.tls_client_ca
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key: give both or neither")
    if client_ca is not None and cert is None:
        raise ConfigError("--tls-client-ca: needs --tls-cert and --tls-key")
    return dataclasses.replace(config, tls_cert=cert, tls_key=key, tls_client_ca=client_ca)


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """The listener's credentials, or None for plaintext (no ``tls_cert``)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert = _read(config.tls_cert, "server.tls_cert")
    key = _read(config.tls_key, "server.tls_key")
    for blob, what in ((cert, "server.tls_cert"), (key, "server.tls_key")):
        if b"-----BEGIN" not in blob:
            raise ConfigError(f"{what}: not a PEM file")
    if config.tls_client_ca is None:
        return grpc.ssl_server_credentials([(key, cert)])
    ca = _read(config.tls_client_ca, "server.tls_client_ca")
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError as exc:
        raise ConfigError(f"server.tls_client_ca: not PEM certificates: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def cert_identities(auth: Mapping[str, Sequence[bytes]]) -> frozenset[str]:
    """Identities of the peer's verified leaf certificate, from a gRPC auth context:
    ``uri:…`` and ``dns:…`` for its subjectAltNames, ``sha256:…`` for the certificate."""
    if auth.get("transport_security_type") != [b"ssl"]:
        return frozenset()
    pems = auth.get("x509_pem_cert") or []
    if len(pems) != 1:
        return frozenset()
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return frozenset()
    der = cert.public_bytes(Encoding.DER)
    out = {"sha256:" + hashlib.sha256(der).hexdigest()}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(out)
    out.update("uri:" + u for u in san.get_values_for_type(x509.UniformResourceIdentifier))
    out.update("dns:" + d for d in san.get_values_for_type(x509.DNSName))
    return frozenset(out)


class CertApps:
    """Which app a verified client certificate belongs to (config ``client_certs``)."""

    def __init__(self, apps: Sequence[AppPolicy]) -> None:
        self._by_id = {cert: app for app in apps for cert in app.client_certs}

    def app(self, auth: Mapping[str, Sequence[bytes]]) -> AppPolicy | None:
        """The app the peer's certificate names, None if it names none. A certificate
        naming two apps (say one by URI, another by fingerprint) authenticates neither."""
        if not self._by_id:
            return None
        found = {self._by_id[i].name: self._by_id[i] for i in cert_identities(auth)
                 if i in self._by_id}
        if len(found) > 1:
            raise AuthFailed(f"the client certificate names several apps: {sorted(found)}")
        return next(iter(found.values()), None)
