"""Budgets at the service: CreateGrant's request form in, the grant's token budgets out.

A grant capability may carry ``"limits": {"uses"?: int, "sum"?: {"arg", "max"}}``. The
grant record keeps that request form as given; tokens carry it as the budget list
``[{"id": "g<i>", "exp": <grant expiry>, ...}]`` (:mod:`remit._limits`), ``i`` being the
capability's index in the grant, so every token minted under the grant, now or later,
names the same counters: minting never resets a budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from remit._constraints import Capability, parse_capabilities
from remit._limits import MAX_TIME, Budget, LimitsError, budget_from_request
from remit._narrowing import is_narrower

from ._errors import BadRequest

__all__ = ["grant_capabilities", "record_form", "split_limits", "with_grant_budgets"]


def _budget(raw: Any, index: int, exp: int, path: str) -> Budget:
    try:
        return budget_from_request(raw, budget_id=f"g{index}", exp=exp, path=path)
    except LimitsError as exc:
        raise BadRequest(str(exc), field=exc.path) from None


def split_limits(
    capabilities: list[dict[str, Any]], name: str
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Take each capability's ``limits`` out (validated), leaving what the constraint
    language parses. Returns the capabilities and their limits (None where absent)."""
    if not isinstance(capabilities, list):
        return capabilities, []  # the constraint parser names this error
    stripped: list[dict[str, Any]] = []
    limits: list[Any] = []
    for i, cap in enumerate(capabilities):
        raw = None
        if isinstance(cap, dict) and "limits" in cap:
            raw = cap["limits"]
            _budget(raw, i, MAX_TIME, f"{name}[{i}].limits")
            stripped.append({k: v for k, v in cap.items() if k != "limits"})
        else:
            stripped.append(cap)
        limits.append(raw)
    return stripped, limits


def record_form(
    caps: Sequence[Capability], limits: Sequence[Any], name: str
) -> list[dict[str, Any]]:
    """The grant record's capabilities (API form, limits as requested). A ``sum`` must
    count an argument the capability names, never one only ``"*"`` would admit."""
    out = []
    for i, cap in enumerate(caps):
        entry: dict[str, Any] = {"action": cap.action, "args": dict(cap.args)}
        raw = limits[i] if i < len(limits) else None
        if raw is not None:
            budget = _budget(raw, i, MAX_TIME, f"{name}[{i}].limits")
            if budget.sum is not None and budget.sum.arg not in cap.args:
                raise BadRequest(
                    f"{name}[{i}].limits.sum.arg: {budget.sum.arg!r} is not an argument "
                    "of this capability",
                    field=f"{name}[{i}].limits.sum.arg",
                )
            entry["limits"] = raw
        out.append(entry)
    return out


def grant_capabilities(capabilities: list[dict[str, Any]], expires_at: int) -> list[Capability]:
    """A stored grant's capabilities, parsed, with budgets ``g<i>`` attached."""
    stripped, limits = split_limits(capabilities, "capabilities")
    caps = parse_capabilities(stripped)
    return [
        replace(c, limits=(_budget(raw, i, expires_at, f"capabilities[{i}].limits"),))
        if raw is not None
        else c
        for i, (c, raw) in enumerate(zip(caps, limits, strict=True))
    ]


def with_grant_budgets(
    requested: Sequence[Capability], granted: Sequence[Capability]
) -> list[Capability]:
    """Mint: give each requested capability the budgets of a grant capability it is
    within (preferring one without budgets). One that fits none is returned as is, for
    the caller's narrowing check to refuse."""
    order = sorted(granted, key=lambda p: bool(p.limits))  # stable: grant order kept
    out = []
    for cap in requested:
        for parent in order:
            candidate = replace(cap, limits=parent.limits)
            if is_narrower(candidate, parent):
                out.append(candidate)
                break
        else:
            out.append(cap)
    return out
