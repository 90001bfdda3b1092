"""Service configuration: TOML file, or a generated dev configuration.

Example::

    issuer = "https://remit.example.com"
    keys_dir = "keys"                       # relative to this file
    redis = "redis://127.0.0.1:6379/0"     # rediss://, unix://, redis+cluster://h:p,h:p,
                                            # or a list of cluster node URLs
    prefix = "remit:"
    default_token_ttl = 300
    max_token_ttl = 3600                    # policy maximum; verifiers use the same
    revocation_margin = 60                  # revocation keys outlive tokens by this much

    [server]
    host = "127.0.0.1"
    grpc_port = 50051
    http_port = 8080
    workers = 8
    tls_cert = "server.pem"                 # optional: gRPC over TLS (with tls_key)
    tls_key = "server.key"
    tls_client_ca = "clients-ca.pem"        # optional: mTLS, see _tls.py

    [apps.bank]
    api_key_sha256 = "<hex SHA-256 of the API key>"   # optional with client_certs
    client_certs = ["uri:spiffe://example.com/app/bank"]   # needs tls_client_ca
    actions = ["payments.transfer", "email.*"]   # "*" = every action
    audiences = ["payments", "email"]            # "*" = every audience
    max_token_ttl = 900
    max_grant_ttl = 86400

    catalog = "open"                        # or "closed": only catalogued actions

    [actions."payments.transfer"]           # the action catalog: see _catalog.py
    max_ttl = 300
    risk = "high"
    single_use = true
    consent = "Send money ({args})"
    [actions."payments.transfer".args]
    amount = { type = "number", constraint = { le = 1000 } }

Unknown keys are errors: a typo in a security policy must not pass silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remit._redis import RedisTarget, check_address
from remit._redis_keys import DEFAULT_PREFIX

from ._catalog import ActionPolicy, parse_action

__all__ = ["ActionPolicy", "AppPolicy", "Config", "ConfigError", "dev_config", "load_config"]

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class AppPolicy:
    name: str
    api_key_sha256: str
    actions: tuple[str, ...]
    audiences: tuple[str, ...]
    max_token_ttl: int
    max_grant_ttl: int
    # Client-certificate identities that authenticate this app over mTLS (see _tls.py):
    # "uri:<SAN URI>", "dns:<SAN DNS name>" or "sha256:<hex of the DER certificate>".
    client_certs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    issuer: str
    keys_dir: Path
    redis: RedisTarget  # a URL, or a tuple of cluster node URLs (remit._redis.connect)
    prefix: str = DEFAULT_PREFIX
    default_token_ttl: int = 300
    max_token_ttl: int = 3600
    revocation_margin: int = 60
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    workers: int = 8
    apps: tuple[AppPolicy, ...] = ()
    actions: dict[str, ActionPolicy] = field(default_factory=dict)
    dev: bool = False
    # A closed catalog grants only actions with an exact [actions.NAME] entry.
    catalog_closed: bool = False
    # TLS for the gRPC listener (PEM files); with a client CA every client must present
    # a certificate it signed (mTLS), and apps may be identified by it (client_certs).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None


def _take(table: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    if key not in table:
        if default is None:
            raise ConfigError(f"{where}{key}: required")
        return default
    value = table[key]
    if kind is int and (type(value) is not int or value <= 0):
        raise ConfigError(f"{where}{key}: must be a positive integer")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{where}{key}: must be a {kind.__name__}")
    return value


def _no_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}unknown keys {sorted(unknown)}")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a non-empty list of strings")
    return tuple(value)


def _redis_address(value: Any) -> RedisTarget:
    """A URL or a list of cluster node URLs, checked now (the message masks passwords)."""
    address: RedisTarget = tuple(value) if isinstance(value, list) else value
    if not isinstance(value, str | list):
        raise ConfigError("redis: must be a URL or a list of cluster node URLs")
    try:
        check_address(address)
    except ValueError as exc:
        raise ConfigError(f"redis: {exc}") from None
    return address


def _parse(data: dict[str, Any], base: Path) -> Config:
    _no_unknown(
        data,
        {
            "issuer",
            "keys_dir",
            "redis",
            "prefix",
            "default_token_ttl",
            "max_token_ttl",
            "revocation_margin",
            "server",
            "apps",
            "actions",
            "catalog",
        },
        "",
    )
    catalog = data.get("catalog", "open")
    if catalog not in ("open", "closed"):
        raise ConfigError('catalog: "open" or "closed"')
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError("server: must be a table")
    _no_unknown(
        server,
        {"host", "grpc_port", "http_port", "workers", "tls_cert", "tls_key", "tls_client_ca"},
        "server.",
    )
    max_token_ttl = _take(data, "max_token_ttl", int, "", 3600)
    apps = []
    raw_apps = data.get("apps", {})
    if not isinstance(raw_apps, dict) or not raw_apps:
        raise ConfigError("apps: at least one [apps.NAME] table is required")
    for name, table in raw_apps.items():
        where = f"apps.{name}."
        if not _NAME.match(name) or not isinstance(table, dict):
            raise ConfigError(f"apps.{name}: bad app name or not a table")
        _no_unknown(
            table,
            {"api_key_sha256", "actions", "audiences", "max_token_ttl", "max_grant_ttl",
             "client_certs"},
            where,
        )
        certs = _client_certs(table, where)
        digest = ""  # no API key: the app authenticates by client certificate only
        if "api_key_sha256" in table or not certs:
            digest = _take(table, "api_key_sha256", str, where).lower()
            if not _HEX64.match(digest):
                raise ConfigError(f"{where}api_key_sha256: must be 64 hex characters")
        apps.append(
            AppPolicy(
                name=name,
                api_key_sha256=digest,
                actions=_strings(table.get("actions"), f"{where}actions"),
                audiences=_strings(table.get("audiences"), f"{where}audiences"),
                max_token_ttl=min(_take(table, "max_token_ttl", int, where, 900), max_token_ttl),
                max_grant_ttl=_take(table, "max_grant_ttl", int, where, 86400),
                client_certs=certs,
            )
        )
    tls = _tls_paths(server, base)
    _check_client_certs(apps, tls_client_ca=tls[2] is not None)
    actions = {}
    raw_actions = data.get("actions", {})
    if not isinstance(raw_actions, dict):
        raise ConfigError("actions: must be a table")
    for name, table in raw_actions.items():
        try:
            actions[name] = parse_action(name, table, max_token_ttl)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    keys_dir = Path(_take(data, "keys_dir", str, ""))
    return Config(
        issuer=_take(data, "issuer", str, ""),
        keys_dir=keys_dir if keys_dir.is_absolute() else base / keys_dir,
        redis=_redis_address(data.get("redis", "redis://127.0.0.1:6379/0")),
        prefix=_take(data, "prefix", str, "", DEFAULT_PREFIX),
        default_token_ttl=min(_take(data, "default_token_ttl", int, "", 300), max_token_ttl),
        max_token_ttl=max_token_ttl,
        revocation_margin=_take(data, "revocation_margin", int, "", 60),
        host=_take(server, "host", str, "server.", "127.0.0.1"),
        grpc_port=_take(server, "grpc_port", int, "server.", 50051),
        http_port=_take(server, "http_port", int, "server.", 8080),
        workers=_take(server, "workers", int, "server.", 8),
        apps=tuple(apps),
        actions=actions,
        catalog_closed=catalog == "closed",
        tls_cert=tls[0],
        tls_key=tls[1],
        tls_client_ca=tls[2],
    )


# -- TLS and client certificates (mTLS) ----------------------------------------------

_CERT_ID = re.compile(r"(uri|dns):[\x21-\x7e]{1,512}\Z|sha256:[0-9a-f]{64}\Z")


def _client_certs(table: dict[str, Any], where: str) -> tuple[str, ...]:
    if "client_certs" not in table:
        return ()
    out = []
    for given in _strings(table["client_certs"], f"{where}client_certs"):
        kind, _, value = given.partition(":")
        # accept the usual "AB:CD:…" spelling of a fingerprint
        entry = "sha256:" + value.replace(":", "").lower() if kind == "sha256" else given
        if not _CERT_ID.match(entry):
            raise ConfigError(
                f"{where}client_certs: {entry[:80]!r} is not uri:<SAN URI>, dns:<SAN DNS name> "
                "or sha256:<64 hex, the DER certificate's SHA-256>"
            )
        out.append(entry)
    return tuple(out)


def _check_client_certs(apps: list[AppPolicy], *, tls_client_ca: bool) -> None:
    owner: dict[str, str] = {}
    for app in apps:
        if app.client_certs and not tls_client_ca:
            raise ConfigError(
                f"apps.{app.name}.client_certs: needs server.tls_client_ca (mTLS), else no "
                "client certificate is ever verified"
            )
        for cert in app.client_certs:
            if cert in owner:
                raise ConfigError(
                    f"apps.{app.name}.client_certs: {cert!r} also names app {owner[cert]!r}"
                )
            owner[cert] = app.name


def _tls_paths(server: dict[str, Any], base: Path) -> tuple[Path | None, Path | None, Path | None]:
    def path(key: str) -> Path | None:
        if key not in server:
            return None
        p = Path(_take(server, key, str, "server."))
        return p if p.is_absolute() else base / p

    cert, key, ca = path("tls_cert"), path("tls_key"), path("tls_client_ca")
    if (cert is None) != (key is None):
        raise ConfigError("server.tls_cert and server.tls_key: give both or neither")
    if ca is not None and cert is None:
        raise ConfigError("server.tls_client_ca: needs server.tls_cert and server.tls_key")
    return cert, key, ca


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file; raises :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return _parse(data, p.parent)


def dev_config(
    *,
    data_dir: Path,
    redis: str,
    api_key: str,
    grpc_port: int = 50051,
    http_port: int = 8080,
    issuer: str = "remit-dev",
    prefix: str = DEFAULT_PREFIX,
) -> Config:
    """Open policy for local development: one app ``dev``, every action and audience."""
    app = AppPolicy(
        name="dev",
        api_key_sha256=hashlib.sha256(api_key.encode()).hexdigest(),
        actions=("*",),
        audiences=("*",),
        max_token_ttl=3600,
        max_grant_ttl=7 * 86400,
    )
    return Config(
        issuer=issuer,
        keys_dir=data_dir / "keys",
        redis=redis,
        prefix=prefix,
        grpc_port=grpc_port,
        http_port=http_port,
        apps=(app,),
        dev=True,
    )
