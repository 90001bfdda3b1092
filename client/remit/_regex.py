"""The ``regex`` operator: RE2 syntax and semantics (google-re2), full match.

RE2 runs in time linear in the input whatever the pattern (no backtracking), so a
grant cannot smuggle in a catastrophic pattern. Patterns are at most 1024 characters
and must compile when the capability is validated; values longer than 4096 characters
are denied without running the automaton. Matching goes through a one-pattern
``re2.Set`` in full-match mode: it answers yes/no without building a match object,
about 5x cheaper per call than ``re2.fullmatch``. If RE2's DFA runs out of its memory
budget on a pathological pattern the set reports no match: the check fails closed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import re2

from ._operand import OperandError

__all__ = ["MAX_PATTERN", "MAX_REGEX_VALUE", "compile_regex"]

MAX_PATTERN = 1024
MAX_REGEX_VALUE = 4096


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is reported to the caller, not to stderr
    options.never_capture = True
    return options


@functools.lru_cache(maxsize=512)
def compile_regex(pattern: str) -> Callable[[object], bool]:
    """A predicate for ``pattern``: True iff the value is a str it fully matches.

    Raises :class:`OperandError` when the pattern is too long or not valid RE2.
    Cached by pattern, so the same grant re-verified in many tokens compiles once.
    """
    if len(pattern) > MAX_PATTERN:
        raise OperandError(f"pattern longer than {MAX_PATTERN} characters")
    options = _options()
    try:
        re2.compile(pattern, options)  # for its error message; the Set says only "failed"
        matcher = re2.Set.FullMatchSet(options)
        matcher.Add(pattern)
        matcher.Compile()
    except (re2.error, UnicodeEncodeError) as exc:
        raise OperandError(f"not a valid RE2 pattern: {_reason(exc)}") from None
    match = matcher.Match

    def holds(v: object) -> bool:
        if type(v) is not str or len(v) > MAX_REGEX_VALUE:
            return False
        try:
            text = v.encode()  # bytes: the set skips its own str handling
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 text can match it
            return False
        return bool(match(text))  # the indices of the matching patterns: [0] or None

    return holds


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return "contains a lone surrogate"
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail)[:200]
