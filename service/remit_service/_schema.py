"""Grant-time check of capabilities against the JSON Schema shipped with ``remit``.

The schema (``remit/schema/capability.schema.json``, draft 2020-12) is the published,
language-neutral shape of the scope language; other issuers and UIs validate against
the same file. The service applies it at grant creation *after* the semantic checks
of ``remit._constraints`` (which give the precise path and message, and bound depth
and size before the schema walks anything), as a second, independent gate: a
capability must satisfy both. ``jsonschema`` is a server-side dependency only; the
verify path never imports this module.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ._errors import BadRequest

__all__ = ["check_capabilities", "schema", "schema_errors"]


@functools.cache
def schema() -> dict[str, Any]:
    """The capability schema, as shipped in the ``remit`` package."""
    text = resources.files("remit").joinpath("schema/capability.schema.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    Draft202012Validator.check_schema(doc)
    return doc


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _path(prefix: str, parts: Iterable[Any]) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def schema_errors(capability: Any, path: str = "") -> tuple[str, str] | None:
    """(path of the offending node, message) of the most relevant error, or None."""
    error = best_match(_validator().iter_errors(capability))
    if error is None:
        return None
    return _path(path, error.absolute_path), error.message[:300]


def check_capabilities(capabilities: Sequence[Any], field: str) -> None:
    """Raise :class:`BadRequest` (INVALID_ARGUMENT) naming the first node the schema rejects."""
    for i, cap in enumerate(capabilities):
        found = schema_errors(cap, f"{field}[{i}]")
        if found is not None:
            where, message = found
            raise BadRequest(f"{where}: {message}", field=where)
