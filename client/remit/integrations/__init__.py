"""Transport adapters: carry remit tokens on calls, and enforce them in tool backends.

Each adapter is its own module and needs its own optional dependency; none is imported
by ``import remit`` or by this package, so the verify path stays lean.

- :mod:`remit.integrations.http` — agent side of HTTP: ``HttpxAuth`` (``httpx``) and
  ``RequestsAuth`` (``requests``) add ``Authorization: Remit <token>`` and a per-request
  ``Remit-Proof``. Extra: ``remit[http]``.
- :mod:`remit.integrations.asgi` — tool-backend side of HTTP: ``RemitMiddleware``, pure
  ASGI (Starlette, FastAPI, any ASGI app), checks each request against a route → action
  table before the app runs, fail closed. Extra: ``remit[asgi]``.
- :mod:`remit.integrations.grpc` — both sides of gRPC: a client interceptor that carries
  token and proof, a server interceptor that checks every call. Extra: ``remit[grpc]``.
- :mod:`remit.integrations.mcp` — both sides of MCP ``tools/call``: token and proof in
  the request's ``_meta``, checked before the tool runs. Extra: ``remit[mcp]``.

Over HTTP, both ends derive a call's arguments from the request by one rule
(:mod:`remit.integrations._wire`): the JSON object body of ``POST``/``PUT``/``PATCH``,
the query parameters of other methods.
"""

__all__: list[str] = []
