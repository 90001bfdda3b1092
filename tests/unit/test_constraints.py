"""The constraint language on inputs JSON can't spell: NaN, infinities, host-language values.

Language-neutral cases are in tests/vectors/constraints.json. These are Python-only. A value
that isn't a finite JSON value, at any depth, satisfies no operator except ``any``. Every
input gets a decision, never an exception.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from remit import ConstraintError, is_narrower
from remit._constraints import (
    compile_capability,
    explain_failure,
    glob_match,
    json_equal,
    parse_capabilities,
    parse_capability,
)
from remit._verifier import _check_args


class Level(IntEnum):
    ONE = 1


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyStr(str):
    __slots__ = ()


class MyList(list[Any]):
    pass


class MyDict(dict[str, Any]):
    pass


class Weird:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __hash__(self) -> int:
        return 1

    def __len__(self) -> int:
        raise RuntimeError("measured")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("ordered")


# Every v1 operator once, with operands that the "same" value in JSON would satisfy.
ONE_OPERATOR: list[dict[str, Any]] = [
    {"eq": 1},
    {"eq": [1]},
    {"eq": {"a": 1}},
    {"in": [1, "a", [1], {"a": 1}]},
    {"not_in": ["zzz"]},
    {"not_in": []},
    {"lt": 10},
    {"le": 10},
    {"gt": -10},
    {"ge": -10},
    {"max_len": 100},
    {"prefix": ""},
    {"glob": "*"},
]


def _self_list() -> list[Any]:
    v: list[Any] = [1]
    v.append(v)
    return v


def _self_dict() -> dict[str, Any]:
    v: dict[str, Any] = {}
    v["a"] = v
    return v


def _deep(n: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(n):
        v = [v]
    return v


NAN = float("nan")
INF = float("inf")

NOT_JSON = {
    "nan": NAN,
    "inf": INF,
    "-inf": -INF,
    "tuple": (1,),
    "empty_tuple": (),
    "bytes": b"a",
    "bytearray": bytearray(b"a"),
    "decimal": Decimal("1"),
    "decimal_nan": Decimal("NaN"),
    "complex": 1 + 0j,
    "set": {1},
    "frozenset": frozenset({"a"}),
    "object": object(),
    "weird": Weird(),
    "int_enum": Level.ONE,
    "int_subclass": MyInt(1),
    "float_subclass": MyFloat(1.0),
    "str_subclass": MyStr("a"),
    "list_subclass": MyList([1]),
    "dict_subclass": MyDict(a=1),
    "ordered_dict": OrderedDict(a=1),
    "type": int,
    "function": len,
    "ellipsis": ...,
    # not JSON below the top level
    "list_with_nan": [NAN],
    "list_with_inf": [1, [INF]],
    "list_with_tuple": [(1,)],
    "list_with_bytes": [b"a"],
    "list_with_int_enum": [Level.ONE],
    "list_with_decimal": [Decimal(1)],
    "list_with_weird": [Weird()],
    "dict_int_key": {1: 1},
    "dict_tuple_key": {(1, 2): 1},
    "dict_none_key": {None: 1},
    "dict_str_subclass_key": {MyStr("a"): 1},
    "dict_with_nan": {"a": NAN},
    "dict_with_set": {"a": {1}},
    "nested_dict_int_key": {"a": [{"b": {2: "x"}}]},
    "self_referencing_list": _self_list(),
    "self_referencing_dict": _self_dict(),
    "list_in_self_referencing_list": [_self_list()],
}


@pytest.mark.parametrize("constraint", ONE_OPERATOR, ids=lambda c: "-".join(map(str, c.items())))
@pytest.mark.parametrize("value", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_non_json_values_satisfy_no_operator(constraint: dict[str, Any], value: Any) -> None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
    denial = _check_args(cap, {"v": value})
    assert denial is not None
    assert denial.code.value == "argument_denied"
    assert isinstance(explain_failure(constraint, value), str)


@pytest.mark.parametrize("value", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_non_json_values_satisfy_any(value: Any) -> None:
    cap = compile_capability(
        parse_capability({"action": "t.x", "args": {"v": {"any": True}, "*": {"any": True}}})
    )
    assert _check_args(cap, {"v": value, "w": value}) is None


@pytest.mark.parametrize("value", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_non_json_values_under_star_constraint(value: Any) -> None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"*": {"not_in": []}}}))
    denial = _check_args(cap, {"w": value})
    assert denial is not None and denial.code.value == "argument_denied"


@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize(
    "constraint",
    [
        {"lt": 10**400},
        {"le": 1e308},
        {"gt": -1e308},
        {"ge": -(10**400)},
        {"gt": 0},
        {"lt": 0},
        {"eq": 0},
        {"in": [0, 1, 1e308, -1e308]},
        {"not_in": []},
        {"not_in": [0]},
        {"gt": -1, "lt": 1},
    ],
)
def test_nan_and_infinities(value: float, constraint: dict[str, Any]) -> None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
    assert _check_args(cap, {"v": value}) is not None


def test_bool_and_int_subclasses_are_not_numbers() -> None:
    for constraint in ({"lt": 5}, {"ge": 0}, {"eq": 1}, {"in": [1]}, {"not_in": [2]}):
        cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
        assert _check_args(cap, {"v": 1}) is None
        # A bool is JSON but never a number; an int/float subclass isn't JSON at all.
        for value in (Level.ONE, MyInt(1), MyFloat(1.0)):
            assert _check_args(cap, {"v": value}) is not None, (constraint, value)
        if "not_in" not in constraint:
            for flag in (True, False):
                assert _check_args(cap, {"v": flag}) is not None, (constraint, flag)


def test_str_subclass_is_not_a_string() -> None:
    for constraint in ({"eq": "a"}, {"in": ["a"]}, {"prefix": ""}, {"glob": "*"}, {"max_len": 5}):
        cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
        assert _check_args(cap, {"v": "a"}) is None
        assert _check_args(cap, {"v": MyStr("a")}) is not None


def test_deep_values_get_a_decision() -> None:
    deep = _deep(200_000)
    for constraint in ONE_OPERATOR:
        cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
        denial = _check_args(cap, {"v": deep})
        # A deep list of lists is JSON: only not_in and max_len (one element) allow it.
        assert (denial is None) == (
            "not_in" in constraint or "max_len" in constraint
        ), constraint


def test_shared_sub_trees_are_json_but_cycles_are_not() -> None:
    shared = [1]
    chain: list[Any] = [1]
    for _ in range(100):  # 2**100 leaves once unfolded: must be checked once per list
        chain = [chain, chain]
    for constraint in ({"not_in": []}, {"max_len": 2}):
        cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
        assert _check_args(cap, {"v": [shared, shared]}) is None
        assert _check_args(cap, {"v": [[1], [1]]}) is None
        assert _check_args(cap, {"v": chain}) is None
        assert _check_args(cap, {"v": [{"a": shared}, {"b": shared}]}) is None
        assert _check_args(cap, {"v": _self_list()}) is not None
        assert _check_args(cap, {"v": [_self_dict()]}) is not None


def test_value_json_equal_to_a_narrower_operand_passes_the_parent() -> None:
    """Soundness across the finite rule: eq/in children are checked on their operands, so
    every value JSON-equal to an operand must get the operand's answer from any parent."""
    shared = [1]
    values = [[shared, shared], {"a": shared, "b": [shared]}, [1.0, [1]]]
    operands = [[[1], [1]], {"a": [1], "b": [[1]]}, [1, [1.0]]]
    parents = [{"not_in": []}, {"not_in": [[1]]}, {"max_len": 2}, {"eq": operands[0]}]
    for value, operand in zip(values, operands, strict=True):
        assert json_equal(value, operand)
        for parent in parents:
            child_cap = {"action": "t.x", "args": {"v": {"eq": operand}}}
            parent_cap = {"action": "t.x", "args": {"v": parent}}
            if not is_narrower(child_cap, parent_cap):
                continue
            child = compile_capability(parse_capability(child_cap))
            assert _check_args(child, {"v": value}) is None
            compiled = compile_capability(parse_capability(parent_cap))
            assert _check_args(compiled, {"v": value}) is None, (value, parent)


