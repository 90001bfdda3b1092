"""Issuer signing keys on disk, with rotation built in.

One Ed25519 key per file pair in ``keys_dir``: ``<kid>.pem`` (PKCS#8, created 0600)
and ``<kid>.json`` (``{"kid", "created_at", "activates_at"}``). ``kid`` is the RFC 7638
thumbprint.

Rotation never breaks a live token, at either end:
- a new key can be *published before it signs* (``activate_in``): it is in the JWKS from
  its creation, so every verifier and every cache has it before the first token it
  signs arrives;
- the newest active key signs; an older key stays published until every token it could
  have signed has expired (its successor's activation + max token TTL + margin).
Several service replicas may share the directory: :meth:`KeyStore.current` reloads when
the directory changes.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from remit import PublicKey

__all__ = ["IssuerKey", "KeyStore", "KeyStoreError"]


class KeyStoreError(RuntimeError):
    """The keys directory is unusable (missing, unreadable, no key, bad file)."""


@dataclass(frozen=True)
class IssuerKey:
    kid: str
    created_at: float
    private: Ed25519PrivateKey
    public: PublicKey
    activates_at: float = 0.0  # signs from then on; published from created_at

    def active(self, now: float) -> bool:
        return self.activates_at <= now


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL + 0600 from the first byte: the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _order(key: IssuerKey) -> tuple[float, float, str]:
    return (key.activates_at, key.created_at, key.kid)


class KeyStore:
    """Load, generate and rotate issuer keys in one directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.RLock()  # ensure() calls generate() while holding it
        self._keys: list[IssuerKey] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    # -- writing ---------------------------------------------------------------------

    def generate(self, *, now: float | None = None, activate_in: float = 0.0) -> IssuerKey:
        """Create a new key (this is also "rotate"). It is published at once and becomes
        the signing key after ``activate_in`` seconds (0: at once)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        public = PublicKey(raw)
        created = time.time() if now is None else now
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(self.directory / f"{public.kid}.pem", pem)
        activates = created + max(0.0, activate_in)
        meta = json.dumps(
            {"kid": public.kid, "created_at": created, "activates_at": activates}
        ).encode()
        tmp = self.directory / f".{public.kid}.json.tmp"
        tmp.write_bytes(meta)
        tmp.replace(self.directory / f"{public.kid}.json")  # the key is live from here
        # Reload on the next read, even within the recheck interval: this instance must
        # sign with the key it just made, not with the one cached before.
        with self._lock:  # not between current()'s re-read and its bookkeeping
            self._stamp = None
            self._checked = float("-inf")
        return IssuerKey(
            kid=public.kid,
            created_at=created,
            private=private,
            public=public,
            activates_at=activates,
        )

    def ensure(self) -> IssuerKey:
        """The signing key, generating a first one if the directory has none."""
        with self._lock:
            keys = self._load()
            return keys[-1] if keys else self.generate()

    # -- reading ---------------------------------------------------------------------

    def _load(self) -> list[IssuerKey]:
        if not self.directory.is_dir():
            return []
        keys = []
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_bytes())
                kid, created = meta["kid"], float(meta["created_at"])
                activates = float(meta.get("activates_at", created))
                pem = (self.directory / f"{kid}.pem").read_bytes()
                private = serialization.load_pem_private_key(pem, password=None)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise KeyStoreError(f"unusable key file {meta_path}: {exc}") from exc
            if not isinstance(private, Ed25519PrivateKey):
                raise KeyStoreError(f"{meta_path}: not an Ed25519 key")
            raw = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            public = PublicKey(raw)
            if public.kid != kid:
                raise KeyStoreError(f"{meta_path}: kid does not match the key's thumbprint")
            keys.append(
                IssuerKey(
                    kid=kid,
                    created_at=created,
                    private=private,
                    public=public,
                    activates_at=activates,
                )
            )
        keys.sort(key=_order)
        return keys

    def keys(self) -> list[IssuerKey]:
        """All keys in activation order (reloaded from disk)."""
        with self._lock:
            self._keys = self._load()
            return list(self._keys)

    def current(self, *, recheck: float = 1.0) -> list[IssuerKey]:
        """Keys in activation order; re-reads the directory at most every ``recheck`` s
        and only when its listing changed (a rotation by another process)."""
        now = time.monotonic()
        if self._keys and now - self._checked < recheck:
            return self._keys
        with self._lock:
            try:
                st = self.directory.stat()
                stamp = (st.st_mtime_ns, st.st_ino)
            except OSError as exc:
                raise KeyStoreError(f"keys directory {self.directory}: {exc}") from exc
            if stamp != self._stamp or not self._keys:
                keys = self._load()
                if not keys:
                    raise KeyStoreError(f"no issuer key in {self.directory}")
                self._keys, self._stamp = keys, stamp
            self._checked = now
            return self._keys

    def signing_key(self, now: float | None = None) -> IssuerKey:
        """The newest active key (if none is active yet, the first to activate)."""
        keys = self.current()
        at = time.time() if now is None else now
        active = [k for k in keys if k.active(at)]
        return active[-1] if active else keys[0]

    def published(self, *, now: float, max_token_ttl: int, margin: int) -> list[IssuerKey]:
        """Keys that may sign or may still have live tokens: every key not yet active,
        the signing key, and each older key until its successor's activation + max
        token TTL + margin has passed."""
        keys = self.current()
        signing = self.signing_key(now)
        live = [k for k in keys if not k.active(now) or k is signing]
        for older, newer in itertools.pairwise(keys):
            if (
                older is not signing
                and newer.activates_at + max_token_ttl + margin > now
                and older.active(now)
            ):
                live.append(older)
        live.sort(key=_order)
        return live

    def jwks(
        self, *, now: float, max_token_ttl: int, margin: int
    ) -> dict[str, list[dict[str, str]]]:
        keys = self.published(now=now, max_token_ttl=max_token_ttl, margin=margin)
        return {"keys": [k.public.to_jwk() for k in reversed(keys)]}  # newest first
