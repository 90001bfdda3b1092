"""The argument-constraint language: validation, compiled evaluation, JSON equality.

A capability is an action plus an ``args`` object: argument name -> constraint. A
constraint is a non-empty object of operator -> operand; every operator must hold.
The world is closed: an argument no constraint names is denied unless ``"*"``
gives a constraint for unnamed arguments (``{"any": true}`` to allow anything); an
argument a constraint names must be present unless the constraint has
``"optional": true``. Types are strict: ``"50"`` is not ``50``, ``true`` is not
``1``, and a value that is not JSON at any depth (NaN, an infinity, a tuple, bytes,
an ``int`` subclass, an object with a non-string key) never satisfies anything but
``any``.

Operators (v1): ``eq in not_in lt le gt ge max_len prefix glob any``; modifier
``optional``. ``glob`` knows ``*`` (any run), ``?`` (one character) and ``\\``
(escape) and nothing else, so that narrowing stays decidable.

Validation runs when a grant is created and when a token is first verified;
:func:`compile_capability` turns a validated capability into closures so a
warm check does no parsing at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ARGS",
    "MAX_CAPABILITIES",
    "OPERATORS",
    "Capability",
    "CompiledCapability",
    "ConstraintError",
    "action_matches",
    "compile_capability",
    "explain_failure",
    "glob_match",
    "is_json_value",
    "json_equal",
    "parse_capabilities",
    "parse_capability",
    "valid_call_action",
]

OPERATORS = frozenset(
    {"eq", "in", "not_in", "lt", "le", "gt", "ge", "max_len", "prefix", "glob", "any"}
)
MODIFIERS = frozenset({"optional"})
MAX_CAPABILITIES = 64
MAX_ARGS = 64
MAX_LIST = 1024  # elements of an `in` / `not_in` operand
MAX_STRING = 4096  # characters of a string operand
MAX_OPERAND_DEPTH = 16  # nesting of an `eq` / `in` operand value
MAX_NAME = 128

_ACTION = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")
_CAP_ACTION = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*(?:\.\*)?\Z")


class ConstraintError(ValueError):
    """A capability is malformed; ``path`` names the offending node (``args.amount.le``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Capability:
    """One validated capability: an action and its argument constraints (raw JSON)."""

    action: str
    args: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The token's ``authorization_details`` entry form (RFC 9396)."""
        return {"type": "remit.capability", "action": self.action, "args": dict(self.args)}


# --- JSON values -------------------------------------------------------------------


def _is_number(v: object) -> bool:
    t = type(v)
    return t is int or (t is float and math.isfinite(v))  # type: ignore[arg-type]


def _kind(v: object) -> str:
    t = type(v)
    if t is str:
        return "string"
    if t is int:
        return "number"
    if t is float:
        return "number" if math.isfinite(v) else "invalid"  # type: ignore[arg-type]
    if t is bool:
        return "bool"
    if v is None:
        return "null"
    if t is list:
        return "array"
    if t is dict:
        return "object"
    return "invalid"


def json_equal(a: object, b: object) -> bool:
    """Equality under JSON's data model with strict types (``True`` != ``1``).

    Recursion is bounded by the shallower side, so an operand of bounded depth
    keeps this safe against arbitrarily deep argument values.
    """
    ka = _kind(a)
    if ka != _kind(b) or ka == "invalid":
        return False
    if ka == "array":
        assert isinstance(a, list) and isinstance(b, list)
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ka == "object":
        assert isinstance(a, dict) and isinstance(b, dict)
        return (
            all(type(k) is str for k in a)  # first, so only str keys are ever compared
            and all(type(k) is str for k in b)
            and a.keys() == b.keys()
            and all(json_equal(a[k], b[k]) for k in a)
        )
    return a == b


def _is_json_tree(v: object) -> bool:
    """True if ``v`` is a finite JSON value at every depth (exact types, string keys).

    Iterative, so an arbitrarily deep argument cannot exhaust the stack. A cycle fails;
    a sub-tree shared by reference is fine (it is a tree once serialized, and a value
    JSON-equal to a valid operand must pass) and is checked once, so a chain of
    shared lists cannot make this exponential.
    """
    kind = _kind(v)
    if kind not in ("array", "object"):  # the common case: no allocation
        return kind != "invalid"
    done: dict[int, bool] = {}  # container id -> False while on the path, True once checked
    stack: list[tuple[object, bool]] = [(v, False)]
    while stack:
        x, leaving = stack.pop()
        if leaving:
            done[id(x)] = True
            continue
        kind = _kind(x)
        if kind == "invalid":
            return False
        if kind not in ("array", "object"):
            continue
        state = done.get(id(x))
        if state is True:
            continue
        if state is False:  # reached again from inside itself
            return False
        done[id(x)] = False
        stack.append((x, True))
        if kind == "array":
            assert isinstance(x, list)
            stack.extend((item, False) for item in x)
        else:
            assert isinstance(x, dict)
            if not all(type(k) is str for k in x):
                return False
            stack.extend((item, False) for item in x.values())
    return True


def is_json_value(v: object, depth: int = MAX_OPERAND_DEPTH) -> bool:
    """True for a finite JSON value (str keys only) nested at most ``depth`` deep."""
    kind = _kind(v)
    if kind == "invalid":
        return False
    if kind in ("array", "object"):
        if depth <= 0:
            return False
        if kind == "array":
            assert isinstance(v, list)
            return all(is_json_value(x, depth - 1) for x in v)
        assert isinstance(v, dict)
        return all(type(k) is str and is_json_value(x, depth - 1) for k, x in v.items())
    return True


# --- glob ----------------------------------------------------------------------------

# A glob compiles to (segments, anchored_start, anchored_end): the pattern split on
# '*', each segment a tuple of characters with None for '?'. Matching places the first
# segment at the start, the last at the end, and every middle one at its leftmost
# position, which is optimal for '*'-separated segments. A literal segment is found
# with str.find; one with '?' with a bit-parallel Shift-And scan (one big-int step
# per character), so matching is linear in len(value) whatever the pattern: no
# backtracking blow-up, no regex engine.

_Segment = tuple[str | None, ...]


def _glob_parse(pattern: str) -> list[_Segment]:
    segments: list[_Segment] = []
    current: list[str | None] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 == len(pattern):
                raise ValueError("trailing backslash")
            current.append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            segments.append(tuple(current))
            current = []
        elif c == "?":
            current.append(None)
        else:
            current.append(c)
        i += 1
    segments.append(tuple(current))
    return segments


def _seg_at(seg: _Segment, value: str, pos: int) -> bool:
    if pos + len(seg) > len(value):
        return False
    return all(c is None or value[pos + j] == c for j, c in enumerate(seg))


def _seg_find(seg: _Segment, value: str, start: int, end: int) -> int:
    """Leftmost position ``>= start`` where ``seg`` fits inside ``value[:end]``, or -1."""
    if None not in seg:
        return value.find("".join(seg), start, end)  # type: ignore[arg-type]
    # Shift-And: bit j of `state` is set when seg[: j + 1] matches the text ending at i.
    # (Trying every position with _seg_at is O(len(value) * len(seg)) Python steps:
    # seconds for a 100 KB value against a long '?' segment.)
    wild = 0
    for j, c in enumerate(seg):
        if c is None:
            wild |= 1 << j
    masks: dict[str, int] = {}
    for j, c in enumerate(seg):
        if c is not None:
            masks[c] = masks.get(c, wild) | (1 << j)
    top = 1 << (len(seg) - 1)
    state = 0
    for i in range(start, end):
        state = ((state << 1) | 1) & masks.get(value[i], wild)
        if state & top:
            return i - len(seg) + 1
    return -1


def _glob_match_parsed(segments: list[_Segment], value: str) -> bool:
    if len(segments) == 1:
        return len(segments[0]) == len(value) and _seg_at(segments[0], value, 0)
    first, last = segments[0], segments[-1]
    if len(first) + len(last) > len(value):
        return False
    if not _seg_at(first, value, 0) or not _seg_at(last, value, len(value) - len(last)):
        return False
    pos, end = len(first), len(value) - len(last)
    for seg in segments[1:-1]:
        found = _seg_find(seg, value, pos, end)
        if found < 0:
            return False
        pos = found + len(seg)
    return True


def glob_match(pattern: str, value: str) -> bool:
    """Full match of ``value`` against a remit glob (``*``, ``?``, ``\\`` escape)."""
    return _glob_match_parsed(_glob_parse(pattern), value)


def glob_literal_prefix(pattern: str) -> tuple[str, bool]:
    """The literal text before the first wildcard, and whether the glob has none."""
    segments = _glob_parse(pattern)
    out: list[str] = []
    for c in segments[0]:
        if c is None:
            return "".join(out), False
        out.append(c)
    return "".join(out), len(segments) == 1


# --- validation ----------------------------------------------------------------------


def _check_operand(op: str, operand: Any, path: str) -> None:
    def fail(msg: str) -> ConstraintError:
        return ConstraintError(path, msg)

    if op in ("lt", "le", "gt", "ge"):
        if not _is_number(operand):
            raise fail("must be a finite number")
    elif op == "max_len":
        if type(operand) is not int or operand < 0:
            raise fail("must be a non-negative integer")
    elif op in ("prefix", "glob"):
        if type(operand) is not str:
            raise fail("must be a string")
        if len(operand) > MAX_STRING:
            raise fail(f"longer than {MAX_STRING} characters")
        if op == "glob":
            try:
                _glob_parse(operand)
            except ValueError as exc:
                raise fail(str(exc)) from None
    elif op in ("in", "not_in"):
        if type(operand) is not list:
            raise fail("must be a list")
        if len(operand) > MAX_LIST:
            raise fail(f"more than {MAX_LIST} elements")
        if op == "in" and not operand:
            raise fail("an empty list allows nothing; omit the argument instead")
        for i, item in enumerate(operand):
            if not is_json_value(item):
                raise ConstraintError(f"{path}[{i}]", "not a finite JSON value of bounded depth")
    elif op == "eq":
        if not is_json_value(operand):
            raise fail("not a finite JSON value of bounded depth")
    elif op in ("any", "optional") and operand is not True:
        raise fail("must be true")


def _check_constraint(constraint: Any, path: str, *, star: bool) -> None:
    if not isinstance(constraint, dict):
        raise ConstraintError(path, "a constraint is an object of operator -> operand")
    if not constraint:
        raise ConstraintError(path, 'an empty constraint would allow anything; say {"any": true}')
    for op, operand in constraint.items():
        if op not in OPERATORS and op not in MODIFIERS:
            raise ConstraintError(f"{path}.{op}", f"unknown operator {op!r}")
        if star and op == "optional":
            raise ConstraintError(f"{path}.{op}", 'unnamed arguments are always optional')
        _check_operand(op, operand, f"{path}.{op}")
    ops = set(constraint) - MODIFIERS
    if not ops:
        raise ConstraintError(path, "a constraint needs at least one operator")
    if "any" in ops and len(ops) > 1:
        raise ConstraintError(f"{path}.any", "'any' cannot be combined with other operators")


def valid_call_action(action: object) -> bool:
    return type(action) is str and len(action) <= MAX_NAME and bool(_ACTION.match(action))


def parse_capability(obj: Any, path: str = "", *, token_form: bool = False) -> Capability:
    """Validate one capability object; raises :class:`ConstraintError` naming the node.

    ``token_form`` expects the ``authorization_details`` entry form (with
    ``"type": "remit.capability"``); otherwise the API form ``{action, args}``.
    """
    prefix = f"{path}." if path else ""
    if not isinstance(obj, dict):
        raise ConstraintError(path, "a capability is an object")
    allowed = {"action", "args"} | ({"type", "limits"} if token_form else set())
    unknown = set(obj) - allowed
    if unknown:
        # by repr: member names from Python callers may be of mixed, unorderable types
        raise ConstraintError(path, f"unknown members {sorted(unknown, key=repr)}")
    if token_form and obj.get("type") != "remit.capability":
        raise ConstraintError(f"{prefix}type", "must be 'remit.capability'")
    if "limits" in obj:
        raise ConstraintError(f"{prefix}limits", "limits are not supported by this version")
    action = obj.get("action")
    if type(action) is not str or len(action) > MAX_NAME or not _CAP_ACTION.match(action):
        raise ConstraintError(
            f"{prefix}action", "must be a dotted lowercase name, optionally ending in '.*'"
        )
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ConstraintError(f"{prefix}args", "must be an object")
    if len(args) > MAX_ARGS:
        raise ConstraintError(f"{prefix}args", f"more than {MAX_ARGS} arguments")
    for name, constraint in args.items():
        if type(name) is not str or not name or len(name) > MAX_NAME:
            raise ConstraintError(f"{prefix}args", f"bad argument name {name!r}")
        _check_constraint(constraint, f"{prefix}args.{name}", star=name == "*")
    return Capability(action=action, args=args)


def parse_capabilities(items: Any, path: str = "", *, token_form: bool = False) -> list[Capability]:
    if not isinstance(items, list):
        raise ConstraintError(path, "must be a list of capabilities")
    if not items:
        raise ConstraintError(path, "at least one capability is required")
    if len(items) > MAX_CAPABILITIES:
        raise ConstraintError(path, f"more than {MAX_CAPABILITIES} capabilities")
    return [parse_capability(c, f"{path}[{i}]", token_form=token_form) for i, c in enumerate(items)]


# --- evaluation ----------------------------------------------------------------------

Predicate = Callable[[Any], bool]


def _compile_op(op: str, operand: Any) -> Predicate:
    if op == "any":
        return lambda v: True
    if op == "eq":
        if type(operand) is str:
            return lambda v: type(v) is str and v == operand
        return lambda v: json_equal(v, operand)
    if op in ("in", "not_in"):
        strings = frozenset(x for x in operand if type(x) is str)
        others = [x for x in operand if type(x) is not str]

        def member(v: Any) -> bool:
            if type(v) is str:
                return v in strings
            return any(json_equal(v, x) for x in others)

        if op == "in":
            return member
        return lambda v: _is_json_tree(v) and not member(v)
    if op == "lt":
        return lambda v: _is_number(v) and v < operand
    if op == "le":
        return lambda v: _is_number(v) and v <= operand
    if op == "gt":
        return lambda v: _is_number(v) and v > operand
    if op == "ge":
        return lambda v: _is_number(v) and v >= operand
    if op == "max_len":
        return lambda v: (type(v) is str and len(v) <= operand) or (
            type(v) is list and len(v) <= operand and _is_json_tree(v)
        )
    if op == "prefix":
        return lambda v: type(v) is str and v.startswith(operand)
    if op == "glob":
        segments = _glob_parse(operand)
        return lambda v: type(v) is str and _glob_match_parsed(segments, v)
    raise AssertionError(f"unvalidated operator {op}")  # pragma: no cover


def _compile_constraint(constraint: Mapping[str, Any]) -> Predicate:
    preds = [_compile_op(op, x) for op, x in constraint.items() if op not in MODIFIERS]
    if len(preds) == 1:
        return preds[0]
    return lambda v: all(p(v) for p in preds)


def explain_failure(constraint: Mapping[str, Any], value: Any) -> str:
    """Which operator of ``constraint`` rejected ``value`` (slow path, for messages)."""
    for op, operand in constraint.items():
        if op in MODIFIERS:
            continue
        if not _compile_op(op, operand)(value):
            if op in ("lt", "le", "gt", "ge") and not _is_number(value):
                return f"{op}: value is not a finite number"
            if op in ("prefix", "glob") and type(value) is not str:
                return f"{op}: value is not a string"
            return f"{op} {_short(operand)} does not hold"
    return "constraint does not hold"  # pragma: no cover


def _short(operand: Any) -> str:
    text = repr(operand)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class CompiledCapability:
    """A capability ready for the hot path: closures per argument, required names."""

    capability: Capability
    index: int
    named: Mapping[str, Predicate]
    required: tuple[str, ...]
    star: Predicate | None


def compile_capability(cap: Capability, index: int = 0) -> CompiledCapability:
    named = {n: _compile_constraint(c) for n, c in cap.args.items() if n != "*"}
    required = tuple(n for n, c in cap.args.items() if n != "*" and not c.get("optional"))
    star_c = cap.args.get("*")
    return CompiledCapability(
        capability=cap,
        index=index,
        named=named,
        required=required,
        star=_compile_constraint(star_c) if star_c is not None else None,
    )


def action_matches(pattern: str, action: str) -> bool:
    """``files.*`` matches ``files.delete`` and ``files.tmp.delete``; else exact."""
    if pattern.endswith(".*"):
        return action.startswith(pattern[:-1])
    return pattern == action