def test_argument_names_that_are_not_strings() -> None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"*": {"any": True}}}))
    for name in (1, None, (1,), b"v", MyInt(3)):
        denial = _check_args(cap, {name: 1})
        assert denial is not None and denial.code.value == "invalid_request"


# --- JSON equality -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (False, 0, False),
        (None, False, False),
        ([1, [2.0]], [1.0, [2]], True),
        ({"a": 1}, {"a": True}, False),
        ({"a": 1}, {1: 1}, False),
        ({"a": 1}, {MyStr("a"): 1}, False),
        ({"a": 1}, MyDict(a=1), False),
        ([1], (1,), False),
        (NAN, NAN, False),
        (INF, INF, False),
        ([NAN], [NAN], False),
        (10**30, 1e30, False),  # exact values differ
        (2**53, float(2**53), True),
        (2**53 + 1, float(2**53 + 1), False),
        ("é", "e\u0301", False),
        (Decimal(1), 1, False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


# --- validation (Python-only inputs) -------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "path"),
    [
        ({"lt": NAN}, "args.v.lt"),
        ({"le": INF}, "args.v.le"),
        ({"gt": -INF}, "args.v.gt"),
        ({"ge": Decimal(1)}, "args.v.ge"),
        ({"lt": Level.ONE}, "args.v.lt"),
        ({"max_len": 3.0}, "args.v.max_len"),  # JSON `3.0`: an integer literal is required
        ({"max_len": Level.ONE}, "args.v.max_len"),
        ({"eq": NAN}, "args.v.eq"),
        ({"eq": [1, INF]}, "args.v.eq"),
        ({"eq": (1,)}, "args.v.eq"),
        ({"eq": {1: 1}}, "args.v.eq"),
        ({"eq": _self_list()}, "args.v.eq"),
        ({"in": [NAN]}, "args.v.in[0]"),
        ({"in": (1,)}, "args.v.in"),
        ({"not_in": [1, {"a": b"x"}]}, "args.v.not_in[1]"),
        ({"prefix": MyStr("a")}, "args.v.prefix"),
        ({"glob": b"*"}, "args.v.glob"),
        ({"any": 1}, "args.v.any"),
        ({1: True}, "args.v.1"),
        ({"optional": True}, "args.v"),
        (MyList(), "args.v"),
    ],
)
def test_python_only_invalid_constraints(constraint: Any, path: str) -> None:
    with pytest.raises(ConstraintError) as info:
        parse_capability({"action": "t.x", "args": {"v": constraint}})
    assert info.value.path == path


