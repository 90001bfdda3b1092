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

Operators: ``eq in not_in lt le gt ge max_len prefix suffix glob regex subpath url
email_domain cidr each subset_of fields all_of any_of not any``; modifier ``optional``
(on an argument or a field). docs/scope-language.md is the reference; the operators
with parsing of their own live in one module each (``_regex``, ``_subpath``, ``_url``,
``_email``, ``_netaddr``). ``glob`` knows ``*`` (any run), ``?`` (one character) and
``\\`` (escape) and nothing else, so that narrowing stays decidable.

A capability is bounded (depth 8, 1000 constraint nodes, 16 KiB as JSON), sibling
operators that can never all hold are rejected, and so is ``url``, ``cidr``,
``email_domain`` or ``subpath`` anywhere below a ``not`` (they deny what they cannot
parse; negated, that would allow it), each with the path of the node.

Validation runs when a grant is created and when a token is first verified;
:func:`compile_capability` turns a validated capability into closures so a
warm check does no parsing at all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any

from ._email import compile_email_domain, parse_domains
from ._limits import Budget
from ._netaddr import compile_cidr, parse_networks
from ._operand import OperandError
from ._regex import MAX_REGEX_VALUE, compile_regex
from ._subpath import compile_subpath, normalize_subpath, subpath_root
from ._url import compile_url, parse_url_operand, url_denial

