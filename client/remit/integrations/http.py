"""Agent side of an HTTP tool call: carry the token and a fresh proof on every request.

::

    from remit.integrations.http import HttpxAuth, RequestsAuth

    auth = HttpxAuth(key, token, audience="payments", action="payments.transfer")
    httpx.post("https://payments.internal/transfer", json={"amount": 50}, auth=auth)

    requests.post(url, json=body, auth=RequestsAuth(key, token, audience="payments",
                                                    action=lambda req: "payments.transfer"))

Each request gets ``Authorization: Remit <token>`` and, when ``key`` is given (the
token is bound to it), a ``Remit-Proof`` signed over this request's arguments: the
JSON body of ``POST``/``PUT``/``PATCH`` (an object; empty body: ``{}``), the query
parameters of other methods, exactly as :mod:`remit.integrations.asgi` reads them
(the rule: :mod:`remit.integrations._wire`). A request whose arguments the backend
could not read the same way (a non-JSON body, a query string on a ``POST``, a body
on a ``GET``, a streamed body for ``requests``) raises ``ValueError`` before anything
is sent. ``action`` is a string or a callable ``(request) -> str`` to name the action
per request. A proof is single-use: a retried request is signed again by the auth
flow, but a resent copy of the same headers is refused as ``replayed``.

Importing this module imports neither client library: ``HttpxAuth`` needs ``httpx``,
``RequestsAuth`` needs ``requests`` (extra ``remit[http]``), each loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._httpx import HttpxAuth
    from ._requests import RequestsAuth

__all__ = ["HttpxAuth", "RequestsAuth"]


def __getattr__(name: str) -> Any:
    if name == "HttpxAuth":
        from ._httpx import HttpxAuth

        return HttpxAuth
    if name == "RequestsAuth":
        from ._requests import RequestsAuth

        return RequestsAuth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
