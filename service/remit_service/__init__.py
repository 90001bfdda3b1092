"""remit_service: the remit gRPC service (grants, minting, revocation, keys) and CLI."""

from __future__ import annotations

from ._config import ActionPolicy, AppPolicy, Config, ConfigError, dev_config, load_config
from ._core import Core, MintResult
from ._errors import (
    AuthFailed,
    BadRequest,
    Inactive,
    Missing,
    PolicyDenied,
    ServiceFault,
    StoreDown,
)
from ._keystore import IssuerKey, KeyStore, KeyStoreError
from ._server import Server

__all__ = [
    "ActionPolicy",
    "AppPolicy",
    "AuthFailed",
    "BadRequest",
    "Config",
    "ConfigError",
    "Core",
    "Inactive",
    "IssuerKey",
    "KeyStore",
    "KeyStoreError",
    "MintResult",
    "Missing",
    "PolicyDenied",
    "Server",
    "ServiceFault",
    "StoreDown",
    "dev_config",
    "load_config",
]
