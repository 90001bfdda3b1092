"""What :class:`HttpxAuth` and :class:`RequestsAuth` share: headers for one request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ..agent import AgentKey, http_headers
from ._wire import call_args

__all__ = ["CallSigner"]

R = TypeVar("R")


class CallSigner(Generic[R]):
    """Token, key and audience of an agent; ``headers`` signs one request of type ``R``."""

    __slots__ = ("_action", "_audience", "_key", "_token")

    def __init__(
        self,
        key: AgentKey | None,
        token: str,
        *,
        audience: str,
        action: str | Callable[[R], str],
    ) -> None:
        if key is not None and not isinstance(key, AgentKey):
            raise TypeError("key must be a remit.agent.AgentKey or None")
        if not isinstance(token, str) or not token:
            raise TypeError("token must be a non-empty string")
        if not token.isascii() or any(c.isspace() for c in token):
            raise ValueError("token must be ASCII without whitespace")
        if not isinstance(audience, str) or not audience:
            raise TypeError("audience must be a non-empty string")
        if not (isinstance(action, str) and action) and not callable(action):
            raise TypeError("action must be a non-empty string or a callable(request) -> str")
        self._key = key
        self._token = token
        self._audience = audience
        self._action = action

    def headers(
        self,
        request: R,
        *,
        method: str,
        body: bytes,
        query: bytes | str,
        content_type: str | None,
    ) -> dict[str, str]:
        """``Authorization`` and (with a key) ``Remit-Proof`` for this request.

        Raises ``ValueError`` when the backend could not read the request's arguments.
        """
        args = call_args(method, body, query, content_type)
        action = self._action if isinstance(self._action, str) else self._action(request)
        if not isinstance(action, str) or not action:
            raise TypeError(f"the action callable returned {action!r}, not a non-empty string")
        return http_headers(self._key, self._token, audience=self._audience,
                            action=action, args=args)

    def __repr__(self) -> str:  # never print the token
        return (f"{type(self).__name__}(audience={self._audience!r}, "
                f"bound={self._key is not None})")
