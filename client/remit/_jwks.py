"""Load a JWKS from a dict, a file path or an http(s) URL into a :class:`KeySet`;
refetch one from its URL, rate limited (:class:`JwksRefresher`)."""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

from ._encoding import strict_json_loads
from ._errors import KeyLoadError
from ._keys import KeySet

__all__ = ["MAX_JWKS_BYTES", "JwksRefresher", "is_jwks_url", "load_jwks"]

MAX_JWKS_BYTES = 1024 * 1024


def _read_url(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            data: bytes = resp.read(MAX_JWKS_BYTES + 1)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers URLError/HTTPError and timeouts; HTTPException a garbled
        # response (bad status line, truncated body); ValueError a malformed URL.
        raise KeyLoadError(f"cannot fetch JWKS from {url}: {exc}") from exc
    return data


def is_jwks_url(text: str) -> bool:
    """True when ``text`` is an ``http(s)://`` URL rather than a file path."""
    return text.startswith(("http://", "https://"))


def load_jwks(
    source: Mapping[str, Any] | str | os.PathLike[str], *, timeout: float = 5.0
) -> KeySet:
    """``source`` is a JWKS mapping, a path to a JWKS file, or an ``http(s)://`` URL."""
    if isinstance(source, Mapping):
        return KeySet.from_jwks(source)
    text = os.fspath(source)
    if is_jwks_url(text):
        data = _read_url(text, timeout)
    else:
        try:
            with open(text, "rb") as fh:
                data = fh.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise KeyLoadError(f"cannot read JWKS file {text}: {exc}") from exc
    if len(data) > MAX_JWKS_BYTES:
        raise KeyLoadError("JWKS larger than 1 MiB")
    try:
        doc = strict_json_loads(data)
    except ValueError as exc:
        raise KeyLoadError(f"JWKS is not valid JSON: {exc}") from exc
    return KeySet.from_jwks(doc)


class JwksRefresher:
    """Refetch the JWKS at ``url`` on demand: rate limited, one fetch at a time.

    :meth:`refresh` fetches only when the previous refresh started ``interval``
    seconds ago or more (by ``now``, the caller's clock; a clock that went backwards
    also allows one), so a flood of calls costs at most one fetch per interval. The
    first refresh is allowed at once: the load that built ``keys`` does not count.
    While one thread fetches, the others wait for it up to ``timeout`` and take its
    result; none starts a second fetch. A failed fetch (network, HTTP status, bad
    JSON, bad key) keeps the current keys and still counts against the rate limit.
    ``timeout`` also bounds each socket operation of the fetch.
    """

    def __init__(self, url: str, keys: KeySet, *, interval: float, timeout: float) -> None:
        self.url = url
        self.keys = keys
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._last: float | None = None  # when the last refresh started

    def refresh(self, now: float) -> KeySet:
        """The keys after at most one refetch (the current ones when rate limited)."""
        if self._lock.acquire(blocking=False):
            try:
                last = self._last
                if last is None or now < last or now - last >= self.interval:
                    self._last = now
                    with contextlib.suppress(KeyLoadError):  # a failure keeps the old keys
                        self.keys = load_jwks(self.url, timeout=self.timeout)
            finally:
                self._lock.release()
        elif self._lock.acquire(timeout=self.timeout):  # another thread is fetching
            self._lock.release()
        return self.keys
