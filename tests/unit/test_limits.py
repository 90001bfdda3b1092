"""Budgets without Redis: the token form, the grant's request form, amounts, narrowing.

Cases come from ``tests/vectors/limits.json`` (language-neutral) plus the Python-only
details (paths of errors, the token parser attaching budgets to capabilities).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from remit import Code, Denied
from remit._constraints import ConstraintError
from remit._limits import (
    Budget,
    Limits,
    LimitsError,
    budget_from_request,
    limits_narrower,
    parse_budgets,
    parse_decimal,
)
from remit._token import parse_scope

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "limits.json").read_text("utf-8")
)
EXP = 1_767_229_200
CAP = {"type": "remit.capability", "action": "payments.transfer",
       "args": {"amount": {"any": True}}}


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


@pytest.mark.parametrize("case", VECTORS["budgets"], ids=_ids(VECTORS["budgets"]))
def test_budget_vectors(case: dict[str, Any]) -> None:
    if case["valid"]:
        budgets = parse_budgets(case["limits"], "limits")
        assert [b.to_json() for b in budgets] == case["limits"]  # round trip, exact
    else:
        with pytest.raises(LimitsError) as info:
            parse_budgets(case["limits"], "limits")
        assert info.value.path == case["path"]


def _bound(maximum: int | str) -> Budget:
    return parse_budgets([{"id": "g0", "exp": EXP, "sum": {"arg": "amount", "max": maximum}}],
                         "limits")[0]


@pytest.mark.parametrize("case", VECTORS["amounts"], ids=_ids(VECTORS["amounts"]))
def test_amount_vectors(case: dict[str, Any]) -> None:
    budget = _bound(case["max"])
    args = {"amount": case["value"]} if "value" in case else {"other": 1}
    if "units" in case:
        assert Limits.prepare((budget,), args, EXP - 3600).argv[2] == case["units"]
    else:
        with pytest.raises(Denied) as info:
            Limits.prepare((budget,), args, EXP - 3600)
        assert info.value.code.value == case["code"]


@pytest.mark.parametrize("case", VECTORS["narrowing"], ids=_ids(VECTORS["narrowing"]))
def test_narrowing_vectors(case: dict[str, Any]) -> None:
    parse = (lambda raw: parse_budgets(raw, "limits") if raw else ())  # noqa: E731
    assert limits_narrower(parse(case["child"]), parse(case["parent"])) is case["narrower"]


def test_vector_sequences_are_well_formed() -> None:
    """The sequences run against real Redis in tests/integration/test_limits.py."""
    for seq in VECTORS["sequences"]:
        parse_budgets(seq["limits"], "limits")
        assert seq["calls"] and all(set(c) == {"args", "code"} for c in seq["calls"])


def test_decimal_scale_and_units() -> None:
    assert parse_decimal("120.00", "m") == (12000, 2)
    assert parse_decimal(7, "m") == (7, 0)
    assert parse_decimal("0.000000000000001", "m") == (1, 15)
    for bad in (1.5, True, None, "1_000", "\u0661", "0x10", "", "1.", "-1", 0, -3):
        with pytest.raises(LimitsError):
            parse_decimal(bad, "m")


def test_request_form_names_the_bad_node() -> None:
    ok = budget_from_request({"uses": 2, "sum": {"arg": "amount", "max": "9.99"}},
                             budget_id="g3", exp=EXP, path="capabilities[3].limits")
    assert ok.to_json() == {"id": "g3", "exp": EXP, "uses": 2,
                            "sum": {"arg": "amount", "max": "9.99"}}
    cases = [
        ([{"uses": 1}], "capabilities[0].limits"),
        ({}, "capabilities[0].limits"),
        ({"uses": 1, "id": "g9"}, "capabilities[0].limits"),
        ({"uses": -1}, "capabilities[0].limits.uses"),
        ({"sum": {"arg": "amount", "max": 1e3}}, "capabilities[0].limits.sum.max"),
        ({"sum": {"arg": "amount", "max": 2**53}}, "capabilities[0].limits.sum.max"),
        ({"sum": {"arg": "", "max": 1}}, "capabilities[0].limits.sum.arg"),
        ({"sum": {"max": 1}}, "capabilities[0].limits.sum"),
    ]
    for raw, path in cases:
        with pytest.raises(LimitsError) as info:
            budget_from_request(raw, budget_id="g0", exp=EXP, path="capabilities[0].limits")
        assert info.value.path == path, raw


def test_token_parser_attaches_budgets_to_their_capability() -> None:
    budgets = [{"id": "g0", "exp": EXP, "uses": 1}]
    caps = parse_scope([{**CAP, "limits": budgets}, CAP])
    assert [b.to_json() for b in caps[0].limits] == budgets
    assert caps[1].limits == ()
    assert caps[0].to_json() == {**CAP, "limits": budgets}  # what the service signs
    assert caps[1].to_json() == CAP


def test_one_budget_id_has_one_set_of_bounds_per_token() -> None:
    one = [{"id": "g0", "exp": EXP, "uses": 1}]
    parse_scope([{**CAP, "limits": one}, {**CAP, "limits": one}])  # shared counter: fine
    other = [{"id": "g0", "exp": EXP, "uses": 5}]
    with pytest.raises(ConstraintError) as info:
        parse_scope([{**CAP, "limits": one}, {**CAP, "limits": other}])
    assert info.value.path == "authorization_details[1].limits"


def test_bad_budgets_in_a_token_name_the_path() -> None:
    with pytest.raises(ConstraintError) as info:
        parse_scope([CAP, {**CAP, "limits": [{"id": "g0", "exp": EXP, "uses": 1.0}]}])
    assert info.value.path == "authorization_details[1].limits[0].uses"


def test_limit_codes_map_to_transport_kinds() -> None:
    assert Denied(Code.LIMIT_EXCEEDED, "x").http_status == 403
    assert Denied(Code.LIMIT_UNAVAILABLE, "x").http_status == 503
    assert Denied(Code.LIMIT_UNAVAILABLE, "x").kind == "unavailable"


def test_prepared_script_arguments() -> None:
    """Per budget: max uses, max minor units, amount, counter lifetime in ms (-1: none)."""
    budgets = parse_budgets([{"id": "g0", "exp": EXP, "uses": 3},
                             {"id": "g1", "exp": EXP, "sum": {"arg": "amount", "max": "9.99"}}],
                            "limits")
    charge = Limits.prepare(budgets, {"amount": "1.5"}, EXP - 100)
    assert charge.argv == (3, -1, 0, 3700_000, -1, 999, 150, 3700_000)


def test_counter_lifetime_is_capped_where_redis_would_overflow() -> None:
    far = parse_budgets([{"id": "g0", "exp": 2**53 - 1, "uses": 1}], "limits")
    assert Limits.prepare(far, {}, EXP).argv[3] == 10 * 366 * 86400 * 1000
