"""Property tests of narrowing: a child judged narrower never allows what its parent denies.

Parents and children are drawn over a small universe: actions under ``t.``, three
argument names, the v1 operators with tiny operands. Children are often derived from the
parent (an operand tightened or loosened, an operator added or removed, an argument dropped
or added, ``optional`` or ``"*"`` toggled), so that ``is_narrower`` answers True often
enough to be tested. The calls come from the same universe: values near every operand
(bounds +- 1/2, prefixes extended, glob instances, eq/in members) and of other types
(bools, None, floats, NaN, lists, objects). For each narrower pair, every value the child
accepts for an argument (and absence, and an extra argument) is tried in a call the child
allows; the parent must allow each such call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st
from remit import ConstraintError, is_narrower
from remit._constraints import (
    Capability,
    action_matches,
    compile_capability,
    glob_literal_prefix,
    parse_capability,
)
from remit._verifier import _check_args

NAMES = ("a", "b", "c")
EXTRA = "d"  # never named: only a "*" constraint can allow it
ACTIONS = ("t.x", "t.y", "t.x.z", "t.*", "t.x.*")
CALL_ACTIONS = ("t.x", "t.y", "t.x.z", "t.x.z.w", "t", "u.x")

SETTINGS = settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --- strategies ----------------------------------------------------------------------

small_int = st.integers(-3, 3)
small_float = st.sampled_from([-1.5, -0.5, 0.0, 0.5, 1.0, 2.5])
number = small_int | small_float
short_str = st.text("ab/", max_size=3)
scalar = number | short_str | st.booleans() | st.none()
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=2)
    | st.dictionaries(st.sampled_from("ab"), inner, max_size=2),
    max_leaves=4,
)
GLOB_SHAPES = ["*", "a*", "ab*", "/*", "a/*", "a*b*", "a**", "*a", "a?*", "?*", "a\\**", "a\\?*"]
GLOB_SHAPES.append("")
glob = st.one_of(
    st.sampled_from(GLOB_SHAPES),
    st.sampled_from(GLOB_SHAPES),
    st.lists(st.sampled_from(["a", "b", "/", "*", "?", "\\*", "\\?", "\\\\"]), max_size=4).map(
        "".join
    ),
)

OPERAND: dict[str, st.SearchStrategy[Any]] = {
    "eq": json_value,
    "in": st.lists(json_value, min_size=1, max_size=3),
    "not_in": st.lists(json_value, max_size=3),
    "lt": number,
    "le": number,
    "gt": number,
    "ge": number,
    "max_len": st.integers(0, 3),
    "prefix": short_str,
    "glob": glob,
}


@st.composite
def constraint(draw: st.DrawFn, *, star: bool = False) -> dict[str, Any]:
    if draw(st.integers(0, 9)) == 0:
        c: dict[str, Any] = {"any": True}
    else:
        ops = draw(st.lists(st.sampled_from(sorted(OPERAND)), min_size=1, max_size=3, unique=True))
        c = {op: draw(OPERAND[op]) for op in ops}
    if not star and draw(st.booleans()):
        c["optional"] = True
    return c


@st.composite
def capability(draw: st.DrawFn, max_names: int = 3) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), max_size=max_names, unique=True))
    args = {n: draw(constraint()) for n in names}
    if draw(st.integers(0, 3)) == 0:
        args["*"] = draw(constraint(star=True))
    return {"action": draw(st.sampled_from(ACTIONS)), "args": args}


SWAP = {"lt": "le", "le": "lt", "gt": "ge", "ge": "gt"}


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?\\" else ch for ch in text)


@st.composite
def mutated_constraint(draw: st.DrawFn, c: dict[str, Any], *, star: bool) -> dict[str, Any]:
    """``c`` with one change: often narrower, sometimes wider, sometimes the same."""
    c = dict(c)
    ops = [op for op in c if op != "optional"]
    op = draw(st.sampled_from(ops))
    x = c[op]
    kind = draw(st.integers(0, 9))
    if kind >= 7:  # the constraint as a whole
        if kind == 7 and not star:  # toggle optional
            if c.pop("optional", None) is None:
                c["optional"] = True
        elif kind == 8:  # add an operator
            new = draw(st.sampled_from(sorted(OPERAND)))
            c.pop("any", None)
            c[new] = draw(OPERAND[new])
        else:  # drop an operator
            del c[op]
    elif op in SWAP:
        delta = draw(st.sampled_from([-1, -0.5, 0, 0, 0.5, 1]))
        if kind % 2 and SWAP[op] not in c:
            del c[op]
            op = SWAP[op]
        c[op] = x + delta
    elif op == "max_len":
        c[op] = max(0, x + draw(st.sampled_from([-1, 0, 1])))
    elif op in ("in", "not_in"):
        items = list(x)
        if kind % 2 and len(items) > 1:
            items.pop(draw(st.integers(0, len(items) - 1)))
        else:
            items.insert(draw(st.integers(0, len(items))), draw(json_value))
        c[op] = items
    elif op in ("prefix", "glob"):
        head = x if op == "prefix" else glob_literal_prefix(x)[0]
        head = head[: draw(st.integers(0, len(head)))] + draw(st.sampled_from(["", "a", "/"]))
        if kind < 2 and op == "prefix":  # longer or shorter
            c[op] = head
        elif kind < 2:  # a glob with more or less around it
            c[op] = draw(st.sampled_from(["", "a", "*"])) + x + draw(
                st.sampled_from(["", "a", "*", "?"])
            )
        else:  # said with the other operator
            del c[op]
            if draw(st.booleans()):
                c["prefix"] = head
            else:
                c["glob"] = _escape(head) + draw(st.sampled_from(["*", "*a", "?*", "", "**"]))
    elif op == "eq":
        c[op] = draw(json_value)
    elif op == "any" and draw(st.booleans()):
        new = draw(st.sampled_from(sorted(OPERAND)))
        del c["any"]
        c[new] = draw(OPERAND[new])
    if kind == 6 and draw(st.booleans()):  # a finite value set instead
        pick = draw(st.sampled_from(["eq", "in"]))
        c = {pick: draw(OPERAND[pick])} | ({"optional": True} if c.get("optional") else {})
    if not any(k != "optional" for k in c):
        c["any"] = True
    return c


@st.composite
def child_of(draw: st.DrawFn, parent: dict[str, Any]) -> dict[str, Any]:
    """A child derived from ``parent`` by one or two changes, or (rarely) unrelated."""
    if draw(st.integers(0, 6)) == 0:
        return draw(capability())
    action, args = parent["action"], dict(parent["args"])
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        change = draw(st.integers(0, 9))
        if change <= 5 and args:
            name = draw(st.sampled_from(sorted(args)))
            args[name] = draw(mutated_constraint(args[name], star=name == "*"))
        elif change == 6 and args:
            del args[draw(st.sampled_from(sorted(args)))]
        elif change == 7:
            name = draw(st.sampled_from((*NAMES, "*")))
            args[name] = draw(constraint(star=name == "*"))
        elif change == 8:
            action = draw(st.sampled_from(ACTIONS))
        else:
            name = draw(st.sampled_from((*NAMES, "*")))
            args[name] = draw(constraint(star=name == "*"))
    return {"action": action, "args": args}


def _valid(obj: dict[str, Any]) -> Capability:
    try:
        return parse_capability(obj)
    except ConstraintError:
        assume(False)
        raise  # pragma: no cover


# --- calls ---------------------------------------------------------------------------

_SHARED: list[Any] = [1]
BASE_VALUES: list[Any] = [
    -4, -3, -1, 0, 1, 2, 3, 4, -1.5, 0.5, 1.0, 2.5, 3.5, -0.0,
    math.nan, math.inf, -math.inf, 10**20,
    True, False, None,
    "", "a", "b", "/", "ab", "a/", "ba", "aab", "a/b", "*", "?", "a*", "abab", "b/a/",
    [], [1], ["a", "b"], [None, 1, 2.5], [[]], {}, {"a": 1}, {"a": "a", "b": None},
    # not JSON, or not the JSON they resemble: never more than `any` allows
    (1,), ("a",), [math.nan], [(1,)], {"a": (1,)}, {1: "a"}, b"a", True.__class__,
    # JSON-equal to list operands, with a sub-tree shared by reference
    [_SHARED, _SHARED], [_SHARED],
]


def _glob_instances(pattern: str) -> list[str]:
    out, i, fill = [], 0, ["", "a", "ab/"]
    chunks: list[str] = []
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            chunks.append(pattern[i + 1])
            i += 2
            continue
        chunks.append("\x00" if ch == "*" else "\x01" if ch == "?" else ch)
        i += 1
    for f in fill:
        out.append("".join(f if c == "\x00" else ("b" if c == "\x01" else c) for c in chunks))
    return out


def _values_near(cap: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for c in cap["args"].values():
        for op, x in c.items():
            if op in ("lt", "le", "gt", "ge"):
                out += [x, x - 1, x + 1, x - 0.5, x + 0.5, float(x)]
            elif op == "max_len":
                out += ["a" * x, "a" * (x + 1), [0] * x, [0] * (x + 1)]
            elif op == "prefix":
                out += [x, x + "a", x + "/", x[:-1]]
            elif op == "glob":
                out += _glob_instances(x)
            elif op == "eq":
                out += [x]
            elif op in ("in", "not_in"):
                out += list(x)
    return out


_MISSING = object()


def _child_calls(
    rng: random.Random, child: Capability, pool: list[Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Calls the child allows, built to cover every allowed value of every argument.

    For each argument name, the options are the pool values the child's constraint for it
    accepts, plus absence when the child allows absence. One call per option, the other
    arguments fixed at a random allowed option. Empty when the child allows nothing.
    """
    compiled = compile_capability(child)
    options: dict[str, list[Any]] = {}
    for name in sorted({*NAMES, EXTRA, *child.args} - {"*"}):
        pred = compiled.named.get(name, compiled.star)
        values = [v for v in pool if pred is not None and pred(v)]
        if name not in compiled.required:
            values.append(_MISSING)
        if not values:
            return []
        options[name] = values
    actions = [a for a in CALL_ACTIONS if action_matches(child.action, a)]
    if not actions:
        return []
    base = {name: rng.choice(values) for name, values in options.items()}
    calls = []
    for name, values in options.items():
        for v in values:
            call = {**base, name: v}
            args = {k: x for k, x in call.items() if x is not _MISSING}
            calls.append((rng.choice(actions), args))
    return calls


