"""How a remit HTTP call carries its token, proof and arguments: one rule for both ends.

The agent side (:mod:`remit.integrations.http`) signs a proof over the call's
arguments; the tool backend (:mod:`remit.integrations.asgi`) checks the token against
the arguments it will hand to the endpoint. Both must derive *the same* arguments from
the same request bytes, so the rule lives here, once:

- ``POST``, ``PUT``, ``PATCH``: the arguments are the JSON body, which must be an object
  (strict JSON: no duplicate keys, no ``NaN``); an empty body is ``{}``. A query string
  is refused, and so is a body whose ``Content-Type`` is set but is not JSON: the
  endpoint would read arguments the check never saw.
- Every other method: the arguments are the query parameters, each value a string, a
  repeated name a list of strings in order. A body is refused.

Anything else raises ``ValueError`` (the agent side raises it before sending; the
backend answers ``invalid_request``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from .._encoding import strict_json_loads

__all__ = [
    "AUTH_SCHEME",
    "BODY_METHODS",
    "MAX_BODY_BYTES",
    "MAX_QUERY_FIELDS",
    "MediaTypeError",
    "body_args",
    "call_args",
    "is_json_content_type",
    "query_args",
]

AUTH_SCHEME = "Remit"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_BODY_BYTES = 1 << 20
MAX_QUERY_FIELDS = 1000


class MediaTypeError(ValueError):
    """The body is declared as something other than JSON (HTTP 415 on the backend)."""


def is_json_content_type(value: str) -> bool:
    """``application/json`` or ``application/<anything>+json`` (parameters ignored)."""
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def body_args(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body`` (empty body: ``{}``)."""
    if not body:
        return {}
    value = strict_json_loads(body)
    if not isinstance(value, dict):
        raise ValueError(f"the JSON body must be an object, not {type(value).__name__}")
    return value


def query_args(query: bytes | str) -> dict[str, Any]:
    """Query parameters as arguments: ``a=1&b=2&b=3`` is ``{"a": "1", "b": ["2", "3"]}``.

    ``query`` is the raw (percent-encoded, ASCII) query string, without ``?``.
    """
    if isinstance(query, bytes | bytearray):
        query = bytes(query).decode("ascii")  # UnicodeDecodeError is a ValueError
    elif not query.isascii():
        raise ValueError("the query string is not percent-encoded ASCII")
    out: dict[str, Any] = {}
    pairs = parse_qsl(
        query, keep_blank_values=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS
    )
    for name, value in pairs:
        seen = out.get(name)
        if seen is None:
            out[name] = value
        elif isinstance(seen, list):
            seen.append(value)
        else:
            out[name] = [seen, value]
    return out


def call_args(
    method: str, body: bytes, query: bytes | str, content_type: str | None
) -> dict[str, Any]:
    """The arguments of an HTTP call, by the rule in this module's docstring."""
    if method.upper() in BODY_METHODS:
        if query:
            raise ValueError(
                f"a {method.upper()} call carries its arguments in the JSON body;"
                " query parameters are not allowed"
            )
        if body and content_type is not None and not is_json_content_type(content_type):
            raise MediaTypeError(f"the body must be JSON, not {content_type[:80]!r}")
        return body_args(body)
    if body:
        raise ValueError(
            f"a {method.upper()} call carries its arguments in the query string;"
            " a body is not allowed"
        )
    return query_args(query)