__all__ = [
    "MAX_ARGS",
    "MAX_CAPABILITIES",
    "MAX_CAPABILITY_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_VALUE_LIST",
    "MODIFIERS",
    "NOT_NEGATABLE",
    "OPERATORS",
    "STRING_OPERATORS",
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

STRING_OPERATORS = frozenset(
    {"prefix", "suffix", "glob", "regex", "subpath", "url", "email_domain", "cidr"}
)
OPERATORS = frozenset(
    {"eq", "in", "not_in", "lt", "le", "gt", "ge", "max_len", "any", "each", "subset_of"}
    | {"fields", "all_of", "any_of", "not"}
    | STRING_OPERATORS
)
MODIFIERS = frozenset({"optional"})
# Operators that deny a value they cannot read unambiguously. Under `not` that denial
# would become an allow (``not url`` allowing ``http://x@169.254.169.254/``), so they
# are rejected anywhere below a `not`: an allow-list is the safe form.
NOT_NEGATABLE = frozenset({"url", "cidr", "email_domain", "subpath"})
MAX_DEPTH = 8  # nesting of constraints (each, fields, all_of, any_of, not)
MAX_NODES = 1000  # constraint objects in one capability
MAX_CAPABILITY_BYTES = 16 * 1024  # one capability as compact UTF-8 JSON
MAX_VALUE_LIST = 1024  # elements of a list value checked by `each` / `subset_of`
MAX_CAPABILITIES = 64
MAX_ARGS = 64
MAX_LIST = 1024  # elements of a list operand (in, not_in, subset_of, all_of, any_of)
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
    # Budgets (remit._limits.Budget), token form; attached by the token parser and the
    # service, never by parse_capability (which keeps refusing a "limits" member).
    limits: tuple[Budget, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The token's ``authorization_details`` entry form (RFC 9396)."""
        out: dict[str, Any] = {
            "type": "remit.capability", "action": self.action, "args": dict(self.args)
        }
        if self.limits:
            out["limits"] = [b.to_json() for b in self.limits]
        return out


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


def _decidable(v: object) -> bool:
    """True if every operator can decide ``v`` on its merits: no string over the regex
    input cap or with a lone surrogate, no list over the `each` / `subset_of` cap, at any
    depth. Those operators deny such values outright; under `not` that denial would turn
    into an allow (a padded value slipping past a `not regex` blocklist), so `not`
    denies them instead. ``v`` is a JSON tree already (checked first)."""
    stack: list[object] = [v]
    seen: set[int] = set()
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if len(x) > MAX_REGEX_VALUE or (not x.isascii() and _has_surrogate(x)):
                return False
        elif isinstance(x, list | dict):
            if id(x) in seen:
                continue
            seen.add(id(x))
            if isinstance(x, list):
                if len(x) > MAX_VALUE_LIST:
                    return False
                stack.extend(x)
            else:
                stack.extend(x.keys())
                stack.extend(x.values())
    return True


def _has_surrogate(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return True
    return False


def _is_json_tree(v: object) -> bool:
    """True if ``v`` is a finite JSON value at every depth (exact types, string keys).

    Iterative, so an arbitrarily deep argument cannot exhaust the stack. A cycle fails;
    a sub-tree shared by reference is fine (it is a tree once serialized, and a value
    JSON-equal to a valid operand must pass) and is checked once, so a chain of
    shared lists cannot make this exponential.
    """
    t = type(v)
    if t is not list and t is not dict:  # the common case: no allocation
        return t is str or t is int or t is bool or v is None or (t is float and isfinite(v))  # type: ignore[arg-type]
    if _flat_json(v):  # a list or object of scalars: no allocation either
        return True
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


def _flat_json(v: Any) -> bool:
    """True if ``v`` (a list or dict) holds only finite JSON scalars under str keys;
    False also when it merely holds containers (the full walk decides those)."""
    if type(v) is dict:
        if not all(type(k) is str for k in v):
            return False
        v = v.values()
    for x in v:
        t = type(x)
        if t is str or t is int or t is bool or x is None:
            continue
        if t is float and math.isfinite(x):
            continue
        return False
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

# The value types an operator can hold for; None: any. Siblings whose sets do not
# intersect can never all hold (a contradiction, rejected at validation).
_KINDS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("lt", "le", "gt", "ge"), frozenset({"number"})),
    "max_len": frozenset({"string", "array"}),
    **dict.fromkeys(STRING_OPERATORS, frozenset({"string"})),
    "each": frozenset({"array"}),
    "subset_of": frozenset({"array"}),
    "fields": frozenset({"object"}),
}
_ALL_KINDS = frozenset({"string", "number", "bool", "null", "array", "object"})


class _Walk:
    """Validation state shared across one capability: the constraint node count, and
    the path of the outermost `not` the walk is inside (None: not negated)."""

    __slots__ = ("negated", "nodes")

    def __init__(self) -> None:
        self.nodes = 0
        self.negated: str | None = None


def _operand_error(path: str, exc: OperandError) -> ConstraintError:
    return ConstraintError(f"{path}{exc.at}", exc.message)


def _check_string_operand(op: str, operand: Any, path: str) -> None:
    try:
        if op == "regex":
            if type(operand) is not str:
                raise OperandError("must be a string (an RE2 pattern)")
            compile_regex(operand)
        elif op == "subpath":
            subpath_root(operand)
        elif op == "url":
            parse_url_operand(operand)
        elif op == "email_domain":
            parse_domains(operand)
        elif op == "cidr":
            parse_networks(operand)
    except OperandError as exc:
        raise _operand_error(path, exc) from None


def _check_operand(op: str, operand: Any, path: str, depth: int, walk: _Walk) -> None:
    def fail(msg: str) -> ConstraintError:
        return ConstraintError(path, msg)

    if op in ("lt", "le", "gt", "ge"):
        if not _is_number(operand):
            raise fail("must be a finite number")
    elif op == "max_len":
        if type(operand) is not int or operand < 0:
            raise fail("must be a non-negative integer")
    elif op in ("prefix", "suffix", "glob"):
        if type(operand) is not str:
            raise fail("must be a string")
        if len(operand) > MAX_STRING:
            raise fail(f"longer than {MAX_STRING} characters")
        if op == "glob":
            try:
                _glob_parse(operand)
            except ValueError as exc:
                raise fail(str(exc)) from None
    elif op in ("regex", "subpath", "url", "email_domain", "cidr"):
        _check_string_operand(op, operand, path)
    elif op in ("in", "not_in", "subset_of"):
        if type(operand) is not list:
            raise fail("must be a list")
        if len(operand) > MAX_LIST:
            raise fail(f"more than {MAX_LIST} elements")
        if op != "not_in" and not operand:
            raise fail("an empty list allows nothing; omit the argument instead")
        for i, item in enumerate(operand):
            if not is_json_value(item):
                raise ConstraintError(f"{path}[{i}]", "not a finite JSON value of bounded depth")
    elif op == "eq":
        if not is_json_value(operand):
            raise fail("not a finite JSON value of bounded depth")
    elif op in ("any", "optional"):
        if operand is not True:
            raise fail("must be true")
    elif op == "each":
        _check_constraint(operand, path, slot="inner", depth=depth + 1, walk=walk)
    elif op == "not":
        outer = walk.negated
        walk.negated = outer or path
        _check_constraint(operand, path, slot="inner", depth=depth + 1, walk=walk)
        walk.negated = outer
    elif op in ("all_of", "any_of"):
        if type(operand) is not list:
            raise fail("must be a list of constraints")
        if not operand:
            raise fail(
                "an empty all_of would allow anything and an empty any_of nothing; "
                "give at least one constraint"
            )
        if len(operand) > MAX_LIST:
            raise fail(f"more than {MAX_LIST} elements")
        for i, item in enumerate(operand):
            _check_constraint(item, f"{path}[{i}]", slot="inner", depth=depth + 1, walk=walk)
    elif op == "fields":
        if type(operand) is not dict:
            raise fail("must be an object of field name -> constraint")
        _check_members(operand, path, depth=depth + 1, walk=walk)


def _check_members(
    members: dict[Any, Any], path: str, *, depth: int, walk: _Walk, what: str = "field"
) -> None:
    """``args`` of a capability, or the operand of ``fields``: name -> constraint."""
    if len(members) > MAX_ARGS:
        raise ConstraintError(path, f"more than {MAX_ARGS} {what}s")
    for name, constraint in members.items():
        if type(name) is not str or not name or len(name) > MAX_NAME:
            raise ConstraintError(path, f"bad {what} name {name!r}")
        _check_constraint(
            constraint,
            f"{path}.{name}",
            slot="star" if name == "*" else "named",
            depth=depth,
            walk=walk,
        )


def _check_constraint(
    constraint: Any, path: str, *, slot: str = "named", depth: int = 1, walk: _Walk | None = None
) -> None:
    """Validate one constraint node. ``slot``: ``named`` (an argument or field: may be
    optional), ``star`` (unnamed ones: always optional), ``inner`` (inside each, not,
    all_of, any_of: presence is not its business)."""
    walk = walk if walk is not None else _Walk()
    if depth > MAX_DEPTH:
        raise ConstraintError(path, f"constraints nest deeper than {MAX_DEPTH} levels")
    walk.nodes += 1
    if walk.nodes > MAX_NODES:
        raise ConstraintError(path, f"more than {MAX_NODES} constraints in one capability")
    if not isinstance(constraint, dict):
        raise ConstraintError(path, "a constraint is an object of operator -> operand")
    if not constraint:
        raise ConstraintError(path, 'an empty constraint would allow anything; say {"any": true}')
    for op, operand in constraint.items():
        if op not in OPERATORS and op not in MODIFIERS:
            raise ConstraintError(f"{path}.{op}", f"unknown operator {op!r}")
        if op == "optional" and slot == "star":
            raise ConstraintError(f"{path}.{op}", "unnamed members are always optional")
        if op == "optional" and slot == "inner":
            raise ConstraintError(
                f"{path}.{op}", "'optional' applies only to an argument or a field"
            )
        if op in NOT_NEGATABLE and walk.negated is not None:
            raise ConstraintError(
                f"{path}.{op}",
                f"{op!r} cannot be under 'not' (at {walk.negated}): it denies values it "
                "cannot read unambiguously, which 'not' would allow; list what is allowed "
                "instead",
            )
        _check_operand(op, operand, f"{path}.{op}", depth, walk)
    ops = set(constraint) - MODIFIERS
    if not ops:
        raise ConstraintError(path, "a constraint needs at least one operator")
    _check_satisfiable(constraint, ops, path)


def _check_satisfiable(constraint: Mapping[str, Any], ops: set[str], path: str) -> None:
    """Reject sibling operators that can never all hold (see docs/scope-language.md)."""
    if "any" in ops:
        if len(ops) > 1:
            raise ConstraintError(f"{path}.any", "'any' cannot be combined with other operators")
        return
    if "not" in ops and "any" in constraint["not"]:
        raise ConstraintError(f"{path}.not", "the negation of 'any' allows nothing")
    kinds = _ALL_KINDS
    for op in ops:
        kinds = kinds & _KINDS.get(op, _ALL_KINDS)
    if not kinds:
        typed = sorted(op for op in ops if op in _KINDS)
        raise ConstraintError(path, f"{' and '.join(typed)} need different value types")
    lo = max((constraint[op], op == "gt") for op in ("gt", "ge") if op in constraint) if (
        "gt" in constraint or "ge" in constraint
    ) else None
    hi = min((constraint[op], op == "le") for op in ("lt", "le") if op in constraint) if (
        "lt" in constraint or "le" in constraint
    ) else None
    # lo = (bound, strict); hi = (bound, inclusive): sorting picks the tighter of each.
    if lo is not None and hi is not None:
        (low, strict), (high, inclusive) = lo, hi
        if low > high or (low == high and (strict or not inclusive)):
            raise ConstraintError(path, "the bounds leave no number")
    if "eq" in ops or "in" in ops:
        key = "eq" if "eq" in ops else "in"
        candidates = [constraint["eq"]] if key == "eq" else constraint["in"]
        rest = {op: constraint[op] for op in ops if op != key}
        if rest:
            pred = _compile_constraint(rest)
            if not any(pred(c) for c in candidates):
                raise ConstraintError(
                    path, f"no value of {key!r} satisfies the other operators"
                )


def _encoded_size(obj: Any) -> int | None:
    """UTF-8 size of the compact JSON encoding, None if ``obj`` is not encodable."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None  # validation below names the bad node
    return len(text.encode("utf-8", "surrogatepass"))


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
    size = _encoded_size(obj)  # first: bounds the work of everything below
    if size is not None and size > MAX_CAPABILITY_BYTES:
        raise ConstraintError(path, f"larger than {MAX_CAPABILITY_BYTES} bytes as JSON")
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
    _check_members(args, f"{prefix}args", depth=1, walk=_Walk(), what="argument")
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

_NO_MATCH: Any = object()  # the frozen form of a value no operand can equal
_TRUE: Any = object()
_FALSE: Any = object()


def _freeze(
    v: Any, depth: int = MAX_OPERAND_DEPTH + 1, memo: dict[tuple[int, int], Any] | None = None
) -> Any:
    """A hashable key with ``_freeze(a) == _freeze(b)`` iff ``json_equal(a, b)``.

    Numbers keep Python's exact mixed int/float equality (``1`` = ``1.0``, with equal
    hashes); bools get their own keys so ``true`` never meets ``1``. A value nested
    deeper than any operand can be, or not JSON, freezes to ``_NO_MATCH``.

    A container shared by reference is frozen once per depth (``memo``, by ``id`` within
    one call, as in :func:`_is_json_tree`; the value keeps every container alive while
    it runs), and its key is then the same object, so a chain of shared lists stays
    linear instead of expanding to a tree: in building the key and in hashing it.
    """
    t = type(v)
    if t is str or t is int:
        return v
    if t is float:
        return v if math.isfinite(v) else _NO_MATCH
    if t is bool:
        return _TRUE if v else _FALSE
    if v is None:
        return None
    if t is not list and t is not dict:
        return _NO_MATCH
    if depth <= 0:
        return _NO_MATCH
    if memo is None:
        memo = {}
    mkey = (id(v), depth)
    key = memo.get(mkey)
    if key is not None:
        return key
    if t is list:
        items = tuple(_freeze(x, depth - 1, memo) for x in v)
        key = _NO_MATCH if any(x is _NO_MATCH for x in items) else _Frozen("[", items)
    elif not all(type(k) is str for k in v):
        key = _NO_MATCH
    else:
        pairs = frozenset((k, _freeze(x, depth - 1, memo)) for k, x in v.items())
        key = _NO_MATCH if any(x is _NO_MATCH for _, x in pairs) else _Frozen("{", pairs)
    memo[mkey] = key
    return key


class _Frozen:
    """A frozen list (``kind`` ``"["``, a tuple) or object (``"{"``, a frozenset of
    pairs) whose hash is computed once: a plain tuple rehashes its items on every
    ``hash()``, which for shared sub-keys would be exponential again."""

    __slots__ = ("_hash", "items", "kind")

    def __init__(self, kind: str, items: tuple[Any, ...] | frozenset[Any]) -> None:
        self.kind = kind
        self.items = items
        self._hash = hash((kind, items))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not _Frozen:
            return NotImplemented
        return self._hash == other._hash and self.kind == other.kind and self.items == other.items


def _membership(operand: list[Any]) -> Predicate:
    """``v`` JSON-equals some element: one hash lookup (strings: no freezing at all)."""
    keys = frozenset(_freeze(x) for x in operand)

    def member(v: Any) -> bool:
        if type(v) is str:
            return v in keys
        key = _freeze(v)
        return key is not _NO_MATCH and key in keys

    return member


def _json_list(v: Any) -> bool:
    return type(v) is list and len(v) <= MAX_VALUE_LIST and _is_json_tree(v)


def _compile_fields(members: Mapping[str, Any]) -> Predicate:
    named = {n: _compile_constraint(c) for n, c in members.items() if n != "*"}
    required = tuple(n for n, c in members.items() if n != "*" and not c.get("optional"))
    star = _compile_constraint(members["*"]) if "*" in members else None

    def holds(v: Any) -> bool:
        if type(v) is not dict or not _is_json_tree(v):  # also: every key is a str
            return False
        for name, x in v.items():
            pred = named.get(name, star)
            if pred is None or not pred(x):
                return False
        return all(n in v for n in required)

    return holds


def _compile_op(op: str, operand: Any) -> Predicate:
    if op == "any":
        return lambda v: True
    if op == "eq":
        if type(operand) is str:
            return lambda v: type(v) is str and v == operand
        return lambda v: json_equal(v, operand)
    if op == "in":
        return _membership(operand)
    if op == "not_in":
        member = _membership(operand)
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
    if op == "suffix":
        return lambda v: type(v) is str and v.endswith(operand)
    if op == "glob":
        segments = _glob_parse(operand)
        return lambda v: type(v) is str and _glob_match_parsed(segments, v)
    if op == "regex":
        return compile_regex(operand)
    if op == "subpath":
        return compile_subpath(operand)
    if op == "url":
        return compile_url(operand)
    if op == "email_domain":
        return compile_email_domain(operand)
    if op == "cidr":
        return compile_cidr(operand)
    if op in ("each", "subset_of"):
        inner = _compile_constraint(operand) if op == "each" else _membership(operand)

        def each(v: Any) -> bool:
            if not _json_list(v):
                return False
            for x in v:  # noqa: SIM110 - a plain loop: no generator on the hot path
                if not inner(x):
                    return False
            return True

        return each
    if op == "fields":
        return _compile_fields(operand)
    if op in ("all_of", "any_of"):
        preds = [_compile_constraint(c) for c in operand]
        if op == "all_of":
            return lambda v: _is_json_tree(v) and all(p(v) for p in preds)
        return lambda v: _is_json_tree(v) and any(p(v) for p in preds)
    if op == "not":
        inner = _compile_constraint(operand)
        return lambda v: _is_json_tree(v) and _decidable(v) and not inner(v)
    raise AssertionError(f"unvalidated operator {op}")  # pragma: no cover


def _compile_bounds(constraint: Mapping[str, Any]) -> Predicate | None:
    """``gt``/``ge`` with ``lt``/``le`` as one chained comparison (the common range)."""
    lower = [op for op in ("gt", "ge") if op in constraint]
    upper = [op for op in ("lt", "le") if op in constraint]
    if len(lower) != 1 or len(upper) != 1:
        return None
    a, b = constraint[lower[0]], constraint[upper[0]]
    isfinite = math.isfinite
    # NaN fails every comparison; an infinity could pass one side, hence isfinite.
    if lower == ["gt"]:
        if upper == ["lt"]:
            return lambda v: (type(v) is int or (type(v) is float and isfinite(v))) and a < v < b
        return lambda v: (type(v) is int or (type(v) is float and isfinite(v))) and a < v <= b
    if upper == ["lt"]:
        return lambda v: (type(v) is int or (type(v) is float and isfinite(v))) and a <= v < b
    return lambda v: (type(v) is int or (type(v) is float and isfinite(v))) and a <= v <= b


def _compile_constraint(constraint: Mapping[str, Any]) -> Predicate:
    """One closure for a constraint: every operator must hold (fewest calls per check)."""
    ops = {op: x for op, x in constraint.items() if op not in MODIFIERS}
    preds = []
    bounds = _compile_bounds(ops)
    if bounds is not None:
        preds.append(bounds)
        ops = {op: x for op, x in ops.items() if op not in ("gt", "ge", "lt", "le")}
    if "max_len" in ops and ("each" in ops or "subset_of" in ops):
        # The sibling already requires a JSON list: only the length is left to check,
        # and first, so an over-long list is refused before its elements are looked at.
        n = ops.pop("max_len")
        preds.insert(0, lambda v: type(v) is list and len(v) <= n)
    preds += [_compile_op(op, x) for op, x in ops.items()]
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        p0, p1 = preds
        return lambda v: p0(v) and p1(v)
    if len(preds) == 3:
        p0, p1, p2 = preds
        return lambda v: p0(v) and p1(v) and p2(v)

    def every(v: Any) -> bool:
        for p in preds:  # noqa: SIM110 - a plain loop: no generator on the hot path
            if not p(v):
                return False
        return True

    return every


def explain_failure(constraint: Mapping[str, Any], value: Any) -> str:
    """Which operator of ``constraint`` rejected ``value`` (slow path, for messages).

    Nested operators name the failing part: ``each[3]: le 5 does not hold``,
    ``fields.city: ...``, ``all_of[1]: ...``.
    """
    try:
        for op, operand in constraint.items():
            if op in MODIFIERS:
                continue
            if not _compile_op(op, operand)(value):
                return _explain_op(op, operand, value)
    except Exception:  # pragma: no cover - a message must never turn a denial into a crash
        return "constraint does not hold"
    return "constraint does not hold"  # pragma: no cover


def _explain_op(op: str, operand: Any, value: Any) -> str:
    if op in ("lt", "le", "gt", "ge") and not _is_number(value):
        return f"{op}: value is not a finite number"
    if op in STRING_OPERATORS and type(value) is not str:
        return f"{op}: value is not a string"
    if op == "regex" and len(value) > MAX_REGEX_VALUE:
        return f"regex: value longer than {MAX_REGEX_VALUE} characters"
    if op == "url":
        return f"url: {url_denial(parse_url_operand(operand), value)}"
    if op == "subpath":
        if normalize_subpath(value) is None:
            return "subpath: not a plain absolute path (encoding, control characters or '..')"
        return f"subpath: outside {_short(operand)}"
    if op in ("each", "subset_of"):
        if not _json_list(value):
            return f"{op}: value is not a list of at most {MAX_VALUE_LIST} JSON values"
        if op == "subset_of":
            member = _membership(operand)
            bad = next(i for i, x in enumerate(value) if not member(x))
            return f"subset_of: element [{bad}] is not one of the allowed values"
        inner = _compile_constraint(operand)
        bad = next(i for i, x in enumerate(value) if not inner(x))
        return f"each[{bad}]: {explain_failure(operand, value[bad])}"
    if op == "fields":
        return _explain_fields(operand, value)
    if op in ("all_of", "any_of", "not") and not _is_json_tree(value):
        return f"{op}: value is not JSON"
    if op == "all_of":
        bad = next(i for i, c in enumerate(operand) if not _compile_constraint(c)(value))
        return f"all_of[{bad}]: {explain_failure(operand[bad], value)}"
    if op == "any_of":
        return f"any_of: none of the {len(operand)} alternatives holds"
    if op == "not":
        if not _decidable(value):
            return (
                f"not: the value is too large to decide (strings over {MAX_REGEX_VALUE} "
                f"characters or with a lone surrogate, lists over {MAX_VALUE_LIST} elements)"
            )
        return "not: the negated constraint holds"
    return f"{op} {_short(operand)} does not hold"


def _explain_fields(members: Mapping[str, Any], value: Any) -> str:
    if type(value) is not dict or not _is_json_tree(value):
        return "fields: value is not a JSON object"
    for name, x in value.items():
        c = members.get(name) if name != "*" else None
        c = c if c is not None else members.get("*")
        if c is None:
            return f"fields: field {name[:80]!r} is not allowed"
        if not _compile_constraint(c)(x):
            return f"fields.{name[:80]}: {explain_failure(c, x)}"
    missing = next(n for n, c in members.items() if n != "*" and not c.get("optional")
                   and n not in value)
    return f"fields: field {missing!r} is required but missing"


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