def _pool(caps: list[dict[str, Any]]) -> list[Any]:
    return BASE_VALUES + [v for cap in caps for v in _values_near(cap)]


def _allows(cap: Capability) -> Callable[[str, dict[str, Any]], bool]:
    compiled = compile_capability(cap)

    def allows(action: str, args: dict[str, Any]) -> bool:
        return action_matches(cap.action, action) and _check_args(compiled, args) is None

    return allows


# --- properties ----------------------------------------------------------------------

STATS = {"pairs": 0, "narrower": 0, "calls": 0}


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_narrower_child_never_allows_more(data: st.DataObject, seed: int) -> None:
    parent_obj = data.draw(capability(), label="parent")
    child_obj = data.draw(child_of(parent_obj), label="child")
    parent, child = _valid(parent_obj), _valid(child_obj)
    STATS["pairs"] += 1
    if not is_narrower(child, parent):
        return
    STATS["narrower"] += 1
    child_allows, parent_allows = _allows(child), _allows(parent)
    for action, args in _child_calls(random.Random(seed), child, _pool([parent_obj, child_obj])):
        assert child_allows(action, args)  # the generator's own promise
        STATS["calls"] += 1
        if not parent_allows(action, args):
            note(f"call: {action} {args!r}")
            raise AssertionError("a narrower child allows a call its parent denies")


