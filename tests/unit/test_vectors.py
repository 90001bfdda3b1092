"""Run the language-neutral vectors in tests/vectors/ against the Python implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from remit import ConstraintError, is_narrower
from remit._constraints import compile_capability, parse_capability
from remit._encoding import strict_json_loads
from remit._verifier import _check_args

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> dict[str, Any]:
    # The strict decoder: a vector file with a duplicate key would silently lose a case.
    doc: dict[str, Any] = strict_json_loads((VECTORS / name).read_bytes())
    assert doc["version"] == 1
    assert isinstance(doc["description"], str) and doc["description"]
    names = [c["name"] for c in doc["cases"]]
    assert len(names) == len(set(names)), "case names must be unique"
    return doc


def _cases(name: str) -> list[Any]:
    return [pytest.param(c, id=c["name"]) for c in _load(name)["cases"]]


@pytest.mark.parametrize("case", _cases("constraints.json"))
def test_constraint_vector(case: dict[str, Any]) -> None:
    assert set(case) == {"name", "capability", "args", "allowed", "code"}
    assert case["allowed"] is (case["code"] is None)
    compiled = compile_capability(parse_capability(case["capability"]))
    denial = _check_args(compiled, case["args"])
    if case["allowed"]:
        assert denial is None, denial
    else:
        assert denial is not None, "allowed, expected a denial"
        assert denial.code.value == case["code"], denial


@pytest.mark.parametrize("case", _cases("invalid_capabilities.json"))
def test_invalid_capability_vector(case: dict[str, Any]) -> None:
    assert set(case) == {"name", "capability", "path"}
    with pytest.raises(ConstraintError) as info:
        parse_capability(case["capability"])
    assert info.value.path == case["path"], str(info.value)


@pytest.mark.parametrize("case", _cases("narrowing.json"))
def test_narrowing_vector(case: dict[str, Any]) -> None:
    assert set(case) == {"name", "parent", "child", "narrower"}
    assert is_narrower(case["child"], case["parent"]) is case["narrower"]


def test_vector_files_exist() -> None:
    present = {p.name for p in VECTORS.glob("*.json")}
    assert {"constraints.json", "invalid_capabilities.json", "narrowing.json"} <= present


def test_reversed_narrowing_cases_are_swaps() -> None:
    cases = {c["name"]: c for c in _load("narrowing.json")["cases"]}
    for name, case in cases.items():
        if name.endswith("__reversed"):
            base = cases[name.removesuffix("__reversed")]
            assert (case["parent"], case["child"]) == (base["child"], base["parent"])
