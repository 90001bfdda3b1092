"""Narrowing rules the vectors cannot show: the proof budget, pre-built capabilities with
budgets, malformed budgets in the token form, and what the rules assume of the evaluator."""

from __future__ import annotations

import math
from typing import Any

import pytest
from remit import Capability, ConstraintError, is_narrower
from remit._constraints import MAX_VALUE_LIST, _compile_constraint
from remit._limits import Budget
from remit._narrowing import _JSON_ONLY, MAX_STEPS


def _cap(c: dict[str, Any]) -> dict[str, Any]:
    return {"action": "t.x", "args": {"a": c}}


def _split_heavy(n: int) -> dict[str, Any]:
    """``n`` any_of of 10 branches each: 10**n cases for the child-side split."""
    return {"all_of": [{"any_of": [{"le": i} for i in range(10)]} for _ in range(n)]}


def test_the_proof_search_is_bounded() -> None:
    parent = _cap({"le": 100})
    assert is_narrower(_cap(_split_heavy(2)), parent)  # 100 cases: within budget
    assert MAX_STEPS < 10**6
    # Semantically narrower, but a million cases: refused (never a hang, never True).
    assert is_narrower(_cap(_split_heavy(6)), parent) is False


def test_capability_objects_with_budgets() -> None:
    b0 = Budget(id="g0", exp=2_000_000_000, uses=3)
    extra = Budget(id="t_child0001.0", exp=2_000_000_000, uses=1)
    args = {"a": {"le": 5}}
    parent = Capability(action="t.x", args=args, limits=(b0,))
    assert is_narrower(Capability(action="t.x", args=args, limits=(b0, extra)), parent)
    assert not is_narrower(Capability(action="t.x", args=args), parent)
    assert not is_narrower(Capability(action="t.x", args=args, limits=(extra,)), parent)
    # Budgets never make a wider child narrower.
    wider = Capability(action="t.x", args={"a": {"le": 6}}, limits=(b0, extra))
    assert not is_narrower(wider, parent)


@pytest.mark.parametrize(
    ("limits", "path"),
    [
        ([], "limits"),
        ([{"id": "g0", "exp": 2_000_000_000, "uses": 0}], "limits[0].uses"),
        ([{"id": "g 0", "exp": 2_000_000_000}], "limits[0].id"),
        ({"uses": 3}, "limits"),  # the grant-request form is not the token form
    ],
)
def test_malformed_budgets_in_token_form(limits: Any, path: str) -> None:
    child = {"type": "remit.capability", "action": "t.x", "args": {}, "limits": limits}
    with pytest.raises(ConstraintError) as info:
        is_narrower(child, {"action": "t.x", "args": {}})
    assert info.value.path == path


def test_limits_in_api_form_are_refused() -> None:
    with pytest.raises(ConstraintError):
        is_narrower({"action": "t.x", "args": {}, "limits": {"uses": 1}}, {"action": "t.x"})


# --- what the rules assume of the evaluator -------------------------------------------------

NOT_JSON: list[Any] = [math.nan, math.inf, (1,), b"a", [math.nan], {"a": math.nan}, {1: "a"},
                       [(1,)], object()]
SAMPLE_OPERANDS: dict[str, Any] = {
    "eq": [1], "in": [[1], "a"], "not_in": [], "lt": 1e308, "le": 1, "gt": -1e308, "ge": -1,
    "max_len": 5, "each": {"any": True}, "subset_of": [[1], 1], "fields": {"*": {"any": True}},
    "not": {"eq": 5}, "any_of": [{"any": True}], "prefix": "", "suffix": "", "glob": "*",
    "regex": ".*", "subpath": "/", "email_domain": "example.com", "cidr": "0.0.0.0/0",
    "url": {"schemes": ["https"], "hosts": ["*.example.com"]},
}


def test_json_only_operators_refuse_every_non_json_value() -> None:
    """The `any_of` rule asks the child for an operator that only JSON values pass."""
    assert set(SAMPLE_OPERANDS) >= _JSON_ONLY
    for op in sorted(_JSON_ONLY):
        holds = _compile_constraint({op: SAMPLE_OPERANDS[op]})
        for value in NOT_JSON:
            assert not holds(value), (op, value)


def test_each_and_subset_of_refuse_the_same_long_lists() -> None:
    """`subset_of S` under `each E` relies on both capping the list length alike."""
    each = _compile_constraint({"each": {"any": True}})
    subset = _compile_constraint({"subset_of": [1]})
    for n in (0, 1, MAX_VALUE_LIST, MAX_VALUE_LIST + 1):
        assert each([1] * n) is subset([1] * n) is (n <= MAX_VALUE_LIST)