@pytest.mark.parametrize("name", [1, None, (1,), b"v", 1.5])
def test_non_string_argument_name_is_a_constraint_error(name: Any) -> None:
    with pytest.raises(ConstraintError) as info:
        parse_capability({"action": "t.x", "args": {name: {"any": True}}})
    assert info.value.path == "args"


def test_parse_capabilities_paths() -> None:
    ok = {"action": "t.x", "args": {}}
    with pytest.raises(ConstraintError) as info:
        parse_capabilities([ok, {"action": "t.y", "args": {"x": {"in": []}}}], "capabilities")
    assert info.value.path == "capabilities[1].args.x.in"
    for bad, path in (([], "caps"), ({}, "caps"), ([ok] * 65, "caps"), ([ok, 5], "caps[1]")):
        with pytest.raises(ConstraintError) as info:
            parse_capabilities(bad, "caps")
        assert info.value.path == path
    assert len(parse_capabilities([ok] * 64)) == 64


def test_token_form() -> None:
    cap = parse_capability(
        {"type": "remit.capability", "action": "t.x", "args": {"v": {"eq": 1}}}, token_form=True
    )
    assert cap.to_json() == {"type": "remit.capability", "action": "t.x", "args": {"v": {"eq": 1}}}
    for bad, path in (
        ({"action": "t.x"}, "type"),
        ({"type": "other", "action": "t.x"}, "type"),
        ({"type": "remit.capability", "action": "t.x", "limits": {}}, "limits"),
    ):
        with pytest.raises(ConstraintError) as info:
            parse_capability(bad, token_form=True)
        assert info.value.path == path


# --- glob ----------------------------------------------------------------------------


def _reference_glob(pattern: str, value: str) -> bool:
    """An independent implementation: translate to a regex (fine for tiny inputs)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


@settings(max_examples=1500, deadline=None)
@given(st.text("ab*?\\", max_size=10), st.text("ab*?\\\n", max_size=12))
def test_glob_matches_reference(pattern: str, value: str) -> None:
    if re.search(r"(?<!\\)(\\\\)*\\$", pattern):  # trailing lone backslash: invalid
        with pytest.raises(ValueError):
            glob_match(pattern, value)
        return
    assert glob_match(pattern, value) is _reference_glob(pattern, value)


@settings(max_examples=300, deadline=None)
@given(st.text("ab?*", min_size=1, max_size=6), st.text("ab", min_size=0, max_size=200))
def test_glob_long_values_match_reference(pattern: str, value: str) -> None:
    assert glob_match(pattern, value) is _reference_glob(pattern, value)


@pytest.mark.parametrize(
    "pattern",
    [
        "*a" * 50 + "*b",  # 50 stars, never matches (no 'b')
        "*a" * 50 + "*",  # 50 stars, matches
        "*?" * 50 + "b",
        ("*" + "?" * 79 + "b") * 50 + "*",
        "*a" + "?" * 4000 + "b*",  # a long '?' segment: one position-by-position scan
        "*" + "a?" * 2000 + "b*",
        "?" * 4000 + "*" + "?" * 90,
    ],
    ids=["stars", "stars-match", "star-question", "segments", "long-question", "alternating", "q"],
)
def test_glob_long_value_is_not_pathological(pattern: str) -> None:
    value = "a" * 100_000
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": {"glob": pattern}}}))
    start = time.perf_counter()
    _check_args(cap, {"v": value})
    elapsed = time.perf_counter() - start
    # Linear in the value: milliseconds here; position-by-position matching took seconds.
    assert elapsed < 2.0, f"{elapsed:.2f}s"


def test_max_len_counts_code_points() -> None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": {"max_len": 1}}}))
    assert _check_args(cap, {"v": "\U0001f600"}) is None
    assert _check_args(cap, {"v": "\ud83d\ude00"}) is not None  # two lone surrogates