SMALL_OPERANDS: dict[str, Any] = {
    "lt": 1,
    "le": 0,
    "gt": 0,
    "ge": -1,
    "max_len": 2,
    "prefix": "a",
    "glob": "a*",
    "not_in": [1],
    "eq": "a",
    "in": [0, "a"],
}


def _constraint_neighbours(
    c: dict[str, Any], *, star: bool, pool: list[Any]
) -> list[dict[str, Any]]:
    """Every one-step change of a constraint: bounds moved, strictness swapped, set members
    added or removed, strings lengthened or shortened or said with the other operator."""
    out: list[dict[str, Any]] = []
    rest = {k: v for k, v in c.items() if k != "optional"}
    opt = {"optional": True} if c.get("optional") else {}
    if not star:
        out.append(rest | ({} if opt else {"optional": True}))
    for op, x in rest.items():
        others = {k: v for k, v in c.items() if k != op}
        if any(k != "optional" for k in others):
            out.append(others)
        if op in SWAP:
            for delta in (-1, -0.5, 0, 0.5, 1):
                out.append(c | {op: x + delta})
                if SWAP[op] not in c:
                    out.append(others | {SWAP[op]: x + delta})
        elif op == "max_len":
            out += [c | {op: n} for n in (x - 1, x + 1) if n >= 0]
        elif op in ("in", "not_in"):
            if op == "not_in" or len(x) > 1:
                out += [c | {op: x[:i] + x[i + 1 :]} for i in range(len(x))]
            out += [c | {op: [*x, v]} for v in pool[:: max(1, len(pool) // 6)]]
            out += [others | {"eq": v} for v in x]
        elif op in ("prefix", "glob"):
            head = x if op == "prefix" else glob_literal_prefix(x)[0]
            for h in {head, head[:-1], head + "a", head + "/", ""}:
                out.append(others | {"prefix": h})
                out += [others | {"glob": _escape(h) + g} for g in ("*", "?*", "*a", "")]
            if op == "glob":
                out += [c | {op: a + x + b} for a in ("", "a", "*") for b in ("", "a", "*", "?")]
        elif op == "eq":
            out += [c | {op: v} for v in pool[:: max(1, len(pool) // 6)]]
        elif op == "any":
            out += [opt | {"max_len": 2}, opt | {"not_in": []}, opt | {"prefix": ""}]
        for new, operand in SMALL_OPERANDS.items():
            if new != op:
                out.append(others | {new: operand})  # replaced
                if new not in c and op != "any":
                    out.append(c | {new: operand})  # added
    return out


def _neighbours(parent: dict[str, Any], pool: list[Any]) -> list[dict[str, Any]]:
    """Every one-step change of a capability (see _constraint_neighbours), and more."""
    action, args = parent["action"], parent["args"]
    out = [{"action": a, "args": args} for a in ACTIONS if a != action]
    for name, c in args.items():
        out.append({"action": action, "args": {k: v for k, v in args.items() if k != name}})
        for nc in _constraint_neighbours(c, star=name == "*", pool=pool):
            out.append({"action": action, "args": args | {name: nc}})
    for name in (*NAMES, "*"):
        if name not in args:
            for nc in ({"any": True}, {"eq": 1}, {"max_len": 0}, {"lt": 0, "optional": True}):
                if name != "*" or "optional" not in nc:
                    out.append({"action": action, "args": args | {name: nc}})
    return out


NEIGHBOUR_STATS = {"pairs": 0, "narrower": 0, "calls": 0}

# Parents always tried, so that every rule of the table is exercised on every run.
EXAMPLE_PARENTS: list[dict[str, Any]] = [
    *({"action": "t.x", "args": {"a": {"glob": g}}} for g in GLOB_SHAPES),
    *({"action": "t.x", "args": {"a": {op: x}}} for op, x in SMALL_OPERANDS.items()),
    {"action": "t.x", "args": {"a": {"gt": 0, "le": 2}, "b": {"prefix": "a", "max_len": 2}}},
    {"action": "t.x", "args": {"a": {"not_in": [1, "a", None], "optional": True}}},
    {"action": "t.x", "args": {"a": {"in": [0, 1.5, "a", [1]]}, "*": {"max_len": 1}}},
    {"action": "t.*", "args": {"a": {"any": True}, "*": {"lt": 1}}},
    {"action": "t.x.*", "args": {"a": {"any": True, "optional": True}}},
    {"action": "t.x", "args": {}},
]


def _with_example_parents(test: Any) -> Any:
    for parent in EXAMPLE_PARENTS:
        test = example(parent, 0)(test)
    return test


@_with_example_parents
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capability(max_names=2), st.integers(0, 2**32 - 1))
def test_no_one_step_change_judged_narrower_allows_more(
    parent_obj: dict[str, Any], seed: int
) -> None:
    parent = _valid(parent_obj)
    parent_allows = _allows(parent)
    rng = random.Random(seed)
    base_pool = _pool([parent_obj])
    for child_obj in _neighbours(parent_obj, base_pool):
        try:
            child = parse_capability(child_obj)
        except ConstraintError:
            continue
        NEIGHBOUR_STATS["pairs"] += 1
        if not is_narrower(child, parent):
            continue
        NEIGHBOUR_STATS["narrower"] += 1
        for action, args in _child_calls(rng, child, _pool([parent_obj, child_obj])):
            NEIGHBOUR_STATS["calls"] += 1
            assert parent_allows(action, args), (
                f"child {child_obj!r} allows {action} {args!r}; parent denies"
            )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_narrower_scope_never_allows_more(data: st.DataObject, seed: int) -> None:
    parents = data.draw(st.lists(capability(), min_size=1, max_size=2), label="parents")
    children = [data.draw(child_of(p), label="child") for p in parents]
    if data.draw(st.booleans()):
        children.append(data.draw(capability(), label="extra child"))
    pcaps, ccaps = [_valid(p) for p in parents], [_valid(c) for c in children]
    if not is_narrower(ccaps, pcaps):
        return
    p_allow = [_allows(p) for p in pcaps]
    pool = _pool(parents + children)
    rng = random.Random(seed)
    for child in ccaps:
        for action, args in _child_calls(rng, child, pool):
            assert any(f(action, args) for f in p_allow), f"{action} {args!r}"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capability())
def test_narrowing_is_reflexive(obj: dict[str, Any]) -> None:
    cap = _valid(obj)
    assert is_narrower(cap, cap)
    assert is_narrower(obj, obj)
    assert is_narrower([obj], [obj])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capability(), capability())
def test_narrowing_accepts_both_forms(a: dict[str, Any], b: dict[str, Any]) -> None:
    ca, cb = _valid(a), _valid(b)
    token_a = ca.to_json()
    assert is_narrower(ca, cb) is is_narrower(a, b) is is_narrower(token_a, b)


def test_the_generators_produce_narrower_pairs() -> None:
    """Guard against a vacuous soundness test: enough pairs must be narrower, with calls."""
    STATS.update(pairs=0, narrower=0, calls=0)
    settings(max_examples=200, deadline=None, database=None,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])(
        given(data=st.data(), seed=st.integers(0, 2**32 - 1))(
            test_narrower_child_never_allows_more.hypothesis.inner_test  # type: ignore[attr-defined]
        )
    )()
    assert STATS["pairs"] >= 50
    assert STATS["narrower"] >= STATS["pairs"] // 10, STATS
    assert STATS["calls"] >= 20 * STATS["narrower"], STATS
